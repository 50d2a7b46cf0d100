"""``Store.stored_seqs``: exactly which seqs are stored for a device, on both backends.

The contract check (``check_store_stored_seqs`` in :mod:`edgewise.checks`) covers one
store; here: the errors' wording, that the answer waits for no writer (nor, on
PostgreSQL, for another reader), and that a PostgreSQL store shared by several processes
answers the seqs another one stored, including those folded into ``seq_marks``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Store
from edgewise.telemetry import Reading

T0 = 1_700_000_000 * 10**9
#: How long a look-up may take while another thread holds a lock (it must not wait for it).
PROMPT_S = 2.0


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


def _in_thread(fn: Callable[[], Any], timeout: float) -> tuple[bool, Any]:
    """Run ``fn`` on a thread; (whether it returned within ``timeout`` s, its result)."""
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    return (not t.is_alive(), got[0] if got else None)


def test_stored_seqs_answers_seq_by_seq(store: Store) -> None:
    """Check the answer holds exactly the stored seqs of those asked: below the
    watermark, in the runs above it, above the last gap; not 0, not a gap, not above
    the highest; empty for an empty question or an unknown device."""
    store.append([Reading("pump-1", "t", T0, 1.0, seq=9)], {"pump-1": [1, 2, 5, 6, 0]})
    assert store.seq_gaps("pump-1") == [(3, 4), (7, 8)]
    assert store.stored_seqs("pump-1", {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) == {1, 2, 5, 6, 9}
    assert store.stored_seqs("pump-1", set()) == set()
    assert store.stored_seqs("pump-1", range(6, 8)) == {6}
    assert store.stored_seqs("pump-2", {1, 9}) == set()


@pytest.mark.parametrize(
    ("seqs", "shown"),
    [
        pytest.param({3, -1}, "seq -1", id="negative"),
        pytest.param([1.5], "seq 1.5", id="float"),
        pytest.param([True], "seq True", id="bool"),
        pytest.param([2**62], f"seq {2**62}", id="too-large"),
        pytest.param(["2"], "seq '2'", id="str-seq"),
        pytest.param("12", "Got '12' instead", id="str"),
        pytest.param(7, "Got 7 instead", id="one-int"),
    ],
)
def test_stored_seqs_refuses_a_bad_seq_naming_it(store: Store, seqs: Any,
                                                 shown: str) -> None:
    """Check a seq that is not an int in [0, 2**62), or seqs that are not an iterable of
    ints, raise StoreError naming the device, the value and what is allowed."""
    with pytest.raises(StoreError) as err:
        store.stored_seqs("pump-1", seqs)
    msg = str(err.value)
    assert "'pump-1'" in msg and shown in msg, msg
    assert "[0, 2**62)" in msg or "iterable of ints" in msg, msg


@pytest.mark.parametrize("device_id", ["", None, 5])
def test_stored_seqs_refuses_a_bad_device_id(store: Store, device_id: Any) -> None:
    """Check a device id that is not a non-empty str raises StoreError naming it."""
    with pytest.raises(StoreError, match="non-empty str"):
        store.stored_seqs(device_id, {1})


def test_stored_seqs_does_not_wait_for_the_write_lock(store: Store) -> None:
    """Check ``stored_seqs`` answers at once while another thread holds the store's write
    lock (as an append does for its whole transaction), for seqs the tracker holds and
    for seqs it does not (which PostgreSQL looks up in its tables); on PostgreSQL also
    while another thread holds the reader connection (a long dashboard query)."""
    store.append([], {"pump-1": [1, 2, 4]})
    held, release = threading.Event(), threading.Event()
    locks = [store._wlock]  # type: ignore[attr-defined]
    if hasattr(store, "_rlock"):
        locks.append(store._rlock)  # type: ignore[attr-defined]

    def holder() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        release.wait(30)
        for lock in reversed(locks):
            lock.release()

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert held.wait(5)
    try:
        done, got = _in_thread(lambda: store.stored_seqs("pump-1", {1, 3, 4, 5}), PROMPT_S)
        assert done, f"stored_seqs waited for a lock more than {PROMPT_S} s"
        assert got == {1, 4}
    finally:
        release.set()
        t.join(10)


@pytest.mark.postgres
def test_postgres_stored_seqs_knows_what_another_process_stored(pg_schema_url: str) -> None:
    """Check a PostgreSQL store answers the seqs another store (another gateway process)
    on the same schema stored after it was opened, which its own seq tracker never saw:
    those still in the seqs table and those the other folded into seq_marks (every 256
    appends, and when it closes)."""
    a, b = open_store(pg_schema_url), open_store(pg_schema_url)
    try:
        for k in range(1, 301):
            if k != 150:
                a.append([], {"pump-1": [k]})
        a.append([], {"pump-1": [400, 401]})
        asked = {1, 100, 149, 150, 151, 256, 300, 301, 399, 400, 401, 402}
        want = asked - {150, 301, 399, 402}
        assert b.seq_gaps("pump-1") == []  # b's tracker knows nothing of a's seqs
        assert b.stored_seqs("pump-1", asked) == want
        a.close()  # folds 1..149 (its watermark) into seq_marks
        assert b.stored_seqs("pump-1", asked) == want
        assert b.stored_seqs("pump-2", asked) == set()
        b.append([], {"pump-1": [150]})
        assert b.stored_seqs("pump-1", asked) == want | {150}
    finally:
        a.close()
        b.close()


def test_stored_seqs_many_answers_each_device_as_stored_seqs_does(store: Store) -> None:
    """Check the batch form names, for every device asked (one never seen, one asked
    nothing too), exactly the seqs ``stored_seqs`` names for it alone, and nothing for an
    empty question."""
    store.append([Reading("pump-1", "t", T0, 1.0, seq=9)], {"pump-1": [1, 2, 5, 6, 0],
                                                          "pump-2": [3]})
    asked = {"pump-1": {0, 1, 3, 6, 7, 9, 10}, "pump-2": [3, 3, 4], "pump-9": {1},
             "pump-3": ()}
    got = store.stored_seqs_many(asked)
    assert got == {"pump-1": {1, 6, 9}, "pump-2": {3}, "pump-9": set(), "pump-3": set()}
    assert got == {d: store.stored_seqs(d, qs) for d, qs in asked.items()}
    assert store.stored_seqs_many({}) == {}


@pytest.mark.parametrize(
    ("seqs", "shown"),
    [
        pytest.param([("pump-1", [1])], "Got [('pump-1', [1])] instead", id="pairs"),
        pytest.param(None, "Got None instead", id="none"),
        pytest.param("pump-1", "Got 'pump-1' instead", id="str"),
        pytest.param({"pump-1": [1], "pump-2": [-1]}, "seq -1 of device 'pump-2'",
                     id="negative"),
        pytest.param({"pump-2": [True]}, "seq True of device 'pump-2'", id="bool"),
        pytest.param({"pump-2": 3}, "device 'pump-2': seqs must be an iterable", id="int"),
        pytest.param({"pump-1": [1], "": [1]}, "non-empty str. Got '' instead", id="empty"),
        pytest.param({7: [1]}, "non-empty str. Got 7 instead", id="int-device"),
    ],
)
def test_stored_seqs_many_refuses_bad_input_naming_it(store: Store, seqs: Any,
                                                      shown: str) -> None:
    """Check a question that is not a mapping of device id to seqs, a bad device id or a
    bad seq raises StoreError naming the value (and the device) and what is allowed."""
    with pytest.raises(StoreError) as err:
        store.stored_seqs_many(seqs)
    msg = str(err.value)
    assert shown in msg, msg
    assert any(w in msg for w in ("mapping of device id", "[0, 2**62)", "iterable of ints",
                                  "non-empty str")), msg


@pytest.mark.postgres
def test_postgres_stored_seqs_many_knows_what_another_process_stored(
        pg_schema_url: str) -> None:
    """Check the batch form on PostgreSQL is exact when another store (another gateway)
    on the same schema stored some of the seqs asked, of several devices: those its own
    tracker holds, those the other left in the seqs table, those the other folded into
    seq_marks, and those nobody stored, in one question."""
    a, b = open_store(pg_schema_url), open_store(pg_schema_url)
    try:
        for k in range(1, 301):  # at its 256th append, a folds 1..256 into seq_marks
            a.append([], {"pump-1": [k] if k != 300 else [301]})
        a.append([], {"pump-2": [2, 3]})
        b.append([], {"pump-2": [5], "pump-3": [1]})
        asked = {"pump-1": {1, 200, 299, 300, 301, 302}, "pump-2": {1, 2, 3, 4, 5, 6},
                 "pump-3": {1, 2}, "pump-4": {1}}
        want = {"pump-1": {1, 200, 299, 301}, "pump-2": {2, 3, 5}, "pump-3": {1},
                "pump-4": set()}
        assert b.stored_seqs_many(asked) == want
        assert b.stored_seqs_many(asked) == {d: b.stored_seqs(d, q) for d, q in asked.items()}
        a.close()  # folds what it still held into seq_marks
        assert b.stored_seqs_many(asked) == want
        with pytest.raises(StoreError):  # a is closed: asking it is refused
            a.stored_seqs_many(asked)
    finally:
        a.close()
        b.close()
