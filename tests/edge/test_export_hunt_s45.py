"""Edge exports, session 45's hunt: tiny scales.

* An int8 ONNX graph of an MLP whose weights are tiny next to its bias (weights 1e-6, bias
  0.5): the int32 bias (steps of input scale x weight scale) overflowed, onnxruntime only
  logged it and clipped the bias, and the graph gave 0.0 for every row where torch gives 0.5.
* A HistGradientBoosting model on an input below float32's normal range (scaled by 1e-40):
  float32 holds such inputs and splits in steps of 1.4e-45, and the float32 exports (C,
  compact, ONNX) disagreed with the model with no word (2.5% of rows by 1e-42, 82% by 1e-44).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest

from edgewise.edge import export
from edgewise.errors import ExportError

# -- int8 ONNX: a bias beyond int32 at its scale -------------------------------------------------


def _tiny_mlp(weight_scale: float, bias: float = 0.5):
    """Linear(3, 4), ReLU, Linear(4, 1), every weight times ``weight_scale``, every bias
    ``bias``; and 64 calibration rows."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        for k in (0, 2):
            net[k].weight.mul_(weight_scale)
            net[k].bias.fill_(bias)
    X = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    return net, X


def _torch_out(net, X):
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(X)).numpy()[:, 0].astype(np.float64)


@pytest.mark.parametrize("weight_scale", [1e-6, 1e-30])
def test_int8_onnx_bias_beyond_int32_is_refused(weight_scale):
    """Check the int8 ONNX export of an MLP whose weights are tiny next to its bias is refused
    naming the layer, the bias and its value: the graph gave 0.0 for every row where torch
    gives 0.5, with only onnxruntime's log line (not a warning) to say so."""
    pytest.importorskip("onnxruntime")
    net, X = _tiny_mlp(weight_scale)
    assert np.allclose(_torch_out(net, X), 0.5, atol=1e-4)
    logging.disable(logging.WARNING)  # onnxruntime's own lines
    try:
        with pytest.raises(ExportError, match=r"layer '0' to int8: its bias 0\.bias\[\d\] = "
                                              r"0\.5 is .* beyond int32's 2147483647.*"
                                              r"float graph gives 0\.5.*float32"):
            export(net, format="onnx", dtype="int8", name="tiny", calibration=X)
    finally:
        logging.disable(logging.NOTSET)


def test_int8_onnx_calibration_too_narrow_for_the_bias_is_refused():
    """Check calibration rows whose inputs barely vary (scaled by 1e-12) are refused naming
    the input scale: the step of the first layer's int32 bias was 3.3e-17, the bias clipped,
    and the int8 graph gave -0.49 where torch gives -0.52, with no word."""
    pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    cal = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * 1e-12
    logging.disable(logging.WARNING)
    try:
        with pytest.raises(ExportError, match=r"layer '0' to int8: .* = input scale \d\.\d+e-14 "
                                              r"x weight scale .*calibrate on rows that vary"):
            export(net, format="onnx", dtype="int8", name="narrow", calibration=cal)
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize("weight_scale,bias", [(1e-4, 0.5), (1e-30, 0.0), (1.0, 0.5)])
def test_int8_onnx_bias_within_int32_still_exports(weight_scale, bias):
    """Check the int8 ONNX export still goes through, and follows torch, where each bias fits
    int32 at its scale (small weights with a modest bias, tiny weights with no bias)."""
    pytest.importorskip("onnxruntime")
    net, X = _tiny_mlp(weight_scale, bias)
    logging.disable(logging.WARNING)
    try:
        q = export(net, format="onnx", dtype="int8", name="fits", calibration=X)
    finally:
        logging.disable(logging.NOTSET)
    ref = _torch_out(net, X)
    assert np.abs(q.predict(X) - ref).max() <= 0.05 * max(float(np.ptp(ref)), abs(bias), 1e-6)


def test_c_int8_of_tiny_weight_mlp_follows_torch():
    """Check the C int8 export of the same MLP gives torch's 0.5: its bias stays float and its
    per-row weight scales are float, so nothing there overflows (a guard, not a fix)."""
    net, X = _tiny_mlp(1e-30)
    c = export(net, format="c", dtype="int8", name="tinyc")
    np.testing.assert_allclose(c.predict(X), _torch_out(net, X), atol=1e-6)


# -- float32 trees: splits below float32's normal range -------------------------------------------


def _hgb_on_tiny_input(scale: float):
    """30 HistGradientBoosting trees on two inputs, the first scaled by ``scale``."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (2000, 2))
    y = X[:, 0] * 2 + np.sin(X[:, 1])
    X[:, 0] *= scale
    return HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, y), X


@pytest.mark.parametrize("fmt,dtype", [("c", "float32"), ("c", "compact"), ("onnx", "float32")])
def test_split_below_float32_normal_range_is_refused(fmt, dtype):
    """Check a model that compares float64 inputs and splits below float32's normal range
    (1.18e-38) is refused naming the feature and the threshold, as one beyond its range is:
    on an input scaled by 1e-42, 2.5% of the rows were off by up to 0.55 (output std 2.1)."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    m, _ = _hgb_on_tiny_input(1e-42)
    with pytest.raises(ExportError, match=r"Feature 0 is split at -?\d.*e-4\d, below float32's "
                                          r"normal range \(\|t\| >= 1\.175e-38; \d+ of"):
        export(m, fmt, dtype, name="tiny")


def test_split_near_float32_normal_range_still_exports():
    """Check an input whose splits stay in float32's normal range (scaled by 1e-30) still
    exports and agrees with the model."""
    m, X = _hgb_on_tiny_input(1e-30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = export(m, "c", "float32", name="small")
    np.testing.assert_allclose(e.predict(X), m.predict(X), atol=1e-4)


def test_tree_on_float32_inputs_with_tiny_values_still_exports():
    """Check a DecisionTreeRegressor (which compares float32 inputs itself, thresholds rounded
    down: exact) on an input scaled by 1e-40 still exports and agrees with the model."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (500, 2))
    X[:, 0] *= 1e-40
    m = DecisionTreeRegressor(max_depth=5, random_state=0).fit(X, X[:, 1])
    e = export(m, "c", "float32", name="dt")
    np.testing.assert_allclose(e.predict(X), m.predict(X), atol=1e-5)
