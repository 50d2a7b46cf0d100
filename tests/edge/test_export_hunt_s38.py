"""Edge exports, session 38's hunt: a calibration CSV whose header names are numbers (sensor
ids), int8 calibration rows that cover a narrow part of what the model was trained on (the
RULModel hint that led there), subclasses of supported tree models, CLI errors that told a
CLI user to call the Python API, and int8 split codes computed in float64."""

from __future__ import annotations

import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from edgewise.edge import compress, export
from edgewise.errors import ExportError


def _run_cli(*args: str):
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, ["export", *args])


def _numbered_gbr(names: bool = True):
    """A small GradientBoostingRegressor fitted on columns named by sensor ids '7', '11', '12'
    (on an unnamed array where ``names`` is False) and its training frame."""
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"7": rng.normal(0, 1, 300), "11": rng.normal(500, 50, 300),
                      "12": rng.normal(0.01, 0.001, 300)})
    y = X["7"] + X["11"] / 50 + X["12"] * 1000
    gbr = GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0)
    return gbr.fit(X if names else X.to_numpy(), y), X


# -- 1: a header of numbers ---------------------------------------------------------------------


def test_cli_header_of_sensor_ids_is_matched_by_name(tmp_path):
    """Check a calibration CSV whose header names the model's inputs by number ('12,11,7',
    another order than the model's) is a header, its columns matched by name: the CLI's int8 C
    is the Python API's. It was read as a row of data, columns matched by position."""
    gbr, X = _numbered_gbr()
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(gbr))
    X[["12", "11", "7"]].to_csv(tmp_path / "cal.csv", index=False)
    r = _run_cli(str(tmp_path / "m.pkl"), "--format", "c", "--dtype", "int8", "--calibration",
                 str(tmp_path / "cal.csv"), "--out", str(tmp_path / "o"), "--name", "num")
    assert r.exit_code == 0, r.stderr
    assert "read as its header row, columns matched by name" in r.stderr
    want = export(gbr, "c", "int8", calibration=X, name="num").files["num.c"]
    assert (tmp_path / "o" / "num.c").read_text() == want


def test_cli_numeric_first_row_naming_some_inputs_is_named_in_the_error(tmp_path):
    """Check a first row of numbers naming 2 of the model's 3 inputs ('7,11') is named as a
    possible header in the width error (it said only '2 columns, 3 inputs')."""
    gbr, X = _numbered_gbr()
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(gbr))
    X[["7", "11"]].to_csv(tmp_path / "cal.csv", index=False)
    r = _run_cli(str(tmp_path / "m.pkl"), "--format", "c", "--dtype", "int8", "--calibration",
                 str(tmp_path / "cal.csv"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "names 2 of GradientBoostingRegressor's 3 inputs but not '12'" in r.stderr
    assert "it must name every input" in r.stderr


def test_cli_whole_number_first_row_of_an_unnamed_model_is_warned(tmp_path):
    """Check a first row of distinct whole numbers over rows of fractions, for a model that
    names no inputs (fitted on an array), is read as data as before but with a warning saying
    so (it was taken as a calibration row silently)."""
    gbr, X = _numbered_gbr(names=False)
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(gbr))
    X.to_csv(tmp_path / "cal.csv", index=False)  # header 7,11,12
    X.to_csv(tmp_path / "plain.csv", index=False, header=False)
    args = ("--format", "c", "--dtype", "int8", "--out", str(tmp_path / "o"))
    r = _run_cli(str(tmp_path / "m.pkl"), *args, "--calibration", str(tmp_path / "cal.csv"))
    assert r.exit_code == 0, r.stderr
    assert "is all whole numbers, unlike the rows below it" in r.stderr
    assert "does not name its inputs" in r.stderr
    r = _run_cli(str(tmp_path / "m.pkl"), *args, "--calibration", str(tmp_path / "plain.csv"))
    assert r.exit_code == 0 and "whole numbers" not in r.stderr, r.stderr


# -- 2: calibration rows covering a narrow part of the model's inputs ---------------------------


def test_int8_calibration_on_a_narrow_slice_warns_naming_the_rows_outside():
    """Check quantize_trees warns when, by the trees' training counts, many training rows lie
    outside the calibration rows' ranges (rows of one corner of the training range), naming
    the share and the columns; calibration on the training rows, or a random 100 of them,
    does not warn. calibration_rmse said all was well either way."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 100, (2000, 2))
    tree = DecisionTreeRegressor(max_depth=6, random_state=0).fit(X, X[:, 0] + X[:, 1])
    table = compress.tree_table(tree)
    assert table.count is not None and table.count[0] == 2000
    with pytest.warns(UserWarning, match=r"by the trees' own counts, at least \d+% of the "
                                         r"training rows lie outside the range the 18 ") as ws:
        q = compress.quantize_trees(table, X[(X[:, 0] > 90) & (X[:, 1] > 90)])
    assert re.search(r"column 0: \d+% outside its calibrated \[90.46", str(ws[0].message))
    assert "such as its training rows" in str(ws[0].message)
    assert q.calibration_rmse < 0.25 * q.calibration_std  # the calibration rows cannot show it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compress.quantize_trees(table, X)
        compress.quantize_trees(table, X[rng.choice(len(X), 100, replace=False)])


def test_tree_counts_are_read_from_every_library_and_kept_by_pruning():
    """Check TreeTable.count holds each node's training rows for scikit-learn, HistGradient-
    Boosting and LightGBM (children summing to their parent), and prune_trees keeps it."""
    from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor

    lgb = pytest.importorskip("lightgbm")
    X = np.random.default_rng(0).normal(size=(300, 2))
    for m in (GradientBoostingRegressor(n_estimators=3, max_depth=3),
              HistGradientBoostingRegressor(max_iter=3), lgb.LGBMRegressor(n_estimators=3,
                                                                          verbose=-1)):
        t = compress.tree_table(m.fit(X, X[:, 0]))
        inner = np.flatnonzero(t.feature >= 0)
        assert t.count is not None and t.count[t.roots[0]] == 300, type(m).__name__
        assert np.allclose(t.count[inner + 1] + t.count[t.right[inner]], t.count[inner])
        p = compress.prune_trees(t, max_trees=2, max_depth=1)
        assert p.count is not None and p.count[0] == 300 and len(p.count) == p.n_nodes


def _rul_histories() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [(u, t, 1.0 + np.exp((t - life) / 15) + rng.normal(0, 0.05), rng.normal())
            for u, life in enumerate(range(50, 90, 5)) for t in range(life)]
    return pd.DataFrame(rows, columns=["unit", "cycle", "temp", "vib"])


@pytest.fixture(scope="module")
def rul_file(tmp_path_factory):
    from edgewise.models.rul import RULModel

    df = _rul_histories()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = RULModel(n_estimators=10, calibration_folds=2, window=10, cap=40.0).fit(df)
    path = tmp_path_factory.mktemp("rul") / "m.rul"
    model.save(path)
    return model, df, path


def test_cli_rul_int8_on_last_rows_warns_and_hints_every_stage(rul_file, tmp_path):
    """Check that calibrating a RULModel's int8 C on RULModel.features(histories) (each unit's
    last row, at failure: what the CLI's hint said to write) warns that the splits lie outside
    the calibrated ranges and hints at features from every stage of life; the rows the hint
    gives do not warn."""
    model, df, path = rul_file
    model.features(df).to_csv(tmp_path / "last.csv")
    args = ("--format", "c", "--dtype", "int8", "--out", str(tmp_path / "o"), "--name", "rq")
    r = _run_cli(str(path), *args, "--calibration", str(tmp_path / "last.csv"))
    assert r.exit_code == 0, r.stderr
    assert "of the training rows lie outside the range the 8 calibration rows" in r.stderr
    assert "hint: a RULModel's inputs are its window features" in r.stderr
    assert "gives only each unit's last row" in r.stderr
    h = df  # the hint's rows: the histories cut at every 10th step
    pd.concat(model.features(h[h["cycle"] <= c])
              for c in range(1, int(h["cycle"].max()) + 1, 10)).to_csv(tmp_path / "every.csv")
    r = _run_cli(str(path), *args, "--calibration", str(tmp_path / "every.csv"))
    assert r.exit_code == 0, r.stderr
    assert "outside the range" not in r.stderr and "hint:" not in r.stderr, r.stderr


def test_cli_rul_calibration_of_sensor_rows_hints_every_stage_not_features_alone(rul_file,
                                                                                 tmp_path):
    """Check the error for a RULModel calibrated on its sensor rows no longer says to write
    RULModel.features(histories) (each unit's last row only), and names the time column."""
    _, df, path = rul_file
    df.to_csv(tmp_path / "rows.csv", index=False)
    r = _run_cli(str(path), "--format", "c", "--dtype", "int8", "--calibration",
                 str(tmp_path / "rows.csv"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 2, r.stderr
    assert "RULModel.features(histories).to_csv(PATH)" not in r.stderr
    assert "h[h['cycle'] <= c]" in r.stderr and "gives only each unit's last row" in r.stderr


# -- 3: subclasses of supported tree models -------------------------------------------------------


def test_subclass_of_a_supported_tree_model_exports():
    """Check a subclass of GradientBoostingRegressor or LGBMRegressor reads as its base (as
    export() dispatches on base classes' names); it was refused by its own class name."""
    from sklearn.ensemble import GradientBoostingRegressor

    lgb = pytest.importorskip("lightgbm")

    class MyGBR(GradientBoostingRegressor):
        pass

    class MyLGB(lgb.LGBMRegressor):
        pass

    X = np.random.default_rng(0).normal(size=(200, 2))
    for m in (MyGBR(n_estimators=5), MyLGB(n_estimators=5, verbose=-1)):
        m.fit(X, X[:, 0])
        assert np.abs(compress.tree_table(m).predict(X) - m.predict(X)).max() < 1e-6
        assert export(m, "onnx").predict(X).shape == (200,)
    with pytest.raises(ExportError, match="Cannot read MyThing as a tree ensemble"):
        compress.tree_table(type("MyThing", (), {})())


# -- 4: CLI errors that pointed at the Python API -----------------------------------------------


def test_cli_int8_without_calibration_names_the_option(tmp_path):
    """Check the int8 export without calibration rows names --calibration FILE (it said only
    export(..., calibration=X), which a CLI user cannot do)."""
    gbr, _ = _numbered_gbr()
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(gbr))
    r = _run_cli(str(tmp_path / "m.pkl"), "--format", "c", "--dtype", "int8", "--out",
                 str(tmp_path / "o"))
    assert r.exit_code == 2 and "--calibration FILE" in r.stderr, r.stderr


def test_cli_fresh_mahalanobis_to_onnx_points_at_c(tmp_path):
    """Check '--detector mahalanobis --format onnx' (a fresh detector: nothing to freeze) says
    to export it to C or give a learned one, not to 'learn some readings first'."""
    r = _run_cli("--detector", "mahalanobis", "--format", "onnx", "--out", str(tmp_path / "o"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--detector mahalanobis exports a fresh detector" in r.stderr
    assert "--metrics a,b,c --format c" in r.stderr and "Learn some" not in r.stderr


# -- 5: int8 split codes in the device's float32 arithmetic ----------------------------------------


def test_int8_split_codes_send_every_float32_input_at_or_below_a_threshold_left():
    """Check every split's code threshold takes the largest float32 input at or below the
    threshold left: computed in float64, a code could fall one below that input's float32
    code (inputs at 0.01 resolution, seed 80: x = 57.2199974 <= t = 57.2199993, code 170,
    threshold code 169), sending it right."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(80)
    X = np.round(rng.normal(size=(300, 1)) * 10 + 50, 2)
    y = X[:, 0] + rng.normal(size=300)
    table = compress.tree_table(DecisionTreeRegressor(max_depth=5, random_state=0).fit(X, y))
    q = compress.quantize_trees(table, X)
    inner = table.feature >= 0
    t = table.threshold[inner]
    x = t.astype(np.float32)
    x = np.where(x.astype(np.float64) > t, np.nextafter(x, np.float32(-np.inf)), x)
    assert np.all(x.astype(np.float64) <= t)
    codes = q.quantize_inputs(x[:, None])[:, 0].astype(np.float64)
    assert np.all(codes <= q.table.threshold[inner])


def test_subclass_that_overrides_predict_is_refused_naming_the_method():
    """Check a subclass of a supported tree model whose predict is its own (fitted on
    log1p(y), predicting expm1) is refused: its export computed the base's maths, 114.7 off on
    predictions of 0.5..119.5. A subclass overriding fit only still exports and matches."""
    from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor

    lgb = pytest.importorskip("lightgbm")

    class LogTarget(GradientBoostingRegressor):
        def fit(self, X, y):
            return super().fit(X, np.log1p(y))

        def predict(self, X):
            return np.expm1(super().predict(X))

    class FitOnly(GradientBoostingRegressor):
        def fit(self, X, y):
            return super().fit(X, np.log1p(y))

    class Raw(HistGradientBoostingRegressor):
        def _raw_predict(self, X, n_threads=None):
            return 2 * super()._raw_predict(X, n_threads)

    class Doubled(lgb.LGBMRegressor):
        def predict(self, X, **kw):
            return 2 * super().predict(X, **kw)

    X = np.random.default_rng(0).normal(size=(300, 3))
    y = np.exp(2 + X[:, 0])
    for m, meth in ((LogTarget(n_estimators=10), "LogTarget.predict"),
                    (Raw(max_iter=5), "Raw._raw_predict"),
                    (Doubled(n_estimators=5, verbose=-1), "Doubled.predict")):
        m.fit(X, y)
        for fmt in ("c", "onnx"):
            with pytest.raises(ExportError, match=rf"Cannot export {type(m).__name__}: it "
                                                  rf"overrides .*\({re.escape(meth)}\)"):
                export(m, format=fmt, name="sub")
    ok = FitOnly(n_estimators=10).fit(X, y)
    assert np.abs(export(ok, format="c", name="sub").predict(X) - ok.predict(X)).max() < 1e-4


def test_sequential_subclass_with_its_own_forward_is_refused_for_c():
    """Check a torch Sequential subclass whose forward scales the output (x125) is refused by
    the C export (it computed the layers only: 87.5 off), and a module with a forward hook
    too; ONNX, which traces forward, still exports it and matches."""
    torch = pytest.importorskip("torch")

    class Scaled(torch.nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 125.0

    torch.manual_seed(0)
    layers = [torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)]
    s = Scaled(*layers)
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    ref = s(torch.tensor(X)).detach().numpy()[:, 0]
    for dtype in ("float32", "int8"):
        with pytest.raises(ExportError, match=r"Cannot export Scaled: it overrides forward "
                                              r"of its base Sequential.*format='onnx'"):
            export(s, format="c", dtype=dtype, name="scaled")
    assert np.abs(export(s, format="onnx", name="scaled").predict(X) - ref).max() < 1e-3
    plain = torch.nn.Sequential(*layers)
    handle = plain[2].register_forward_hook(lambda mod, inp, out: out * 2)
    with pytest.raises(ExportError, match=r"forward hooks on \['Linear'\]"):
        export(plain, format="c", name="hooked")
    handle.remove()
    plain_ref = plain(torch.tensor(X)).detach().numpy()[:, 0]
    assert np.abs(export(plain, format="c", name="plain").predict(X) - plain_ref).max() < 1e-4
