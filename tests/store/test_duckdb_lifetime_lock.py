"""The DuckDB store's file is held by one process from open to close, purges included.

Hunt (concurrency): a purge (``DuckDBStore._swap_in``: a device deletion, retention, an
open that finishes a purge) closed its connection and reopened the file with no lock held
in between. Another process (``edgewise label suggest``, ``store purge``, a second
``serve``) could open the file in that gap: the gateway's reopen then failed and was never
retried (every ingest 503 "Connection already closed!" until a restart), the other
process's own purge at open deleted the gateway's half-made copy (DELETE answered 500),
and an opener got a raw ``cannot rollback - no transaction is active`` (``_compact_seqs``
rolling back after a refused COMMIT) instead of the lock error.

Now the process holds an exclusive ``flock`` on ``<file>.lock`` (0600, its pid in it) for
the store's whole life; a reopen that fails is retried, then leaves the store failed with
errors that say why; a rename that fails is a StoreError naming the files; and a ROLLBACK
after a failed COMMIT no longer hides the first error.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

import edgewise.store.duckdb as ddb
from edgewise.errors import StoreError, StoreLockedError
from edgewise.store.duckdb import DuckDBStore
from edgewise.telemetry import Reading
from tests.conftest import REPO

# Opens the store once the file argv[2] appears (imports done ahead, so the open lands
# inside the window the test holds open); prints "locked PID" or "opened", and an opened
# store is held a second, as a CLI command reading it would.
_OPENER = """
import sys, time, pathlib
from edgewise.errors import StoreLockedError
from edgewise.store.duckdb import DuckDBStore
go = pathlib.Path(sys.argv[2])
print("ready", flush=True)
deadline = time.monotonic() + 60
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.002)
try:
    s = DuckDBStore(sys.argv[1])
except StoreLockedError as e:
    print("locked", e.pid, flush=True)
    print(e, flush=True)
else:
    print("opened", flush=True)
    time.sleep(1.0)
    s.close()
"""


def _readings(device: str, seqs: range) -> list[Reading]:
    return [Reading(device, "t", 10**18 + q * 10**9, float(q), seq=q) for q in seqs]


def _append(store: DuckDBStore, device: str, seqs: range) -> None:
    store.append(_readings(device, seqs), {device: list(seqs)})


def _line(proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
    """The next stdout line of ``proc``, or a failure after ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"the opener said nothing in {timeout} s"
    return proc.stdout.readline().strip()


def _opener(path: Path, go: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    proc = subprocess.Popen([sys.executable, "-c", _OPENER, str(path), str(go)],
                            stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    assert _line(proc) == "ready"
    return proc


def _open_elsewhere(path: Path) -> str:
    """Open and close the store in another process now: "opened", or "locked PID"."""
    go = path.with_name("go-now")
    go.touch()
    proc = _opener(path, go)
    try:
        return _line(proc)
    finally:
        proc.communicate(timeout=60)
        go.unlink()


class _PausedOs:
    """The store module's ``os``, whose ``replace`` of a purged copy over the store first
    calls ``during`` (the gap in which the old file is closed and the new one not open)."""

    def __init__(self, during: Any) -> None:
        self.during = during

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any) -> None:
        if ".purge-" in str(src):
            self.during(Path(src), Path(dst))
        os.replace(src, dst)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DuckDBStore]:
    s = DuckDBStore(tmp_path / "ew.duckdb")
    _append(s, "keep", range(1, 21))
    _append(s, "gone", range(1, 6))
    yield s
    s.close()


def test_the_lock_file_is_private_names_the_holder_and_is_released(tmp_path: Path) -> None:
    """Check the store's lock file: made 0600 beside it (one made 0644 beforehand is made
    0600), it holds the holder's pid while open and is gone after close; another process
    is refused while the store is open, also after a failed second open in this process,
    and opens it after close; open and close can repeat in one process."""
    path = tmp_path / "ew.duckdb"
    lock = tmp_path / "ew.duckdb.lock"
    lock.write_text("")
    os.chmod(lock, 0o644)
    for _ in range(3):
        s = DuckDBStore(path)
        try:
            assert lock.is_file(), sorted(p.name for p in tmp_path.iterdir())
            mode = stat.S_IMODE(lock.stat().st_mode)
            assert mode == 0o600, f"lock file mode {oct(mode)}, want 0o600"
            assert lock.read_text() == f"{os.getpid()}\n", lock.read_text()
            with pytest.raises(StoreError, match="already open in this process"):
                DuckDBStore(path)
            got = _open_elsewhere(path)
            assert got == f"locked {os.getpid()}", got
        finally:
            s.close()
        assert not lock.exists(), "the lock file stays beside a closed store"
    assert _open_elsewhere(path) == "opened"


def test_no_other_process_opens_the_store_in_a_purge_s_swap(
        store: DuckDBStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that another process trying to open the store while a device deletion's purge
    has the old file closed and the purged copy not yet renamed is refused at once, naming
    this process; the purge completes, and the store goes on taking readings."""
    path = Path(store.path)
    go = tmp_path / "go"
    proc = _opener(path, go)
    seen: list[str] = []

    def during(src: Path, dst: Path) -> None:  # the old file is closed now
        go.touch()
        seen.append(_line(proc))  # the other process's open, done inside the gap

    monkeypatch.setattr(ddb, "os", _PausedOs(during))
    try:
        assert store.delete_device("gone") == 10  # 5 readings + 5 seqs
    finally:
        out, _ = proc.communicate(timeout=60)
    monkeypatch.undo()
    assert seen == [f"locked {os.getpid()}"], (seen, out)
    assert not store.purge_pending, "the deletion's purge did not complete"
    _append(store, "keep", range(21, 31))
    assert store.count_readings() == 30
    assert store.seq_watermark("keep") == 30


def test_a_reopen_refused_for_a_moment_is_retried(
        store: DuckDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that when the store's file cannot be reopened right after the swap (a program
    that ignores the lock file holds it a moment), the purge tries again and succeeds."""
    real = ddb._connect
    refusals = [2]

    def flaky(path: Any) -> duckdb.DuckDBPyConnection:
        if refusals[0]:
            refusals[0] -= 1
            raise StoreLockedError(f"DuckDB store {str(path)!r} is in use (pid 1)", pid="1")
        return real(path)

    monkeypatch.setattr(ddb, "_connect", flaky)
    assert store.purge() is True
    assert refusals == [0]
    monkeypatch.undo()
    assert not store.purge_pending
    _append(store, "keep", range(21, 26))
    assert store.count_readings() == 30


def test_a_reopen_that_keeps_failing_leaves_a_store_that_says_why(
        store: DuckDBStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that when the file cannot be reopened at all, the purge fails with a
    StoreError, and every later call says the store is unusable because the purge could
    not reopen its file (not "Connection already closed!"); close() still releases it,
    and a new open finds everything committed."""
    def refuse(path: Any) -> duckdb.DuckDBPyConnection:
        raise StoreLockedError(f"DuckDB store {str(path)!r} is in use by another process "
                               "(pid 4242)", pid="4242")

    monkeypatch.setattr(DuckDBStore, "REOPEN_TIMEOUT_S", 0.3, raising=False)
    monkeypatch.setattr(ddb, "_connect", refuse)
    with pytest.raises(StoreError) as purge_err:
        store.purge()
    monkeypatch.undo()
    assert "could not open it again" in str(purge_err.value), str(purge_err.value)
    for call in (lambda: _append(store, "keep", range(21, 22)), store.count_readings,
                 lambda: store.query("keep"), lambda: store.stored_seqs("keep", [1])):
        with pytest.raises(StoreError) as err:
            call()
        text = str(err.value)
        assert "could not open it again" in text and "pid 4242" in text, text
        assert "Connection already closed" not in text, text
    assert store.purge_pending is True
    store.close()
    again = DuckDBStore(tmp_path / "ew.duckdb")
    try:
        assert again.count_readings() == 25
        assert again.seq_watermark("keep") == 20
    finally:
        again.close()


def test_a_rename_that_fails_is_a_store_error_naming_the_files(
        store: DuckDBStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that an OSError from renaming the purged copy over the store file is a
    StoreError naming both files; the store keeps its file and stays usable, the purge
    stays pending, and the next purge completes it."""
    path = Path(store.path)
    copies: list[Path] = []

    def during(src: Path, dst: Path) -> None:
        copies.append(src)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(ddb, "os", _PausedOs(during))
    with pytest.raises(StoreError) as err:
        store.purge()
    monkeypatch.undo()
    text = str(err.value)
    assert str(copies[0]) in text and repr(str(path)) in text, text
    assert "Invalid cross-device link" in text, text
    assert store.purge_pending
    _append(store, "keep", range(21, 26))
    assert store.count_readings() == 30
    assert store.purge() is True and not store.purge_pending


class _RefusedCommit:
    """A DuckDB connection whose COMMIT of the seqs' compaction fails as when another
    process holds the log's lock (DuckDB ends the transaction on such a failure)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)

    def execute(self, sql: str, *args: Any) -> Any:
        if sql.startswith("DELETE FROM seqs USING"):
            self._armed = True
        if sql == "COMMIT" and self._armed:
            self._armed = False
            self._con.execute("ROLLBACK")
            raise duckdb.TransactionException(
                'TransactionContext Error: Failed to commit: Could not set lock on file '
                '"ew.duckdb.wal": Conflicting lock is held in python (PID 4242)')
        return self._con.execute(sql, *args)


def test_a_refused_commit_at_open_is_a_store_error_naming_the_cause(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that a store whose open fails while compacting seqs (the COMMIT refused)
    raises a StoreError naming the file and the COMMIT's error, not DuckDB's "cannot
    rollback - no transaction is active"; the file is released for the next open."""
    path = tmp_path / "ew.duckdb"
    DuckDBStore(path).close()
    con = duckdb.connect(str(path))  # seqs not folded yet, as a crash leaves them
    con.execute("INSERT INTO seqs VALUES ('d', 1), ('d', 2)")
    con.close()
    real = ddb._connect
    monkeypatch.setattr(ddb, "_connect", lambda p: _RefusedCommit(real(p)))
    with pytest.raises(StoreError) as err:
        DuckDBStore(path)
    monkeypatch.undo()
    text = str(err.value)
    assert repr(str(path)) in text and "Failed to commit" in text, text
    assert "no transaction is active" not in text, text
    s = DuckDBStore(path)
    try:
        assert s.seq_watermark("d") == 2
    finally:
        s.close()


def test_a_memory_store_takes_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that ``:memory:`` stores make no lock file and can be opened side by side."""
    monkeypatch.chdir(tmp_path)
    a, b = DuckDBStore(":memory:"), DuckDBStore(":memory:")
    a.close()
    b.close()
    assert not list(tmp_path.iterdir())
