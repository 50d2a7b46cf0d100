"""PostgreSQL store races a hunt found (session 44): a device's deletion and retention
deadlocking on its readings, a deletion and an append deadlocking on its seqs, and an
append that stored only seqs leaving them behind its device's deletion. Every writer of a
device's rows now locks its ``device_stats`` row first (in device id order)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.postgres import PostgresStore
from edgewise.telemetry import Reading
from tests.conftest import wait_until
from tests.store.test_postgres_hunt_s43 import _base, _count, _schema, _waits_on_lock

pytestmark = pytest.mark.postgres
psycopg = pytest.importorskip("psycopg")

T0 = 1_700_000_000 * 10**9

#: libpq options that make the planner read a device's readings by an index scan, in key
#: order (metric, time), as it does for a small device in a large table; a sequential or
#: bitmap scan reads them in the order of the table's pages
_INDEX_SCAN = "&options=-c%20enable_bitmapscan%3Doff%20-c%20enable_seqscan%3Doff"


def _run(f: Callable[[], object], errors: list[BaseException]) -> threading.Thread:
    """``f`` started in a thread; what it raises goes to ``errors``."""
    def go() -> None:
        try:
            f()
        except BaseException as exc:
            errors.append(exc)
    th = threading.Thread(target=go)
    th.start()
    return th


@contextmanager
def _held(store: PostgresStore, name: str, *, after: bool = False) -> Iterator[
        tuple[threading.Event, threading.Event]]:
    """Hold ``store``'s method ``name`` (called inside an append's transaction) until
    ``release`` is set: before it runs, or ``after`` it returned. Yields (inside, release)."""
    inside, release = threading.Event(), threading.Event()
    orig = getattr(store, name)

    def held(*args: Any, **kwargs: Any) -> Any:
        if after:
            out = orig(*args, **kwargs)
        inside.set()
        assert release.wait(10)
        return out if after else orig(*args, **kwargs)

    setattr(store, name, held)
    try:
        yield inside, release
    finally:
        release.set()
        setattr(store, name, orig)


def delete_during(a: PostgresStore, b: PostgresStore, held: str,
                  write: Callable[[], object], device: str = "X", *, after: bool = True,
                  must_wait: bool = False) -> None:
    """Run ``write`` on store ``a`` and hold it in ``a``'s method ``held`` (``after`` it ran,
    else before; not committed), delete ``device`` from store ``b`` meanwhile, see the
    deletion wait on a lock (or, unless ``must_wait``, finish), then let both go; fail on an
    error or a thread left hanging."""
    errors: list[BaseException] = []
    with _held(a, held, after=after) as (inside, release):
        th_a = _run(write, errors)
        assert inside.wait(10)  # the write done, not committed
        th_b = _run(lambda: b.delete_device(device), errors)
        with psycopg.connect(_base(b.url), autocommit=True) as admin:
            pid = b._writer.info.backend_pid
            assert wait_until(lambda: _waits_on_lock(admin, pid) or (
                not must_wait and not th_b.is_alive()), timeout=5)
        release.set()
        th_a.join(10)
        th_b.join(10)
    assert not th_a.is_alive() and not th_b.is_alive() and errors == []


def _locked_elsewhere(url: str, sql: str) -> bool:
    """Whether the rows ``sql`` (a SELECT … FOR UPDATE NOWAIT) reads are locked by another
    transaction."""
    with psycopg.connect(_base(url)) as con:
        con.execute(f'SET search_path TO "{_schema(url)}"')
        try:
            con.execute(sql)
        except psycopg.errors.LockNotAvailable:
            return True
        finally:
            con.rollback()
    return False


# -- 1. a device's deletion and retention ---------------------------------------------------

def test_delete_device_and_retention_of_one_device_at_once_never_deadlock(
    pg_schema_url: str,
) -> None:
    """Check that deleting a device while retention deletes its old readings, 20 times,
    fails neither: each deleted the readings in its own order (the deletion by the primary
    key, metric then time; retention in the order of the pages, later readings first
    here) and PostgreSQL failed one side as a deadlock (35 of 100 rounds)."""
    deleter = open_store(pg_schema_url + _INDEX_SCAN)
    keeper, writer = open_store(pg_schema_url), open_store(pg_schema_url)
    errors: list[BaseException] = []
    try:
        for _ in range(20):
            for k in reversed(range(5)):  # late data: the oldest readings stored last
                writer.append([Reading("X", m, k * 100 + i, 1.0)
                               for m in "abcd" for i in range(100)])
            bar = threading.Barrier(2)

            def at_once(f: Callable[[], object], bar: threading.Barrier = bar) -> None:
                bar.wait()
                f()

            threads = [_run(lambda: at_once(lambda: deleter.delete_device("X")), errors),
                       _run(lambda: at_once(lambda: keeper.delete_before(250)), errors)]
            for th in threads:
                th.join(20)
            assert not any(th.is_alive() for th in threads)
            assert errors == []
            assert _count(pg_schema_url, "readings") == 0
            assert writer.devices() == [] and writer.count_readings() == 0
    finally:
        for s in (deleter, keeper, writer):
            s.close()


@pytest.mark.parametrize("who", ["delete_device", "retention"])
def test_a_deletion_locks_the_device_s_stats_row_before_its_readings(
    pg_schema_url: str, who: str,
) -> None:
    """Check that a deletion of a device's readings (the device's, or retention's) waiting
    for the device's device_stats row holds none of its readings: both deleted readings
    first, and a writer locking in the other order (the row, then readings) deadlocked
    with it."""
    store = open_store(pg_schema_url)
    try:
        store.append([Reading("X", m, i, 1.0) for m in "ab" for i in range(10)])
        with psycopg.connect(_base(pg_schema_url)) as holder, \
                psycopg.connect(_base(pg_schema_url), autocommit=True) as admin:
            holder.execute(f'SET search_path TO "{_schema(pg_schema_url)}"')
            holder.execute("UPDATE device_stats SET readings = readings WHERE device_id = 'X'")
            errors: list[BaseException] = []
            th = _run((lambda: store.delete_device("X")) if who == "delete_device"
                      else (lambda: store.delete_before(5)), errors)
            pid = store._writer.info.backend_pid
            assert wait_until(lambda: _waits_on_lock(admin, pid), timeout=5)
            assert not _locked_elsewhere(
                pg_schema_url, "SELECT 1 FROM readings WHERE device_id = 'X' FOR UPDATE NOWAIT")
            holder.rollback()
            th.join(10)
            assert not th.is_alive() and errors == []
        left = 0 if who == "delete_device" else 10
        assert _count(pg_schema_url, "readings", "X") == left
    finally:
        store.close()


# -- 2. a deletion and an append in flight ------------------------------------------------------

def test_delete_device_and_an_append_storing_a_seq_another_gateway_stored_never_deadlock(
    pg_schema_url: str,
) -> None:
    """Check that deleting a device while an append of its readings is in flight, with a
    seq another gateway process stored already (this one's tracker had not seen it), ends
    with both done and nothing of the device left: the deletion deleted the seqs and then
    waited for the append's device_stats row, while the append's insert of that seq
    waited for the deletion's delete of it, a deadlock."""
    a, b, c = open_store(pg_schema_url), open_store(pg_schema_url), open_store(pg_schema_url)
    try:
        a.append([Reading("X", "t", T0 + i, 1.0, seq=i) for i in range(1, 6)])
        b.append([Reading("X", "t", T0 + 6, 1.0, seq=6)])  # b loaded 1..5 at open
        # held with its readings inserted, its device_stats row locked
        delete_during(a, c, "_sync_wanted", lambda: a.append(
            [Reading("X", "t", T0 + 100, 2.0)], seqs={"X": [6, 7]}), after=False,
            must_wait=True)
        for table in ("readings", "seqs", "seq_marks", "seq_runs"):
            assert _count(pg_schema_url, table, "X") == 0, table
    finally:
        for s in (a, b, c):
            s.close()


@pytest.mark.parametrize("before", ["readings", "seqs", "nothing"])
def test_delete_device_waits_for_an_append_that_stores_only_seqs(
    pg_schema_url: str, before: str,
) -> None:
    """Check that deleting a device while an append that stores only seqs of it (a message
    whose readings were all refused, or all stored before) is in flight waits for it and
    deletes its seqs: the deletion did not wait, the seq rows outlived it, and the device
    registered again under the id had seq 8 as stored and 1..7 as lost (a gap alert for
    messages it never sent). A device with readings, one with only seqs (its readings
    gone to retention, or none ever), and one whose first append it is, alike."""
    a, b = open_store(pg_schema_url), open_store(pg_schema_url)
    try:
        if before == "readings":
            a.append([Reading("X", "t", T0 + i, 1.0, seq=i) for i in range(1, 8)])
        elif before == "seqs":
            a.append([], seqs={"X": range(1, 8)})
        delete_during(a, b, "_append_locked", lambda: a.append([], seqs={"X": [8]}))
        for table in ("seqs", "seq_marks", "seq_runs"):
            assert _count(pg_schema_url, table, "X") == 0, table
        again = open_store(pg_schema_url)  # the device registered again, a gateway restarted
        try:
            assert not again.has_device_data("X")
            assert again.seq_watermark("X") == 0 and again.seq_gaps("X") == []
            assert again.stored_seqs("X", [8]) == set()
        finally:
            again.close()
    finally:
        a.close()
        b.close()


def test_delete_device_waits_for_an_append_that_stores_only_a_conflict(
    pg_schema_url: str,
) -> None:
    """Check that deleting a device while an append that stores none of its readings but a
    conflict (a key's new value) is in flight waits for it and deletes the conflict: it
    outlived the deletion, and the store went on holding data of the device (the device
    could not be registered again: has_device_data)."""
    a, b = open_store(pg_schema_url), open_store(pg_schema_url)
    try:
        a.append([Reading("X", "t", T0, 1.0)])
        # the conflict recorded, not committed
        delete_during(a, b, "_append_locked", lambda: a.append([Reading("X", "t", T0, 2.0)]))
        assert _count(pg_schema_url, "conflicts", "X") == 0
        assert not b.has_device_data("X") and b.devices() == []
    finally:
        a.close()
        b.close()


def test_an_append_of_seqs_only_counts_no_readings(pg_schema_url: str) -> None:
    """Check that a device with only seqs stored, whose device_stats row an append of them
    locks, is not listed among the devices with readings nor counted, and that retention
    and a deletion of it leave the summaries right."""
    store = open_store(pg_schema_url)
    try:
        store.append([Reading("A", "t", T0 + i, 1.0, seq=i) for i in range(1, 4)])
        store.append([], seqs={"B": [1, 2], "A": [4]})
        assert [(d.device_id, d.readings) for d in store.devices()] == [("A", 3)]
        assert store.device("B") is None and store.count_readings() == 3
        assert store.seq_watermark("B") == 2 and store.has_device_data("B")
        assert store.delete_before(T0 + 2) == 1
        assert [(d.device_id, d.readings, d.first_ns) for d in store.devices()] == [
            ("A", 2, T0 + 2)]
        assert store.delete_device("B") == 2
        assert store.seq_watermark("B") == 0 and not store.has_device_data("B")
        assert [d.device_id for d in store.devices()] == ["A"]
    finally:
        store.close()


def test_retention_of_a_fleet_keeps_its_cut_per_device(pg_schema_url: str) -> None:
    """Check that retention, which now locks the device_stats rows of the devices whose
    first reading is older than the cut before deleting, deletes exactly the readings
    before the cut of every device, records each device's cut, and keeps a device whose
    readings are all newer untouched."""
    store = open_store(pg_schema_url)
    try:
        store.append([Reading(f"d{k}", "t", T0 + i, 1.0) for k in range(5) for i in range(10)])
        store.append([Reading("new", "t", T0 + 100 + i, 1.0) for i in range(3)])
        assert store.delete_before(T0 + 4) == 20
        assert [(d.device_id, d.readings, d.first_ns) for d in store.devices()] == [
            *((f"d{k}", 6, T0 + 4) for k in range(5)), ("new", 3, T0 + 100)]
        assert store.trimmed_before("d3") == T0 + 4 and store.trimmed_before("new") is None
        assert store.delete_before(T0 + 4, device_id="d1") == 0
        assert store.delete_before(10**30, device_id="d1") == 6
        assert store.count_readings() == 27
    finally:
        store.close()


def test_a_failed_deletion_names_the_device(pg_schema_url: str) -> None:
    """Check that a deletion that times out waiting for the device's row says which device
    and why (the lock wait), and leaves its rows."""
    store = open_store(pg_schema_url)
    try:
        store.append([Reading("X", "t", T0, 1.0, seq=1)])
        with psycopg.connect(_base(pg_schema_url)) as holder:
            holder.execute(f'SET search_path TO "{_schema(pg_schema_url)}"')
            holder.execute("UPDATE device_stats SET readings = readings WHERE device_id = 'X'")
            store._write_con().execute("SET lock_timeout = '200ms'")
            start = time.monotonic()
            with pytest.raises(StoreError, match=r"Deleting device 'X' .*lock timeout"):
                store.delete_device("X")
            assert time.monotonic() - start < 5
            holder.rollback()
        assert _count(pg_schema_url, "readings", "X") == 1
        assert _count(pg_schema_url, "seqs", "X") == 1
    finally:
        store.close()
