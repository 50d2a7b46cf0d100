"""Deleting a device withdraws the model releases aimed at it: a device registered again under
the same id is not served the old device's signed manifest (REST and CLI delete alike), while
releases to its groups stay."""

from __future__ import annotations

import base64
from pathlib import Path

from edgewise.registry import Manifest
from tests.server.conftest import Env, build_env
from tests.server.test_models_groups import _cli


def _rollout(env: Env, target: str) -> int:
    resp = env.client.post("/v1/registry/rollouts", headers=env.auth("operator"),
                           json={"name": "pmodel", "version": "1.0.0", "target": target})
    assert resp.status_code == 200, resp.text
    return resp.json()["release"]


def _targets(env: Env) -> list[str]:
    resp = env.client.get("/v1/registry", headers=env.auth("viewer"))
    assert resp.status_code == 200, resp.text
    return [r["target"] for r in resp.json()["releases"]]


def test_rest_delete_withdraws_the_device_releases_only(env: Env) -> None:
    """Check that after DELETE /v1/devices/pump-1 and adding pump-1 again, its model route
    answers 204 (it served the old device's manifest, target device:pump-1) and the release is
    gone from /v1/registry, while a group rollout still reaches a member of the group."""
    reg = env.client.app.state.registry
    reg.publish("pmodel", "1.0.0", b"pump model", format="pickle")
    env.security.set_device_groups(env.device, ["line-a"])
    mate, mate_secret = env.security.add_device("pump-2", groups=["line-a"])
    own = _rollout(env, "device:pump-1")
    group = _rollout(env, "group:line-a")
    resp = env.client.delete("/v1/devices/pump-1", headers=env.auth("admin"))
    assert resp.status_code == 200, resp.text
    deleted = resp.json()
    resp = env.client.post("/v1/devices", json={"name": "pump-1"}, headers=env.auth("admin"))
    assert resp.status_code == 201, resp.text
    secret = resp.json()["secret"]
    resp = env.client.get("/v1/devices/pump-1/model",
                          headers=env.device_headers("pump-1", secret))
    assert resp.status_code == 204, resp.text
    assert _targets(env) == ["group:line-a"]
    assert deleted.get("releases_withdrawn") == [own]
    assert (env.actor("admin"), "model.withdraw", "device:pump-1", {"releases": [own]}) in [
        (e.actor, e.action, e.target, e.detail) for e in env.security.audit_log()]
    # the group's release is untouched and still served to its members
    resp = env.client.get(f"/v1/devices/{mate}/model",
                          headers=env.device_headers(mate, mate_secret))
    assert resp.status_code == 200, resp.text
    m = Manifest.from_bytes(base64.b64decode(resp.json()["manifest"]))
    assert (m.release, m.target) == (group, "group:line-a")
    # a new release never reuses a withdrawn counter
    assert _rollout(env, "device:pump-1") == group + 1


def test_cli_delete_withdraws_the_device_releases(data_dir: Path) -> None:
    """Check that `edgewise device delete` withdraws the device's releases like the REST
    delete (audited as 'cli'), and a gateway started afterwards serves the re-added device
    nothing while the group rollout stays."""
    model = data_dir.parent / "pmodel.pkl"
    model.write_bytes(b"pump model")
    _cli(data_dir, "device", "add", "pump-5", "--group", "line-a")
    _cli(data_dir, "registry", "publish", "pmodel", "1.0.0", str(model), "--format", "pickle")
    _cli(data_dir, "registry", "rollout", "pmodel", "1.0.0", "device:pump-5")
    _cli(data_dir, "registry", "rollout", "pmodel", "1.0.0", "group:line-a")
    out = _cli(data_dir, "device", "delete", "pump-5", "--json")
    again = _cli(data_dir, "device", "add", "pump-5", "--json")
    gen = build_env(data_dir)
    env = next(gen)
    try:
        assert ("cli", "model.withdraw", "device:pump-5") in [
            (e.actor, e.action, e.target) for e in env.security.audit_log()]
        resp = env.client.get("/v1/devices/pump-5/model",
                              headers=env.device_headers("pump-5", again["secret"]))
        assert resp.status_code == 204, resp.text
        assert _targets(env) == ["group:line-a"]
        assert out.get("releases_withdrawn") == [1], out
    finally:
        gen.close()
