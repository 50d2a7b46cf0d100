"""Bugs found by the hq hunt of the batch quality checks and ``edgewise quality``."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import QualityError
from edgewise.quality.duplicates import deduplicate
from edgewise.quality.gaps import completeness, find_gaps, timeliness
from edgewise.quality.limits import Limits, check_limits
from edgewise.quality.report import device_report, metric_issues
from edgewise.quality.spikes import despike, hampel_mask
from edgewise.quality.stream import StreamCleaner
from edgewise.quality.stuck import stuck_runs
from edgewise.telemetry import Reading

S = 10**9
NAN = float("nan")


def test_check_limits_judges_the_rate_across_a_nan_with_no_bounds() -> None:
    """A NaN with only ``max_rate`` set became the last good reading: the jump from 0 to
    1000 after it passed (with a bound set, the same NaN was out of range instead)."""
    ts = np.arange(3) * S
    assert check_limits(ts, [0.0, NAN, 1000.0], Limits(max_rate=1.0)) == {
        "out_of_range": [], "rate": [2]}
    assert check_limits(ts, [0.0, NAN, 1000.0], Limits(low=-5.0, max_rate=1.0)) == {
        "out_of_range": [], "rate": [2]}


def test_check_limits_judges_a_late_reading_by_the_one_before_its_time() -> None:
    """A reading that arrived after a later one was judged over a negative interval (taken
    as 1 ns) and was too fast, though it lies on the line between its neighbours."""
    ts = np.array([0, 2, 1, 3]) * S
    assert check_limits(ts, [0.0, 2.0, 1.0, 3.0], Limits(max_rate=1.5)) == {
        "out_of_range": [], "rate": []}
    # still judged: a late jump is too fast, by its index in the input
    assert check_limits(ts, [0.0, 2.0, 50.0, 3.0], Limits(max_rate=1.5)) == {
        "out_of_range": [], "rate": [2]}


def _stream_removed(t: list[int], v: list[float], unit: str | None = None) -> dict[str, int]:
    """What the stream cleaner removes of these readings of one metric, by reason."""
    sc = StreamCleaner()
    for ti, x in zip(t, v, strict=True):
        sc.clean_one(Reading("d", "m", ti * S, x, unit=unit))
    return dict(sc.removed)


@pytest.mark.parametrize(("late", "unit", "invalid", "out_of_range"), [
    ([NAN, NAN], None, 2, 0),           # a NaN re-delivered: two invalid readings
    ([-300.0, -400.0], "Cel", 2, 2),    # two impossible temperatures at one time
    ([-300.0, -300.0], "Cel", 2, 2),
    ([NAN, -400.0], "Cel", 2, 1),
])
def test_unfit_readings_sharing_a_time_count_by_their_own_fault(
        late: list[float], unit: str | None, invalid: int, out_of_range: int) -> None:
    """Where no reading at a time is valid, the ones after the first counted as its
    duplicates or conflicts (two NaN: one invalid reading and a duplicate), where the
    stream cleaner, whose counts the report's agree with, removes each for its own fault."""
    t = [*range(10), 10, 10, 11]
    v = [20.0] * 10 + late + [20.0]
    f = metric_issues(np.array(t) * S, np.array(v), unit)["figures"]
    assert (f["invalid"], f["out_of_range"], f["duplicates"], f["conflicts"]) == (
        invalid, out_of_range, 0, 0)
    stream = _stream_removed(t, v, unit)
    assert sum(stream.values()) == f["invalid"]
    assert stream.get("out_of_range", 0) == f["out_of_range"]


def test_every_ns_of_0_judges_a_series_by_its_own_spacing_as_none_does() -> None:
    """``every_ns`` 0 means no spacing known, as None does: it judged the series by no
    spacing at all, so a 7 s silence among 1 s readings was no gap and the series whole."""
    t = np.array([0, 1, 2, 3, 10, 11]) * S
    for every in (None, 0):
        assert find_gaps(t, every_ns=every) == [(3 * S, 10 * S)]
        assert completeness(t, every_ns=every) == 0.5
        assert timeliness(t, every_ns=every) == 0.8


def test_a_silent_metric_has_no_validity_and_leaves_the_summary_alone() -> None:
    """A metric silent over the span had validity 1.0 (no reading, all of them valid),
    shown as 100 % valid and raising its device's summary validity from 0.5 to 0.75."""
    rows = [Reading("d", "temp", i * S, 20.0 if i % 2 else NAN) for i in range(40)]
    rep = device_report(rows, span=(0, 40 * S), metrics=["temp", "hum"])
    assert rep["metrics"]["hum"]["readings"] == 0
    assert rep["metrics"]["hum"]["validity"] is None
    assert rep["metrics"]["temp"]["validity"] == 0.5
    assert rep["summary"]["validity"] == 0.5


def test_numpy_ints_are_windows_and_text_is_named() -> None:
    """``min_run`` and ``half_window`` of numpy (np.int64(20), as a window computed with
    numpy is) were refused as no int; a text ``n_sigmas``, ``min_scale`` or ``tol`` failed
    with a bare TypeError from a compare, naming no parameter."""
    v = np.r_[np.full(10, 20.0), 80.0, np.full(10, 20.0)]
    assert stuck_runs(np.full(30, 1.0), min_run=np.int64(20)) == [(0, 30)]
    assert hampel_mask(v, half_window=np.int64(3), n_sigmas=np.float32(5)).nonzero()[
        0].tolist() == [10]
    assert despike(v, half_window=np.int64(3))[10] == 20.0
    for kw, name in [({"n_sigmas": "3"}, "n_sigmas"), ({"min_scale": "0"}, "min_scale"),
                     ({"half_window": True}, "half_window")]:
        with pytest.raises(QualityError, match=f"'{name}' parameter of hampel"):
            hampel_mask(v, **kw)
    with pytest.raises(QualityError, match="'tol' parameter of stuck"):
        stuck_runs(v, tol="0")


def test_deduplicate_names_the_reading_out_of_order() -> None:
    """The refusal of unsorted times said only that they were unsorted: it names the
    first time out of order, its index and the time before it."""
    with pytest.raises(QualityError, match=r"time 2 at index 2 comes after 3\. Call sort_by"):
        deduplicate([1, 3, 2], [1.0, 2.0, 3.0])


def test_a_row_whose_ts_is_a_numpy_number_is_read() -> None:
    """A row's ``ts`` of numpy (np.int64 epoch seconds, as rows zipped from numpy arrays
    hold it) was refused as no time, though the same Python int is read."""
    rows = [{"device_id": "d", "metric": "m", "ts": np.int64(1_700_000_000 + 60 * i),
             "value": 1.0} for i in range(3)]
    m = device_report(rows)["metrics"]["m"]
    assert (m["readings"], m["interval_s"], m["completeness"]) == (3, 60.0, 1.0)
