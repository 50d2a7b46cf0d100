"""Label writes are audited inside the label file's write transaction (security hunt).

A label write committed ``labels.sqlite`` first and wrote its ``label.add`` entry after,
in a transaction of its own: another writer holding ``security.sqlite`` past the busy
timeout (a CLI in another process) left the label standing with no audit entry. The same
for a device's labels deleted (``label.delete_device``). Now the entry is written while
the label file's write lock is held, before it commits (lock order: ``labels.sqlite``,
then ``security.sqlite``, as the verdict route takes them), so an entry that cannot be
written rolls the label write back.

The busy timeout of the Security under test is cut to 100 ms, so a held lock fails the
audit at once instead of after 10 s.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.label.store import LabelStore
from edgewise.security import Security

BUSY_MS = 100


class Holder:
    """Another writer of ``security.sqlite`` (a CLI in another process), holding its write
    lock until released."""

    def __init__(self, data_dir: Path) -> None:
        self.db = sqlite3.connect(data_dir / "security.sqlite", isolation_level=None,
                                  timeout=0, check_same_thread=False)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self.db.execute("ROLLBACK")
        self.db.close()


@pytest.fixture
def parts(data_dir: Path) -> Iterator[tuple[LabelStore, Security]]:
    sec = Security(data_dir)
    sec._db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    labels = LabelStore(data_dir, security=sec)
    yield labels, sec
    labels.close()
    sec.close()


def _audited(sec: Security, action: str) -> list[str]:
    return [e.target for e in sec.audit_log(1000) if e.action == action]


def test_a_label_add_with_the_audit_log_held_writes_nothing(
        parts: tuple[LabelStore, Security], data_dir: Path) -> None:
    """Check a label added while another writer holds the audit log raises and leaves no
    label (it stood, unaudited), and is written and audited once the log is free."""
    labels, sec = parts
    holder = Holder(data_dir)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            labels.add("pump-1", 0, 10, "anomaly", who="ana")
    finally:
        holder.release()
    assert labels.history() == [], "a label stands with no audit entry"
    assert _audited(sec, "label.add") == []
    lab = labels.add("pump-1", 0, 10, "anomaly", who="ana")
    assert [x.id for x in labels.labels()] == [lab.id]
    assert _audited(sec, "label.add") == ["pump-1:0-10"]


def test_a_held_label_with_the_audit_log_held_writes_nothing(
        parts: tuple[LabelStore, Security], data_dir: Path) -> None:
    """Check labels added through ``hold()`` (the alert route's window label) roll back
    when their audit entry cannot be written."""
    labels, sec = parts
    holder = Holder(data_dir)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"), \
                labels.hold() as held:
            held.add("pump-1", 0, 10, "normal", who="ben", source="alert:a1")
    finally:
        holder.release()
    assert labels.history() == []
    with labels.hold() as held:
        held.add("pump-1", 0, 10, "normal", who="ben", source="alert:a1")
    assert [x.source for x in labels.labels()] == ["alert:a1"]
    assert _audited(sec, "label.add") == ["pump-1:0-10"]


def test_a_label_deletion_with_the_audit_log_held_deletes_nothing(
        parts: tuple[LabelStore, Security], data_dir: Path) -> None:
    """Check a device's labels are not deleted unaudited: with the audit log held, the
    deletion raises and keeps them (and does not count itself), then deletes and audits."""
    labels, sec = parts
    labels.add("pump-1", 0, 10, "anomaly", who="ana")
    holder = Holder(data_dir)
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            labels.delete_device("pump-1", who="admin")
    finally:
        holder.release()
    assert len(labels.labels("pump-1")) == 1, "labels deleted with no audit entry"
    assert labels.deletions().of("pump-1") == 0
    assert _audited(sec, "label.delete_device") == []
    assert labels.delete_device("pump-1", who="admin") == 1
    assert labels.labels("pump-1") == []
    assert _audited(sec, "label.delete_device") == ["pump-1"]
