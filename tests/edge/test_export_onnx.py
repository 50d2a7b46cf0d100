"""ONNX export: onnxruntime results equal the Python model within tolerance on real data."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.edge import export
from tests.edge.test_export_c import _mlp, _rmse


def test_ewzscore_onnx_step_matches_python_on_nab(nab_series):
    """Check that the ONNX step gives Python's score and next state at every reading."""
    det = EWZScore()
    vals = nab_series[:3000]
    states, scores = [], []
    for v in vals:
        states.append((det.mean_, det.var_, det.n_))
        scores.append(det.score_one({"v": v}))
        det.learn_one({"v": v})
    st = np.array(states)
    g = export(EWZScore(), format="onnx", name="ewz")
    score, mean_next, _var_next, n_next = g.run({
        "value": vals.astype(np.float32), "mean": st[:, 0].astype(np.float32),
        "var": st[:, 1].astype(np.float32), "n": st[:, 2].astype(np.float32)})
    assert np.abs(score - np.array(scores)).max() < 1e-3
    assert np.allclose(mean_next[:-1], st[1:, 0], rtol=1e-5)
    assert np.array_equal(n_next[:-1], st[1:, 2])


def test_mlp_onnx_float_and_int8_on_cmapss(fd001):
    """Check torch MLP -> ONNX parity, and that int8 PTQ (calibrated on real rows) stays close."""
    import torch

    net, mu, sd = _mlp(fd001)
    Xtr, _, Xte, yte = fd001
    Z = ((Xte - mu) / sd).astype(np.float32)
    with torch.no_grad():
        py = net(torch.tensor(Z)).numpy()[:, 0].astype(np.float64)
    f = export(net, format="onnx", name="mlp")
    assert np.abs(f.predict(Z) - py).max() < 1e-3
    calib = ((Xtr[:512] - mu) / sd).astype(np.float32)
    q = export(net, format="onnx", dtype="int8", name="mlp", calibration=calib)
    assert q.dtype == "int8" and q.size_bytes < f.size_bytes
    # the first 512 training rows do not span every test row: predict says so
    with pytest.warns(UserWarning, match=r"rows hold an input beyond the range of the "
                                         r"calibration rows"):
        pq = q.predict(Z)
    assert abs(_rmse(pq, yte) - _rmse(py, yte)) < 1.5


def test_cnn1d_onnx_matches_torch(fd001):
    """Check that a small 1D-CNN over sensor windows exports to ONNX with parity."""
    import torch

    _, _, Xte, _ = fd001
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv1d(3, 8, kernel_size=3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool1d(1),
        torch.nn.Flatten(), torch.nn.Linear(8, 1)).eval()
    x = ((Xte - Xte.mean(0)) / (Xte.std(0) + 1e-9)).astype(np.float32).reshape(-1, 3, 14)[:500]
    with torch.no_grad():
        py = net(torch.tensor(x)).numpy()[:, 0]
    g = export(net, format="onnx", name="cnn", calibration=x)
    out = g.run({"X": x})[0][:, 0]
    assert np.abs(out - py).max() < 1e-4
