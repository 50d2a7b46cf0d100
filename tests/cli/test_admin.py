"""``edgewise device …`` and ``edgewise token …`` against a real data directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.label.store import LabelStore
from edgewise.security import Security
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.conftest import REPO

load_commands()


@pytest.fixture
def run(data_dir: Path):
    runner = CliRunner(mix_stderr=False)

    def invoke(*args: str, env: dict | None = None):
        return runner.invoke(app, [*args, "--data-dir", str(data_dir)], env=env)

    return invoke


def _seed(data_dir: Path, device: str) -> str:
    url = f"duckdb:///{data_dir / 'edgewise.duckdb'}"
    store = open_store(url)
    ts = (int(time.time()) - 60) * 10**9
    store.append([Reading(device, "a", ts + i * 10**9, float(i), i + 1) for i in range(5)],
                 {device: range(1, 6)})
    store.close()
    return url


def test_device_add_json_prints_a_working_secret(run, data_dir: Path) -> None:
    """Check --json prints {"id", "secret"} and the secret authenticates."""
    res = run("device", "add", "pump-1", "--json")
    assert res.exit_code == 0, res.output + res.stderr
    out = json.loads(res.stdout)
    assert set(out) == {"id", "secret", "groups"} and out["groups"] == [] and out["id"] == "pump-1"
    sec = Security(data_dir)
    sec.authenticate_device("pump-1", out["secret"])
    assert sec.audit_log(1)[0].action == "device.add"
    sec.close()


def test_device_add_plain_and_duplicate(run) -> None:
    """Check the plain form prints the secret once, and a duplicate fails with one line."""
    res = run("device", "add", "pump-1")
    assert res.exit_code == 0 and res.stdout.startswith("device pump-1\nsecret ")
    assert "shown only now" in res.stderr
    res = run("device", "add", "pump-1")
    assert res.exit_code == 2
    assert res.stderr.strip() == ("error: Device 'pump-1' already exists; delete it first or "
                                  "pick another name.")


def test_device_list(run) -> None:
    """Check list shows devices and never secrets."""
    secret = json.loads(run("device", "add", "pump-1", "--json").stdout)["secret"]
    run("device", "add", "pump-2")
    res = run("device", "list", "--json")
    assert [d["id"] for d in json.loads(res.stdout)] == ["pump-1", "pump-2"]
    assert secret not in res.stdout
    assert run("device", "list").stdout.startswith("pump-1\tpump-1\t")


def test_token_create(run, data_dir: Path) -> None:
    """Check a token with a role is made, printed once, and a bad role is refused."""
    res = run("token", "create", "--role", "operator", "--name", "ops", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    sec = Security(data_dir)
    who = sec.authenticate_token(out["token"])
    assert (who.role, who.name) == ("operator", "ops")
    assert out["id"] == who.token_id  # what 'token revoke --id' takes
    sec.close()
    res = run("token", "create", "--role", "viewer", "--json")
    assert json.loads(res.stdout)["name"] == "viewer"  # as stored: the role by default
    res = run("token", "create", "--role", "root")
    assert res.exit_code == 2
    assert "error: --role must be one of admin, operator, viewer. Got 'root'." in res.stderr


def test_data_dir_from_environment(data_dir: Path) -> None:
    """Check EDGEWISE_DATA_DIR is used when --data-dir is not given."""
    res = CliRunner(mix_stderr=False).invoke(app, ["device", "add", "pump-9"],
                                             env={"EDGEWISE_DATA_DIR": str(data_dir)})
    assert res.exit_code == 0, res.stderr
    assert Security(data_dir).has_device("pump-9")


def test_device_delete_removes_credentials_and_data(run, data_dir: Path) -> None:
    """Check delete revokes the device and deletes its stored readings and labels."""
    run("device", "add", "pump-1")
    url = _seed(data_dir, "pump-1")
    with LabelStore(data_dir) as labels:
        labels.add("pump-1", 0, 10, "anomaly", who="test")
        labels.add("pump-2", 0, 10, "normal", who="test")
    res = run("device", "delete", "pump-1", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["id"], out["credentials_deleted"]) == ("pump-1", True)
    assert out["rows_deleted"] >= 5
    assert out["labels_deleted"] == 1
    with LabelStore(data_dir) as labels:  # only the deleted device's labels go
        assert labels.labels("pump-1") == [] and len(labels.labels("pump-2")) == 1
    store = open_store(url)
    assert store.query("pump-1") == []
    store.close()
    assert not Security(data_dir).has_device("pump-1")
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 2
    assert "not registered and has no stored data" in res.stderr


def test_device_delete_removes_the_label_model_files(run, data_dir: Path) -> None:
    """Check 'device delete' deletes the device's label model files ('train --with-labels'
    wrote them; they hold features of its data) and counts them, leaving other devices'
    (even one whose id extends this one) and a device id such as '*' deleting nothing."""
    from tests.server.test_devices import _train_label_models

    run("device", "add", "pump-1")
    _seed(data_dir, "pump-1")
    mine = _train_label_models(data_dir, "pump-1")
    other = _train_label_models(data_dir, "pump-1-v2", 1)
    res = run("device", "delete", "*", "--json")
    assert res.exit_code == 2 and all(Path(p).exists() for p in mine + other)
    res = run("device", "delete", "pump-1", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["label_models_deleted"] == 2
    assert not any(Path(p).exists() for p in mine) and Path(other[0]).exists()
    run("device", "add", "pump-1")
    _seed(data_dir, "pump-1")
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 0 and "label model files" not in res.stdout, res.stdout
    _train_label_models(data_dir, "pump-1", 1)
    res = run("device", "delete", "pump-1")
    assert "; 1 model files deleted (label, transfer, RUL and forecast models its data trained)" \
        in res.stdout, \
        res.stdout


def test_device_delete_while_the_store_is_held_by_another_process(run, data_dir: Path) -> None:
    """Check that with the DuckDB store locked, credentials are revoked, data kept, exit 1.

    Run again once the other process is gone, the data of the unregistered device goes too.
    """
    run("device", "add", "pump-1")
    url = _seed(data_dir, "pump-1")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         ("import sys, time; from edgewise.store import open_store; "
          "s = open_store(sys.argv[1]); print('ready', flush=True); time.sleep(120)"), url],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        res = run("device", "delete", "pump-1")
        assert res.exit_code == 1
        assert "credentials revoked" in res.stderr
        assert "DELETE /v1/devices/pump-1" in res.stderr
        assert not Security(data_dir).has_device("pump-1")
    finally:
        holder.kill()
        holder.wait(10)
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 0, res.stderr
    m = re.fullmatch(r"device pump-1: was not registered; (\d+) stored rows and 0 labels "
                     r"deleted\n", res.stdout)
    assert m and int(m.group(1)) >= 5, res.stdout
    store = open_store(url)
    assert store.query("pump-1") == []
    store.close()
