"""``edgewise device delete`` and ``store purge``: what a device's deletion left behind
without saying so.

* The write-ahead log ``edgewise repair`` moved aside (``edgewise.duckdb.wal.broken-<time>``)
  stays beside the store with the readings it logged; neither deletion nor purge named it.
* With an external broker (the data dir has the gateway's ``mqtt_client_id``) and no
  ``--mqtt``, the device's retained ack was silently kept: a device registered again under
  the id is told the old watermark.
* The device's held alerts stayed in ``detectors.pickle``'s ``alerts_held`` (keyed by
  alert id: span, readings and driver shares).
* On PostgreSQL the deleted rows stay in the table files until ``store purge``: the CLI said
  nothing (DuckDB's says when its purge failed) and HTTP answered ``purge_pending: null``.
"""

from __future__ import annotations

import json
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.config import Settings
from edgewise.gateway import pipeline as pl
from edgewise.store import open_store
from edgewise.telemetry import Reading
from edgewise.transport.client import CLIENT_ID_FILE
from tests.server.conftest import build_env, build_postgres_env

load_commands()

T0 = 1_700_000_000 * 10**9
BROKEN = "edgewise.duckdb.wal.broken-20260101T000000Z"


@pytest.fixture
def run(data_dir: Path):
    runner = CliRunner(mix_stderr=False)

    def invoke(*args: str):
        return runner.invoke(app, [*args, "--data-dir", str(data_dir)], env={})

    return invoke


def _stored(url: str, device: str, n: int = 5) -> None:
    st = open_store(url)
    try:
        st.append([Reading(device, "t", T0 + i, float(i), i + 1) for i in range(n)],
                  {device: range(1, n + 1)})
    finally:
        st.close()


def _duckdb(data_dir: Path) -> str:
    return f"duckdb://{data_dir / 'edgewise.duckdb'}"


# -- the logs 'edgewise repair' moved aside ----------------------------------------------------


def test_device_delete_names_the_logs_repair_moved_aside(run, data_dir: Path) -> None:
    """Check a deletion on a DuckDB store with a moved-aside log beside it names that file
    (stderr, and 'broken_logs' with --json) and the rm that removes it, and leaves it."""
    for name in ("pump-1", "pump-2"):
        assert run("device", "add", name).exit_code == 0
        _stored(_duckdb(data_dir), name)
    broken = data_dir / BROKEN
    broken.write_bytes(b"pump-1 readings")
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 0, res.stderr
    assert str(broken) in res.stderr and f"rm -- {broken}" in res.stderr, res.stderr
    assert "device 'pump-1'" in res.stderr and "'edgewise repair'" in res.stderr
    assert broken.read_bytes() == b"pump-1 readings"  # the operator's to remove
    res = run("device", "delete", "pump-2", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["broken_logs"] == [str(broken)]


def test_device_delete_without_a_moved_aside_log_says_nothing_of_one(run,
                                                                     data_dir: Path) -> None:
    """Check no note and no 'broken_logs' key where there is no such file."""
    assert run("device", "add", "pump-1").exit_code == 0
    _stored(_duckdb(data_dir), "pump-1")
    res = run("device", "delete", "pump-1", "--json")
    assert res.exit_code == 0, res.stderr
    assert "broken_logs" not in json.loads(res.stdout) and "repair" not in res.stderr


def test_store_purge_names_the_logs_repair_moved_aside(run, data_dir: Path) -> None:
    """Check 'store purge' names the moved-aside log as not purged, with the rm."""
    _stored(_duckdb(data_dir), "pump-1")
    broken = data_dir / BROKEN
    broken.write_bytes(b"x")
    res = run("store", "purge")
    assert res.exit_code == 0, res.stderr
    assert str(broken) in res.stderr and f"rm -- {broken}" in res.stderr, res.stderr
    res = run("store", "purge", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["broken_logs"] == [str(broken)]


def test_http_delete_names_the_logs_repair_moved_aside(tmp_path: Path) -> None:
    """Check DELETE /v1/devices/{id} answers 'broken_logs' with the moved-aside log (as the
    CLI's --json does), and an empty list where there is none."""
    data_dir = tmp_path / "ew"
    data_dir.mkdir()
    gen = build_env(data_dir)
    env = next(gen)
    try:
        other, _ = env.security.add_device("pump-2")
        r = env.client.delete(f"/v1/devices/{other}", headers=env.auth("admin"))
        assert r.status_code == 200 and r.json()["broken_logs"] == [], r.text
        broken = data_dir / BROKEN
        broken.write_bytes(b"pump-1 readings")
        r = env.send({"ts": int(time.time()) - 60, "seq": 1, "metrics": {"t": 1.0}})
        assert r.status_code == 200, r.text
        r = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        assert r.json()["broken_logs"] == [str(broken)], r.json()
        assert broken.read_bytes() == b"pump-1 readings"
        [entry] = [e for e in env.security.audit_log(100) if e.action == "device.delete_data"
                   and e.target == env.device]
        assert entry.detail["broken_logs"] == 1, entry
    finally:
        gen.close()


# -- the retained ack on an external broker ------------------------------------------------------


def test_delete_without_the_broker_of_an_external_gateway_warns_with_the_command(
        run, data_dir: Path) -> None:
    """Check the reported case: a data dir an external-broker gateway ran on (its client id
    file), 'device delete' without --mqtt: the deletion goes through (exit 0), and stderr
    says the retained ack was not cleared, with the mosquitto_pub that clears it; --json
    answers retained_ack_cleared false."""
    (data_dir / CLIENT_ID_FILE).write_text("edgewise-gateway-0123456789ab\n")
    for name in ("pump-1", "pump-2"):
        assert run("device", "add", name).exit_code == 0
    _stored(_duckdb(data_dir), "pump-1")
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 0, res.stderr
    assert "NOT cleared" in res.stderr, res.stderr
    assert "mosquitto_pub -h HOST -p PORT -r -n -t 'PREFIX/pump-1/ack'" in res.stderr
    assert "retained ack cleared" not in res.stdout
    res = run("device", "delete", "pump-2", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["retained_ack_cleared"] is False
    assert "PREFIX/pump-2/ack" in res.stderr


def test_delete_of_an_embedded_broker_gateway_says_nothing_of_an_ack(run,
                                                                     data_dir: Path) -> None:
    """Check no warning (and no retained_ack_cleared key) without the client id file, and
    none for an id neither registered nor stored (refused as before)."""
    assert run("device", "add", "pump-1").exit_code == 0
    res = run("device", "delete", "pump-1", "--json")
    assert res.exit_code == 0 and "ack" not in res.stderr, res.stderr
    assert "retained_ack_cleared" not in json.loads(res.stdout)
    (data_dir / CLIENT_ID_FILE).write_text("edgewise-gateway-0123456789ab\n")
    res = run("device", "delete", "nosuch")
    assert res.exit_code == 2 and "mosquitto_pub" not in res.stderr, res.stderr


# -- held alerts in the saved detector state -----------------------------------------------------


def _saved_with_held_alerts(data_dir: Path) -> dict[str, str]:
    """Run a pipeline on the data dir's DuckDB store until each of pump-1 and pump-2 has an
    anomaly alert held open, save its state as a stopping gateway does; each device's alert
    id."""
    store = open_store(_duckdb(data_dir))
    p = pl.Pipeline(store, Settings.load(env={}, data_dir=data_dir), detect_async=False)
    t0 = int(time.time()) - 3600
    try:
        msgs = []
        for i in range(1, 200):
            v = 1000.0 if i in (150, 151, 152) else float(i % 5)
            msg = json.dumps({"ts": t0 + i, "seq": i, "metrics": {"a": v, "b": 2 * (i % 3)}})
            msgs += [(dev, msg.encode()) for dev in ("pump-1", "pump-2")]
        for k in range(0, len(msgs), 20):  # ten seconds of both devices a commit (a commit
            # a message took 11 s)
            res = p.ingest_many(msgs[k:k + 20], via="http")
            assert not [r for r in res if isinstance(r, Exception)], res
        p.save_state(data_dir / "detectors.pickle")
        alerts = {a.device_id: a.id for a in store.list_alerts()}
    finally:
        p.close()
        store.close()
    return alerts


def test_device_delete_drops_the_devices_held_alerts_from_the_saved_state(
        run, data_dir: Path) -> None:
    """Check the reported case: pump-1's held alert (its span, readings and driver shares)
    leaves detectors.pickle with the deletion; pump-2's stays."""
    for name in ("pump-1", "pump-2"):
        assert run("device", "add", name).exit_code == 0
    alerts = _saved_with_held_alerts(data_dir)
    held = pickle.loads((data_dir / "detectors.pickle").read_bytes())["alerts_held"]
    assert set(held) == {alerts["pump-1"], alerts["pump-2"]}, (held, alerts)
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 0, res.stderr
    state = pickle.loads((data_dir / "detectors.pickle").read_bytes())
    assert set(state["alerts_held"]) == {alerts["pump-2"]}
    assert not [k for k in state["detectors"] if k[0] == "pump-1"]
    assert [k for k in state["detectors"] if k[0] == "pump-2"]


def test_drop_device_state_drops_only_the_alert_ids_given() -> None:
    """Check the alert ids given go from alerts_held and are counted; others stay."""
    state: dict[str, object] = {"detectors": {("p1", "t"): 1},
                                "alerts_held": {"a1": (1, 2, 1, {}), "a2": (1, 2, 1, {})}}
    assert pl.drop_device_state(state, "p1", ["a1", "a9"]) == 2
    assert state["alerts_held"] == {"a2": (1, 2, 1, {})}
    assert pl.drop_device_state(state, "p2") == 0


# -- PostgreSQL: the rows' bytes stay until 'store purge' ------------------------------------------


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL store URL on a schema of its own, dropped afterwards."""
    import psycopg

    schema = f"ew_dels31_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}schema={schema}"
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
def test_postgres_device_delete_names_the_purge_to_run(run, data_dir: Path,
                                                       pg_store: str) -> None:
    """Check the CLI says the rows' bytes stay until 'edgewise store purge --store URL' and
    answers purge_pending true with --json (audited so); after the purge, a deletion that
    purges says false."""
    for name in ("pump-1", "pump-2"):
        assert run("device", "add", name).exit_code == 0
        _stored(pg_store, name)
    res = run("device", "delete", "pump-1", "--store", pg_store)
    assert res.exit_code == 0, res.stderr
    assert f"edgewise store purge --store '{pg_store}'" in res.stdout, res.stdout
    assert "dead tuples" in res.stdout
    res = run("device", "delete", "pump-2", "--store", pg_store, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["purge_pending"] is True
    st = open_store(pg_store)
    try:
        assert st.purge_pending is False  # a new store object knows of no deletion
        _stored(pg_store, "pump-3")
        assert st.delete_device("pump-3") > 0 and st.purge_pending is True
        assert st.purge() is True and st.purge_pending is False
        _stored(pg_store, "pump-4")
        assert st.delete_device("pump-4", purge=True) and st.purge_pending is False
    finally:
        st.close()


@pytest.mark.postgres
def test_postgres_http_delete_answers_purge_pending_true(tmp_path: Path,
                                                         postgres_url: str) -> None:
    """Check DELETE /v1/devices/{id} on PostgreSQL answers purge_pending true (the rows'
    bytes stay until a purge), not null."""
    data_dir = tmp_path / "ew"
    data_dir.mkdir()
    gen = build_postgres_env(data_dir, postgres_url, "ew_dels31_http_")
    env = next(gen)
    try:
        r = env.send({"ts": int(time.time()) - 60, "seq": 1, "metrics": {"t": 1.0}})
        assert r.status_code == 200, r.text
        r = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        assert r.json()["rows_deleted"] > 0 and r.json()["purge_pending"] is True, r.json()
    finally:
        gen.close()
