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

__all__ = ["write_transaction"]


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
