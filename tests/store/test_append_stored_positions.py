"""``AppendResult.stored_positions``: which of an append's readings the store stored (the
gateway scores only those), on every backend."""

from __future__ import annotations

from edgewise.store import open_store
from edgewise.telemetry import Reading


def test_stored_positions_leave_out_duplicates_and_conflicts(store_url: str) -> None:
    """Check a batch of a new reading, a re-delivery, a conflict and a key repeated inside
    the batch gives the positions of the new readings only, and the counts agree."""
    store = open_store(store_url)
    try:
        first = store.append([Reading("d", "t", 10, 1.0), Reading("d", "t", 20, 2.0)])
        assert first.stored_positions == [0, 1] and first.stored == 2
        res = store.append([
            Reading("d", "t", 20, 2.0),    # 0: re-delivered (duplicate)
            Reading("d", "t", 30, 3.0),    # 1: new
            Reading("d", "t", 10, 900.0),  # 2: conflict with the stored 1.0
            Reading("d", "t", 30, 3.0),    # 3: the same key again in this batch
            Reading("e", "t", 10, 5.0),    # 4: new, another device
        ])
        assert res.stored_positions == [1, 4]
        assert (res.stored, res.duplicates, res.conflicts) == (2, 2, 1)
        assert store.query("d", "t", 10, 11) == [("t", 10, 1.0)]
    finally:
        store.close()
