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
  ``edgewise_http_connections_closed_total{reason="per_source"|"total"}``);
* a connection with no request under way for ``idle_s`` (10 s: none begun since it
  opened, a request header sent a byte at a time, or idle after its last answer where
  uvicorn's keep-alive timer was stopped by a partial next request) is closed
  (``reason="idle"``). A request being read or answered (a slow upload, a long CSV
  stream) is never cut.

A TLS connection is counted once its handshake is done (asyncio holds an unfinished one
for at most 60 s).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edgewise.security.credentials import source_key
from edgewise.transport.broker import MAX_PENDING_PER_SOURCE, default_max_pending

__all__ = ["HTTP_IDLE_S", "guarded_http_protocol"]

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

    def closed(reason: str) -> None:
        if count is not None:
            count("edgewise_http_connections_closed_total", reason=reason)

    class Guarded(base):  # type: ignore[misc, valid-type]
        _ew_open = False
        _ew_pending: str | None = None  # its source while no request has begun
        _ew_timer: asyncio.TimerHandle | None = None
        _ew_done: Any = None  # the request answered by the last check

        def connection_made(self, transport: Any) -> None:
            peer = transport.get_extra_info("peername")
            source = source_key(str(peer[0]) if isinstance(peer, tuple) and peer else "")
            if opened[0] >= total or pending_by.get(source, 0) >= per_source:
                transport.abort()  # nothing read, nothing of uvicorn's state made
                closed("total" if opened[0] >= total else "per_source")
                return
            opened[0] += 1
            self._ew_open = True
            pending_by[source] = pending_by.get(source, 0) + 1
            self._ew_pending = source
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
            super().data_received(data)
            if self._ew_pending is not None and getattr(self, "cycle", None) is not None:
                self._ew_begun()  # its first request's header is in

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._ew_open:  # refused at connection_made
                return
            self._ew_open = False
            opened[0] -= 1
            self._ew_begun()
            if self._ew_timer is not None:
                self._ew_timer.cancel()
                self._ew_timer = None
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
