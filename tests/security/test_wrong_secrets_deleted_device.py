"""Wrong secrets sent in a deleted device's name (security hunt, /tmp/hunt-security e8):
counted in memory and written about a second later by id alone, they were added to a
device registered again under the id meanwhile (by this process, or by ``edgewise device``
in another), whose ``auth_failures`` ("since it was registered") started above 0. Now they
are dropped at the deletion and written only to the registration they were counted for.
A flush also no longer waits (holding every authentication of the process) for another
writer of the file: its counts wait for the next flush instead of being dropped.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgewise.errors import AuthError
from edgewise.security import Security


def _guess(sec: Security, device_id: str, n: int) -> None:
    for _ in range(n):
        with pytest.raises(AuthError):
            sec.authenticate_device(device_id, "guess", source="10.0.0.9")


def _failures(sec: Security, device_id: str) -> int:
    (n,) = [d.failures for d in sec.list_devices() if d.id == device_id]
    return n


def test_a_device_added_again_here_starts_with_no_wrong_secrets(data_dir: Path) -> None:
    sec = Security(data_dir)
    try:
        sec.add_device("pump-1")
        _guess(sec, "pump-1", 5)
        sec.delete_device("pump-1")
        sec.add_device("pump-1")  # a new device under the id, within the second
        sec.flush_wrong_secrets()  # what the timer does a second later
        assert _failures(sec, "pump-1") == 0
    finally:
        sec.close()


def test_a_device_added_again_by_another_process_starts_with_no_wrong_secrets(
        data_dir: Path) -> None:
    gateway = Security(data_dir)
    cli = Security(data_dir)  # 'edgewise device delete' and 'add', another process
    try:
        gateway.add_device("pump-1")
        _guess(gateway, "pump-1", 4)
        cli.delete_device("pump-1")
        cli.add_device("pump-1")
        gateway.flush_wrong_secrets()
        assert _failures(cli, "pump-1") == 0
    finally:
        gateway.close()
        cli.close()


def test_wrong_secrets_of_a_device_kept_are_counted_also_across_a_new_secret(
        data_dir: Path) -> None:
    """The device's own count still grows, and stays when its secret is replaced (its
    registration is the same)."""
    sec = Security(data_dir)
    try:
        sec.add_device("pump-1")
        _guess(sec, "pump-1", 3)
        sec.flush_wrong_secrets()
        _guess(sec, "pump-1", 2)
        sec.rotate_device_secret("pump-1")
        assert _failures(sec, "pump-1") == 5
    finally:
        sec.close()


def test_a_flush_with_the_file_held_keeps_its_counts_for_the_next(data_dir: Path) -> None:
    sec = Security(data_dir)
    holder = sqlite3.connect(data_dir / "security.sqlite", isolation_level=None, timeout=0)
    try:
        sec.add_device("pump-1")
        sec._db.execute("PRAGMA busy_timeout=100")  # the old flush: 100 ms, not 10 s
        _guess(sec, "pump-1", 3)
        holder.execute("BEGIN IMMEDIATE")  # another writer (a CLI) holds the file
        sec.flush_wrong_secrets()  # at once: the counts wait
        holder.execute("ROLLBACK")
        assert _failures(sec, "pump-1") == 3
        assert int(sec._db.execute("PRAGMA busy_timeout").fetchone()[0]) == 100
    finally:
        holder.close()
        sec.close()
