"""Request bodies outside telemetry are limited before they are read (``max_body_bytes``).

An API fuzzer sent an 80 MB JSON array to ``POST /v1/devices`` without credentials: the
server read and parsed all of it (1.7 s, +460 MB) before it answered 401. These tests talk to
a real uvicorn over a socket, declaring or streaming a big body while sending only a little,
so a server that waits for the body is caught by a short timeout, not by memory.

The tests that are refused before anything is done share one app and one uvicorn
(``module_env``, ``served``); those that add a device or readings have an app of their own.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.config import Settings
from edgewise.errors import ConfigError
from edgewise.server.app import create_app
from tests.server.conftest import PROBLEM_KEYS, Env, build_env, problem, serve_in_thread

#: Every route that takes a JSON body (telemetry reads its own, against max_payload_bytes).
BODY_ROUTES = ["/v1/devices", "/v1/tokens", "/v1/labels", "/v1/alerts/a-1/label",
               "/v1/registry/rollouts"]
DECLARED = 80_000_000  # what the fuzzer sent
ANSWER_WITHIN_S = 3.0


@pytest.fixture(scope="module")
def served(module_env: Env) -> Iterator[int]:
    """The port of a real uvicorn serving ``module_env``'s app."""
    with serve_in_thread(module_env.client.app) as port:
        yield port


def _read_answer(sock: socket.socket) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"the server closed the connection without an answer: {data!r}"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        body += sock.recv(65536)
    return int(status_line.split()[1]), headers, json.loads(body)


def _declare_big_body(port: int, path: str, headers: dict[str, str]) -> tuple[
        int, dict[str, str], dict[str, Any], float]:
    """POST declaring an 80 MB body, send its first 6 bytes, and wait for the answer."""
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {DECLARED}\r\n{lines}\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_WITHIN_S) as sock:
        t0 = time.monotonic()
        sock.sendall(head.encode() + b"[1,1,1")
        try:
            status, got_headers, body = _read_answer(sock)
        except TimeoutError:
            pytest.fail(f"POST {path}: no answer within {ANSWER_WITHIN_S} s; the server waits "
                        f"for the {DECLARED} bytes the request declared")
        return status, got_headers, body, time.monotonic() - t0


def _check_problem(status: int, headers: dict[str, str], body: dict[str, Any],
                   want: int) -> None:
    assert status == want, body
    assert headers["content-type"].startswith("application/problem+json"), headers
    assert PROBLEM_KEYS <= body.keys() and body["status"] == want, body


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_a_declared_body_over_the_limit_is_413_before_it_is_read(
        module_env: Env, served: int, path: str) -> None:
    """Check a Content-Length over max_body_bytes is refused with 413 at once, naming the
    limit, the setting and the declared size, with the security headers."""
    env = module_env
    limit = env.settings.max_body_bytes
    assert limit == 64 * 1024  # the default the README names
    status, headers, body, took = _declare_big_body(served, path, env.auth("admin"))
    _check_problem(status, headers, body, 413)
    assert (body["field"], body["value"], body["reason"]) == (
        "body", f"{DECLARED} bytes", "too_large"), body
    assert body["allowed"] == f"at most {limit} bytes"
    assert f"at most {limit} bytes" in body["detail"] and "max_body_bytes" in body["detail"]
    assert f"Got {DECLARED} bytes" in body["detail"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    assert took < ANSWER_WITHIN_S


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("authorization, reason", [
    (None, "missing_credentials"), ("Basic dXNlcjpwdw==", "bad_credentials")])
def test_a_body_without_a_bearer_token_is_401_before_it_is_read(
        served: int, path: str, authorization: str | None, reason: str) -> None:
    """Check a body route without 'Authorization: Bearer …' answers the route's own 401 at
    once, without waiting for (or reading) the 80 MB it declared."""
    headers = {} if authorization is None else {"Authorization": authorization}
    status, got, body, took = _declare_big_body(served, path, headers)
    _check_problem(status, got, body, 401)
    assert (body["field"], body["value"], body["reason"]) == ("Authorization", None, reason)
    assert got["www-authenticate"] == "Bearer"
    assert took < ANSWER_WITHIN_S


def test_a_chunked_body_is_counted_and_refused_once_past_the_limit(module_env: Env,
                                                                   served: int) -> None:
    """Check a body sent chunked (no Content-Length) is refused with 413 as soon as it passes
    the limit: the answer comes while the client is still sending, long before the 16 MB it
    would send."""
    env = module_env
    cap = 16_000_000
    chunk = b"1," * 4096
    head = ("POST /v1/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\nAuthorization: Bearer {env.tokens['admin']}\r\n\r\n")
    limit = env.settings.max_body_bytes
    with socket.create_connection(("127.0.0.1", served), timeout=ANSWER_WITHIN_S) as sock:
        sock.sendall(head.encode() + b"1\r\n[\r\n")
        sock.setblocking(False)
        sent, answered, pending = 0, False, b""
        deadline = time.monotonic() + 20
        while sent < cap and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 0.1)
            if readable:  # an answer while the body is still coming
                answered = True
                break
            if writable:
                pending = pending or b"%x\r\n%s\r\n" % (len(chunk), chunk)
                try:
                    n = sock.send(pending)
                except BlockingIOError:
                    continue
                pending, sent = pending[n:], sent + n
        assert answered, f"no answer after sending {sent} bytes of a chunked body"
        sock.setblocking(True)
        sock.settimeout(ANSWER_WITHIN_S)
        status, headers, body = _read_answer(sock)
    _check_problem(status, headers, body, 413)
    assert (body["field"], body["value"], body["reason"]) == (
        "body", f"more than {limit} bytes", "too_large"), body
    assert f"at most {limit} bytes" in body["detail"]
    assert sent < cap


def test_an_undeclared_body_over_the_limit_is_413_not_the_apps_400(env: Env) -> None:
    """Check a body without Content-Length, cut at the limit while the app reads it, is the
    413, not the app's own answer to the cut (FastAPI: 400 'error parsing the body'); a
    declared one is the 413 too, and a body under the limit goes through."""
    limit = env.settings.max_body_bytes
    name = "x" * (limit + 1000)

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"name": "'
        yield name.encode()
        yield b'"}'

    headers = {**env.auth("admin"), "Content-Type": "application/json"}
    body = problem(env.client.post("/v1/devices", content=chunks(), headers=headers), 413)
    assert (body["value"], body["allowed"]) == (f"more than {limit} bytes",
                                                f"at most {limit} bytes")
    big = json.dumps({"name": name}).encode()
    body = problem(env.client.post("/v1/devices", content=big, headers=headers), 413)
    assert body["value"] == f"{len(big)} bytes", body
    ok = env.client.post("/v1/devices", json={"name": "pump-2"}, headers=env.auth("admin"))
    assert ok.status_code == 201, ok.text
    assert [d.id for d in env.security.list_devices()] == ["pump-1", "pump-2"]


def test_telemetry_keeps_its_own_limit(env: Env) -> None:
    """Check telemetry is not held to max_body_bytes: a batch over it but under
    max_payload_bytes is stored; over max_payload_bytes it is still telemetry's own 413 on
    'payload'."""
    now = int(time.time()) - 3600
    batch = [{"ts": now + i, "metrics": {"temp_c": 20.0 + i / 100}, "seq": i + 1}
             for i in range(2000)]
    size = len(json.dumps(batch))
    assert env.settings.max_body_bytes < size < env.settings.max_payload_bytes
    resp = env.send(batch)
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 2000
    limit = env.settings.max_payload_bytes
    body = problem(env.send(b"[" + b" " * limit + b"]"), 413)
    assert (body["field"], body["allowed"]) == ("payload", f"at most {limit} bytes"), body


def test_every_token_body_route_is_checked_before_its_body(module_env: Env) -> None:
    """Check the routes the middleware asks a bearer token of are exactly the routes with a
    JSON body other than telemetry, and that each answers 401 without one."""
    env = module_env
    from edgewise.server.app import api_routes  # new with the limit

    routes = api_routes(env.client.app)
    with_body = {(m, r.path_format) for r in routes if r.body_field is not None
                 for m in r.methods}
    assert {p.replace("a-1", "{alert_id}") for p in BODY_ROUTES} == {p for _, p in with_body}
    for _method, path in sorted(with_body):
        body = problem(env.client.post(path.replace("{alert_id}", "a-1"), json={}), 401)
        assert body["reason"] == "missing_credentials", path


def test_the_limit_is_a_setting(data_dir: Path) -> None:
    """Check EDGEWISE_MAX_BODY_BYTES sets the limit, and a limit under 1 byte is refused at
    start naming the setting and the value."""
    assert Settings().max_body_bytes == 65536
    assert Settings.load(env={"EDGEWISE_MAX_BODY_BYTES": "1000"}).max_body_bytes == 1000
    gen = build_env(data_dir)
    env = next(gen)
    try:
        with pytest.raises(ConfigError, match=r"Setting 'max_body_bytes' "
                           r"\(EDGEWISE_MAX_BODY_BYTES\) has value 0\. It must be"):
            create_app(store=env.store, security=env.security, pipeline=env.pipeline,
                       settings=Settings.load(env={}, data_dir=data_dir, max_body_bytes=0),
                       registry=env.client.app.state.registry)
    finally:
        gen.close()
