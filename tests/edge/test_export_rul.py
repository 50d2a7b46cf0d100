"""The library's RUL model (``edgewise.models.rul``): its boosted member exported to C."""

from __future__ import annotations

import numpy as np

from edgewise.bench.cmapss import load_test, load_train, make_model
from edgewise.edge import compress, export
from edgewise.edge.export_c import ALLOCATORS, undefined_symbols


def _rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def test_rul_model_gbm_in_c_matches_python_on_cmapss(shared_data):
    """Check that RULModel's LightGBM member runs in C with RMSE within 0.5 of Python on the
    FD001 test units, that C equals the float32 reference, and that a pruned copy fits 32 KB."""
    cdir = shared_data / "cmapss"
    train = load_train(cdir, "FD001")
    # quick on 2 cores: 30 units, and 2 calibration folds (the intervals, not exported)
    model = make_model(0, n_estimators=60, calibration_folds=2).fit(train[train["unit"] <= 30])
    test, truth = load_test(cdir, "FD001")
    F = model.features(test).to_numpy()
    py = model.predict(test).to_numpy()
    table = compress.tree_table(model.core_["gbm"])
    c = export(model.core_["gbm"], format="c", name="rulm")
    raw = c.predict(F)
    ref = compress.float32_thresholds(table).predict(F.astype(np.float32))
    assert np.abs(raw - ref).max() < 1e-3                      # C computes what it says
    pc = np.clip(model.weights_[0] * raw, 0.0, model.cap)      # the model's combine step
    assert abs(_rmse(pc, truth) - _rmse(py, truth)) < 0.5
    # float32 inputs (features are float64 in Python) move a few units across a split
    assert np.median(np.abs(pc - py)) < 1e-3
    assert not undefined_symbols(c.object_file()) & set(ALLOCATORS)
    small = export(compress.prune_trees(table, max_trees=40, max_depth=5), format="c",
                   name="rulm_small")
    assert small.flash_bytes < c.flash_bytes <= 32 * 1024  # 60 trees fit; bench: the 400 do not
    assert _rmse(np.clip(small.predict(F), 0, model.cap), truth) < 2 * _rmse(py, truth)


def test_compact_trees_cut_flash_with_the_same_splits(shared_data, fd001):
    """Check that the compact layout (shared exact thresholds, int16 leaves) computes its
    reference exactly and float32 C within the stated leaf bound, on ~2/3 of the flash."""
    from lightgbm import LGBMRegressor

    from edgewise.edge.export_compact import compact_reference

    Xtr, ytr, Xte, _ = fd001
    gbm = LGBMRegressor(n_estimators=80, num_leaves=31, learning_rate=0.05, verbose=-1,
                        random_state=0).fit(Xtr, ytr)
    table = compress.tree_table(gbm)
    full = export(gbm, format="c", name="lgb_f32")
    comp = export(gbm, format="c", dtype="compact", name="lgb_cmp")
    ref = compact_reference(table).predict(Xte.astype(np.float32))
    got = comp.predict(Xte)
    assert np.abs(got - ref).max() < 1e-3
    leaves = table.value[table.feature < 0]
    bound = table.n_trees * np.abs(leaves).max() / 32767 / 2     # int16 leaf rounding
    assert 0 < np.abs(got - full.predict(Xte)).max() <= bound + 1e-3
    assert comp.flash_bytes < 0.7 * full.flash_bytes
    assert not undefined_symbols(comp.object_file()) & set(ALLOCATORS)
