"""Collects arriving messages into batches and commits each batch on one worker thread.

A batch is what arrived while the previous batch was being committed (up to
``max_batch`` messages), so under light load each message commits at once and under
heavy load commits grow larger and cheaper per message. The asyncio loop keeps
receiving while a commit runs; acknowledgements go out after it returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
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
    ...     return seen
    >>> asyncio.run(main())
    [1]
    """

    def __init__(
        self,
        handler: Handler,
        on_done: Callable[[list[Message], list[Outcome]], Awaitable[None]],
        on_error: Callable[[list[Message], BaseException], Awaitable[None]] | None = None,
        *,
        max_batch: int = 4000,
    ) -> None:
        self.handler = handler
        self.on_done = on_done
        self.on_error = on_error
        self.max_batch = max_batch
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edgewise-commit")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.messages = 0

    async def start(self) -> None:
        """Start the consuming task on the running loop."""
        self._task = asyncio.create_task(self._run())

    def put(self, message: Message) -> None:
        """Queue a message (non-blocking; call from the loop)."""
        self._queue.put_nowait(message)

    def pending(self) -> int:
        """Messages waiting for a commit."""
        return self._queue.qsize()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self.max_batch and not self._queue.empty():
                m = self._queue.get_nowait()
                if m is None:
                    stop = True
                    break
                batch.append(m)
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
                log.error("commit of a message from %r failed; not acknowledged: %s",
                          batch[0].device_id, exc)
                if self.on_error is not None:
                    try:
                        await self.on_error(batch, exc)
                    except Exception:  # reporting must not end the commit loop
                        log.exception("reporting a failed commit failed")
                return [], []
            log.warning("commit of %d messages failed (%s); committing them in halves",
                        len(batch), exc)
        mid = len(batch) // 2
        first, out1 = await self._commit(loop, batch[:mid])
        second, out2 = await self._commit(loop, batch[mid:])
        return first + second, out1 + out2

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        self._pool.shutdown(wait=True)
