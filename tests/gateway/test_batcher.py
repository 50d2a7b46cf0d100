"""The commit batcher: a message the store refuses cannot hold back the others it was
batched with (other devices' messages, the same device's good ones)."""

from __future__ import annotations

import asyncio
import threading

from edgewise.errors import StoreError
from edgewise.transport.base import Message, Outcome
from edgewise.transport.batcher import Batcher


def test_a_poisoned_message_fails_alone_and_the_rest_commit() -> None:
    """Check a batch holding one message the store refuses: every other message commits
    and is acknowledged once, the refused one goes to on_error alone (it used to take the
    whole batch, 99 other devices' messages with it, down)."""
    committed: list[bytes] = []
    done: list[bytes] = []
    failed: list[list[bytes]] = []

    def handler(batch: list[Message]) -> list[Outcome]:
        if any(m.payload == b"poison" for m in batch):
            raise StoreError("a reading is not finite")
        committed.extend(m.payload for m in batch)
        return [Outcome(m.device_id, 1) for m in batch]

    async def on_done(msgs: list[Message], outs: list[Outcome]) -> None:
        assert len(msgs) == len(outs)
        done.extend(m.payload for m in msgs)

    async def on_error(msgs: list[Message], exc: BaseException) -> None:
        failed.append([m.payload for m in msgs])

    async def main() -> None:
        b = Batcher(handler, on_done, on_error)
        for i in range(100):  # all queued before the worker starts: one batch of 100
            b.put(Message("pois-1" if i == 37 else f"dev-{i}",
                          b"poison" if i == 37 else f"m{i}".encode()))
        await b.start()
        await b.stop()

    asyncio.run(main())
    good = [f"m{i}".encode() for i in range(100) if i != 37]
    assert sorted(committed) == sorted(good) and sorted(done) == sorted(good)
    assert failed == [[b"poison"]]



def test_a_put_once_the_stop_began_is_refused_not_left_behind_the_end() -> None:
    """Check ``put`` while ``stop`` waits for the commit under way, and after it, returns
    ``False`` and queues nothing: it queued the message behind the end marker, where it
    was never committed nor acknowledged, without a word."""
    entered, release = threading.Event(), threading.Event()
    committed: list[bytes] = []

    def handler(batch: list[Message]) -> list[Outcome]:
        entered.set()
        release.wait(10)  # the commit under way, which stop() waits for
        committed.extend(m.payload for m in batch)
        return [Outcome(m.device_id, 1) for m in batch]

    async def on_done(msgs: list[Message], outs: list[Outcome]) -> None:
        pass

    async def main() -> tuple[object, object, int]:
        b = Batcher(handler, on_done)
        await b.start()
        b.put(Message("dev-1", b"first"))
        assert await asyncio.to_thread(entered.wait, 10)
        stop = asyncio.create_task(b.stop())
        await asyncio.sleep(0)  # stop() has begun: it waits for the commit under way
        during = b.put(Message("dev-1", b"during"))
        release.set()
        await stop
        after = b.put(Message("dev-1", b"after"))
        return during, after, b.pending()

    during, after, pending = asyncio.run(main())
    assert pending == 0, f"{pending} message(s) left queued behind the end"
    assert (during, after) == (False, False), (during, after)
    assert committed == [b"first"]
