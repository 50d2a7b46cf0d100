"""Mahalanobis on devices with many metrics: the covariance is estimated from a window of
about 399 readings, so T² is scored with the predictive Hotelling tail, not the
chi-squared one (which raised false alarms from about 80 metrics on), and a reading of
``d`` metrics is scored only once the estimate rests on enough readings for ``d``."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect import DEFAULT_THRESHOLD, Mahalanobis
from edgewise.detect.base import Detector


def _noise(n: int, k: int, seed: int = 2) -> np.ndarray:
    """``n`` readings of ``k`` independent N(0, 1) sensors: nothing anomalous at all."""
    return np.random.default_rng(seed).normal(size=(n, k))


def _names(k: int) -> list[str]:
    return [f"m{j:03d}" for j in range(k)]


def test_many_independent_metrics_raise_no_false_alarm():
    """Check 100 pure-noise sensors raise no alarm, right after the warm-up (the chi-squared
    tail alarmed on 142 of rows 50-400, and once later) or later, and that the scores are
    calibrated rather than silenced: about 1 % of rows at p <= 0.01 (score 0.2; it was 51 %),
    the median near -log10(0.5) / 10 = 0.03 (it was 0.21)."""
    k = 100
    s, _ = Mahalanobis().score_explain_many(_noise(1200, k), _names(k))
    assert (s < DEFAULT_THRESHOLD).all(), np.flatnonzero(s >= DEFAULT_THRESHOLD)[:10]
    scored = s[s > 0]
    assert len(scored) > 800  # scored from 3 effective readings per metric on
    assert 0.001 <= np.mean(scored >= 0.2) <= 0.02
    assert 0.018 <= np.median(scored) <= 0.04


def test_a_reading_of_many_metrics_waits_for_enough_readings():
    """Check a reading of 8 metrics is scored after ``warmup`` (50) readings, one of 30
    after 90 (3 per metric), one of 200 only once the 399-reading window is 95 % full,
    and a break in one of 100 metrics is still caught once scored."""
    for k, first in ((8, 50), (30, 90)):
        s = Mahalanobis().score_many(_noise(120, k), _names(k))
        assert int(np.flatnonzero(s > 0)[0]) == first, k
    det = Mahalanobis()
    for row in _noise(480, 200):
        det.learn_one(dict(zip(_names(200), row, strict=True)))
    x = dict(zip(_names(200), _noise(1, 200, seed=9)[0], strict=True))
    assert det.score_one(x) == 0.0  # 480 readings: 372 effective, 379 needed
    for row in _noise(40, 200, seed=3):
        det.learn_one(dict(zip(_names(200), row, strict=True)))
    assert 0.0 < det.score_one(x) < 0.2
    k = 100
    det = Mahalanobis()
    X = _noise(900, k)
    for row in X[:-1]:
        det.learn_one(dict(zip(_names(k), row, strict=True)))
    broken = dict(zip(_names(k), X[-1], strict=True))
    assert det.score_one(broken) < 0.2
    broken["m042"] += 25.0  # one sensor 25 sd off
    assert det.score_one(broken) >= DEFAULT_THRESHOLD
    shares = det.explain_one(broken)
    assert max(shares, key=shares.__getitem__) == "m042"


def test_a_late_metric_waits_for_its_own_readings_while_the_others_score():
    """Check a metric that appears late on a device of 30 is left out until it has 90
    readings of its own (3 per metric), while the rows go on being scored on the others."""
    k = 30
    X = _noise(400, k)
    X[:200, 29] = np.nan
    det = Mahalanobis()
    s = det.score_many(X[:289], _names(k))
    assert (s[90:] > 0).all() and not det._warm()[29] and det.counts_[29] == 89
    det.learn_one(dict(zip(_names(k), X[289], strict=True)))
    assert det._warm().all()
    row = dict(zip(_names(k), X[290], strict=True))
    row["m029"] += 20.0
    assert det.score_one(row) >= DEFAULT_THRESHOLD


def test_score_explain_many_equals_the_loop_with_many_metrics_and_gaps():
    """Check the compiled replay scores 40 metrics, some missing in each row and one added
    late, as the loop of score_one, explain_one and learn_one does (to 1e-12), where the
    count of effective readings and the metrics needed differ from row to row."""
    k = 40
    rng = np.random.default_rng(4)
    X = _noise(700, k) @ (np.eye(k) + 0.3 * rng.normal(size=(k, k)))
    X[rng.random(X.shape) < 0.15] = np.nan
    X[:150, 7] = np.nan  # a metric that appears late
    X[600, 3] += 40.0
    loop, fast = Mahalanobis(), Mahalanobis()
    s_loop, t_loop = Detector.score_explain_many(loop, X, _names(k))
    s1, t1 = fast.score_explain_many(X[:333], _names(k))
    s2, t2 = fast.score_explain_many(X[333:], _names(k))
    np.testing.assert_allclose(np.r_[s1, s2], s_loop, rtol=0, atol=1e-12)
    assert t1 + t2 == t_loop
    assert s_loop[600] >= DEFAULT_THRESHOLD and (s_loop > 0).sum() > 300
    for a in ("mean_", "cov_", "counts_"):
        assert np.array_equal(getattr(loop, a), getattr(fast, a)), a


@pytest.mark.parametrize(("d", "n"), [(3, 12), (20, 45), (20, 200)])
def test_t2_tail_is_the_predictive_distribution(d, n):
    """Check :func:`t2_tail` gives uniform p-values for the T² of a new reading against the
    mean and divide-by-n covariance of ``n`` Gaussian readings (Kolmogorov-Smirnov), where
    the chi-squared tail is far off with few readings."""
    from scipy.special import gammaincc
    from scipy.stats import kstest

    from edgewise.detect.mahalanobis import t2_tail

    rng = np.random.default_rng(d + n)
    reps = 3000
    sample = rng.normal(size=(reps, n, d))
    new = rng.normal(size=(reps, d))
    mean = sample.mean(axis=1)
    dev = sample - mean[:, None, :]
    cov = np.einsum("rni,rnj->rij", dev, dev) / n
    z = new - mean
    t2 = np.einsum("ri,ri->r", z, np.linalg.solve(cov, z[..., None])[..., 0])
    assert kstest(t2_tail(t2, d, n), "uniform").pvalue > 1e-3
    if n < 10 * d:
        assert kstest(gammaincc(d / 2, t2 / 2), "uniform").pvalue < 1e-6


def test_the_c_and_onnx_exports_score_many_metrics_as_python(tmp_path):
    """Check the C export and the ONNX graph's host check (``edgewise export``'s
    host_test.py) score 20 metrics as Python does, with the predictive tail, the rows with
    too few readings for their metrics at 0, fresh (C) and from a learned state (both)."""
    import pickle
    import subprocess
    import sys

    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands
    from edgewise.edge.export_detectors import export_mahalanobis_c

    pytest.importorskip("onnxruntime")
    k = 20
    rng = np.random.default_rng(5)
    X = _noise(260, k) @ (np.eye(k) + 0.4 * rng.normal(size=(k, k)))
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:120, 4] = np.nan  # a late metric: its rows wait for its readings
    X[200, 2] += 30.0
    det = Mahalanobis()
    py = []
    for row in X:
        x = {m: float(v) for m, v in zip(_names(k), row, strict=True) if np.isfinite(v)}
        py.append(det.score_one(x))
        det.learn_one(x)
    py = np.array(py)
    assert py[200] >= DEFAULT_THRESHOLD and (py == 0).sum() > 50 and (py > 0).sum() > 100
    c = export_mahalanobis_c(Mahalanobis(), name="maha20", metrics=_names(k))
    assert np.abs(c.score_many(X) - py).max() < 1e-9
    # the frozen graph, from the learned state, through the host check the CLI writes
    rows = np.r_[X[200:230], np.full((1, k), np.nan), X[250:251] * [1.0] * 3 + 25.0]
    want = [det.score_one({m: float(v) for m, v in zip(_names(k), r, strict=True)
                           if np.isfinite(v)}) for r in rows]
    (tmp_path / "maha.pkl").write_bytes(pickle.dumps(det))
    load_commands()
    out = tmp_path / "o"
    r = CliRunner(mix_stderr=False).invoke(app, ["export", str(tmp_path / "maha.pkl"), "--format",
                                                 "onnx", "--name", "maha", "--out", str(out)])
    assert r.exit_code == 0, r.stderr
    order = [_names(k).index(m) for m in det.metrics_]  # the graph's columns: as learned
    text = "\n".join(" ".join("nan" if not np.isfinite(v) else repr(float(v)) for v in row)
                     for row in rows[:, order])
    run = subprocess.run([sys.executable, "maha_host_test.py"], cwd=out, capture_output=True,
                         text=True, timeout=120, input=text)
    assert run.returncode == 0, run.stderr
    got = [float(line.split()[1]) for line in run.stdout.splitlines()]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert max(want) == 1.0 and min(want) == 0.0
