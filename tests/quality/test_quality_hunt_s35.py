"""Hunt s35 in the quality checks: a lone reading of a span judged whole, the CLI's own
column names clashing with the user's, a newest-first file read as all out of order,
``deduplicate`` looping over every time, and ``resample`` overflowing or interpolating
across two readings at one time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.errors import QualityError
from edgewise.quality import duplicates
from edgewise.quality.base import CleanResult, as_series
from edgewise.quality.duplicates import deduplicate
from edgewise.quality.gaps import completeness, find_gaps, timeliness
from edgewise.quality.order import newest_first
from edgewise.quality.report import metric_issues
from edgewise.quality.resample import resample
from tests.in_process import edgewise_here

S = 10**9
T0 = 1_704_067_200  # 2024-01-01, epoch s


def quality_json(path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """``edgewise quality PATH ARGS --json``: its devices and its stderr."""
    done = edgewise_here("quality", str(path), *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["devices"], done.stderr


# -- 1. a lone reading in a span -------------------------------------------------------


def test_one_reading_in_a_span_is_not_judged_whole() -> None:
    """Check one reading at the middle of an hour, no interval known, is neither complete
    nor on time and has the silence either side as gaps (it was 1.0, 1.0 and no gap, where
    two a minute apart gave 0.033)."""
    f = metric_issues([1800 * S], [1.0], span=(0, 3600 * S))
    fig = f["figures"]
    assert (fig["completeness"], fig["timeliness"], fig["gaps"]) == (0.0, 0.0, 2)
    assert f["gaps"] == [(0, 1800 * S), (1800 * S, 3600 * S - 1)]
    two = metric_issues([0, 60 * S], [1.0, 1.0], span=(0, 3600 * S))["figures"]
    assert fig["completeness"] <= two["completeness"] < 1.0


def test_no_reading_in_a_span_is_late_and_one_gap() -> None:
    """Check a span without readings has timeliness 0.0 (it was 1.0) and is one gap, as
    silent_figures reports it."""
    assert timeliness([], span=(0, 10)) == 0.0 and completeness([], span=(0, 10)) == 0.0
    assert find_gaps([], span=(0, 10)) == [(0, 9)]


def test_one_reading_with_an_interval_is_judged_by_it() -> None:
    """Check ``every_ns`` judges a lone reading: one of 60 one-minute slots, one gap after
    a reading at the start."""
    ts, span = [0], (0, 3600 * S)
    assert completeness(ts, every_ns=60 * S, span=span) == pytest.approx(1 / 60)
    assert find_gaps(ts, every_ns=60 * S, span=span) == [(0, 3600 * S - 1)]
    assert timeliness(ts, every_ns=60 * S, span=span) == 0.0
    assert completeness(ts, every_ns=3600 * S, span=span) == 1.0


def test_a_reading_that_fills_its_span_or_has_none_is_whole() -> None:
    """Check a reading whose span is its own instant, and one without a span, stay whole."""
    for span in [(5, 6), None]:
        fig = metric_issues([5, 5], [1.0, 1.0], span=span)["figures"]
        assert (fig["completeness"], fig["timeliness"], fig["gaps"]) == (1.0, 1.0, 0)


def test_cli_a_metric_read_once_in_an_hour_is_not_whole(tmp_path: Path) -> None:
    """Check ``edgewise quality`` of temp every minute for an hour and hum once: hum is
    not 1.0 complete with no gap (it was)."""
    rows = ["ts,temp,hum"] + [f"{T0 + 60 * i},{20 + i % 3},{50 if i == 0 else ''}"
                              for i in range(60)]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    devices, _ = quality_json(tmp_path / "r.csv")
    hum = devices["device"]["metrics"]["hum"]
    assert hum["readings"] == 1 and hum["completeness"] < 0.5 and hum["gaps"] >= 1
    assert devices["device"]["metrics"]["temp"]["completeness"] == 1.0


# -- 2. the CLI's column names ---------------------------------------------------------


def test_cli_a_wide_column_named_value_is_a_metric(tmp_path: Path) -> None:
    """Check a wide file with a column ``_value`` (and ``_metric``) is reported (it was a
    traceback)."""
    (tmp_path / "r.csv").write_text(
        "ts,device_id,_value,_metric\n"
        + "".join(f"{T0 + 60 * i},a,{i},{i % 2}\n" for i in range(5)))
    devices, _ = quality_json(tmp_path / "r.csv")
    assert sorted(devices["a"]["metrics"]) == ["_metric", "_value"]
    assert devices["a"]["metrics"]["_value"]["readings"] == 5


def test_cli_a_device_column_named_ts_keeps_its_ids(tmp_path: Path) -> None:
    """Check ``--device-column _ts`` on a long file reports the devices it names (their
    ids were overwritten by the times: every reading its own device)."""
    (tmp_path / "r.csv").write_text(
        "ts,_ts,metric,value\n"
        + "".join(f"{T0 + 60 * i},pump{'AB'[i % 2]},t,{i}\n" for i in range(6)))
    devices, _ = quality_json(tmp_path / "r.csv", "--device-column", "_ts")
    assert sorted(devices) == ["pumpA", "pumpB"]
    assert devices["pumpA"]["metrics"]["t"]["readings"] == 3


def test_cli_a_metric_column_named_ts_keeps_its_cells(tmp_path: Path) -> None:
    """Check a metric column ``_ts`` is judged on its own cells: its invalid cell is
    counted (the parsed times silently replaced them)."""
    (tmp_path / "r.csv").write_text(
        "ts,_ts\n" + "".join(f"{T0 + 60 * i},{'err' if i == 2 else 5 - i}\n"
                             for i in range(6)))
    devices, _ = quality_json(tmp_path / "r.csv")
    m = devices["device"]["metrics"]["_ts"]
    assert m["invalid"] == 1 and m["readings"] == 6


# -- 3. newest first -------------------------------------------------------------------


def test_newest_first() -> None:
    """Check the order is told by the majority of steps, not by a perfect sort."""
    assert newest_first([3, 2, 1]) and newest_first([9, 8, 7, 2, 6, 5])
    assert not newest_first([1, 2, 3]) and not newest_first([1, 1]) and not newest_first([])


def test_cli_a_newest_first_file_is_not_all_out_of_order(tmp_path: Path) -> None:
    """Check a file sorted newest first reports no reading out of order and says how it
    read it (99 of 100 were out of order), and one reading out of place in that order is
    one out of order."""
    times = [T0 + 60 * i for i in range(99, -1, -1)]
    (tmp_path / "r.csv").write_text(
        "ts,temp\n" + "".join(f"{t},{20 + i % 7}\n" for i, t in enumerate(times)))
    devices, err = quality_json(tmp_path / "r.csv")
    assert devices["device"]["metrics"]["temp"]["out_of_order"] == 0
    assert "newest first" in err
    times.insert(50, times.pop(80))  # read oldest first: a reading of 19 min come late
    (tmp_path / "s.csv").write_text(
        "ts,temp\n" + "".join(f"{t},{20 + i % 7}\n" for i, t in enumerate(times)))
    devices, _ = quality_json(tmp_path / "s.csv")
    assert devices["device"]["metrics"]["temp"]["out_of_order"] == 1


def test_cli_an_oldest_first_file_has_no_note(tmp_path: Path) -> None:
    """Check an ascending file is read as given, without the note."""
    (tmp_path / "r.csv").write_text(
        "ts,temp\n" + "".join(f"{T0 + 60 * i},{20 + i % 7}\n" for i in range(10)))
    devices, err = quality_json(tmp_path / "r.csv")
    assert "newest first" not in err
    assert devices["device"]["metrics"]["temp"]["out_of_order"] == 0


# -- 4. deduplicate --------------------------------------------------------------------


def old_deduplicate(ts: object, values: object, policy: str = "first") -> CleanResult:
    """The loop deduplicate was (s34), the reference its results must equal."""
    t, v = as_series(ts, values)
    if not len(t):
        return CleanResult(t, v, {"duplicate": 0, "conflict": 0}, 0)
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    ends = np.r_[starts[1:], len(t)]
    out = np.empty(len(starts))
    dup = conflict = 0
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        group = v[s:e]
        same = (group[1:] == group[0]) | (np.isnan(group[1:]) & np.isnan(group[0]))
        dup += int(same.sum())
        if same.all():
            out[i] = group[0]
            continue
        conflict += int((~same).sum())
        if policy == "error":
            raise QualityError(
                f"Conflicting values {group.tolist()} at time {int(t[s])} ns; "
                "policy 'error' allows none (use 'first', 'last' or 'mean')."
            )
        out[i] = {"first": group[0], "last": group[-1]}.get(policy, np.nanmean(group))
    return CleanResult(t[starts], out, {"duplicate": dup, "conflict": conflict}, len(t))


@pytest.mark.parametrize("seed", range(40))
def test_deduplicate_equals_the_old_loop(seed: int) -> None:
    """Check every policy gives exactly the old results (times, values bit for bit,
    counts, the error's message) on random series with repeats, NaN, inf and groups of
    up to 12 readings."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 200))
    t = np.sort(rng.integers(0, max(1, n // int(rng.integers(1, 6))), n))
    if seed % 5 == 0:
        t = np.sort(np.r_[t, np.full(int(rng.integers(1, 12)), 7)])
    v = rng.choice([1.0, 2.0, np.nan, 3.5], len(t)) if seed % 2 else (
        rng.normal(0, 1, len(t)) * 10.0 ** rng.uniform(-8, 8, len(t)))
    if seed % 7 == 0 and len(v):
        v[rng.integers(0, len(v), 3)] = [np.inf, -np.inf, np.nan]
    for policy in ("first", "last", "mean", "error"):
        try:
            want: CleanResult | str = old_deduplicate(t, v, policy)
        except QualityError as exc:
            want = str(exc)
        try:
            got: CleanResult | str = deduplicate(t, v, policy)
        except QualityError as exc:
            got = str(exc)
        if isinstance(want, str):
            assert got == want
            continue
        assert isinstance(got, CleanResult)
        assert got.ts.tolist() == want.ts.tolist()
        np.testing.assert_array_equal(got.values, want.values, strict=True)
        assert (got.removed, got.n_input) == (want.removed, want.n_input)


class _CountingNumpy:
    """numpy, counting the calls made through it."""

    def __init__(self) -> None:
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(np, name)
        if not callable(attr) or isinstance(attr, type):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return attr(*args, **kwargs)
        return counted


@pytest.mark.parametrize("policy", ["first", "mean"])
def test_deduplicate_does_not_loop_over_the_times(monkeypatch: pytest.MonkeyPatch,
                                                  policy: str) -> None:
    """Check deduplicate makes as many numpy calls for 20,000 readings (unique, or in
    conflicting pairs) as for 20: it looped in Python over every time, 5.5 s for 200,000."""
    counts = []
    for n in (20, 20_000):
        for t in (np.arange(n), np.arange(n) // 2):
            np_counter = _CountingNumpy()
            monkeypatch.setattr(duplicates, "np", np_counter)
            deduplicate(t, np.arange(n, dtype=float), policy)
            counts.append(np_counter.calls)
    assert counts[:2] == counts[2:]


def test_deduplicate_of_200k_unique_times_is_quick() -> None:
    """Check 200,000 unique times (the dashboard's cap) take well under a second (5.5 s)."""
    t = np.arange(200_000) * S
    start = time.perf_counter()
    r = deduplicate(t, np.ones(len(t)))
    assert time.perf_counter() - start < 0.5
    assert len(r.ts) == 200_000 and r.removed == {"duplicate": 0, "conflict": 0}
    assert r.ts is not t  # its own arrays, as the loop gave


# -- 5. resample -----------------------------------------------------------------------


def test_resample_mean_of_huge_readings_is_finite() -> None:
    """Check a bin's mean is taken without overflowing its sum (two 1e308 gave inf)."""
    assert resample([0, 1], [1e308, 1e308], every_ns=10)[1].tolist() == [1e308]
    mean = resample([0, 1, 2], [1e308, 1e308, -1e308], every_ns=10)[1][0]
    assert mean == pytest.approx(1e308 / 3)
    assert resample([0, 1, 2], [1.0, 2.0, 4.0], every_ns=10)[1][0] == 7.0 / 3


def test_resample_interpolates_across_one_mean_at_a_repeated_time() -> None:
    """Check two readings at one time are averaged before interpolating (either side of
    10 used a different one: 0.5 and 3.5)."""
    grid, v = resample([0, 10, 10, 20], [0.0, 1.0, 5.0, 2.0], every_ns=5, how="interpolate")
    assert grid.tolist() == [0, 5, 10, 15, 20]
    assert v.tolist() == [0.0, 1.5, 3.0, 2.5, 2.0]


def test_resample_interpolates_between_huge_readings() -> None:
    """Check the midpoint of 1e308 and -1e308 is 0, not -inf (the slope overflowed)."""
    assert resample([0, 10], [1e308, -1e308], every_ns=5, how="interpolate")[1].tolist() == [
        1e308, 0.0, -1e308]
