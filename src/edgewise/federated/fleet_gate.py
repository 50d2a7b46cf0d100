"""The only door from the network to a SuperLink: a reverse proxy that forwards Flower's
Fleet API and nothing else.

Flower 1.41's ``flower-superlink`` serves one HTTP app on one port: the Fleet API
(``/v1/fleet/...``, what SuperNodes call), the Control API (``/v1/control/...``: submit,
list and stop runs) and the runtime API (``/v1/runtime/...``, what ServerApps call). Flower
OSS does not authenticate the Control API, so whoever reaches that port can submit a run:
its ServerApp runs on the server as the server's user (which holds the registry signing
key) and its ClientApp on every device. :class:`~edgewise.federated.deploy.LocalFleet`
therefore starts the SuperLink on loopback only, and this gate on the address devices use.
The gate forwards a request to the SuperLink only when its path is one Fleet API call
(``/v1/fleet/<call>``; the call a single name of lowercase letters, digits and hyphens, so
no dot segment, encoded slash or second prefix can smuggle another path through) or the
read-only ``GET``/``HEAD /health``; it answers every other path itself with 404, without
forwarding it, naming the method and path it refused.

Requests and responses are streamed both ways (a FAB or a model's arrays can be tens of MB),
with their status, headers (less the hop-by-hop ones) and bytes as they are, content
encoding included. A ``GET`` or ``HEAD`` is forwarded without a body (and without the
``Content-Length`` of one it came with). A SuperLink that does not answer, or answers
something that is not HTTP, is a 502 naming it. With a certificate and key the gate
terminates TLS: devices verify it with the CA they were given; the SuperLink behind it,
which only this machine reaches, runs without TLS, or (SuperNode authentication, which
Flower allows over TLS only) with a loopback certificate of its own, which the gate
verifies with ``--upstream-ca``.

Run it as ``python -m edgewise.federated.fleet_gate --host H --port P --upstream URL``
(``--ssl-certfile`` and ``--ssl-keyfile`` for TLS, ``--upstream-ca`` for an ``https://``
SuperLink); :class:`LocalFleet` does.

>>> forwarded("/v1/fleet/pull-messages", "POST"), forwarded("/v1/control/start-run", "POST")
(True, False)
>>> forwarded("/v1/fleet/../control/start-run", "POST"), forwarded("/health", "GET")
(False, True)
"""

from __future__ import annotations

import argparse
import re
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import h11
import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, StreamingResponse

__all__ = ["FleetGate", "forwarded", "main"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: A Fleet API call: one path segment of the names Flower's Fleet router uses.
_FLEET_PATH = re.compile(r"/v1/fleet/[a-z0-9][a-z0-9-]*")

#: Headers that describe one connection, not the message (RFC 9110 7.6.1), and those the
#: gate sets itself; never copied from one side to the other.
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
    "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host",
    "forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
    "x-forwarded-port", "x-real-ip",
})

#: What a failed call to the SuperLink can raise: httpx's errors, and h11's own where
#: httpcore lets them through (a request that breaks HTTP/1.1 on its way out).
_UPSTREAM_ERRORS = (httpx.HTTPError, h11.ProtocolError)

_REFUSED = ("this port serves only the Flower Fleet API (/v1/fleet/...) to devices; runs are "
            "submitted on the server itself")


def forwarded(path: str, method: str) -> bool:
    """Whether the gate forwards a request for ``path`` (decoded, as the ASGI scope holds
    it) with ``method`` to the SuperLink: a Fleet API call, or ``GET``/``HEAD /health``."""
    if _FLEET_PATH.fullmatch(path):
        return True
    return path == "/health" and method in ("GET", "HEAD")


def _shown(text: str, limit: int) -> str:
    """``text`` as a message may quote it: characters that are not printable escaped, and
    cut to about ``limit`` characters.

    >>> _shown("/v1/control/start-run" + chr(0), 80), _shown("/" + "a" * 100, 10)
    ('/v1/control/start-run\\\\x00', '/aaaaaa...')
    """
    out = "".join(c if c.isprintable() and c != "\\" else ascii(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[:limit - 3] + "..."


def _headers(items: list[tuple[str, str]], *, drop: frozenset[str] = _HOP_BY_HOP,
             connection: str = "") -> list[tuple[str, str]]:
    """``items`` less the hop-by-hop headers and those the ``Connection`` header names."""
    named = {t.strip().lower() for t in connection.split(",") if t.strip()}
    return [(k, v) for k, v in items if k.lower() not in drop and k.lower() not in named]


class FleetGate:
    """An ASGI app forwarding the Fleet API (:func:`forwarded`) to ``upstream``, the
    SuperLink's base URL (``http://127.0.0.1:PORT``), and refusing everything else (404).

    One :class:`httpx.AsyncClient` carries every forwarded request, made at the app's
    lifespan start and closed at its end (or on first use, where no lifespan runs). It
    ignores proxy settings in the environment: the SuperLink is on this machine.
    ``transport`` replaces its network transport (tests: an :class:`httpx.ASGITransport`);
    ``upstream_ca``, a PEM CA file, verifies an ``https://`` upstream (default: the
    system's CAs).
    """

    def __init__(self, upstream: str,
                 transport: httpx.AsyncBaseTransport | None = None,
                 upstream_ca: str | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self._transport = transport
        self._verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=upstream_ca)
                                               if upstream_ca else True)
        self._client: httpx.AsyncClient | None = None

    def _open(self) -> httpx.AsyncClient:
        if self._client is None:
            # no read timeout: a device's call takes as long as the SuperLink takes (a
            # device keeps its own); connections unbounded, as the SuperLink's are
            self._client = httpx.AsyncClient(
                base_url=self.upstream, transport=self._transport, trust_env=False,
                follow_redirects=False, verify=self._verify,
                timeout=httpx.Timeout(None, connect=10.0),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        return self._client

    async def aclose(self) -> None:
        """Close the connections to the SuperLink."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # a websocket: closing before accepting denies it (403)
            await send({"type": "websocket.close", "code": 1008})
            return
        path, method = scope["path"], scope["method"]
        if not forwarded(path, method):
            await JSONResponse(
                {"detail": f"Not found: {_shown(method, 20)} {_shown(path, 100)} is not "
                           f"forwarded; {_REFUSED}."},
                status_code=404)(scope, receive, send)
            return
        request = Request(scope, receive)
        bodyless = method in ("GET", "HEAD")
        # a GET or HEAD goes on without a body, so without the length of one it came with
        # (httpx would declare it and send nothing: h11 refuses that)
        out = _headers(request.headers.items(),
                       drop=_HOP_BY_HOP | {"content-length"} if bodyless else _HOP_BY_HOP,
                       connection=request.headers.get("connection", ""))
        client = request.client
        if client is not None:
            out.append(("x-forwarded-for", client.host))
        out.append(("x-forwarded-proto", scope.get("scheme", "http")))
        query = scope.get("query_string", b"").decode("latin-1")
        upstream_request = self._open().build_request(
            method, path + (f"?{query}" if query else ""), headers=out,
            content=None if bodyless else _body(request))
        try:
            upstream = await self._open().send(upstream_request, stream=True)
        except ClientDisconnect:
            return
        except _UPSTREAM_ERRORS as exc:
            await JSONResponse(
                {"detail": f"Bad gateway: the SuperLink at {self.upstream} did not answer "
                           f"({type(exc).__name__}: {exc})."},
                status_code=502)(scope, receive, send)
            return
        try:
            response = StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code)
            response.raw_headers = [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in _headers(
                    upstream.headers.multi_items(),
                    connection=upstream.headers.get("connection", ""))]
            await response(scope, receive, send)
        except ClientDisconnect:  # the device went away mid-answer: nothing left to tell it
            pass
        finally:
            await upstream.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request's body as it arrives (not read whole first)."""
    async for chunk in request.stream():
        if chunk:
            yield chunk


def main(argv: list[str] | None = None) -> None:
    """Serve :class:`FleetGate` with uvicorn until stopped (SIGTERM or SIGINT)."""
    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m edgewise.federated.fleet_gate",
        description="Forward Flower's Fleet API, and nothing else, to a SuperLink.")
    parser.add_argument("--host", required=True, help="Address to listen on.")
    parser.add_argument("--port", type=int, required=True, help="Port to listen on.")
    parser.add_argument("--upstream", required=True,
                        help="The SuperLink's base URL, e.g. http://127.0.0.1:9093.")
    parser.add_argument("--ssl-certfile", help="PEM certificate (chain): serve TLS only.")
    parser.add_argument("--ssl-keyfile", help="Unencrypted PEM private key of the certificate.")
    parser.add_argument("--upstream-ca",
                        help="PEM CA certificate that verifies an https:// --upstream.")
    args = parser.parse_args(argv)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        parser.error("--ssl-certfile and --ssl-keyfile go together; give both or neither.")
    if args.upstream_ca and not args.upstream.startswith("https://"):
        parser.error(f"--upstream-ca verifies an https:// --upstream; got --upstream "
                     f"{args.upstream!r}.")
    config = uvicorn.Config(FleetGate(args.upstream, upstream_ca=args.upstream_ca),
                            host=args.host, port=args.port,
                            ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                            proxy_headers=False, server_header=False, lifespan="on",
                            timeout_keep_alive=30, log_level="info")
    server = uvicorn.Server(config)
    if args.host == "::":
        # every interface, IPv4 too (asyncio would bind IPv6 only): devices on either, and
        # this machine's own check at 127.0.0.1
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", args.port))
        server.run(sockets=[sock])
    else:
        server.run()


if __name__ == "__main__":
    main()
