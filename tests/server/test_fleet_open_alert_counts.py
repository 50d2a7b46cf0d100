"""GET /v1/fleet counts every open alert: it listed the newest 100,000 and counted those, so
past that a device whose open alerts were older than 100,000 others showed 0 open alerts
and 'ok' (and every 3 s dashboard poll loaded up to 100,000 alert objects)."""

from __future__ import annotations

import time

from edgewise.store.base import Alert
from tests.server.conftest import Env

S = 10**9


def _fleet(env: Env) -> dict:
    resp = env.client.get("/v1/fleet", headers=env.auth("viewer"))
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_open_alerts_older_than_100000_others_are_counted(env: Env) -> None:
    """Check 3 day-old open alerts of one device beside 100,000 newer ones of another are
    counted (3, 'alerting'; 100,003 in all), as GET /v1/alerts lists them."""
    old, secret = env.security.add_device("old-pump")
    ts = int(time.time()) - 5
    for dev, sec in ((env.device, env.secret), (old, secret)):
        assert env.send([{"ts": ts, "metrics": {"a": 1.0}, "seq": 1}], device=dev,
                        secret=sec).status_code == 200
    assert env.pipeline.flush()
    now = time.time_ns()
    for i in range(3):
        env.store.add_alert(Alert(old, now - 86400 * S + i * S, now - 86400 * S + (i + 1) * S,
                                  0.9, created_ns=now - 86400 * S))
    hour = now - 3600 * S
    env.store._con.execute(  # type: ignore[attr-defined]  # DuckDB: a bulk insert
        "INSERT INTO alerts (id, device_id, start_ns, end_ns, score, kind, drivers, message, "
        "created_ns, status) SELECT 'bulk' || i::VARCHAR, ?, ? + i * 1000, ? + i * 1000 + 500, "
        "0.9, 'anomaly', '{}', '', ?, 'open' FROM range(100000) t(i)",
        [env.device, hour, hour, hour])
    listed = env.client.get("/v1/alerts", params={"device": old, "status": "open"},
                            headers=env.auth("viewer")).json()
    assert len(listed) == 3
    fleet = _fleet(env)
    rows = {d["id"]: d for d in fleet["devices"]}
    assert (rows[old]["open_alerts"], rows[old]["health"]) == (3, "alerting")
    assert (rows[env.device]["open_alerts"], rows[env.device]["health"]) == (100_000, "alerting")
    assert fleet["open_alerts"] == 100_003
    assert fleet["counts"] == {"alerting": 2}


def test_acknowledged_and_merged_alerts_are_not_open(env: Env) -> None:
    """Check the count keeps GET /v1/alerts?status=open's meaning: an acknowledged alert and
    one merged into another are not counted; a device with none open is 'ok'."""
    assert env.send([{"ts": int(time.time()) - 5, "metrics": {"a": 1.0}, "seq": 1}]
                    ).status_code == 200
    assert env.pipeline.flush()
    a, b, c = (env.store.add_alert(Alert(env.device, t * S, (t + 1) * S, 0.9))
               for t in (0, 10, 20))
    env.store.merge_alert(b.id, into=a.id, end_ns=11 * S)
    fleet = _fleet(env)
    assert (fleet["devices"][0]["open_alerts"], fleet["open_alerts"]) == (2, 2)
    env.store.acknowledge_alert(a.id, "ops")
    env.store.acknowledge_alert(c.id, "ops")
    fleet = _fleet(env)
    assert (fleet["devices"][0]["open_alerts"], fleet["devices"][0]["health"]) == (0, "ok")
    assert fleet["open_alerts"] == 0
