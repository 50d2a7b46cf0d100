"""``/healthz`` answers without a token: where telemetry commits fail it names why in the
driver's first line only. PostgreSQL's DETAIL line ("Failing row contains (pump-1, …, 2.0,
…)") put a device's id and its reading in the unauthenticated answer."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.server.conftest import build_postgres_env

pytestmark = pytest.mark.postgres


def test_healthz_names_the_failure_without_the_failing_row(data_dir: Path,
                                                           postgres_url: str) -> None:
    gen = build_postgres_env(data_dir, postgres_url, "ew_health49_")
    env = next(gen)
    try:
        table = f'"{env.store.schema}".readings'  # type: ignore[attr-defined]
        now = time.time()
        assert env.send({"ts": now, "seq": 1, "metrics": {"t": 1.0}}).status_code == 200
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"ALTER TABLE {table} ADD CONSTRAINT ew_refuse49 CHECK (ts_ns < 0) "
                          "NOT VALID")
        assert env.send({"ts": now + 1, "seq": 2,
                         "metrics": {"t": 123.456}}).status_code == 503
        body = env.client.get("/healthz").json()
        ingest = body["ingest"]
        assert "ew_refuse49" in ingest, body  # why, as before
        assert "DETAIL" not in ingest and "123.456" not in ingest, body
        assert env.device not in ingest, body
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"ALTER TABLE {table} DROP CONSTRAINT ew_refuse49")
    finally:
        gen.close()
