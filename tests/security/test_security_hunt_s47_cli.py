"""Security hunt s47, the CLI: every command that changes the data dir's state is audited.

``edgewise repair`` moves an unreplayable DuckDB write-ahead log aside and reopens the
store, losing from it the readings only the log's damaged part held: a change to the
store as ``edgewise store purge`` is one, which is audited (``store.purge``), yet it left
no entry. It is now audited as ``store.repair`` (where the data dir has an audit log; none
is made), and a store with nothing to repair is no change and no entry.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.security import Security
from tests.store.test_duckdb import _corrupt_wal

load_commands()

NO_ENV = {"EDGEWISE_STORE": None, "EDGEWISE_DATA_DIR": None, "EDGEWISE_DETECTOR": None}


def _run(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, list(args), env=NO_ENV)


def _entries(data: Path, action: str) -> list:
    sec = Security(data, read_only=True)
    try:
        return [e for e in sec.audit_log(1000) if e.action == action]
    finally:
        sec.close()


def test_repair_that_moves_a_log_aside_is_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    Security(data).close()  # the data dir's audit log
    _corrupt_wal(data / "edgewise.duckdb")
    res = _run("repair", "--data-dir", str(data), "--json")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["wal_moved_to"]
    [entry] = _entries(data, "store.repair")
    assert entry.actor == "cli"
    assert str(data / "edgewise.duckdb") in entry.target
    assert entry.detail["wal_moved_to"] == report["wal_moved_to"]
    assert entry.detail["lost_rows"] == report["lost_rows"]
    # nothing to repair now: no change, no entry
    res = _run("repair", "--data-dir", str(data), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["wal_moved_to"] is None
    assert len(_entries(data, "store.repair")) == 1
    sec = Security(data, read_only=True)
    try:
        assert sec.verify_audit().ok
    finally:
        sec.close()


def test_repair_makes_no_audit_log(tmp_path: Path) -> None:
    """A store repaired where the data dir has no credentials file: none is made."""
    data = tmp_path / "data"
    data.mkdir()
    _corrupt_wal(data / "edgewise.duckdb")
    res = _run("repair", "--data-dir", str(data), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["wal_moved_to"]
    assert not (data / "security.sqlite").exists()
