"""The batch report and the stream cleaner judge the same readings alike: each reading in
its own unit (the report judged a metric's every reading by its first row's unit), a
valid reading over a bad one at the same time (the report deduplicated first, so a NaN or
out-of-range reading that came first won), and numpy numbers as numbers (the stream
dropped np.int64 and np.float32 values as invalid); and readings at one time alike: the
stream counted an out-of-range one after a kept one as a conflict, the batch kept a
too-fast first one over a fitting second."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.quality.limits import Limits
from edgewise.quality.report import device_report, metric_issues
from edgewise.quality.stream import StreamCleaner
from edgewise.telemetry import Reading

S = 10**9


def test_each_reading_is_judged_in_its_own_unit() -> None:
    """Check 1 reading in K then 9 in Cel (-5, -4: possible in Cel, not in K) are all in
    range, and the report lists both units; an impossible one in its own unit still
    counts."""
    rows = [Reading("d", "temp", 0, 300.0, unit="K")] + [
        Reading("d", "temp", i * S, -5.0 + i % 2, unit="Cel") for i in range(1, 10)]
    m = device_report(rows)["metrics"]["temp"]
    assert (m["out_of_range"], m["validity"]) == (0, 1.0)
    assert (m["unit"], m["units"], m["unit_known"]) == ("K", ["K", "Cel"], True)
    c = StreamCleaner()
    assert len(c.clean(rows)) == 10
    rows.append(Reading("d", "temp", 10 * S, -300.0, unit="Cel"))
    assert device_report(rows)["metrics"]["temp"]["out_of_range"] == 1


@pytest.mark.parametrize("bad", [float("nan"), 900.0])
def test_a_valid_reading_wins_over_a_bad_one_at_the_same_time(bad: float) -> None:
    """Check the report keeps the valid reading at t=10 s (all 30 times valid), counts
    the bad one as the stream does (invalid, out of range when finite) and no conflict."""
    rows = [Reading("d", "t", i * S, 20.0 + i % 3) for i in range(30)]
    rows.insert(10, Reading("d", "t", 10 * S, bad))
    lim = {"t": Limits(low=-40, high=125)}
    m = device_report(rows, lim)["metrics"]["t"]
    c = StreamCleaner(limits=lim)
    assert len(c.clean(rows)) == 30
    reason = "invalid" if np.isnan(bad) else "out_of_range"
    assert dict(c.removed) == {reason: 1}
    assert (m["distinct_times"], m["validity"], m["conflicts"], m["duplicates"]) == (
        30, 1.0, 0, 0)
    assert (m["invalid"], m["out_of_range"]) == (1, 0 if np.isnan(bad) else 1)


def test_two_bad_readings_at_a_time_stay_one_bad_time() -> None:
    """Check two NaN at one time are one time, and two invalid readings as the stream
    counts them (the report called the second a duplicate of the first)."""
    rows = [Reading("d", "t", i * S, 20.0 + i % 3) for i in range(30)]
    rows[10] = Reading("d", "t", 10 * S, float("nan"))
    rows.insert(10, Reading("d", "t", 10 * S, float("nan")))
    m = device_report(rows)["metrics"]["t"]
    assert (m["distinct_times"], m["invalid"], m["duplicates"]) == (30, 2, 0)
    c = StreamCleaner()
    c.clean(rows)
    assert dict(c.removed) == {"invalid": 2}


def test_the_stream_keeps_numpy_numbers() -> None:
    """Check np.int64 and np.float32 readings are kept (all 30 were 'invalid'), as the
    batch report reads them; a bool stays 1/0 and text stays invalid."""
    rows = [Reading("pump-1", "rpm", i * S, np.int64(1450 + i % 3)) for i in range(30)]
    c = StreamCleaner()
    assert len(c.clean(rows)) == 30 and dict(c.removed) == {}
    assert device_report(rows)["metrics"]["rpm"]["invalid"] == 0
    c = StreamCleaner()
    kept = [c.clean_one(Reading("d", "t", i, v)) is not None
            for i, v in enumerate([np.float32(20.5), True, "20", 10**400])]
    assert kept == [True, True, False, False] and dict(c.removed) == {"invalid": 2}


def _both(ts: list[int], vs: list[float], lim: Limits | None = None,
          stuck_run: int = 20) -> tuple[list, dict, list, dict]:
    """The kept ``(time, value)`` pairs and the removed readings by reason, of the stream
    cleaner and of the batch report (its ``invalid`` less its range and rate counts)."""
    c = StreamCleaner(limits={"m": lim} if lim else None, stuck_run=stuck_run)
    kept = c.clean([Reading("d", "m", t, v) for t, v in zip(ts, vs, strict=True)])
    r = metric_issues(ts, vs, limits=lim)
    f, good = r["figures"], ~r["flags"]["invalid"]
    batch = {"invalid": f["invalid"] - f["out_of_range"] - f["rate"],
             "out_of_range": f["out_of_range"], "rate": f["rate"],
             "conflict": f["conflicts"], "duplicate": f["duplicates"]}
    return ([(r.ts_ns, r.value) for r in kept], dict(c.removed),
            list(zip(r["ts"][good].tolist(), r["values"][good].tolist(), strict=True)),
            {k: n for k, n in batch.items() if n})


@pytest.mark.parametrize(("vs", "lim", "kept", "removed"), [
    # 100 at 1 s is too fast: the stream kept 0.5 there, the batch kept 100 (the first),
    # flagged it 'rate' and dropped 0.5 as a conflict
    ([0.0, 100.0, 0.5, 1.0], Limits(max_rate=1.0), [0.0, 0.5, 1.0], {"rate": 1}),
    # 900 out of range after a valid reading at its time: the stream counted a conflict
    ([20.0, 21.0, 900.0, 22.0], Limits(low=-40, high=125), [20.0, 21.0, 22.0],
     {"out_of_range": 1}),
    ([20.0, 900.0, 21.0, 22.0], Limits(low=-40, high=125), [20.0, 21.0, 22.0],
     {"out_of_range": 1}),
    # after the kept one, a too-fast one at its time is a conflict in both
    ([0.0, 0.5, 100.0, 1.0], Limits(max_rate=1.0), [0.0, 0.5, 1.0], {"conflict": 1}),
])
def test_same_time_readings_are_judged_alike(vs: list[float], lim: Limits, kept: list,
                                             removed: dict) -> None:
    """Check times 0, 1, 1, 2 s keep the same readings in the stream and the batch and
    count the others for the same reasons."""
    ts = [0, S, S, 2 * S]
    s_kept, s_removed, b_kept, b_removed = _both(ts, vs, lim)
    assert s_kept == b_kept == list(zip([0, S, 2 * S], kept, strict=True))
    assert s_removed == b_removed == removed


def test_stream_and_batch_agree_on_random_series() -> None:
    """Check 400 random series (times in order, about four readings a time: NaN, out of
    range, too fast, re-delivered, conflicting) keep the same readings in both, and count
    them for the same reasons, also where a time kept no reading (the batch keeps it as
    one bad reading, and counted the rest at it as duplicates or conflicts)."""
    rng = np.random.default_rng(7)
    judged = too_fast = 0
    for trial in range(400):
        n = int(rng.integers(1, 40))
        ts = (np.sort(rng.integers(0, 10, n)) * S).tolist()
        vs = rng.choice([20.0, 20.5, 21.0, 23.0, 30.0, np.nan, 900.0], n,
                        p=[0.25, 0.2, 0.2, 0.15, 0.1, 0.05, 0.05]).tolist()
        lim = Limits(low=-40, high=125, max_rate=(None, 1.0, 5.0)[trial % 3])
        s_kept, s_removed, b_kept, b_removed = _both(ts, vs, lim, stuck_run=1000)
        assert s_kept == b_kept, (ts, vs, lim)
        assert s_removed == b_removed, (ts, vs, lim)
        if {t for t, _ in s_kept} == set(ts):
            judged += 1
            too_fast += s_removed.get("rate", 0)
    assert judged >= 200 and too_fast >= 50 and judged < 400
