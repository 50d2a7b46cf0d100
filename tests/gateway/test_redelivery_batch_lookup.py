"""The SenML re-delivery check asks the store about a whole batch's seqs at once.

A message whose readings' times were stamped on arrival is a re-delivery only when all
its seqs are stored (``Store.stored_seqs``), which on PostgreSQL costs a look-up in the
tables for the seqs this process's tracker does not hold: nearly every new message. The
pipeline asked once per message; it now gathers a batch's possible re-deliveries (after
the decoder's flags and the rate limits) and asks ``Store.stored_seqs_many`` once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from edgewise.config import Settings
from edgewise.errors import RateLimitError, StoreError
from edgewise.gateway.pipeline import IngestResult, Pipeline
from edgewise.store import open_store
from edgewise.store.base import Store


def _senml(seq: int, value: float, metric: str = "temp_c") -> bytes:
    """One SenML record with no time (stamped on arrival), numbered ``seq``."""
    return f'[{{"n": "{metric}", "v": {value}, "seq": {seq}}}]'.encode()


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL store URL with a schema of its own, dropped afterwards."""
    schema = f"ew_redeliv_{uuid.uuid4().hex[:10]}"
    yield f"{postgres_url}?schema={schema}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty store of each backend."""
    if request.param == "duckdb":
        return f"duckdb:///{tmp_path / 's.duckdb'}"
    return str(request.getfixturevalue("pg_url"))


def _spy(store: Store, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """Record the store's seq questions: each ``stored_seqs_many`` question, each
    ``stored_seqs`` one, and (PostgreSQL) each look-up statement in its tables."""
    calls: dict[str, list[Any]] = {"many": [], "one": [], "tables": []}
    for name, key in (("stored_seqs_many", "many"), ("stored_seqs", "one"),
                      ("_stored_elsewhere", "tables")):
        real = getattr(store, name)

        def spy(*args: Any, _real: Any = real, _key: str = key) -> Any:
            calls[_key].append(args)
            return _real(*args)

        monkeypatch.setattr(store, name, spy)
    return calls


def test_a_batch_asks_its_seqs_once(store_url: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a batch of 200 new messages over 20 devices asks the store about their seqs
    in one question (one statement on PostgreSQL), not once per message; that a message
    refused by its device's rate limit, or one the decoder's flags already rule out (an
    absolute time), is not asked about; and that each message is still stored."""
    store = open_store(store_url)
    p = Pipeline(store, Settings(data_dir=tmp_path, rate_limit_per_s=0.001,
                                 rate_limit_burst=10), detect_async=False)
    try:
        calls = _spy(store, monkeypatch)
        items = [(f"pump-{d}", _senml(seq, seq + d / 100)) for seq in range(1, 11)
                 for d in range(20)]
        items.append(("pump-0", _senml(11, 1.0)))  # an 11th reading: over the burst
        items.append(("pump-20", b'[{"n": "temp_c", "v": 1.0, "t": %d, "seq": 1}]'
                      % (time.time() - 60)))
        res = p.ingest_many(items, via="mqtt")
        assert [type(r) for r in res] == [IngestResult] * 200 + [RateLimitError,
                                                                   IngestResult]
        assert all(r.accepted == 1 for r in res if isinstance(r, IngestResult))
        assert store.count_readings() == 201
        assert calls["one"] == []
        assert calls["many"] == [({f"pump-{d}": set(range(1, 11)) for d in range(20)},)]
        if store_url.startswith("postgresql"):
            assert len(calls["tables"]) == 1, "one look-up statement for the batch"
    finally:
        p.close()
        store.close()


@pytest.mark.postgres
def test_a_batch_knows_the_redeliveries_another_gateway_stored(pg_url: str,
                                                               tmp_path: Path) -> None:
    """Check two gateways on one PostgreSQL store: a batch at gateway B holding messages
    gateway A stored (of two devices), new ones, a message delivered twice within the
    batch and a stored seq reused for a new value is settled message by message as when
    each was ingested alone: A's messages are duplicates, the others are stored once."""
    store_a, store_b = open_store(pg_url), open_store(pg_url)
    a = Pipeline(store_a, Settings(data_dir=tmp_path / "a"), detect_async=False)
    b = Pipeline(store_b, Settings(data_dir=tmp_path / "b"), detect_async=False)
    try:
        for device, seq, value in (("pump-1", 1, 21.0), ("pump-1", 2, 22.0),
                                   ("pump-2", 1, 31.0)):
            assert a.ingest(device, _senml(seq, value), via="mqtt").accepted == 1
        time.sleep(0.01)
        res = b.ingest_many([
            ("pump-1", _senml(2, 22.0)),  # A stored it: a re-delivery
            ("pump-1", _senml(3, 23.0)),  # new
            ("pump-2", _senml(1, 31.0)),  # A stored it: a re-delivery
            ("pump-2", _senml(2, 31.0)),  # the same value, a seq never stored: new
            ("pump-1", _senml(3, 23.0)),  # the new one delivered again in this batch
            ("pump-1", _senml(1, 99.0)),  # seq 1 stored, with another value: new
            ("pump-3", _senml(1, 22.0)),  # a device neither gateway has seen
        ], via="mqtt")
        got = [(r.accepted, r.duplicates) for r in res if isinstance(r, IngestResult)]
        # the copy delivered again in this batch is a duplicate, not accepted twice
        assert got == [(0, 1), (1, 0), (0, 1), (1, 0), (0, 1), (1, 0), (1, 0)]
        assert store_a.count_readings() == 3 + 4
        assert [v for _, _, v in store_a.query("pump-1", "temp_c", 0, 2**62)].count(
            23.0) == 1, "the message delivered twice in the batch was stored twice"
        assert store_b.stored_seqs_many({"pump-1": {1, 2, 3}, "pump-2": {1, 2},
                                         "pump-3": {1}}) == {
            "pump-1": {1, 2, 3}, "pump-2": {1, 2}, "pump-3": {1}}
    finally:
        a.close()
        b.close()
        store_a.close()
        store_b.close()


def test_a_failed_seq_lookup_gives_the_rate_limit_tokens_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a batch whose seq look-up fails (PostgreSQL gone for a moment) raises
    StoreError, stores nothing and gives its messages' rate-limit tokens back, as a failed
    commit does: the device's resend is stored. The tokens were kept, and the resend
    refused as over the limit."""
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path, rate_limit_per_s=0.001,
                                 rate_limit_burst=1), detect_async=False)

    def down(*_: Any) -> Any:
        raise StoreError("Looking up seqs of device 'pump-1' in 'postgresql://db' failed")

    try:
        with monkeypatch.context() as m:
            m.setattr(store, "stored_seqs", down)
            m.setattr(store, "stored_seqs_many", down, raising=False)
            with pytest.raises(StoreError, match="Looking up seqs"):
                p.ingest("pump-1", _senml(1, 21.0), via="mqtt")
        assert store.count_readings() == 0
        again = p.ingest("pump-1", _senml(1, 21.0), via="mqtt")
        assert (again.accepted, again.duplicates) == (1, 0)
        assert store.count_readings() == 1
    finally:
        p.close()
        store.close()
