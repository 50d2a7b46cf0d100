"""HTTP connections no peer can hoard (edgewise.gateway.http_guard): uvicorn kept a
connection that never sent a request open for ever, and 1,100 of them took every file
descriptor of a gateway at ``ulimit -n`` 1024 (``/healthz`` timed out for good)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from edgewise.gateway.http_guard import guarded_http_protocol
from tests.conftest import free_port


class Served:
    """A real uvicorn server with the guard (idle 0.6 s, 6 open, 3 not begun per source)."""

    def __init__(self) -> None:
        app = FastAPI()

        @app.get("/")
        def root() -> dict[str, bool]:
            return {"ok": True}

        @app.get("/slow")
        async def slow() -> dict[str, bool]:
            await asyncio.sleep(1.5)  # answered after 2.5 idle periods: never cut
            return {"ok": True}

        self.counted: list[str] = []
        self.port = free_port()
        guard = guarded_http_protocol(
            AutoHTTPProtocol, idle_s=0.6, max_total=6, max_per_source=3,
            count=lambda name, reason: self.counted.append(reason))
        self.start(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                  http=guard))

    def start(self, config: uvicorn.Config) -> None:
        """Run ``config``'s server on a thread until it has started."""
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


@pytest.fixture
def served() -> Iterator[Served]:
    s = Served()
    yield s
    s.stop()


def _open(so: socket.socket, wait: float = 0.3) -> bool:
    """Whether the server has left ``so`` open (no EOF, no reset) after ``wait`` s."""
    so.settimeout(wait)
    try:
        return so.recv(1) != b""
    except TimeoutError:
        return True
    except OSError:
        return False


def test_idle_connections_are_capped_per_source_and_closed(served: Served) -> None:
    """Check a 4th and 5th connection with no request from one address are closed at once
    (3 per source), and the 3 idle ones within two idle periods; a request then works."""
    socks = [served.connect() for _ in range(5)]
    time.sleep(0.3)
    assert [_open(s, 0.05) for s in socks].count(True) == 3
    time.sleep(1.3)
    assert not any(_open(s, 0.05) for s in socks)
    assert sorted(set(served.counted)) == ["idle", "per_source"]
    assert served.counted.count("per_source") == 2 and served.counted.count("idle") == 3
    assert httpx.get(f"http://127.0.0.1:{served.port}/").json() == {"ok": True}


def test_a_header_sent_a_byte_at_a_time_is_cut_and_a_slow_answer_is_not(served: Served,
                                                                        ) -> None:
    """Check a request header trickled byte by byte is closed (slowloris), while a request
    whose answer takes longer than the idle period is answered, and a keep-alive connection
    serves several requests."""
    so = served.connect()
    so.settimeout(0.2)
    cut = False
    for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40:
        try:
            so.sendall(bytes([b]))
        except OSError:
            cut = True
            break
        if not _open(so, 0.1):
            cut = True
            break
    assert cut, "a header trickled for over 4 s was never cut"
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}") as client:
        assert client.get("/slow", timeout=10).json() == {"ok": True}
        for _ in range(3):
            assert client.get("/").json() == {"ok": True}


def test_the_gateway_closes_an_idle_http_connection(gateway_factory: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Check `edgewise serve` closes an HTTP connection that sends nothing (within the
    guard's EDGEWISE_HTTP_IDLE_S, 1 s here, 10 by default; it stayed open for good before)
    and still answers requests."""
    monkeypatch.setenv("EDGEWISE_HTTP_IDLE_S", "1")
    gw = gateway_factory().start()
    so = socket.create_connection(("127.0.0.1", gw.http_port), timeout=5)
    t0 = time.monotonic()
    while _open(so, 0.2):
        assert time.monotonic() - t0 < 8, "an idle HTTP connection was not closed in 1 s"
    assert httpx.get(f"http://127.0.0.1:{gw.http_port}/healthz").status_code == 200


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "86401", "ten"])
def test_an_idle_setting_out_of_range_is_refused_by_name(text: str) -> None:
    """EDGEWISE_HTTP_IDLE_S is over 0 and at most a day; the default stays 10 s."""
    from edgewise.config import Settings
    from edgewise.errors import ConfigError

    assert Settings.load({}).http_idle_s == 10.0
    assert Settings.load({"EDGEWISE_HTTP_IDLE_S": "2.5"}).http_idle_s == 2.5
    with pytest.raises(ConfigError, match="EDGEWISE_HTTP_IDLE_S"):
        Settings.load({"EDGEWISE_HTTP_IDLE_S": text})
