"""Forgetting a device while its readings wait for detection.

``forget_device`` waited for the detection backlog up to 10 s, then forgot the device
anyway; the batches still queued (and a commit whose readings were on their way to the
queue) were scored afterwards, bringing back the deleted device's detectors, last-scored
times and an anomaly alert, so ``POST /v1/devices`` refused the id (409 has_data).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from edgewise.store.base import Store
from tests.server.conftest import build_env

T0 = int(time.time()) - 3600


def _body(seq: int, ts: int, t: float) -> bytes:
    return json.dumps({"ts": ts, "seq": seq, "metrics": {"t": t, "u": 5.0 + seq % 3}}).encode()


def _feed(p: Pipeline, device: str, first: int, n: int, t0: int = T0,
          fault: bool = True) -> None:
    """``n`` one-message commits, seq ``first``.., one second apart from ``t0``; with
    ``fault`` the last ten are far off the level."""
    for i in range(n):
        seq = first + i
        value = 80.0 + i if fault and i >= n - 10 else 20.0 + (i % 5) * 0.1
        p.ingest(device, _body(seq, t0 + seq, value))


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("duckdb://:memory:")
    yield s
    s.close()


def _gated(p: Pipeline) -> threading.Event:
    """Make the pipeline's detection wait for the returned event (a detection backlog)."""
    gate = threading.Event()
    detect = p.detect

    def slow(readings):  # type: ignore[no-untyped-def]
        gate.wait(60)
        return detect(readings)

    p.detect = slow  # type: ignore[method-assign]
    return gate


def _streams(p: Pipeline, device: str) -> set[tuple[str, str]]:
    """The device's streams that have a detector or a last-scored time."""
    return {k for k in [*p._detectors, *p._last_scored] if k[0] == device}


def test_queued_readings_of_a_forgotten_device_are_dropped(store: Store) -> None:
    """Check that batches of a device still queued when it is forgotten (and its data
    deleted) bring back no detectors, last-scored times, quality counts or alert, while
    another device's queued readings are scored as before; forgetting does not wait."""
    p = Pipeline(store, Settings(), detect_async=True)
    try:
        gate = _gated(p)
        _feed(p, "pump-1", 1, 60)
        _feed(p, "pump-2", 1, 60)
        assert p._queue.qsize() > 50
        t = time.monotonic()
        p.forget_device("pump-1")
        took = time.monotonic() - t
        with p.commit_lock:
            store.delete_device("pump-1")
        gate.set()
        assert p.flush(60)
        assert _streams(p, "pump-1") == set()
        assert "pump-1" not in p._mv and "pump-1" not in p._max_seq
        assert p.quality_counts("pump-1")["metrics"] == {}
        assert not store.has_device_data("pump-1")
        assert store.list_alerts(device_id="pump-1") == []
        # the other device's backlog was scored, its fault alerted
        assert _streams(p, "pump-2") == {("pump-2", "t"), ("pump-2", "u")}
        assert [a.kind for a in store.list_alerts(device_id="pump-2")] == ["anomaly"]
        assert p._forgotten == {}  # nothing queued is left to drop
        assert took < 5  # forgetting no longer waits for the backlog
    finally:
        p.close()


def test_readings_after_the_deletion_are_scored_as_a_new_devices(store: Store) -> None:
    """Check that a device added again under the id while the old one's readings still wait
    is scored on its own readings only: the old backlog is dropped, the new readings (an
    hour earlier than the old ones, seq from 1 again) make its detectors and times."""
    p = Pipeline(store, Settings(), detect_async=True)
    try:
        gate = _gated(p)
        _feed(p, "pump-1", 1, 40)
        p.forget_device("pump-1")
        with p.commit_lock:
            store.delete_device("pump-1")
        _feed(p, "pump-1", 1, 30, t0=T0 - 3600, fault=False)  # the new device
        gate.set()
        assert p.flush(60)
        counts = p.quality_counts("pump-1")["metrics"]
        assert {m: c["seen"] for m, c in counts.items()} == {"t": 30, "u": 30}
        assert p._last_scored[("pump-1", "t")] == (T0 - 3600 + 30) * 10**9
        assert store.list_alerts(device_id="pump-1") == []
        assert p._max_seq["pump-1"] == 30
    finally:
        p.close()


def test_a_commit_on_its_way_to_detection_is_dropped_too(store: Store) -> None:
    """Check the window without a backlog: a batch committed before the device is forgotten
    but handed to detection after it (``ingest_many`` scores after releasing the commit
    lock) recreates none of the device's state."""
    p = Pipeline(store, Settings(), detect_async=False)
    committed, go = threading.Event(), threading.Event()

    def hold(device: str, mark: int) -> None:
        if device == "pump-1" and mark == 5:
            committed.set()
            go.wait(30)

    p.on_commit(hold)
    try:
        _feed(p, "pump-1", 1, 4, fault=False)
        th = threading.Thread(target=p.ingest, args=("pump-1", _body(5, T0 + 5, 20.0)))
        th.start()
        assert committed.wait(30)
        p.forget_device("pump-1")
        with p.commit_lock:
            store.delete_device("pump-1")
        go.set()
        th.join(30)
        assert _streams(p, "pump-1") == set()
        assert "pump-1" not in p._max_seq and "pump-1" not in p._gap_since
        assert p.quality_counts("pump-1")["metrics"] == {}
    finally:
        go.set()
        p.close()


def test_delete_over_http_with_a_backlog_lets_the_id_be_added_again(tmp_path: Path) -> None:
    """Check ``DELETE /v1/devices/pump-1`` with a detection backlog answers at once, the
    backlog brings back no alert or data, and ``POST /v1/devices`` takes the id again."""
    gen = build_env(tmp_path)
    env = next(gen)
    try:
        gate = _gated(env.pipeline)
        n = 0
        for s in range(30):
            batch = []
            for k in range(10):
                n += 1
                v = 80.0 + k if s == 29 else 20.0 + (n % 5) * 0.1
                batch.append({"ts": T0 + n, "metrics": {"t": v, "u": 5.0}, "seq": n})
            env.send(batch)
        r = env.client.delete("/v1/devices/pump-1", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        gate.set()
        assert env.pipeline.flush(60)
        assert not env.store.has_device_data("pump-1")
        r = env.client.post("/v1/devices", json={"name": "pump-1"}, headers=env.auth("admin"))
        assert r.status_code == 201, r.text
    finally:
        gen.close()
