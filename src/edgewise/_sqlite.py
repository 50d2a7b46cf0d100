"""One SQLite write transaction, as the gateway's, the registry's and the agent's files use it.

>>> import sqlite3
>>> db = sqlite3.connect(":memory:", isolation_level=None)
>>> _ = db.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
>>> with write_transaction(db):
...     _ = db.execute("INSERT INTO t VALUES (1)")
>>> try:
...     with write_transaction(db):
...         _ = db.execute("INSERT INTO t VALUES (2)")
...         raise ValueError("changed my mind")
... except ValueError:
...     pass
>>> db.execute("SELECT x FROM t").fetchall()
[(1,)]
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = ["FileBusyError", "is_busy", "write_transaction"]


@contextlib.contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` on ``db`` (its file's write lock, taken at once, so what the block
    reads no other process changes before it commits), committed when the block exits
    without an exception (also by ``return``), else rolled back, unless SQLite already did
    (it does on a full disk or an I/O error), and the block's own exception raised again,
    never one of the rollback's. ``db`` must be in autocommit mode (``isolation_level=None``);
    the caller holds whatever thread lock guards it."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the first error is the one to tell
                db.execute("ROLLBACK")
        raise


class FileBusyError(sqlite3.OperationalError):
    """Another connection (another process) held an SQLite file's write lock past the busy
    timeout, so a write could not begin and nothing of it was done. ``path``: the file.

    >>> FileBusyError("held", path=Path("labels.sqlite")).path.name
    'labels.sqlite'
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(message)
        self.path = path


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether ``exc`` says another connection holds the database (SQLITE_BUSY/LOCKED).

    >>> is_busy(sqlite3.OperationalError("database is locked")), is_busy(
    ...     sqlite3.OperationalError("disk I/O error"))
    (True, False)
    """
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or any(
        word in str(exc).lower() for word in ("database is locked", "database is busy"))
