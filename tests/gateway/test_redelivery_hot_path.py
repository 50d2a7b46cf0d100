"""The SenML re-delivery check on the ingest path stays cheap.

- the decoder reports whether a SenML message's times were all relative to its arrival
  (``Decoded.relative_times``), so the check no longer inflates and parses the payload
  again;
- the store answers ``seq_gaps`` from its in-memory seq tracker without its write lock,
  which is held for a whole append's transaction: a check no longer waits behind a
  commit in flight on another thread.
"""

from __future__ import annotations

import gzip
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from edgewise.telemetry import Reading, decode

NOW_NS = 1_800_000_000 * 10**9
#: How long a reader may take while a commit is in flight (it used to wait for all of it).
PROMPT_S = 2.0


def _in_thread(fn: Callable[[], Any], timeout: float) -> tuple[bool, Any]:
    """Run ``fn`` on a thread; (whether it returned within ``timeout`` s, its result)."""
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    return (not t.is_alive(), got[0] if got else None)


def test_seq_gaps_answers_while_a_writer_holds_the_write_lock() -> None:
    """Check ``seq_gaps`` and ``seq_watermark`` answer at once while another thread holds
    the DuckDB store's write lock (as an append does for its whole transaction). They
    waited for the lock: seq_gaps did not return before the writer let go."""
    store = open_store("duckdb://:memory:")
    held, release = threading.Event(), threading.Event()

    def writer() -> None:
        with store._wlock:  # type: ignore[attr-defined]
            held.set()
            release.wait(30)

    try:
        store.append([Reading("pump-1", "t", 1, 1.0)], seqs={"pump-1": [1, 2, 5]})
        w = threading.Thread(target=writer, daemon=True)
        w.start()
        assert held.wait(5)
        try:
            done, gaps = _in_thread(lambda: store.seq_gaps("pump-1"), PROMPT_S)
            assert done, f"seq_gaps waited for the write lock more than {PROMPT_S} s"
            assert gaps == [(3, 4)]
            assert _in_thread(lambda: store.seq_watermark("pump-1"), PROMPT_S) == (True, 2)
        finally:
            release.set()
            w.join(10)
    finally:
        store.close()


@pytest.mark.postgres
def test_seq_gaps_answers_during_a_postgres_commit_in_flight(postgres_url: str) -> None:
    """Check ``seq_gaps`` answers while a PostgreSQL append is inside its transaction
    (held up by another session's table lock), without the seqs of that append, and
    with them once it has committed. It waited for the whole append."""
    schema = f"ew_redeliv_{uuid.uuid4().hex[:10]}"
    store = open_store(f"{postgres_url}?schema={schema}")
    try:
        store.append([Reading("pump-1", "t", 1, 1.0)], seqs={"pump-1": [1, 2, 5]})
        with psycopg.connect(postgres_url) as admin:  # a transaction: the lock stays held
            admin.execute(f"LOCK TABLE {schema}.readings IN ACCESS EXCLUSIVE MODE")
            appending = threading.Thread(target=lambda: store.append(
                [Reading("pump-1", "t", 2, 2.0)], seqs={"pump-1": [3, 7]}), daemon=True)
            appending.start()
            time.sleep(0.3)  # the append is now waiting inside its transaction
            assert appending.is_alive()
            try:
                done, gaps = _in_thread(lambda: store.seq_gaps("pump-1"), PROMPT_S)
                assert done, f"seq_gaps waited for the commit in flight more than {PROMPT_S} s"
                assert gaps == [(3, 4)]  # the append's seqs count only once committed
            finally:
                admin.rollback()  # lets the append go on
            appending.join(30)
        assert store.seq_gaps("pump-1") == [(4, 4), (6, 6)]
        assert store.seq_watermark("pump-1") == 3
    finally:
        store.close()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b'[{"n": "temp", "v": 21.5, "seq": 1}]', True, id="no-time"),
        pytest.param(b'[{"bt": -5, "n": "a", "v": 1}, {"t": 1, "n": "b", "vb": true}]', True,
                     id="relative-bt-plus-t"),
        pytest.param(b'[{"bt": 1.7e9, "n": "a", "v": 1}]', False, id="absolute-bt"),
        pytest.param(b'[{"bt": 1.7e9, "n": "a", "v": 1}, {"bt": 0, "n": "b", "v": 2}]',
                     False, id="one-absolute-one-relative"),
        pytest.param(b'[{"n": "a", "v": 1}, {"n": "b", "t": 1.9e9, "v": 2}]', False,
                     id="refused-absolute-time-counts"),
        pytest.param(b'{"ts": 1.7e9, "metrics": {"a": 1}, "seq": 1}', False, id="compact"),
        pytest.param(b'[{"ts": 1.7e9, "metrics": {"a": 1}}]', False, id="compact-array"),
        pytest.param(gzip.compress(b'[{"n": "temp", "v": 1, "seq": 2}]'), True,
                     id="gzipped-senml"),
        pytest.param(gzip.compress(b'[{"bt": 1.7e9, "n": "a", "v": 1}]'), False,
                     id="gzipped-absolute"),
        pytest.param(b'[{"bn": "x/", "bt": 0}]', False, id="no-reading"),
        pytest.param(b'[{"n": "bad name!", "v": 1}]', False, id="all-refused"),
    ],
)
def test_decode_reports_relative_times(payload: bytes, expected: bool) -> None:
    """Check the decoder reports a SenML message whose readings' times were all
    relative to the arrival, with at least one reading, and nothing else."""
    assert decode(payload, "pump-1", now_ns=NOW_NS).relative_times is expected


def test_redelivery_is_told_from_the_decoded_message(tmp_path: Path) -> None:
    """Check a gzipped relative-time SenML message delivered again is a duplicate, and a
    message with one absolute time among relative ones is left to the store's dedup
    (its relative reading is stamped anew and stored again), as before."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    try:
        body = gzip.compress(b'[{"n": "temp", "v": 21.5, "seq": 1}]')
        assert p.ingest("pump-1", body, via="mqtt").accepted == 1
        time.sleep(0.01)
        again = p.ingest("pump-1", body, via="mqtt")
        assert (again.accepted, again.duplicates, again.ack_seq) == (0, 1, 1)
        mixed = (b'[{"n": "a", "v": 1, "seq": 2}, '
                 + f'{{"bt": {int(time.time()) - 3600}, "n": "b", "v": 2}}]'.encode())
        assert p.ingest("pump-1", mixed, via="mqtt").accepted == 2
        time.sleep(0.01)
        r = p.ingest("pump-1", mixed, via="mqtt")
        assert (r.accepted, r.duplicates) == (1, 1)
        assert store.count_readings() == 4
    finally:
        p.close()
        store.close()
