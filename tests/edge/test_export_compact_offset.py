"""Compact and int8 tree C on a large output offset keep the float32 export's precision.

The compact layout centred each tree's leaves and put the offset in a float base, rounded
to float32 in the C: on y = 101325 + x (300 boosted trees) the C was 0.0066 from the model
and from :func:`~edgewise.edge.export_compact.compact_reference` ("the ensemble the compact C
computes"), while its header said the int16 leaves move a prediction by at most 0.0007 (on
y = 101325.1 + x, 100 trees: 0.0073 where the header said 0.0002). The
base's float32 rest is now added to the leaves' small sum before the base, so the float
output is rounded once, as the float32 export's is. The int8 tree C had the same float
base: 0.0073 from QuantizedTrees.predict, which says it predicts as the C does."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from edgewise.edge.compress import tree_table
from edgewise.edge.export_compact import compact_reference, export_trees_compact

#: half a float32 step at 101325 (its steps are 2**-7): the float output's own rounding
HALF_STEP = 2.0**-8


@pytest.fixture(scope="module")
def offset_model():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(1)
    X = rng.normal(size=(1000, 2))
    y = 101325.1 + X[:, 0] + 0.1 * rng.normal(size=1000)
    m = GradientBoostingRegressor(n_estimators=100, max_depth=2, random_state=0).fit(X, y)
    T = rng.normal(size=(2000, 2)).astype(np.float32)
    return m, T


def test_compact_c_on_a_large_offset_is_within_its_stated_bound(offset_model) -> None:
    """Check the compact C is within the header's int16 bound plus the float output's own
    rounding of the model (old: 0.0073 against 0.0002 + 0.0039), and within that rounding of
    compact_reference (old: 0.0073)."""
    m, T = offset_model
    t = tree_table(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the int16 step note, if any: not what is tested
        c = export_trees_compact(t, name="offs")
    bound = float(re.search(r"by at most ([0-9.e+-]+?)\. ", c.files["offs.h"]).group(1))
    got = c.predict(T)
    assert np.abs(got - m.predict(T)).max() <= bound + HALF_STEP * 1.01
    assert np.abs(got - compact_reference(t).predict(T)).max() <= HALF_STEP * 1.01


def test_compact_c_of_a_constant_off_float32_target_is_silent_and_exact() -> None:
    """Check a constant target that float32 cannot hold (101325.1) still exports with no
    warning and a bound of 0, and the C gives its float32 value."""
    from sklearn.ensemble import GradientBoostingRegressor

    X = np.random.default_rng(0).normal(size=(100, 2))
    m = GradientBoostingRegressor(n_estimators=5).fit(X, np.full(100, 101325.1))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        c = export_trees_compact(tree_table(m), name="flat1")
    assert "by at most 0. */" in c.files["flat1.h"]
    assert np.all(c.predict(X[:5]) == float(np.float32(101325.1)))


def test_int8_tree_c_on_a_large_offset_predicts_as_quantized_trees(offset_model) -> None:
    """Check the int8 tree C is within the float output's own rounding of
    QuantizedTrees.predict ("exactly as the int8 C code does") on y = 101325.1 + x (old:
    0.0073, its float base rounded on its own)."""
    from edgewise.edge.compress import quantize_trees
    from edgewise.edge.export_c import export_trees

    m, T = offset_model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # calibration notes: not what is tested
        q = quantize_trees(tree_table(m), T)
    c = export_trees(q, name="offq")
    assert np.abs(c.predict(T) - q.predict(T)).max() <= HALF_STEP * 1.01
