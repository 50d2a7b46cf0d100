"""What the embedded broker writes to a connection, bounded in time and in memory.

amqtt writes each packet and then waits in ``drain()`` for as long as its client takes to
read it, and closes a connection the same way (``drain()`` before the socket is closed).
A client that stops reading (a zero TCP window) thus held each write, every write queued
behind it (each QoS 1 ack or dead letter a task of its own, holding its message), and the
close of its connection: its socket stayed open for ever, after it had left its device's
count of connections. Here:

* :class:`BoundedWriter` waits at most ``stall_s`` for a client to take what was written
  (then drops the connection: its transport aborted) and at most ``grace_s`` to close it
  cleanly (then aborts it);
* :class:`Outbox` holds a connection's acks and dead letters on their way: at most
  ``window`` QoS 1 publishes in flight (each waits for its PUBACK), the others queued up to
  ``limit_bytes``; past that a new dead letter is dropped (the caller counts it), and a
  queued ack is replaced by a newer one (an ack is the device's watermark: the highest one
  says all; one with a lower seq, a watermark lookup that ended late, leaves it), so at
  most one waits and none is dropped for room.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
from collections.abc import Callable
from typing import Any

from amqtt.adapters import StreamWriterAdapter

__all__ = ["ENTRY_OVERHEAD_BYTES", "BoundedWriter", "Outbox"]

#: What one queued message is charged beyond its topic and payload (its list, its deque
#: slot, the strings' headers), so that many tiny ones cannot slip past the bound
ENTRY_OVERHEAD_BYTES = 128


def _ack_seq(data: bytes) -> float:
    """The seq of an ack's payload (``{"seq": n}``); ``-inf`` when it has none, so that any
    ack replaces it.

    >>> _ack_seq(b'{"seq": 7}'), _ack_seq(b'junk')
    (7, -inf)
    """
    try:
        seq = json.loads(data)["seq"]
    except (ValueError, TypeError, KeyError):
        return float("-inf")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else float("-inf")


class BoundedWriter(StreamWriterAdapter):
    """amqtt's writer of a TCP (or TLS) connection, with no wait on a client that does not
    read: a :meth:`drain` not done within ``stall_s`` drops the connection (``on_stall``
    is called first, once, to count and log it) and raises :class:`ConnectionResetError`,
    which amqtt's handler takes as the connection lost; :meth:`close` gives the client
    ``grace_s`` to take what is left, then aborts the connection.

    >>> BoundedWriter.__mro__[1].__name__
    'StreamWriterAdapter'
    """

    def __init__(self, writer: asyncio.StreamWriter, stall_s: float, grace_s: float) -> None:
        super().__init__(writer)
        self.stall_s = stall_s
        self.grace_s = grace_s
        #: called (once) when a drain stalls, before the connection is dropped
        self.on_stall: Callable[[], None] | None = None
        self.aborted = False

    def abort(self) -> None:
        """Drop the connection at once: nothing more is written or waited for."""
        self.is_closed = True
        self.aborted = True
        with contextlib.suppress(Exception):
            self._writer.transport.abort()

    async def drain(self) -> None:
        if self.aborted:
            raise ConnectionResetError("the broker dropped this connection")
        if self.is_closed:
            return
        if not self._writer.transport.get_write_buffer_size():
            await self._writer.drain()  # all of it handed to the system: returns at once
            return
        try:
            async with asyncio.timeout(self.stall_s):
                await self._writer.drain()
        except TimeoutError:
            if not self.aborted and self.on_stall is not None:
                self.on_stall()
            self.abort()
            raise ConnectionResetError(
                f"the client took nothing written to it for {self.stall_s:g} s") from None

    async def close(self) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        done = False
        try:
            async with asyncio.timeout(self.grace_s):
                await self._writer.drain()
                if self._writer.can_write_eof():
                    self._writer.write_eof()
                self._writer.close()
                with contextlib.suppress(AttributeError):
                    await self._writer.wait_closed()
            done = True
        except (TimeoutError, OSError):
            pass
        finally:
            if not done:  # timed out, failed or cancelled: drop it
                self.abort()


class Outbox:
    """One connection's acks and dead letters on their way (see the module docstring).

    ``send(topic, data, qos)`` makes the coroutine of one publish (amqtt's
    ``mqtt_publish`` on the connection's handler: for QoS 1 it returns once the PUBACK
    came, or raises after 5 s); ``track(task)`` is handed each publish's task as it
    starts. Used on the broker's loop only.

    >>> async def demo():
    ...     sent = []
    ...     async def send(topic, data, qos):
    ...         sent.append(data)
    ...     box = Outbox(send, window=1, limit_bytes=10_000)
    ...     box.put("edgewise/d1/deadletter", b"dl", 1)
    ...     box.put("edgewise/d1/ack", b'{"seq": 4}', 1, ack=True)
    ...     box.put("edgewise/d1/ack", b'{"seq": 9}', 1, ack=True)  # replaces seq 4
    ...     while len(box):
    ...         await asyncio.sleep(0)
    ...     return sent
    >>> asyncio.run(demo())
    [b'dl', b'{"seq": 9}']
    """

    def __init__(self, send: Callable[[str, bytes, int], Any], window: int, limit_bytes: int,
                 track: Callable[[asyncio.Future[Any]], None] | None = None) -> None:
        self.send = send
        self.window = window
        self.limit_bytes = limit_bytes
        self.track = track
        #: queued entries [topic, data, qos, charged bytes], oldest first
        self.queue: collections.deque[list[Any]] = collections.deque()
        #: bytes charged for what is queued or in flight
        self.charged = 0
        self.in_flight: set[asyncio.Future[Any]] = set()
        self._ack: list[Any] | None = None  # the queued ack, replaced by a newer one
        self.closed = False

    def put(self, topic_name: str, data: bytes, qos: int, *, ack: bool = False) -> bool:
        """Queue ``data`` for ``topic_name`` (sent as soon as the window has room). An
        ``ack`` replaces the ack still queued, if any, unless its seq is lower (a watermark
        lookup that ended after a commit queued a newer ack), and is never dropped for room
        (at most one is queued). ``False`` when it was dropped: the outbox is closed, or full
        (an empty one takes any one message)."""
        if self.closed:
            return False
        if ack and self._ack is not None:
            if _ack_seq(data) < _ack_seq(self._ack[1]):
                return True  # an older watermark (a lookup ended late): keep the newer one
            self.charged += len(data) - len(self._ack[1])
            self._ack[3] += len(data) - len(self._ack[1])
            self._ack[1:3] = [data, qos]
            return True
        cost = len(data) + len(topic_name) + ENTRY_OVERHEAD_BYTES
        if (not ack and self.charged + cost > self.limit_bytes
                and (self.queue or self.in_flight)):
            return False
        entry = [topic_name, data, qos, cost]
        self.queue.append(entry)
        self.charged += cost
        if ack:
            self._ack = entry
        self._pump()
        return True

    def _pump(self) -> None:
        while self.queue and len(self.in_flight) < self.window and not self.closed:
            entry = self.queue.popleft()
            if entry is self._ack:
                self._ack = None
            topic_name, data, qos, cost = entry
            task = asyncio.ensure_future(self.send(topic_name, data, qos))
            self.in_flight.add(task)
            task.add_done_callback(functools.partial(self._sent, cost))
            if self.track is not None:
                self.track(task)

    def _sent(self, cost: int, task: asyncio.Future[Any]) -> None:
        self.in_flight.discard(task)
        self.charged -= cost
        self._pump()

    def close(self) -> None:
        """The connection ended: drop what is queued, cancel what is in flight."""
        self.closed = True
        self.queue.clear()
        self._ack = None
        for task in list(self.in_flight):
            task.cancel()

    def __len__(self) -> int:
        """Messages queued or in flight."""
        return len(self.queue) + len(self.in_flight)
