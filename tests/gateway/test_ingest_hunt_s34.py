"""Ingest hunt (session 34), pipeline and HTTP side.

* A SenML message with relative times (or none), sent again while its first copy waited
  for the commit (a slow commit: a purge, a busy PostgreSQL; the device's HTTP client
  timed out and resent it), was stored twice: the re-delivery check ran before the commit
  lock, when the first copy's seqs were not stored yet, and the copy's times, stamped
  anew, passed the store's dedup. It is checked again under the lock.
* Over HTTP, such a message was stamped when the pipeline decoded it, after the device's
  authentication, not when the request came.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import IngestResult, Pipeline
from edgewise.store import open_store
from edgewise.store.base import Store
from tests.server.conftest import Env, build_env

BODY = b'[{"n": "temp", "v": 21.5, "seq": 1}, {"n": "rpm", "v": 1450, "seq": 1}]'


@pytest.fixture(params=["duckdb", "postgres"])
def held(request: pytest.FixtureRequest,
         tmp_path: Path) -> Iterator[tuple[Pipeline, Store, threading.Event, threading.Event]]:
    """A pipeline whose first commit of readings waits for ``release`` (``holding`` is set
    once it does), on DuckDB and on a PostgreSQL schema of its own."""
    schema = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        schema = f"t_s34_{uuid.uuid4().hex[:10]}"
        store = open_store(f"{url}?schema={schema}")
    else:
        store = open_store("duckdb://:memory:")
    real = store.append
    holding, release = threading.Event(), threading.Event()

    def append(readings: Any, seqs: Any = None) -> Any:
        if readings and not holding.is_set():
            holding.set()
            release.wait(20)
        return real(readings, seqs)

    store.append = append  # type: ignore[method-assign]
    pipe = Pipeline(store, Settings.load(env={}, data_dir=tmp_path), detect_async=False)
    try:
        yield pipe, store, holding, release
    finally:
        release.set()
        pipe.close()
        store.close()
        if schema is not None:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _send_during_held_commit(pipe: Pipeline, holding: threading.Event,
                             release: threading.Event, first: bytes,
                             second: bytes) -> list[IngestResult]:
    """Ingest ``first``; while its commit is held, ``second`` (it waits for the commit
    lock); then let both through. Returns their results in that order."""
    results: dict[int, IngestResult] = {}

    def send(i: int, body: bytes) -> None:
        results[i] = pipe.ingest("pump-1", body)

    t1 = threading.Thread(target=send, args=(1, first))
    t1.start()
    assert holding.wait(10)
    time.sleep(0.1)  # the device's resend comes a little later
    t2 = threading.Thread(target=send, args=(2, second))
    t2.start()
    time.sleep(0.3)  # it is decoded and looked up, and waits for the commit lock
    release.set()
    t1.join(10)
    t2.join(10)
    return [results[1], results[2]]


def test_relative_senml_resent_while_its_first_copy_waits_to_commit_is_stored_once(
        held: tuple[Pipeline, Store, threading.Event, threading.Event]) -> None:
    """Check the copy is acknowledged as duplicates, not stored (old code: four readings,
    two of each metric 0.1 s apart)."""
    pipe, store, holding, release = held
    r1, r2 = _send_during_held_commit(pipe, holding, release, BODY, BODY)
    assert (r1.accepted, r1.duplicates, r1.ack_seq) == (2, 0, 1)
    assert (r2.accepted, r2.duplicates, r2.ack_seq) == (0, 2, 1)
    assert sorted((m, v) for m, _, v in store.query("pump-1")) == [("rpm", 1450.0),
                                                                    ("temp", 21.5)]
    assert pipe.metrics.get("edgewise_readings_ingested_total") == 2
    assert pipe.metrics.get("edgewise_readings_duplicate_total") == 2
    assert pipe.metrics.get("edgewise_readings_stored_total") == 2


@pytest.mark.parametrize(("nxt", "ack"), [
    (b'[{"n": "temp", "v": 21.7, "seq": 2}, {"n": "rpm", "v": 1460, "seq": 2}]', 2),
    (b'[{"n": "temp", "v": 21.7, "seq": 1}, {"n": "rpm", "v": 1450, "seq": 1}]', 1),
], ids=["another seq", "the same seq with other values"])
def test_new_message_sent_while_a_commit_is_held_is_still_stored(
        held: tuple[Pipeline, Store, threading.Event, threading.Event], nxt: bytes,
        ack: int) -> None:
    """Check the check under the lock takes only a re-delivery: the device's next message
    (another seq, or the same seq with other values: one of its two readings differs, as
    after a seq counter restart) is stored."""
    pipe, store, holding, release = held
    r1, r2 = _send_during_held_commit(pipe, holding, release, BODY, nxt)
    assert (r1.accepted, r2.accepted, r2.duplicates, r2.ack_seq) == (2, 2, 0, ack)
    assert sorted((m, v) for m, _, v in store.query("pump-1")) == sorted(
        [("temp", 21.5), ("rpm", 1450.0), ("temp", 21.7),
         ("rpm", 1460.0 if ack == 2 else 1450.0)])


def test_the_check_under_the_lock_asks_nothing_without_a_commit_meanwhile(
        tmp_path: Path) -> None:
    """Check the fast path: messages ingested one after another (no commit of the device
    between a message's look-up and its commit) ask the store about their seqs once."""
    store = open_store("duckdb://:memory:")
    pipe = Pipeline(store, Settings.load(env={}, data_dir=tmp_path), detect_async=False)
    asked: list[dict[str, set[int]]] = []
    real = store.stored_seqs_many

    def stored_seqs_many(seqs: dict[str, set[int]]) -> dict[str, set[int]]:
        asked.append(seqs)
        return real(seqs)

    store.stored_seqs_many = stored_seqs_many  # type: ignore[method-assign]
    try:
        for seq in range(1, 4):
            r = pipe.ingest("pump-1", f'[{{"n": "t", "v": {seq}, "seq": {seq}}}]'.encode())
            assert r.accepted == 1
        assert asked == [{"pump-1": {1}}, {"pump-1": {2}}, {"pump-1": {3}}]
    finally:
        pipe.close()
        store.close()


@pytest.fixture
def http_env(tmp_path: Path) -> Iterator[Env]:
    yield from build_env(tmp_path)


def test_http_senml_without_time_is_stamped_when_the_request_came(http_env: Env) -> None:
    """Check a SenML reading with no time sent over HTTP gets the time its request came,
    not the time it was decoded after a slow authentication (0.5 s here; old code: at
    least 0.5 s late)."""
    real = http_env.security.authenticate_device

    def slow(*args: Any, **kw: Any) -> Any:
        time.sleep(0.5)
        return real(*args, **kw)

    http_env.security.authenticate_device = slow  # type: ignore[method-assign]
    before = time.time_ns()
    resp = http_env.send([{"n": "temp", "v": 21.5}])
    assert resp.status_code == 200, resp.text
    ((_, ts, _),) = http_env.store.query(http_env.device, "temp")
    assert 0 <= (ts - before) / 1e9 < 0.25, (ts - before) / 1e9
