"""Edge exports, second hunt: EWZScore precision on offset streams (C and ONNX), a learned
EWZScore's state in its ONNX graph, non-finite ContextLikelihood state in C, missing values in
the Mahalanobis graph, metric names, C names that differ only in case, and the CLI's
minor refusals and warnings."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.edge import export
from edgewise.errors import ExportError

DETECTOR_TOL = 1e-3  # as tests/edge/test_export_c.py: exported scores against Python's


def _run_cli(*args: str):
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, ["export", *args])


def _offset_stream(level: float, sd: float, n: int = 4000) -> np.ndarray:
    """A barometer-like stream: ``level`` +- ``sd`` with spikes near the alarm threshold,
    rounded to float32 as a device reads it (so input rounding plays no part)."""
    rng = np.random.default_rng(1)
    x = level + rng.normal(0, sd, n)
    x[200::200] += rng.uniform(4.5, 6.5, len(x[200::200])) * sd
    return x.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize(("level", "sd"), [(101325.0, 0.1), (20.0, 2e-5), (1e6, 1.0)])
def test_ewzscore_c_and_onnx_score_an_offset_stream_as_python_does(level, sd):
    """Check the C and the ONNX graph of EWZScore give Python's scores and alarms on a stream
    with a large offset (101325 Pa +- 0.1): their float32 mean lost every update below half
    its last place, scores differed by up to 0.34 and alarms disagreed."""
    x = _offset_stream(level, sd)
    py = EWZScore().score_many(x)
    assert (py >= 0.9).sum() >= 5  # the spikes alarm in Python
    c = export(EWZScore(), format="c", name="ewz_offset").score_many(x)
    assert np.abs(c - py).max() < DETECTOR_TOL
    assert np.array_equal(c >= 0.9, py >= 0.9)
    g = export(EWZScore(), format="onnx", name="ewz_offset")
    st = {k: np.zeros(1, np.float32) for k in ("mean", "var", "n")}  # run() casts to the graph's
    onnx = np.empty(len(x))
    for i, v in enumerate(x):
        s, m, va, n = g.run({"value": np.array([v], np.float32), **st})
        st = {"mean": m, "var": va, "n": n}
        onnx[i] = float(s[0])
    assert np.abs(onnx - py).max() < DETECTOR_TOL
    assert np.array_equal(onnx >= 0.9, py >= 0.9)


def test_onnx_ewzscore_starts_from_the_learned_state(tmp_path):
    """Check a learned EWZScore's ONNX export carries its n, mean and variance (the graph's
    metadata) and host_test.py starts from them: it started from zero and scored a 6-sigma
    reading 0.0 where Python and the C give 0.967."""
    rng = np.random.default_rng(0)
    det = EWZScore()
    det.score_many(20 + rng.normal(0, 1, 1000))
    new = np.r_[20 + rng.normal(0, 1, 5), 26.0]
    py = pickle.loads(pickle.dumps(det)).score_many(new)
    assert py[-1] > 0.9
    (tmp_path / "ewz.pkl").write_bytes(pickle.dumps(det))
    out = tmp_path / "o"
    r = _run_cli(str(tmp_path / "ewz.pkl"), "--format", "onnx", "--out", str(out),
                 "--name", "ewz")
    assert r.exit_code == 0, r.stderr
    run = subprocess.run([sys.executable, "ewz_host_test.py"], cwd=out, capture_output=True,
                         text=True, timeout=120, input="\n".join(map(repr, new.tolist())))
    assert run.returncode == 0, run.stderr
    got = np.array(run.stdout.split(), float)
    assert np.abs(got - py).max() < DETECTOR_TOL and got[-1] > 0.9
    g = export(det, format="onnx", name="ewz")
    assert g.initial_state == {"n": 1000.0, "mean": det.mean_, "var": det.var_}
    assert np.abs(g.score_many(new) - py).max() < DETECTOR_TOL
    assert "edgewise.initial_mean" in (out / "ewz_README.md").read_text()


def test_context_likelihood_c_with_nan_in_its_state_compiles_and_matches_python():
    """Check a ContextLikelihood whose warm-up held two opposite overflow sentinels (NaN in its
    state) exports C that compiles and scores as Python: the NaN was written `nan.0`."""
    import copy

    from edgewise.detect import default_detector

    rng = np.random.default_rng(0)
    x = rng.normal(20, 1, 200)
    x[10], x[11] = 1.7e308, -1.7e308
    det = default_detector()
    det.score_many(x)
    assert np.isnan(det.state_).any()
    ex = export(det, format="c", name="cl_nan")
    assert "nan.0" not in ex.files["cl_nan.c"] and "NAN" in ex.files["cl_nan.c"]
    y = np.r_[rng.normal(20, 1, 1500), 35.0, rng.normal(20, 1, 500)]
    py = copy.deepcopy(det).score_many(y)
    assert np.array_equal(ex.score_many(y), py)


def test_mahalanobis_onnx_leaves_a_missing_value_out(tmp_path):
    """Check the Mahalanobis graph (and so host_test.py) leaves a NaN or inf metric out of
    the row's T² and degrees of freedom, as the detector does: host_test.py once scored
    such a row 1.0 (Python 0.0006), then took it at its mean with every metric's degree."""
    from edgewise.detect.mahalanobis import Mahalanobis

    rng = np.random.default_rng(0)
    det = Mahalanobis(warmup=10)
    for r in rng.normal(size=(300, 3)):
        det.learn_one(dict(zip("abc", r, strict=True)))
    rows = [[0.1, -0.2, 0.3], [0.1, np.nan, 0.3], [0.1, np.inf, 0.3], [-np.inf, np.nan, 0.3]]
    py = [det.score_one(dict(zip("abc", r, strict=True))) for r in rows]
    assert max(py) < 0.05
    g = export(det, format="onnx", name="maha")
    t2, dof, _ = g.run({"x": np.array(rows)})
    assert dof.tolist() == [3, 2, 2, 1]
    s = det.shrunk_covariance()
    for r, got in zip(rows, t2, strict=True):  # the marginal T² of the metrics read
        o = np.isfinite(r)
        dz = np.array(r)[o] - det.mean_[o]
        assert got == pytest.approx(dz @ np.linalg.solve(s[np.ix_(o, o)], dz), rel=1e-12)
    (tmp_path / "maha.pkl").write_bytes(pickle.dumps(det))
    out = tmp_path / "o"
    r = _run_cli(str(tmp_path / "maha.pkl"), "--format", "onnx", "--out", str(out),
                 "--name", "maha")
    assert r.exit_code == 0, r.stderr
    run = subprocess.run([sys.executable, "maha_host_test.py"], cwd=out, capture_output=True,
                         text=True, timeout=120,
                         input=" ".join(str(v) for row in rows for v in row))
    assert run.returncode == 0, run.stderr
    got = [float(line.split()[1]) for line in run.stdout.splitlines()]
    assert got == pytest.approx(py, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize(("metrics", "bad"), [("temp*/x,rpm", "'temp*/x'"),
                                              ("temp, ,rpm", "''"), ("temp,,rpm", "''")])
def test_cli_mahalanobis_metric_names_are_checked(tmp_path, metrics, bad):
    """Check --metrics takes only names the gateway takes: 'temp*/x' closed the header's
    comment (the C did not compile) and 'temp, ,rpm' made an unnamed metric, both exit 0."""
    r = _run_cli("--detector", "mahalanobis", "--metrics", metrics, "--out",
                 str(tmp_path / "o"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"Metric name {bad}" in r.stderr and "not one the gateway takes" in r.stderr
    assert not (tmp_path / "o").exists()


def test_learned_mahalanobis_metric_names_are_escaped_in_the_c_comment():
    """Check a Mahalanobis learned (in Python) on a key holding '*/' exports C that compiles,
    the name escaped in the header comment; and that ':' and '/' names pass."""
    from edgewise.detect.mahalanobis import Mahalanobis
    from edgewise.edge.export_detectors import export_mahalanobis_c

    rng = np.random.default_rng(0)
    det = Mahalanobis(warmup=5)
    for r in rng.normal(size=(50, 2)):
        det.learn_one({"temp*/x": r[0], "rpm": r[1]})
    ex = export_mahalanobis_c(det, name="maha_esc")
    assert "temp*\\/x" in ex.files["maha_esc.h"]
    row = np.array([[0.1, 0.2]])
    assert ex.score_many(row)[0] == pytest.approx(det.score_one({"temp*/x": 0.1, "rpm": 0.2}),
                                                  abs=1e-9)
    ok = export_mahalanobis_c(Mahalanobis(), name="maha_ok", metrics=["line/1:temp", "rpm"])
    assert "line/1:temp, rpm" in ok.files["maha_ok.h"]
    ok.build()


def test_c_names_differing_only_in_case_are_not_written_beside_each_other(tmp_path):
    """Check `rul` and `RUL` (both valid C names) are not saved into one folder: they share
    the header guard EDGEWISE_RUL_H and the macros RUL_*, so a program including both did not
    compile, and they are one file on a case-insensitive file system."""
    from sklearn.tree import DecisionTreeRegressor

    X = np.random.default_rng(0).normal(size=(100, 3))
    m = DecisionTreeRegressor(max_depth=2, random_state=0).fit(X, X[:, 0])
    export(m, format="c", name="rul").save(tmp_path)
    with pytest.raises(ExportError, match=r"'RUL.h'.*'rul.h'|'rul.h'.*'RUL.h'") as e:
        export(m, format="c", name="RUL").save(tmp_path)
    assert "differ in more than case" in str(e.value) and "RUL_*" in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rul.c", "rul.h", "rul_host_test.c"]
    export(m, format="c", name="rul").save(tmp_path)  # the same name again: rewritten
    export(m, format="c", name="RUL").save(tmp_path / "other")
    r = _run_cli("--detector", "ewzscore", "--name", "RUL", "--out", str(tmp_path))
    assert r.exit_code == 2 and "only in case" in r.stderr and r.stderr.count("\n") == 1


def test_cli_export_minor_messages(tmp_path):
    """Check a directory given as the model file is called one (it was 'does not exist'),
    --dtype's help names compact, and --metrics or --calibration that the export does not
    use is said in one warning line (both were ignored silently; the unused calibration file
    is not read)."""
    r = _run_cli(str(tmp_path))
    assert r.exit_code == 2 and "is a directory" in r.stderr and "does not exist" not in r.stderr
    r = _run_cli("--help")
    assert "compact" in r.stdout
    r = _run_cli("--detector", "ewzscore", "--metrics", "temp", "--calibration",
                 str(tmp_path / "nosuch.csv"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 2, r.stderr
    assert "--metrics" in warnings[0] and "EWZScore" in warnings[0]
    assert "--calibration is not used" in warnings[1] and "float32" in warnings[1]


def test_int8_c_of_an_mlp_needs_no_calibration(tmp_path):
    """Check the int8 C of a torch MLP, whose weights are scaled per row from the weights
    alone, exports without calibration rows (they were demanded, then never used), and the
    CLI says given ones are not used."""
    torch = pytest.importorskip("torch")
    from edgewise.edge.export_c import mlp_layers, mlp_reference

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    q = export(net, format="c", dtype="int8", name="mlpq")
    assert np.abs(q.predict(X) - mlp_reference(mlp_layers(net), X, int8=True)).max() < 1e-5
    with_cal = export(net, format="c", dtype="int8", name="mlpq", calibration=X)
    assert with_cal.files == q.files
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(net))
    np.savetxt(tmp_path / "cal.csv", X, delimiter=",")
    r = _run_cli(str(tmp_path / "net.pkl"), "--dtype", "int8", "--out", str(tmp_path / "o"),
                 "--name", "mlpq", "--calibration", str(tmp_path / "cal.csv"))
    assert r.exit_code == 0, r.stderr
    assert "--calibration is not used" in r.stderr and "MLP" in r.stderr
    assert (tmp_path / "o" / "mlpq.c").read_text() == q.files["mlpq.c"]
