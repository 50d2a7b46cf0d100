"""A DuckDB store's files stay private (0600, folders 0700) whatever the process's umask.

The store made its file 0600, but DuckDB makes the write-ahead log (``<file>.wal``, which
holds the readings committed since the last checkpoint) anew after every checkpoint, and
its spill folder (``<file>.tmp``, rows of a sort that did not fit in memory) when it first
spills, both with the process's umask: 0644 (0755) under a shell's umask 022, in library
use and in the CLI commands that write a store (only serve, demo and federate ran with
umask 077). The umask is the shell's 022 here, in a 0755 folder.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.store.duckdb import DuckDBStore, repair
from edgewise.telemetry import Reading
from tests.store.test_duckdb import _corrupt_wal

load_commands()

T0 = 1_700_000_000 * 10**9
SECRET = "zq-secret-pump"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.fixture
def umask_022(tmp_path: Path) -> Iterator[None]:
    """A shell's umask (not the gateway's 077) and a folder others may list."""
    os.chmod(tmp_path, 0o755)
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _batch(device: str, start: int, n: int = 50) -> list[Reading]:
    return [Reading(device, "pressure", T0 + (start + i) * 10**9, 1234.5 + i)
            for i in range(n)]


def test_the_write_ahead_log_is_private_each_time_duckdb_makes_it(
        tmp_path: Path, umask_022: None) -> None:
    """Check the log is 0600 after the first append, again after a checkpoint and after a
    device deletion's purge (DuckDB deletes it at both and makes it anew), and that the
    process's umask is 022 again between writes (a file it makes then is 0644)."""
    path = tmp_path / "ew.duckdb"
    wal = path.with_name("ew.duckdb.wal")
    store = DuckDBStore(path)
    try:
        store.append(_batch(SECRET, 0))
        assert SECRET.encode() in wal.read_bytes()  # the log holds the readings
        assert oct(_mode(wal)) == "0o600"
        assert _umask() == 0o022, "the store left the process's umask changed"
        mine = tmp_path / "report.csv"
        mine.write_text("x")
        assert oct(_mode(mine)) == "0o644"
        store.checkpoint()
        assert not wal.exists()
        store.append(_batch(SECRET, 100))
        assert oct(_mode(wal)) == "0o600"
        store.append(_batch("other", 0))
        store.delete_device("other")  # purges: the file is swapped, the log folded in
        store.append(_batch(SECRET, 200))
        assert wal.exists() and oct(_mode(wal)) == "0o600"
        assert oct(_mode(path)) == "0o600"
    finally:
        store.close()
    assert _umask() == 0o022
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ew.duckdb", "report.csv"]


def test_stores_written_from_several_threads_keep_private_logs(
        tmp_path: Path, umask_022: None) -> None:
    """Check two stores appending and checkpointing at once in two threads each get a 0600
    log every time, and the umask is 022 once both are done (one store's writer giving the
    umask back must not expose the other's log)."""
    stores = [DuckDBStore(tmp_path / f"s{k}.duckdb") for k in range(2)]
    seen: list[tuple[str, int]] = []
    failures: list[BaseException] = []

    def work(store: DuckDBStore) -> None:
        wal = Path(store.path + ".wal")
        try:
            for k in range(30):
                store.append(_batch(SECRET, k * 10, 10))
                seen.append((wal.name, _mode(wal)))
                if k % 5 == 4:
                    store.checkpoint()
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in stores:
            s.close()
    assert not failures, failures
    assert len(seen) == 60
    assert {m for _, m in seen} == {0o600}, sorted({(n, oct(m)) for n, m in seen})
    assert _umask() == 0o022


def _spilled(store: DuckDBStore) -> Any:
    """A reader's cursor in the middle of a sort too big for DuckDB's memory (20 MB here):
    the sorted rows are on disk until the cursor is closed."""
    store._con.execute("SET memory_limit = '20MB'")
    store._con.execute("SET threads = 1")
    with store._gate.shared():
        cur = store._reader()
        cur.execute("SELECT md5(i::VARCHAR) AS h, i FROM range(700000) t(i) ORDER BY h")
        assert cur.fetchmany(1)
    return cur


def test_rows_duckdb_spills_to_disk_are_private(tmp_path: Path, umask_022: None) -> None:
    """Check a reader's sort that does not fit in memory spills into a 0700 folder beside
    the store (it was 0755, its files 0644), and that the folder is gone after close."""
    path = tmp_path / "ew.duckdb"
    spill = tmp_path / "ew.duckdb.tmp"
    store = DuckDBStore(path)
    try:
        held = _spilled(store)
        try:
            spilled = [p.name for p in spill.iterdir()]
            assert any("storage" in name for name in spilled), spilled  # it did spill
            assert oct(_mode(spill)) == "0o700"
        finally:
            held.close()
    finally:
        store.close()
    assert not spill.exists()


def test_an_in_memory_store_spills_to_a_private_folder_not_the_working_one(
        tmp_path: Path, umask_022: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check an in-memory store's spilled rows go to a private folder of its own, not to
    ``./.tmp`` in the working directory (DuckDB's default there, files 0644)."""
    monkeypatch.chdir(tmp_path)
    store = DuckDBStore(":memory:")
    try:
        held = _spilled(store)
        try:
            assert list(tmp_path.iterdir()) == []  # no ./.tmp
            spill = Path(store._con.execute("SELECT current_setting('temp_directory')")
                         .fetchall()[0][0])
            assert any("storage" in p.name for p in spill.iterdir())  # it spilled there
            assert oct(_mode(spill)) == "0o700"
        finally:
            held.close()
    finally:
        store.close()
    assert not spill.exists()


def test_repair_keeps_the_broken_log_private(tmp_path: Path, umask_022: None) -> None:
    """Check the log repair moves aside (an older version's, 0644) is made 0600: it holds
    the readings logged before the crash and stays beside the store."""
    path = tmp_path / "ew.duckdb"
    _corrupt_wal(path)
    os.chmod(path.with_name("ew.duckdb.wal"), 0o644)
    report = repair(path)
    assert report.wal_moved_to is not None
    assert oct(_mode(Path(report.wal_moved_to))) == "0o600"
    assert oct(_mode(path)) == "0o600"


def test_cli_commands_that_write_a_store_run_with_umask_077(
        tmp_path: Path, umask_022: None) -> None:
    """Check 'device delete', 'store purge' and 'repair' run with umask 077 as serve does
    (what they and the libraries they call make is private) and give the shell's 022
    back after; no file they leave in the data dir is readable by others."""
    from edgewise.cli.admin import device_delete
    from edgewise.cli.repair import repair as repair_command
    from edgewise.cli.store import store_purge
    from edgewise.security import Security

    for command in (device_delete, store_purge, repair_command):
        seen = getattr(command, "__wrapped__", None)
        assert seen is not None, f"{command.__name__} does not restrict the umask"
    data = tmp_path / "d"
    data.mkdir()
    Security(data).close()
    store = DuckDBStore(data / "edgewise.duckdb")
    store.append(_batch(SECRET, 0) + _batch("kept", 0))
    store.close()
    runner = CliRunner(mix_stderr=False)
    for args in (["device", "delete", SECRET, "--data-dir", str(data), "--json"],
                 ["store", "purge", "--data-dir", str(data), "--json"],
                 ["repair", "--data-dir", str(data), "--json"]):
        res = runner.invoke(app, args, env={"EDGEWISE_STORE": None, "EDGEWISE_DATA_DIR": None})
        assert res.exit_code == 0, (args, res.output, res.stderr, res.exception)
        assert _umask() == 0o022, f"{args[:2]} left the umask changed"
    loose = {p.name: oct(_mode(p)) for p in data.rglob("*") if _mode(p) & 0o077}
    assert loose == {}
