"""Deleted data is gone from the disk: a byte scan of the store's files after a delete.

Each test stores a device with a unique id and values whose float64 bytes are unique,
checks first that the scan finds them where they were stored (so the scan can fail), then
deletes and scans again.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgewise.store.base import Alert
from edgewise.store.duckdb import DuckDBStore
from edgewise.telemetry import Reading
from tests.conftest import dml_only_role

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000 * 10**9
SECRET = "secret-pump-5c1e9a7b"


def _secret_values(n: int = 300) -> list[float]:
    rng = random.Random(20261205)
    return [rng.uniform(-1e6, 1e6) for _ in range(n)]


def _secret_readings() -> list[Reading]:
    return [Reading(SECRET, "temp_c", T0 + i * 10**9, v, seq=i + 1)
            for i, v in enumerate(_secret_values())]


def _other_readings(n: int = 5000, device: str = "other-1") -> list[Reading]:
    return [Reading(device, "temp_c", T0 + i * 10**9, float(i % 97) / 4, seq=i + 1)
            for i in range(n)]


def _store_files(path: Path) -> list[Path]:
    return [p for p in (path, path.with_name(path.name + ".wal")) if p.exists()]


def _traces(files: list[Path]) -> dict[str, int]:
    """How many times the secret id, and how many of its values, occur in ``files``."""
    pats = [struct.pack("<d", v) for v in _secret_values()]
    data = b"".join(p.read_bytes() for p in files)
    return {"id": data.count(SECRET.encode()), "values": sum(p in data for p in pats)}


def _fill(store: DuckDBStore) -> None:
    store.append(_other_readings(), {"other-1": range(1, 5001)})
    store.append(_secret_readings(), {SECRET: range(1, 301)})
    store.add_alert(Alert(SECRET, T0, T0 + 10**9, 0.99, message=f"{SECRET} overheats"))
    store.add_alert(Alert("other-1", T0, T0 + 10**9, 0.9, id="other-alert"))


@pytest.mark.parametrize("checkpointed", [True, False], ids=["in-file", "in-wal"])
def test_delete_device_leaves_no_bytes_in_duckdb_files(tmp_path: Path, checkpointed: bool) -> None:
    """Check that a deleted device's id and values are in neither the file nor its log."""
    # Prepare
    path = tmp_path / "ew.duckdb"
    store = DuckDBStore(path)
    _fill(store)
    if checkpointed:
        store.checkpoint()
        before = _traces(_store_files(path))
        assert before["id"] > 0 and before["values"] == 300, before  # the scan sees them
    other = store.query("other-1")
    # Execute
    assert store.delete_device(SECRET) == 300 + 300 + 1
    store.close()
    # Assert
    assert _traces(_store_files(path)) == {"id": 0, "values": 0}
    store = DuckDBStore(path)
    try:
        assert store.query("other-1") == other
        assert [a.id for a in store.list_alerts()] == ["other-alert"]
        assert store.seq_watermark("other-1") == 5000 and store.seq_watermark(SECRET) == 0
        assert not store.has_device_data(SECRET)
    finally:
        store.close()
    assert [p.name for p in tmp_path.iterdir()] == ["ew.duckdb"]  # no copy left beside it


def test_retention_purge_leaves_no_bytes_in_duckdb_file(tmp_path: Path) -> None:
    """Check that delete_before(purge=True) and purge() remove expired readings' bytes."""
    path = tmp_path / "ew.duckdb"
    store = DuckDBStore(path)
    _fill(store)
    store.checkpoint()
    cut = T0 + 400 * 10**9  # every secret reading is older; other-1 keeps 4600
    assert store.delete_before(cut, device_id=SECRET) == 300
    store.checkpoint()
    assert _traces(_store_files(path))["values"] == 300  # deleted, still on disk
    assert store.delete_before(cut, purge=True) == 400
    assert _traces(_store_files(path))["values"] == 0
    assert store.count_readings() == 4600
    store.close()
    assert _traces(_store_files(path))["values"] == 0


def test_purge_keeps_concurrent_readers_and_writers_working(tmp_path: Path) -> None:
    """Check that readers querying during a purge get the old or new answer, never an
    error, and that appends waiting on it land in the purged file."""
    # Prepare: enough rows that the copy takes a while
    path = tmp_path / "ew.duckdb"
    store = DuckDBStore(path)
    for k in range(2):
        store.append(_other_readings(50_000, device=f"bulk-{k}"))
    _fill(store)
    store.checkpoint()
    total = store.count_readings()
    answers: set[int] = set()
    errors: list[BaseException] = []
    written: list[int] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                answers.add(store.count_readings())
                assert store.query("other-1", limit=3)[0] == ("temp_c", T0, 0.0)
                store.get_alert("other-alert")
            except BaseException as exc:
                errors.append(exc)
                return

    def write() -> None:
        seq = 1
        while not stop.is_set():
            try:
                store.append([Reading("live", "v", T0 + seq, float(seq), seq=seq)],
                             {"live": [seq]})
            except BaseException as exc:
                errors.append(exc)
                return
            written.append(seq)
            seq += 1

    threads = [threading.Thread(target=read) for _ in range(2)]
    threads.append(threading.Thread(target=write))
    for t in threads:
        t.start()
    try:
        time.sleep(0.2)
        # Execute: purge twice, so some readers hold cursors of a swapped-out connection
        store.delete_device(SECRET)
        store.purge()
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join()
    # Assert
    assert errors == [], errors[:3]
    assert written, "the writer never got a turn"
    assert answers <= set(range(total - 300, total + len(written) + 1)), sorted(answers)[:5]
    store.close()
    store = DuckDBStore(path)
    try:
        assert store.seq_watermark("live") == len(written)
        assert len(store.query("live")) == len(written)
        assert store.count_readings() == total - 300 + len(written)
    finally:
        store.close()
    assert _traces(_store_files(path)) == {"id": 0, "values": 0}


# A child started one iteration ahead: its interpreter start and imports overlap the
# previous child's run; it opens its store only when told (a line on stdin).
_KILLED = """
import sys
from edgewise.store.duckdb import DuckDBStore
sys.stdin.readline()
store = DuckDBStore(sys.argv[1])
print("open", flush=True)
store.delete_device(sys.argv[2])
print("done", flush=True)
store.close()
"""


def test_purge_killed_at_any_moment_leaves_a_store_that_finishes_it(tmp_path: Path) -> None:
    """Check that SIGKILLs during a device delete's purge leave the old or the new file,
    never neither, and that the next open finishes the purge."""
    template = tmp_path / "template.duckdb"
    store = DuckDBStore(template)
    for k in range(2):
        store.append(_other_readings(50_000, device=f"bulk-{k}"))
    _fill(store)
    other = store.count_readings() - 300
    store.close()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}

    def child(it: int) -> tuple[Path, subprocess.Popen[str]]:
        path = tmp_path / f"run{it}" / "ew.duckdb"
        path.parent.mkdir()
        shutil.copy(template, path)
        return path, subprocess.Popen(
            [sys.executable, "-c", _KILLED, str(path), SECRET], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)

    # The kills are spread over one uncut delete's duration, timed here: fixed pauses fell
    # after its end on a quiet machine and before its commit on a loaded one.
    path, proc = child(-1)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "open", proc.stderr
    t0 = time.perf_counter()
    assert proc.stdout.readline().strip() == "done", proc.stderr
    took = time.perf_counter() - t0
    proc.communicate(timeout=30)
    pauses = [took * f for f in (0.15, 0.35, 0.55, 0.75, 0.9)]
    outcomes = []
    ahead = child(0)
    try:
        for it, pause in enumerate(pauses):
            (path, proc), ahead = ahead, None  # type: ignore[assignment]
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline().strip() == "open", proc.stderr
            if it + 1 < len(pauses):
                ahead = child(it + 1)
            time.sleep(pause)
            os.kill(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate(timeout=30)
            store = DuckDBStore(path)  # opens (and finishes a purge cut short)
            try:
                secret_left = len(store.query(SECRET))
                assert secret_left in (0, 300), secret_left
                assert store.count_readings() - secret_left == other
            finally:
                store.close()
            outcomes.append((secret_left, "done" in out))
            if secret_left == 0:
                assert _traces(_store_files(path)) == {"id": 0, "values": 0}, it
            assert sorted(p.name for p in path.parent.iterdir()) == ["ew.duckdb"]
    finally:
        if ahead is not None:
            ahead[1].kill()
            ahead[1].communicate()
    # the kills fell after the delete's commit at least once (else nothing was tested)
    assert any(left == 0 and not done for left, done in outcomes), outcomes


@pytest.mark.postgres
def test_delete_device_leaves_no_bytes_in_postgres_files(pg_schema_url: str) -> None:
    """Check that a deleted device's id and values are gone from the tables' and
    indexes' files (read from the server's data directory, where this user may)."""
    import psycopg

    from edgewise.store.postgres import PostgresStore

    base = pg_schema_url.split("?")[0]
    store = PostgresStore(pg_schema_url)
    try:
        with psycopg.connect(base, autocommit=True) as admin:
            data_dir = Path(admin.execute("SHOW data_directory").fetchone()[0])
            if not os.access(data_dir, os.R_OK | os.X_OK):
                pytest.skip(f"PostgreSQL's data directory {data_dir} is not readable here")

            def files() -> list[Path]:
                admin.execute("CHECKPOINT")  # dirty pages to the files
                rows = admin.execute(
                    "SELECT pg_relation_filepath(c.oid) FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind IN "
                    "('r', 'i', 't')", [store.schema]).fetchall()
                return [p for (fp,) in rows if fp
                        for p in (data_dir / fp).parent.glob(Path(fp).name + "*")]

            store.append(_other_readings(), {"other-1": range(1, 5001)})
            store.append(_secret_readings(), {SECRET: range(1, 301)})
            store.add_alert(Alert(SECRET, T0, T0 + 10**9, 0.99, message=f"{SECRET} hot"))
            before = _traces(files())
            assert before["id"] > 0 and before["values"] == 300, before
            other = store.query("other-1")
            assert store.delete_device(SECRET) == 300 + 300 + 1  # not purged by default
            assert _traces(files())["values"] > 0
            assert store.purge() is True
            assert _traces(files()) == {"id": 0, "values": 0}
            assert store.query("other-1") == other
            assert store.seq_watermark("other-1") == 5000
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_purge_without_ownership_says_what_to_run(
        pg_schema_url: str, postgres_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Check a role with only DML rights deletes a device, and purge() answers False with
    a warning naming the tables and the VACUUM (FULL) their owner must run."""
    from edgewise.store.postgres import PostgresStore

    PostgresStore(pg_schema_url).close()  # the admin sets the tables up
    schema = pg_schema_url.rpartition("schema=")[2]
    with dml_only_role(postgres_url, schema, "ew_purge_role_") as (role, url):
        store = PostgresStore(url)
        try:
            store.append(_secret_readings())
            with caplog.at_level("WARNING", logger="edgewise.store.postgres"):
                assert store.delete_device(SECRET) >= 300
                assert store.purge() is False
            assert store.query(SECRET) == []
        finally:
            store.close()
        text = caplog.text
        assert f"role {role!r} does not own them" in text, text
        assert f'VACUUM (FULL) "{schema}".readings, "{schema}".seqs' in text, text
