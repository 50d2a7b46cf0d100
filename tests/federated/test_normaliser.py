"""The per-condition normaliser that federated clients fit from sufficient statistics."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.federated.data import ConditionNormaliser


@pytest.mark.parametrize("unit", [1.0, 1e-9, 1e9])
def test_every_varying_channel_is_standardised_in_any_units(unit: float) -> None:
    """Check a channel read in small units (variance 1e-20) is z-scored like any other, and
    only a constant channel keeps a deviation of 1."""
    rng = np.random.default_rng(0)
    n = 500
    X = np.c_[100 + 5 * rng.standard_normal(n), 3.0 + 0.1 * rng.standard_normal(n),
              np.full(n, 7.0)] * unit
    cond = rng.integers(0, 2, n)
    norm = ConditionNormaliser.from_stats(*ConditionNormaliser.stats(X, cond, n_conditions=2))
    Z = norm.transform(X, cond)
    np.testing.assert_allclose(Z[:, :2].std(axis=0), 1.0, rtol=0.05)
    assert (norm.std[:, 2] == 1.0).all() and np.abs(Z[:, 2]).max() < 1e-6 * unit + 1e-6
