"""``edgewise export`` and ``edgewise bench edge`` through the real entry point (in this
process: :func:`tests.in_process.edgewise_here`); the C they write is built and run."""

from __future__ import annotations

import json
import pickle
import subprocess

import numpy as np
import pytest

from edgewise.edge.export_c import CFLAGS
from tests.in_process import edgewise_here


def _cli(*args, cwd=None):
    """``edgewise ARGS`` through the real entry point, in this process (what is checked is
    what it writes, prints and exits with: a new interpreter cost each call a second of
    imports)."""
    return edgewise_here(*args, cwd=cwd)


def test_export_pickled_trees_to_c_builds_and_predicts(tmp_path, fd001):
    """Check that a pickled model exports to C with README and host program that agree."""
    from sklearn.ensemble import GradientBoostingRegressor

    Xtr, ytr, Xte, _ = fd001
    gbr = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0).fit(Xtr, ytr)
    (tmp_path / "rul.pkl").write_bytes(pickle.dumps(gbr))
    out = tmp_path / "out"
    r = _cli("export", str(tmp_path / "rul.pkl"), "--format", "c", "--out", str(out),
             "--name", "rul")
    assert r.returncode == 0, r.stderr
    assert "rul_predict" in (out / "rul_README.md").read_text()
    subprocess.run(["gcc", *CFLAGS, "rul.c", "rul_host_test.c", "-lm", "-o", "rul_test"],
                   cwd=out, check=True)
    rows = Xte[:50].astype(np.float32)
    feed = "\n".join(" ".join(repr(float(v)) for v in row) for row in rows)
    got = np.array(subprocess.run(["./rul_test"], input=feed, capture_output=True, text=True,
                                  cwd=out, check=True).stdout.split(), float)
    assert np.abs(got - gbr.predict(rows.astype(np.float64))).max() < 1e-3


def test_export_errors_are_one_line(tmp_path):
    """Check that an unsupported combination exits non-zero with the supported list."""
    r = _cli("export", "--detector", "ewzscore", "--format", "c", "--dtype", "int8",
             "--out", str(tmp_path))
    assert r.returncode != 0 and "Supported for EWZScore: c/float32, onnx/float32" in r.stderr


def test_export_default_detector_to_c_host_program_agrees(tmp_path, nab_series):
    """Check that ``--detector default`` writes the default detector's C, whose host program
    scores a NAB series as Python does."""
    from edgewise.detect import default_detector

    out = tmp_path / "out"
    r = _cli("export", "--detector", "default", "--format", "c", "--out", str(out),
             "--name", "clik")
    assert r.returncode == 0, r.stderr
    assert "ContextLikelihood" in (out / "clik_README.md").read_text()
    subprocess.run(["gcc", *CFLAGS, "clik.c", "clik_host_test.c", "-lm", "-o", "clik_test"],
                   cwd=out, check=True)
    vals = nab_series[:4000]
    got = np.array(subprocess.run(["./clik_test"], input="\n".join(map(repr, vals.tolist())),
                                  capture_output=True, text=True, cwd=out,
                                  check=True).stdout.split(), float)
    py = default_detector().score_many(vals)
    assert np.abs(got - py).max() < 1e-8 and np.array_equal(got >= 0.9, py >= 0.9)


def test_export_mahalanobis_needs_metrics(tmp_path):
    """Check that a fresh multivariate detector exports with --metrics and refuses without."""
    r = _cli("export", "--detector", "mahalanobis", "--format", "c", "--out", str(tmp_path))
    assert r.returncode != 0 and "--metrics" in r.stderr
    r = _cli("export", "--detector", "mahalanobis", "--metrics", "flow,pressure", "--format",
             "c", "--out", str(tmp_path / "m"), "--name", "maha")
    assert r.returncode == 0, r.stderr
    assert "MAHA_N_METRICS 2" in (tmp_path / "m" / "maha.h").read_text()


@pytest.mark.slow
def test_bench_edge_json(shared_data, tmp_path):
    """Check that ``bench edge --json`` prints one object with the agreed keys and goals met."""
    r = _cli("bench", "edge", "--json", "--repeats", "1", "--data", str(shared_data))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["detector"]["c_ram_bytes"] <= 2048 and res["detector"]["c_ns_per_reading"] < 1000
    assert res["detector"]["detector"] == "ContextLikelihood"
    assert res["detector"]["parity_max_abs_err"] < 1e-9
    nab = res["detector"]["all_nab"]   # exact wherever the 2 KiB key set holds the transitions
    assert len(nab["series_differing"]) <= 2 and nab["exact_capacity_parity_max_abs_err"] < 1e-9
    assert abs(nab["alerts_c"] - nab["alerts_python"]) <= 2
    assert res["detector_ewzscore"]["parity_max_abs_err"] < 1e-3
    assert res["multivariate"]["onnx_t2_max_rel_err"] < 1e-9
    assert res["rul"]["c_flash_bytes"] < 32768   # the library's RULModel, cut, compact C
    assert abs(res["rul"]["rmse_c"] - res["rul"]["rmse_python"]) < 0.5
    assert abs(res["rul"]["full_rmse_c"] - res["rul"]["rmse_python"]) < 0.5
    assert abs(res["rul_standin"]["rmse_c"] - res["rul_standin"]["rmse_python"]) < 0.5


def test_bad_export_inputs_are_one_line_errors(tmp_path):
    """Check a missing, headed or wrong-width calibration CSV, a model file that is not a
    pickle and an --out that cannot be written each fail with one line (all were tracebacks,
    and a too-wide calibration CSV was used silently)."""
    from sklearn.tree import DecisionTreeRegressor
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    (tmp_path / "rf.pkl").write_bytes(pickle.dumps(
        DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, X[:, 0])))
    np.savetxt(tmp_path / "narrow.csv", X[:, :2], delimiter=",")
    np.savetxt(tmp_path / "wide.csv", np.hstack([X, X]), delimiter=",")
    (tmp_path / "head.csv").write_text("a,b,c\n1,2,3\n")
    (tmp_path / "some.csv").write_text("a,b\n1,2\n")
    rf = str(tmp_path / "rf.pkl")
    int8 = ("--dtype", "int8", "--out", str(tmp_path / "o"), "--calibration")
    cases = {
        (rf, *int8, "nosuch.csv"): "Calibration file 'nosuch.csv' does not exist",
        (rf, *int8, str(tmp_path / "narrow.csv")): "has 2 columns, but the model takes 3 inputs",
        (rf, *int8, str(tmp_path / "wide.csv")): "has 6 columns, but the model takes 3 inputs",
        (rf, *int8, str(tmp_path / "head.csv")): "numbers only, one input row per line and "
                                                 "no header row",
        (str(tmp_path / "some.csv"),): "is not a pickled model",
        ("--detector", "ewzscore", "--out", "/proc/nope"): "--out '/proc/nope' cannot be "
                                                           "written",
    }
    runner = CliRunner(mix_stderr=False)
    for args, message in cases.items():
        r = runner.invoke(app, ["export", *args])
        assert r.exit_code == 2, (args, r.exception)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert message in r.stderr, r.stderr
