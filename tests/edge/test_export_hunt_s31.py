"""Edge exports, session 31's hunt: LightGBM options the tree table cannot hold (reg_sqrt,
linear_tree) or held wrong (boosting_type='rf'), multi-output trees, the shape a C
detector's score_many takes, a torch module whose first layer is a Conv1d, compact and int8
leaves with a large output offset, the int8 MLP C on large finite inputs, and the CLI:
MODEL_FILE with --detector, calibration CSVs with text columns, the ONNX README's usage
line, a README.md of the user's in --out and --capacity."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

from edgewise.edge import export
from edgewise.errors import ExportError


def _run_cli(*args: str):
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, ["export", *args])


def _xy(n: int = 400, offset: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    return X, offset + 5 * X[:, 0] + X[:, 1] ** 2


# -- LightGBM options ------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "named"), [({"reg_sqrt": True}, "reg_sqrt=True"),
                                           ({"linear_tree": True}, "linear_tree=True")])
def test_lightgbm_option_the_table_cannot_hold_is_refused(kw, named):
    """Check reg_sqrt (it predicts the square of the trees' sum) and linear_tree (linear
    leaves) are refused naming the option: their C and ONNX strayed by 23.9 and 10.0."""
    lgb = pytest.importorskip("lightgbm")
    X, y = _xy()
    m = lgb.LGBMRegressor(n_estimators=10, verbose=-1, **kw).fit(X, y)
    for fmt in ("c", "onnx"):
        with pytest.raises(ExportError, match=named):
            export(m, format=fmt, name="m")


def test_lightgbm_random_forest_is_averaged():
    """Check boosting_type='rf' exports the mean of its trees (LightGBM's average_output):
    the table added them, 571 off on a y of about 20."""
    lgb = pytest.importorskip("lightgbm")
    from edgewise.edge.compress import tree_table

    X, y = _xy()
    m = lgb.LGBMRegressor(boosting_type="rf", n_estimators=20, bagging_freq=1,
                          bagging_fraction=0.8, verbose=-1).fit(X, y)
    assert np.abs(tree_table(m).predict(X) - m.predict(X)).max() < 1e-6
    pytest.importorskip("onnxruntime")
    assert np.abs(export(m, format="onnx", name="rf").predict(X) - m.predict(X)).max() < 1e-3


# -- multi-output scikit-learn trees -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["tree", "forest"])
def test_multi_output_trees_are_refused(kind):
    """Check a tree or forest fitted on two output columns is refused: its export predicted
    the first output alone, with no word of the second."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.tree import DecisionTreeRegressor

    X, y = _xy()
    m = (DecisionTreeRegressor(max_depth=3) if kind == "tree"
         else RandomForestRegressor(3, max_depth=3, random_state=0)).fit(X, np.c_[y, -y])
    with pytest.raises(ExportError, match="n_outputs_=2"):
        export(m, format="c", name="m")


# -- a C detector's score_many: the shape it takes ---------------------------------------------


def test_c_detector_score_many_checks_the_shape():
    """Check a Mahalanobis C export's score_many refuses rows of the wrong width and a 1-D
    array (the C read rows * 64 doubles from 200,000: a segfault), and an EWZScore's refuses
    2-D rows, each naming the shape; nothing is compiled to refuse them."""
    from edgewise.detect.mahalanobis import Mahalanobis
    from edgewise.detect.zscore import EWZScore
    from edgewise.edge.export_detectors import export_mahalanobis_c

    c = export_mahalanobis_c(Mahalanobis(warmup=2), name="mh",
                             metrics=[f"m{i}" for i in range(64)])
    with pytest.raises(ExportError, match=r"shape \(rows, 64\)\. Got shape \(5, 3\)"):
        c.score_many(np.ones((5, 3)))
    with pytest.raises(ExportError, match=r"Got shape \(200000,\)"):
        c.score_many(np.arange(200000.0))
    with pytest.raises(ExportError, match=r"shape \(n,\).*Got shape \(4, 2\)"):
        export(EWZScore(), format="c", name="ewz").score_many(np.ones((4, 2)))
    assert c._lib is None


# -- torch: a Conv1d first ---------------------------------------------------------------------


def test_torch_conv_first_needs_calibration_of_its_input_shape():
    """Check a torch module whose first layer is a Conv1d is refused with an ExportError that
    says to pass calibration rows of its input shape (it raised torch's RuntimeError, the
    Linear's width taken for the input's), and exports with them."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 30, 1))
    with pytest.raises(ExportError, match=r"first layer is Conv1d.*calibration=X"):
        export(net, format="onnx", name="cnn")
    X = np.random.default_rng(0).normal(size=(5, 2, 32)).astype(np.float32)
    g = export(net, format="onnx", name="cnn", calibration=X)
    with torch.no_grad():
        ref = net(torch.from_numpy(X)).numpy()[:, 0]
    assert np.abs(g.predict(X) - ref).max() < 1e-5


# -- compact and int8 leaves with a large output offset ----------------------------------------


def test_compact_and_int8_leaves_keep_precision_under_a_large_offset():
    """Check a forest of y = 101325 + x0 (pressure in Pa) keeps its precision in the compact
    C: each tree's leaves are centred, the offset in the base. Its int16 leaves stepped by
    0.62 and predictions strayed by 1.26, over the output's std (0.97), with no warning; the
    int8 leaves stepped the same."""
    from sklearn.ensemble import RandomForestRegressor

    from edgewise.edge.compress import quantize_trees, tree_table
    from edgewise.edge.export_compact import compact_reference

    X, _ = _xy(500)
    y = 101325 + X[:, 0]
    m = RandomForestRegressor(5, max_depth=4, random_state=0).fit(X, y)
    py = m.predict(X)
    assert np.abs(compact_reference(tree_table(m)).predict(X) - py).max() < 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = export(m, format="c", dtype="compact", name="pa")
    assert np.abs(c.predict(X) - py).max() < 0.02  # float32 at 101325: steps of 0.0078
    assert quantize_trees(tree_table(m), X).leaf_scale < 1e-3


def test_compact_warns_when_a_few_leaves_set_the_step():
    """Check the compact export warns when its int16 rounding bound is large against the
    leaves' spread, as int8 warns against the calibration rows' output std: one tree with
    a leaf far from its others sets a step that 2,000 small trees add up."""
    from edgewise.edge.compress import TreeTable
    from edgewise.edge.export_compact import export_trees_compact

    n_leaves, n_small = 200, 2000
    # a comb: inner node 2k splits x0 at k, its left child 2k+1 a leaf, its right the next
    inner = np.arange(0, 2 * (n_leaves - 1), 2)
    feat = np.full(2 * n_leaves - 1, -1)
    feat[inner] = 0
    thr = np.zeros(2 * n_leaves - 1)
    thr[inner] = np.arange(n_leaves - 1)
    right = np.full(2 * n_leaves - 1, -1)
    right[inner] = inner + 2
    val = np.zeros(2 * n_leaves - 1)
    val[1], val[-1] = -1e4, 1e4
    small_f, small_v = np.array([0, -1, -1]), np.array([0.0, -1e-3, 1e-3])
    nb = len(feat)
    roots = np.r_[0, nb + 3 * np.arange(n_small)]
    t = TreeTable(np.r_[feat, np.tile(small_f, n_small)].astype(np.int32),
                  np.r_[thr, np.zeros(3 * n_small)],
                  np.r_[right, np.tile([2, -1, -1], n_small) + np.repeat(roots[1:], 3)
                        * np.tile([1, 0, 0], n_small)].astype(np.int32),
                  np.r_[val, np.tile(small_v, n_small)], np.zeros(nb + 3 * n_small, bool),
                  np.zeros(nb + 3 * n_small, np.int32), roots.astype(np.int32), 0.0, 1)
    assert np.allclose(t.predict(np.array([[-1.0], [1e9]])), [-1e4 - 2, 1e4 + 2])
    with pytest.warns(UserWarning, match=r"int16 leaves .* move a prediction by up to"):
        export_trees_compact(t, name="comb")


@pytest.mark.parametrize("kind", ["tree", "forest"])
def test_compact_is_silent_and_states_0_when_every_leaf_code_is_0(kind):
    """Check trees whose leaves are all equal (a constant target: every leaf code 0 after
    centring) export exactly with no warning and a bound of 0 in the header: the scale of 1
    standing in for a spread of 0 stated a bound of n_trees / 2 and warned against it."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.tree import DecisionTreeRegressor

    from edgewise.edge.compress import tree_table
    from edgewise.edge.export_compact import compact_reference, export_trees_compact

    X, _ = _xy(200)
    y = np.full(len(X), 101325.0)
    m = (DecisionTreeRegressor() if kind == "tree"
         else RandomForestRegressor(4, random_state=0)).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = export_trees_compact(tree_table(m), name="flat")
    assert "by at most 0. */" in c.files["flat.h"], c.files["flat.h"]
    assert np.array_equal(compact_reference(tree_table(m)).predict(X), m.predict(X))


# -- the int8 MLP C on large finite inputs ----------------------------------------------------


def test_int8_mlp_c_keeps_large_finite_inputs_finite():
    """Check the int8 MLP C scales each weight before it meets an input: summing q * x
    first turned a finite 1e38 input into inf and NaN (195 of 200 rows) where torch and the
    float32 C give numbers; the C still matches mlp_reference."""
    torch = pytest.importorskip("torch")
    from edgewise.edge.export_c import mlp_layers, mlp_reference

    torch.manual_seed(0)
    nf = 200
    net = torch.nn.Sequential(torch.nn.Linear(nf, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4),
                              torch.nn.Tanh(), torch.nn.Linear(4, 1))
    R = np.zeros((nf, nf))
    np.fill_diagonal(R, 1e38)
    X = np.r_[R, np.random.default_rng(0).normal(size=(50, nf))]
    with torch.no_grad():
        assert np.isfinite(net(torch.tensor(X, dtype=torch.float32)).numpy()).all()
    q = export(net, format="c", dtype="int8", name="mlpq")
    got = q.predict(X)
    assert np.isfinite(got).all()
    ref = mlp_reference(mlp_layers(net), X, int8=True)
    assert np.abs(got[nf:] - ref[nf:]).max() < 1e-5
    assert np.abs(got[:nf] - ref[:nf]).max() < 1e-3


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_refuses_model_file_with_detector(tmp_path):
    """Check MODEL_FILE and --detector together are refused in one line: the model file was
    silently ignored and a fresh detector exported."""
    from sklearn.tree import DecisionTreeRegressor

    X, y = _xy()
    (tmp_path / "t.pkl").write_bytes(pickle.dumps(DecisionTreeRegressor(max_depth=2).fit(X, y)))
    r = _run_cli(str(tmp_path / "t.pkl"), "--detector", "ewzscore", "--out",
                 str(tmp_path / "o"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "not both" in r.stderr and not (tmp_path / "o").exists()


def test_cli_calibration_csv_with_text_columns_is_matched_by_name(tmp_path):
    """Check a calibration CSV as 'edgewise readings export' writes it (time, device, then
    the metrics) is read by the model's columns: the text columns were parsed and refused.
    The int8 C equals that of plain rows; rows wider than the header are still refused."""
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(80, 2)), columns=["temp", "flow"])
    tree = DecisionTreeRegressor(max_depth=3, random_state=0).fit(X, X["temp"] - X["flow"])
    (tmp_path / "t.pkl").write_bytes(pickle.dumps(tree))
    wide = X.assign(time=pd.date_range("2026-01-01", periods=80, freq="min", tz="UTC")
                    .strftime("%Y-%m-%dT%H:%M:%SZ"), device="pump-7")
    wide[["time", "device", "flow", "temp"]].to_csv(tmp_path / "readings.csv", index=False)
    np.savetxt(tmp_path / "plain.csv", X.to_numpy(), delimiter=",", fmt="%.17g")
    code = {}
    for csv in ("readings", "plain"):
        r = _run_cli(str(tmp_path / "t.pkl"), "--dtype", "int8", "--calibration",
                     str(tmp_path / f"{csv}.csv"), "--out", str(tmp_path / csv), "--name", "tq")
        assert r.exit_code == 0, r.stderr
        code[csv] = (tmp_path / csv / "tq.c").read_text()
    assert code["readings"] == code["plain"]
    (tmp_path / "bad.csv").write_text("temp,flow\n1,2,3\n4,5,6\n")
    r = _run_cli(str(tmp_path / "t.pkl"), "--dtype", "int8", "--calibration",
                 str(tmp_path / "bad.csv"), "--out", str(tmp_path / "bad"), "--name", "tq")
    assert r.exit_code == 2 and "2 columns in its header row but 3 in its rows" in r.stderr


def test_cli_onnx_readme_feeds_as_many_numbers_as_inputs(tmp_path):
    """Check the ONNX README's usage line prints one row of the model's inputs (it always
    printed '1 2 3'), for 5 inputs and for 12."""
    pytest.importorskip("onnxruntime")
    from sklearn.tree import DecisionTreeRegressor

    rng = np.random.default_rng(0)
    for nf, line in ((5, "printf '1 2 3 4 5' | python g_host_test.py"),
                     (12, "seq 12 | python g_host_test.py")):
        X = rng.normal(size=(60, nf))
        (tmp_path / "t.pkl").write_bytes(
            pickle.dumps(DecisionTreeRegressor(max_depth=2).fit(X, X[:, 0])))
        out = tmp_path / f"o{nf}"
        r = _run_cli(str(tmp_path / "t.pkl"), "--format", "onnx", "--out", str(out),
                     "--name", "g")
        assert r.exit_code == 0, r.stderr
        assert line in (out / "g_README.md").read_text()


def test_cli_keeps_a_readme_it_did_not_write(tmp_path):
    """Check --out holding the user's <name>_README.md (or <name>_host_test.py) is refused
    with the file untouched (``--out .`` overwrote a project's README), while a folder of an earlier
    export is written again."""
    own = tmp_path / "proj"
    own.mkdir()
    (own / "ewz_README.md").write_text("# my project\n")
    r = _run_cli("--detector", "ewzscore", "--out", str(own), "--name", "ewz")
    assert r.exit_code == 2 and "ewz_README.md that edgewise export did not write" in r.stderr
    assert (own / "ewz_README.md").read_text() == "# my project\n"
    assert not (own / "ewz.c").exists()
    pytest.importorskip("onnxruntime")
    mine = tmp_path / "onnx"
    mine.mkdir()
    (mine / "model_host_test.py").write_text("print('mine')\n")
    r = _run_cli("--detector", "ewzscore", "--format", "onnx", "--out", str(mine))
    assert r.exit_code == 2 and "model_host_test.py that edgewise export did not write" in r.stderr
    assert (mine / "model_host_test.py").read_text() == "print('mine')\n"
    again = tmp_path / "again"
    for fmt in ("onnx", "onnx", "c"):
        r = _run_cli("--detector", "ewzscore", "--format", fmt, "--out", str(again))
        assert r.exit_code == 0, r.stderr


def test_cli_capacity_exports_a_learned_context_likelihood(tmp_path, shared_data):
    """Check a learned ContextLikelihood too big for the default key set is refused naming
    --capacity, and exports with it (the message said 'Export with capacity >= N', which the
    CLI had no way to give); --capacity out of 16..65535 is refused in one line."""
    from edgewise.detect import default_detector

    x = pd.read_csv(shared_data / "nab" / "data" / "realAWSCloudwatch"
                    / "ec2_network_in_5abac7.csv")["value"].to_numpy(float)
    det = default_detector()
    det.score_many(x)
    need = int(np.count_nonzero(det.table_)) + 1
    assert need > 689
    (tmp_path / "cl.pkl").write_bytes(pickle.dumps(det))
    r = _run_cli(str(tmp_path / "cl.pkl"), "--out", str(tmp_path / "o"), "--name", "cl")
    assert r.exit_code == 2 and f"--capacity {need}" in r.stderr, r.stderr
    r = _run_cli(str(tmp_path / "cl.pkl"), "--out", str(tmp_path / "o"), "--name", "cl",
                 "--capacity", str(need))
    assert r.exit_code == 0, r.stderr
    assert f"#define CL_CAPACITY {need}" in (tmp_path / "o" / "cl.h").read_text()
    r = _run_cli(str(tmp_path / "cl.pkl"), "--out", str(tmp_path / "o"), "--capacity", "8")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "16..65535" in r.stderr


def test_pruning_a_forest_keeps_the_mean_of_the_trees_kept() -> None:
    """Check prune_trees(max_trees=k) of a random forest predicts the mean of its first k
    trees (it predicted k/n of it: a forest of y ~ 10 pruned to half its trees gave ~5)."""
    from sklearn.ensemble import RandomForestRegressor

    from edgewise.edge.compress import prune_trees, tree_table

    X = np.random.default_rng(0).normal(size=(300, 3))
    m = RandomForestRegressor(10, max_depth=4, random_state=0).fit(X, X[:, 0] + 10.0)
    half = prune_trees(tree_table(m), max_trees=5)
    want = np.mean([e.predict(X[:20]) for e in m.estimators_[:5]], axis=0)
    np.testing.assert_allclose(half.predict(X[:20]), want, rtol=1e-12)
    np.testing.assert_allclose(prune_trees(tree_table(m)).predict(X[:20]), m.predict(X[:20]),
                               rtol=1e-12)
