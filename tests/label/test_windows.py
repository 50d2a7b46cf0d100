"""Windows cut from a device's history: the features active learning and feedback use."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.label.windows import windows_from_series


@pytest.mark.parametrize("unit", [2.0**-30, 2.0**30])
def test_window_features_do_not_depend_on_the_units(unit: float) -> None:
    """Check a metric read in tiny units (nA for A) gives the same window features and
    scores: the robust scaling has no absolute floor that would flatten it."""
    rng = np.random.default_rng(0)
    v = 0.01 * rng.standard_normal(600)
    v[300:320] += 0.2
    ts = np.arange(600) * 10**9
    ref = windows_from_series(v, ts, "d", length=30)
    got = windows_from_series(v * unit, ts, "d", length=30)
    np.testing.assert_allclose(got.features, ref.features, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got.scores >= 0.9, ref.scores >= 0.9)
    assert ref.features[:, 0].std() > 0  # the features do vary between windows
