"""The batch report and the stream cleaner judge the same readings alike: each reading in
its own unit (the report judged a metric's every reading by its first row's unit), a
valid reading over a bad one at the same time (the report deduplicated first, so a NaN or
out-of-range reading that came first won), and numpy numbers as numbers (the stream
dropped np.int64 and np.float32 values as invalid)."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.quality.limits import Limits
from edgewise.quality.report import device_report
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
    rows = [Reading("d", "t", i * S, 20.0 + i % 3) for i in range(30)]
    rows[10] = Reading("d", "t", 10 * S, float("nan"))
    rows.insert(10, Reading("d", "t", 10 * S, float("nan")))
    m = device_report(rows)["metrics"]["t"]
    assert (m["distinct_times"], m["invalid"], m["duplicates"]) == (30, 1, 1)


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
