"""Session 47's hunt: the FLASH figure of the detectors' C is the size of the constant
tables the compiler lays out, every table counted and no table that is not there; an MLP
with a weight that is not a finite float32, and a tree table with a leaf that is not a
finite float32 or a split at NaN, are refused at export."""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import replace

import numpy as np
import pytest

from edgewise.detect.context_likelihood import ContextLikelihood
from edgewise.detect.mahalanobis import Mahalanobis
from edgewise.edge import export
from edgewise.edge.compress import tree_table
from edgewise.errors import ExportError


def _table_bytes(ex, tmp_path) -> int:
    """Bytes of the read-only data objects (the constant tables) of the model's C compiled
    with the system ``cc`` unoptimised (-O2 folds small tables into the code)."""
    ex.save(tmp_path)
    obj = tmp_path / f"{ex.name}.o"
    subprocess.run(["cc", "-std=c99", "-O0", "-c", str(tmp_path / f"{ex.name}.c"), "-o",
                    str(obj)], check=True, capture_output=True)
    out = subprocess.run(["nm", "-S", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    return sum(int(f[1], 16) for f in map(str.split, out.splitlines())
               if len(f) == 4 and f[2] in "rR")


@pytest.mark.parametrize("d", [1, 3])
def test_mahalanobis_c_flash_counts_the_warm_up_table(d, tmp_path):
    """Check that FLASH_BYTES of a Mahalanobis C counts its WARM_AT table (D + 1 doubles) as
    well as the initial mean, covariance and counts: it left 8 * (D + 1) bytes out (120
    reported for 152 compiled at D = 3)."""
    names = [f"m{i}" for i in range(d)]
    det = Mahalanobis()
    for row in np.random.default_rng(0).normal(size=(40, d)):
        det.learn_one(dict(zip(names, map(float, row), strict=True)))
    ex = export(det, format="c", name=f"maha_flash{d}")
    assert f"#define MAHA_FLASH{d}_FLASH_BYTES {ex.flash_bytes}\n" in ex.files[f"maha_flash{d}.h"]
    assert ex.flash_bytes == _table_bytes(ex, tmp_path) == 8 * (d * d + 3 * d + 1)


def test_fresh_context_likelihood_c_flash_has_no_key_table(tmp_path):
    """Check that a fresh ContextLikelihood's C (no transition learned, so no INIT_KEYS
    table) reports the tables it has: it counted 2 bytes of a key table it does not emit."""
    ex = export(ContextLikelihood(), format="c", name="clik_fresh")
    assert "INIT_KEYS" not in ex.files["clik_fresh.c"]
    assert ex.flash_bytes == _table_bytes(ex, tmp_path)


@pytest.mark.parametrize("bad", [math.nan, math.inf, 1e39])
@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_mlp_with_a_weight_that_is_not_a_finite_float32_is_refused(bad, dtype):
    """Check that a torch MLP whose weight is NaN, inf or beyond float32 (a diverged
    training) is refused at export, naming the layer, the entry and the value: a NaN weight
    gave C that did not compile (float32) or that predicted numbers where torch gives NaN
    (int8, -0.58), an infinite one an int8 C predicting NaN for every row."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(),
                                torch.nn.Linear(4, 1)).double()
    with torch.no_grad():
        model[2].weight[0, 1] = bad
    with pytest.raises(ExportError, match=rf"layer 2 \(Linear\) weight \[0, 1\] is "
                                          rf"{re.escape(repr(bad))}; every weight and bias "
                                          r"must be a finite float32"):
        export(model, format="c", dtype=dtype, name="mlp_bad")


def _table():
    from sklearn.tree import DecisionTreeRegressor

    X = np.random.default_rng(0).normal(size=(100, 2))
    return tree_table(DecisionTreeRegressor(max_depth=2, random_state=0).fit(X, X[:, 0])), X


@pytest.mark.parametrize("fmt", [("c", "float32"), ("c", "compact"), ("c", "int8"),
                                 ("onnx", "float32")])
def test_tree_table_nan_leaf_is_refused(fmt):
    """Check that a tree table with a NaN leaf is refused by every tree export, naming the
    node: its C did not compile ('nanf'), the ONNX took it."""
    t, X = _table()
    leaf = int(np.flatnonzero(t.feature < 0)[0])
    bad_t = replace(t, value=np.where(np.arange(t.n_nodes) == leaf, np.nan, t.value))
    with pytest.raises(ExportError, match=rf"leaf node {leaf} holds nan; a leaf must be a "
                                          r"number"):
        export(bad_t, format=fmt[0], dtype=fmt[1], calibration=X, name="tt")


@pytest.mark.parametrize("dtype", ["compact", "int8"])
def test_leaves_beyond_float32_are_refused_where_the_leaves_are_scaled(dtype):
    """Check that int8 and compact C, which scale the leaves by their spread, refuse a tree
    whose leaves reach 9.9e38 (beyond float32), naming the leaf: they predicted NaN where
    the model predicts 0; float32 C still gives 0 there and inf beyond float32, as a
    device's float does."""
    from sklearn.tree import DecisionTreeRegressor

    X = np.arange(4.0)[:, None]
    big = DecisionTreeRegressor(max_depth=2).fit(X, X[:, 0] * 3.3e38)
    with pytest.raises(ExportError, match=rf"Cannot export to {dtype}: tree table leaf node "
                                          r"\d+ holds 6\.6e\+38, beyond float32's range"):
        export(big, format="c", dtype=dtype, calibration=X, name="big")
    assert export(big, format="c", name="big").predict(X)[0] == 0.0


def test_tree_table_nan_threshold_is_refused():
    """Check that a split at NaN (which no C compiler takes as 'nanf') is refused, naming
    the node and its feature, while an infinite threshold (a NaN-only split) still exports."""
    t, X = _table()
    node = int(np.flatnonzero(t.feature >= 0)[0])
    thr = t.threshold.copy()
    thr[node] = np.nan
    with pytest.raises(ExportError, match=rf"node {node} splits feature "
                                          rf"{int(t.feature[node])} at nan"):
        export(replace(t, threshold=thr), format="c", name="tt")
    thr[node] = np.inf  # every input goes left there: exports, and agrees with Python
    ok = replace(t, threshold=thr)
    assert np.allclose(export(ok, format="c", name="tt").predict(X), ok.predict(X), atol=1e-6)
