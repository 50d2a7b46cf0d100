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
