"""The audit log's hash chain: what it catches, the migration of an older file, concurrent
writers (threads, connections, processes) and ``edgewise audit verify``."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.security import AUDIT_GENESIS, Security, audit_hash

load_commands()

# The audit table as it was before the hash chain (the other tables did not change).
_OLD_AUDIT = """
CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


def _sql(data_dir: Path, statement: str, params: tuple = ()) -> list[tuple]:
    """Run one statement on security.sqlite from outside Security, as a tamperer would."""
    db = sqlite3.connect(data_dir / "security.sqlite", isolation_level=None)
    try:
        return db.execute(statement, params).fetchall()
    finally:
        db.close()


def _filled(data_dir: Path, n: int = 5) -> Security:
    """A Security whose audit log holds ``n`` entries, ids 1..n."""
    sec = Security(data_dir)
    for i in range(n):
        sec.audit("cli", "test.action", f"t{i}", {"i": i, "note": "é"})
    return sec


def test_clean_chain_verifies_and_every_hash_is_recomputable(data_dir: Path) -> None:
    """Check a chain written by every kind of audited call verifies, the head is the newest
    entry, and each hash is audit_hash of the entry as listed (GET /v1/audit's fields)."""
    sec = Security(data_dir)
    sec.add_device("pump-1", groups=["line-a"])
    sec.create_token("viewer", "grafana")
    sec.revoke_token("grafana")
    sec.audit("cli", "odd.detail", "x", {"when": Path("/p"), "n": float("inf")})
    entries = list(reversed(sec.audit_log(100)))
    assert [e.id for e in entries] == [1, 2, 3, 4]
    assert entries[0].prev_hash == AUDIT_GENESIS
    for before, e in zip([None, *entries], entries, strict=False):
        assert e.prev_hash == (before.hash if before else AUDIT_GENESIS)
        assert e.hash == audit_hash(e.prev_hash, e.id, e.ts_ns, e.actor, e.action, e.target,
                                    e.detail)
    result = sec.verify_audit()
    assert (result.ok, result.checked, result.head_id, result.head_hash, result.bad_id,
            result.problem) == (True, 4, 4, entries[-1].hash, None, None)
    assert result.head == f"4:{entries[-1].hash}"
    assert Security(data_dir).verify_audit().ok  # and from a fresh connection


def test_empty_log_verifies_with_the_genesis_head(data_dir: Path) -> None:
    """Check an empty log is a valid chain whose head is 0:genesis."""
    result = Security(data_dir).verify_audit()
    assert (result.ok, result.checked, result.head) == (True, 0, f"0:{AUDIT_GENESIS}")
    assert Security(data_dir).verify_audit(expect=result.head).ok


def test_editing_a_detail_in_sqlite_is_caught_with_its_id(data_dir: Path) -> None:
    """Check a detail changed in the file (hashes left alone) is 'edited' at that id."""
    sec = _filled(data_dir)
    _sql(data_dir, "UPDATE audit SET detail = ? WHERE id = 3", (json.dumps({"i": 99}),))
    result = sec.verify_audit()
    assert (result.ok, result.bad_id, result.problem, result.checked) == (False, 3, "edited", 3)
    assert "Entry 3 (test.action by cli) does not match its hash" in result.reason
    assert result.head_id == 5


@pytest.mark.parametrize(("column", "value"), [
    ("actor", "someone-else"), ("ts_ns", 1), ("action", "x"), ("target", "t9"),
    ("detail", "not json"),
])
def test_editing_any_hashed_column_is_caught(data_dir: Path, column: str, value: object) -> None:
    """Check each column the hash covers is covered: changing it breaks the chain there."""
    sec = _filled(data_dir)
    _sql(data_dir, f"UPDATE audit SET {column} = ? WHERE id = 2", (value,))
    result = sec.verify_audit()
    assert (result.ok, result.bad_id, result.problem) == (False, 2, "edited")


def test_deleting_a_middle_row_is_caught(data_dir: Path) -> None:
    """Check a middle entry deleted from the file is 'deleted', at the entry after it."""
    sec = _filled(data_dir)
    _sql(data_dir, "DELETE FROM audit WHERE id = 3")
    result = sec.verify_audit()
    assert (result.ok, result.bad_id, result.problem) == (False, 4, "deleted")
    assert "entries 3..3 were deleted" in result.reason


def test_deleting_the_first_row_is_caught(data_dir: Path) -> None:
    """Check the first entry deleted is caught: the next does not chain from genesis."""
    sec = _filled(data_dir)
    _sql(data_dir, "DELETE FROM audit WHERE id = 1")
    result = sec.verify_audit()
    assert (result.ok, result.bad_id, result.problem) == (False, 2, "deleted")


def test_renumbering_rows_is_caught(data_dir: Path) -> None:
    """Check the id is hashed: shifting every id is 'edited', and closing a deletion's gap
    by renumbering still breaks the chain there."""
    sec = _filled(data_dir)
    _sql(data_dir, "UPDATE audit SET id = id + 10")
    result = sec.verify_audit()
    assert (result.ok, result.bad_id, result.problem) == (False, 11, "edited")
    _sql(data_dir, "UPDATE audit SET id = id - 10")
    assert sec.verify_audit().ok
    _sql(data_dir, "DELETE FROM audit WHERE id = 3")
    _sql(data_dir, "UPDATE audit SET id = id - 1 WHERE id > 3")
    result = sec.verify_audit()
    assert (result.ok, result.bad_id) == (False, 3)


def test_inserting_a_forged_row_is_caught(data_dir: Path) -> None:
    """Check a forged entry appended with a made-up prev_hash (its own hash consistent with
    it) is 'inserted' at its id, and one inserted without hashes is too."""
    sec = _filled(data_dir)
    fake_prev = "ab" * 32
    forged = audit_hash(fake_prev, 6, 1, "token:x:admin", "token.revoke", "t", {})
    _sql(data_dir, "INSERT INTO audit VALUES (6, 1, 'token:x:admin', 'token.revoke', 't', "
         "'{}', ?, ?)", (fake_prev, forged))
    result = sec.verify_audit()
    assert (result.ok, result.bad_id, result.problem) == (False, 6, "inserted")
    assert "does not chain from entry 5" in result.reason

    _sql(data_dir, "DELETE FROM audit WHERE id = 6")
    assert sec.verify_audit().ok
    _sql(data_dir, "INSERT INTO audit (ts_ns, actor, action, target, detail) "
         "VALUES (1, 'cli', 'device.add', 'ghost', '{}')")
    result = sec.verify_audit()
    assert (result.ok, result.problem) == (False, "inserted")
    assert "has no hash" in result.reason


def test_a_rewritten_chain_or_deleted_newest_entries_need_the_recorded_head(
        data_dir: Path) -> None:
    """Check the limits the docs state: deleting the newest entries, or editing one and
    recomputing every hash after it, passes a bare verify; the head recorded before
    (``expect``) catches both; and deleted newest entries show as a gap once another entry
    is written (ids are never reused)."""
    sec = _filled(data_dir)
    head = sec.verify_audit().head
    assert head.startswith("5:")

    _sql(data_dir, "DELETE FROM audit WHERE id >= 4")
    assert sec.verify_audit().ok  # a chain alone cannot see this
    gone = sec.verify_audit(expect=head)
    assert (gone.ok, gone.bad_id, gone.problem) == (False, 5, "deleted")
    sec.audit("cli", "later.action")  # gets id 6: ids 4 and 5 are a gap now
    gap = sec.verify_audit()
    assert (gap.ok, gap.bad_id, gap.problem) == (False, 6, "deleted")
    assert "Entries 4..5 are missing" in gap.reason

    other = data_dir / "other"
    sec2 = _filled(other)
    head = sec2.verify_audit().head
    rows = _sql(other, "SELECT id, ts_ns, actor, action, target, detail FROM audit ORDER BY id")
    prev = AUDIT_GENESIS
    for entry_id, ts, actor, action, target, detail in rows:  # edit entry 2, rechain all
        detail = '{"i": 42}' if entry_id == 2 else detail
        digest = audit_hash(prev, entry_id, ts, actor, action, target, json.loads(detail))
        _sql(other, "UPDATE audit SET detail = ?, prev_hash = ?, hash = ? WHERE id = ?",
             (detail, prev, digest, entry_id))
        prev = digest
    assert sec2.verify_audit().ok
    result = sec2.verify_audit(expect=head)
    assert (result.ok, result.bad_id, result.problem) == (False, 5, "rewritten")


@pytest.mark.parametrize("expect", ["5", "x:" + "a" * 64, "5:" + "A" * 64, "5:abc", ""])
def test_a_malformed_expected_head_is_refused_by_name(data_dir: Path, expect: str) -> None:
    """Check an expected head that is not ID:HASH is refused naming the value."""
    with pytest.raises(InvalidParameterError, match="must be 'ID:HASH'") as info:
        _filled(data_dir, 1).verify_audit(expect=expect)
    assert repr(expect) in str(info.value)


def _old_database(data_dir: Path, ids: list[int]) -> None:
    """A security.sqlite with the audit table as it was before the chain, rows ``ids``."""
    db = sqlite3.connect(data_dir / "security.sqlite", isolation_level=None)
    db.executescript(_OLD_AUDIT)
    for i in ids:
        db.execute("INSERT INTO audit VALUES (?, ?, 'cli', 'device.add', ?, ?)",
                   (i, 1_000 + i, f"pump-{i}", json.dumps({"groups": ["a"]})))
    db.close()


def test_a_database_from_before_the_chain_migrates_once_and_verifies(data_dir: Path) -> None:
    """Check an old audit table gets the columns, its rows (a gap left by an old deletion
    included) are chained in id order behind one audit.chain_start entry, a reopen changes
    nothing, new entries continue the chain, and an old row edited later is caught."""
    _old_database(data_dir, [1, 2, 4])
    sec = Security(data_dir)
    entries = list(reversed(sec.audit_log()))
    assert [(e.id, e.action) for e in entries] == [
        (1, "device.add"), (2, "device.add"), (4, "device.add"), (5, "audit.chain_start")]
    assert entries[-1].detail["entries"] == 3
    assert (entries[-1].detail["first_id"], entries[-1].detail["last_id"]) == (1, 4)
    assert entries[0].prev_hash == AUDIT_GENESIS
    assert all(e.hash for e in entries)
    result = sec.verify_audit()
    assert (result.ok, result.checked, result.head_id) == (True, 4, 5)
    sec.close()

    sec = Security(data_dir)  # opened again: nothing migrates twice
    assert [e.action for e in sec.audit_log()].count("audit.chain_start") == 1
    sec.audit("cli", "after.migration")
    assert sec.verify_audit().ok
    _sql(data_dir, "UPDATE audit SET target = 'pump-9' WHERE id = 2")
    result = sec.verify_audit()
    assert (result.ok, result.bad_id, result.problem) == (False, 2, "edited")


def test_an_empty_old_table_gets_the_columns_and_no_marker(data_dir: Path) -> None:
    """Check an old, empty audit table migrates without a chain_start entry."""
    _old_database(data_dir, [])
    sec = Security(data_dir)
    assert sec.audit_log() == []
    sec.audit("cli", "first")
    assert sec.audit_log()[0].prev_hash == AUDIT_GENESIS
    assert sec.verify_audit().ok


def test_an_old_database_opened_by_many_at_once_migrates_once(data_dir: Path) -> None:
    """Check several connections opening an old file together chain it once: one marker."""
    _old_database(data_dir, [1, 2, 3])
    opened: list[Security] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_it() -> None:
        barrier.wait()
        try:
            opened.append(Security(data_dir))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    actions = [e.action for e in opened[0].audit_log()]
    assert actions.count("audit.chain_start") == 1
    assert opened[0].verify_audit().ok


@pytest.mark.parametrize("shared", [True, False], ids=["one-connection", "two-connections"])
def test_two_threads_writing_200_entries_each_leave_one_chain(data_dir: Path,
                                                              shared: bool) -> None:
    """Check 2 x 200 concurrent entries make one valid chain with ids 1..400, through one
    Security (its lock) and through two (SQLite's write lock, as two processes have)."""
    first = Security(data_dir)
    writers = [first, first if shared else Security(data_dir)]
    barrier = threading.Barrier(2)

    def write(k: int) -> None:
        barrier.wait()
        for i in range(200):
            writers[k].audit(f"writer-{k}", "test.concurrent", str(i))

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    result = first.verify_audit()
    assert (result.ok, result.checked, result.head_id) == (True, 400, 400), result.reason
    rows = _sql(data_dir, "SELECT prev_hash FROM audit")
    assert len({r[0] for r in rows}) == 400  # no two entries chain from the same one


def _write_in_child(data_dir: str, k: int) -> None:
    sec = Security(Path(data_dir))
    for i in range(100):
        sec.audit(f"process-{k}", "test.concurrent", str(i))
    sec.close()


def test_two_processes_writing_at_once_leave_one_chain(data_dir: Path) -> None:
    """Check the CLI-beside-the-gateway case: two processes appending make one chain."""
    Security(data_dir).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_in_child, args=(str(data_dir), k)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    result = Security(data_dir).verify_audit()
    assert (result.ok, result.checked) == (True, 200), result.reason


@pytest.fixture
def run(data_dir: Path):
    runner = CliRunner(mix_stderr=False)

    def invoke(*args: str):
        return runner.invoke(app, [*args, "--data-dir", str(data_dir)])

    return invoke


def test_cli_verify_prints_one_line_and_exits_1_on_a_broken_chain(data_dir: Path, run) -> None:
    """Check 'edgewise audit verify': one line and status 0 on a good chain, status 1 naming
    the entry on a broken one, --expect and --json, status 2 on a malformed --expect."""
    _filled(data_dir).close()
    ok = run("audit", "verify")
    assert ok.exit_code == 0, ok.stderr
    assert ok.stdout.count("\n") == 1
    assert ok.stdout.startswith("audit chain ok: 5 entries; head 5:")
    head = ok.stdout.split("head ")[1].strip()
    assert run("audit", "verify", "--expect", head).exit_code == 0

    _sql(data_dir, "UPDATE audit SET detail = '{}' WHERE id = 4")
    broken = run("audit", "verify")
    assert broken.exit_code == 1
    assert broken.stdout.count("\n") == 1
    assert broken.stdout.startswith("audit chain BROKEN at entry 4 (edited): ")
    as_json = run("audit", "verify", "--json")
    assert as_json.exit_code == 1
    body = json.loads(as_json.stdout)
    assert (body["ok"], body["bad_id"], body["problem"], body["checked"]) == (
        False, 4, "edited", 4)

    bad = run("audit", "verify", "--expect", "nope")
    assert bad.exit_code == 2
    assert "'nope'" in bad.stderr


def test_entries_an_older_version_wrote_are_taken_in_and_named(data_dir: Path) -> None:
    """Check an older gateway still writing the file during an upgrade (rows without a
    hash) does not break the chain for good: the next entry chains them behind a marker
    that names them, and the chain verifies."""
    sec = _filled(data_dir, 2)
    _sql(data_dir, "INSERT INTO audit (ts_ns, actor, action, target, detail) "
                   "VALUES (9, 'old-gateway', 'device.add', 'pump-3', '{}')")
    assert sec.verify_audit().problem == "inserted"  # until the next entry is written
    sec.audit("cli", "after.upgrade")
    entries = list(reversed(sec.audit_log()))
    assert [(e.id, e.action) for e in entries][-3:] == [
        (3, "device.add"), (4, "audit.unchained_taken_in"), (5, "after.upgrade")]
    assert entries[3].detail["ids"] == [3]
    result = sec.verify_audit()
    assert result.ok and result.unchecked == (3,)  # ok, but named: forged or not, look


def test_deleting_every_entry_is_caught_once_one_is_written(data_dir: Path) -> None:
    """Check ids are never reused: all entries deleted, then one written, is a gap."""
    sec = _filled(data_dir, 3)
    _sql(data_dir, "DELETE FROM audit")
    sec.audit("cli", "later")
    result = sec.verify_audit()
    assert (result.ok, result.bad_id, result.problem) == (False, 4, "deleted")


def test_an_old_table_emptied_before_the_chain_is_not_a_deletion(data_dir: Path) -> None:
    """Check an old log whose rows were all deleted before the chain existed migrates with
    a marker, so its first chained id (above 1) is not taken for a deletion."""
    _old_database(data_dir, [1, 2])
    _sql(data_dir, "DELETE FROM audit")
    sec = Security(data_dir)
    sec.audit("cli", "first.chained")
    assert sec.verify_audit().ok


def test_a_column_whose_type_was_changed_is_reported_not_a_crash(data_dir: Path) -> None:
    sec = _filled(data_dir, 3)
    _sql(data_dir, "UPDATE audit SET actor = CAST(actor AS BLOB) WHERE id = 2")
    result = sec.verify_audit()
    assert (result.ok, result.bad_id, result.problem) == (False, 2, "edited")


def test_an_expected_empty_head_must_be_the_genesis(data_dir: Path) -> None:
    sec = _filled(data_dir, 2)
    assert sec.verify_audit(expect="0:" + AUDIT_GENESIS).ok
    assert not sec.verify_audit(expect="0:" + "f" * 64).ok


def test_cli_verify_refuses_a_data_dir_without_an_audit_log(tmp_path: Path) -> None:
    """Check a mistyped --data-dir is an error (status 2), not an empty chain that is ok,
    and nothing is created there."""
    missing = tmp_path / "typo"
    res = CliRunner(mix_stderr=False).invoke(app, ["audit", "verify", "--data-dir",
                                                   str(missing)])
    assert res.exit_code == 2 and "security.sqlite" in res.stderr
    assert not missing.exists()


def test_verify_reads_a_snapshot_without_holding_the_lock(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Check verify works from a relative data dir and does not wait for the object's
    lock (a long verify no longer holds up device checks in the same process)."""
    monkeypatch.chdir(tmp_path)
    sec = _filled(Path("rel dir"), 3)
    done: list[bool] = []
    with sec._lock:
        t = threading.Thread(target=lambda: done.append(sec.verify_audit().ok))
        t.start()
        t.join(5.0)
    assert done == [True]
    sec.close()
