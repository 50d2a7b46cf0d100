"""Edge exports, session 44's hunt: LightGBM's "NaN or not" splits (threshold 1e300), where
LightGBM sends +inf and numbers above 1e300 with the numbers, not with NaN."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from edgewise.edge import compress, export
from edgewise.errors import ExportError

lgb = pytest.importorskip("lightgbm")


def _lgb_with_nan_splits():
    """20 LightGBM trees on 3 inputs, the first missing in 20% of rows (y = 10 there), so
    later trees split "NaN or not" at threshold 1e300; and the training rows."""
    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (400, 3))
    y = X[:, 0] * 2 + np.sin(X[:, 1]) + 0.1 * X[:, 2]
    X[rng.random(400) < 0.2, 0] = np.nan
    y = np.where(np.isnan(X[:, 0]), 10.0, y)
    return lgb.LGBMRegressor(n_estimators=20, verbose=-1).fit(X, y), X


#: +inf; finite in float64 but beyond 1e300 (and float32's range: inf on a device); NaN
_ROWS = np.array([[np.inf, 0, 0], [1e301, 0, 0], [3.5e38, 0, 0], [np.nan, 0, 0], [5, 0, 0]])


def test_lightgbm_inf_goes_with_the_numbers_not_nan():
    """Check the tree table reads a threshold of 1e300 as +inf: LightGBM predicts 6.00 for an
    inf input (as for 5), 9.02 for NaN; the table gave inf NaN's 9.02."""
    m, _ = _lgb_with_nan_splits()
    dump = m.booster_.dump_model()["tree_info"]
    assert any(t["tree_structure"].get("threshold", 0) >= 1e300 for t in dump)
    py = m.predict(_ROWS)
    assert py[0] == pytest.approx(py[4]) and py[3] != pytest.approx(py[0])
    np.testing.assert_allclose(compress.tree_table(m).predict(_ROWS), py, atol=1e-9)


@pytest.mark.parametrize("fmt,dtype", [("c", "float32"), ("c", "compact"), ("onnx", "float32")])
def test_lightgbm_inf_exports_agree_with_python(fmt, dtype):
    """Check the C (float32, compact) and the ONNX graph give LightGBM's prediction for +inf
    and for values beyond float32's range (inf as float32): they gave NaN's (9.02 for 6.00)."""
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    m, _ = _lgb_with_nan_splits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = export(m, fmt, dtype, name=f"s44_{dtype}")
    np.testing.assert_allclose(e.predict(_ROWS), m.predict(_ROWS), atol=1e-4)


# -- inputs beyond float32's range --------------------------------------------------------------


def _hgb_on_huge_input():
    """20 HistGradientBoosting trees on two inputs, the first scaled by 1e39 (beyond float32's
    3.4e38: a device's float reads it as +-inf), and its training rows."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (400, 2))
    y = X[:, 0] * 2 + np.sin(X[:, 1])
    X[:, 0] *= 1e39
    return HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(X, y), X


@pytest.mark.parametrize("fmt,dtype", [("c", "float32"), ("c", "compact"), ("onnx", "float32")])
def test_split_beyond_float32_range_is_refused(fmt, dtype):
    """Check a model that compares float64 inputs and splits beyond float32's range is
    refused naming the feature and the threshold: the float32 C gave RMSE 1.65 against the
    model's output std 1.73 (every input +-inf), with no word."""
    m, _ = _hgb_on_huge_input()
    with pytest.raises(ExportError, match=r"Feature 0 is split at -?\d.*e\+39, beyond float32"):
        export(m, fmt, dtype, name="huge")


def test_calibration_beyond_float32_range_is_refused():
    """Check int8 calibration rows beyond float32's range are refused naming the row and
    column: that column's range started at -inf (every input coded 255), the int8 C's RMSE
    was 1.44 against the model's output std 1.34 (a HistGradientBoosting model's C, with an
    inf - -inf step, did not compile)."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (100, 2))
    m = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, X[:, 0] + X[:, 1])
    cal = X.copy()
    cal[5, 1] = -1e39
    with pytest.raises(ExportError, match=r"row 5, column 1 is -1e\+39, beyond float32"):
        export(m, "c", "int8", calibration=cal, name="hugecal")


# -- a feature count other than trained -----------------------------------------------------


@pytest.mark.parametrize("width", [2, 4])
def test_onnx_predict_wrong_width_is_an_export_error(width):
    """Check OnnxExport.predict on rows of another width than the model's 3 raises an
    ExportError naming both shapes, as CExport.predict does: it raised onnxruntime's
    InvalidArgument."""
    pytest.importorskip("onnxruntime")
    from sklearn.tree import DecisionTreeRegressor

    X = np.random.default_rng(0).normal(size=(50, 3))
    g = export(DecisionTreeRegressor(max_depth=2).fit(X, X[:, 0]), "onnx", name="w")
    with pytest.raises(ExportError, match=rf"shape \(rows, 3\)\. Got shape \(2, {width}\)"):
        g.predict(np.zeros((2, width)))
