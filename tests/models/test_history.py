"""A device's stored readings as a RUL history (models.history.device_frame)."""

from __future__ import annotations

import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.history import device_frame


@pytest.mark.parametrize(("metric", "role"), [("cycle", "time"), ("unit", "unit")])
def test_a_metric_named_like_the_unit_or_time_column_is_refused(metric: str, role: str) -> None:
    """Check that a metric named like the history's unit or time column is refused by name
    (pandas' 'cannot insert cycle, already exists' crashed every store RUL path)."""
    rows = [(metric, t, float(t)) for t in (10, 20, 30)] + [("s2", 20, 642.0)]
    with pytest.raises(InvalidParameterError, match=rf"metric named '{metric}', the name of "
                                                    rf"the history's {role} column") as info:
        device_frame(rows, "pump-1")
    assert (info.value.field, info.value.value) == (f"{role}_column", metric)
    # with other column names the metric is an ordinary sensor
    wide = device_frame(rows, "pump-1", unit_column="device", time_column="step")
    assert list(wide.columns) == ["device", "step", *sorted([metric, "s2"])]
