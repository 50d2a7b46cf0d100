"""The address `federate server` gives devices serves Flower's Fleet API and nothing else:
a run submitted there by anyone but the server itself is refused, while devices still
complete a federated run through it (checked in test_deploy.py's real run) and verify its
TLS.

Flower 1.41 serves its Control API (run submission, which Flower OSS does not
authenticate) on the SuperLink's one port; whoever reached the port devices use could run
a ServerApp on the server, as the server's user, and a ClientApp on every device."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edgewise.federated.deploy import LocalFleet, check_tls
from tests.federated.test_federated_tls import make_pki

_APP_PYPROJECT = """\
[project]
name = "probeapp"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "outsider"

[tool.flwr.app.components]
serverapp = "probeapp.server:app"
clientapp = "probeapp.client:app"

[tool.flwr.app.config]
"""

# Harmless: each part only leaves a file saying it ran.
_SERVER = """\
from pathlib import Path
from flwr.serverapp import ServerApp
Path({marker!r}).write_text("server app ran")
app = ServerApp()

@app.main()
def main(grid, context):
    Path({marker!r}).write_text("server app main ran")
"""
_CLIENT = """\
from pathlib import Path
from flwr.clientapp import ClientApp
Path({marker!r}).write_text("client app ran")
app = ClientApp()
"""


def _probe_app(folder: Path, marker: Path) -> Path:
    """A Flower app of someone else's, that leaves ``marker`` if any of it runs."""
    pkg = folder / "probeapp"
    pkg.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(_APP_PYPROJECT)
    (pkg / "__init__.py").write_text("")
    (pkg / "server.py").write_text(_SERVER.format(marker=str(marker)))
    (pkg / "client.py").write_text(_CLIENT.format(marker=str(marker)))
    return folder


def _submit(app: Path, address: str, home: Path) -> subprocess.CompletedProcess[str]:
    """``flwr run`` of ``app`` from a FLWR_HOME of its own that knows only ``address``,
    the one devices are told (as someone on the devices' network would)."""
    home.mkdir(parents=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "fleet"\n[superlink.fleet]\naddress = "{address}"\n'
        "insecure = true\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(FLWR_HOME=str(home), FLWR_TELEMETRY_ENABLED="0",
               FLWR_DISABLE_UPDATE_CHECK="1")
    code = ("from flwr.cli.run.run import run\n"
            f"run(app={str(app)!r}, superlink=None, federation=None, "
            "run_config_overrides=None, federation_config_overrides=None, stream=False, "
            "output_format='default')\n")
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, cwd=home, check=False)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """`federate server`'s fleet with two SuperNodes of its own (connected as devices are)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLWR_TELEMETRY_ENABLED", "0")
        mp.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
        with LocalFleet(2, workdir=tmp_path_factory.mktemp("fleet")) as fl:
            yield fl


def test_a_run_submitted_to_the_devices_address_is_refused_and_nothing_of_it_runs(
        fleet: LocalFleet, tmp_path: Path) -> None:
    """Check `flwr run` pointed at the address devices use fails, its app never runs, and
    the Control and runtime API paths answer 404 there (the same paths disguised as Fleet
    paths go as raw request lines, which httpx would normalise: see
    test_disguised_request_lines_are_refused_and_never_reach_the_superlink)."""
    marker = tmp_path / "ran"
    done = _submit(_probe_app(tmp_path / "app", marker), fleet.address, tmp_path / "home")
    out = done.stdout + done.stderr
    assert "Successfully started run" not in out, out[-2000:]
    assert done.returncode != 0, out[-2000:]
    time.sleep(2)  # were it started, its ServerApp would leave the marker by now
    assert not marker.exists(), marker.read_text()
    base = f"http://{fleet.address}"
    with httpx.Client(base_url=base, trust_env=False, timeout=10) as client:
        for path in ("/v1/control/start-run", "/v1/control/list-runs",
                     "/v1/runtime/pull-task-input", "/v1/runtime/get-nodes", "/docs",
                     "/openapi.json", "/v1/fleet/"):
            r = client.post(path, content=b"\x00")
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert "serves only the Flower Fleet API" in r.text, (path, r.text)


# Devices completing a federated run through the gate (the SuperLink on a loopback port of
# its own, every Fleet call forwarded) is checked by default in the real run of
# tests/federated/test_supernode_auth.py (with TLS and device keys), and in plain HTTP by
# tests/federated/test_deploy.py (test_superlink_and_three_supernodes_complete_two_rounds,
# marked slow: -m slow runs it).


def test_with_tls_the_gate_serves_tls_that_devices_verify(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the gate serves TLS only, with the fleet's certificate: a client trusting the
    CA gets the Fleet API (and still a 404 for the Control API), one trusting another CA
    or speaking plain HTTP gets nothing, and a SuperNode trusting the CA registers and
    polls through it while the SuperLink behind runs without TLS on loopback."""
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    pki = make_pki(tmp_path / "pki")
    tls = check_tls(pki.cert, pki.key, pki.ca)
    with LocalFleet(1, workdir=tmp_path / "fleet", tls=tls) as fleet:
        trusted = ssl.create_default_context(cafile=str(pki.ca))
        base = f"https://{fleet.address}"
        with httpx.Client(base_url=base, verify=trusted, trust_env=False, timeout=10) as c:
            assert c.get("/health").status_code == 200
            assert c.post("/v1/control/list-runs", content=b"").status_code == 404
        other = ssl.create_default_context(cafile=str(pki.other_ca))
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{base}/health", verify=other, trust_env=False, timeout=10)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{fleet.address}/health", trust_env=False, timeout=10)
        node = fleet.nodes[0]
        assert isinstance(node.args, list) and "--insecure" not in node.args
        assert node.args[node.args.index("--root-certificates") + 1] == str(pki.ca)
        log = fleet.workdir / "fleet-gate.log"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and '"POST /v1/fleet/pull-messages HTTP/1.1" 200' \
                not in log.read_text(errors="replace"):
            assert node.poll() is None, (fleet.workdir / "supernode-0.log").read_text()
            time.sleep(0.3)
        gate = log.read_text(errors="replace")
    assert f"running on https://127.0.0.1:{fleet.port}" in gate
    assert '"POST /v1/fleet/register-node HTTP/1.1" 200' in gate
    assert '"POST /v1/fleet/pull-messages HTTP/1.1" 200' in gate
    link = (fleet.workdir / "superlink.log").read_text(errors="replace")
    assert f"running on http://127.0.0.1:{fleet.link_port}" in link


def test_only_fleet_calls_and_health_are_forwarded() -> None:
    """Check the gate's rule: one Fleet call name, or a read of /health; no dot segment,
    second prefix, or other API."""
    from edgewise.federated.fleet_gate import forwarded

    assert forwarded("/v1/fleet/pull-messages", "POST")
    assert forwarded("/health", "HEAD") and not forwarded("/health", "POST")
    for path in ("/v1/control/start-run", "/v1/fleet/../control/start-run",
                 "/v1/fleet/pull-messages/../../control/start-run", "/v1/fleet/",
                 "/v1/fleet//control", "/v1/runtime/get-nodes", "/v1/fleet/%2e%2e",
                 "/docs", "/v1/fleetx/pull-messages", "/V1/fleet/pull-messages"):
        assert not forwarded(path, "POST"), path


def test_the_gate_forwards_bodies_headers_and_status_as_they_are() -> None:
    """Check a 20 MB body each way crosses the gate byte for byte, with the method, query,
    headers (repeated ones, a gzip content encoding left as it is) and status, less the
    hop-by-hop headers; a SuperLink that does not answer is a 502 naming it."""
    import asyncio
    import gzip

    from edgewise.federated.fleet_gate import FleetGate

    seen: dict[str, object] = {}
    sent = os.urandom(20 * 2**20)
    answer = gzip.compress(os.urandom(1 << 20) + sent, compresslevel=1)

    async def link(scope, receive, send) -> None:  # stands in for the SuperLink
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.update(method=scope["method"], path=scope["path"], query=scope["query_string"],
                    headers=[(k.decode(), v.decode()) for k, v in scope["headers"]],
                    body=bytes(body))
        await send({"type": "http.response.start", "status": 201, "headers": [
            (b"content-type", b"application/protobuf"), (b"content-encoding", b"gzip"),
            (b"content-length", str(len(answer)).encode()), (b"x-flwr-a", b"1"),
            (b"x-flwr-a", b"2"), (b"connection", b"keep-alive, x-hop"), (b"x-hop", b"no")]})
        for i in range(0, len(answer), 1 << 20):
            await send({"type": "http.response.body", "body": answer[i:i + (1 << 20)],
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async def go() -> tuple[httpx.Response, httpx.Response]:
        gate = FleetGate("http://127.0.0.1:9", transport=httpx.ASGITransport(app=link))
        dead = FleetGate("http://127.0.0.1:9", transport=httpx.MockTransport(down))
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate),
                                         base_url="http://gate") as c:
                r = await c.post("/v1/fleet/push-object?x=1", content=sent, headers=[
                    ("content-type", "application/protobuf"), ("flwr-signature", "s1"),
                    ("flwr-public-key", "k"), ("x-forwarded-for", "6.6.6.6")])
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=dead),
                                         base_url="http://gate") as c:
                bad = await c.post("/v1/fleet/pull-messages", content=b"x")
        finally:
            await gate.aclose()
            await dead.aclose()
        return r, bad

    r, bad = asyncio.run(go())
    assert (seen["method"], seen["path"], seen["query"]) == ("POST", "/v1/fleet/push-object",
                                                              b"x=1")
    assert seen["body"] == sent
    headers = dict(seen["headers"])  # type: ignore[arg-type]
    assert headers["flwr-signature"] == "s1" and headers["flwr-public-key"] == "k"
    assert headers["content-length"] == str(len(sent))
    assert headers["x-forwarded-for"] != "6.6.6.6" and headers["host"] == "127.0.0.1:9"
    assert r.status_code == 201 and r.content == gzip.decompress(answer)
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers.get_list("x-flwr-a") == ["1", "2"]
    assert "x-hop" not in r.headers and "connection" not in r.headers
    assert bad.status_code == 502 and "http://127.0.0.1:9 did not answer" in bad.text


def test_a_server_on_every_ipv6_and_ipv4_interface_starts_and_refuses_runs_on_both(
        tmp_path: Path) -> None:
    """Check `--host ::` starts (it used to wait 60 s for a SuperLink bound to IPv6 only
    at 127.0.0.1 and give up) and the gate refuses the Control API over either family."""
    fleet = LocalFleet(1, workdir=tmp_path, spawn_nodes=False, host="::")
    try:
        fleet.start()
        for host in ("127.0.0.1", "[::1]"):
            r = httpx.post(f"http://{host}:{fleet.port}/v1/control/start-run", content=b"",
                           trust_env=False, timeout=10)
            assert r.status_code == 404, (host, r.text)
    finally:
        fleet.stop()
    assert all(p.poll() is not None for p in fleet.procs)


def test_a_get_with_a_body_protocol_errors_and_the_refusal_message() -> None:
    """Check a GET that came with a body goes on without it and without its Content-Length
    (the gate sent the length and no body: h11 raised 'Too little data for declared
    Content-Length' and the device got a 500 and a traceback), an HTTP/1.1 protocol error on
    the way to the SuperLink is a 502 naming it, and a refusal names the method and path."""
    import asyncio

    import h11

    from edgewise.federated.fleet_gate import FleetGate

    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def link(scope, receive, send) -> None:  # stands in for the SuperLink
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append((scope["method"], {k.decode(): v.decode() for k, v in scope["headers"]},
                     body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def broken(request: httpx.Request) -> httpx.Response:
        raise h11.LocalProtocolError("Too little data for declared Content-Length")

    async def garbled(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("illegal status line", request=request)

    async def go() -> list[httpx.Response]:
        out = []
        for upstream in (link, broken, garbled):
            gate = FleetGate("http://127.0.0.1:9", transport=httpx.ASGITransport(app=link)
                             if upstream is link else httpx.MockTransport(upstream))
            try:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gate),
                                             base_url="http://gate") as c:
                    out.append(await c.request("GET", "/v1/fleet/get-run", content=b"hello"))
                    if upstream is link:
                        out.append(await c.post("/v1/control/start-run", content=b""))
                        out.append(await c.post("/v1/fleet/" + "a" * 200 + "%00", content=b""))
            finally:
                await gate.aclose()
        return out

    ok, refused, long, broke, garble = asyncio.run(go())
    assert ok.status_code == 200 and ok.content == b"ok", ok.text
    assert len(seen) == 1 and seen[0][0] == "GET" and seen[0][2] == b"", seen
    assert "content-length" not in seen[0][1], seen[0][1]
    for bad, what in ((broke, "LocalProtocolError: Too little data"),
                      (garble, "RemoteProtocolError: illegal status line")):
        assert bad.status_code == 502, bad.text
        assert f"SuperLink at http://127.0.0.1:9 did not answer ({what}" in bad.text, bad.text
    assert refused.status_code == 404
    assert refused.json()["detail"].startswith(
        "Not found: POST /v1/control/start-run is not forwarded; this port serves only")
    detail = long.json()["detail"]
    assert long.status_code == 404 and "POST /v1/fleet/aaaa" in detail, detail
    assert "...  is not forwarded" not in detail and "... is not forwarded" in detail, detail
    assert len(detail) < 300 and detail.isprintable(), detail


def test_disguised_request_lines_are_refused_and_never_reach_the_superlink() -> None:
    """Check request lines sent as they are over a socket to a gate served by uvicorn (httpx
    normalises '/v1/fleet/../x' and '//x' before sending, so they never reached the gate
    disguised) answer 404 and never reach the SuperLink, while a Fleet call does, and a GET
    with a body is forwarded without it (it was a 500)."""
    import socket
    import threading

    import uvicorn

    from edgewise.federated.deploy import free_port
    from edgewise.federated.fleet_gate import FleetGate

    seen: list[tuple[str, str, int]] = []

    async def link(scope, receive, send) -> None:  # stands in for the SuperLink
        if scope["type"] != "http":
            return
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        seen.append((scope["method"], scope["path"], size))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    link_port, gate_port = free_port(), free_port()
    servers = [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                             log_level="critical", lifespan="off"))
               for app, port in ((link, link_port),
                                 (FleetGate(f"http://127.0.0.1:{link_port}"), gate_port))]
    threads = [threading.Thread(target=s.run, daemon=True) for s in servers]

    def raw(line: str, rest: bytes = b"Content-Length: 0\r\n\r\n") -> tuple[str, bytes]:
        with socket.create_connection(("127.0.0.1", gate_port), timeout=10) as sock:
            sock.sendall(line.encode() + b"\r\nHost: x\r\nConnection: close\r\n" + rest)
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
        head, _, body = got.partition(b"\r\n\r\n")
        return head.split(b"\r\n", 1)[0].decode(), body

    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while not all(s.started for s in servers):
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        for line in ("POST /v1/fleet/../control/list-runs HTTP/1.1",
                     "POST //v1/control/list-runs HTTP/1.1",
                     "POST /v1/fleet/%2e%2e/control/list-runs HTTP/1.1",
                     "POST /v1/fleet%2f..%2fcontrol/list-runs HTTP/1.1",
                     "POST /v1/fleet/pull-messages%2f..%2f..%2fcontrol%2fstart-run HTTP/1.1",
                     "POST /v1/fleet/pull-messages/../../control/start-run HTTP/1.1",
                     "POST http://evil/v1/control/start-run HTTP/1.1",
                     "OPTIONS * HTTP/1.1"):
            status, body = raw(line)
            assert status == "HTTP/1.1 404 Not Found", (line, status, body)
            assert b"serves only the Flower Fleet API" in body, (line, body)
        assert seen == [], seen
        assert raw("GET /v1/fleet/get-run HTTP/1.1", b"Content-Length: 5\r\n\r\nhello") == (
            "HTTP/1.1 200 OK", b"ok")
        assert raw("POST /v1/fleet/pull-messages HTTP/1.1", b"Content-Length: 3\r\n\r\nabc") \
            == ("HTTP/1.1 200 OK", b"ok")
        assert seen == [("GET", "/v1/fleet/get-run", 0), ("POST", "/v1/fleet/pull-messages", 3)]
    finally:
        for s in servers:
            s.should_exit = True
        for t in threads:
            t.join(10)
