"""POST /v1/registry/rollouts after the edge/registry bug hunt: an empty model name (M1) and a
silent downgrade (L3) are 422s, a stray signing key (M3) a 409."""

from __future__ import annotations

import shutil

from edgewise.registry import load_or_create_key
from tests.server.conftest import Env, problem


def test_rollout_with_an_empty_name_is_422_and_signs_nothing(env: Env) -> None:
    """Check {"name": ""} is refused: it matched another model's version and signed its
    payload under the name '' (a model never published), which no device could fetch."""
    reg = env.client.app.state.registry
    reg.publish("secret-model", "1.0.0", b"secret", format="bin")
    for name in ("", "   "):
        body = problem(env.client.post(
            "/v1/registry/rollouts", headers=env.auth("operator"),
            json={"name": name, "version": "1.0.0", "target": f"device:{env.device}"}), 422)
        assert "'name'" in body["detail"] and "non-empty" in body["detail"]
    assert reg.releases() == []


def test_downgrade_without_rollback_is_422(env: Env) -> None:
    """Check an older version needs "rollback": true, and "rollback" needs an older one."""
    reg = env.client.app.state.registry
    reg.publish("m", "1.0.0", b"old", format="bin")
    reg.publish("m", "1.1.0", b"new", format="bin")
    body = {"name": "m", "version": "1.1.0", "target": f"device:{env.device}"}
    ok = env.client.post("/v1/registry/rollouts", json=body, headers=env.auth("operator"))
    assert ok.status_code == 200, ok.text
    down = {**body, "version": "1.0.0"}
    detail = problem(env.client.post("/v1/registry/rollouts", json=down,
                                     headers=env.auth("operator")), 422)["detail"]
    assert "older than '1.1.0'" in detail
    problem(env.client.post("/v1/registry/rollouts", json={**body, "rollback": True},
                            headers=env.auth("operator")), 422)
    r = env.client.post("/v1/registry/rollouts", json={**down, "rollback": True},
                        headers=env.auth("operator"))
    assert r.status_code == 200 and r.json()["kind"] == "rollback", r.text


def test_rollout_with_a_stray_key_restored_is_409(env: Env, tmp_path) -> None:
    """Check a signing_key.pem that is not the issued key is refused, naming both keys."""
    reg = env.client.app.state.registry
    reg.publish("m", "1.0.0", b"model", format="bin")
    issued = reg.key_id
    other = load_or_create_key(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "signing_key.pem",
                env.settings.data_dir / "registry" / "signing_key.pem")
    body = problem(env.client.post(
        "/v1/registry/rollouts", headers=env.auth("operator"),
        json={"name": "m", "version": "1.0.0", "target": f"device:{env.device}"}), 409)
    assert body["reason"] == "key_mismatch"
    assert issued in body["detail"] and other.key_id in body["detail"]
    listing = env.client.get("/v1/registry", headers=env.auth("viewer")).json()
    assert (listing["key_state"], listing["key_id"]) == ("mismatch", issued)
