"""The commit batcher: a message the store refuses cannot hold back the others it was
batched with (other devices' messages, the same device's good ones)."""

from __future__ import annotations

import asyncio

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
