"""The SenML re-delivery check asks the store exactly which seqs are stored.

A message whose readings' times were stamped on arrival is a re-delivery only when every
one of its seqs is stored for the device. The check used to approximate that from the
seq watermark, the gaps and the highest seq *this* gateway committed: a gateway started
since (or one of several sharing a PostgreSQL store) did not know the seqs stored above
the last gap, took a re-delivery for new readings and stored them a second time, stamped
with the new arrival time. It now asks ``Store.stored_seqs``.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store


def _senml(seq: int, value: float) -> bytes:
    """One SenML record with no time (stamped on arrival), numbered ``seq``."""
    return f'[{{"n": "temp_c", "v": {value}, "seq": {seq}}}]'.encode()


def test_restarted_gateway_knows_a_redelivery_above_the_last_gap(tmp_path: Path) -> None:
    """Check a gateway started since, whose store holds seqs 1, 3 and 4 (2 lost), takes
    message 4 delivered again for a duplicate and stores nothing; the old approximation
    thought seqs above the last gap's end + 1 (3) were never stored, and stored it twice.
    A message whose seq was never stored (5), with the same value, is still stored."""
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    try:
        for seq in (1, 3, 4):
            assert p.ingest("pump-1", _senml(seq, 20.0 + seq), via="mqtt").accepted == 1
    finally:
        p.close()
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    try:
        assert store.seq_gaps("pump-1") == [(2, 2)]
        time.sleep(0.01)
        again = p.ingest("pump-1", _senml(4, 24.0), via="mqtt")
        assert (again.accepted, again.duplicates, again.ack_seq) == (0, 1, 1)
        assert store.count_readings() == 3
        fresh = p.ingest("pump-1", _senml(5, 24.0), via="mqtt")
        assert (fresh.accepted, fresh.duplicates) == (1, 0)
        assert store.count_readings() == 4
    finally:
        p.close()
        store.close()


@pytest.mark.postgres
def test_gateway_knows_a_redelivery_another_gateway_stored(postgres_url: str,
                                                           tmp_path: Path) -> None:
    """Check two gateways on one PostgreSQL store: a message gateway A stored, delivered
    again to gateway B (a device reconnecting to the other one after a lost ack), is a
    duplicate at B and stored once; B's seq tracker never saw A's seqs, so the old check
    stored it again. A message of a seq neither stored is stored by B."""
    schema = f"ew_redeliv_{uuid.uuid4().hex[:10]}"
    url = f"{postgres_url}?schema={schema}"
    store_a, store_b = open_store(url), open_store(url)
    a = Pipeline(store_a, Settings(data_dir=tmp_path / "a"), detect_async=False)
    b = Pipeline(store_b, Settings(data_dir=tmp_path / "b"), detect_async=False)
    try:
        for seq in (1, 2):
            assert a.ingest("pump-1", _senml(seq, 20.0 + seq), via="mqtt").accepted == 1
        time.sleep(0.01)
        again = b.ingest("pump-1", _senml(2, 22.0), via="mqtt")
        assert (again.accepted, again.duplicates) == (0, 1)
        assert store_b.count_readings() == 2
        new = b.ingest("pump-1", _senml(3, 22.0), via="mqtt")
        assert (new.accepted, new.duplicates) == (1, 0)
        assert store_a.count_readings() == 3
    finally:
        a.close()
        b.close()
        store_a.close()
        store_b.close()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
