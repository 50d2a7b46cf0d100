"""Writer for the store crash loop: appends numbered batches and prints each id once committed.

Usage: python -m tests.store._crash_writer PATH BATCH_SIZE CHECKPOINT_EVERY
Batch k holds BATCH_SIZE readings of device 'crash' (4 metrics) with message seq k and
times T0 + k*BATCH_SIZE + i ns, so the reader can tell which batch a reading belongs to.
It resumes at the store's seq watermark + 1, like a device resending what was not acked.
"""

from __future__ import annotations

import sys

from edgewise.store.duckdb import DuckDBStore
from edgewise.telemetry import Reading

T0 = 1_700_000_000 * 10**9
METRICS = ("a", "b", "c", "d")


def batch(k: int, size: int) -> list[Reading]:
    """The readings of batch ``k``."""
    base = T0 + k * size
    return [
        Reading("crash", METRICS[i % 4], base + i, float(k) + i / size, seq=k)
        for i in range(size)
    ]


def main() -> None:
    path, size, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = DuckDBStore(path)
    k = store.seq_watermark("crash") + 1
    print(f"start {k}", flush=True)
    while True:
        store.append(batch(k, size), {"crash": [k]})
        print(k, flush=True)
        if every and k % every == 0:
            store.checkpoint()
        k += 1


if __name__ == "__main__":
    main()
