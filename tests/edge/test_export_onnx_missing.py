"""ONNX tree export on LightGBM's missing values: NaN and the zero band, every missing_type."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from edgewise.edge import compress, export

ONNX_TOL = 1e-5  # float32 graph against LightGBM's double predictions (|y| < 10)
#: LightGBM's ``decision_type`` bit for default_left (bits 2-3 hold the missing_type)
DEFAULT_LEFT = 2
BAND = [0.0, -0.0, 1e-36, -1e-36, 1e-35, -1e-35]  # float32(+-1e-35) is kZeroThreshold: in


def _train(kind):
    """A tiny LightGBM model whose every split has ``missing_type`` ``kind``; zeros of
    feature 0 look like its high values and zeros of feature 1 like its low ones, so
    "Zero" splits default both left and right."""
    from lightgbm import LGBMRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 3))
    X[rng.random(X.shape) < 0.3] = 0.0
    X[rng.random(X.shape) < 0.1] = np.nan
    Z = np.nan_to_num(X, nan=0.0)
    y = np.where(Z[:, 0] == 0, 3.0, Z[:, 0]) + np.where(Z[:, 1] == 0, -3.0, Z[:, 1]) + Z[:, 2] / 2
    opts = {"Zero": {"zero_as_missing": True}, "None": {"use_missing": False}}.get(kind, {})
    return LGBMRegressor(n_estimators=20, num_leaves=6, min_child_samples=5, verbose=-1,
                         n_jobs=1, random_state=0, deterministic=True, **opts).fit(X, y).booster_


def _flip_default_left(booster):
    """The same trees with every split's default_left the other way (LightGBM's own model
    text, reloaded), so each missing_type is checked with default_left true and false."""
    from lightgbm import Booster

    def flip(line):
        types = [int(v) ^ DEFAULT_LEFT for v in line.group(1).split()]
        return "decision_type=" + " ".join(map(str, types))

    text = re.sub(r"^decision_type=(.*)$", flip, booster.model_to_string(), flags=re.M)
    text = re.sub(r"^tree_sizes=.*\n", "", text, flags=re.M)  # byte offsets, now stale
    return Booster(model_str=text)


def _splits(booster):
    """(missing_type, default_left) of every split."""
    out = set()

    def walk(n):
        if "leaf_value" not in n:
            out.add((n["missing_type"], n["default_left"]))
            walk(n["left_child"])
            walk(n["right_child"])

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return out


def _rows():
    """Ordinary values, NaN and the zero band (and 1e-34, just outside it), as float32."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 3)).astype(np.float32)
    pal = np.array([*BAND, 1e-34, -1e-34, np.nan], np.float32)
    mask = rng.random(X.shape) < 0.4
    X[mask] = rng.choice(pal, mask.sum())
    edge = np.array([[v, w, 0.5] for v in [*BAND, np.nan] for w in [*BAND, np.nan, 1.0, -1.0]],
                    np.float32)
    return np.vstack([X, edge])


@pytest.mark.parametrize("default_left", [True, False])
@pytest.mark.parametrize("kind", ["Zero", "None", "NaN"])
def test_onnx_trees_follow_lightgbm_missing_values(kind, default_left):
    """Check that the ONNX graph predicts as LightGBM on NaN, on |x| <= 1e-35 (0.0, -0.0,
    +-1e-36, +-1e-35) and on ordinary values, for splits with missing_type "Zero", "None"
    and "NaN", defaulting left and right. The graph sent the zero band of a "Zero" split
    where 0 goes rather than the default way (errors up to 3), unlike LightGBM and the C."""
    booster = _train(kind)
    if not default_left:
        booster = _flip_default_left(booster)
    splits = _splits(booster)
    assert {k for k, _ in splits} == {kind}
    # LightGBM's training writes default_left true for every "None" split; the flip covers false
    assert (kind, default_left) in splits
    rows = _rows()
    model = booster.predict(rows.astype(np.float64))
    got = export(booster, format="onnx", name=f"lgb_{kind}").predict(rows)
    err = float(np.abs(got - model).max())
    assert err < ONNX_TOL, f"ONNX off LightGBM by {err:.3g} ({kind}, default_left={default_left})"
    t = compress.tree_table(booster)
    assert (t.zero_missing is not None) == (kind == "Zero")
    assert np.abs(t.predict(rows) - model).max() < 1e-9
    if kind == "Zero":  # the band taking 0's way instead of the default one shows
        assert np.abs(replace(t, zero_missing=None).predict(rows) - model).max() > 0.1
