"""``repair`` holds the store's lock from before its first open to after its last close.

Hunt (concurrency): ``repair`` opened the store (which took and, on the failed open, dropped
the lock on ``<file>.lock``), moved the write-ahead log aside, wrote its intact part back
and opened the store again, with no lock held in between. Another process (a starting
``edgewise serve``, ``label suggest``, ``train``) could open the file in that gap: it
opened the store without the log's intact part (0 readings of the 100 repair keeps), and
the repair then failed ("in use by another process") after removing the log it had written
beside a file the other process held. Now another process is refused at once, naming the
repair's pid, and the repair keeps the 100 readings.

A repair refused because another process holds the store said what other commands are told
(read the readings through the gateway and pass them with --csv, or use a PostgreSQL store),
which no repair can do; now it says to stop that process and repair then.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

import edgewise.store.duckdb as ddb
from edgewise.errors import StoreLockedError
from edgewise.store.duckdb import DuckDBStore, repair
from edgewise.telemetry import Reading
from tests.store.test_duckdb_lifetime_lock import _line, _opener


def _corrupt_wal(path: Path) -> None:
    """Leave ``path`` as a crashed process would (a copy of an open store's file and log,
    made in this process), with one flipped byte in the second of its two logged appends
    of 100 readings (tests.store.test_duckdb's helper, without a process of its own)."""
    crashed = DuckDBStore(path.with_name("crashed.duckdb"))
    try:
        crashed.checkpoint()
        for k in range(2):
            crashed.append([Reading("pump-1", "t", 10**18 + (k * 100 + i) * 10**9, 1.0)
                            for i in range(100)])
        shutil.copy(crashed.path, path)
        shutil.copy(crashed.path + ".wal", str(path) + ".wal")
    finally:
        crashed.close()
    wal = Path(str(path) + ".wal")
    data = bytearray(wal.read_bytes())
    data[len(data) - 200] ^= 0xFF
    wal.write_bytes(bytes(data))


class _PausedOs:
    """The store module's ``os``, whose ``replace`` of the log to its ``.broken-`` name
    calls ``during`` once it is done (the log is aside, the intact part not yet replayed)."""

    def __init__(self, during: Any) -> None:
        self.during = during

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any) -> None:
        os.replace(src, dst)
        if ".broken-" in str(dst):
            self.during()


def test_no_other_process_opens_the_store_while_repair_moves_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that another process opening the store while repair has its log moved aside
    is refused at once with the lock error naming this process's pid; the repair keeps the
    100 readings committed before the damage, and lets go of the store."""
    path = tmp_path / "ew.duckdb"
    _corrupt_wal(path)
    go = tmp_path / "go"
    proc = _opener(path, go)
    seen: list[str] = []

    def during() -> None:
        go.touch()
        seen.append(_line(proc))  # the other process's open, done inside the gap
        if seen[0].startswith("locked"):
            seen.append(_line(proc))  # its message

    monkeypatch.setattr(ddb, "os", _PausedOs(during))
    try:
        report = repair(path)
    finally:
        out, _ = proc.communicate(timeout=60)
    monkeypatch.undo()
    assert seen[:1] == [f"locked {os.getpid()}"], (seen, out)
    assert (f"DuckDB store {str(path)!r} is in use by another process (pid {os.getpid()})"
            in seen[1]), seen
    assert not report.ok_before and report.readings_after == 100, report
    assert not path.with_name("ew.duckdb.lock").exists(), "repair left its lock file"
    store = DuckDBStore(path)  # the repair let go of the file
    try:
        assert store.count_readings() == 100
    finally:
        store.close()


def test_repair_of_a_store_another_process_holds_says_to_stop_it(tmp_path: Path) -> None:
    """Check that repair on a store whose lock another holder has is refused naming the
    holder's pid and telling to stop it, without the advice (--csv, PostgreSQL) that does
    not help a repair; the holder's lock file and the store's files stay as they were."""
    path = tmp_path / "ew.duckdb"
    DuckDBStore(path).close()
    before = sorted(p.name for p in tmp_path.iterdir())
    fd = ddb._take_lock(path)  # another holder (a flock conflicts within one process too)
    try:
        with pytest.raises(StoreLockedError) as info:
            repair(path)
        lock_text = path.with_name("ew.duckdb.lock").read_text()
    finally:
        ddb._drop_lock(fd, path)
    message = str(info.value)
    assert info.value.pid == str(os.getpid()) and info.value.path == str(path)
    assert message.startswith(f"DuckDB store {str(path)!r} is in use by another process "
                              f"(pid {os.getpid()})"), message
    assert "stop that process, then run the repair again" in message, message
    assert "--csv" not in message and "postgresql" not in message, message
    assert lock_text == f"{os.getpid()}\n", "repair touched the holder's lock file"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
