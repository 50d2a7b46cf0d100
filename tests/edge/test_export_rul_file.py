"""``edgewise export`` of a RUL model file from ``edgewise train rul`` (and a pickled RULModel):
its boosted member to C and ONNX, with the window features it takes named in order."""

from __future__ import annotations

import json
import pickle
import re
import subprocess

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.bench.cmapss import load_test, load_train, make_model
from edgewise.edge.export_c import CFLAGS
from tests.edge.test_cli_export import _cli
from tests.edge.test_export_rul import _rmse


@pytest.fixture(scope="module")
def fleet(shared_data, tmp_path_factory):
    """A small RULModel fitted on C-MAPSS FD001 (30 units, 30 trees: quick on 2 cores), saved
    as ``edgewise train rul`` saves it and pickled; with FD001's test histories."""
    cdir = shared_data / "cmapss"
    train = load_train(cdir, "FD001")
    model = make_model(0, n_estimators=30, calibration_folds=2).fit(train[train["unit"] <= 30])
    d = tmp_path_factory.mktemp("fleet")
    model.save(d / "fleet.rul")
    (d / "rul.pkl").write_bytes(pickle.dumps(model))
    test, truth = load_test(cdir, "FD001")
    return model, d, test, truth


def _invoke(*args):
    from edgewise.cli import app, load_commands

    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, ["export", *map(str, args)])


def test_rul_model_file_exports_to_c_that_matches_its_gbm_on_cmapss(fleet, tmp_path):
    """Check that the file ``edgewise train rul`` writes exports to C (it was refused as "not a
    pickled model"), that the header and ``<name>_inputs.json`` list the model's window
    features in order, and that the compiled host program, fed those features of FD001's test
    units, gives the gbm member's predictions to float32 precision (and the model's point)."""
    model, d, test, truth = fleet
    out = tmp_path / "rul"
    r = _cli("export", str(d / "fleet.rul"), "--format", "c", "--out", str(out), "--name", "rul")
    assert r.returncode == 0, r.stderr
    names = list(model.feature_names_)
    assert "gbm member" in r.stderr and f"the {len(names)} window features" in r.stderr
    header = (out / "rul.h").read_text()
    assert re.findall(r'x\[(\d+)\] "([^"]+)"', header) == [(str(i), n) for i, n in
                                                           enumerate(names)]
    spec = json.loads((out / "rul_inputs.json").read_text())
    assert spec["features"] == names and spec["window"] == model.window
    assert spec["output"] == {"weight": 1.0, "cap": model.cap,
                              "point": "min(max(weight * y, 0), cap)", "not_exported": {}}
    assert "- x[84]: `age`" in (out / "rul_README.md").read_text()
    subprocess.run(["gcc", *CFLAGS, "rul.c", "rul_host_test.c", "-lm", "-o", "rul_test"],
                   cwd=out, check=True)
    F = model.features(test)
    assert list(F.columns) == names
    feed = "\n".join(" ".join(repr(float(v)) for v in row)
                     for row in F.to_numpy().astype(np.float32))
    got = np.array(subprocess.run(["./rul_test"], input=feed, capture_output=True, text=True,
                                  cwd=out, check=True).stdout.split(), float)
    gbm = model.core_["gbm"].predict(F.to_numpy())
    assert len(got) == len(F) == 100
    assert np.abs(got - gbm).max() < 1e-3                     # float32 sums of 30 leaves
    point = np.clip(spec["output"]["weight"] * got, 0.0, spec["output"]["cap"])
    assert np.abs(point - model.predict(test).to_numpy()).max() < 1e-3
    assert _rmse(point, np.minimum(truth, model.cap)) < 30    # a model, not noise


def test_pickled_rul_model_exports_to_onnx_with_its_feature_names(fleet, tmp_path):
    """Check that a pickled RULModel (refused before: "Cannot export RULModel") exports its
    gbm member to ONNX, with the feature names in the graph's metadata and a sidecar JSON,
    and that onnxruntime gives the gbm member's predictions."""
    import onnx

    from edgewise.edge.export_onnx import OnnxExport

    model, d, test, _ = fleet
    out = tmp_path / "onnx"
    r = _invoke(d / "rul.pkl", "--format", "onnx", "--out", out, "--name", "rul")
    assert r.exit_code == 0, r.stderr
    names = list(model.feature_names_)
    graph = onnx.load(str(out / "rul.onnx"))
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["edgewise.features"]) == names
    assert json.loads((out / "rul_inputs.json").read_text())["features"] == names
    F = model.features(test).to_numpy()
    ox = OnnxExport("rul", "regressor", (out / "rul.onnx").read_bytes(), ["X"])
    assert np.abs(ox.predict(F) - model.core_["gbm"].predict(F)).max() < 1e-3


def test_calibration_csv_with_a_header_is_matched_by_name(fleet, tmp_path):
    """Check that ``--calibration`` takes a CSV with a header row (it had to have none): the
    RULModel's features in another order with an extra column give the same int8 C as the
    headerless rows in input order; a header of raw sensor columns is refused, naming them."""
    model, d, test, _ = fleet
    F = model.features(test)
    F[F.columns[::-1]].to_csv(tmp_path / "named.csv", float_format="%.17g")  # + 'unit' first
    np.savetxt(tmp_path / "plain.csv", F.to_numpy(), delimiter=",", fmt="%.17g")
    F.to_csv(tmp_path / "exact.csv", index=False, float_format="%.17g")
    test.to_csv(tmp_path / "raw.csv", index=False)
    sources = {}
    for csv in ("named", "plain", "exact"):
        r = _invoke(d / "fleet.rul", "--dtype", "int8", "--calibration", tmp_path / f"{csv}.csv",
                    "--out", tmp_path / csv, "--name", "rulq")
        assert r.exit_code == 0, (csv, r.stderr)
        sources[csv] = (tmp_path / csv / "rulq.c").read_text()
    assert sources["named"] == sources["exact"] == sources["plain"]
    assert "int8: RMSE" in r.stderr
    r = _invoke(d / "fleet.rul", "--dtype", "int8", "--calibration", tmp_path / "raw.csv",
                "--out", tmp_path / "raw", "--name", "rulq")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "header row whose columns ('unit', 'cycle', 'op_setting_1'" in r.stderr
    assert "lack 85 of the model's 85 inputs ('sensor_2_mean'" in r.stderr
    assert "gives only each unit's last row" in r.stderr


def test_calibration_header_names_a_pickled_models_inputs(tmp_path):
    """Check that a scikit-learn model fitted on named columns takes a calibration CSV whose
    header names them in another order, and one that lacks a column is refused naming it."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(80, 3)), columns=["flow", "temp", "vib"])
    tree = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, X["flow"] + X["vib"])
    (tmp_path / "t.pkl").write_bytes(pickle.dumps(tree))
    X[["vib", "flow", "temp"]].to_csv(tmp_path / "shuffled.csv", index=False)
    np.savetxt(tmp_path / "plain.csv", X.to_numpy(), delimiter=",", fmt="%.17g")
    X[["vib", "flow"]].to_csv(tmp_path / "short.csv", index=False)
    code = {}
    for csv in ("shuffled", "plain"):
        r = _invoke(tmp_path / "t.pkl", "--dtype", "int8", "--calibration",
                    tmp_path / f"{csv}.csv", "--out", tmp_path / csv, "--name", "tq")
        assert r.exit_code == 0, r.stderr
        code[csv] = (tmp_path / csv / "tq.c").read_text()
    assert code["shuffled"] == code["plain"]
    r = _invoke(tmp_path / "t.pkl", "--dtype", "int8", "--calibration", tmp_path / "short.csv",
                "--out", tmp_path / "short", "--name", "tq")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "columns ('vib', 'flow') lack 1 of the model's 3 inputs ('temp')" in r.stderr


def _histories(sensor: str = "temp") -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [(u, t, 1.0 + np.exp((t - 60) / 15) + rng.normal(0, 0.05))
            for u in range(8) for t in range(60)]
    return pd.DataFrame(rows, columns=["unit", "cycle", sensor])


def test_rul_model_without_gbm_and_damaged_files_are_refused_in_one_line(tmp_path):
    """Check that a RUL model file with only the CNN member is refused naming the members it
    has and what exports, and that a damaged header or a cut body is named as such (both were
    "is not a pickled model")."""
    from edgewise.models.rul import RULModel

    RULModel(models=("cnn",), cnn_epochs=1, calibration_folds=2, window=10,
             cap=40.0).fit(_histories()).save(tmp_path / "cnn.rul")
    data = (tmp_path / "cnn.rul").read_bytes()
    head_end = data.index(b"\n", len(b"EDGEWISE-RUL\n")) + 1
    (tmp_path / "cut.rul").write_bytes(data[: head_end + 40])
    (tmp_path / "head.rul").write_bytes(b"EDGEWISE-RUL\n{not json\n" + data[head_end:])
    cases = {
        "cnn.rul": "it was trained with models=['cnn'] and has no 'gbm' member; only the gbm "
                   "member (LightGBM on window features) exports (to c/float32, c/compact, "
                   "c/int8, onnx/float32)",
        "cut.rul": "is damaged or truncated",
        "head.rul": "has a damaged header",
    }
    for file, message in cases.items():
        r = _invoke(tmp_path / file, "--out", tmp_path / "o")
        assert r.exit_code == 2, (file, r.exception)
        assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert message in r.stderr, r.stderr


def test_feature_names_that_are_not_c_stay_inside_the_header_comment(tmp_path):
    """Check that a sensor named with comment closers and trigraphs (``*/``, ``??/``) is listed
    in the header without ending its comment, and the C still builds under -Werror and
    predicts as the gbm member does."""
    from edgewise.edge import export
    from edgewise.models.rul import RULModel

    odd = "temp */ ??/ é"
    df = _histories(odd)
    model = RULModel(n_estimators=5, calibration_folds=2, window=10, cap=40.0).fit(df)
    c = export(model, format="c", name="odd")
    assert c.feature_names == list(model.feature_names_) and c.feature_names[0] == f"{odd}_mean"
    assert json.loads(c.files["odd_inputs.json"])["features"][0] == f"{odd}_mean"
    F = model.features(df).to_numpy()
    assert np.abs(c.predict(F) - model.core_["gbm"].predict(F)).max() < 1e-3
