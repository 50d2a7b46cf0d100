"""The stored-data explanation of an alert (the API's and dashboard's "why")."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.explain.alerts import alert_explanation

S = 1_000_000_000  # ns per second


def device_rows(current_unit: float) -> list[tuple[str, int, float]]:
    """A pump's flow (l/min) and motor current (``current_unit`` per A): 200 s of normal
    readings, then 10 s where the current jumps while the flow stays normal."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(210):
        flow = 30.0 + rng.standard_normal()
        amps = 2.0 + 0.01 * rng.standard_normal() + (0.2 if i >= 200 else 0.0)
        rows += [("flow", i * S, flow), ("current", i * S, amps * current_unit)]
    return rows


@pytest.mark.parametrize("unit", [1.0, 1e-9, 1e9])
def test_the_metric_that_broke_drives_the_explanation_in_any_units(unit):
    """Check the current is named whether it is stored in A, GA or nA: the covariance
    ridge is relative to each metric, not pooled over metrics or absolute."""
    ex = alert_explanation(device_rows(unit), 200 * S, 209 * S)
    top = max(ex.contributions, key=lambda k: abs(ex.contributions[k]))
    assert top == "current"
    assert abs(ex.contributions["current"]) > 10 * abs(ex.contributions["flow"])
    assert ex.reference_rows == 200


def test_too_little_history_is_named():
    """Check an alert with almost no reference history gets a clear error."""
    with pytest.raises(InvalidParameterError, match="complete reading times before"):
        alert_explanation(device_rows(1.0)[:20], 5 * S, 9 * S)
