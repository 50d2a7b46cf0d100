"""The pipeline on the PostgreSQL store: the same commit, ack, dedup and gap behaviour."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store

pytestmark = pytest.mark.postgres


def test_pipeline_on_postgres(postgres_url, tmp_path) -> None:
    schema = f"ew_gw_{uuid.uuid4().hex[:10]}"
    store = open_store(f"{postgres_url}?schema={schema}")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0)
    try:
        for seq in (1, 2, 4):
            r = p.ingest("pg-1", json.dumps(
                {"ts": 1_700_000_000 + seq, "metrics": {"a": float(seq)}, "seq": seq}).encode())
        assert r.ack_seq == 2
        assert p.ingest("pg-1", json.dumps(
            {"ts": 1_700_000_001, "metrics": {"a": 1.0}, "seq": 1}).encode()).duplicates == 1
        gaps = p.check_gaps(now=time.monotonic() + 1)
        assert [a.message for a in gaps] == ["messages seq 3..3 missing (1)"]
        assert p.flush()
        assert store.count_readings() == 3
    finally:
        p.close()
        store.close()
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
