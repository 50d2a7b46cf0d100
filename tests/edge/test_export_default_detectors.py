"""C and ONNX export of the default detectors (ContextLikelihood, Mahalanobis) on real NAB data."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd
import pytest

from edgewise.detect import default_detector, default_multivariate
from edgewise.detect.mahalanobis import t2_tail
from edgewise.edge import export
from edgewise.edge.export_c import ALLOCATORS, CFLAGS, undefined_symbols
from edgewise.edge.export_detectors import export_context_likelihood_c
from edgewise.errors import ExportError

#: Tolerances: the C computes in double, like the Python, so scores agree to rounding.
SCORE_TOL = 1e-9    # on scores in [0, 1]
T2_REL_TOL = 1e-9   # ONNX (double) T^2 against Python's solve, relative


def _nab(shared_data, rel):
    return pd.read_csv(shared_data / "nab" / "data" / rel)["value"].to_numpy(float)


@pytest.fixture(scope="module")
def nab_matrix(shared_data):
    """Four NAB EC2 CPU series of one length side by side: a real 4-metric device."""
    files = sorted((shared_data / "nab" / "data" / "realAWSCloudwatch").glob(
        "ec2_cpu_utilization_*.csv"))[:4]
    cols = [pd.read_csv(f)["value"].to_numpy(float) for f in files]
    n = min(len(c) for c in cols)
    return np.stack([c[:n] for c in cols], axis=1)


def _py_scores(det, X, names):
    out = []
    for row in X:
        x = dict(zip(names, row, strict=True))
        out.append(det.score_one(x))
        det.learn_one(x)
    return np.array(out)


# -- ContextLikelihood -------------------------------------------------------------------


def test_default_detector_c_matches_python_on_nab(nab_series):
    """Check that the default detector's C scores a NAB series as Python does, under 2 KB."""
    det = default_detector()
    c = export(det, format="c", name="clik")
    py = det.clone().score_many(nab_series)
    out = c.score_many(nab_series)
    assert np.abs(out - py).max() < SCORE_TOL
    assert np.array_equal(out >= 0.9, py >= 0.9) and (py >= 0.9).sum() > 0
    assert c.ram_bytes <= 2048  # sizeof the state: 2 KiB with its padding
    assert f"RAM:   CLIK_RAM_BYTES (= {c.ram_bytes})" in c.files["clik.h"]


def test_default_detector_c_carries_learned_state(shared_data):
    """Check that the state and transitions learned in Python are the C's start."""
    x = _nab(shared_data, "realTweets/Twitter_volume_AAPL.csv")  # many distinct transitions
    half = len(x) // 2
    det = default_detector()
    det.score_many(x[:half])
    assert np.count_nonzero(det.table_) > 100
    c = export(det, format="c", name="clik_cal")
    rest_py = det.score_many(x[half:])
    rest_c = c.score_many(x[half:])
    assert np.abs(rest_c - rest_py).max() < SCORE_TOL
    # a fresh C on the second half alone differs: the carried state matters
    fresh = export(default_detector(), format="c", name="clik_fresh").score_many(x[half:])
    assert np.abs(fresh - rest_py).max() > 0.1


def test_default_detector_c_nan_inf_skipped():
    """Check that NaN and inf readings score 0 and are not learned, as in Python."""
    rng = np.random.default_rng(3)
    vals = np.sin(np.arange(1500) / 15) + 0.05 * rng.standard_normal(1500)
    vals[[600, 601, 900]] = [np.nan, np.inf, -np.inf]
    vals[1200] = 9.0
    py = default_detector().score_many(vals)
    c = export(default_detector(), format="c", name="clik_nan").score_many(vals)
    assert np.abs(c - py).max() < SCORE_TOL and c[600] == c[601] == c[900] == 0.0
    assert c[1200] >= 0.9


def test_default_detector_c_scores_a_counter_by_its_increments():
    """Check that the C follows the Python through the counter probe: a meter told from its
    warm-up, a restart, a gap, a wind-back, a fall that ends it; and from a learned state."""
    rng = np.random.default_rng(5)
    t = np.arange(4000)
    load = np.clip(1 + 0.5 * np.sin(2 * np.pi * t / 1440) + 0.05 * rng.standard_normal(4000),
                   0, None) * 0.01
    x = np.round(1234.0 + np.cumsum(load), 2)
    x[1500:] = 5.0 + np.cumsum(load[1500:])     # restart from near zero
    x[2000:2004] = np.nan                       # a gap
    x[2500:] -= 0.5                             # wound back
    x[3500:] = x[3500] - np.arange(500) * 0.001  # falls: not a counter after all
    det = default_detector()
    py = det.clone().score_many(x)
    assert (py >= 0.9).sum() > 0
    out = export(det, format="c", name="clik_cnt").score_many(x)
    assert np.abs(out - py).max() < SCORE_TOL
    # idle through the first probe, a restart from zero in the second: a counter then
    idle = np.concatenate([np.full(300, 7.0), 7.0 + np.cumsum(load[:100]),
                           np.round(np.cumsum(load[100:3000]), 2)])
    det = default_detector()
    py = det.clone().score_many(idle)
    out = export(det, format="c", name="clik_idle").score_many(idle)
    assert np.abs(out - py).max() < SCORE_TOL
    probe = default_detector()
    probe.score_many(idle)
    assert probe.counter_[0] == 2.0 and probe.counter_[6] == 1.0
    half = default_detector()
    half.score_many(x[:1000])
    assert half.counter_[0] == 2.0  # a counter, carried into the C
    c = export(half, format="c", name="clik_cnt2")
    assert np.abs(c.score_many(x[1000:]) - half.score_many(x[1000:])).max() < SCORE_TOL
    assert c.ram_bytes <= 2048  # sizeof the state: 2 KiB with its padding


def test_default_detector_small_key_set_overflows_honestly(shared_data):
    """Check that a key set too small for the stream diverges (and a large one does not)."""
    x = _nab(shared_data, "realAWSCloudwatch/ec2_network_in_5abac7.csv")  # many transitions
    learned = default_detector()
    py = learned.score_many(x)
    need = int(np.count_nonzero(learned.table_))
    small = export_context_likelihood_c(default_detector(), name="clik_small")
    cap = int(small.files["clik_small.h"].split("#define CLIK_SMALL_CAPACITY ")[1].split()[0])
    assert cap == 689 and need > cap      # more than the default (2 KiB) key set holds
    assert small.ram_bytes <= 2048 and np.abs(small.score_many(x) - py).max() > 0.01
    big = export_context_likelihood_c(default_detector(), name="clik_big", capacity=need + 1)
    assert np.abs(big.score_many(x) - py).max() < SCORE_TOL
    with pytest.raises(ExportError, match=f"seen {need} transitions"):
        export_context_likelihood_c(learned, name="clik_full", capacity=256)


def test_default_detector_host_program_and_no_allocator(tmp_path, nab_series):
    """Check that the host program builds with strict flags, agrees, and nothing allocates."""
    c = export(default_detector(), format="c", name="clh")
    c.save(tmp_path)
    subprocess.run(["gcc", *CFLAGS, "clh.c", "clh_host_test.c", "-lm", "-o", "t"],
                   cwd=tmp_path, check=True)
    vals = nab_series[:3000]
    got = np.array(subprocess.run(["./t"], input="\n".join(repr(float(v)) for v in vals),
                                  capture_output=True, text=True, cwd=tmp_path,
                                  check=True).stdout.split(), float)
    assert np.abs(got - default_detector().score_many(vals)).max() < 1e-8  # printed %.9g
    assert not undefined_symbols(c.object_file()) & set(ALLOCATORS)


def test_default_detector_has_no_onnx():
    """Check that asking ONNX of the default detector names what is supported."""
    with pytest.raises(ExportError, match="Supported for ContextLikelihood: c/float32"):
        export(default_detector(), format="onnx")


# -- Mahalanobis ---------------------------------------------------------------------------


def _gappy(X, seed=0):
    """``X`` with one metric missing (NaN) in a fifth of the rows, at random, and two or
    more (NaN or inf) in every 50th, all of them in every 200th."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    rows = np.flatnonzero(rng.random(len(X)) < 0.2)
    X[rows, rng.integers(0, X.shape[1], len(rows))] = np.nan
    X[::50, :2] = [np.nan, np.inf]
    X[::200] = np.nan
    return X


@pytest.mark.parametrize("gaps", [False, True])
def test_multivariate_c_matches_python_on_nab(nab_matrix, gaps):
    """Check that the streaming C Mahalanobis (fresh, then learned) scores as Python does,
    also with metrics missing from rows (``gaps``: each row scored on the metrics it holds)."""
    X = _gappy(nab_matrix) if gaps else nab_matrix
    names = [f"cpu{i}" for i in range(X.shape[1])]
    py = _py_scores(default_multivariate(), X, names)
    from edgewise.edge.export_detectors import export_mahalanobis_c

    c = export_mahalanobis_c(default_multivariate(), name="maha", metrics=names)
    out = c.score_many(X)
    assert np.abs(out - py).max() < SCORE_TOL and (py >= 0.9).sum() > 0
    half = len(X) // 2
    det = default_multivariate()
    _py_scores(det, X[:half], names)
    c2 = export(det, format="c", name="maha_cal")
    assert np.abs(c2.score_many(X[half:]) - py[half:]).max() < SCORE_TOL
    assert not undefined_symbols(c2.object_file()) & set(ALLOCATORS)


@pytest.mark.parametrize("gaps", [False, True])
def test_multivariate_onnx_scoring_step_matches_python(nab_matrix, gaps):
    """Check that the frozen ONNX T^2 and dof (and the score from them) match Python on NAB
    rows, also with metrics missing from rows (``gaps``)."""
    names = [f"cpu{i}" for i in range(nab_matrix.shape[1])]
    half = len(nab_matrix) // 2
    det = default_multivariate()
    _py_scores(det, nab_matrix[:half], names)
    g = export(det, format="onnx", name="maha")
    rest = _gappy(nab_matrix[half:]) if gaps else nab_matrix[half:]
    t2, dof, n_eff = g.run({"x": rest})
    xs = [dict(zip(names, r, strict=True)) for r in rest]
    ref = np.array([float(dz @ w) for dz, w in
                    (det._solve(det._vector(x, False), used=det._used(x)) for x in xs)])
    assert np.max(np.abs(t2 - ref) / np.maximum(1.0, np.abs(ref))) < T2_REL_TOL
    assert dof.tolist() == [int(det._used(x).sum()) for x in xs]
    assert (dof == len(names)).all() != gaps and (dof == 0).any() == gaps
    on = (dof > 0) & (n_eff > 0)
    p = t2_tail(np.maximum(t2, 0), np.maximum(dof, 1), np.where(on, n_eff, 1e9))
    score = np.where(on, np.clip(-np.log10(p + 1e-300) / det.tail_digits, 0, 1), 0.0)
    py = np.array([det.score_one(x) for x in xs])
    assert np.abs(score - py).max() < SCORE_TOL and (py >= 0.9).sum() > 0


def test_fresh_multivariate_needs_metric_names():
    """Check that a fresh Mahalanobis without metric names is refused with the fix."""
    with pytest.raises(ExportError, match="pass metrics="):
        export(default_multivariate(), format="c")
    with pytest.raises(ExportError, match="Learn some readings first"):
        export(default_multivariate(), format="onnx")


def test_multivariate_c_refuses_more_metrics_than_max_metrics():
    """Check a fresh Mahalanobis with max_metrics=2 is not exported to C with 3 metrics: Python
    tracks the first 2 to arrive and ignores the third, the C tracked all 3 (2 alarms on a
    third metric's break where Python raised none). At max_metrics=3 both score alike."""
    from edgewise.detect.mahalanobis import Mahalanobis
    from edgewise.edge.export_detectors import export_mahalanobis_c

    names = ["flow", "pressure", "temp"]
    with pytest.raises(ExportError, match=r"tracks at most max_metrics=2.*at least 3"):
        export_mahalanobis_c(Mahalanobis(warmup=20, max_metrics=2), name="mh", metrics=names)
    rng = np.random.default_rng(0)
    a = rng.normal(size=400)
    X = np.c_[a, 2 * a + 0.1 * rng.normal(size=400), rng.normal(size=400)]
    X[350:, 2] = 8.0
    det = Mahalanobis(warmup=20, max_metrics=3)
    c = export_mahalanobis_c(det, name="mh", metrics=names)
    assert np.abs(c.score_many(X) - _py_scores(det, X, names)).max() < SCORE_TOL


def test_multivariate_with_metric_keys_not_str_is_refused():
    """Check a Mahalanobis learned on readings keyed by numbers gets an ExportError naming
    the key and the fix (the C export failed with a raw TypeError from str.join)."""
    from edgewise.detect.mahalanobis import Mahalanobis

    det = Mahalanobis(warmup=5)
    for r in np.random.default_rng(0).normal(size=(20, 2)):
        det.learn_one(dict(zip([0, 1], r, strict=True)))
    with pytest.raises(ExportError, match=r"metric keys \[0, 1\], of which 0 is of type int"):
        export(det, format="c", name="mh")


def test_context_art_is_refused_by_the_c_export_not_exported_without_its_member():
    """Check that the ART variant is not silently exported as the plain detector: the error
    names the setting and what to export instead."""
    from edgewise.detect import get_detector

    with pytest.raises(ExportError, match=r"art_vigilance=0\.8.*'context-likelihood'"):
        export(get_detector("context-art"), format="c", name="clik_art")


def test_default_detector_c_follows_the_creep_rule():
    """Check the C follows Python through a month of a draining battery (its lows creep)
    and a fault, from fresh and from a state learned in Python."""
    rng = np.random.default_rng(0)
    t = np.arange(30 * 144)
    x = np.round(4.2 - 0.9 * t / len(t) + 0.01 * rng.standard_normal(len(t))
                 + 0.02 * np.sin(2 * np.pi * t / 144), 3)
    x[2700:] -= 0.15
    det = default_detector()
    py = det.clone().score_many(x)
    out = export(det, format="c", name="clik_creep").score_many(x)
    assert np.abs(out - py).max() < SCORE_TOL
    assert py[2700] >= 0.9 and (py >= 0.9).sum() <= 12
    half = default_detector()
    half.score_many(x[:2000])
    assert half.state_[0, 22] >= 20
    c = export(half, format="c", name="clik_creep2")
    assert np.abs(c.score_many(x[2000:]) - half.score_many(x[2000:])).max() < SCORE_TOL


def test_default_detector_c_follows_escalations():
    """Check the C scores a 60 sd spike inside a repeat suppression 1, as Python does."""
    x = 20 + np.random.default_rng(0).standard_normal(600)
    x[500] = 80.0
    det = default_detector()
    py = det.clone().score_many(x)
    out = export(det, format="c", name="clik_esc").score_many(x)
    assert py[500] == 1.0 and np.abs(out - py).max() < SCORE_TOL
