"""``edgewise device delete`` while another writer (an ``edgewise label import``) holds
``labels.sqlite`` past its busy timeout.

The command revoked the credentials and deleted the readings, then printed only the label
store's "no label was written: retry once it is done" (exit 1): nothing said that the
credentials were revoked and the readings deleted, or that rerunning ``device delete``
finishes it; ``--json`` printed no JSON; and no ``device.delete_data`` audit entry recorded
the deleted rows (the rerun audited ``rows: 0``). It now says what was done and what to
run, as ``DELETE /v1/devices/ID``'s 503 does, and audits the rows with ``labels_pending``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from edgewise.cli import app, load_commands
from edgewise.label.store import LabelStore
from edgewise.security import Security
from edgewise.store import open_store
from edgewise.telemetry import Reading

load_commands()

T0 = 1_700_000_000 * 10**9
ROWS = 5


@pytest.fixture
def run(data_dir: Path) -> Callable[..., Result]:
    runner = CliRunner(mix_stderr=False)

    def invoke(*args: str) -> Result:
        return runner.invoke(app, [*args, "--data-dir", str(data_dir)], env={})

    return invoke


def _pump_with_readings(run: Callable[..., Result], data_dir: Path) -> None:
    """Device ``pump-1`` registered, with ``ROWS`` readings in the data dir's DuckDB store."""
    assert run("device", "add", "pump-1").exit_code == 0
    st = open_store(f"duckdb://{data_dir / 'edgewise.duckdb'}")
    try:
        st.append([Reading("pump-1", "t", T0 + i, float(i), i + 1) for i in range(ROWS)],
                  {"pump-1": range(1, ROWS + 1)})
    finally:
        st.close()


@pytest.fixture
def held_labels(data_dir: Path, run: Callable[..., Result],
                monkeypatch: pytest.MonkeyPatch) -> Iterator[sqlite3.Connection]:
    """Device ``pump-1`` with ``ROWS`` readings in the data dir's DuckDB store and one label,
    and ``labels.sqlite``'s write lock held by another connection (as a ``label import``
    would) while the test runs (or until it rolls the holder back); the label store's busy
    timeout cut to 0.2 s."""
    _pump_with_readings(run, data_dir)
    labels = LabelStore(data_dir)
    labels.add("pump-1", T0, T0 + 10**9, "anomaly")
    labels.close()
    real_init = LabelStore.__init__

    def quick(self: LabelStore, *a: object, **k: object) -> None:
        k["timeout_s"] = 0.2
        real_init(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(LabelStore, "__init__", quick)
    other = sqlite3.connect(data_dir / "labels.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


def _deletions(data_dir: Path) -> list[dict[str, object]]:
    sec = Security(data_dir)
    try:
        return [e.detail for e in reversed(sec.audit_log(limit=1000))
                if e.action == "device.delete_data" and e.target == "pump-1"]
    finally:
        sec.close()


def test_busy_labels_say_what_was_done_and_audit_the_rows(
        run: Callable[..., Result], data_dir: Path, held_labels: sqlite3.Connection) -> None:
    """Check the line names the revoked credentials, the deleted rows, the kept labels and
    the rerun, exit 1; and a ``device.delete_data`` entry records the rows, labels pending."""
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 1, res.stderr
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1, err
    found = re.search(r"credentials revoked; (\d+) stored rows deleted;", err)
    assert found and int(found[1]) >= ROWS, err  # the readings, and the rows beside them
    assert "labels NOT deleted" in err and "held by another writer" in err, err
    assert f"edgewise device delete pump-1 --data-dir {data_dir}" in err, err
    assert "no label was written" not in err, err
    assert _deletions(data_dir) == [{"rows": int(found[1]), "labels_pending": True}]


def test_busy_labels_json_says_the_same(
        run: Callable[..., Result], data_dir: Path, held_labels: sqlite3.Connection) -> None:
    """Check ``--json`` prints one JSON object: rows deleted, labels pending, data kept."""
    res = run("device", "delete", "pump-1", "--json")
    assert res.exit_code == 1, res.stderr
    out = json.loads(res.stdout)
    assert out["id"] == "pump-1" and out["credentials_deleted"] is True
    assert out["rows_deleted"] >= ROWS and out["labels_deleted"] is None
    assert out["labels_pending"] is True and out["data_kept"] is True
    assert "held by another writer" in out["error"]


def test_a_rerun_once_released_deletes_the_labels(
        run: Callable[..., Result], data_dir: Path, held_labels: sqlite3.Connection) -> None:
    """Check the id stays refused after the busy deletion, and the rerun the line names,
    once the other writer is done, deletes the label, audits it and frees the id."""
    assert run("device", "delete", "pump-1").exit_code == 1
    assert run("device", "add", "pump-1").exit_code != 0  # labels kept: the id refused
    held_labels.execute("ROLLBACK")
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 0, res.stderr
    assert "0 stored rows and 1 labels deleted" in res.stdout, res.stdout
    assert _deletions(data_dir)[-1]["labels"] == 1
    assert run("device", "add", "pump-1").exit_code == 0


def test_the_deletion_is_audited_as_asked_for_before_anything_goes(
        run: Callable[..., Result], data_dir: Path) -> None:
    """Check ``device delete`` writes ``device.delete_data.requested`` before it revokes or
    deletes anything, as ``DELETE /v1/devices/ID`` does: the data deletion takes too long
    to hold the audit log's lock, so a failure at its end leaves the request in the log."""
    _pump_with_readings(run, data_dir)
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 0, res.stderr
    sec = Security(data_dir)
    try:
        actions = [e.action for e in reversed(sec.audit_log(limit=1000))
                   if e.target == "pump-1"]
    finally:
        sec.close()
    assert actions[:3] == ["device.add", "device.delete_data.requested", "device.delete"], (
        actions)
    assert actions[-1] == "device.delete_data", actions
