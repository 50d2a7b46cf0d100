"""ONNX exports on non-finite and huge inputs: the graph does what Python and the C do."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect import get_detector
from edgewise.detect.zscore import EWZScore
from edgewise.edge import export

INF, NAN = float("inf"), float("nan")
WARM = [1.0, 2.0] * 20
SEQUENCES = {
    # the hunter's streams: one inf (it used to score 1 and leave the state NaN for ever),
    # 1e38 and 3e38 (they used to make the variance inf, so every later score was 0)
    "inf": [*WARM, INF, 1.0, 2.0, 1.5, *WARM, 100.0],
    "huge": [*WARM, 1e38, 3e38, 1.0, 2.0, *WARM, 100.0],
    "mixed": [*WARM, NAN, -INF, INF, -3e38, 3e38, 1e38, -1e38, 1e20, 2.0, *WARM, 100.0],
    # missing and huge first readings: the first learned reading sets the mean (3e38 here,
    # after which every ordinary reading's update overflows and is not learned, in both)
    "first": [INF, NAN, 3e38, 1.0, -3e38, 2.0, *WARM, 100.0],
}


def _onnx_steps(xs: list[float]) -> tuple[list[float], list[tuple[float, float, float]]]:
    g = export(EWZScore(), format="onnx", name="ewz")
    st = {k: np.zeros(1, np.float32) for k in ("mean", "var", "n")}
    scores, states = [], []
    for x in xs:
        s, m, v, n = g.run({"value": np.array([x], np.float32), **st})
        st = {"mean": m, "var": v, "n": n}
        scores.append(float(s[0]))
        states.append((float(n[0]), float(m[0]), float(v[0])))
    return scores, states


def _python_steps(xs: list[float]) -> tuple[list[float], list[tuple[float, float, float]]]:
    det = EWZScore()
    scores, states = [], []
    for x in xs:
        scores.append(det.score_one({"v": x}))
        det.learn_one({"v": x})
        states.append((float(det.n_), det.mean_, det.var_))
    return scores, states


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_ewzscore_onnx_treats_non_finite_and_overflow_as_python_does(name: str) -> None:
    """Check the ONNX step against Python at every reading of streams with inf, -inf, NaN
    and readings whose update overflows float32: same score, same count of readings
    learned, same (finite) mean and variance."""
    xs = SEQUENCES[name]
    o_scores, o_states = _onnx_steps(xs)
    p_scores, p_states = _python_steps(xs)
    assert np.abs(np.array(o_scores) - np.array(p_scores)).max() < 1e-3, (o_scores, p_scores)
    o, p = np.array(o_states), np.array(p_states)
    assert np.isfinite(o).all()
    assert np.array_equal(o[:, 0], p[:, 0])  # the same readings are learned
    assert np.allclose(o[:, 1:], p[:, 1:], rtol=1e-5, atol=1e-6)
    if name in ("inf", "huge"):  # the state stays sound: 100.0 after them still detected
        assert o_scores[-1] == p_scores[-1] == 1.0


def test_mahalanobis_onnx_predict_feeds_the_graph_its_float64() -> None:
    """Check that ``predict`` feeds a float64 graph (the Mahalanobis T^2) doubles, as it
    declares, and gives the T^2 that the detector's frozen mean and precision give."""
    rng = np.random.default_rng(0)
    det = get_detector("mahalanobis")
    for r in rng.normal(size=(200, 3)):
        det.learn_one(dict(zip("abc", r, strict=True)))
    g = export(det, format="onnx", name="maha")
    assert g.dtype == "float64"
    rows = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [1e30, 0.0, 0.0], [1e300, 0.0, 0.0]])
    t2 = g.predict(rows)
    dz = rows[:3] - det.mean_
    want = np.einsum("ij,jk,ik->i", dz, np.linalg.inv(det.shrunk_covariance()), dz)
    assert t2.dtype == np.float64 and t2.shape == (4,)
    assert np.allclose(t2[:3], want, rtol=1e-12)
    assert t2[3] == np.inf  # 1e300 squared: beyond a double, as in Python (not a float32 inf)


def test_float32_graph_predict_casts_float64_rows_down() -> None:
    """Check that a float32 graph (a torch net) still takes float64 rows, cast down."""
    import torch

    from edgewise.edge.export_onnx import export_torch

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    g = export_torch(net, 3)
    rows = np.random.default_rng(1).normal(size=(5, 3))
    with torch.no_grad():
        want = net(torch.tensor(rows, dtype=torch.float32)).numpy().ravel()
    got = g.predict(rows)
    assert got.dtype == np.float64 and np.allclose(got, want, rtol=1e-6, atol=1e-6)
