"""Audit-log bug hunt (s45): forwarding past an entry damaged in the file."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edgewise.security import Security
from edgewise.security.audit_syslog import format_message, parse_forwarded
from edgewise.security.credentials import AuditEntry
from tests.conftest import wait_until
from tests.security.test_audit_chain import _sql
from tests.security.test_audit_syslog import _verify, forwarding, receiver

#: a column of entry 2 changed in security.sqlite to a value no Edgewise writes
DAMAGE = {
    "ts_ns_text": "UPDATE audit SET ts_ns = 'later' WHERE id = 2",
    "ts_ns_huge": "UPDATE audit SET ts_ns = 1e30 WHERE id = 2",
    "action_blob": "UPDATE audit SET action = CAST('device.add' AS BLOB) WHERE id = 2",
    "actor_blob": "UPDATE audit SET actor = CAST('cli' AS BLOB) WHERE id = 2",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_an_entry_damaged_in_the_file_does_not_stop_forwarding(
        data_dir: Path, tmp_path: Path, damage: str) -> None:
    """Check one entry whose column was changed in the file to what no Edgewise writes (a
    text or out-of-range ts_ns, a blob action) is forwarded as the file has it, once, and
    every later entry after it, and that verify --against names the edited entry. The
    sending thread used to raise on it (_timestamp, _printusascii) on every try: entry 1
    was sent again after each backoff, forever, and no entry from 2 on ever left the box,
    also those audited later."""
    sec = Security(data_dir)
    for i in range(3):
        sec.audit("cli", "device.add", f"pump-{i}")
    _sql(data_dir, DAMAGE[damage])
    with receiver("udp") as r, forwarding(sec, r.url) as fwd:
        sec.audit("cli", "device.delete", "pump-0")
        assert wait_until(lambda: fwd.sent_id >= 4, 10), (fwd.sent_id, r.messages[:3])
        assert wait_until(lambda: len(r.messages) >= 4, 5)
        time.sleep(0.5)  # nothing more comes: no entry is sent again
    ids = [json.loads(m[m.index("{"):])["id"] for m in r.messages]
    assert ids == [1, 2, 3, 4], ids
    assert all(parse_forwarded(m) is not None for m in r.messages), r.messages
    code, out = _verify(data_dir, r.write(tmp_path / "coll.log"))
    assert code == 1 and "entry 2" in out.lower(), out
    sec.close()


def test_format_message_takes_any_row_the_file_can_hold() -> None:
    """Check format_message gives one ASCII line, its TIMESTAMP the NILVALUE ``-`` where the
    entry's ts_ns is no time (RFC 5424 6.2.3), for values SQLite may hand back for a column
    someone changed."""
    for ts_ns, action in (("later", "x"), (10**30, "x"), (-(10**30), "x"), (1.5e18, b"x"),
                          (None, None)):
        e = AuditEntry(2, ts_ns, b"cli", action, b"t", {"k": b"v"}, "0" * 64,  # type: ignore[arg-type]
                       "f" * 64)
        line = format_message(e, "0123456789abcdef", hostname="gw").decode("ascii")
        assert "\n" not in line and parse_forwarded(line) is not None, line
        if not isinstance(ts_ns, float):
            assert line.split(" ")[1] == "-", line


def test_a_hash_removed_before_later_entries_does_not_stop_forwarding(
        data_dir: Path, tmp_path: Path) -> None:
    """Check an entry whose hash was removed in the file while later entries keep theirs
    (no Edgewise leaves that: an older one's entries without a hash are at the end, and
    the next entry chains them) is forwarded as the file has it, and every entry after it,
    also those audited later. Forwarding used to wait before it for a chaining that never
    comes: nothing from entry 2 on left the box, silently."""
    sec = Security(data_dir)
    for i in range(3):
        sec.audit("cli", "device.add", f"pump-{i}")
    _sql(data_dir, "UPDATE audit SET hash = NULL WHERE id = 2")
    with receiver("udp") as r, forwarding(sec, r.url) as fwd:
        sec.audit("cli", "device.delete", "pump-0")
        assert wait_until(lambda: fwd.sent_id >= 4, 10), (fwd.sent_id, r.messages[:3])
        assert wait_until(lambda: len(r.messages) >= 4, 5)
        time.sleep(0.5)
    ids = [json.loads(m[m.index("{"):])["id"] for m in r.messages]
    assert ids == [1, 2, 3, 4], ids
    code, out = _verify(data_dir, r.write(tmp_path / "coll.log"))
    assert code == 1 and "entry 2" in out.lower(), out
    sec.close()


def test_entries_an_older_version_wrote_at_the_end_still_wait_to_be_chained(
        data_dir: Path) -> None:
    """Check entries without a hash at the end of the log (an older Edgewise writing
    beside this one) are still not sent until the next entry chains them, then sent
    with their hashes."""
    sec = Security(data_dir)
    sec.audit("cli", "device.add", "pump-1")
    _sql(data_dir, "INSERT INTO audit (ts_ns, actor, action, target, detail) "
                   "VALUES (1, 'cli', 'device.add', 'old-1', '{}')")
    with receiver("udp") as r, forwarding(sec, r.url) as fwd:
        assert wait_until(lambda: fwd.sent_id >= 1, 10)
        time.sleep(0.5)
        assert fwd.sent_id == 1, r.messages
        sec.audit("cli", "device.add", "pump-2")
        assert wait_until(lambda: len(r.messages) >= 4, 10), r.messages
    bodies = [json.loads(m[m.index("{"):]) for m in r.messages]
    assert [b["id"] for b in bodies] == [1, 2, 3, 4]
    assert all(len(b["hash"]) == 64 for b in bodies), bodies
    sec.close()


def test_an_expected_head_of_a_log_emptied_since_says_it_is_empty(data_dir: Path) -> None:
    """Check verify with a recorded head, after every entry was deleted (sqlite_sequence
    too), says the log is empty: it said "the newest entry is None"."""
    sec = Security(data_dir)
    for i in range(3):
        sec.audit("cli", "device.add", f"pump-{i}")
    head = sec.verify_audit().head
    _sql(data_dir, "DELETE FROM audit")
    _sql(data_dir, "DELETE FROM sqlite_sequence")
    r = sec.verify_audit(head)
    assert (r.ok, r.problem, r.bad_id) == (False, "deleted", 3), r
    assert "None" not in r.reason and "the log is empty" in r.reason, r.reason
    sec.close()


@pytest.mark.parametrize("forged_id", [0, -7])
def test_an_entry_inserted_below_id_1_is_the_one_named(data_dir: Path,
                                                      forged_id: int) -> None:
    """Check a row inserted with an id the log never gives (below 1, AUTOINCREMENT starts
    at 1), chained from the genesis value with a right hash, is reported by its own id:
    verify named entry 1, which is untouched."""
    from edgewise.security import AUDIT_GENESIS, audit_hash

    sec = Security(data_dir)
    for i in range(3):
        sec.audit("cli", "device.add", f"pump-{i}")
    h = audit_hash(AUDIT_GENESIS, forged_id, 1, "cli", "token.create", "ffffffff", {})
    _sql(data_dir, "INSERT INTO audit VALUES (?, 1, 'cli', 'token.create', 'ffffffff', "
                   "'{}', ?, ?)", (forged_id, AUDIT_GENESIS, h))
    r = sec.verify_audit()
    assert (r.ok, r.bad_id, r.problem, r.checked) == (False, forged_id, "inserted", 1), r
    assert f"Entry {forged_id} " in r.reason, r.reason
    sec.close()


#: a column of entry 2 given bytes that are not UTF-8, as TEXT or as a BLOB (Edgewise
#: writes neither: a tamperer's edit, or a damaged file)
NOT_UTF8 = {
    "actor_text": "UPDATE audit SET actor = CAST(x'ff41' AS TEXT) WHERE id = 2",
    "detail_text": "UPDATE audit SET detail = CAST(x'7b7dff' AS TEXT) WHERE id = 2",
    "hash_text": "UPDATE audit SET hash = CAST(x'ff' AS TEXT) WHERE id = 2",
    "target_blob": "UPDATE audit SET target = x'ff41' WHERE id = 2",
}


@pytest.mark.parametrize("damage", sorted(NOT_UTF8))
def test_bytes_that_are_not_utf8_are_an_edit_verify_names(data_dir: Path,
                                                         damage: str) -> None:
    """Check verify reports an entry whose text is not UTF-8 as broken at that entry, and
    'audit verify' says so (exit 1): verify raised SQLite's "Could not decode to UTF-8",
    and the command said the database "cannot be used" (exit 2), naming no entry; the log
    still lists, the entry shown with U+FFFD for the bytes."""
    sec = Security(data_dir)
    for i in range(3):
        sec.audit("cli", "device.add", f"pump-{i}")
    _sql(data_dir, NOT_UTF8[damage])
    r = sec.verify_audit()
    assert (r.ok, r.bad_id) == (False, 2), r
    assert r.reason.isprintable(), r.reason
    assert [e.id for e in sec.audit_log()] == [3, 2, 1]
    assert "device.add" in sec.newest_audit("device.add", ["pump-0", "pump-2"])["pump-2"].action
    sec.close()
    code, out = _verify(data_dir)
    assert code == 1 and "BROKEN at entry 2" in out, out


def test_bytes_that_are_not_utf8_do_not_stop_forwarding(data_dir: Path,
                                                       tmp_path: Path) -> None:
    """Check an entry whose actor is not UTF-8 in the file is forwarded with the entries
    after it, and verify --against names it: reading it raised, so the forwarder logged
    "could not read the audit log" every poll and sent nothing from there on."""
    sec = Security(data_dir)
    for i in range(3):
        sec.audit("cli", "device.add", f"pump-{i}")
    _sql(data_dir, NOT_UTF8["actor_text"])
    with receiver("udp") as r, forwarding(sec, r.url) as fwd:
        sec.audit("cli", "device.delete", "pump-0")
        assert wait_until(lambda: fwd.sent_id >= 4, 10), (fwd.sent_id, r.messages[:3])
        assert wait_until(lambda: len(r.messages) >= 4, 5)
    assert sorted({json.loads(m[m.index("{"):])["id"] for m in r.messages}) == [1, 2, 3, 4]
    code, out = _verify(data_dir, r.write(tmp_path / "coll.log"))
    assert code == 1 and "entry 2" in out.lower(), out
    sec.close()
