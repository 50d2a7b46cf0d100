"""``/healthz`` says so when telemetry commits fail: it answered ``{"status": "ok"}`` while
every append failed (a full disk, a store refusing writes), since it only read the store,
so monitoring saw a healthy gateway that stored nothing. Now 503 with ``ingest`` naming
why, until a commit succeeds again."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from tests.server.conftest import build_postgres_env


def test_healthz_is_503_while_commits_fail_and_ok_once_one_succeeds(data_dir: Path,
                                                                      postgres_url: str) -> None:
    """Check a store that reads but refuses every new reading (a CHECK constraint added
    by an admin, as a real write failure) makes /healthz 503 naming the commit failure,
    and a commit that succeeds after the constraint is dropped makes it 200 again."""
    gen = build_postgres_env(data_dir, postgres_url, "ew_health_")
    env = next(gen)
    try:
        table = f'"{env.store.schema}".readings'  # type: ignore[attr-defined]
        assert env.client.get("/healthz").json()["status"] == "ok"
        now = time.time()
        assert env.send({"ts": now, "seq": 1, "metrics": {"t": 1.0}}).status_code == 200
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"ALTER TABLE {table} ADD CONSTRAINT ew_refuse CHECK (ts_ns < 0) "
                          "NOT VALID")
        assert env.send({"ts": now + 1, "seq": 2, "metrics": {"t": 2.0}}).status_code == 503
        r = env.client.get("/healthz")
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["status"] == "unhealthy" and "ew_refuse" in body["ingest"], body
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"ALTER TABLE {table} DROP CONSTRAINT ew_refuse")
        assert env.send({"ts": now + 1, "seq": 2, "metrics": {"t": 2.0}}).status_code == 200
        assert env.client.get("/healthz").json() == {"status": "ok", "store": "postgresql"}
    finally:
        gen.close()
