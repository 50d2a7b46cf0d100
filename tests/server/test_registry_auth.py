"""The registry routes check credentials as the rest of the API does (:mod:`edgewise.server.deps`).

An API fuzzer found them telling which device ids exist ("Device 'nonexist' is not
registered." against "Device 'pump-2': wrong secret."), refusing ``Authorization: bearer …``
(the scheme is case-insensitive, RFC 7235) and answering 401s without ``WWW-Authenticate``
or ``field``.

The tests whose requests are refused share one app (``module_env``); those that publish or
roll out have one of their own.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.conftest import Env, build_env, problem

WRONG = {"Authorization": "Bearer wrong"}


def _publish(env: Env) -> str:
    reg = env.client.app.state.registry
    return reg.publish("detector", "1.0.0", b"model-bytes", format="pickle").sha256


def _same_401(a: dict, b: dict) -> None:
    """Two 401 bodies that differ only by the device id they name."""
    assert (a["reason"], a["field"], a["value"]) == ("bad_credentials", "Authorization", None)
    assert {k: v for k, v in a.items() if k != "detail"} == {
        k: v for k, v in b.items() if k != "detail"}


def test_a_wrong_secret_does_not_tell_whether_the_device_exists(env: Env) -> None:
    """Check an unknown device and a registered one with a wrong secret get the same 401, as
    telemetry words it, with WWW-Authenticate, on both device routes."""
    sha = _publish(env)
    got = {}
    for dev in ("nonexist", env.device):
        r = env.client.get(f"/v1/devices/{dev}/model", headers=WRONG)
        got[dev] = problem(r, 401)
        assert got[dev]["detail"] == f"Device {dev!r} is unknown or the secret is wrong."
        assert r.headers["www-authenticate"] == "Bearer"
        blob = env.client.get(f"/v1/models/{sha}", headers={**WRONG, "X-Device-Id": dev})
        assert problem(blob, 401) == got[dev]
        assert blob.headers["www-authenticate"] == "Bearer"
        sent = env.send({"ts": 1769860800, "metrics": {"a": 1.0}, "seq": 1}, device=dev,
                        secret="wrong")
        assert problem(sent, 401)["detail"] == got[dev]["detail"]  # telemetry's words
    _same_401(got["nonexist"], got[env.device])


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer"])
def test_the_bearer_scheme_is_case_insensitive(env: Env, scheme: str) -> None:
    """Check 'Authorization: bearer <token>' works on the registry as on /v1/me, for tokens
    and for device secrets."""
    def auth(secret: str) -> dict[str, str]:
        return {"Authorization": f"{scheme} {secret}"}

    assert env.client.get("/v1/me", headers=auth(env.tokens["viewer"])).status_code == 200
    r = env.client.get("/v1/registry", headers=auth(env.tokens["viewer"]))
    assert r.status_code == 200, r.text
    sha = _publish(env)
    body = {"name": "detector", "version": "1.0.0", "target": f"device:{env.device}"}
    r = env.client.post("/v1/registry/rollouts", json=body, headers=auth(env.tokens["operator"]))
    assert r.status_code == 200, r.text
    r = env.client.get(f"/v1/devices/{env.device}/model", headers=auth(env.secret))
    assert r.status_code == 200, r.text
    r = env.client.get(f"/v1/models/{sha}", headers={**auth(env.secret), "X-Device-Id":
                                                     env.device})
    assert r.status_code == 200 and r.content == b"model-bytes"


@pytest.mark.parametrize("path", ["/v1/registry", "/v1/devices/pump-1/model"])
@pytest.mark.parametrize("headers, reason", [
    ({}, "missing_credentials"),
    ({"Authorization": "Basic dXNlcjpwdw=="}, "bad_credentials"),
    ({"Authorization": "Bearer"}, "bad_credentials"),
])
def test_missing_or_malformed_credentials_are_the_apis_401(
        module_env: Env, path: str, headers: dict, reason: str) -> None:
    """Check a missing header or another scheme is the same 401 as elsewhere in the API: it
    names the header, never a value, and asks for Bearer."""
    env = module_env
    r = env.client.get(path, headers=headers)
    body = problem(r, 401)
    assert (body["field"], body["value"], body["reason"]) == ("Authorization", None, reason)
    assert r.headers["www-authenticate"] == "Bearer"
    assert body == problem(env.client.get("/v1/devices", headers=headers), 401)


def test_tokens_get_the_apis_401_and_403(module_env: Env) -> None:
    """Check an unknown token, a role too low, and a device secret where a token is needed
    answer as on every other token route."""
    env = module_env
    bad = {"Authorization": "Bearer ew_not-a-token"}
    r = env.client.get("/v1/registry", headers=bad)
    assert problem(r, 401) == problem(env.client.get("/v1/devices", headers=bad), 401)
    assert r.headers["www-authenticate"] == "Bearer"
    body = {"name": "detector", "version": "1.0.0", "target": "group:all"}
    low = problem(env.client.post("/v1/registry/rollouts", json=body,
                                  headers=env.auth("viewer")), 403)
    assert low["detail"] == ("Token 'test-viewer' has role 'viewer'; this needs 'operator' or "
                             "higher.")
    assert (low["field"], low["value"], low["reason"]) == ("role", "viewer", "forbidden")
    dev = problem(env.client.get("/v1/registry", headers=env.device_headers()), 403)
    assert dev["reason"] == "device_credentials"


def test_a_device_may_fetch_only_its_own_model(module_env: Env) -> None:
    """Check an X-Device-Id naming another device than the path is a 403 naming both, as for
    telemetry sent to another device's path."""
    env = module_env
    body = problem(env.client.get("/v1/devices/pump-9/model", headers=env.device_headers()),
                   403)
    assert (body["field"], body["value"], body["allowed"], body["reason"]) == (
        "X-Device-Id", env.device, "pump-9", "wrong_device")
    r = env.client.get(f"/v1/models/{'0' * 64}", headers={"Authorization": f"Bearer {env.secret}"})
    body = problem(r, 401)
    assert (body["field"], body["reason"]) == ("X-Device-Id", "missing_credentials")
    assert r.headers["www-authenticate"] == "Bearer"


def test_a_throttled_device_gets_429_with_retry_after(data_dir: Path) -> None:
    """Check a wrong secret after too many in a row gets 429 and Retry-After on the model
    route, as on telemetry, not a 401 (the right secret still passes)."""
    gen = build_env(data_dir, throttle_after_failures=2)
    env = next(gen)
    try:
        for _ in range(2):
            problem(env.client.get(f"/v1/devices/{env.device}/model",
                                   headers=env.device_headers(secret="x" * 43)), 401)
        r = env.client.get(f"/v1/devices/{env.device}/model",
                           headers=env.device_headers(secret="x" * 43))
        body = problem(r, 429)
        assert body["reason"] == "throttled" and int(r.headers["retry-after"]) >= 1
        r = env.client.get(f"/v1/devices/{env.device}/model", headers=env.device_headers())
        assert r.status_code in (200, 204)
    finally:
        gen.close()
