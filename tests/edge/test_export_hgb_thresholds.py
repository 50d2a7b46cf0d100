"""HistGradientBoosting thresholds in float32: C, compact C and ONNX decide as the model does.

``HistGradientBoostingRegressor`` compares the float64 input with a float64 threshold, and its
thresholds are often training values themselves (percentile bins: 521.33 in C-MAPSS). The
exporters rounded every threshold *down* to float32 (right for scikit-learn's other trees,
which compare float32 inputs), so a reading equal to such a threshold, which float32 rounds
up, went right where Python goes left: 262 of 3,000 C-MAPSS FD001 rows off by up to 5.1 cycles
(50 iterations; 197 rows with the 30 here) in C float32, compact and ONNX alike.
"""

from __future__ import annotations

import gzip
from dataclasses import replace

import numpy as np
import pytest
from sklearn.ensemble import (  # loaded before threadpool_limits, so it limits their OpenMP
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
)
from sklearn.tree import DecisionTreeRegressor
from threadpoolctl import threadpool_limits

from edgewise.edge import compress, export
from edgewise.edge.export_compact import compact_reference
from edgewise.errors import ExportError

PRED_TOL = 1e-3  # float32 sums of float32 leaves against the float64 model


@pytest.fixture(autouse=True)
def _one_thread():
    """HGB's OpenMP threads on a busy shared machine made a 1 s fit take 20-60 s."""
    with threadpool_limits(1):
        yield


def _f32(a):
    return np.asarray(a, np.float64).astype(np.float32).astype(np.float64)


def _leaf_bound(table):
    """How far the compact layout's int16 leaves may move a prediction."""
    leaves = table.value[table.feature < 0]
    return table.n_trees * float(np.abs(leaves).max()) / 32767 / 2


def _check_all_exports(model, X, name):
    """C float32, compact C and ONNX against ``model.predict(X)`` on every row."""
    py = model.predict(X)
    table = compress.tree_table(model)
    c = export(model, format="c", name=f"{name}_c").predict(X)
    o = export(model, format="onnx", name=f"{name}_o").predict(X)
    comp = export(model, format="c", dtype="compact", name=f"{name}_k").predict(X)
    bad_c = np.flatnonzero(np.abs(c - py) > PRED_TOL)
    bad_o = np.flatnonzero(np.abs(o - py) > PRED_TOL)
    assert len(bad_c) == 0, (len(bad_c), float(np.abs(c - py).max()))
    assert len(bad_o) == 0, (len(bad_o), float(np.abs(o - py).max()))
    # compact: the same splits, leaves within the stated int16 bound
    assert np.abs(comp - compact_reference(table).predict(_f32(X))).max() < PRED_TOL
    assert np.abs(comp - py).max() <= _leaf_bound(table) + PRED_TOL


@pytest.fixture(scope="module")
def fd001_rows(shared_data):
    """Raw C-MAPSS FD001 training rows (settings and sensors, as read: float64 decimals)
    and RUL capped at 125."""
    with gzip.open(shared_data / "cmapss" / "train_FD001.txt.gz", "rt") as f:
        d = np.loadtxt(f)
    unit, cycle = d[:, 0], d[:, 1]
    life = np.bincount(unit.astype(np.int64))[unit.astype(np.int64)]
    return d[:, 2:], np.minimum(life - cycle, 125.0)


def test_hgb_exports_match_python_on_cmapss_rows(fd001_rows):
    """Check that an HGB trained on C-MAPSS FD001 rows predicts 3,000 of them in C, compact C
    and ONNX as in Python, row for row (197 rows were off by up to 5.1 cycles)."""
    X, y = fd001_rows
    m = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, y)
    t = compress.tree_table(m)
    inner = (t.feature >= 0) & np.isfinite(t.threshold)
    # the case: thresholds that are readings, which float32 rounds up
    thr = t.threshold[inner]
    assert np.isin(thr[_f32(thr) > thr], X).any()
    rows = X[np.random.default_rng(0).choice(len(X), 3000, replace=False)]
    _check_all_exports(m, rows, "hgb_cm")


def test_hgb_exports_send_a_reading_equal_to_its_threshold_left():
    """Check that readings equal to a split's threshold (a decimal float32 rounds up) go left
    in C, compact C and ONNX as in Python, for every training value."""
    rng = np.random.default_rng(1)
    vals = np.round(np.linspace(520.0, 526.0, 601), 2)  # 0.01 steps, many repeats each
    up = vals[_f32(vals) > vals]
    x = rng.choice(up, 6000)
    X = np.c_[x, rng.choice(vals, 6000)]
    y = np.sin(x * 3.0) * 20 + (X[:, 1] > 523.0) * 5
    m = HistGradientBoostingRegressor(max_iter=15, max_bins=64, random_state=0).fit(X, y)
    t = compress.tree_table(m)
    thr = t.threshold[(t.feature == 0)]
    assert np.isin(thr, up).sum() >= 5  # splits at readings that float32 rounds up
    rows = np.c_[np.repeat(np.unique(x), 2), np.tile([521.0, 525.0], len(np.unique(x)))]
    _check_all_exports(m, rows, "hgb_eq")


def test_hgb_on_float32_data_is_exact_for_every_float32_input():
    """Check that an HGB trained on float32-precision values (adjacent ones too, whose
    midpoints are float32 ties) decides as the model for the float32 values just below, at
    and just above each threshold: such thresholds still round down (ties-to-even sent
    the upper neighbour left)."""
    rng = np.random.default_rng(2)
    one = np.float32(1.0)
    adjacent = one + np.arange(40, dtype=np.float32) * np.spacing(one)
    spread = rng.normal(size=150).astype(np.float32)  # < 255 values: midpoint splits
    x = np.r_[np.repeat(adjacent, 5), spread].astype(np.float64)
    X = np.c_[x, _f32(rng.normal(size=len(x)))]
    y = np.argsort(np.argsort(x)) + X[:, 1]
    m = HistGradientBoostingRegressor(max_iter=10, min_samples_leaf=3, random_state=0).fit(X, y)
    t = compress.tree_table(m)
    inner = (t.feature >= 0) & np.isfinite(t.threshold)
    assert (_f32(t.threshold[inner]) != t.threshold[inner]).any()  # midpoints float32 lacks
    t32 = compress.float32_thresholds(t).threshold.astype(np.float32)
    probes = []
    for f, v in zip(t.feature[inner], t32[inner], strict=True):
        for p in (np.nextafter(v, np.float32(-np.inf)), v, np.nextafter(v, np.float32(np.inf))):
            row = np.float32([1.0, 0.0])
            row[f] = p
            probes.append(row)
    P = np.array(probes).astype(np.float64)
    py = m.predict(P)
    assert np.abs(export(m, format="c", name="hgb_f32").predict(P) - py).max() < PRED_TOL
    assert np.abs(export(m, format="onnx", name="hgb_f32").predict(P) - py).max() < PRED_TOL


def test_only_hgb_tables_round_to_nearest_and_pruning_keeps_it():
    """Check that scikit-learn's other trees keep thresholds rounded down (they compare
    float32 inputs, exact that way), and that a pruned HGB table keeps its rounding."""
    rng = np.random.default_rng(3)
    X = np.round(rng.uniform(0, 5, size=(300, 2)), 2)
    y = X[:, 0] * 2 + X[:, 1]
    hgb = compress.tree_table(HistGradientBoostingRegressor(max_iter=5).fit(X, y))
    assert hgb.threshold_rounding == "nearest"
    assert compress.prune_trees(hgb, max_trees=2).threshold_rounding == "nearest"
    for model in (DecisionTreeRegressor(max_depth=4), GradientBoostingRegressor(n_estimators=5)):
        t = compress.tree_table(model.fit(X, y))
        assert t.threshold_rounding == "down"
        t32 = compress.float32_thresholds(t).threshold
        assert (t32 <= t.threshold).all()
    with pytest.raises(ExportError, match="threshold_rounding"):
        compress.float32_thresholds(replace(hgb, threshold_rounding="up"))
