"""The device report's limit and unit checks judge finite readings only, and count a
reading out of range once; a metric with no valid reading has no drift score."""

from __future__ import annotations

import math

import numpy as np

from edgewise.quality.drift import drift_score
from edgewise.quality.limits import Limits
from edgewise.quality.report import device_report

S = 10**9
NAN = float("nan")


def _figures(values: list[float], limits: Limits | None = None,
             unit: str | None = None) -> dict:
    rows = [{"device_id": "d", "metric": "m", "ts_ns": i * S, "value": v, "unit": unit}
            for i, v in enumerate(values)]
    return device_report(rows, {"m": limits} if limits else None)["metrics"]["m"]


def test_a_nan_is_invalid_and_nothing_else() -> None:
    """Check a NaN between readings that change by 0.7 in 2 s is one invalid reading: it
    neither makes the next reading too fast (it was read as 0.0, so 1.2 changed by 1.2 in
    1 s: rate 1, where the series without the NaN has rate 0) nor is out of a range that
    excludes 0.0 (it was)."""
    m = _figures([0.5, NAN, 1.2, 1.3], Limits(max_rate=1.0))
    assert (m["rate"], m["out_of_range"], m["invalid"]) == (0, 0, 1)
    assert _figures([0.5, 1.2, 1.3], Limits(max_rate=1.0))["rate"] == 0
    m = _figures([20.0, NAN, 30.0], Limits(low=10))
    assert (m["out_of_range"], m["invalid"], m["validity"]) == (0, 1, round(2 / 3, 4))


def test_a_reading_out_of_its_limits_and_its_unit_is_out_of_range_once() -> None:
    """Check 150 %RH under ``Limits(high=100)`` is one reading out of range (it was two:
    once for the limit, once for the unit), and that a reading impossible for its unit
    alone makes the next one no rate violation (the rate is judged from the last reading
    in range, as the stream cleaner judges it)."""
    m = _figures([50.0, 150.0, 60.0], Limits(high=100), "%RH")
    assert (m["out_of_range"], m["invalid"]) == (1, 1)
    m = _figures([50.0, 150.0, 52.0, 53.0], Limits(max_rate=10.0), "%RH")
    assert (m["out_of_range"], m["rate"], m["invalid"]) == (1, 0, 1)


def test_a_metric_with_no_valid_reading_has_no_drift() -> None:
    """Check the drift of a metric whose every reading is invalid is None (shown '-'),
    not 0.00, and that a valid one keeps its score."""
    assert _figures([NAN, NAN, math.inf], Limits(high=100))["drift"] is None
    assert _figures([150.0] * 30, Limits(high=100))["drift"] is None
    steady = list(20 + np.random.default_rng(0).normal(0, 0.1, 40))
    assert _figures(steady)["drift"] == round(drift_score(steady), 3)
