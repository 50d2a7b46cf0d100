"""Session 47's hunt in the quality checks: a series that never changed (stuck, and said to
be unchanged), resample's max_gap_ns that is no number."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewise.errors import QualityError
from edgewise.quality.report import device_report, metric_issues
from edgewise.quality.resample import resample
from edgewise.quality.stream import StreamCleaner
from edgewise.quality.stuck import stuck_runs
from edgewise.telemetry import Reading

S = 10**9


@pytest.mark.parametrize("value", [21.3, 0.0, 55.0])
def test_a_series_of_one_value_throughout_is_stuck_as_the_stream_flags_it(value: float,
                                                                         ) -> None:
    """30 readings of one value, the classic frozen sensor: the report called it 0 stuck
    (one distinct value counted as a setpoint's few levels) while the gateway's stream
    cleaner flagged all 30; now both say 30, and ``unchanged`` says it never changed."""
    ts = np.arange(30, dtype=np.int64) * S
    f = metric_issues(ts, np.full(30, value))["figures"]
    c = StreamCleaner()
    list(c.clean(Reading("d", "m", int(t), value) for t in ts))
    assert (f["stuck"], f["unchanged"]) == (30, True)
    assert dict(c.flagged) == {"stuck": f["stuck"]}


def test_a_short_constant_series_is_unchanged_but_not_stuck() -> None:
    """Below the run that makes a freeze (20 readings), one value throughout is said to be
    unchanged and not stuck; a live series is neither."""
    f = metric_issues(np.arange(5) * S, np.full(5, 7.0))["figures"]
    assert (f["stuck"], f["unchanged"]) == (0, True)
    live = metric_issues(np.arange(40) * S, 20.0 + np.arange(40) % 7 * 0.1)["figures"]
    assert (live["stuck"], live["unchanged"]) == (0, False)


def test_the_summary_counts_the_metrics_that_never_changed() -> None:
    rows = [{"device_id": "p", "metric": m, "ts_ns": i * S,
             "value": 20.0 if m == "frozen" else 20.0 + i % 7}
            for i in range(40) for m in ("frozen", "live")]
    rep = device_report(rows)
    assert rep["metrics"]["frozen"]["unchanged"] and not rep["metrics"]["live"]["unchanged"]
    assert (rep["summary"]["unchanged"], rep["summary"]["stuck"]) == (1, 40)


def test_a_setpoint_that_moved_is_still_never_stuck() -> None:
    """Two to FEW_LEVELS values still hold by nature; NaN between the readings of one value
    splits it into runs, each judged by its length."""
    assert stuck_runs([55.0] * 60 + [60.0] * 60, min_run=20) == []
    v = [5.0] * 25 + [float("nan")] + [5.0] * 10
    assert stuck_runs(v, min_run=20) == [(0, 25)]
    assert stuck_runs([float("nan")] * 30, min_run=20) == []


def test_one_run_within_tol_from_first_to_last_is_stuck_by_its_length() -> None:
    """A series that wanders within ``tol`` all along never changed by the caller's own
    measure: it had no other hold to compare with, and was never stuck."""
    v = 20.0 + np.arange(30) * 1e-4          # 30 distinct values, each within 0.01
    assert stuck_runs(v, min_run=20, tol=0.01) == [(0, 30)]


def test_nab_art_flatline_is_stuck_throughout_in_report_and_stream(shared_data: Path) -> None:
    """NAB's art_flatline, 4,032 readings of 45.0 every 5 minutes: the report said 0 stuck
    while the stream cleaner flagged all 4,032."""
    import pandas as pd

    df = pd.read_csv(shared_data / "nab" / "data" / "artificialNoAnomaly" / "art_flatline.csv")
    ts = pd.to_datetime(df.timestamp).astype("datetime64[ns]").astype("int64").to_numpy()
    v = df.value.to_numpy(float)
    f = metric_issues(ts, v)["figures"]
    c = StreamCleaner()
    list(c.clean(Reading("d", "m", int(t), float(x)) for t, x in zip(ts, v, strict=True)))
    assert (f["readings"], f["stuck"], f["unchanged"]) == (4032, 4032, True)
    assert dict(c.flagged) == {"stuck": 4032}


@pytest.mark.parametrize("bad", ["5", b"5", True, [5]])
def test_resample_names_a_max_gap_that_is_no_number(bad: object) -> None:
    """Old: a text max_gap_ns raised a bare TypeError from a comparison deep in resample
    ('>=' not supported between 'str' and 'int') with how="interpolate", and was ignored
    silently with how="mean"; True bridged gaps of 1 ns."""
    for how in ("interpolate", "mean"):
        with pytest.raises(QualityError, match="'max_gap_ns' parameter of resample"):
            resample(np.array([0, 100]) * S, [1.0, 2.0], every_ns=10 * S, how=how,
                     max_gap_ns=bad)  # type: ignore[arg-type]
    # numbers of every kind still do
    for ok in (15 * S, np.int64(15 * S), 15e9, float("inf")):
        resample(np.array([0, 100]) * S, [1.0, 2.0], every_ns=10 * S, how="interpolate",
                 max_gap_ns=ok)
