"""A forecaster's history spanning more than 292 years is in order, not "after a later one".

Its check subtracted neighbouring times (``np.diff``), which wraps round int64 nanoseconds
for a step over 292 years: a sorted history was refused as unsorted. Now neighbours are
compared; an unsorted one is still refused.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.forecast import Forecaster

YEAR = 365 * 86_400 * 10**9


def test_a_step_over_292_years_is_in_order_and_a_step_back_is_not() -> None:
    ts = np.array([-200 * YEAR, 150 * YEAR, 150 * YEAR + 10**9], dtype=np.int64)
    got_ts, got_v = Forecaster()._series(ts, [1.0, 2.0, 3.0])
    assert got_ts.tolist() == ts.tolist() and got_v.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(InvalidParameterError, match="after a later one"):
        Forecaster()._series(ts[::-1].copy(), [1.0, 2.0, 3.0])
