"""Defects of the edge exporters found by the edge/registry bug hunt (M4, M5, L1, L4)."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.detect.zscore import EWZScore
from edgewise.edge import compress, export
from edgewise.edge.export_onnx import OnnxExport
from edgewise.errors import ExportError, InvalidParameterError


def _run_cli(*args: str):
    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, ["export", *args])


@pytest.fixture(scope="module")
def gbr():
    """A small boosted model on 3 inputs, its training rows and predictions."""
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3))
    y = X[:, 0] + X[:, 1] ** 2
    m = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0).fit(X, y)
    return m, X


# -- M4: the ONNX graph name ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/abs_name", 'my"model', ".hidden",
                                  "a/b", "", "x" * 65])
def test_onnx_export_refuses_a_name_that_is_no_plain_file_name(name, tmp_path):
    """M4: '../..' wrote the graph outside --out, an absolute name wrote to that path, and a
    quote made the generated host_test.py a SyntaxError; the C path already checked."""
    with pytest.raises(ExportError, match="must be a plain file name"):
        export(EWZScore(), format="onnx", name=name)
    g = export(EWZScore(), format="onnx", name="ok")
    g.name = name  # a graph built some other way still never lands outside out_dir
    with pytest.raises(ExportError):
        g.save(tmp_path / "out")
    assert not list(tmp_path.rglob("*.onnx"))


def test_cli_onnx_name_is_checked_and_put_in_host_test_safely(tmp_path):
    """M4 through the CLI: a traversal name is one line and writes nothing; a name with '.'
    and '-' gives a host_test.py that parses and runs."""
    det = tmp_path / "ewz.pkl"
    det.write_bytes(pickle.dumps(EWZScore()))
    out = tmp_path / "a" / "b" / "out"
    r = _run_cli(str(det), "--format", "onnx", "--name", "../../../escaped", "--out", str(out))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "'../../../escaped'" in r.stderr and "plain file name" in r.stderr
    assert not list(tmp_path.rglob("escaped*"))
    r = _run_cli(str(det), "--format", "onnx", "--name", 'my"model', "--out", str(out))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    r = _run_cli(str(det), "--format", "onnx", "--name", "ewz-v1.2", "--out", str(out))
    assert r.exit_code == 0, r.stderr
    ast.parse((out / "ewz-v1.2_host_test.py").read_text())
    run = subprocess.run([sys.executable, "ewz-v1.2_host_test.py"], input="1 2 1 50", cwd=out,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.split()) == 4


# -- M5: int8 calibration in the Python API --------------------------------------------------


def test_int8_calibration_is_checked_in_the_python_api(gbr):
    """M5: an inf, an all-NaN column, no rows or the wrong width went to quantize_trees
    unchecked: a constant model, C that gcc rejects, or raw numpy errors."""
    m, X = gbr
    bad = X.copy()
    bad[7, 1] = np.inf
    with pytest.raises(ExportError, match=r"row 7, column 1 is inf"):
        export(m, "c", "int8", calibration=bad)
    with pytest.raises(ExportError, match=r"row 7, column 1 is inf"):
        compress.quantize_trees(compress.tree_table(m), bad)
    bad = X.copy()
    bad[:, 2] = np.nan
    with pytest.raises(ExportError, match="column 2 has no value"):
        export(m, "c", "int8", calibration=bad)
    for cal, what in ((np.zeros((0, 3)), r"\(0, 3\)"), (X[:, :2], r"\(500, 2\)"),
                      (np.hstack([X, X[:, :2]]), r"\(500, 5\)"), (X[0], r"\(3,\)")):
        with pytest.raises(ExportError, match=what):
            export(m, "c", "int8", calibration=cal)


def test_int8_calibration_outlier_warns_naming_the_column_and_row(gbr):
    """M5: one finite 1e30 row set the step of its column so every other value fell in one
    code: the int8 model strayed by more than the output's std, with no word."""
    m, X = gbr
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good calibration warns of nothing
        good = export(m, "c", "int8", calibration=X)
    assert good.calibration_rmse is not None and good.calibration_std is not None
    assert good.calibration_rmse < 0.25 * good.calibration_std
    bad = X.copy()
    bad[4, 0] = 1e30
    with pytest.warns(UserWarning, match=r"column 0's range is set by a few rows \(row 4 "
                                         r"holds 1e\+30"):
        q = export(m, "c", "int8", calibration=bad)
    assert q.calibration_rmse > 0.25 * q.calibration_std


def test_cli_reports_the_int8_deviation_and_warns_on_an_outlier(gbr, tmp_path):
    """M5 in the CLI: a 1e30 row passed _read_calibration's checks with no warning."""
    m, X = gbr
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(m))
    bad = X.copy()
    bad[0, 0] = 1e30
    np.savetxt(tmp_path / "cal.csv", bad, delimiter=",")
    r = _run_cli(str(tmp_path / "m.pkl"), "--dtype", "int8", "--calibration",
                 str(tmp_path / "cal.csv"), "--out", str(tmp_path / "o"), "--name", "q")
    assert r.exit_code == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert any(x.startswith("warning: int8 quantisation strays") and "column 0" in x
               for x in lines), lines
    assert any(x.startswith("int8: RMSE") for x in lines), lines


# -- L1: host_test.py of a learned Mahalanobis -------------------------------------------


def test_mahalanobis_onnx_host_test_runs_and_prints_t2_and_the_score(tmp_path):
    """L1: host_test.py fed input 'X' as float32 to a graph whose input is 'x' (float64): the
    README's own usage line failed in onnxruntime."""
    pytest.importorskip("onnxruntime")
    from edgewise.detect.mahalanobis import Mahalanobis

    det = Mahalanobis()
    rng = np.random.default_rng(0)
    for _ in range(300):
        det.learn_one({"a": rng.normal(), "b": rng.normal(), "c": rng.normal()})
    (tmp_path / "maha.pkl").write_bytes(pickle.dumps(det))
    out = tmp_path / "o"
    r = _run_cli(str(tmp_path / "maha.pkl"), "--format", "onnx", "--name", "maha", "--out",
                 str(out))
    assert r.exit_code == 0, r.stderr
    rows = [(1.0, 2.0, 3.0), (0.1, -0.2, 0.0), (5.0, -5.0, 0.5)]
    run = subprocess.run([sys.executable, "maha_host_test.py"], cwd=out, capture_output=True,
                         text=True, timeout=120,
                         input="\n".join(" ".join(map(str, row)) for row in rows))
    assert run.returncode == 0, run.stderr
    got = [tuple(map(float, line.split())) for line in run.stdout.splitlines()]
    assert len(got) == len(rows)
    for row, (t2, score) in zip(rows, got, strict=True):
        dz, w = det._solve(np.array(row))
        assert t2 == pytest.approx(float(dz @ w), rel=1e-9)
        assert score == pytest.approx(det.score_one(dict(zip("abc", row, strict=True))),
                                      rel=1e-7, abs=1e-12)


# -- L4: prune_trees arguments and empty tables ----------------------------------------------


@pytest.mark.parametrize("kw", [{"max_trees": -1}, {"max_trees": -5}, {"max_trees": 0},
                                {"max_trees": 2.5}, {"max_trees": True}, {"max_depth": -1},
                                {"max_depth": 0}, {"max_depth": "3"}])
def test_prune_trees_refuses_limits_that_are_not_integers_from_1(gbr, kw):
    """L4: -1 dropped the last tree, a depth of -1 left constant trees, 0 an empty table and
    2.5 a raw TypeError."""
    t = compress.tree_table(gbr[0])
    (what, value), = kw.items()
    with pytest.raises(InvalidParameterError, match=f"'{what}' parameter of prune_trees") as e:
        compress.prune_trees(t, **kw)
    assert (e.value.field, e.value.value) == (what, value)
    assert compress.prune_trees(t, max_trees=np.int64(3), max_depth=1).n_trees == 3


def test_export_refuses_a_table_with_no_tree(gbr):
    """L4: an empty table exported to C (flash 0) that did not compile, and ONNX raised raw."""
    t = compress.tree_table(gbr[0])
    empty = compress.TreeTable(t.feature[:0], t.threshold[:0], t.right[:0], t.value[:0],
                               t.missing_left[:0], t.depth[:0], t.roots[:0], t.base,
                               t.n_features)
    for fmt, dtype in (("c", "float32"), ("c", "compact"), ("onnx", "float32")):
        with pytest.raises(ExportError, match="0 trees"):
            export(empty, format=fmt, dtype=dtype)
    assert isinstance(export(t, format="onnx"), OnnxExport)
