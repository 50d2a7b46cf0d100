"""A ``Content-Length`` that is not a number (API bug hunt 2, bug 5): uvicorn answers it
itself, so BodyLimit's ``bad_header`` problem is never reached under ``edgewise serve``; it
stays, documented, for ASGI servers and in-process clients that pass such a header on."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from edgewise.server.body_limit import BodyLimit
from tests.server.conftest import Env, serve_in_thread


def _raw_post(port: int, path: str, length: str, token: str) -> tuple[int, bytes]:
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n{}")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode())
        data = b""
        while part := sock.recv(65536):
            data += part
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("http", ["h11", "httptools"])
@pytest.mark.parametrize("length", ["abc", "+5", "5.0", "-1"])
def test_uvicorn_refuses_it_before_the_app(module_env: Env, http: str, length: str) -> None:
    """Check the bug hunt's finding, which is why the branch is documented as unreachable
    under uvicorn: the answer is uvicorn's plain text, not the app's problem+json."""
    env = module_env
    with serve_in_thread(env.client.app, http=http) as port:
        status, body = _raw_post(port, "/v1/devices", length, env.tokens["admin"])
        assert (status, body) == (400, b"Invalid HTTP request received.")
        status, body = _raw_post(port, "/v1/telemetry", length, "x")
        assert (status, body) == (400, b"Invalid HTTP request received.")


def test_an_in_process_caller_gets_the_problem_not_a_500() -> None:
    """Check what the branch is kept for: an ASGI caller that passes the header on."""
    async def never(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        raise AssertionError("the app must not be called")

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/devices", "root_path": "",
             "headers": [(b"content-length", b"abc")], "query_string": b""}
    asyncio.run(BodyLimit(never, limit=1024)(scope, receive, send))
    assert sent[0]["status"] == 400
    assert b'"reason":"bad_header"' in sent[1]["body"].replace(b" ", b"")
    assert b'"field":"Content-Length"' in sent[1]["body"].replace(b" ", b"")
