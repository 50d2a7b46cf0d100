"""PostgreSQL store hunt (session 48): retention of a device with a long history (more
readings than :data:`edgewise.store.postgres.RETENTION_CHUNK`) ran in one transaction,
holding the store's write lock: the gateway's ingest of every device waited for all of it
(5.2 s for 2 million readings of one device). It now deletes the device's oldest readings
a batch at a time, each batch a coherent trim at a cut of its own (recorded by
``trimmed_before``), and lets this process's appends in between. And every pass read every
reading of the devices it trimmed (to find the old ones, and to recount the totals): it
now reads about those it deletes."""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from edgewise.errors import StoreError
from edgewise.store.postgres import PostgresStore
from edgewise.telemetry import Reading
from tests.conftest import wait_until
from tests.store.test_postgres_hunt_s43 import _base, _schema, _waits_on_lock

psycopg = pytest.importorskip("psycopg")

T0 = 1_700_000_000 * 10**9


def _state(url: str, device_id: str) -> tuple[dict[str, tuple[int, int]], tuple, int | None]:
    """(metric -> (count, first ts) of the device's readings, its device_stats row,
    its recorded retention cut), read from another connection."""
    s = _schema(url)
    with psycopg.connect(_base(url), autocommit=True) as con:
        per = {m: (int(n), int(lo)) for m, n, lo in con.execute(
            f'SELECT metric, count(*), min(ts_ns) FROM "{s}".readings WHERE device_id = %s '
            "GROUP BY metric", [device_id]).fetchall()}
        stats = con.execute(f'SELECT readings, first_ns, last_ns FROM "{s}".device_stats '
                            "WHERE device_id = %s", [device_id]).fetchone()
        cut = con.execute(f'SELECT before_ns FROM "{s}".trimmed WHERE device_id = %s',
                          [device_id]).fetchone()
    return per, tuple(stats or ()), (int(cut[0]) if cut else None)


@pytest.mark.postgres
def test_retention_of_a_long_history_commits_coherent_batches(
        pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass stuck in the middle of a long history (a row lock an admin holds) has
    committed the device's oldest readings, as a retention at an earlier cut leaves it:
    every metric's readings before that cut gone, none after, the totals and the recorded
    cut agreeing. Before, nothing was committed until the whole device was (one
    transaction, which held this process's ingest meanwhile)."""
    import edgewise.store.postgres as pg

    monkeypatch.setattr(pg, "RETENTION_CHUNK", 100)
    store = PostgresStore(pg_schema_url)
    admin = psycopg.connect(_base(pg_schema_url))  # a transaction held open
    errors: list[BaseException] = []
    try:
        store.append([Reading("a", "m0", T0, 1.0)])  # a small device before the big one
        store.append([Reading("big", f"m{j}", T0 + i, float(i))
                      for i in range(500) for j in range(2)]
                     + [Reading("big", "m0", T0 + 1000 + i, 1.0) for i in range(10)])
        # a reading well past the first batches (50 of each metric a batch)
        admin.execute(f'SELECT 1 FROM "{_schema(pg_schema_url)}".readings WHERE device_id '
                      "= 'big' AND metric = 'm1' AND ts_ns = %s FOR UPDATE", [T0 + 300])
        pid = store._writer.info.backend_pid
        done: list[int] = []

        def retain() -> None:
            try:
                done.append(store.delete_before(T0 + 600))
            except BaseException as exc:
                errors.append(exc)

        th = threading.Thread(target=retain)
        th.start()
        with psycopg.connect(_base(pg_schema_url), autocommit=True) as watch:
            assert wait_until(lambda: _waits_on_lock(watch, pid), timeout=10)
        per, stats, cut = _state(pg_schema_url, "big")
        admin.rollback()  # retention goes on
        th.join(20)
        assert not errors and done == [1 + 1000]
        # the middle: a trim at `cut`, committed, the totals agreeing
        assert cut is not None and T0 < cut <= T0 + 300, (
            "no batch of the device's oldest readings was committed before the rest")
        assert per == {"m0": (510 - (cut - T0), cut), "m1": (500 - (cut - T0), cut)}
        assert stats == (1010 - 2 * (cut - T0), cut, T0 + 1009)
        # the end: as one pass leaves it
        assert _state(pg_schema_url, "big") == ({"m0": (10, T0 + 1000)},
                                                 (10, T0 + 1000, T0 + 1009), T0 + 600)
        summary = store.device("big")
        assert summary is not None and summary.metrics == ["m0"]
        assert store.device("a") is None and store.trimmed_before("a") == T0 + 600
    finally:
        admin.close()
        store.close()


@pytest.mark.postgres
def test_ingest_goes_on_while_retention_trims_a_long_history(
        pg_schema_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An append on the gateway's own store, made while retention trims a device with a
    long history, returns before the pass ends: before, it waited for the whole pass."""
    import edgewise.store.postgres as pg

    monkeypatch.setattr(pg, "RETENTION_CHUNK", 40)
    store = PostgresStore(pg_schema_url)
    errors: list[BaseException] = []
    try:
        store.append([Reading("big", f"m{j}", T0 + i, 1.0) for i in range(2000)
                      for j in range(2)])
        finished: list[float] = []

        def retain() -> None:
            try:
                store.delete_before(T0 + 10**6)
            except BaseException as exc:
                errors.append(exc)
            finished.append(time.monotonic())

        th = threading.Thread(target=retain)
        th.start()
        # the pass is under way once its first batch committed (its cut recorded)
        assert wait_until(lambda: _state(pg_schema_url, "big")[2] is not None or finished,
                          timeout=10, step=0.005)
        assert store.append([Reading("other", "m", T0 + 10**7, 1.0)]).stored == 1
        appended = time.monotonic()
        th.join(30)
        assert not errors and finished
        assert appended < finished[0], "the append waited for the whole retention pass"
        assert store.device("big") is None and store.device("other") is not None
    finally:
        store.close()


def _rows_read(store: PostgresStore, url: str) -> int:
    """Rows and index entries of the store's ``readings`` read so far (its writer's counts
    flushed first: PostgreSQL reports a session's table reads when it goes idle)."""
    store._writer.execute("SELECT pg_stat_force_next_flush()")
    with psycopg.connect(_base(url), autocommit=True) as con:
        row = con.execute(
            "SELECT (SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE "
            "schemaname = %s AND relname = 'readings') + (SELECT coalesce(sum(idx_tup_read), "
            "0) FROM pg_stat_user_indexes WHERE schemaname = %s AND relname = 'readings')",
            [_schema(url)] * 2).fetchone()
    return int(row[0])


@pytest.mark.postgres
def test_retention_reads_the_readings_it_deletes_not_the_devices_histories(
        pg_schema_url: str) -> None:
    """A retention pass that deletes the 20 oldest of a device's 20,000 readings reads
    about those (one range of the primary key per metric), not the device's whole history
    (nor the table): before, it read every reading of the table or device to find the old
    ones, and every reading of the device again to recount its totals, so an hourly pass
    read the whole store and held ingest meanwhile (1 s for a device of 2 million)."""
    store = PostgresStore(pg_schema_url)
    try:
        store.append([Reading("d", f"m{j}", T0 + i, 1.0) for i in range(5000)
                      for j in range(4)])
        store.append([Reading("e", "m0", T0 + i, 1.0) for i in range(3)])
        before = _rows_read(store, pg_schema_url)
        assert store.delete_before(T0 + 5) == 20 + 3
        read = _rows_read(store, pg_schema_url) - before
        assert read < 2_000, f"retention read {read:,} readings to delete 23"
        # the totals as a recount gives them
        summary = store.device("d")
        assert summary is not None
        assert (summary.readings, summary.first_ns, summary.last_ns, summary.metrics) == (
            19_980, T0 + 5, T0 + 4999, ["m0", "m1", "m2", "m3"])
        assert store.device("e") is None and store.trimmed_before("d") == T0 + 5
        assert [d.device_id for d in store.devices()] == ["d"]
    finally:
        store.close()


class _CommitCutter:
    """A TCP proxy to PostgreSQL (127.0.0.1:5432) on a free port that, once armed, passes
    a COMMIT on, waits until ``committed()`` says the server did it, and then breaks the
    client's connection without passing the server's answer back."""

    def __init__(self, committed: Callable[[], bool]) -> None:
        self.committed = committed
        self.armed = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", 5432))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 30)
                if not ready:
                    break
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        break
                    server.sendall(data)
                    if self.armed.is_set() and b"COMMIT" in data:
                        self.armed.clear()
                        wait_until(self.committed, timeout=10, step=0.01)
                        break  # the answer is lost
                if server in ready:
                    data = server.recv(65536)
                    if not data:
                        break
                    client.sendall(data)
        except OSError:
            pass
        client.close()
        server.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def cutter_url(pg_schema_url: str) -> Iterator[tuple[str, _CommitCutter]]:
    count = f'SELECT count(*) FROM "{_schema(pg_schema_url)}".readings'

    def committed() -> bool:
        with psycopg.connect(_base(pg_schema_url), autocommit=True) as con:
            return int(con.execute(count).fetchone()[0]) == 3

    cutter = _CommitCutter(committed)
    url = pg_schema_url.replace("127.0.0.1:5432", f"127.0.0.1:{cutter.port}")
    assert url != pg_schema_url
    try:
        yield url, cutter
    finally:
        cutter.close()


@pytest.mark.postgres
def test_an_append_whose_commit_answer_is_lost_says_its_outcome_is_unknown(
        cutter_url: tuple[str, _CommitCutter]) -> None:
    """The connection breaks after the server committed an append, before its answer
    came back: the error must not say "nothing of it is stored" (it was: the message
    named a rollback that never happened); the same append sent again is a duplicate."""
    url, cutter = cutter_url
    store = PostgresStore(url)
    try:
        store.append([Reading("d", "m", T0 + i, 1.0, seq=i) for i in (1, 2)], {"d": [1, 2]})
        cutter.armed.set()
        with pytest.raises(StoreError) as err:
            store.append([Reading("d", "m", T0 + 3, 1.0, seq=3)], {"d": [3]})
        said = str(err.value)
        assert "nothing of it is stored" not in said
        assert "unknown" in said and "Send it again" in said
        again = store.append([Reading("d", "m", T0 + 3, 1.0, seq=3)], {"d": [3]})
        assert (again.stored, again.duplicates, again.watermarks) == (0, 1, {"d": 3})
    finally:
        store.close()
