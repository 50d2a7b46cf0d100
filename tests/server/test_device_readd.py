"""An id whose data outlived its registration: DELETE finds it, POST /v1/devices refuses it.

A device registered again under an id whose seqs are still stored would be acked the old
watermark for its seq 1, and would forget messages that were never stored.
"""

from __future__ import annotations

import time

from tests.server.conftest import Env, problem


def test_http_add_refuses_an_id_with_stored_data(env: Env) -> None:
    """Check an id revoked with its data kept is refused with 409 until DELETE removes the
    data; then a new device of that id is acked from its own seq 1."""
    for s in range(1, 51):
        env.send({"ts": int(time.time()) - 600 + s, "metrics": {"t": 1.0}, "seq": s})
    env.security.delete_device(env.device)  # revoked only, as beside a running gateway
    admin = env.auth("admin")
    body = problem(env.client.post("/v1/devices", json={"name": env.device}, headers=admin), 409)
    assert (body["reason"], body["field"], body["value"]) == ("has_data", "name", env.device)
    assert f"DELETE /v1/devices/{env.device}" in body["detail"]
    assert env.client.delete(f"/v1/devices/{env.device}", headers=admin).status_code == 200
    made = env.client.post("/v1/devices", json={"name": env.device}, headers=admin)
    assert made.status_code == 201, made.text
    sent = env.send({"ts": int(time.time()) - 5, "metrics": {"t": 1.0}, "seq": 1},
                    secret=made.json()["secret"])
    assert sent.json()["ack_seq"] == 1


def test_http_delete_finds_a_device_whose_readings_expired(env: Env) -> None:
    """Check DELETE removes what outlives retention (seqs, alerts) instead of answering 404."""
    from edgewise.store.base import Alert

    t0 = int(time.time()) - 600
    env.send({"ts": t0, "metrics": {"t": 1.0}, "seq": 1})
    env.store.add_alert(Alert(env.device, t0 * 10**9, t0 * 10**9, 0.99))
    env.store.delete_before(time.time_ns())  # retention took every reading
    env.security.delete_device(env.device)
    assert env.store.devices() == []
    resp = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
    assert resp.status_code == 200, resp.text
    assert env.store.list_alerts(device_id=env.device) == []
    assert not env.store.has_device_data(env.device)


def test_http_add_of_an_id_deleted_beside_the_gateway_says_the_deletion_is_unfinished(
        env: Env) -> None:
    """Check an id revoked by 'edgewise device delete' beside the gateway (kept-data mark,
    nothing stored) is refused naming the unfinished deletion, not data the store holds
    (it said "the store still holds data" of a device that never sent), and that DELETE
    finishes it."""
    env.security.keep_data(env.device)
    env.security.delete_device(env.device)  # what the CLI does beside a running gateway
    admin = env.auth("admin")
    body = problem(env.client.post("/v1/devices", json={"name": env.device}, headers=admin), 409)
    assert body["reason"] == "has_data" and "deletion" in body["detail"]
    assert "store still holds" not in body["detail"]
    assert env.client.delete(f"/v1/devices/{env.device}", headers=admin).status_code == 200
    made = env.client.post("/v1/devices", json={"name": env.device}, headers=admin)
    assert made.status_code == 201, made.text
