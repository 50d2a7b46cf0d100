"""Devices: list, add, delete with data, fleet health; admin actions audited."""

from __future__ import annotations

import time

import numpy as np

from edgewise.store.base import Alert
from tests.server.conftest import Env, problem


def _send(env: Env, device: str, secret: str, n: int = 3) -> int:
    ts = int(time.time()) - 100
    for i in range(n):
        r = env.send({"ts": ts + i, "metrics": {"a": float(i), "b": 1.0}, "seq": i + 1},
                     device=device, secret=secret)
        assert r.status_code == 200, r.text
    return ts


def _actions(env: Env) -> list[tuple[str, str, str]]:
    return [(e.actor, e.action, e.target) for e in env.security.audit_log(50)]


def test_admin_adds_a_device_whose_secret_sends(env: Env) -> None:
    """Check POST /v1/devices answers the secret once and it authenticates telemetry."""
    resp = env.client.post("/v1/devices", json={"name": "pump-2"}, headers=env.auth("admin"))
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["id"] == "pump-2" and len(body["secret"]) >= 43  # 256 bits urlsafe
    _send(env, "pump-2", body["secret"], n=1)
    assert (env.actor("admin"), "device.add", "pump-2") in _actions(env)
    listed = env.client.get("/v1/devices", headers=env.auth("viewer")).json()
    assert [d["id"] for d in listed] == ["pump-1", "pump-2"]
    assert listed[1]["readings"] == 2 and listed[1]["metrics"] == ["a", "b"]
    assert "secret" not in str(listed)


def test_a_device_added_over_rest_can_be_put_in_groups(env: Env) -> None:
    """Check POST /v1/devices takes groups (only the CLI could set them), lists them, and a
    bad group name is a 422 naming 'groups' that registers nothing."""
    resp = env.client.post("/v1/devices", json={"name": "pump-3", "groups": ["line-a"]},
                           headers=env.auth("admin"))
    assert resp.status_code == 201, resp.text
    assert resp.json()["groups"] == ["line-a"]
    assert env.security.device_groups("pump-3") == ["line-a"]
    listed = {d["id"]: d for d in env.client.get("/v1/devices", headers=env.auth("viewer")).json()}
    assert listed["pump-3"]["groups"] == ["line-a"] and listed["pump-1"]["groups"] == []
    body = problem(env.client.post("/v1/devices", json={"name": "pump-4", "groups": ["a/b"]},
                                   headers=env.auth("admin")), 422)
    assert (body["field"], body["reason"]) == ("groups", "bad_group")
    assert not env.security.has_device("pump-4")


def test_adding_a_bad_or_existing_device_is_named(env: Env) -> None:
    """Check 422 for an invalid name and 409 for an existing one, with field and value."""
    body = problem(env.client.post("/v1/devices", json={"name": "a/b"},
                                   headers=env.auth("admin")), 422)
    assert (body["field"], body["value"]) == ("name", "a/b")
    body = problem(env.client.post("/v1/devices", json={"name": "pump-1"},
                                   headers=env.auth("admin")), 409)
    assert (body["field"], body["value"]) == ("name", "pump-1")
    body = problem(env.client.post("/v1/devices", json={}, headers=env.auth("admin")), 422)
    assert (body["field"], body["reason"]) == ("name", "missing_field")


def test_delete_removes_credentials_and_all_data(env: Env) -> None:
    """Check DELETE /v1/devices/{id} revokes the secret and deletes readings, alerts and
    labels."""
    ts = _send(env, env.device, env.secret)
    env.store.add_alert(Alert(env.device, ts * 10**9, (ts + 2) * 10**9, 0.97))
    label = {"device_id": env.device, "start": str(ts), "end": str(ts + 2), "label": "anomaly"}
    resp = env.client.post("/v1/labels", json=label, headers=env.auth("operator"))
    assert resp.status_code in (200, 201), resp.text
    resp = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["credentials_deleted"] is True
    assert resp.json()["rows_deleted"] >= 6
    assert resp.json()["labels_deleted"] == 1
    resp = env.client.get(f"/v1/labels?device={env.device}", headers=env.auth("viewer"))
    assert resp.status_code == 200 and resp.json() == [], resp.text
    assert env.store.query(env.device) == []
    assert env.store.list_alerts(device_id=env.device) == []
    assert not env.security.has_device(env.device)
    problem(env.send({"ts": ts, "metrics": {"a": 1.0}}), 401)
    actions = _actions(env)
    assert (env.actor("admin"), "device.delete", env.device) in actions
    assert (env.actor("admin"), "device.delete_data", env.device) in actions
    problem(env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin")), 404)


def test_delete_unknown_device_is_404(env: Env) -> None:
    """Check the 404 names the device."""
    body = problem(env.client.delete("/v1/devices/nope", headers=env.auth("admin")), 404)
    assert (body["field"], body["value"], body["reason"]) == ("device_id", "nope",
                                                              "unknown_device")


def test_fleet_reports_health_last_seen_and_open_alerts(env: Env) -> None:
    """Check each device's health: alerting with an open alert, silent when never seen."""
    env.security.add_device("pump-2")
    ts = _send(env, env.device, env.secret)
    env.store.add_alert(Alert(env.device, ts * 10**9, (ts + 1) * 10**9, 0.95))
    fleet = env.client.get("/v1/fleet", headers=env.auth("viewer")).json()
    rows = {d["id"]: d for d in fleet["devices"]}
    assert rows["pump-1"]["health"] == "alerting"
    assert rows["pump-1"]["open_alerts"] == 1
    assert rows["pump-1"]["last_reading_ns"] == (ts + 2) * 10**9
    assert 0 <= rows["pump-1"]["last_seen_age_s"] < 60  # arrived now, readings 100 s old
    assert rows["pump-2"]["health"] == "silent" and rows["pump-2"]["last_seen"] is None
    assert fleet["open_alerts"] == 1
    stale = env.client.get("/v1/fleet?stale_after=10s", headers=env.auth("viewer")).json()
    assert stale["counts"] == {"alerting": 1, "silent": 1}
    body = problem(env.client.get("/v1/fleet?stale_after=soon", headers=env.auth("viewer")), 422)
    assert (body["field"], body["value"]) == ("stale_after", "soon")


def test_token_creation_is_admin_only_and_audited(env: Env) -> None:
    """Check POST /v1/tokens makes a working token and leaves an audit entry."""
    resp = env.client.post("/v1/tokens", json={"role": "viewer", "name": "grafana"},
                           headers=env.auth("admin"))
    assert resp.status_code == 201, resp.text
    token = resp.json()["token"]
    me = env.client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me == {"name": "grafana", "role": "viewer"}
    audit = env.client.get("/v1/audit", headers=env.auth("admin")).json()
    assert audit[0]["action"] == "token.create"
    assert audit[0]["actor"] == env.actor("admin")
    assert audit[0]["detail"]["role"] == "viewer"
    body = problem(env.client.post("/v1/tokens", json={"role": "root"},
                                   headers=env.auth("admin")), 422)
    assert (body["field"], body["value"]) == ("role", "root")


def test_delete_makes_the_pipeline_forget_the_device(env: Env) -> None:
    """Check a deleted then re-registered device starts with fresh detectors: the old
    device's learned normal (a≈10) must not flag the new device's normal (a≈1000)."""
    ts = int(time.time()) - 3000
    rng = np.random.default_rng(1)
    batch = [{"ts": ts + i, "seq": i + 1,
              "metrics": {"a": float(10 + rng.normal(0, 0.1)), "b": float(5 + rng.normal(0, 0.1))}}
             for i in range(300)]
    assert env.send(batch).status_code == 200
    assert env.pipeline.flush()
    assert env.pipeline._detectors and env.device in env.pipeline._mv
    resp = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
    assert resp.status_code == 200, resp.text
    assert not [k for k in env.pipeline._detectors if k[0] == env.device]
    assert env.device not in env.pipeline._mv and env.device not in env.pipeline._max_seq
    resp = env.client.post("/v1/devices", json={"name": env.device}, headers=env.auth("admin"))
    secret = resp.json()["secret"]
    batch = [{"ts": ts + 1000 + i, "seq": i + 1,
              "metrics": {"a": float(1000 + rng.normal(0, 0.1)),
                          "b": float(500 + rng.normal(0, 0.1))}}
             for i in range(20)]
    assert env.send(batch, secret=secret).status_code == 200
    assert env.pipeline.flush()
    assert env.store.list_alerts(device_id=env.device) == []


def _train_label_models(data_dir, device: str, n: int = 2) -> list[str]:
    """Write ``n`` versions of ``device``'s label model, as 'train --with-labels' does."""
    from edgewise.label.store import LabelStore
    from edgewise.label.workflow import train_with_labels

    rng = np.random.default_rng(0)
    ts = (1_700_000_000 + 60 * np.arange(200)) * 10**9
    hist = (ts, rng.normal(20, 0.3, (200, 1)), ["a"])
    with LabelStore(data_dir) as labels:
        return [train_with_labels(hist, device, labels, data_dir, window=10)["path"]
                for _ in range(n)]


def test_delete_removes_the_device_label_model_files(env: Env) -> None:
    """Check DELETE /v1/devices/{id} deletes the device's label model files (they hold
    features of its data) and counts them; another device's, even one whose id extends
    this one, stay. They were kept, and a device registered again under the id continued
    at the next version."""
    from pathlib import Path

    _send(env, env.device, env.secret)
    mine = _train_label_models(env.settings.data_dir, env.device)
    other = _train_label_models(env.settings.data_dir, f"{env.device}-v2", 1)
    resp = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["label_models_deleted"] == 2
    assert not any(Path(p).exists() for p in mine) and Path(other[0]).exists()
    (entry,) = [e for e in env.security.audit_log(50) if e.action == "device.delete_data"]
    assert entry.detail["label_models"] == 2
    assert _train_label_models(env.settings.data_dir, env.device, 1)[0].endswith("-v1.pkl")
