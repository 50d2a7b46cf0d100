"""Server hunt s43: security.sqlite held, HEAD, the 405 problem, non-UTF-8 JSON, '+' as space.

* With ``security.sqlite`` held by another writer past the busy timeout, ``POST /v1/devices``
  answered 500 ``internal`` saying what it had done stands (nothing was): now 503
  ``security_busy`` with ``Retry-After``, saying nothing was done.
* ``HEAD`` on a GET route was 405; the 405 problem named neither the method nor ``Allow``.
* A UTF-16 JSON body registered a device (201); it is 422 ``bad_json`` naming ``body``.
* ``?start=...T00:05:00+05:30`` (the '+' read as a space) gets a hint to send it as ``%2B``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient

from tests.conftest import write_locked
from tests.server.conftest import Env, problem


@contextmanager
def _held(env: Env) -> Iterator[None]:
    """``security.sqlite`` held by another connection's write lock; the app's own busy
    timeout cut to 50 ms so the test is fast."""
    env.security._db.execute("PRAGMA busy_timeout=50")
    try:
        with write_locked(env.settings.data_dir / "security.sqlite"):
            yield
    finally:
        env.security._db.execute("PRAGMA busy_timeout=10000")


def test_security_busy_is_503_with_retry_after_and_nothing_done(env: Env) -> None:
    client = TestClient(env.client.app, raise_server_exceptions=False)
    with _held(env):
        r = client.post("/v1/devices", headers=env.auth("admin"), json={"name": "pump-9"})
        body = problem(r, 503)
        assert body["reason"] == "security_busy"
        assert r.headers["retry-after"] == "10"
        assert "security.sqlite" in body["detail"] and "Nothing of" in body["detail"]
        assert "stands" not in body["detail"]
        r = client.post("/v1/tokens", headers=env.auth("admin"), json={"role": "viewer"})
        assert problem(r, 503)["reason"] == "security_busy"
    assert not env.security.has_device("pump-9")
    r = client.post("/v1/devices", headers=env.auth("admin"), json={"name": "pump-9"})
    assert r.status_code == 201, r.text  # the retry goes through


def test_security_busy_documented_in_openapi(env: Env) -> None:
    spec = env.client.get("/openapi.json").json()
    resp = spec["paths"]["/v1/devices"]["post"]["responses"]["503"]
    assert "security_busy" in resp["description"] and "Retry-After" in resp["headers"]


def test_head_answers_every_get_route_without_body(env: Env) -> None:
    for url in ("/healthz", "/", "/v1/devices"):
        got = env.client.get(url, headers=env.auth("viewer"))
        head = env.client.head(url, headers=env.auth("viewer"))
        assert head.status_code == got.status_code == 200, (url, head.text)
        assert head.content == b""
        assert head.headers.get("content-type") == got.headers.get("content-type")
        assert head.headers.get("content-length") == got.headers.get("content-length")
        assert head.headers.get("cache-control") == got.headers.get("cache-control")
    assert env.client.head("/v1/devices").status_code == 401  # same as GET: no credential


def test_405_names_method_path_and_allowed(env: Env) -> None:
    r = env.client.put("/v1/devices", headers=env.auth("admin"))
    body = problem(r, 405)
    assert body["field"] == "method" and body["value"] == "PUT"
    assert body["allowed"] == r.headers["allow"] == "GET, HEAD, POST"  # all its routes'
    assert "PUT" in body["detail"] and "/v1/devices" in body["detail"]
    assert body["reason"] == "method_not_allowed"
    r = env.client.head("/v1/tokens", headers=env.auth("admin"))  # POST only: HEAD refused
    assert r.status_code == 405 and r.content == b""


def test_non_utf8_json_body_is_bad_json(env: Env) -> None:
    for enc in ("utf-16", "utf-16-le", "utf-32"):
        raw = json.dumps({"name": "pump-16"}).encode(enc)
        r = env.client.post("/v1/devices", content=raw, headers={
            **env.auth("admin"), "Content-Type": "application/json"})
        body = problem(r, 422)
        assert body["reason"] == "bad_json" and body["field"] == "body", (enc, body)
        assert "UTF-8" in body["detail"]
    r = env.client.post("/v1/devices", content=b'{"name": "pump-\xff"}', headers={
        **env.auth("admin"), "Content-Type": "application/json"})
    assert problem(r, 422)["reason"] == "bad_json"
    assert not env.security.has_device("pump-16")
    r = env.client.post("/v1/devices", content=json.dumps({"name": "pump-\u00e9"}).encode(),
                        headers={**env.auth("admin"), "Content-Type": "application/json"})
    assert r.status_code != 422 or problem(r, 422)["reason"] != "bad_json"


def test_plus_read_as_space_hints_percent_2b(env: Env) -> None:
    r = env.client.get(f"/v1/devices/{env.device}/readings?start=2024-01-01T00:05:00+05:30",
                       headers=env.auth("viewer"))
    body = problem(r, 422)
    assert body["reason"] == "bad_time" and "%2B" in body["detail"]
    r = env.client.get(f"/v1/devices/{env.device}/readings?start=bogus",
                       headers=env.auth("viewer"))
    assert "%2B" not in problem(r, 422)["detail"]
