"""ONNX int8 (static QDQ) graphs: missing inputs give NaN, and the output is not capped.

Two bugs the hunt found in :func:`edgewise.edge.export_onnx.quantize_int8`:

* onnxruntime's QuantizeLinear maps NaN to an ordinary code, so a NaN or infinite input gave
  a plausible prediction (118.2 and 113.7 cycles on C-MAPSS FD001) where torch, the float
  graph and the C exports give NaN;
* with int8 weights, onnxruntime's x86 kernels without VNNI (AVX2) multiply with
  ``vpmaddubsw``, whose int16 pair sums saturate: an FD001 MLP's output stopped near 139.7
  while calibration outputs reach 161 (25.1 cycles off at most). The export now quantises
  weights and activations as uint8 (U8U8), which no kernel saturates. On a machine with VNNI
  or on ARM the old graph was already right, so there the output test passes on old code too.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.edge import export

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def _torch(net, X):
    with torch.no_grad():
        return net(torch.tensor(np.asarray(X, np.float32))).numpy().reshape(len(X))


def test_int8_graph_gives_nan_for_rows_with_nan_or_inf():
    """Check that a row with a NaN, +inf or -inf input gives NaN in the int8 graph (old: -0.59
    for NaN, 0.20 for inf; torch gives no finite value), for a flat and a 3-D input,
    while finite rows keep their values."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 1)).eval()
    cal = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    E = np.array([[0.5, 0.1, -0.2], [np.nan, 0.1, -0.2], [0.5, np.inf, -0.2],
                  [0.5, 0.1, -np.inf], [0.3, -0.4, 0.9]], np.float32)
    bad = np.array([False, True, True, True, False])
    q = export(net, format="onnx", dtype="int8", name="m", calibration=cal)
    got = q.predict(E)
    assert np.array_equal(np.isnan(got), bad), got
    assert not np.isfinite(_torch(net, E[bad])).any()
    assert np.abs(got[~bad] - _torch(net, E[~bad])).max() < 0.05

    cnn = torch.nn.Sequential(torch.nn.Conv1d(2, 4, kernel_size=3), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(16, 1)).eval()
    cal3 = np.random.default_rng(1).normal(size=(128, 2, 6)).astype(np.float32)
    W = cal3[:4].copy()
    W[1, 1, 5] = np.nan
    W[2, 0, 0] = -np.inf
    got = export(cnn, format="onnx", dtype="int8", name="cnn", calibration=cal3).predict(W)
    assert np.array_equal(np.isnan(got), [False, True, True, False]), got
    assert np.abs(got[[0, 3]] - _torch(cnn, W[[0, 3]])).max() < 0.05


def test_int8_output_reaches_the_calibrated_range():
    """Check that the int8 graph's output follows torch up to the largest calibration output:
    16 ReLU units at the top of their range times last-layer weights at the top of theirs
    (old, x86 without VNNI: the saturating pair sums gave about half of torch's 16)."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    with torch.no_grad():
        net[0].weight.fill_(1.0)
        net[0].bias.zero_()
        net[2].weight.fill_(1.0)
        net[2].bias.zero_()
    net.eval()
    cal = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None]
    q = export(net, format="onnx", dtype="int8", name="sat", calibration=cal)
    x = np.linspace(0.0, 1.0, 11, dtype=np.float32)[:, None]
    assert np.abs(q.predict(x) - _torch(net, x)).max() < 0.2  # 16 / 255 per code, at most

