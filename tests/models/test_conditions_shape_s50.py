"""ConditionNormalizer.transform refuses sensors with another number of columns than it
was fitted on: a single column broadcast against every fitted sensor's mean and spread,
and came back as z-scores of sensors it never held."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.conditions import ConditionNormalizer


@pytest.mark.parametrize("shape", [(5, 1), (5,), (5, 4)])
def test_transform_refuses_sensors_of_another_width(shape: tuple[int, ...]) -> None:
    """Check a (5, 1), 1-D or (5, 4) sensors array against 3 fitted sensors is refused,
    naming the shape wanted and the one given."""
    rng = np.random.default_rng(0)
    norm = ConditionNormalizer().fit(None, rng.normal(size=(100, 3)))
    with pytest.raises(InvalidParameterError, match=r"shape \(n_rows, 3\).*Got shape"):
        norm.transform(None, rng.normal(size=shape))


def test_transform_of_the_fitted_width_still_works() -> None:
    """Check sensors of the fitted width are z-scored as before."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    z = ConditionNormalizer().fit(None, x).transform(None, x)
    assert z.shape == (100, 3) and np.allclose(z.mean(axis=0), 0.0)


def test_a_missing_value_is_not_counted_as_a_distinct_one() -> None:
    """Check a sensor of 4 levels with gaps (NaN) is dropped at min_distinct 5, as it is
    without the gaps: NaN counted as a fifth value kept it."""
    levels = np.tile([1.0, 2.0, 3.0, 4.0], 25)
    gappy = levels.copy()
    gappy[::10] = np.nan
    sensors = np.c_[levels, gappy, np.arange(100.0)]
    norm = ConditionNormalizer(min_distinct=5).fit(None, sensors)
    assert norm.distinct_.tolist() == [4, 4, 100]
    assert norm.keep_.tolist() == [False, False, True]
