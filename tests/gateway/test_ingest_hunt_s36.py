"""Ingest hunt (session 36), pipeline and HTTP side.

* After a device reboot that starts its seqs at 1 again (as the README tells devices to
  number them), SenML readings with no time were thrown away as re-deliveries: a message
  counted as a copy when its seqs were stored and each value matched *some* stored reading
  of the metric in the last 10 minutes, at any shift, so a door contact's ``vb: false`` or
  a flat reading always matched. A copy is now told by the readings stored under the same
  seqs, all shifted by one interval, with nothing else stored in the later half of it.
* Readings older than the retention were refused as one rejection for them all (no
  index, ``rejected_total`` 1 for 3, one rate-limit token); now one per record.
* A gzip body with bytes after its stream, sent with no ``Content-Encoding``, was said to
  break what its ``Content-Encoding`` (None) said.
"""

from __future__ import annotations

import gzip
import json
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from edgewise.config import Settings
from edgewise.errors import RateLimitError
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from tests.server.conftest import Env, build_env

S = 10**9


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def pipe(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline on an empty store of each backend (PostgreSQL: a schema of its own)."""
    schema = None
    if request.param == "duckdb":
        url = "duckdb://:memory:"
    else:
        base = request.getfixturevalue("postgres_url")
        schema = f"ew_s36_{uuid.uuid4().hex[:10]}"
        url = f"{base}?schema={schema}"
    store = open_store(url)
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    try:
        yield p
    finally:
        p.close()
        store.close()
        if schema is not None:
            with psycopg.connect(request.getfixturevalue("postgres_url"),
                                 autocommit=True) as admin:
                admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _door(seq: int) -> bytes:
    """A door contact, closed, SenML with no time (stamped on arrival), numbered ``seq``."""
    return b'[{"n": "open", "vb": false, "seq": %d}]' % seq


@pytest.mark.parametrize("reboot_after_s", [400, 3600], ids=["within-10-min", "an-hour-later"])
def test_a_rebooted_device_restarting_its_seqs_has_every_reading_stored(
        pipe: Pipeline, reboot_after_s: int) -> None:
    """Check a device that reboots and numbers its messages from 1 again, repeating the
    value it sent before, has all its new readings stored (old code: 0 of 30 stored
    400 s later, 1 of 30 an hour later)."""
    t0 = time.time_ns() - 7200 * S
    for i in range(1, 31):
        assert pipe.ingest("door-1", _door(i), received_ns=t0 + i * 10 * S).accepted == 1
    t1 = t0 + reboot_after_s * S
    got = [pipe.ingest("door-1", _door(i), received_ns=t1 + i * 10 * S) for i in range(1, 31)]
    assert [(r.accepted, r.duplicates) for r in got] == [(1, 0)] * 30
    assert pipe.store.count_readings() == 60


def test_a_rebooted_room_sensor_keeps_its_repeated_values(pipe: Pipeline) -> None:
    """Check a 0.1 degC sensor rebooted 5 min in (seq from 1 again) keeps every reading:
    its values repeat earlier ones, but not the message stored under the same seq with
    nothing sent since (old code: most of the 60 dropped as duplicates)."""
    rng = random.Random(1)
    t0 = time.time_ns() - 7200 * S

    def body(seq: int) -> bytes:
        return b'[{"n": "temp_c", "v": %.1f, "seq": %d}]' % (21.0 + rng.choice((0, .1)), seq)

    for i in range(1, 31):
        pipe.ingest("room-1", body(i), received_ns=t0 + i * 10 * S)
    t1 = t0 + 305 * S
    accepted = sum(pipe.ingest("room-1", body(i), received_ns=t1 + i * 10 * S).accepted
                   for i in range(1, 61))
    assert accepted == 60


def test_a_true_redelivery_is_still_stored_once(pipe: Pipeline) -> None:
    """Check copies are still duplicates: a message sent again 5 s later (a lost ack), a
    burst of three messages in flight when a connection dropped, resent 30 s later, and a
    two-record message with relative times resent a minute later; a message under a seq
    stored with other values, or sent again after the device went on, is stored."""
    t0 = time.time_ns() - 3600 * S
    one = b'[{"n": "temp", "v": 21.5, "seq": 1}]'
    assert pipe.ingest("pump-1", one, received_ns=t0).accepted == 1
    assert pipe.ingest("pump-1", one, received_ns=t0 + 5 * S).duplicates == 1
    burst = [b'[{"n": "temp", "v": 21.5, "seq": %d}]' % q for q in (2, 3, 4)]
    for k, b in enumerate(burst):
        assert pipe.ingest("pump-1", b, received_ns=t0 + 10 * S + k * 10**7).accepted == 1
    for k, b in enumerate(burst):
        again = pipe.ingest("pump-1", b, received_ns=t0 + 40 * S + k * 10**7)
        assert (again.accepted, again.duplicates) == (0, 1), k
    pack = b'[{"bt": -5, "n": "a", "v": 1, "seq": 5}, {"n": "b", "v": 2}]'
    assert pipe.ingest("pump-1", pack, received_ns=t0 + 60 * S).accepted == 2
    assert pipe.ingest("pump-1", pack, received_ns=t0 + 120 * S).duplicates == 2
    assert pipe.store.count_readings() == 6
    # seq 5 reused with one value changed: new readings
    other = b'[{"bt": -5, "n": "a", "v": 1, "seq": 5}, {"n": "b", "v": 3}]'
    assert pipe.ingest("pump-1", other, received_ns=t0 + 130 * S).accepted == 2
    # seq 1's message again after the device went on (seq 6 of the metric since): new
    six = b'[{"n": "temp", "v": 21.6, "seq": 6}]'
    assert pipe.ingest("pump-1", six, received_ns=t0 + 100 * S).accepted == 1
    assert pipe.ingest("pump-1", one, received_ns=t0 + 140 * S).accepted == 1
    assert pipe.store.count_readings() == 10


def test_only_a_message_indistinguishable_from_a_copy_is_taken_for_one(
        pipe: Pipeline) -> None:
    """Check the limit the docstring states: a restarted device repeating, within the
    window, exactly the message it sent under the same seq, with nothing in between, is
    taken for a re-delivery; with a second metric it is not (the pair does not repeat)."""
    t0 = time.time_ns() - 3600 * S
    assert pipe.ingest("door-1", _door(1), received_ns=t0).accepted == 1
    assert pipe.ingest("door-1", _door(1), received_ns=t0 + 60 * S).duplicates == 1
    two = b'[{"n": "open", "vb": false, "seq": 2}, {"n": "batt", "v": %.2f}]'
    assert pipe.ingest("door-1", two % 3.31, received_ns=t0 + 70 * S).accepted == 2
    assert pipe.ingest("door-1", two % 3.30, received_ns=t0 + 130 * S).accepted == 2


def test_readings_past_the_retention_are_refused_one_by_one(tmp_path: Path) -> None:
    """Check each record older than the retention is one rejection with its index (old
    code: one rejection for all three, index None, rejected_total 1), in compact and
    SenML (naming 't'), and costs a rate-limit token as a rejected record does."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path, retention_days=30, rate_limit_per_s=0.001,
                                 rate_limit_burst=10), detect_async=False)
    try:
        now = int(time.time())
        body = [{"ts": now - 40 * 86400 + i, "metrics": {"a": 1}, "seq": i + 1}
                for i in range(3)] + [{"ts": now, "metrics": {"a": 2}, "seq": 4}]
        r = p.ingest("pump-1", json.dumps(body).encode())
        assert [(e.reason, e.field, e.index) for e in r.rejected] == [
            ("expired", "ts", 0), ("expired", "ts", 1), ("expired", "ts", 2)]
        assert (r.accepted, r.ack_seq, r.rejected_counts) == (1, 4, {"expired": 3})
        senml = [{"bt": now - 40 * 86400, "n": "b", "v": 1, "seq": 5}, {"n": "b", "v": 2,
                                                                        "t": 40 * 86400}]
        r = p.ingest("pump-1", json.dumps(senml).encode())
        assert [(e.reason, e.field, e.index) for e in r.rejected] == [("expired", "t", 0)]
        assert (r.accepted, r.ack_seq) == (1, 5)
        # 4 + 2 tokens of a burst of 10 taken (old code: 2 + 2): 4 more pass, a 5th not
        assert p.ingest("pump-1", json.dumps(
            [{"ts": now, "metrics": {f"m{k}": 1 for k in range(4)}}]).encode()).accepted == 4
        with pytest.raises(RateLimitError):
            p.ingest("pump-1", json.dumps({"ts": now, "metrics": {"z": 1}}).encode())
        assert p.metrics.get("edgewise_readings_rejected_total", reason="expired") == 4
    finally:
        p.close()
        store.close()


@pytest.fixture
def http_env(tmp_path: Path) -> Iterator[Env]:
    yield from build_env(tmp_path)


def test_gzip_with_trailing_bytes_and_no_header_names_the_body(http_env: Env) -> None:
    """Check the 400 for a gzip body (told by its magic bytes) with bytes after its
    stream names the body, not a 'Content-Encoding' (None) that was never sent; with
    the header, it still names the header."""
    body = gzip.compress(json.dumps({"ts": int(time.time()), "metrics": {"a": 1},
                                     "seq": 1}).encode()) + b"junk"
    headers = {**http_env.device_headers(), "Content-Type": "application/json"}
    resp = http_env.client.post("/v1/telemetry", content=body, headers=headers)
    assert resp.status_code == 400, resp.text
    problem = resp.json()
    assert (problem["field"], problem["reason"]) == ("payload", "bad_encoding")
    assert "Content-Encoding" not in problem["detail"], problem["detail"]
    assert "None" not in problem["detail"] and "6a756e6b" in problem["detail"]
    resp = http_env.client.post("/v1/telemetry", content=body,
                                headers={**headers, "Content-Encoding": "gzip"})
    assert resp.status_code == 400
    assert resp.json()["field"] == "Content-Encoding"
    assert http_env.store.count_readings() == 0
