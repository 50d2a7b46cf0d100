"""Hunt s46 on the per-device rate limiter (:mod:`edgewise.security.ratelimit`): real
threads, the real clock."""

from __future__ import annotations

import threading
import time

from edgewise.errors import RateLimitError
from edgewise.security.ratelimit import RateLimiter


def test_a_take_that_waited_for_the_limiter_counts_the_refill_meanwhile() -> None:
    """Before: ``take`` read the clock before the limiter's lock, so a take that waited
    for it (another thread inside the limiter: a prune of many buckets, or just the GIL
    handing over) was refused with the tokens refilled while it waited: here 0.8 s at
    10/s (8 tokens) for 5 readings, refused with 'retry in 0.5 s'."""
    rl = RateLimiter(rate_per_s=10, burst=10)
    rl.take("pump-1", 10)  # empty now
    got: list[object] = []

    def take() -> None:
        try:
            rl.take("pump-1", 5)
            got.append("passed")
        except RateLimitError as exc:
            got.append(exc)

    with rl._lock:  # another thread inside the limiter for 0.8 s
        worker = threading.Thread(target=take)
        worker.start()
        time.sleep(0.8)
    worker.join(5)
    assert got == ["passed"]


def test_one_device_flooding_leaves_the_others_their_whole_burst() -> None:
    """Held: a device sending far over its limit from 4 threads at once is refused, and
    every other device still gets its whole burst, at once."""
    rl = RateLimiter(rate_per_s=5, burst=50)
    stop = threading.Event()
    refused = [0]

    def flood() -> None:
        while not stop.is_set():
            try:
                rl.take("noisy", 1)
            except RateLimitError:
                refused[0] += 1

    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        for i in range(20):
            rl.take(f"quiet-{i}", 50)  # none refused
    finally:
        stop.set()
        for t in threads:
            t.join(5)
    assert refused[0] > 100


def test_many_distinct_devices_keep_a_bounded_table() -> None:
    """Held: 200,000 ids, each sending once (a fleet churning ids, or each device once a
    day), leave at most a few thousand buckets: the refilled ones are pruned."""
    rl = RateLimiter(rate_per_s=1e6, burst=10)  # refilled within microseconds
    for i in range(200_000):
        rl.take(f"d-{i}", 1)
    assert len(rl._buckets) <= 4096
