"""The model registry is mounted in the app: rollouts by operators, signed releases and model
bytes for devices, the signing key made in the data dir at first start."""

from __future__ import annotations

import base64
import os
import stat

from edgewise.registry import verify
from tests.server.conftest import Env, problem


def test_rollout_then_device_fetches_a_verifiable_release(env: Env) -> None:
    """Check POST /v1/registry/rollouts (operator) signs a release that the device fetches
    from GET /v1/devices/{id}/model and GET /v1/models/{sha256} and that verifies."""
    key = env.settings.data_dir / "registry" / "signing_key.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    reg = env.client.app.state.registry
    payload = b"\x00model-bytes\xff" * 10
    mv = reg.publish("detector", "1.0.0", payload, format="pickle", trained_on="test")
    dev = env.device_headers()
    r = env.client.get(f"/v1/devices/{env.device}/model", headers=dev)
    assert r.status_code == 204  # nothing rolled out yet
    body = {"name": "detector", "version": "1.0.0", "target": f"device:{env.device}"}
    problem(env.client.post("/v1/registry/rollouts", json=body, headers=env.auth("viewer")),
            403)
    problem(env.client.post("/v1/registry/rollouts", json={**body, "version": "9"},
                            headers=env.auth("operator")), 404)
    r = env.client.post("/v1/registry/rollouts", json=body, headers=env.auth("operator"))
    assert r.status_code == 200, r.text
    assert r.json()["release"] == 1 and r.json()["key_id"] == reg.key_id
    assert (env.actor("operator"), "model.rollout", f"device:{env.device}") in {
        (e.actor, e.action, e.target) for e in env.security.audit_log(20)}

    env_ = env.client.get(f"/v1/devices/{env.device}/model", headers=dev)
    assert env_.status_code == 200, env_.text
    blob = env.client.get(f"/v1/models/{mv.sha256}", headers=dev)
    assert blob.status_code == 200 and blob.content == payload
    m = verify(base64.b64decode(env_.json()["manifest"]),
               base64.b64decode(env_.json()["signature"]), blob.content,
               trusted_keys={reg.key_id: reg.public_key_bytes}, device_id=env.device)
    assert (m.release, m.version, m.size) == (1, "1.0.0", len(payload))

    # a wrong secret, an API token, or no credentials get nothing
    problem(env.client.get(f"/v1/devices/{env.device}/model",
                           headers=env.device_headers(secret="x" * 43)), 401)
    problem(env.client.get(f"/v1/models/{mv.sha256}", headers=env.auth("admin")), 401)
    problem(env.client.get(f"/v1/models/{'0' * 64}", headers=dev), 404)
    spec = env.client.get("/openapi.json").json()
    op = spec["paths"]["/v1/devices/{device_id}/model"]["get"]
    assert op["security"] == [{"deviceSecret": []}]
    assert spec["paths"]["/v1/registry/rollouts"]["post"]["security"] == [{"apiToken": []}]


def test_rollout_refuses_an_expiry_that_is_not_a_lifetime(env: Env) -> None:
    """Check expires_days of 0, -1 (an already-expired release) and 1e300 (a 500 before) are
    refused with a 422 naming the field, and nothing is signed."""
    reg = env.client.app.state.registry
    reg.publish("detector", "1.0.0", b"model", format="pickle")
    body = {"name": "detector", "version": "1.0.0", "target": f"device:{env.device}"}
    for days in (0, -1, 1e300, 3651):
        r = env.client.post("/v1/registry/rollouts", json={**body, "expires_days": days},
                            headers=env.auth("operator"))
        p = problem(r, 422)
        assert p["field"] == "expires_days" and p["value"] == days, p
        assert "must be a number of days in (0, 3650]" in p["detail"]
    assert reg.releases() == []
    r = env.client.post("/v1/registry/rollouts", json={**body, "expires_days": 0.5},
                        headers=env.auth("operator"))
    assert r.status_code == 200, r.text


def test_a_lost_signing_key_is_refused_over_rest_and_never_remade(env: Env) -> None:
    """Check a registry whose signing_key.pem was deleted lists as 'lost' (reading made a new
    key), still serves its release to devices, and a rollout is a 409 naming the key."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from edgewise.registry import Registry
    from edgewise.server.problems import install_problem_handlers
    from edgewise.server.routes.models import make_router

    reg = env.client.app.state.registry
    reg.publish("detector", "1.0.0", b"model", format="pickle")
    body = {"name": "detector", "version": "1.0.0", "target": f"device:{env.device}"}
    r = env.client.post("/v1/registry/rollouts", json=body, headers=env.auth("operator"))
    assert r.status_code == 200, r.text
    kid = reg.key_id
    pem = env.settings.data_dir / "registry" / "signing_key.pem"
    pem.unlink()
    lost = Registry(env.settings.data_dir)  # the gateway restarted after the key was deleted
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(make_router(lost, env.security))
    with TestClient(app) as client:
        listing = client.get("/v1/registry", headers=env.auth("viewer")).json()
        assert (listing["key_id"], listing["key_state"]) == (kid, "lost")
        got = client.get(f"/v1/devices/{env.device}/model", headers=env.device_headers())
        assert got.status_code == 200, got.text
        p = problem(client.post("/v1/registry/rollouts", json=body,
                                headers=env.auth("operator")), 409)
        assert p["reason"] == "key_lost" and kid in p["detail"], p
    assert not pem.exists() and [x.release for x in lost.releases()] == [1]
    lost.close()


def test_a_key_deleted_while_the_gateway_runs_is_refused_at_once(env: Env) -> None:
    """Check the running gateway stops signing when signing_key.pem is deleted under it: it
    kept signing with the key in memory and listed it 'ok' while the CLI said 'LOST'. The
    409 names the field, the file and what would be right."""
    reg = env.client.app.state.registry
    reg.publish("detector", "1.0.0", b"model", format="pickle")
    body = {"name": "detector", "version": "1.0.0", "target": f"device:{env.device}"}
    r = env.client.post("/v1/registry/rollouts", json=body, headers=env.auth("operator"))
    assert r.status_code == 200, r.text
    pem = env.settings.data_dir / "registry" / "signing_key.pem"
    pem.unlink()
    listing = env.client.get("/v1/registry", headers=env.auth("viewer")).json()
    assert listing["key_state"] == "lost"
    p = problem(env.client.post("/v1/registry/rollouts", json=body,
                                headers=env.auth("operator")), 409)
    assert p["reason"] == "key_lost" and p["field"] == "signing_key", p
    assert p["value"] == str(pem) and "new-key" in p["allowed"], p
    assert not pem.exists() and [x.release for x in reg.releases()] == [1]


def test_a_device_fetches_only_models_released_to_it_or_its_groups(env: Env) -> None:
    """Check GET /v1/models/{sha256} gives a device only a model released to it or to one of
    its groups: any authenticated device fetched any model by its hash, so a release to
    group line-a reached devices outside it. Another group's model is a 404, as an unknown
    hash is; in the group, the device gets it."""
    reg = env.client.app.state.registry
    mv = reg.publish("line-model", "1.0.0", b"line-a only" * 8, format="pickle")
    reg.rollout("line-model", "1.0.0", "group:line-a")
    dev = env.device_headers()
    gone = problem(env.client.get(f"/v1/models/{mv.sha256}", headers=dev), 404)
    unknown = problem(env.client.get(f"/v1/models/{'0' * 64}", headers=dev), 404)
    assert gone["reason"] == unknown["reason"] == "not_found"
    env.security.set_device_groups(env.device, ["line-a"])
    r = env.client.get(f"/v1/models/{mv.sha256}", headers=dev)
    assert r.status_code == 200 and r.content == b"line-a only" * 8


def test_a_group_rollout_over_rest_keeps_or_refuses_a_device_rollback(env: Env) -> None:
    """Check POST /v1/registry/rollouts refuses a group release that would move a member
    device off its own rollback order (422 naming ``keep_rollbacks``, nothing signed) and,
    with ``"keep_rollbacks": true``, signs it with the order signed again (``kept``, each
    audited): over REST the refusal named a field the body did not have."""
    reg = env.client.app.state.registry
    for v in ("1.0.0", "2.0.0"):
        reg.publish("ewz", v, f"model {v}".encode() * 8, format="pickle")
    env.security.set_device_groups(env.device, ["line-a"])
    op = env.auth("operator")
    post = env.client.post
    assert post("/v1/registry/rollouts", headers=op, json={
        "name": "ewz", "version": "2.0.0", "target": "group:line-a"}).status_code == 200
    assert post("/v1/registry/rollouts", headers=op, json={
        "name": "ewz", "version": "1.0.0", "target": f"device:{env.device}",
        "rollback": True}).status_code == 200
    again = {"name": "ewz", "version": "2.0.0", "target": "group:line-a"}
    body = problem(post("/v1/registry/rollouts", headers=op, json=again), 422)
    assert body["field"] == "keep_rollbacks" and body["value"] is False
    assert env.device in body["detail"] and "true" in body["allowed"]
    assert reg.current(env.device, groups=["line-a"]).manifest.version == "1.0.0"

    r = post("/v1/registry/rollouts", headers=op, json={**again, "keep_rollbacks": True})
    assert r.status_code == 200, r.text
    kept = r.json()["kept"]
    assert [(k["version"], k["target"]) for k in kept] == [("1.0.0", f"device:{env.device}")]
    assert kept[0]["release"] == r.json()["release"] + 1
    assert reg.current(env.device, groups=["line-a"]).manifest.version == "1.0.0"
    audited = [e.detail for e in env.security.audit_log(20) if e.action == "model.rollout"]
    assert any(d.get("kept_with") == r.json()["release"] for d in audited)
