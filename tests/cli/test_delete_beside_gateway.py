"""Deleting a device while a gateway runs, and registering its id again.

A running gateway keeps each device's seq watermark (the ack it sends) in memory. Deleted
from a shell behind its back, a device registered again under the same id was acked the
old watermark for its seq 1, and would have forgotten messages that were never stored.
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

load_commands()


def _payloads(first: int, last: int) -> list[bytes]:
    t0 = int(time.time()) - 600
    return [json.dumps({"ts": t0 + s, "metrics": {"t": float(s)}, "seq": s}).encode()
            for s in range(first, last + 1)]


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL store URL on a schema of its own, dropped afterwards."""
    import psycopg

    schema = f"ew_del_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}schema={schema}"
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
def test_cli_delete_beside_a_gateway_on_postgres_leaves_it_the_data(
        data_dir: Path, pg_store: str) -> None:
    """Check the CLI revokes only while a gateway runs on the data dir, refuses the id until
    the data is gone, and a device added again afterwards is acked from its own seq 1."""
    cli = CliRunner(mix_stderr=False)

    def run(*args: str):
        return cli.invoke(app, [*args, "--data-dir", str(data_dir)])

    settings = Settings.load(env={}, data_dir=data_dir, store=pg_store)
    gw = Gateway(settings, detect_async=False)
    try:
        assert run("device", "add", "pump-1").exit_code == 0
        for body in _payloads(1, 40):
            result = gw.pipeline.ingest("pump-1", body)
        assert result.ack_seq == 40
        res = run("device", "delete", "pump-1", "--store", pg_store)
        assert res.exit_code == 1
        assert "a gateway is running" in res.stderr and "NOT deleted" in res.stderr
        assert gw.store.count_readings() == 40  # the gateway's to delete, with its memory
        res = run("device", "add", "pump-1")
        assert res.exit_code != 0
        assert "its stored data was kept" in res.stderr, res.stderr
    finally:
        asyncio.run(gw.stop())
    res = run("device", "delete", "pump-1", "--store", pg_store)
    assert res.exit_code == 0, res.stderr
    assert "40 stored rows" in res.stdout or "stored rows" in res.stdout
    assert run("device", "add", "pump-1").exit_code == 0
    gw = Gateway(settings, detect_async=False)
    try:
        assert gw.pipeline.ingest("pump-1", _payloads(1, 1)[0]).ack_seq == 1
    finally:
        asyncio.run(gw.stop())


def test_a_stopped_gateway_leaves_the_data_dir_to_the_cli(data_dir: Path) -> None:
    """Check the gateway's presence goes with it: the CLI then deletes the data itself."""
    settings = Settings.load(env={}, data_dir=data_dir)
    gw = Gateway(settings, detect_async=False)
    gw.security.add_device("pump-1")
    gw.pipeline.ingest("pump-1", _payloads(1, 1)[0])
    asyncio.run(gw.stop())
    res = CliRunner(mix_stderr=False).invoke(
        app, ["device", "delete", "pump-1", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stderr
    assert not Security(data_dir).data_kept("pump-1")
