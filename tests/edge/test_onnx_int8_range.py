"""An int8 ONNX graph clips inputs beyond the calibration rows' range, and now says so.

onnxruntime's static int8 holds every activation to the range the calibration rows reach
(MinMax), the input's included: a 1-8-1 MLP calibrated on x in -1..1 gave 0.33 for x = 50,
where torch gives 19.9, with no word; its ``calibration_rmse`` (0.001, on those rows only)
said all was well, and nothing recorded the range a device would need to tell."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

from edgewise.edge import export  # noqa: E402


@pytest.fixture(scope="module")
def narrow():
    """A seeded 1-8-1 MLP and its int8 graph calibrated on 200 rows spanning -1..1."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 1)).eval()
    cal = np.linspace(-1.0, 1.0, 200, dtype=np.float32)[:, None]
    return net, export(net, "onnx", "int8", name="narrow", calibration=cal)


def _torch(net, X):
    with torch.no_grad():
        return net(torch.from_numpy(np.asarray(X, np.float32))).numpy().ravel()


def test_int8_onnx_predict_warns_of_rows_beyond_the_calibration_range(narrow) -> None:
    """Check predict() on rows beyond the calibrated range warns, with how many rows and the
    input furthest out, its value and range (old: silent), where the int8 output really is
    clipped (0.33 against torch's 19.9)."""
    net, q = narrow
    X = np.array([[0.5], [-5.0], [50.0], [np.nan]], np.float32)
    with pytest.warns(UserWarning, match=r"int8 graph 'narrow': 2 of the 4 rows hold an input "
                                         r"beyond the range of the calibration rows \(input 0: "
                                         r"50 outside \[-1, 1\]\)"):
        got = q.predict(X)
    ref = _torch(net, X[:3])
    assert abs(got[0] - ref[0]) < 0.05  # inside: follows torch
    assert abs(got[2] - ref[2]) > 10  # beyond: clipped, what the warning is for
    assert np.isnan(got[3])


def test_int8_onnx_predict_inside_the_calibration_range_is_quiet(narrow) -> None:
    """Check rows within the calibrated range (its ends included) and NaN rows give no
    warning (warnings are errors here)."""
    _, q = narrow
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q.predict(np.array([[-1.0], [0.0], [1.0], [np.nan], [np.inf]], np.float32))


def test_int8_onnx_records_the_calibration_range_in_the_export_and_graph(narrow,
                                                                         tmp_path) -> None:
    """Check the export keeps each input's least and largest calibration value, and the saved
    graph carries them in its metadata (old: no record of them anywhere)."""
    import onnx

    _, q = narrow
    assert q.calibration_min.tolist() == [-1.0] and q.calibration_max.tolist() == [1.0]
    q.save(tmp_path)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "narrow.onnx")).metadata_props}
    assert json.loads(meta["edgewise.calibration_min"]) == [-1.0]
    assert json.loads(meta["edgewise.calibration_max"]) == [1.0]
    assert export(torch.nn.Linear(1, 1), "onnx", "float32").calibration_min is None
