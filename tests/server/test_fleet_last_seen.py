"""Fleet health and last-seen go by when a device's messages arrived at the gateway, not by
the times its readings carry: a device whose clock is slow, or an agent uploading a backlog,
is not 'stale' while it sends; one whose clock is fast is never seen in the future."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from edgewise.gateway.pipeline import Pipeline
from edgewise.server.app import create_app
from tests.server.conftest import Env

S = 10**9


def _send(env: Env, ts: int, n: int = 3, device: str | None = None,
          secret: str | None = None) -> None:
    """``n`` readings one second apart, the first stamped ``ts``, over HTTP."""
    batch = [{"ts": ts + i, "seq": i + 1, "metrics": {"a": float(i)}} for i in range(n)]
    r = env.send(batch, device=device, secret=secret)
    assert r.status_code == 200 and r.json()["accepted"] == n, r.text


def _fleet(env: Env, client: TestClient | None = None, **query: str) -> dict[str, dict]:
    resp = (client or env.client).get("/v1/fleet", params=query, headers=env.auth("viewer"))
    assert resp.status_code == 200, resp.text
    return {d["id"]: d for d in resp.json()["devices"]}


def test_a_device_sending_old_readings_now_is_ok_not_stale(env: Env) -> None:
    """Check a device whose clock is 600 s slow (or an agent replaying a backlog), sending
    now, is 'ok' with an age of about 0 (it was 'stale' at 601 s), and that the newest
    reading's own time is kept as last_reading."""
    ts = int(time.time()) - 600
    _send(env, ts)
    row = _fleet(env)["pump-1"]
    assert row["health"] == "ok", row
    assert 0 <= row["last_seen_age_s"] < 30, row
    assert row["last_seen_from"] == "arrival"
    assert row["last_reading_ns"] == (ts + 2) * S
    assert row["last_seen_ns"] - row["last_reading_ns"] > 590 * S
    listed = {d["id"]: d for d in env.client.get(
        "/v1/devices", headers=env.auth("viewer")).json()}
    assert listed["pump-1"]["last_seen_ns"] == row["last_seen_ns"]


def test_arrivals_over_mqtt_count_too(env: Env) -> None:
    """Check a message taken in by the MQTT path (the same pipeline's ingest_many) marks the
    device heard from, whatever its readings' times."""
    payload = json.dumps({"ts": time.time() - 3600, "seq": 1, "metrics": {"a": 1.0}})
    (res,) = env.pipeline.ingest_many([("pump-1", payload.encode())], via="mqtt")
    assert res.accepted == 1, res
    row = _fleet(env)["pump-1"]
    assert row["health"] == "ok" and 0 <= row["last_seen_age_s"] < 30, row
    assert row["last_seen_from"] == "arrival"


def test_a_fast_clock_never_gives_a_negative_age(env: Env) -> None:
    """Check a device whose clock is 250 s fast shows an age of 0 or more, not -250 s."""
    _send(env, int(time.time()) + 250, n=1)
    row = _fleet(env)["pump-1"]
    assert 0 <= row["last_seen_age_s"] < 30, row
    assert row["last_seen_ns"] <= time.time_ns() < row["last_reading_ns"]


@contextmanager
def _restarted(env: Env) -> Iterator[TestClient]:
    """A new gateway (a fresh pipeline: no arrivals) over the same store and credentials."""
    pipeline = Pipeline(env.store, env.settings, env.security, detect_async=False)
    app = create_app(store=env.store, security=env.security, pipeline=pipeline,
                     settings=env.settings)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        pipeline.close()


def test_after_a_restart_last_seen_is_the_newest_reading_capped_at_now(env: Env) -> None:
    """Check that before a device sends again after a gateway restart, last_seen is its
    newest reading's time (a slow device's stale by it), capped at now for a fast clock's
    reading from the future (never a negative age), and says it came from the reading."""
    env.security.add_device("quiet")
    _, fast_secret = env.security.add_device("fast")
    _send(env, int(time.time()) - 600)
    _send(env, int(time.time()) + 250, n=1, device="fast", secret=fast_secret)
    with _restarted(env) as client:
        rows = _fleet(env, client)
        slow, fast = rows["pump-1"], rows["fast"]
        assert fast["health"] == "ok" and fast["last_seen_age_s"] == 0, fast
        assert fast["last_seen_ns"] < fast["last_reading_ns"]
        assert slow["health"] == "stale" and 590 < slow["last_seen_age_s"] < 700, slow
        assert slow["last_seen_ns"] == slow["last_reading_ns"]
        assert slow["last_seen_from"] == fast["last_seen_from"] == "reading"
        assert rows["quiet"]["health"] == "silent" and rows["quiet"]["last_seen"] is None


def test_a_deleted_device_is_no_longer_heard_from(env: Env) -> None:
    """Check deleting a device drops its arrival, so the id registered again is 'silent'
    until it sends, not 'ok' on the old device's last message."""
    _send(env, int(time.time()) - 10)
    assert "pump-1" in env.pipeline.arrivals()
    resp = env.client.delete("/v1/devices/pump-1", headers=env.auth("admin"))
    assert resp.status_code == 200, resp.text
    assert "pump-1" not in env.pipeline.arrivals()
    env.security.add_device("pump-1")
    row = _fleet(env)["pump-1"]
    assert (row["health"], row["last_seen"], row["last_seen_age_s"]) == ("silent", None, None)
