"""C exports on hostile numbers: NaN, inf, and readings near the double's range.

Each test replays a stream that once made the C part from Python (or hit undefined
behaviour, caught by building the host program with gcc's sanitizers) and checks that C and
Python now agree.
"""

from __future__ import annotations

import contextlib
import subprocess

import numpy as np
import pytest

from edgewise.detect import default_detector
from edgewise.detect.context_likelihood import ContextLikelihood
from edgewise.detect.mahalanobis import Mahalanobis
from edgewise.detect.zscore import EWZScore
from edgewise.edge import compress, export
from edgewise.edge.export_c import CFLAGS, export_trees
from edgewise.edge.export_compact import compact_reference, export_trees_compact
from edgewise.edge.export_detectors import export_context_likelihood_c, export_mahalanobis_c
from tests.conftest import score_one_by_one

SCORE_TOL = 1e-9      # double C against double Python, scores in [0, 1]
DETECTOR_TOL = 1e-3   # float32 C (EWZScore) against Python
PRED_TOL = 1e-3       # float32 tree C against its model
SANITIZE = ("-fsanitize=undefined,float-cast-overflow", "-fno-sanitize-recover")


def _host(c, tmp_path, rows) -> np.ndarray:
    """Build the export's host program with the sanitizers, feed it ``rows``, read its output;
    undefined behaviour (a NaN cast to an integer) aborts the program and fails the test."""
    c.save(tmp_path)
    n = c.name
    subprocess.run(["gcc", *CFLAGS, *SANITIZE, f"{n}.c", f"{n}_host_test.c", "-lm", "-o", "t"],
                   cwd=tmp_path, check=True, capture_output=True)
    text = "\n".join(" ".join(repr(float(v)) for v in np.atleast_1d(r)) for r in rows)
    r = subprocess.run(["./t"], input=text + "\n", capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    return np.array(r.stdout.split(), float)


def _wave(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    return np.sin(np.arange(n) / 20) + 0.05 * rng.standard_normal(n)


def _same(a, b, tol):
    """Equal within ``tol`` (NaN where both are NaN)."""
    return bool(np.all((np.abs(a - b) <= tol) | (np.isnan(a) & np.isnan(b))))


# -- ContextLikelihood -------------------------------------------------------------------


def test_default_detector_c_drops_a_nan_raw_score_as_python_does():
    """Check that a prediction error of inf / inf (readings at 1.7e308, then -1.7e308) is
    NaN in the C as in Python, and both then take the novelty (Python's max(nov, NaN) is
    nov): the C kept the NaN, which poisoned its ring and likelihood for good (46 scores
    off, by up to 1.0)."""
    x = _wave()
    x[400:2000] = 1.7e308
    x[2000] = -1.7e308
    py = default_detector().score_many(x)
    c = export(default_detector(), format="c", name="clik_rawnan").score_many(x)
    assert np.isfinite(c).all() and np.abs(c - py).max() < SCORE_TOL


def test_default_detector_counter_increment_beyond_a_double_is_a_gap_everywhere():
    """Check that a counter's increment that overflows to inf (-1.7e308 rising, then
    +1.7e308) re-anchors in the C, in Python's per-reading path and in score_many alike: the
    first two learned the inf, score_many skipped it."""
    x = -1.7e308 + np.arange(1000) * 1e300
    x[700] = 1.7e308
    many = default_detector().score_many(x)
    det = default_detector()
    one = score_one_by_one(det, x)
    assert det.is_counter
    c = export(default_detector(), format="c", name="clik_cinf").score_many(x)
    assert np.abs(np.array(one) - many).max() < SCORE_TOL
    assert np.abs(c - many).max() < SCORE_TOL


def test_default_detector_c_symbol_of_nan_is_defined(tmp_path):
    """Check that a warm-up of +-1e308 (an infinite symbol width, so (x - x0) / w is NaN)
    gives the lowest symbol in C and Python, with no NaN cast to an integer (the sanitized
    host program aborted), and the same scores."""
    x = np.r_[np.tile([1e308, -1e308], 200), [1e308, 1e308, 1e308, 1e308, 1e308], _wave(300)]
    py = default_detector().score_many(x)
    c = export(default_detector(), format="c", name="clik_ub")
    assert np.abs(_host(c, tmp_path, x) - py).max() < 1e-8  # printed with %.9g
    assert np.abs(c.score_many(x) - py).max() < SCORE_TOL


def test_default_detector_without_slow_window_compiles_and_matches():
    """Check that slow_window=0 (valid: no slower likelihood test) exports C that builds
    under -Werror (its WS2 = 0 was a constant division by zero) and scores as Python."""
    kw = {"slow_window": 0, "warmup": 60, "warmup_spread": 10}
    x = _wave(1500)
    x[1000] = 6.0
    py = ContextLikelihood(**kw).score_many(x)
    c = export_context_likelihood_c(ContextLikelihood(**kw), name="clik_noslow")
    out = c.score_many(x)
    assert "WS2 " not in c.files["clik_noslow.c"].split("static double member")[1]
    assert np.abs(out - py).max() < SCORE_TOL and py[1000] >= 0.9


def test_default_detector_ram_figure_is_the_struct_size(tmp_path):
    """Check that <NAME>_RAM_BYTES and ram_bytes are the compiler's sizeof of the state (with
    its padding: 2048 for the default, which the header called 2046), for the default and
    two other key-set sizes."""
    for cap, kw in ((None, {}), (691, {"warmup_spread": 0})):
        det = ContextLikelihood(**kw)
        c = export_context_likelihood_c(det, name="clik_sz", capacity=cap)
        c.save(tmp_path)
        (tmp_path / "sz.c").write_text(
            '#include <stdio.h>\n#include "clik_sz.h"\n'
            'int main(void) { printf("%u %d\\n", (unsigned)sizeof(clik_sz_state_t), '
            "CLIK_SZ_RAM_BYTES); return 0; }\n")
        subprocess.run(["gcc", *CFLAGS, "sz.c", "clik_sz.c", "-lm", "-o", "sz"], cwd=tmp_path,
                       check=True, capture_output=True)
        size, macro = map(int, subprocess.run(["./sz"], cwd=tmp_path, capture_output=True,
                                              text=True, check=True).stdout.split())
        assert size == macro == c.ram_bytes
        if cap is None:
            assert c.ram_bytes == 2048


# -- EWZScore ------------------------------------------------------------------------------


def test_ewzscore_c_treats_inf_as_missing_and_survives_float_overflow():
    """Check that inf readings are missing in the C as in Python (the C learned them: NaN
    for every later reading) and that readings that overflow float32's arithmetic (3.4e38
    after a warm-up of 1s and 2s: the hunter's stream) leave C and Python agreeing."""
    x = np.r_[np.full(10, 1.0), np.full(25, 2.0), 3.4e38, -3.4e38, np.full(5, 1.0),
              np.sin(np.arange(200.0)), np.inf, -np.inf, 1e20, np.cos(np.arange(200.0))]
    py = EWZScore().score_many(x)
    c = export(EWZScore(), format="c", name="ewz_inf").score_many(x)
    assert np.isfinite(c).all() and np.abs(c - py).max() < DETECTOR_TOL
    assert py[35] == py[36] == 1.0 and py[-203] == py[-202] == 0.0


def test_ewzscore_extreme_warmup_scores_stay_valid_and_match_c():
    """Check that a warm-up of +-1e308 (beyond float32: missing on a device) gives Python
    scores in [0, 1], not NaN, on both of its paths, and the C's."""
    x = np.r_[np.full(100, 1e308), np.full(100, -1e308), _wave(500), 50.0, _wave(100)]
    py = EWZScore().score_many(x)
    one = score_one_by_one(EWZScore(), x)
    assert np.isfinite(py).all() and (py >= 0).all() and (py <= 1).all()
    assert np.array_equal(np.array(one), py) and py[700] > 0.9
    c = export(EWZScore(), format="c", name="ewz_big").score_many(x)
    assert np.abs(c - py).max() < DETECTOR_TOL


# -- Mahalanobis ---------------------------------------------------------------------------


def _maha_rows(n=800, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(n)
    return np.c_[a, 2 * a + 0.1 * rng.standard_normal(n), rng.standard_normal(n) + 100]


def _maha_py(X, names):
    det = Mahalanobis()
    out = []
    for row in X:
        x = dict(zip(names, row, strict=True))
        out.append(det.score_one(x))
        det.learn_one(x)
    return np.array(out), det


def test_mahalanobis_c_counts_a_metric_from_its_first_value():
    """Check that a metric missing from the first learned row gets its first finite value as
    its mean in the C, as in Python (the C kept mean 0 and learned it from there: 750 scores
    off, by up to 0.138)."""
    names = ["a", "b", "c"]
    X = _maha_rows()
    X[0, 2] = np.nan
    X[::5, 1] = np.nan
    py, _ = _maha_py(X, names)
    c = export_mahalanobis_c(Mahalanobis(), name="maha_first", metrics=names)
    assert np.abs(c.score_many(X) - py).max() < SCORE_TOL


def test_mahalanobis_reading_that_overflows_is_scored_1_and_not_learned():
    """Check that one reading at 1e308 scores 1 and is not learned, in Python and C alike:
    Python learned an infinite covariance and scored every later reading 1."""
    names = ["a", "b", "c"]
    X = _maha_rows()
    X[300, 0] = 1e308
    py, det = _maha_py(X, names)
    assert py[300] == 1.0 and (py[301:] >= 0.9).sum() < 5 and np.isfinite(det.cov_).all()
    clean = X.copy()
    clean = np.delete(clean, 300, axis=0)
    ref, _ = _maha_py(clean, names)
    assert np.array_equal(np.delete(py, 300), ref)  # as if the reading had not come
    c = export_mahalanobis_c(Mahalanobis(), name="maha_big", metrics=names)
    assert np.abs(c.score_many(X) - py).max() < SCORE_TOL


def test_mahalanobis_host_program_scores_rows_missing_metrics_as_python(tmp_path):
    """Check that the generated host program (built with the sanitizers, rows read as text:
    nan, inf, -inf) scores rows missing one, two or all metrics as Python, which leaves them
    out of the row's T² and its degrees of freedom (a row of none scores 0)."""
    names = ["a", "b", "c"]
    X = _maha_rows(n=400)
    X[100::3, 1] = np.nan
    X[101::7, 0] = np.inf
    X[102::11, :2] = [-np.inf, np.nan]
    X[200:205] = np.nan
    X[299, 1] += 10.0  # b off its line with a: caught while c is missing
    X[299, 2] = np.nan
    py, _ = _maha_py(X, names)
    c = export_mahalanobis_c(Mahalanobis(), name="maha_gaps", metrics=names)
    out = _host(c, tmp_path, X)
    assert np.abs(out - py).max() < SCORE_TOL  # printed %.9g
    assert (py[200:205] == 0.0).all() and py[299] >= 0.9


# -- trees and MLPs -----------------------------------------------------------------------


def _nan_data(seed=0, n=600):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    y = 3 * X[:, 0] + X[:, 1] ** 2 + np.where(X[:, 2] > 0, 5, 0)
    X[rng.random(X.shape) < 0.1] = np.nan
    y = y + np.where(np.isnan(X[:, 0]), 8.0, 0.0)  # a NaN means something: its own side
    return X, y


def test_int8_trees_route_nan_by_each_split(tmp_path):
    """Check that a NaN input takes each split's missing side in the int8 C, as in the model
    and the float32 C: it was cast to uint8 (undefined; the sanitized host program aborted)
    and landed in the lowest bin (errors of 10-17 on rows with 10% NaN)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    X, y = _nan_data()
    m = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(X, y)
    calib = X[:300]
    c = export(m, format="c", dtype="int8", name="hq_nan", calibration=calib)
    rows = X[300:].astype(np.float32)
    out = c.predict(rows)
    model = m.predict(rows.astype(np.float64))
    nan_rows = np.isnan(rows).any(axis=1)
    err_nan = np.abs(out - model)[nan_rows].mean()
    err_clean = np.abs(out - model)[~nan_rows].mean()
    assert err_nan < 2 * err_clean + 0.2, (err_nan, err_clean)
    host = _host(c, tmp_path, rows[:40])
    assert np.abs(host - out[:40]).max() < 1e-4 * (1 + np.abs(out[:40]).max())
    q = compress.quantize_trees(compress.tree_table(m), calib)
    assert np.abs(out - q.predict(rows)).max() < PRED_TOL


def test_mlp_c_relu_keeps_nan_as_torch_does():
    """Check that a NaN input gives NaN from the C MLP (float32 and int8), as torch and
    mlp_reference do: ReLU's acc > 0 ? acc : 0 turned it into a plausible prediction."""
    import torch

    from edgewise.edge.export_c import mlp_layers, mlp_reference

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4),
                              torch.nn.ReLU(), torch.nn.Linear(4, 1)).eval()
    X = np.array([[0.1, -0.2, 0.3], [np.nan, 0.0, 0.0], [0.5, np.nan, -1.0]], np.float32)
    with torch.no_grad():
        ref = net(torch.tensor(X)).numpy()[:, 0].astype(np.float64)
    for dtype in ("float32", "int8"):
        c = export(net, format="c", dtype=dtype, name=f"mlp_nan_{dtype}", calibration=X[:1])
        out = c.predict(X)
        assert np.isnan(out[1:]).all() and np.isfinite(out[0])
        assert _same(out, mlp_reference(mlp_layers(net), X, int8=dtype == "int8"), 1e-5)
    assert np.isnan(ref[1:]).all()


def _lgbm_rows(seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((300, 3))
    pal = np.array([0.0, -0.0, 1e-36, -1e-36, 1e-35, -1e-35, 1e-34, np.nan])
    mask = rng.random(X.shape) < 0.3
    X[mask] = rng.choice(pal, mask.sum())
    return X


@pytest.mark.parametrize("kind", ["nan", "zero", "none"])
def test_lightgbm_missing_types_match_the_model(kind):
    """Check the C (float32, compact, int8) follows LightGBM's missing_type: "NaN" (NaN takes
    the default side), "Zero" (zero_as_missing: NaN and |x| <= 1e-35f take it) and "None"
    (use_missing=False: NaN is 0). The reader knew only "NaN" (errors up to 17)."""
    from lightgbm import LGBMRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((800, 3))
    X[rng.random(X.shape) < 0.25] = 0.0
    if kind == "nan":
        X[rng.random(X.shape) < 0.15] = np.nan
    Z = np.nan_to_num(X, nan=2.0)
    y = 3 * Z[:, 0] + np.where(Z[:, 1] == 0, 10.0, Z[:, 1]) + Z[:, 2]
    opts = {"zero": {"zero_as_missing": True}, "none": {"use_missing": False}}.get(kind, {})
    m = LGBMRegressor(n_estimators=30, num_leaves=8, min_child_samples=5, verbose=-1,
                      n_jobs=1, random_state=0, **opts).fit(X, y)
    types = {n.get("missing_type") for n in _lgbm_nodes(m)}
    assert types == {{"nan": "NaN", "zero": "Zero", "none": "None"}[kind]}
    rows = _lgbm_rows().astype(np.float32)
    model = m.predict(rows.astype(np.float64))
    t = compress.tree_table(m)
    assert np.abs(t.predict(rows) - model).max() < 1e-9
    f32 = export_trees(t, name=f"lgF_{kind}")  # an F in the name must not clash with the C
    assert np.abs(f32.predict(rows) - model).max() < PRED_TOL
    cmp = export_trees_compact(t, name=f"lgcF_{kind}")
    assert np.abs(cmp.predict(rows) - compact_reference(t).predict(rows)).max() < PRED_TOL
    # x == 0 means +10 here, split off at +-1e-35: no uint8 code tells 0 from its neighbours,
    # so the int8 model strays far from LightGBM where 0 is no missing value, and says so
    strays = pytest.warns(UserWarning, match="strays from the float model")
    with strays if kind != "zero" else contextlib.nullcontext():
        q = compress.quantize_trees(t, X[:400])
    i8 = export_trees(q, name=f"lgqF_{kind}")
    assert np.abs(i8.predict(rows) - q.predict(rows)).max() < PRED_TOL
    miss = q.missing(rows).any(axis=1)
    assert miss.sum() > 20 and np.abs(i8.predict(rows) - model)[miss].mean() < 1.0


def _lgbm_nodes(m):
    out = []

    def walk(n):
        if "leaf_value" not in n:
            out.append(n)
            walk(n["left_child"])
            walk(n["right_child"])

    for tree in m.booster_.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    return out


def test_infinite_threshold_stays_infinite_in_c():
    """Check that a split at +inf (HistGradientBoosting's "NaN or not") sends x = +inf left
    in the float32 and compact C, as the model does: it was clipped to FLT_MAX (right)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 2))
    X[::3, 0] = np.nan
    y = np.where(np.isnan(X[:, 0]), 10.0, 0.0) + X[:, 1]
    t = compress.tree_table(HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(X, y))
    assert np.isposinf(t.threshold[t.feature >= 0]).any()
    rows = np.array([[np.inf, 0.5], [-np.inf, 0.5], [np.nan, 0.5], [3e38, 0.5], [0.0, 0.5]],
                    np.float32)
    ref = t.predict(rows)
    assert np.abs(export_trees(t, name="inf32").predict(rows) - ref).max() < PRED_TOL
    comp = export_trees_compact(t, name="infc")
    assert np.abs(comp.predict(rows) - compact_reference(t).predict(rows)).max() < PRED_TOL
    assert np.abs(compact_reference(t).predict(rows) - ref).max() < 0.01
