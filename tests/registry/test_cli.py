"""The registry CLI, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import REPO


def _cli(*args, data_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), EDGEWISE_DATA_DIR=str(data_dir))
    return subprocess.run([sys.executable, "-m", "edgewise", "registry", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_publish_rollout_list(data_dir, tmp_path):
    """Check that publish, rollout and list work end to end from the command line."""
    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph" * 10)
    r = _cli("publish", "ewz", "1.0.0", str(model), "--trained-on", "NAB", "--metric", "auc=0.7",
             data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    r = _cli("rollout", "ewz", "1.0.0", "group:all", data_dir=data_dir)
    assert r.returncode == 0 and "release 1" in r.stdout, r.stderr
    out = json.loads(_cli("list", "--json", data_dir=data_dir).stdout)
    assert out["versions"][0]["format"] == "onnx" and out["versions"][0]["metrics"] == {"auc": 0.7}
    assert out["releases"][0]["target"] == "group:all"
    r = _cli("rollout", "ewz", "1.0.0", "pump-1", data_dir=data_dir)
    assert r.returncode != 0 and "'device:<id>' or 'group:<name>'" in r.stderr


def test_publish_reads_pkl_as_pickle_and_refuses_unknown_formats(data_dir, tmp_path):
    """Check a .pkl file is recorded as 'pickle', what the agent runs (it was 'pkl', which every
    agent refused), and an unknown format is refused at publish with one line naming them."""
    model = tmp_path / "ewz.pkl"
    model.write_bytes(b"pickled detector")
    assert _cli("publish", "ewz", "1.1.0", str(model), data_dir=data_dir).returncode == 0
    other = tmp_path / "ewz.pickle"
    other.write_bytes(b"another")
    assert _cli("publish", "ewz", "1.2.0", str(other), data_dir=data_dir).returncode == 0
    out = json.loads(_cli("list", "--json", data_dir=data_dir).stdout)
    assert [v["format"] for v in out["versions"]] == ["pickle", "pickle"]
    for args in (("--format", "pkl2"), ()):
        path = model if args else tmp_path / "ewz.txt"
        path.write_bytes(b"x")
        r = _cli("publish", "ewz", "9.0.0", str(path), *args, data_dir=data_dir)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "not one of bin, c, npz, npz-state-dict, onnx, pickle" in r.stderr
    assert len(json.loads(_cli("list", "--json", data_dir=data_dir).stdout)["versions"]) == 2


def test_rollout_errors_are_one_line(data_dir, tmp_path):
    """Check a version that is not published, a bad target, and an expiry that is not a
    lifetime (0, negative: an already-expired release; nan; 1e300) each fail with one line
    and sign nothing (they raised tracebacks, and -1 or 0 signed an expired release)."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    model = tmp_path / "ewz.pkl"
    model.write_bytes(b"pickled detector")
    runner = CliRunner(mix_stderr=False)

    def run(*args):
        return runner.invoke(app, ["registry", *args, "--data-dir", str(data_dir)])

    assert run("publish", "ewz", "1.1.0", str(model)).exit_code == 0
    cases = {("9.9.9", "device:pump-7"): "Model 'ewz' has no published version '9.9.9'. "
             "Published versions of 'ewz': 1.1.0",
             ("1.1.0", "pump-7"): "'device:<id>' or 'group:<name>'"}
    for days in ("-1", "0", "nan", "1e300", "3651"):
        cases[("1.1.0", "device:pump-7", "--expires-days", days)] = (
            "--expires-days must be a number of days in (0, 3650]. Got ")
    for args, message in cases.items():
        r = run("rollout", "ewz", *args)
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, (args, r.stderr, r.exception)
        assert r.stderr.startswith("error: ") and message in r.stderr, r.stderr
    out = json.loads(run("list", "--json").stdout)
    assert out["releases"] == []
    from edgewise.security import Security

    sec = Security(data_dir)  # a device target must be a registered device
    sec.add_device("pump-7")
    sec.close()
    assert run("rollout", "ewz", "1.1.0", "device:pump-7", "--expires-days", "3650").exit_code == 0
