"""Config hunt of session 38, the running gateway's part.

1. A device whose HTTP upload stalled (headers and part of a body sent, then nothing) held
   a stopping gateway for ever: uvicorn waits for every request in flight unless told a
   ``timeout_graceful_shutdown``, and ``Gateway.stop`` waits for HTTP before it stops MQTT
   and saves the detector state, so under systemd or docker the gateway was SIGKILLed and
   ``detectors.pickle`` not saved. Now such requests are cancelled after
   ``EDGEWISE_HTTP_SHUTDOWN_TIMEOUT_S`` (5 s by default).
7. ``serve --host ::1`` printed ``http://::1:8080/`` and ``mqtt://::1:1884``, which are no
   URLs (their port cannot be read); an IPv6 host is now written in brackets.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from edgewise.config import Settings
from edgewise.gateway.runtime import Gateway
from tests.conftest import REPO, free_port


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings.load(env={}, data_dir=tmp_path / "ew", http_port=free_port(),
                         mqtt_port=free_port(), **kw)


def test_a_stalled_upload_does_not_hold_the_stop_and_the_state_is_saved(tmp_path: Path) -> None:
    """Check ``stop()`` ends within the shutdown timeout (plus the rest of the stop) while
    an authenticated upload is stalled half sent, and saves the detector state; the HTTP
    server was told the timeout (the default's value checked too)."""
    assert Settings().http_shutdown_timeout_s == 5.0
    settings = _settings(tmp_path, http_shutdown_timeout_s=0.3)
    seen: dict[str, object] = {}

    async def main() -> None:
        gw = Gateway(settings)
        _, secret = gw.security.add_device("pump-1")
        await gw.start()
        assert gw.http_server is not None, "HTTP did not start"
        seen["config"] = gw.http_server.config.timeout_graceful_shutdown
        _, writer = await asyncio.open_connection("127.0.0.1", settings.http_port)
        stopping: asyncio.Task[None] | None = None
        try:
            writer.write((
                "POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {secret}\r\nX-Device-Id: pump-1\r\n"
                'Content-Length: 1000\r\n\r\n{"seq": 1, ').encode())
            await writer.drain()
            deadline = time.monotonic() + 5
            while not gw.http_server.server_state.tasks:  # the request reached the app
                assert time.monotonic() < deadline, "the request never reached the app"
                await asyncio.sleep(0.02)
            t0 = time.monotonic()
            stopping = asyncio.create_task(gw.stop())
            done, _ = await asyncio.wait({stopping}, timeout=6)
            seen["stop_s"] = time.monotonic() - t0 if done else None  # None: held
        finally:
            writer.close()  # the client goes: the old code's stop ends too
            await (stopping if stopping is not None else gw.stop())

    asyncio.run(main())
    assert seen["config"] == 0.3
    assert seen["stop_s"] is not None, "a stalled upload held the gateway's stop (6 s +)"
    assert seen["stop_s"] < 4, seen
    assert (settings.data_dir / "detectors.pickle").exists()


def test_an_ipv6_host_is_bracketed_in_the_printed_urls(tmp_path: Path) -> None:
    """Check ``serve --host ::1`` prints a dashboard URL and an MQTT URL whose host and
    port a URL parser reads back, and that the dashboard URL answers."""
    import httpx

    http, mqtt = free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgewise", "serve", "--data-dir", str(tmp_path / "ew"),
         "--host", "::1", "--port", str(http), "--mqtt-port", str(mqtt)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if line == "ready\n":
                break
        text = "\n".join(lines)
        dashboard = re.search(r"^dashboard: (\S+)$", text, re.M)
        broker = re.search(r"^edgewise gateway: MQTT (\S+),", text, re.M)
        assert dashboard and broker, lines
        dash, mq = urlsplit(dashboard[1]), urlsplit(broker[1])
        assert (dash.scheme, dash.hostname, dash.port) == ("http", "::1", http), lines
        assert (mq.scheme, mq.hostname, mq.port) == ("mqtt", "::1", mqtt), lines
        assert httpx.get(dashboard[1] + "healthz", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
