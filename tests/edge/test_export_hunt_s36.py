"""Edge exports, session 36's hunt: int8 calibration frames matched by column name, C helper
names a user's name could clash with, the user's own files in --out (and a failed export
leaving the previous set whole), a '#' inside a calibration CSV cell, '/*' in a RUL header
comment, and torch modules with more than one output."""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

from edgewise.edge import export
from edgewise.errors import ExportError

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _run_cli(*args: str):
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, ["export", *args])


def _named_gbr():
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"temp": rng.uniform(15, 35, 300),
                       "pressure": rng.uniform(95000, 105000, 300)})
    y = 2 * df.temp + df.pressure / 1000
    return df, GradientBoostingRegressor(n_estimators=20, random_state=0).fit(df, y)


# -- 1: int8 calibration rows given as a DataFrame -------------------------------------------


def test_int8_calibration_frame_is_matched_by_column_name():
    """Check a calibration frame holding the model's columns in another order (and one more)
    quantises as the frame in the model's order: it was used by position, the two inputs'
    ranges swapped (C off by up to 37.4 on outputs of 125..175) while calibration_rmse, on the
    same mis-ordered rows, said 0.0001."""
    df, m = _named_gbr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ok = export(m, "c", "int8", name="ok", calibration=df)
        swapped = export(m, "c", "int8", name="ok", calibration=df[["pressure", "temp"]])
    assert swapped.files == ok.files
    assert swapped.calibration_rmse == ok.calibration_rmse
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        more = export(m, "c", "int8", name="ok",  # another column, of text: left out
                      calibration=df[["pressure", "temp"]].assign(site="a"))
    assert more.files == ok.files


def test_int8_calibration_frame_lacking_a_model_column_is_refused():
    """Check a frame without one of the model's columns is an ExportError naming it, and
    rows without names (an array, a frame of unnamed columns) are still taken in order."""
    df, m = _named_gbr()
    with pytest.raises(ExportError, match=r"lack 1 of the 2 inputs.*'pressure'"):
        export(m, "c", "int8", calibration=df[["temp"]].assign(p=df.pressure))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = export(m, "c", "int8", calibration=df.to_numpy())
        b = export(m, "c", "int8", calibration=pd.DataFrame(df.to_numpy()))
    assert a.files == b.files


# -- 2: C names ------------------------------------------------------------------------------


@needs_gcc
def test_context_likelihood_c_builds_as_name_tail(tmp_path):
    """Check ContextLikelihood exported as name 'tail' compiles: its static helper tail_score
    clashed with the public tail_score (conflicting types)."""
    from edgewise.detect.context_likelihood import ContextLikelihood

    export(ContextLikelihood(), "c", name="tail").build(tmp_path)


def _generators():
    import torch
    from sklearn.ensemble import GradientBoostingRegressor

    from edgewise.detect.context_likelihood import ContextLikelihood
    from edgewise.detect.mahalanobis import Mahalanobis
    from edgewise.detect.zscore import EWZScore
    from edgewise.edge.export_detectors import export_mahalanobis_c

    X = np.random.default_rng(0).normal(size=(200, 3))
    gbr = GradientBoostingRegressor(n_estimators=3, max_depth=2).fit(X, X[:, 0])
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    yield lambda n: export(EWZScore(), "c", name=n)
    for kw in ({}, {"counter": "never"}, {"slow_window": 0}, {"bins2": 7}):
        yield lambda n, kw=kw: export(ContextLikelihood(**kw), "c", name=n)
    yield lambda n: export_mahalanobis_c(Mahalanobis(), name=n, metrics=["a", "b"])
    yield lambda n: export(gbr, "c", name=n)
    yield lambda n: export(gbr, "c", "int8", name=n, calibration=X)
    yield lambda n: export(gbr, "c", "compact", name=n)
    yield lambda n: export(mlp, "c", name=n)
    yield lambda n: export(mlp, "c", "int8", name=n)


def test_no_c_identifier_of_an_export_is_one_a_users_name_makes():
    """Check no identifier in the generated C (but those made of the name) is one that the
    public symbols of another name make: a public symbol is <name>_<suffix> (or
    <NAME>_<SUFFIX>), so an identifier ending in '_' + such a suffix is what the name before
    it gives (tail_score: the name 'tail' gave two tail_score, and the C did not compile)."""
    ident = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
    for make in _generators():
        text = "".join(make("zq").files.values())
        words = set(ident.findall(text))
        suffixes = {w[3:] for w in words if w.startswith(("zq_", "ZQ_"))}
        fixed = {w for w in words if "zq" not in w.lower()}
        clash = sorted(w for w in fixed for s in suffixes
                       if w.endswith("_" + s) and len(w) > len(s) + 1)
        assert not clash, (make("zq").files.keys(), clash)


# -- 3: the user's files in --out, and failed exports -------------------------------------------


def test_every_file_an_export_writes_is_known_as_its_own(tmp_path):
    """Check each C generator's files carry the mark by which a later export rewrites them
    (a file without it is the user's and refuses the export): saving twice works."""
    from edgewise.edge.export_c import written_by_edgewise

    for i, make in enumerate(_generators()):
        c = make("m")
        paths = c.save(tmp_path / str(i))
        assert all(written_by_edgewise(p) for p in paths), [
            p.name for p in paths if not written_by_edgewise(p)]
        assert c.save(tmp_path / str(i)) == paths


def test_cli_keeps_the_users_own_model_h_and_writes_nothing(tmp_path):
    """Check --out holding the user's own model.h is refused with it untouched and no other
    file written (it was overwritten: only <name>_README.md was guarded); an earlier export
    there is rewritten."""
    own = tmp_path / "fw"
    own.mkdir()
    (own / "model.h").write_text("/* my firmware's model.h */\n")
    r = _run_cli("--detector", "ewzscore", "--out", str(own))
    assert r.exit_code == 2 and "model.h that edgewise export did not write" in r.stderr
    assert (own / "model.h").read_text() == "/* my firmware's model.h */\n"
    assert sorted(p.name for p in own.iterdir()) == ["model.h"]
    again = tmp_path / "again"
    for det in ("ewzscore", "default", "ewzscore"):
        r = _run_cli("--detector", det, "--out", str(again))
        assert r.exit_code == 0, r.stderr
    assert "z-score" in (again / "model.h").read_text()
    assert not [p for p in again.iterdir() if p.name.endswith(".tmp")]


def test_cli_checks_every_file_before_writing_any(tmp_path):
    """Check a folder where model.c goes refuses the export before anything is written: the
    export failed on it (Is a directory) after writing a new model.h beside the old files."""
    from sklearn.tree import DecisionTreeRegressor

    X = np.random.default_rng(0).normal(size=(60, 2))
    tree = DecisionTreeRegressor(max_depth=2).fit(X, X[:, 0])
    (tmp_path / "t.pkl").write_bytes(pickle.dumps(tree))
    out = tmp_path / "pa"
    assert _run_cli(str(tmp_path / "t.pkl"), "--out", str(out)).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / "model.c").unlink()
    (out / "model.c").mkdir()
    r = _run_cli("--detector", "ewzscore", "--out", str(out))
    assert r.exit_code == 2 and "model.c (a folder) that edgewise export did not write" in r.stderr
    assert (out / "model.h").read_bytes() == before["model.h"]


def test_save_refuses_a_foreign_file_it_would_write(tmp_path):
    """Check CExport.save and OnnxExport.save refuse a file of the set they did not write
    (the user's model_host_test.c, <name>_inputs.json, model.onnx), writing nothing, and
    rewrite their own (a torch graph's and an int8 one's too)."""
    pytest.importorskip("onnxruntime")
    import torch

    from edgewise.detect.zscore import EWZScore

    c = export(EWZScore(), "c")
    (tmp_path / "model_host_test.c").write_text("int main(void) { return 0; }\n")
    with pytest.raises(ExportError, match=r"model_host_test\.c that edgewise export did not"):
        c.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_host_test.c"]
    (tmp_path / "model_host_test.c").unlink()
    assert len(c.save(tmp_path)) == 3 and len(c.save(tmp_path)) == 3
    spec = dataclasses.replace(c, files={**c.files, "model_inputs.json": "{}"})
    (tmp_path / "model_inputs.json").write_text('{"mine": 1}')  # a RUL export's sidecar name
    with pytest.raises(ExportError, match=r"model_inputs\.json that edgewise export did not"):
        spec.save(tmp_path)
    assert (tmp_path / "model_inputs.json").read_text() == '{"mine": 1}'
    from edgewise.edge.export_c import written_by_edgewise

    net = torch.nn.Sequential(torch.nn.Linear(3, 1))
    for fmt, dtype in (("onnx", "float32"), ("onnx", "int8")):
        if dtype == "int8":
            # rows of ones calibrate int8 on one point: the export warns so (s47); the rows
            # matter not here, only that the graph written is known as edgewise's own
            with pytest.warns(UserWarning, match="hold one value in all 4 calibration rows"):
                g = export(net, fmt, dtype, calibration=np.ones((4, 3)))
        else:
            g = export(net, fmt, dtype, calibration=np.ones((4, 3)))
        (p,) = g.save(tmp_path / fmt)
        assert written_by_edgewise(p)
        g.save(tmp_path / fmt)  # its own graph: rewritten
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "model.onnx").write_bytes(b"\x08\x08\x12\x07pytorch")
    with pytest.raises(ExportError, match=r"model\.onnx that edgewise export did not write"):
        export(net, "onnx").save(tmp_path / "mine")
    assert (tmp_path / "mine" / "model.onnx").read_bytes() == b"\x08\x08\x12\x07pytorch"


def test_a_write_failing_part_way_leaves_the_previous_set_whole(tmp_path, monkeypatch):
    """Check an export whose writing fails part way (its second file cannot be written; a
    full disk on it) leaves the earlier export's files as they were and no temporary file
    behind: model.h was rewritten before the failure."""
    from edgewise.detect.context_likelihood import ContextLikelihood
    from edgewise.detect.zscore import EWZScore

    export(EWZScore(), "c").save(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    new = export(ContextLikelihood(), "c")
    broken = dataclasses.replace(new, files={**new.files, "model.c": None})  # fails 2nd
    with pytest.raises(TypeError):
        broken.save(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    calls = {"n": 0}
    real = os.fsync

    def fsync(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        export(ContextLikelihood(), "c").save(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# -- 4: '#' in a calibration CSV cell -----------------------------------------------------------


def test_cli_calibration_cell_holding_a_hash_is_not_a_comment(tmp_path):
    """Check a '#' inside a calibration CSV cell ('Line #3', a column left out by name) is
    the cell's text: the rest of the line was cut as a comment and the file refused ('3
    columns in its header row but 1 in its rows'); a whole line starting with '#' is still
    a comment."""
    df, m = _named_gbr()
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(m))
    cal = df.head(40).assign(asset=[f"Line #{i}" for i in range(40)])[["asset", "temp", "pressure"]]
    text = cal.to_csv(index=False)
    head, rest = text.split("\n", 1)
    (tmp_path / "cal.csv").write_text(head + "\n# a comment line\n" + rest)
    r = _run_cli(str(tmp_path / "m.pkl"), "--dtype", "int8", "--calibration",
                 str(tmp_path / "cal.csv"), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.stderr
    assert "on the 40 calibration rows" in r.stderr


# -- 5: '/*' in a RUL header comment --------------------------------------------------------


def test_c_comment_neutralises_comment_openers():
    """Check _c_comment leaves no '/*' nor '*/' in any text ('line/*/temp' put '/*' inside
    the header comment: -Werror=comment, in the README's gcc flags, refused it)."""
    from edgewise.edge.export_rul import _c_comment

    for t in ("line/*/temp", "a*/b", "/*/*/", "*/*", "x/**/y", "//*", "**//"):
        out = _c_comment(t)
        assert "/*" not in out and "*/" not in out, (t, out)


@needs_gcc
def test_rul_export_with_a_sensor_named_with_comment_opener_builds(tmp_path):
    """Check a RULModel whose sensor column is named 'line/*/temp' exports to C that builds
    with the README's flags."""
    from edgewise.models.rul import RULModel

    rng = np.random.default_rng(0)
    rows = [(u, t, 1.0 + np.exp((t - 60) / 15) + rng.normal(0, 0.05), rng.normal())
            for u in range(8) for t in range(60)]
    df = pd.DataFrame(rows, columns=["unit", "cycle", "line/*/temp", "vib"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = RULModel(n_estimators=5, calibration_folds=2, window=10, cap=40.0).fit(df)
    c = export(model, "c", name="rul")
    c.build(tmp_path / "b")
    assert len(c.save(tmp_path / "o")) == 4 and len(c.save(tmp_path / "o")) == 4  # rewritten
    feats = model.features(df[df.unit < 2])
    got = c.predict(feats.to_numpy())
    assert got.shape == (2,) and np.all(np.isfinite(got))


# -- 6: torch modules with more than one output -----------------------------------------------


def test_torch_module_with_two_outputs_is_refused_naming_its_shape():
    """Check a torch module giving two values per row (or two outputs) is an ExportError
    naming the output shape and what exports: it exported, then predict() raised a raw
    ValueError (cannot reshape) and the CLI's host test printed only the first value."""
    pytest.importorskip("onnxruntime")
    import torch

    with pytest.raises(ExportError, match=r"1 output of shape \(N, 2\).*\(N,\) or \(N, 1\)"):
        export(torch.nn.Sequential(torch.nn.Linear(3, 2)), "onnx")

    class Two(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(3, 1)

        def forward(self, x):
            return self.lin(x), self.lin(x) * 2

    with pytest.raises(ExportError, match=r"2 outputs of shape \(N, 1\), \(N, 1\)"):
        export(Two(), "onnx", calibration=np.ones((2, 3)))
    one = export(torch.nn.Sequential(torch.nn.Linear(3, 1)), "onnx")
    assert one.predict(np.ones((4, 3))).shape == (4,)
