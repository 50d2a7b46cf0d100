"""Collects arriving messages into batches and commits each batch on one worker thread.

A batch is what arrived while the previous batch was being committed (up to
``max_batch`` messages), so under light load each message commits at once and under
heavy load commits grow larger and cheaper per message. The asyncio loop keeps
receiving while a commit runs; acknowledgements go out after it returns.

What waits for a commit can be bounded (``max_queued_bytes``, ``max_device_bytes``: the
payload bytes queued, in all and per device): :meth:`put_wait` then waits for room, so a
caller that awaits it before acknowledging a message (the embedded broker) stops reading
its devices while the store is stalled, instead of holding their messages in memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Awaitable, Callable

from edgewise.transport.base import Handler, Message, Outcome

__all__ = ["Batcher"]

log = logging.getLogger(__name__)


class Batcher:
    """Feed :class:`Message` objects with :meth:`put`; ``on_done`` gets each committed batch.

    Parameters
    ----------
    handler
        Commits a batch (runs on a worker thread).
    on_done
        Coroutine called on the loop with ``(messages, outcomes)`` after each commit.
    on_error
        Coroutine called with ``(messages, exception)`` when the commit raised.
    max_batch
        Most messages per commit.
    max_batch_bytes
        A commit takes no more messages once it holds this many payload bytes (``None``:
        no bound; one message over it is committed alone), so that one commit, which a
        stop waits for, stays short however large the backlog's messages are.
    max_queued_bytes, max_device_bytes
        The payload bytes that may wait for a commit, in all and per device (``None``: no
        bound): :meth:`put_wait` waits while the queue (or the message's device's part of
        it) holds that much or more, so one message over the bound still goes through
        alone. Room is made as each batch is taken for its commit, so at most the bound,
        one message and the batch being committed are held. :meth:`put` never waits.
        Once :meth:`stop` has begun, both refuse a message (``False``).

    Examples
    --------
    >>> async def main():
    ...     seen = []
    ...     async def done(msgs, outs):
    ...         seen.extend(o.ack_seq for o in outs)
    ...     b = Batcher(lambda ms: [Outcome(m.device_id, 1) for m in ms], done)
    ...     await b.start()
    ...     b.put(Message("p", b"{}"))
    ...     await b.stop()
    ...     return seen, b.put(Message("p", b"{}"))  # refused once stopped
    >>> asyncio.run(main())
    ([1], False)
    """

    def __init__(
        self,
        handler: Handler,
        on_done: Callable[[list[Message], list[Outcome]], Awaitable[None]],
        on_error: Callable[[list[Message], BaseException], Awaitable[None]] | None = None,
        *,
        max_batch: int = 4000,
        max_queued_bytes: int | None = None,
        max_device_bytes: int | None = None,
        max_batch_bytes: int | None = None,
    ) -> None:
        for name, value in (("max_queued_bytes", max_queued_bytes),
                            ("max_device_bytes", max_device_bytes),
                            ("max_batch_bytes", max_batch_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"The {name!r} parameter of Batcher must be an int in the "
                                 f"range [1, inf) or None. Got {value!r} instead.")
        self.handler = handler
        self.on_done = on_done
        self.on_error = on_error
        self.max_batch = max_batch
        self.max_queued_bytes = math.inf if max_queued_bytes is None else max_queued_bytes
        self.max_device_bytes = math.inf if max_device_bytes is None else max_device_bytes
        self.max_batch_bytes = math.inf if max_batch_bytes is None else max_batch_bytes
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        #: payload bytes queued, in all and per device (only devices with some queued)
        self._bytes = 0
        self._device_bytes: dict[str, int] = {}
        self._room: asyncio.Condition | None = None  # made on the loop, at first need
        self._closed = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edgewise-commit")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.messages = 0
        # per kind of failed-commit line: when it was last logged, and how many since not
        self._logged: dict[str, tuple[float, int]] = {}

    async def start(self) -> None:
        """Start the consuming task on the running loop."""
        self._task = asyncio.create_task(self._run())

    def put(self, message: Message) -> bool:
        """Queue a message (non-blocking, past any bound; call from the loop). Returns
        ``False``, queuing nothing, once :meth:`stop` has begun: the message would wait
        behind the end of the queue, never committed nor acknowledged, so the caller must
        handle it (as for :meth:`put_wait`)."""
        if self._closed:
            return False
        self._add(message)
        return True

    async def put_wait(self, message: Message) -> bool:
        """Queue a message once there is room for it (see ``max_queued_bytes``); call from
        the loop. Returns ``False``, queuing nothing, when the batcher stops first (the
        message is then neither committed nor to be acknowledged)."""
        if not self._has_room(message.device_id):
            if self._room is None:
                self._room = asyncio.Condition()
            async with self._room:
                await self._room.wait_for(
                    lambda: self._closed or self._has_room(message.device_id))
        if self._closed:
            return False
        self._add(message)
        return True

    def _has_room(self, device_id: str) -> bool:
        return (self._bytes < self.max_queued_bytes
                and self._device_bytes.get(device_id, 0) < self.max_device_bytes)

    def _add(self, message: Message) -> None:
        size = len(message.payload)
        self._bytes += size
        self._device_bytes[message.device_id] = self._device_bytes.get(message.device_id,
                                                                       0) + size
        self._queue.put_nowait(message)

    def _taken(self, message: Message) -> None:
        """``message`` left the queue for its commit: its bytes no longer count."""
        size = len(message.payload)
        self._bytes -= size
        left = self._device_bytes.get(message.device_id, 0) - size
        if left > 0:
            self._device_bytes[message.device_id] = left
        else:
            self._device_bytes.pop(message.device_id, None)

    async def _wake(self) -> None:
        """Let the :meth:`put_wait` callers waiting for room look again."""
        if self._room is not None:
            async with self._room:
                self._room.notify_all()

    def pending(self) -> int:
        """Messages waiting for a commit."""
        return self._queue.qsize()

    def pending_bytes(self, device_id: str | None = None) -> int:
        """Payload bytes waiting for a commit, in all or of ``device_id``."""
        return self._bytes if device_id is None else self._device_bytes.get(device_id, 0)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            size = len(first.payload)
            while (len(batch) < self.max_batch and size < self.max_batch_bytes
                   and not self._queue.empty()):
                m = self._queue.get_nowait()
                if m is None:
                    stop = True
                    break
                batch.append(m)
                size += len(m.payload)
            for m in batch:
                self._taken(m)
            await self._wake()
            done, outcomes = await self._commit(loop, batch)
            if not done:
                continue
            self.batches += 1
            self.messages += len(done)
            try:
                await self.on_done(done, outcomes)
            except Exception:
                log.exception("publishing acknowledgements failed")

    async def _commit(
        self, loop: asyncio.AbstractEventLoop, batch: list[Message]
    ) -> tuple[list[Message], list[Outcome]]:
        """Commit ``batch``; if that raises, commit its halves, and so on down to single
        messages, so one message the store refuses (or one device's) cannot hold back the
        others it was batched with. Returns the committed messages and their outcomes;
        each message that fails alone goes to ``on_error``."""
        try:
            outcomes = await loop.run_in_executor(self._pool, self.handler, batch)
            return batch, list(outcomes)
        except Exception as exc:
            if len(batch) == 1:
                self._log_limited(logging.ERROR, "alone", "commit of a message from %r failed; "
                                  "not acknowledged: %s", batch[0].device_id, exc)
                if self.on_error is not None:
                    try:
                        await self.on_error(batch, exc)
                    except Exception:  # reporting must not end the commit loop
                        log.exception("reporting a failed commit failed")
                return [], []
            self._log_limited(logging.WARNING, "halves", "commit of %d messages failed (%s); "
                              "committing them in halves", len(batch), exc)
        mid = len(batch) // 2
        first, out1 = await self._commit(loop, batch[:mid])
        second, out2 = await self._commit(loop, batch[mid:])
        return first + second, out1 + out2

    #: Each kind of failed-commit line is logged at most this often.
    LOG_EVERY_S = 10.0

    def _log_limited(self, level: int, key: str, msg: str, *args: object) -> None:
        """Log ``msg`` at most every ``LOG_EVERY_S`` seconds for ``key``, saying how many
        were left out since. A store outage fails every commit, then every half of it, down
        to each message alone, each one logged: 817 lines in 3 s of an outage with 3
        devices publishing, and as many more per device."""
        now = time.monotonic()
        last, left_out = self._logged.get(key, (-math.inf, 0))
        if now - last < self.LOG_EVERY_S:
            self._logged[key] = (last, left_out + 1)
            return
        self._logged[key] = (now, 0)
        more = (f" ({left_out} more such in the last {now - last:.0f} s not logged)"
                if left_out else "")
        log.log(level, msg + "%s; more such within %g s are not logged", *args, more,
                self.LOG_EVERY_S)

    async def stop(self, *, drop_queued: bool = False) -> list[Message]:
        """Commit what is queued, then stop; a :meth:`put_wait` still waiting for room
        returns ``False``. With ``drop_queued`` only the batch being committed is finished:
        what waits behind it is dropped, uncommitted, and returned (for a caller whose
        messages are sent again when not acknowledged: an external broker's persistent
        session), so that a stop does not wait for a backlog's commits. Returns the
        messages dropped (none without ``drop_queued``)."""
        self._closed = True
        dropped: list[Message] = []
        while drop_queued and not self._queue.empty():
            m = self._queue.get_nowait()
            if m is not None:
                self._taken(m)
                dropped.append(m)
        await self._wake()
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        self._pool.shutdown(wait=True)
        return dropped
