"""``edgewise device delete`` / ``device add`` and where the device's data really is.

* Without ``--store``, for a gateway that ran with another store, the command deleted from a
  DuckDB file it made there and then (0 rows), exited 0, and left the data and the seq
  watermark in the gateway's store; ``device add`` then took the id, and the new device's
  seq 1 was acknowledged the old watermark (its messages 2..10 dropped as duplicates).
* ``device add`` took an id whose data a store still held (``POST /v1/devices``: 409).
* A store deletion that failed left the credentials revoked and no note that the data was
  kept, so the id could be added again over the old data.
* ``device delete nosuch`` made a store, a registry and an audit entry before refusing.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.config import Settings
from edgewise.gateway.runtime import Gateway
from edgewise.security import Security
from edgewise.store import open_store
from edgewise.telemetry import Reading

load_commands()


@pytest.fixture
def run(data_dir: Path):
    runner = CliRunner(mix_stderr=False)

    def invoke(*args: str):
        return runner.invoke(app, [*args, "--data-dir", str(data_dir)], env={})

    return invoke


def _payloads(first: int, last: int) -> list[bytes]:
    t0 = int(time.time()) - 600
    return [json.dumps({"ts": t0 + s, "metrics": {"t": float(s)}, "seq": s}).encode()
            for s in range(first, last + 1)]


def _gateway_ingests(data_dir: Path, store: str, device: str, n: int) -> None:
    """Run a gateway on ``data_dir`` with ``store``, ingest seq 1..n of ``device``, stop."""
    gw = Gateway(Settings.load(env={}, data_dir=data_dir, store=store), detect_async=False)
    try:
        for body in _payloads(1, n):
            assert gw.pipeline.ingest(device, body).accepted == 1
    finally:
        asyncio.run(gw.stop())


def _readings(url: str, device: str) -> int:
    st = open_store(url)
    try:
        return len(st.query(device))
    finally:
        st.close()


def _kept(data_dir: Path, device: str) -> tuple[bool, bool]:
    """(registered, data kept) for ``device``."""
    sec = Security(data_dir)
    try:
        return sec.has_device(device), sec.data_kept(device)
    finally:
        sec.close()


def test_delete_without_store_after_a_gateway_ran_elsewhere_keeps_the_id(
        run, data_dir: Path, tmp_path: Path) -> None:
    """Check that without --store, after a gateway ran on the data dir with another store,
    the command makes no DuckDB file, revokes, keeps the data and the id (exit 1, asking for
    --store), that 'device add' is refused then, and that --store then deletes the data."""
    other = f"duckdb:///{tmp_path / 'elsewhere.duckdb'}"
    assert run("device", "add", "pump-1").exit_code == 0
    _gateway_ingests(data_dir, other, "pump-1", 10)
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 1, res.stdout + res.stderr
    assert "credentials revoked" in res.stderr and "NOT deleted" in res.stderr, res.stderr
    assert "--store" in res.stderr and "no store at" in res.stderr, res.stderr
    assert not (data_dir / "edgewise.duckdb").exists()
    assert _readings(other, "pump-1") == 10
    assert _kept(data_dir, "pump-1") == (False, True)
    res = run("device", "add", "pump-1")
    assert res.exit_code != 0 and "its stored data was kept" in res.stderr, res.stderr
    res = run("device", "delete", "pump-1", "--store", other, "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["rows_deleted"] >= 10
    assert _kept(data_dir, "pump-1") == (False, False)
    assert run("device", "add", "pump-1").exit_code == 0


def test_device_add_refuses_an_id_whose_data_is_stored(run, data_dir: Path,
                                                       tmp_path: Path) -> None:
    """Check 'device add' refuses an unregistered id with data in the data dir's DuckDB
    file, and in the store --store names, as POST /v1/devices does (409 has_data); a store
    without its data, or no store yet, takes it."""
    for url in (f"duckdb:///{data_dir / 'edgewise.duckdb'}",
                f"duckdb:///{tmp_path / 'other.duckdb'}"):
        st = open_store(url)
        st.append([Reading("pump-7", "t", 1_700_000_000 * 10**9, 1.0, 1)], {"pump-7": [1]})
        st.close()
    res = run("device", "add", "pump-7")
    assert res.exit_code == 2, res.stdout
    assert "is not registered, but the store" in res.stderr
    assert "still holds data of a device of that id" in res.stderr
    assert "edgewise device delete pump-7" in res.stderr, res.stderr
    assert _kept(data_dir, "pump-7") == (False, False)
    res = run("device", "add", "pump-8", "--store", f"duckdb:///{tmp_path / 'other.duckdb'}")
    assert res.exit_code == 0, res.stderr
    st = open_store(f"duckdb:///{data_dir / 'edgewise.duckdb'}")
    st.delete_device("pump-7")
    st.close()
    res = run("device", "add", "pump-7", "--store", f"duckdb:///{tmp_path / 'other.duckdb'}")
    assert res.exit_code == 2 and f"--store duckdb:///{tmp_path / 'other.duckdb'}" in \
        res.stderr, res.stderr
    assert run("device", "add", "pump-7").exit_code == 0


def test_deleting_an_unknown_id_makes_nothing(run, data_dir: Path) -> None:
    """Check 'device delete nosuch' makes no store, registry or audit entry, in a data dir
    with credentials only and in one with a store and a registry too."""
    assert run("device", "add", "pump-1").exit_code == 0
    before = sorted(p.name for p in data_dir.iterdir())
    res = run("device", "delete", "nosuch")
    assert res.exit_code == 2
    assert "'nosuch' is not registered and has no stored data" in res.stderr, res.stderr
    assert sorted(p.name for p in data_dir.iterdir()) == before
    st = open_store(f"duckdb:///{data_dir / 'edgewise.duckdb'}")
    st.append([Reading("pump-1", "t", 1_700_000_000 * 10**9, 1.0, 1)], {"pump-1": [1]})
    st.close()
    model = data_dir.parent / "m.pkl"
    model.write_bytes(b"m")
    assert run("registry", "publish", "m", "1", str(model), "--format", "pickle").exit_code == 0
    res = run("device", "delete", "nosuch")
    assert res.exit_code == 2, res.stderr
    sec = Security(data_dir)
    try:
        assert [e.action for e in sec.audit_log() if e.target.endswith("nosuch")] == []
        assert not sec.data_kept("nosuch")
    finally:
        sec.close()
    empty = data_dir.parent / "empty"
    empty.mkdir()
    res = CliRunner(mix_stderr=False).invoke(
        app, ["device", "delete", "nosuch", "--data-dir", str(empty)], env={})
    assert res.exit_code == 2 and list(empty.iterdir()) == [], res.stderr


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL store URL on a schema of its own, dropped afterwards."""
    import psycopg

    schema = f"ew_delhunt_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}schema={schema}"
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
def test_delete_without_store_for_a_postgres_gateway_keeps_the_watermark_safe(
        run, data_dir: Path, pg_store: str) -> None:
    """Check the reported case: a gateway on PostgreSQL, 'device delete' without --store
    deletes nothing, says so (exit 1) and makes no DuckDB file; 'device add' is refused; with
    --store the data goes, and the device added again is acked from its own seq 1."""
    assert run("device", "add", "pump-1").exit_code == 0
    _gateway_ingests(data_dir, pg_store, "pump-1", 10)
    res = run("device", "delete", "pump-1")
    assert res.exit_code == 1 and "NOT deleted" in res.stderr, res.stdout + res.stderr
    assert not (data_dir / "edgewise.duckdb").exists()
    assert _readings(pg_store, "pump-1") == 10
    assert run("device", "add", "pump-1").exit_code != 0
    assert run("device", "delete", "pump-1", "--store", pg_store).exit_code == 0
    assert run("device", "add", "pump-1").exit_code == 0
    gw = Gateway(Settings.load(env={}, data_dir=data_dir, store=pg_store), detect_async=False)
    try:
        assert gw.pipeline.ingest("pump-1", _payloads(1, 1)[0]).ack_seq == 1
    finally:
        asyncio.run(gw.stop())


@pytest.mark.postgres
def test_a_failed_store_deletion_keeps_the_data_and_the_id(run, data_dir: Path,
                                                           pg_store: str) -> None:
    """Check that when the store refuses the deletion (a server-side error), the command
    says the credentials were revoked and the data kept (exit 1), the id stays refused by
    'device add', and the next successful deletion frees it."""
    import psycopg

    assert run("device", "add", "pump-1").exit_code == 0
    st = open_store(pg_store)
    st.append([Reading("pump-1", "t", 1_700_000_000 * 10**9 + i, float(i), i + 1)
               for i in range(5)], {"pump-1": range(1, 6)})
    st.close()
    base, _, query = pg_store.partition("?")
    schema = query.split("schema=", 1)[1]
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'CREATE FUNCTION "{schema}".refuse() RETURNS trigger LANGUAGE plpgsql '
                    "AS $$ BEGIN RAISE EXCEPTION 'server closed the connection'; END $$")
        con.execute(f'CREATE TRIGGER refuse BEFORE DELETE ON "{schema}".readings '
                    f'FOR EACH STATEMENT EXECUTE FUNCTION "{schema}".refuse()')
    res = run("device", "delete", "pump-1", "--store", pg_store)
    assert res.exit_code == 1, res.stdout + res.stderr
    assert "credentials revoked, but its stored data was NOT deleted" in res.stderr
    assert "server closed the connection" in res.stderr, res.stderr
    assert _kept(data_dir, "pump-1") == (False, True)
    assert _readings(pg_store, "pump-1") == 5
    res = run("device", "add", "pump-1", "--store", pg_store)
    assert res.exit_code != 0, res.stdout
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'DROP TRIGGER refuse ON "{schema}".readings')
    res = run("device", "delete", "pump-1", "--store", pg_store)
    assert res.exit_code == 0, res.stderr
    assert _kept(data_dir, "pump-1") == (False, False)
    assert run("device", "add", "pump-1", "--store", pg_store).exit_code == 0
