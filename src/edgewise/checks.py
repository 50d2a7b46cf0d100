"""Public contract checks that every implementation of an Edgewise protocol passes.

In the manner of River's ``utils.estimator_checks`` and scikit-learn's
``parametrize_with_checks``: each check is a plain function that raises
``AssertionError`` with a readable message when the implementation breaks a promise.
A third-party backend author runs the same suite as ours.

Stores
------
A check takes a ``factory``: a no-argument callable that opens the store under test.
The first call in a check must give an **empty** store; calling it again after ``close()``
must reopen the **same** data (a file, a database schema). ``duckdb://:memory:`` therefore
passes every check except the reopen ones; use a file.

>>> import tempfile, pathlib
>>> from edgewise.store.duckdb import DuckDBStore
>>> path = pathlib.Path(tempfile.mkdtemp()) / "c.duckdb"
>>> check_store_idempotent_append(lambda: DuckDBStore(path))
>>> [c.__name__ for c in yield_store_checks()][:2]
['check_store_implements_protocol', 'check_store_idempotent_append']

To run them all, each check needs its own empty store, hence a factory of factories; each
factory names its file once (the default argument, bound when ``make_factory`` makes it),
so that calling it again reopens the same file, not a fresh empty one::

    root = pathlib.Path(tempfile.mkdtemp())
    paths = (root / f"store-{i}.duckdb" for i in itertools.count())
    check_store(lambda: (lambda path=next(paths): DuckDBStore(path)))

One check with such a factory:

>>> import itertools
>>> paths = (pathlib.Path(tempfile.mkdtemp()) / f"s{i}.duckdb" for i in itertools.count())
>>> make_factory = lambda: (lambda path=next(paths): DuckDBStore(path))
>>> check_store_reopen_keeps_everything(make_factory())
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator

from edgewise.errors import StoreError
from edgewise.store.base import Alert, Store
from edgewise.telemetry import Reading

__all__ = ["StoreFactory", "check_store", "yield_store_checks"]

StoreFactory = Callable[[], Store]
StoreCheck = Callable[[StoreFactory], None]

T0 = 1_700_000_000 * 10**9
S = 10**9


def _readings(device: str, n: int, metrics: tuple[str, ...] = ("temp_c", "rpm"),
              t0: int = T0, seq0: int = 1, value0: float = 0.0) -> list[Reading]:
    return [
        Reading(device, m, t0 + i * S, value0 + i + j / 10, seq=seq0 + i)
        for i in range(n)
        for j, m in enumerate(metrics)
    ]


def _seqs(readings: list[Reading]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for r in readings:
        if r.seq is not None:
            out.setdefault(r.device_id, []).append(r.seq)
    return out


def check_store_implements_protocol(factory: StoreFactory) -> None:
    """The store is a ``Store`` (every method of the protocol) with a ``url``."""
    store = factory()
    try:
        assert isinstance(store, Store), f"{type(store).__name__} lacks part of the Store protocol"
        assert isinstance(store.url, str) and "://" in store.url, store.url
    finally:
        store.close()


def check_store_idempotent_append(factory: StoreFactory) -> None:
    """Re-appending the same batch stores nothing new and counts every reading as a duplicate."""
    store = factory()
    try:
        batch = _readings("pump-1", 50)
        first = store.append(batch, _seqs(batch))
        assert first.stored == len(batch), f"first append stored {first.stored}, not {len(batch)}"
        assert first.duplicates == 0 and first.conflicts == 0, first
        again = store.append(batch, _seqs(batch))
        assert again.stored == 0, f"re-append stored {again.stored} readings again"
        assert again.duplicates == len(batch), f"re-append counted {again.duplicates} duplicates"
        assert again.conflicts == 0, again
        assert store.count_readings() == len(batch), store.count_readings()
        assert len(store.query("pump-1")) == len(batch)
        # duplicates inside one call are stored once too
        inner = _readings("pump-2", 5)
        r = store.append(inner + inner)
        assert (r.stored, r.duplicates) == (len(inner), len(inner)), r
        # an empty append is a no-op
        r = store.append([])
        assert (r.stored, r.duplicates, r.conflicts) == (0, 0, 0), r
    finally:
        store.close()


def check_store_conflict_kept_not_overwritten(factory: StoreFactory) -> None:
    """A different value for a stored (device, metric, ts) is a conflict; the first value stays."""
    store = factory()
    try:
        store.append([Reading("pump-1", "temp_c", T0, 20.0, seq=1)], {"pump-1": [1]})
        r = store.append([Reading("pump-1", "temp_c", T0, 25.0, seq=2)], {"pump-1": [2]})
        assert (r.stored, r.duplicates, r.conflicts) == (0, 0, 1), r
        assert store.query("pump-1") == [("temp_c", T0, 20.0)], store.query("pump-1")
        conflicts = store.conflicts("pump-1")
        assert len(conflicts) == 1, conflicts
        c = conflicts[0]
        assert (c.device_id, c.metric, c.ts_ns, c.stored_value, c.new_value, c.seq) == (
            "pump-1", "temp_c", T0, 20.0, 25.0, 2), c
        assert c.received_ns > 0, c
        # the same conflicting reading delivered again is not a second conflict
        r = store.append([Reading("pump-1", "temp_c", T0, 25.0, seq=2)], {"pump-1": [2]})
        assert (r.stored, r.conflicts) == (0, 0), r
        assert len(store.conflicts("pump-1")) == 1
        # inside one batch: first value wins, the other is the conflict
        r = store.append([Reading("pump-1", "rpm", T0, 1.0), Reading("pump-1", "rpm", T0, 2.0)])
        assert (r.stored, r.conflicts) == (1, 1), r
        assert store.query("pump-1", "rpm") == [("rpm", T0, 1.0)]
        assert store.seq_watermark("pump-1") == 2
        assert len(store.conflicts()) == 2 and store.conflicts("other") == []
        assert len(store.conflicts(limit=1)) == 1
    finally:
        store.close()


def check_store_watermark_and_gaps(factory: StoreFactory) -> None:
    """The watermark is the highest w with 1..w stored; gaps list the missing ranges."""
    store = factory()
    try:
        assert store.seq_watermark("nobody") == 0 and store.seq_gaps("nobody") == []
        r = store.append([], {"pump-1": [7, 2, 4, 1]})
        assert r.watermarks == {"pump-1": 2}, r.watermarks
        assert store.seq_watermark("pump-1") == 2
        assert store.seq_gaps("pump-1") == [(3, 3), (5, 6)], store.seq_gaps("pump-1")
        r = store.append([Reading("pump-1", "temp_c", T0 + 3 * S, 1.0, seq=3)], {"pump-1": [3]})
        assert r.watermarks == {"pump-1": 4}, r.watermarks
        assert store.seq_gaps("pump-1") == [(5, 6)]
        store.append([], {"pump-1": [6, 5, 5]})
        assert store.seq_watermark("pump-1") == 7 and store.seq_gaps("pump-1") == []
        # a reading's own seq counts as delivered with it
        r = store.append([Reading("pump-2", "temp_c", T0, 1.0, seq=1)])
        assert r.watermarks.get("pump-2") == 1, r.watermarks
        # devices are independent; seq 0 never moves a watermark
        store.append([], {"pump-3": [0, 2]})
        assert store.seq_watermark("pump-3") == 0 and store.seq_gaps("pump-3") == [(1, 1)]
        assert store.seq_watermark("pump-1") == 7
    finally:
        store.close()


def check_store_stored_seqs(factory: StoreFactory) -> None:
    """``stored_seqs`` names exactly the stored seqs of those asked, one by one (a seq above
    the last gap too), before and after reopen; seq 0 never; bad seqs raise StoreError."""
    store = factory()
    try:
        assert store.stored_seqs("nobody", {1, 2}) == set()
        assert store.stored_seqs("pump-1", set()) == set()
        assert store.stored_seqs("pump-1", []) == set()
        store.append([], {"pump-1": [1, 2, 5, 9, 10, 0]})
        store.append([Reading("pump-1", "temp_c", T0, 1.0, seq=12)])
        asked = {0, 1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 2**62 - 1}
        assert store.stored_seqs("pump-1", asked) == {1, 2, 5, 9, 10, 12}, \
            store.stored_seqs("pump-1", asked)
        assert store.stored_seqs("pump-1", [2, 2, 12]) == {2, 12}
        assert store.stored_seqs("pump-2", {1, 2}) == set()
        for bad in ([-1], [1.0], [True], ["1"], [2**62], 5, "12", None):
            try:
                store.stored_seqs("pump-1", bad)  # type: ignore[arg-type]
            except StoreError as exc:
                assert "pump-1" in str(exc), exc
            else:
                raise AssertionError(f"stored_seqs took seqs {bad!r}")
        for bad_device in ("", None, 5):
            try:
                store.stored_seqs(bad_device, {1})  # type: ignore[arg-type]
            except StoreError:
                pass
            else:
                raise AssertionError(f"stored_seqs took device id {bad_device!r}")
    finally:
        store.close()
    store = factory()
    try:
        assert store.stored_seqs("pump-1", asked) == {1, 2, 5, 9, 10, 12}, \
            "stored_seqs changed across reopen"
        store.delete_device("pump-1")
        assert store.stored_seqs("pump-1", asked) == set(), "a deleted device's seqs are stored"
    finally:
        store.close()


def check_store_stored_seqs_many(factory: StoreFactory) -> None:
    """``stored_seqs_many`` gives, for each device asked (an unknown one and an empty
    question too), exactly what ``stored_seqs`` gives it, before and after reopen; a
    question that is not a mapping, a bad device id or a bad seq raises StoreError."""
    asked = {"pump-1": {0, 1, 2, 3, 5, 9, 10, 11, 12, 13}, "pump-2": [1, 1, 4, 7],
             "pump-3": range(1, 4), "pump-4": set()}
    want = {"pump-1": {1, 2, 5, 9, 10, 12}, "pump-2": {1, 7}, "pump-3": set(),
            "pump-4": set()}
    store = factory()
    try:
        assert store.stored_seqs_many({}) == {}
        store.append([], {"pump-1": [1, 2, 5, 9, 10], "pump-2": [1, 2, 7]})
        store.append([Reading("pump-1", "temp_c", T0, 1.0, seq=12)])
        got = store.stored_seqs_many(asked)
        assert got == want, got
        assert got == {d: store.stored_seqs(d, qs) for d, qs in asked.items()}
        for bad in (None, [("pump-1", [1])], "pump-1", {"pump-1": [-1]}, {"pump-1": 5},
                    {"pump-1": [1], "": [1]}, {5: [1]}, {"pump-1": [2**62]}):
            try:
                store.stored_seqs_many(bad)  # type: ignore[arg-type]
            except StoreError:
                pass
            else:
                raise AssertionError(f"stored_seqs_many took {bad!r}")
    finally:
        store.close()
    store = factory()
    try:
        assert store.stored_seqs_many(asked) == want, "stored_seqs_many changed across reopen"
    finally:
        store.close()


def check_store_query_ranges_and_step(factory: StoreFactory) -> None:
    """query() honours [start, end), the metric filter, sort order, limit and step
    averaging; count_metric() and times_before() read the same readings."""
    store = factory()
    try:
        batch = _readings("pump-1", 10, metrics=("b", "a"))
        store.append(batch + _readings("pump-9", 3))
        rows = store.query("pump-1")
        assert [m for m, _, _ in rows] == ["a"] * 10 + ["b"] * 10, rows
        assert [t for m, t, _ in rows if m == "a"] == [T0 + i * S for i in range(10)]
        rows = store.query("pump-1", "b", start_ns=T0 + 2 * S, end_ns=T0 + 5 * S)
        assert rows == [("b", T0 + i * S, float(i)) for i in (2, 3, 4)], rows
        assert store.query("pump-1", "b", start_ns=T0 + 10 * S) == []
        assert store.query("pump-1", "nope") == [] and store.query("nobody") == []
        # limit: the first rows in that order, no more (a request must not load millions)
        every = store.query("pump-1")
        for n in (0, 1, 3, 11, 25):
            assert store.query("pump-1", limit=n) == every[:n], (n, store.query("pump-1", limit=n))
        assert store.query("pump-1", "b", start_ns=T0 + 2 * S, limit=2) == [
            ("b", T0 + 2 * S, 2.0), ("b", T0 + 3 * S, 3.0)]
        assert store.count_metric("pump-1", "b", T0 + 2 * S, T0 + 5 * S) == 3
        assert store.count_metric("pump-1", "b") == 10 and store.count_metric("nobody", "b") == 0
        assert store.times_before("pump-1", "a", T0 + 5 * S, limit=2) == [T0 + 3 * S, T0 + 4 * S]
        assert store.times_before("pump-1", "a", T0) == []
        # 'a' holds i + 0.1 at T0 + i s; 4 s buckets starting at multiples of 4 s
        step = 4 * S
        rows = store.query("pump-1", "a", step_ns=step)
        expect: dict[int, list[float]] = {}
        for i in range(10):
            t = T0 + i * S
            expect.setdefault(t // step * step, []).append(i + 0.1)
        want = [("a", b, sum(v) / len(v)) for b, v in sorted(expect.items())]
        assert [(m, b) for m, b, _ in rows] == [(m, b) for m, b, _ in want], rows
        assert all(abs(x[2] - y[2]) < 1e-9 for x, y in zip(rows, want, strict=True)), rows
        rows = store.query("pump-1", step_ns=step, start_ns=T0, end_ns=T0 + 4 * S)
        assert len(rows) == 2 and {m for m, _, _ in rows} == {"a", "b"}, rows
        # buckets are [k*step, (k+1)*step) before 1970 too (floor, not truncation)
        store.append([Reading("old-1", "a", t, float(t)) for t in (-7, -3, 2)])
        rows = store.query("old-1", "a", step_ns=5)
        assert rows == [("a", -10, -7.0), ("a", -5, -3.0), ("a", 0, 2.0)], rows
        # a bucket of the largest finite readings averages to a finite number (a plain
        # avg overflowed: DuckDB answered null, PostgreSQL an error, for good)
        store.append([Reading("big-1", "a", T0 + i, v)
                      for i, v in enumerate((1.5e308, 1.7e308, 21.5, -1e-300))])
        rows = store.query("big-1", "a", step_ns=S)
        want = 1.5e308 / 4 + 1.7e308 / 4 + 21.5 / 4
        assert len(rows) == 1 and abs(rows[0][2] - want) <= 1e-12 * want, rows
        # and the smallest (subnormal) readings: PostgreSQL failed on a scaled sum's underflow
        store.append([Reading("tiny-1", "a", T0 + i, v) for i, v in enumerate((1e-320, 3.0))])
        rows = store.query("tiny-1", "a", step_ns=S)
        assert len(rows) == 1 and abs(rows[0][2] - 1.5) < 1e-12, rows
        try:
            store.query("pump-1", step_ns=0)
        except StoreError:
            pass
        else:
            raise AssertionError("query(step_ns=0) did not raise StoreError")
    finally:
        store.close()


def check_store_step_mean_correctly_rounded(factory: StoreFactory) -> None:
    """A bucket's mean is the exact mean of its readings rounded once to the nearest float
    (0 ulp), in query() and query_many() alike, so every backend gives the same float:
    for seeded random buckets of readings of any size (subnormal to 1.7e308, zeros, mixed
    signs), a single reading comes back as itself, equal readings as their value, and a
    reading within one step of the earliest int64 time lands in a bucket clamped to
    -2**63 (the query overflowed); a step of 2**63 or more is refused."""
    from fractions import Fraction

    rng = random.Random(20240611)
    pool = (lambda: rng.uniform(-1e3, 1e3), lambda: rng.random() * 10.0 ** rng.randint(-20, 20),
            lambda: round(rng.uniform(0, 100), 1), lambda: 0.0,
            lambda: 5e-324 * rng.randint(1, 10**6), lambda: rng.choice((1.7e308, -1.7e308)))
    groups = [[pool[rng.randrange(len(pool))]() for _ in range(rng.randint(1, 7))]
              for _ in range(150)]
    groups += [[1e-310], [1e16, 1.0, -1e16], [1.7e308] * 3, [0.1] * 10, [2.5] * 4,
               [8.022650611681835e-17, 521.9248898251512, -24.286686951704837]]
    store = factory()
    try:
        store.append([Reading("mean-1", "m", T0 + g * 10 + i, v)
                      for g, vals in enumerate(groups) for i, v in enumerate(vals)])
        want = [("m", T0 + g * 10, float(sum(map(Fraction, vals)) / len(vals)))
                for g, vals in enumerate(groups)]
        rows = store.query("mean-1", step_ns=10)
        bad = [(vals, got, exp) for vals, got, exp in zip(groups, rows, want, strict=True)
               if got != exp]
        assert len(rows) == len(want) and not bad, (
            f"{len(bad)} of {len(want)} bucket means are not the correctly rounded mean "
            f"(readings, got, want): {bad[:3]}")
        assert store.query_many(["mean-1"], step_ns=10) == {"mean-1": rows}
        first = -(2**63)
        store.append([Reading("early-1", "m", first, 1.0), Reading("early-1", "m", first + 9, 3.0)])
        rows = store.query("early-1", step_ns=7)  # floor(first / 7) * 7 is below first
        assert rows == [("m", first, 1.0), ("m", first + 8, 3.0)], rows
        rows = store.query("early-1", step_ns=2**63 - 1)
        assert rows == [("m", first, 1.0), ("m", first + 1, 3.0)], rows
        for step in (2**63, 2**64):
            try:
                store.query("early-1", step_ns=step)
            except StoreError as exc:
                assert str(step) in str(exc), exc
            else:
                raise AssertionError(f"query(step_ns={step}) did not raise StoreError")
    finally:
        store.close()


def check_store_query_many_matches_query(factory: StoreFactory) -> None:
    """query_many() gives each device exactly what query() gives it (range, step, a
    per-device limit), every asked device a key in the order asked, none read twice."""
    store = factory()
    try:
        store.append(_readings("pump-1", 10, metrics=("b", "a")) + _readings("pump-2", 7)
                     + [Reading("old-1", "a", t, float(t)) for t in (-7, -3, 2)])
        ids = ["pump-2", "nobody", "pump-1", "old-1", "pump-2"]
        for kw in ({}, {"start_ns": T0 + 2 * S, "end_ns": T0 + 6 * S},
                   {"step_ns": 4 * S}, {"step_ns": 3 * S, "limit": 3},
                   {"step_ns": 5}, {"limit": 4, "end_ns": T0 + 8 * S}, {"limit": 0}):
            got = store.query_many(ids, **kw)  # type: ignore[arg-type]
            assert list(got) == ["pump-2", "nobody", "pump-1", "old-1"], (kw, list(got))
            for d, rows in got.items():
                want = store.query(d, None, kw.get("start_ns"), kw.get("end_ns"),
                                   kw.get("step_ns"), kw.get("limit"))
                assert rows == want, (kw, d, rows, want)
        assert store.query_many([]) == {}
        try:
            store.query_many(["pump-1"], step_ns=0)
        except StoreError:
            pass
        else:
            raise AssertionError("query_many(step_ns=0) did not raise StoreError")
    finally:
        store.close()


def check_store_out_of_order_in_time_order(factory: StoreFactory) -> None:
    """Late and out-of-order readings are stored where they belong in time."""
    store = factory()
    try:
        batch = _readings("pump-1", 40, metrics=("temp_c",))
        shuffled = batch[:]
        random.Random(7).shuffle(shuffled)
        for i in range(0, 40, 10):
            store.append(shuffled[i:i + 10])
        late = [Reading("pump-1", "temp_c", T0 - 3600 * S, -1.0)]
        store.append(late)
        rows = store.query("pump-1")
        assert [t for _, t, _ in rows] == sorted(t for _, t, _ in rows), rows
        assert rows[0] == ("temp_c", T0 - 3600 * S, -1.0), rows[0]
        assert len(rows) == 41
    finally:
        store.close()


def check_store_delete_device(factory: StoreFactory) -> None:
    """delete_device removes readings, seqs, conflicts and alerts of that device only (its
    id matched whole: "pump-1" is not a prefix of "pump-10", "pump_1" no LIKE pattern)."""
    store = factory()
    try:
        a, b = _readings("pump-a", 5), _readings("pump-b", 5)
        store.append(a + b, _seqs(a + b))
        store.append([Reading("pump-a", "temp_c", T0, 99.0)])
        store.append([Reading("pump-b", "temp_c", T0, 99.0)])
        alert_a = store.add_alert(Alert("pump-a", T0, T0 + S, 0.9))
        alert_b = store.add_alert(Alert("pump-b", T0, T0 + S, 0.9))
        n = store.delete_device("pump-a")
        assert n >= len(a) + 5 + 1 + 1, f"delete_device reported {n} rows"
        assert store.query("pump-a") == [] and store.conflicts("pump-a") == []
        assert store.seq_watermark("pump-a") == 0 and store.seq_gaps("pump-a") == []
        assert [d.device_id for d in store.devices()] == ["pump-b"]
        try:
            store.get_alert(alert_a.id)
        except KeyError:
            pass
        else:
            raise AssertionError("alert of the deleted device is still there")
        assert store.get_alert(alert_b.id).device_id == "pump-b"
        assert len(store.query("pump-b")) == len(b) and store.seq_watermark("pump-b") == 5
        assert len(store.conflicts("pump-b")) == 1
        assert store.delete_device("nobody") == 0
        # a deleted device can start again from seq 1
        r = store.append(_readings("pump-a", 2), {"pump-a": [1, 2]})
        assert r.stored == 4 and r.watermarks == {"pump-a": 2}, r
        # an id is matched whole and as it is: not as a prefix ("pump-1" of "pump-10"), nor
        # as a LIKE pattern ("pump_1" and "pump%" of "pump-1")
        near = ["pump-1", "pump-10", "pump_1", "pump%"]
        store.append([Reading(d, "temp_c", T0, 1.0, seq=1) for d in near], {d: [1] for d in near})
        for d in near:
            store.add_alert(Alert(d, T0, T0 + S, 0.9))
        for gone, kept in (("pump_1", ("pump-1", "pump-10")), ("pump%", ("pump-1", "pump-10")),
                           ("pump-1", ("pump-10",))):
            assert store.delete_device(gone) > 0, gone
            for d in kept:
                assert len(store.query(d)) == 1 and store.seq_watermark(d) == 1, (
                    f"delete_device({gone!r}) took rows of device {d!r}")
                assert [a.device_id for a in store.list_alerts(device_id=d)] == [d], (
                    f"delete_device({gone!r}) took the alert of device {d!r}")
    finally:
        store.close()


def check_store_retention(factory: StoreFactory) -> None:
    """delete_before drops readings older than the cut, for one device (its id matched
    whole, never as a prefix or pattern) or all, and records the cut (trimmed_before)."""
    store = factory()
    try:
        store.append(_readings("pump-a", 10) + _readings("pump-b", 10), {"pump-a": range(1, 11)})
        n = store.delete_before(T0 + 3 * S, device_id="pump-a")
        assert n == 3 * 2, n
        assert min(t for _, t, _ in store.query("pump-a")) == T0 + 3 * S
        assert len(store.query("pump-b")) == 20
        n = store.delete_before(T0 + 5 * S)
        assert n == 2 * 2 + 5 * 2, n
        assert store.count_readings() == 5 * 2 * 2, store.count_readings()
        assert store.seq_watermark("pump-a") == 10, "retention moved the seq watermark back"
        assert store.delete_before(T0) == 0
        summary = {d.device_id: (d.readings, d.first_ns, d.last_ns) for d in store.devices()}
        assert summary == {"pump-a": (10, T0 + 5 * S, T0 + 9 * S),
                           "pump-b": (10, T0 + 5 * S, T0 + 9 * S)}, summary
        assert store.delete_before(T0 + 100 * S, device_id="pump-a") == 10
        assert [d.device_id for d in store.devices()] == ["pump-b"], store.devices()
        assert store.count_readings() == 10
        # the cut is recorded for the devices it took readings of, and only those
        assert store.trimmed_before("pump-a") == T0 + 100 * S, store.trimmed_before("pump-a")
        assert store.trimmed_before("pump-b") == T0 + 5 * S, store.trimmed_before("pump-b")
        assert store.trimmed_before("nobody") is None
        # one device's retention matches its id whole and as it is: not as a prefix
        # ("pump-1" of "pump-10"), nor as a LIKE pattern ("pump_1" of "pump-1")
        near = ["pump-1", "pump-10", "pump_1"]
        store.append([r for d in near for r in _readings(d, 4)])
        for gone in ("pump_1", "pump-1"):
            n = store.delete_before(T0 + 2 * S, device_id=gone)
            assert n == 4, (f"delete_before(device_id={gone!r}) deleted {n} readings, not "
                            "its own 4: the retention of one device took another's")
        assert len(store.query("pump-10")) == 8, "retention of one device took another's"
        assert store.trimmed_before("pump-10") is None, store.trimmed_before("pump-10")
    finally:
        store.close()


def check_store_alerts_crud(factory: StoreFactory) -> None:
    """Alerts: add fills id and created_ns; get/update/list; KeyError for unknown ids."""
    store = factory()
    try:
        a1 = store.add_alert(Alert("pump-1", T0, T0 + 10 * S, 0.95, drivers={"temp_c": 0.7,
                                                                          "rpm": 0.3},
                                   message="hot"))
        assert a1.id and a1.created_ns > 0, a1
        a2 = store.add_alert(Alert("pump-1", T0 + 20 * S, T0 + 30 * S, 0.8, kind="seq_gap"))
        a3 = store.add_alert(Alert("pump-2", T0 + 40 * S, T0 + 41 * S, 0.99))
        got = store.get_alert(a1.id)
        assert got.to_dict() == a1.to_dict(), (got, a1)
        assert [a.id for a in store.list_alerts()] == [a3.id, a2.id, a1.id]
        assert [a.id for a in store.list_alerts(device_id="pump-1")] == [a2.id, a1.id]
        assert [a.id for a in store.list_alerts(kind="seq_gap")] == [a2.id]
        assert [a.id for a in store.list_alerts(limit=1)] == [a3.id]
        assert [a.id for a in store.list_alerts(since_ns=T0 + 25 * S)] == [a3.id, a2.id]
        up = store.update_alert(a1.id, status="acknowledged", acked_by="ops",
                                label="true_alarm", labelled_by="ops", note="bearing")
        assert (up.status, up.acked_by, up.label, up.labelled_by, up.note) == (
            "acknowledged", "ops", "true_alarm", "ops", "bearing"), up
        assert up.drivers == {"temp_c": 0.7, "rpm": 0.3} and up.message == "hot", up
        assert store.get_alert(a1.id).status == "acknowledged"
        assert [a.id for a in store.list_alerts(status="open")] == [a3.id, a2.id]
        up = store.update_alert(a2.id, end_ns=T0 + 35 * S, score=0.85)
        assert (up.end_ns, up.score) == (T0 + 35 * S, 0.85), up
        for call in (lambda: store.get_alert("no-such-id"),
                     lambda: store.update_alert("no-such-id", status="acknowledged")):
            try:
                call()
            except KeyError:
                pass
            else:
                raise AssertionError("unknown alert id did not raise KeyError")
        try:
            store.update_alert(a1.id, status="sleeping")
        except (StoreError, ValueError):
            pass
        else:
            raise AssertionError("update_alert accepted status='sleeping'")
    finally:
        store.close()


def check_store_acknowledge_alert(factory: StoreFactory) -> None:
    """acknowledge_alert writes once: the first acknowledgement stays, racing callers agree
    on it and exactly one is told it applied; a label acknowledges an open alert with it;
    a merged alert is not written; unknown ids raise KeyError."""
    store = factory()
    try:
        a = store.add_alert(Alert("pump-1", T0, T0 + 10 * S, 0.9))
        got, applied = store.acknowledge_alert(a.id, "ops")
        assert applied and (got.status, got.acked_by) == ("acknowledged", "ops"), (got, applied)
        got, applied = store.acknowledge_alert(a.id, "late")
        assert not applied and got.acked_by == "ops", (
            f"a second acknowledgement by 'late' gave applied={applied}, acked_by="
            f"{got.acked_by!r}; the first ('ops') must stay and the second apply nothing")
        # a verdict on an acknowledged alert applies and keeps who acknowledged it
        got, applied = store.acknowledge_alert(a.id, "lab", label="true_alarm",
                                               labelled_by="lab", note="bearing")
        assert applied and (got.acked_by, got.label, got.labelled_by, got.note) == (
            "ops", "true_alarm", "lab", "bearing"), (got, applied)
        # ... and acknowledges an open one, by whoever gave it
        b = store.add_alert(Alert("pump-1", T0 + 20 * S, T0 + 30 * S, 0.9))
        got, applied = store.acknowledge_alert(b.id, "lab", label="false_alarm",
                                               labelled_by="lab")
        assert applied and (got.status, got.acked_by, got.label) == (
            "acknowledged", "lab", "false_alarm"), (got, applied)
        # racing callers on one open alert: one applies, all are told the same acknowledger
        c = store.add_alert(Alert("pump-2", T0, T0 + S, 0.9))
        answers: list[tuple[Alert, bool]] = []
        barrier = threading.Barrier(6)

        def ack(name: str) -> None:
            barrier.wait(10)
            answers.append(store.acknowledge_alert(c.id, name))

        threads = [threading.Thread(target=ack, args=(f"op{i}",)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [ok for _, ok in answers].count(True) == 1, (
            f"{[ok for _, ok in answers].count(True)} of 6 racing acknowledgements applied; "
            "exactly one must")
        stored = store.get_alert(c.id).acked_by
        assert {x.acked_by for x, _ in answers} == {stored}, (
            f"racing callers were told acked_by {sorted({x.acked_by for x, _ in answers})}; "
            f"the stored one is {stored!r}")
        # a merged alert is written neither by an acknowledgement nor by a label
        d = store.add_alert(Alert("pump-3", T0, T0 + S, 0.9))
        e = store.add_alert(Alert("pump-3", T0 + 5 * S, T0 + 6 * S, 0.9))
        store.merge_alert(e.id, into=d.id, end_ns=T0 + 6 * S)
        for changes in ({}, {"label": "true_alarm", "labelled_by": "lab"}):
            got, applied = store.acknowledge_alert(e.id, "ops", **changes)
            assert not applied and got.merged_into == d.id, (changes, got, applied)
            assert (got.status, got.acked_by, got.label) == ("open", None, None), (
                f"acknowledge_alert({changes}) wrote onto alert {e.id!r}, merged into "
                f"{d.id!r}: {got}")
        assert store.get_alert(d.id).status == "open"
        try:
            store.acknowledge_alert("no-such-id", "ops")
        except KeyError:
            pass
        else:
            raise AssertionError("acknowledge_alert of an unknown alert id did not raise KeyError")
        try:
            store.acknowledge_alert(b.id, "ops", acked_by="someone")
        except (StoreError, ValueError):
            pass
        else:
            raise AssertionError("acknowledge_alert accepted acked_by among its changes")
    finally:
        store.close()


def check_store_alert_events(factory: StoreFactory) -> None:
    """acknowledge_alert writes its events with it: ``alert.acknowledged`` when it
    acknowledged an open alert, ``alert.labelled`` for a label, none for a write that did
    not apply; merge_alert writes ``alert.merged`` (by the gateway, naming the surviving
    alert); ids grow and are never reused (a device's deletion deletes its events, and
    the next event is numbered above the deleted ones); a reopened store keeps them."""
    store = factory()
    try:
        assert store.alert_events() == [] and store.last_alert_event_id() == 0, (
            "a new store has alert events")
        a = store.add_alert(Alert("pump-1", T0, T0 + S, 0.9))
        b = store.add_alert(Alert("pump-2", T0, T0 + S, 0.9))
        store.acknowledge_alert(a.id, "ops")
        store.acknowledge_alert(a.id, "late")  # applies nothing: no event
        store.acknowledge_alert(a.id, "lab", label="true_alarm", labelled_by="lab",
                                note="bearing")
        store.acknowledge_alert(b.id, "lab", label="false_alarm", labelled_by="lab")
        got = [(e.alert_id, e.device_id, e.event, e.actor, e.detail)
               for e in store.alert_events()]
        want = [
            (a.id, "pump-1", "alert.acknowledged", "ops", {"acked_by": "ops"}),
            (a.id, "pump-1", "alert.labelled", "lab",
             {"label": "true_alarm", "labelled_by": "lab", "note": "bearing"}),
            (b.id, "pump-2", "alert.acknowledged", "lab", {"acked_by": "lab"}),
            (b.id, "pump-2", "alert.labelled", "lab",
             {"label": "false_alarm", "labelled_by": "lab", "note": None}),
        ]
        assert got == want, f"alert events {got}; expected {want}"
        events = store.alert_events()
        ids = [e.id for e in events]
        assert ids == sorted(set(ids)) and ids[0] >= 1, f"event ids {ids} do not grow"
        assert all(isinstance(e.at_ns, int) and e.at_ns > 0 for e in events), events
        assert [e.id for e in store.alert_events(after_id=ids[1], limit=1)] == [ids[2]]
        assert store.last_alert_event_id() == ids[-1]
        # one alert's events only, after a mark (an API request's read of its own write)
        got_for = [e.id for e in store.alert_events_for(b.id)]
        assert got_for == ids[2:4], f"alert_events_for({b.id!r}) {got_for}; expected {ids[2:4]}"
        assert [e.id for e in store.alert_events_for(a.id, after_id=ids[0])] == [ids[1]]
        assert store.alert_events_for(b.id, after_id=ids[3]) == []
        # a merge writes its event; then a merged alert, an unknown id: nothing written
        c = store.add_alert(Alert("pump-1", T0 + 9 * S, T0 + 10 * S, 0.9))
        d = store.add_alert(Alert("pump-1", T0 + 11 * S, T0 + 12 * S, 0.9))
        store.merge_alert(d.id, into=c.id, end_ns=T0 + 12 * S)
        got = [(e.id, e.alert_id, e.device_id, e.event, e.actor, e.detail)
               for e in store.alert_events(after_id=ids[-1])]
        want = [(ids[-1] + 1, d.id, "pump-1", "alert.merged", "gateway",
                 {"merged_into": c.id, "also_merged": []})]
        assert got == want, f"the merge wrote alert events {got}; expected {want}"
        ids.append(ids[-1] + 1)
        store.acknowledge_alert(d.id, "ops", label="true_alarm", labelled_by="ops")
        try:
            store.acknowledge_alert("no-such-id", "ops")
        except KeyError:
            pass
        assert [e.id for e in store.alert_events()] == ids, (
            "a write that did not apply wrote an alert event")
        # a device's deletion deletes its events; ids are not reused after it
        store.delete_device("pump-2")
        assert {e.device_id for e in store.alert_events()} == {"pump-1"}, (
            "the events of a deleted device are still there")
        kept = [e.id for e in store.alert_events()]  # pump-1's: a's two and d's merge
        e = store.add_alert(Alert("pump-3", T0, T0 + S, 0.9))
        store.acknowledge_alert(e.id, "ops")
        newest = store.alert_events()[-1]
        assert (newest.alert_id, newest.id) == (e.id, ids[-1] + 1), (
            f"the event after a deletion got id {newest.id}; expected {ids[-1] + 1} (ids "
            "are never reused)")
    finally:
        store.close()
    store = factory()
    try:
        assert [x.id for x in store.alert_events()] == [*kept, ids[-1] + 1], (
            "alert events lost at reopen")
        assert store.last_alert_event_id() == ids[-1] + 1
    finally:
        store.close()


def check_store_failed_append_leaves_nothing(factory: StoreFactory) -> None:
    """An append that fails stores none of its readings or seqs; a closed store refuses."""
    store = factory()
    try:
        good = _readings("pump-1", 20)
        bad = [*good[:10], Reading("pump-1", "temp_c", T0 + 99 * S, float("nan"), seq=99),
               *good[10:]]
        try:
            store.append(bad, _seqs(bad))
        except StoreError:
            pass
        else:
            raise AssertionError("append with a NaN value did not raise StoreError")
        assert store.count_readings() == 0, "a failed append left readings behind"
        assert store.seq_watermark("pump-1") == 0, "a failed append moved the watermark"
        try:
            store.append(good, {"pump-1": [1, "two"]})  # type: ignore[list-item]
        except StoreError:
            pass
        else:
            raise AssertionError("append with a non-int seq did not raise StoreError")
        assert store.count_readings() == 0 and store.seq_watermark("pump-1") == 0
        r = store.append(good, _seqs(good))
        assert r.stored == len(good), r
    finally:
        store.close()
    store.close()  # twice is fine
    try:
        store.append(good)
    except StoreError:
        pass
    else:
        raise AssertionError("append on a closed store did not raise StoreError")
    store = factory()
    try:
        n = store.count_readings()
        assert n == len(good), (
            f"readings lost across reopen: {n} of {len(good)} (does the factory reopen "
            "the same store, or make a fresh one each call?)")
    finally:
        store.close()


def check_store_reopen_keeps_everything(factory: StoreFactory) -> None:
    """After close and reopen: readings, seqs (watermark and gaps), conflicts and alerts."""
    store = factory()
    batch = _readings("pump-1", 30) + _readings("pump-2", 5)
    store.append(batch, {"pump-1": [*range(1, 31), 33], "pump-2": range(1, 6)})
    store.append([Reading("pump-1", "temp_c", T0, 123.0)])
    alert = store.add_alert(Alert("pump-1", T0, T0 + S, 0.9, drivers={"temp_c": 1.0}))
    before = (store.count_readings(), store.query("pump-1"), store.query("pump-2"))
    store.close()
    store = factory()
    try:
        after = (store.count_readings(), store.query("pump-1"), store.query("pump-2"))
        assert after == before, "readings changed across reopen"
        assert store.seq_watermark("pump-1") == 30 and store.seq_gaps("pump-1") == [(31, 32)]
        assert store.seq_watermark("pump-2") == 5
        assert [c.new_value for c in store.conflicts()] == [123.0]
        assert store.get_alert(alert.id).to_dict() == alert.to_dict()
        assert store.append(batch).duplicates == len(batch)
    finally:
        store.close()


def check_store_watermark_over_many_messages(factory: StoreFactory) -> None:
    """Hundreds of one-message appends with a gap: watermark and gaps survive reopen."""
    store = factory()
    try:
        for k in range(1, 301):
            if k != 150:
                store.append([Reading("pump-1", "temp_c", T0 + k * S, float(k), seq=k)])
        assert store.seq_watermark("pump-1") == 149, store.seq_watermark("pump-1")
        assert store.seq_gaps("pump-1") == [(150, 150)], store.seq_gaps("pump-1")
    finally:
        store.close()
    store = factory()
    try:
        assert store.seq_watermark("pump-1") == 149, "watermark changed across reopen"
        assert store.seq_gaps("pump-1") == [(150, 150)], store.seq_gaps("pump-1")
        assert store.append([], {"pump-1": [5, 149]}).watermarks == {"pump-1": 149}
        r = store.append([Reading("pump-1", "temp_c", T0 + 150 * S, 150.0, seq=150)])
        assert r.watermarks == {"pump-1": 300} and store.seq_gaps("pump-1") == [], r
        assert store.count_readings() == 300
    finally:
        store.close()
    store = factory()
    try:
        assert store.seq_watermark("pump-1") == 300 and store.seq_gaps("pump-1") == []
    finally:
        store.close()


def check_store_devices_summary(factory: StoreFactory) -> None:
    """devices() gives per-device count, first/last time and metrics; device() one entry."""
    store = factory()
    try:
        assert store.devices() == []
        store.append(_readings("pump-b", 4, metrics=("z", "a")) + _readings("pump-a", 2))
        ds = store.devices()
        assert [d.device_id for d in ds] == ["pump-a", "pump-b"], ds
        b = ds[1]
        assert (b.readings, b.first_ns, b.last_ns, sorted(b.metrics)) == (
            8, T0, T0 + 3 * S, ["a", "z"]), b
        # one device's summary is its entry in devices(); None for a device with none
        assert [store.device(d.device_id) for d in ds] == ds, [store.device("pump-a"), ds]
        assert store.device("nobody") is None and store.device("pump") is None
        assert store.count_readings() == 12
    finally:
        store.close()


def check_store_concurrent_reads_during_writes(factory: StoreFactory) -> None:
    """One writer thread and several reader threads at once: no errors, nothing lost."""
    store = factory()
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for k in range(20):
                batch = _readings("pump-1", 25, t0=T0 + k * 25 * S, seq0=k * 25 + 1)
                store.append(batch, _seqs(batch))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            done.set()

    def read() -> None:
        try:
            while not done.is_set():
                store.query("pump-1", "temp_c")
                store.devices()
                store.seq_watermark("pump-1")
                store.list_alerts()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=write)] + [threading.Thread(target=read)
                                                     for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, f"concurrent use raised: {errors[0]!r}"
        assert store.count_readings() == 20 * 25 * 2
        assert store.seq_watermark("pump-1") == 500
    finally:
        store.close()


_STORE_CHECKS: tuple[StoreCheck, ...] = (
    check_store_implements_protocol,
    check_store_idempotent_append,
    check_store_conflict_kept_not_overwritten,
    check_store_watermark_and_gaps,
    check_store_stored_seqs,
    check_store_stored_seqs_many,
    check_store_query_ranges_and_step,
    check_store_step_mean_correctly_rounded,
    check_store_query_many_matches_query,
    check_store_out_of_order_in_time_order,
    check_store_delete_device,
    check_store_retention,
    check_store_alerts_crud,
    check_store_acknowledge_alert,
    check_store_alert_events,
    check_store_failed_append_leaves_nothing,
    check_store_reopen_keeps_everything,
    check_store_watermark_over_many_messages,
    check_store_devices_summary,
    check_store_concurrent_reads_during_writes,
)


def yield_store_checks() -> Iterator[StoreCheck]:
    """Every store check, in a stable order; each takes a factory of one empty store."""
    yield from _STORE_CHECKS


def check_store(make_factory: Callable[[], StoreFactory]) -> None:
    """Run every store check, each on a fresh empty store from ``make_factory()``."""
    for check in yield_store_checks():
        check(make_factory())
