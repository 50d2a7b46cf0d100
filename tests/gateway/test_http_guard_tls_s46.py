"""HTTPS connections no peer can hoard (edgewise.gateway.http_guard over TLS).

Before: TLS was uvicorn's (asyncio's): a TCP connection to the HTTPS port reached the
guard only once its TLS handshake was done, so connections that never began one were in
no cap, and asyncio held each for 60 s. An unauthenticated peer opening ~20 a second that
sent nothing held every descriptor of a gateway at ``ulimit -n`` 1024.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from edgewise.gateway.http_guard import guarded_http_protocol, guarded_tls_protocol
from tests.conftest import free_port, self_signed_cert
from tests.gateway.test_http_guard_s45 import Served, _open


class ServedTLS(Served):
    """A real uvicorn HTTPS server with the guard (idle 0.6 s, 6 open, 3 not begun per
    source), TLS done by the guard's factory as the gateway does it."""

    def __init__(self, folder: Path) -> None:
        app = FastAPI()

        @app.get("/")
        def root(request: Request) -> dict[str, str]:
            return {"scheme": request.url.scheme}

        self.cert, key = self_signed_cert(folder)
        self.counted: list[str] = []
        self.port = free_port()
        guard = guarded_http_protocol(
            AutoHTTPProtocol, idle_s=0.6, max_total=6, max_per_source=3,
            count=lambda name, reason: self.counted.append(reason))
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                http=guard, ssl_certfile=str(self.cert), ssl_keyfile=str(key))
        config.load()
        assert config.ssl is not None
        config.http_protocol_class = guarded_tls_protocol(  # type: ignore[assignment]
            config.http_protocol_class, config.ssl, idle_s=0.6)
        config.ssl = None
        self.start(config)

    def get(self) -> Any:
        return httpx.get(f"https://127.0.0.1:{self.port}/", verify=str(self.cert),
                         timeout=5).json()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedTLS]:
    s = ServedTLS(tmp_path)
    yield s
    s.stop()


def test_connections_that_never_begin_a_handshake_are_capped_and_closed(served: ServedTLS,
                                                                      ) -> None:
    """Check raw TCP connections to the HTTPS port that send nothing are in the per-source
    cap (the 4th and 5th closed at once) and closed when no handshake is done within the
    idle period; HTTPS requests are served as before (scheme https)."""
    socks = [served.connect() for _ in range(5)]
    time.sleep(0.3)
    assert [_open(s, 0.05) for s in socks].count(True) == 3
    time.sleep(1.0)
    assert not any(_open(s, 0.05) for s in socks)
    assert served.counted.count("per_source") == 2 and served.counted.count("idle") == 3
    assert served.get() == {"scheme": "https"}


def test_a_handshake_done_but_no_request_is_closed(served: ServedTLS) -> None:
    """Check a connection that finishes its TLS handshake and then sends nothing is closed
    by the guard's idle check, and a request on a fresh connection still works."""
    context = ssl.create_default_context(cafile=str(served.cert))
    with context.wrap_socket(served.connect(), server_hostname="127.0.0.1") as tls:
        tls.settimeout(3)
        t0 = time.monotonic()
        assert tls.recv(1) == b""  # closed by the server
        assert 0.5 <= time.monotonic() - t0 < 2.5
    assert served.get() == {"scheme": "https"}


def test_refused_and_failed_handshakes_leave_no_count_behind(served: ServedTLS) -> None:
    """Check plain HTTP sent to the HTTPS port is closed and frees its place: after 10 such
    connections (more than the cap of 6 in all) requests are still served."""
    for _ in range(10):
        so = served.connect()
        so.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        so.settimeout(3)
        try:
            while so.recv(4096):
                pass
        except OSError:
            pass
        so.close()
    for _ in range(8):
        assert served.get() == {"scheme": "https"}


def test_the_https_gateway_closes_a_connection_with_no_handshake(
        gateway_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check `edgewise serve --tls-cert/--tls-key` closes a TCP connection that never starts
    its TLS handshake within the guard's EDGEWISE_HTTP_IDLE_S (1 s here, 10 by default;
    asyncio held it 60 s) and serves HTTPS."""
    monkeypatch.setenv("EDGEWISE_HTTP_IDLE_S", "1")
    cert, key = self_signed_cert(tmp_path)
    gw = gateway_factory("--tls-cert", str(cert), "--tls-key", str(key)).start()
    so = socket.create_connection(("127.0.0.1", gw.http_port), timeout=5)
    t0 = time.monotonic()
    while _open(so, 0.2):
        assert time.monotonic() - t0 < 8, "a connection with no TLS handshake was held 8 s"
    r = httpx.get(f"https://127.0.0.1:{gw.http_port}/healthz", verify=str(cert), timeout=5)
    assert r.status_code == 200
