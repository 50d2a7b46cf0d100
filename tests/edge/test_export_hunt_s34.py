"""Edge exports, session 34's hunt: float32 trees on a large output offset (C and ONNX),
torch int8 ONNX calibrated on rows with a NaN, unfitted models, the torch module's training
mode after an ONNX export, the README's LightGBM threshold sentence, and the CLI:
calibration CSVs with empty cells, two exports into one --out, and three messages."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from edgewise.edge import export
from edgewise.errors import ExportError

REPO = Path(__file__).resolve().parents[2]


def _run_cli(*args: str):
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, ["export", *args])


# -- float32 trees on a large offset ---------------------------------------------------------

#: half a float32 step at 101325 is 0.0039: the output's own rounding, and what is left
HALF_STEP = float(np.spacing(np.float32(101325))) / 2


def _offset_models():
    from sklearn.ensemble import (
        GradientBoostingRegressor,
        HistGradientBoostingRegressor,
        RandomForestRegressor,
    )

    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 3)).astype(np.float32)
    y = 101325 + 0.5 * X[:, 0] + 0.2 * np.sin(3 * X[:, 1])  # pressure in Pa, std ~0.5
    return X, {
        "forest": RandomForestRegressor(200, max_depth=6, random_state=0).fit(X, y),
        "gbr": GradientBoostingRegressor(n_estimators=500, learning_rate=0.05,
                                         random_state=0).fit(X, y),
        "hgb": HistGradientBoostingRegressor(random_state=0).fit(X, y),
    }


def test_float32_trees_keep_their_precision_on_a_large_offset():
    """Check the float32 C and ONNX of trees on y = 101325 + signal are within about half a
    float32 step of Python: the C summed each leaf onto the base (500 boosted trees: 0.21
    off, HistGradientBoosting 0.10) and both summed a forest's leaves of ~507 each (0.26),
    where the output's std is 0.5."""
    X, models = _offset_models()
    for label, m in models.items():
        py = m.predict(X)
        c = np.abs(export(m, format="c", name="pa").predict(X) - py).max()
        g = np.abs(export(m, format="onnx", name="pa").predict(X) - py).max()
        assert c < 1.2 * HALF_STEP and g < 1.2 * HALF_STEP, (label, c, g)


def test_float32_tree_c_adds_the_base_last_and_a_single_tree_stays_exact():
    """Check the C starts the sum at 0 and adds the base (a float32 value) last, and that a
    tree's leaf on an offset still comes out as its float32 value (the base's rounding is
    moved into the leaves, so base + leaf rounds once)."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 2)).astype(np.float32)
    y = 101325.3 + np.round(X[:, 0], 2)
    m = DecisionTreeRegressor(max_depth=8, random_state=0).fit(X, y)
    c = export(m, format="c", name="one")
    assert "float acc = 0.0f;" in c.files["one.c"]
    from edgewise.edge.compress import center_leaves_float32, tree_table

    t = center_leaves_float32(tree_table(m))
    assert t.base == float(np.float32(t.base)) and np.allclose(t.predict(X), m.predict(X))
    want = m.predict(X).astype(np.float32).astype(np.float64)
    assert np.abs(c.predict(X) - want).max() <= float(np.spacing(np.float32(101325)))
    # leaves up to float32's edge: an offset beyond its range stays in the leaves (centred,
    # a base of inf and a leaf of -inf gave NaN)
    Xe = np.arange(4.0)[:, None]
    big = DecisionTreeRegressor(max_depth=2).fit(Xe, Xe[:, 0] * 3.3e38)
    got = export(big, format="c", name="big").predict(Xe)
    assert got[:2].tolist() == [0.0, float(np.float32(3.3e38))] and np.isinf(got[2:]).all()


def test_readme_float32_offset_figure():
    """Check the README's figure for the float32 sum on an offset: within 0.004 for 500
    boosted trees (0.21 before)."""
    text = " ".join((REPO / "README.md").read_text().split())
    assert "500 boosted trees: within 0.004 of Python" in text
    X, models = _offset_models()
    m = models["gbr"]
    assert np.abs(export(m, format="c", name="pa").predict(X) - m.predict(X)).max() < 0.004


# -- torch int8 ONNX: calibration rows with a NaN ---------------------------------------------


def _net():
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def test_torch_int8_onnx_leaves_calibration_rows_with_nan_out():
    """Check a calibration row holding a NaN is left out of the int8 ranges, with a warning:
    one NaN among 256 rows took an activation's range with it (0.018 off torch instead of
    0.006), silently. Rows all NaN are refused."""
    net = _net()
    X = np.random.default_rng(0).normal(size=(256, 3)).astype(np.float32)
    Xn = X.copy()
    Xn[5, 1] = np.nan
    with pytest.warns(UserWarning, match=r"1 of the 256 rows holds a NaN .*row 5"):
        q = export(net, format="onnx", dtype="int8", calibration=Xn)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ref = export(net, format="onnx", dtype="int8", calibration=np.delete(X, 5, axis=0))
    assert np.array_equal(q.predict(X), ref.predict(X))
    with pytest.raises(ExportError, match="Every one of the 2 calibration rows holds a NaN"):
        export(net, format="onnx", dtype="int8", calibration=np.full((2, 3), np.nan))


def test_onnx_export_leaves_the_module_in_its_training_mode():
    """Check an ONNX export traces in eval mode but leaves each submodule as it was: a module
    in training came back in eval mode (its Dropout off for the training that followed)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                              torch.nn.Linear(8, 1))
    net.train()
    net[0].eval()  # a mixed module keeps its mix
    export(net, format="onnx", name="m")
    assert [m.training for m in net.modules()] == [True, False, True, True, True]
    net.eval()
    export(net, format="onnx", name="m")
    assert not any(m.training for m in net.modules())


# -- unfitted models ---------------------------------------------------------------------------


def _unfitted():
    from sklearn.ensemble import (
        GradientBoostingRegressor,
        HistGradientBoostingRegressor,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeRegressor

    models = [GradientBoostingRegressor(), RandomForestRegressor(),
              HistGradientBoostingRegressor(), DecisionTreeRegressor()]
    try:
        import lightgbm as lgb
    except ImportError:  # pragma: no cover
        return models
    return [*models, lgb.LGBMRegressor()]


@pytest.mark.parametrize("model", _unfitted(), ids=lambda m: type(m).__name__)
def test_an_unfitted_tree_model_is_refused_naming_it(model):
    """Check an unfitted tree model is an ExportError naming its type (a raw AttributeError:
    no 'init_', 'estimators_', 'tree_')."""
    for fmt, dtype in (("c", "float32"), ("onnx", "float32"), ("c", "compact")):
        with pytest.raises(ExportError, match=f"^{type(model).__name__} is not fitted; fit it"):
            export(model, format=fmt, dtype=dtype, name="m")


def test_cli_unfitted_model_is_one_line(tmp_path):
    """Check the CLI says an unfitted model is not fitted in one line (a 52-line traceback)."""
    from sklearn.ensemble import GradientBoostingRegressor

    (tmp_path / "unfit.pkl").write_bytes(pickle.dumps(GradientBoostingRegressor()))
    r = _run_cli(str(tmp_path / "unfit.pkl"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "GradientBoostingRegressor is not fitted" in r.stderr


# -- CLI: calibration CSVs ----------------------------------------------------------------------


def _named_gbr(tmp_path: Path):
    import pandas as pd
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 2)), columns=["a", "b"])
    m = GradientBoostingRegressor(n_estimators=10, random_state=0).fit(df, df.a + df.b ** 2)
    (tmp_path / "named.pkl").write_bytes(pickle.dumps(m))
    return m, rng


def test_cli_calibration_csv_reads_empty_cells_and_nan_as_missing(tmp_path):
    """Check a readings-export CSV with an empty cell (no reading) and a 'nan' calibrates as
    the Python API does with NaN there: the CLI refused it ('could not convert string ''')."""
    m, rng = _named_gbr(tmp_path)
    vals = np.round(rng.normal(size=(40, 2)), 3)
    vals[4, 1] = np.nan
    vals[9, 0] = np.nan
    lines = ["time,a,b"]
    for i, (a, b) in enumerate(vals):
        cells = ["" if np.isnan(v) else repr(float(v)) for v in (a, b)]
        if i == 9:
            cells[0] = "nan"
        lines.append(f"2026-01-01T00:00:{i:02d}.000000000Z," + ",".join(cells))
    (tmp_path / "readings.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "q"
    r = _run_cli(str(tmp_path / "named.pkl"), "--dtype", "int8", "--calibration",
                 str(tmp_path / "readings.csv"), "--out", str(out))
    assert r.exit_code == 0, r.stderr
    want = export(m, format="c", dtype="int8", name="model", calibration=vals)
    assert (out / "model.c").read_text() == want.files["model.c"]


@pytest.mark.parametrize(("text", "message"), [
    ("time,a,b\n# a comment\n\nt,1,2\nt,3,x\n", "line 5, column 3 ('b') holds 'x', not a number"),
    ("time,a,b\nt,1,2\n\nt,inf,2\n", "not a finite number on line 4, column 2 ('a'): 'inf'"),
    ("time,a,b\nt,1,2\nt,1\n", "has 2 values on line 3 but 3 on line 2"),
])
def test_cli_calibration_csv_errors_name_the_file_line(tmp_path, text, message):
    """Check a bad calibration cell is named by the file's line and column (numpy counted
    rows below the header and blank lines: 'row 4' for line 5), and inf is refused."""
    _named_gbr(tmp_path)
    (tmp_path / "c.csv").write_text(text)
    r = _run_cli(str(tmp_path / "named.pkl"), "--dtype", "int8", "--calibration",
                 str(tmp_path / "c.csv"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr, r.stderr


def test_cli_headerless_calibration_with_an_empty_first_cell(tmp_path):
    """Check a CSV of numbers whose first row has an empty cell is rows, not a header."""
    from sklearn.tree import DecisionTreeRegressor

    X = np.random.default_rng(0).normal(size=(60, 2))
    (tmp_path / "t.pkl").write_bytes(pickle.dumps(DecisionTreeRegressor(max_depth=3).fit(
        X, X[:, 0])))
    (tmp_path / "c.csv").write_text(",1.5\n2,3\nnan,4\n-1,\n")
    r = _run_cli(str(tmp_path / "t.pkl"), "--dtype", "int8", "--calibration",
                 str(tmp_path / "c.csv"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.stderr


# -- CLI: two exports into one --out -------------------------------------------------------------


def test_two_exports_into_one_out_keep_their_own_readme_and_host_test(tmp_path):
    """Check exports of two names into one --out write <name>_README.md and
    <name>_host_test.py: both wrote README.md and host_test.py, the second over the first's,
    so pump's host test ran baro's graph."""
    pytest.importorskip("onnxruntime")
    _named_gbr(tmp_path)
    fw = tmp_path / "fw"
    r = _run_cli(str(tmp_path / "named.pkl"), "--format", "onnx", "--out", str(fw),
                 "--name", "pump")
    assert r.exit_code == 0, r.stderr
    r = _run_cli("--detector", "ewzscore", "--format", "onnx", "--out", str(fw), "--name",
                 "baro")
    assert r.exit_code == 0, r.stderr
    assert str(fw / "baro_host_test.py") in r.stdout.split()
    for name in ("pump", "baro"):
        readme = (fw / f"{name}_README.md").read_text()
        assert f"# {name}: ONNX graph" in readme and f"python {name}_host_test.py" in readme
    run = subprocess.run([sys.executable, "pump_host_test.py"], input="0.5 1.0", cwd=fw,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.split()) == 1
    r = _run_cli("--detector", "ewzscore", "--format", "c", "--out", str(fw), "--name", "ewz")
    assert r.exit_code == 0, r.stderr
    assert "ewz_host_test.c" in (fw / "ewz_README.md").read_text()
    assert not (fw / "README.md").exists() and not (fw / "host_test.py").exists()


# -- the README's LightGBM thresholds ----------------------------------------------------------


def test_readme_lightgbm_thresholds_sentence_holds():
    """Check the README gives LightGBM the half-a-float32-step caveat, with its figures: it
    said LightGBM's thresholds were rounded down so that every float32 input decides as in
    Python, while they are rounded to nearest and 19 float32 inputs near them did not."""
    lgb = pytest.importorskip("lightgbm")
    text = " ".join((REPO / "README.md").read_text().split())
    assert "and for LightGBM, so every float32 input decides as in Python" not in text
    assert ("A float32 input within half a float32 step above such a threshold may still go "
            "left where Python, given that float32 value, sends it right (that LightGBM model: "
            "14 of those readings fed to Python as their float32 values, 19 of the 266 float32 "
            "values within 3 steps of its 38 thresholds)") in text
    assert "all 10,001 readings 9000.00..9100.00 decide as in Python" in text
    from edgewise.edge.compress import tree_table

    rng = np.random.default_rng(0)
    x = np.round(rng.uniform(9000, 9100, 3000), 2)  # decimal readings, 0.01 resolution
    m = lgb.LGBMRegressor(n_estimators=20, num_leaves=8, verbose=-1).fit(
        x[:, None], (x > 9050) * 10.0 + rng.normal(0, 0.1, 3000))
    c = export(m, format="c", name="lg")
    t = tree_table(m)
    thr = np.unique(t.threshold[t.feature >= 0])
    near = np.unique(np.concatenate([
        np.float32(v) + np.arange(-3, 4, dtype=np.float32) * np.spacing(np.float32(v))
        for v in thr]))
    off = np.abs(m.predict(near.astype(np.float64)[:, None]) - c.predict(near[:, None])) > 1e-3
    readings = np.round(np.arange(900000, 910001) / 100, 2)[:, None]
    as32 = readings.astype(np.float32).astype(np.float64)
    assert (len(thr), len(near), int(off.sum())) == (38, 266, 19)
    assert np.abs(m.predict(readings) - c.predict(readings)).max() < 1e-3
    assert int((np.abs(m.predict(as32) - c.predict(readings)) > 1e-3).sum()) == 14


# -- minor messages ---------------------------------------------------------------------------


@pytest.mark.parametrize(("layers", "message"), [
    (("ReLU", "Linear"), "its layer 0, ReLU, comes first; a ReLU or Tanh must follow a Linear"),
    (("Linear", "ReLU", "ReLU", "Linear"),
     "its layer 2, ReLU, follows ReLU; a ReLU or Tanh must follow a Linear"),
])
def test_mlp_c_activation_not_after_a_linear_says_so(layers, message):
    """Check a ReLU first, or twice, is named as out of place: the message said the
    Sequential contained ReLU and listed ReLU as supported."""
    torch = pytest.importorskip("torch")
    mods = [torch.nn.Linear(2, 2) if k == "Linear" else torch.nn.ReLU() for k in layers[:-1]]
    net = torch.nn.Sequential(*mods, torch.nn.Linear(2, 1))
    with pytest.raises(ExportError, match=message):
        export(net, format="c")


def test_prune_trees_of_quantised_trees_and_a_non_string_c_name_are_export_errors():
    """Check prune_trees(QuantizedTrees) (a raw AttributeError) and a C name that is not a
    string (a raw TypeError) are ExportErrors saying what to give."""
    from sklearn.tree import DecisionTreeRegressor

    from edgewise.edge.compress import prune_trees, quantize_trees, tree_table

    X = np.random.default_rng(0).normal(size=(100, 2))
    m = DecisionTreeRegressor(max_depth=3).fit(X, X[:, 0])
    with pytest.raises(ExportError, match=r"prune_trees takes a TreeTable .* Got QuantizedTrees "
                                          r"instead: prune before quantising"):
        prune_trees(quantize_trees(tree_table(m), X), max_trees=1)
    with pytest.raises(ExportError, match="C name 5 must be a C identifier"):
        export(m, format="c", name=5)


@pytest.mark.parametrize("text", ["# only a comment\n", "", "\n\n", "time,a,b\n# none yet\n"])
def test_cli_calibration_csv_with_no_rows_says_so(tmp_path, text):
    """Check a calibration CSV of comments only, empty, or a header and no rows is the
    one-line 'has no rows' error: the empty row list was reshaped with -1 (a ValueError
    traceback), so that message was never reached."""
    _named_gbr(tmp_path)
    (tmp_path / "c.csv").write_text(text)
    r = _run_cli(str(tmp_path / "named.pkl"), "--dtype", "int8", "--calibration",
                 str(tmp_path / "c.csv"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, (r.exception, r.stderr)
    assert "c.csv' has no rows" in r.stderr and "give a few real input rows." in r.stderr, \
        r.stderr
