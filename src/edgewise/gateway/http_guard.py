"""HTTP connections no peer can hoard: the gateway's HTTP server (uvicorn) keeps a
connection that never sends a request open for ever, so 1,100 idle sockets from anyone
who can reach the port took every file descriptor of a gateway at ``ulimit -n`` 1024
(``socket.accept() out of system resource``; ``/healthz`` timed out, and so would every
device's HTTP telemetry and the store's files). The embedded MQTT broker already bounds
its connections that have not logged in (:mod:`edgewise.transport.broker`); this does
the same for HTTP, as a subclass of uvicorn's HTTP protocol
(:func:`guarded_http_protocol`):

* at most ``max_total`` HTTP connections open at once (:func:`default_max_pending`, a
  quarter of the open-file limit: ``ulimit -n`` 1024 gives 256; raise it for a fleet
  that keeps more connections open) and, from one address (an IPv6 one by its /64),
  ``max_per_source`` that have not yet begun a request (128, or half the total where that
  is less; as the broker's cap on connections not logged in, so devices behind one NAT
  address that are sending are never refused by it); past either a new connection is
  closed at once, before a byte is read (counted in
  ``edgewise_http_connections_closed_total{reason="per_source"|"total"}``); but at the
  total cap a new connection first takes the place of the open one that has sat idle
  between requests the longest (its answer sent, no next request begun; closed at once,
  counted as ``reason="total"``): one peer that kept every connection open with a request
  every second or so (a ``GET /healthz`` each) refused every other client for as long
  as it went on, its devices' HTTP telemetry included. A connection with a request under
  way, or not yet begun (capped per address as above), is never taken;
* a connection with no request under way for ``idle_s`` (10 s: none begun since it
  opened, a request header sent a byte at a time, or idle after its last answer where
  uvicorn's keep-alive timer was stopped by a partial next request) is closed
  (``reason="idle"``). A request being read or answered (a slow upload, a long CSV
  stream) is never cut.

Over TLS (:func:`guarded_tls_protocol`) a connection is counted from the moment it is
accepted, and its handshake must be done within ``idle_s``: uvicorn left TLS to asyncio,
which counted nothing until a handshake was done and held an unfinished one for 60 s, so
an unauthenticated peer could still hold every descriptor of an HTTPS gateway by opening
connections and sending nothing (about 20 new ones a second at ``ulimit -n`` 1024).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from asyncio.sslproto import SSLProtocol
from collections.abc import Callable
from typing import Any

from edgewise.security.credentials import source_key
from edgewise.transport.broker import MAX_PENDING_PER_SOURCE, default_max_pending

__all__ = ["HTTP_IDLE_S", "guarded_http_protocol", "guarded_tls_protocol"]

#: Seconds an HTTP connection may stay open with no request under way (as the embedded
#: broker's 10 s for a CONNECT).
HTTP_IDLE_S = 10.0


def guarded_http_protocol(
    base: type[asyncio.Protocol], *, idle_s: float = HTTP_IDLE_S,
    max_total: int | None = None, max_per_source: int | None = None,
    count: Callable[..., Any] | None = None,
) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol class ``base`` (``h11`` or ``httptools``)
    with the bounds of the module docstring; its connections share one count, so make one
    class per server. ``count(name, reason=...)`` is called for each connection closed.

    >>> from uvicorn.protocols.http.h11_impl import H11Protocol
    >>> guarded_http_protocol(H11Protocol, max_total=4).__name__
    'GuardedH11Protocol'
    """
    total = max_total if max_total is not None else default_max_pending()
    per_source = (max_per_source if max_per_source is not None
                  else min(MAX_PENDING_PER_SOURCE, max(1, total // 2)))
    pending_by: dict[str, int] = {}  # connections with no request begun yet, by source
    opened = [0]  # connections open
    conns: dict[Any, None] = {}  # the connections counted in ``opened``

    def take_idle() -> bool:
        """Close the connection idle between requests the longest (its answer complete, no
        next request begun), counted out at once; whether there was one."""
        victim = None
        for c in conns:
            cycle = getattr(c, "cycle", None)
            if (c._ew_pending is None and cycle is not None and cycle.response_complete
                    and (victim is None or c._ew_seen < victim._ew_seen)):
                victim = c
        if victim is None:
            return False
        transport = getattr(victim, "transport", None)
        victim._ew_release()
        if transport is not None:
            transport.abort()  # now: a close waits for a peer that reads nothing
        closed("total")
        return True

    def closed(reason: str) -> None:
        if count is not None:
            count("edgewise_http_connections_closed_total", reason=reason)

    class Guarded(base):  # type: ignore[misc, valid-type]
        _ew_open = False  # admitted and not yet counted out
        _ew_admitted = False  # admitted (uvicorn's state is made; it hears of its end)
        _ew_made = False  # uvicorn's connection_made has run (over TLS: handshake done)
        _ew_seen = 0.0  # when it last sent a byte (monotonic)
        _ew_pending: str | None = None  # its source while no request has begun
        _ew_timer: asyncio.TimerHandle | None = None
        _ew_done: Any = None  # the request answered by the last check
        _ew_closed = staticmethod(closed)

        def _ew_admit(self, transport: Any) -> bool:
            """Count a new connection in, or close it at once past a cap."""
            peer = transport.get_extra_info("peername")
            source = source_key(str(peer[0]) if isinstance(peer, tuple) and peer else "")
            if opened[0] >= total and pending_by.get(source, 0) < per_source:
                take_idle()  # an idle keep-alive connection makes room, if there is one
            if opened[0] >= total or pending_by.get(source, 0) >= per_source:
                transport.abort()  # nothing read, nothing of uvicorn's state made
                closed("total" if opened[0] >= total else "per_source")
                return False
            opened[0] += 1
            self._ew_open = self._ew_admitted = True
            self._ew_seen = time.monotonic()
            conns[self] = None
            pending_by[source] = pending_by.get(source, 0) + 1
            self._ew_pending = source
            return True

        def connection_made(self, transport: Any) -> None:
            # over TLS it was admitted when accepted, before its handshake
            if not self._ew_admitted and not self._ew_admit(transport):
                return
            self._ew_made = True
            super().connection_made(transport)
            self._ew_timer = asyncio.get_running_loop().call_later(idle_s, self._ew_check)

        def _ew_begun(self) -> None:
            """No longer a connection with no request begun (it has one, or is gone)."""
            source, self._ew_pending = self._ew_pending, None
            if source is not None:
                left = pending_by.get(source, 1) - 1
                if left > 0:
                    pending_by[source] = left
                else:
                    pending_by.pop(source, None)

        def data_received(self, data: bytes) -> None:
            self._ew_seen = time.monotonic()
            super().data_received(data)
            if self._ew_pending is not None and getattr(self, "cycle", None) is not None:
                self._ew_begun()  # its first request's header is in

        def _ew_release(self) -> None:
            """Count a connection out (it is gone)."""
            if not self._ew_open:  # refused when accepted, or already counted out
                return
            self._ew_open = False
            opened[0] -= 1
            conns.pop(self, None)
            self._ew_begun()
            if self._ew_timer is not None:
                self._ew_timer.cancel()
                self._ew_timer = None

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._ew_admitted:  # refused at connection_made
                return
            self._ew_release()
            super().connection_lost(exc)

        def _ew_check(self) -> None:
            self._ew_timer = None
            transport = getattr(self, "transport", None)
            if transport is None or transport.is_closing():
                return
            cycle = getattr(self, "cycle", None)
            if cycle is None or (cycle is self._ew_done and cycle.response_complete):
                # no request begun in idle_s, or none begun since the last one was answered
                # at least idle_s ago
                transport.close()
                closed("idle")
                return
            if cycle.response_complete:
                self._ew_done = cycle
            self._ew_timer = asyncio.get_running_loop().call_later(idle_s, self._ew_check)

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{base.__name__}"
    return Guarded


def guarded_tls_protocol(
    guarded: Callable[..., asyncio.Protocol], context: ssl.SSLContext, *,
    idle_s: float = HTTP_IDLE_S,
) -> Callable[..., asyncio.Protocol]:
    """A protocol factory for uvicorn (``config.http_protocol_class``) that serves
    ``guarded`` (a class from :func:`guarded_http_protocol`) over TLS with ``context``:
    each TCP connection is admitted by the guard's caps as it is accepted, and closed
    (counted as ``reason="idle"``) when its handshake is not done within ``idle_s`` (the
    guard's own ``idle_s`` then runs from the handshake's end). Start the server
    with no ``ssl`` of its own (the factory does the TLS).

    >>> from uvicorn.protocols.http.h11_impl import H11Protocol
    >>> make = guarded_tls_protocol(guarded_http_protocol(H11Protocol),
    ...                             ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    >>> callable(make)
    True
    """

    class GuardedTLS(SSLProtocol):
        """asyncio's TLS protocol over one guarded HTTP connection."""

        def __init__(self, app: Any) -> None:
            super().__init__(asyncio.get_running_loop(), app, context, None,
                             server_side=True, ssl_handshake_timeout=idle_s)
            self._ew_app = app
            self._ew_since = 0.0

        def connection_made(self, transport: Any) -> None:
            if not self._ew_app._ew_admit(transport):
                return  # closed at once; TLS never started
            self._ew_since = time.monotonic()
            super().connection_made(transport)

        def connection_lost(self, exc: Exception | None) -> None:
            app = self._ew_app
            if not app._ew_open and not app._ew_made:
                return  # refused when accepted
            super().connection_lost(exc)
            if not app._ew_made:  # the handshake never finished: uvicorn never saw it
                app._ew_release()
                # asyncio's handshake timeout ends it with ConnectionAbortedError
                if (isinstance(exc, ConnectionAbortedError)
                        or time.monotonic() - self._ew_since >= idle_s):
                    app._ew_closed("idle")

    def make(**kwargs: Any) -> asyncio.Protocol:
        return GuardedTLS(guarded(**kwargs))

    return make
