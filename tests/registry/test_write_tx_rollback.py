"""Registry._write_tx after SQLite rolled the transaction back itself (as it does on a full
disk or an I/O error): the block's own error is raised, not "cannot rollback - no transaction
is active" from a second ROLLBACK, and the registry goes on working."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edgewise.registry import Registry

_ROW = ("m", "1.0.0", "pickle", "0" * 64, 1, "t", "{}", 1, 1)


def _insert(reg: Registry, verb: str = "INSERT") -> None:
    reg._db.execute(f"{verb} INTO versions (name, version, format, sha256, size, trained_on, "
                    "metrics, created_ns, seq) VALUES (?,?,?,?,?,?,?,?,?)", _ROW)


def test_constraint_error_that_rolled_back_is_raised_as_itself(tmp_path: Path) -> None:
    """Check a constraint error with ON CONFLICT ROLLBACK (SQLite ends the transaction
    before Python sees the error) comes out of the block unchanged, and nothing the block
    wrote before it is kept."""
    reg = Registry(tmp_path)
    with reg._write_tx():
        _insert(reg)
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE constraint failed"), \
            reg._write_tx():
        reg._db.execute("UPDATE versions SET trained_on = 'changed'")
        _insert(reg, "INSERT OR ROLLBACK")  # the same key: SQLite rolls back, then raises
    assert not reg._db.in_transaction
    assert reg._db.execute("SELECT trained_on FROM versions").fetchall() == [("t",)]
    with reg._write_tx():  # the lock and the connection are free for the next write
        reg._db.execute("DELETE FROM versions")
    assert reg._db.execute("SELECT COUNT(*) FROM versions").fetchone() == (0,)
    reg._db.close()


def test_block_error_after_sqlite_rolled_back_is_raised_as_itself(tmp_path: Path) -> None:
    """Check an error raised by the block after the transaction already ended is the one the
    caller sees, while an error in a transaction still open rolls it back."""
    reg = Registry(tmp_path)
    with pytest.raises(ValueError, match="the block's own error"), reg._write_tx():
        reg._db.execute("ROLLBACK")  # what SQLite does by itself on SQLITE_FULL or IOERR
        raise ValueError("the block's own error")
    with pytest.raises(KeyError, match="open"), reg._write_tx():
        _insert(reg)
        raise KeyError("open")
    assert not reg._db.in_transaction
    assert reg._db.execute("SELECT COUNT(*) FROM versions").fetchone() == (0,)
    reg._db.close()
