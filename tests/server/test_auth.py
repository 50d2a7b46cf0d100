"""Who may do what: device secrets only send, viewers read, operators act, admins manage.

The tests whose requests are refused (or only read) share one app (``module_env``); those
that send, count failures or throttle have one of their own.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.server.conftest import Env, build_env, problem


def _ok_payload() -> dict:
    return {"ts": int(time.time()) - 5, "metrics": {"a": 1.0}, "seq": 1}


@pytest.mark.parametrize("headers, reason", [
    ({}, "missing_credentials"),
    ({"Authorization": "Basic dXNlcjpwdw=="}, "bad_credentials"),
    ({"Authorization": "Bearer"}, "bad_credentials"),
    ({"Authorization": "Bearer ew_not-a-token"}, "bad_credentials"),
])
def test_reading_without_a_valid_token_is_401(module_env: Env, headers: dict, reason: str) -> None:
    """Check that each kind of missing or bad token is a 401 naming the header, not the secret."""
    env = module_env
    body = problem(env.client.get("/v1/devices", headers=headers), 401)
    assert (body["field"], body["value"], body["reason"]) == ("Authorization", None, reason)


def test_401_asks_for_bearer(module_env: Env) -> None:
    """Check the WWW-Authenticate challenge on 401."""
    env = module_env
    resp = env.client.get("/v1/alerts")
    assert resp.headers["www-authenticate"] == "Bearer"


def test_device_secret_cannot_read(module_env: Env) -> None:
    """Check that a device's own secret gets 403 on every read route (and 401 without its id)."""
    env = module_env
    for path in ("/v1/devices", "/v1/fleet", "/v1/alerts", f"/v1/devices/{env.device}/readings"):
        body = problem(env.client.get(path, headers=env.device_headers()), 403)
        assert body["reason"] == "device_credentials", path
        assert env.secret not in str(body)
    bare = {"Authorization": f"Bearer {env.secret}"}
    body = problem(env.client.get("/v1/devices", headers=bare), 401)
    assert env.secret not in str(body)


def test_api_token_cannot_send_telemetry(env: Env) -> None:
    """Check that an admin token is not a device secret."""
    resp = env.send(_ok_payload(), secret=env.tokens["admin"])
    body = problem(resp, 401)
    assert body["reason"] == "bad_credentials"
    assert env.tokens["admin"] not in resp.text


@pytest.mark.parametrize("device, secret_of", [("pump-1", None), ("pump-9", "pump-1"),
                                               ("pump-1", "wrong")])
def test_wrong_device_credentials_are_401(env: Env, device: str, secret_of: str | None) -> None:
    """Check unknown device, and a valid secret used for another device id, are refused."""
    secret = "x" * 43 if secret_of == "wrong" else env.secret
    if secret_of is None:
        resp = env.client.post("/v1/telemetry", json=_ok_payload(),
                               headers={"Authorization": f"Bearer {env.secret}"})
        assert problem(resp, 401)["field"] == "X-Device-Id"
        return
    resp = env.send(_ok_payload(), device=device, secret=secret)
    body = problem(resp, 401)
    assert body["field"] == "Authorization"
    assert secret not in resp.text
    assert env.store.count_readings() == 0
    assert env.pipeline.metrics.get("edgewise_auth_failures_total", reason="bad_secret") == 1


def test_wrong_secrets_are_throttled_with_retry_after(data_dir: Path) -> None:
    """Check that after throttle_after wrong secrets the device gets 429 + Retry-After."""
    gen = build_env(data_dir, throttle_after_failures=3)
    env = next(gen)
    try:
        for _ in range(3):
            problem(env.send(_ok_payload(), secret="wrong-secret"), 401)
        resp = env.send(_ok_payload(), secret="wrong-secret")
        body = problem(resp, 429)
        assert body["reason"] == "throttled"
        assert int(resp.headers["retry-after"]) >= 1
        assert env.security.throttled_attempts("testclient") >= 1
        assert env.send(_ok_payload()).status_code == 200  # the right secret still passes
    finally:
        gen.close()


def test_rate_limit_is_429_with_retry_after(data_dir: Path) -> None:
    """Check a device over its rate limit gets 429, and what came before stays stored."""
    gen = build_env(data_dir, rate_limit_per_s=1.0, rate_limit_burst=4.0)
    env = next(gen)
    try:
        ts = int(time.time()) - 60
        first = env.send({"ts": ts, "metrics": {"a": 1.0, "b": 2.0}, "seq": 1})
        assert first.status_code == 200, first.text
        resp = env.send({"ts": ts + 1, "metrics": {f"m{i}": 1.0 for i in range(10)}, "seq": 2})
        body = problem(resp, 429)
        assert body["reason"] == "rate_limited"
        assert int(resp.headers["retry-after"]) >= 1
        assert env.store.count_readings() == 2
    finally:
        gen.close()


@pytest.mark.parametrize("role, method, path, json", [
    ("viewer", "post", "/v1/alerts/x/ack", None),
    ("viewer", "post", "/v1/alerts/x/label", {"label": "true_alarm"}),
    ("operator", "post", "/v1/devices", {"name": "pump-2"}),
    ("operator", "delete", "/v1/devices/pump-1", None),
    ("operator", "post", "/v1/tokens", {"role": "viewer"}),
    ("operator", "get", "/v1/audit", None),
    ("viewer", "post", "/v1/devices", {"name": "pump-2"}),
])
def test_roles_are_enforced(module_env: Env, role: str, method: str, path: str, json: dict) -> None:
    """Check viewer cannot ack/label, operator cannot manage devices or tokens: 403 + role."""
    env = module_env
    kw = {"json": json} if json is not None else {}
    resp = getattr(env.client, method)(path, headers=env.auth(role), **kw)
    body = problem(resp, 403)
    assert (body["field"], body["value"]) == ("role", role)
    assert "admin" in body["allowed"]
    assert not env.security.has_device("pump-2")
    assert env.security.has_device("pump-1")


def test_me_names_the_caller(module_env: Env) -> None:
    """Check /v1/me answers the token's name and role."""
    env = module_env
    assert env.client.get("/v1/me", headers=env.auth("operator")).json() == {
        "name": "test-operator", "role": "operator"}


def test_device_secrets_sent_to_token_routes_are_counted_and_throttled(data_dir: Path) -> None:
    """Check a device secret guessed on a token route (GET /v1/me with X-Device-Id) is
    counted and throttled as on telemetry: wrong ones are 401 and counted, then 429 with
    Retry-After; the right one is still the 403, and a valid token still passes. These
    routes used to answer every guess, uncounted and never throttled."""
    gen = build_env(data_dir, throttle_after_failures=3)
    env = next(gen)
    try:
        def failures(reason: str) -> float:
            return env.pipeline.metrics.get("edgewise_auth_failures_total", reason=reason)

        wrong = env.device_headers(secret="x" * 43)
        for _ in range(3):
            body = problem(env.client.get("/v1/me", headers=wrong), 401)
            assert body["reason"] == "bad_credentials"
        assert failures("bad_secret") == 3
        r = env.client.get("/v1/me", headers=wrong)
        body = problem(r, 429)
        assert body["reason"] == "throttled" and int(r.headers["retry-after"]) >= 1
        assert failures("throttled") == 1
        assert problem(env.send(_ok_payload(), secret="x" * 43), 429)["reason"] == "throttled"
        right = problem(env.client.get("/v1/me", headers=env.device_headers()), 403)
        assert right["reason"] == "device_credentials"
        token = {**env.auth("viewer"), "X-Device-Id": env.device}
        assert env.client.get("/v1/me", headers=token).json()["role"] == "viewer"
    finally:
        gen.close()
