"""Keep the gateway's data files readable by their owner only (mode 0600).

The data directory is made 0700 only when the gateway creates it; one made beforehand
(``mkdir -p``, a package) may be 0755, and a ``--store duckdb:///elsewhere`` file lies
in any directory. So every file holding the fleet's data is made 0600 itself, whatever
the directory's mode: at creation by the code that opens it, and again at every gateway
start (files made by an older version), and ``edgewise serve`` runs with umask 077 so
what it creates later (write-ahead logs, saved detector state) is private too.

>>> import os, pathlib, stat, tempfile
>>> f = pathlib.Path(tempfile.mkdtemp()) / "x.sqlite"
>>> _ = f.write_bytes(b"")
>>> os.chmod(f, 0o644)
>>> make_private(f, f.with_name("absent-wal"))
>>> oct(stat.S_IMODE(f.stat().st_mode))
'0o600'
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "make_private", "restrict_umask", "write_private"]

#: The umask of a gateway process: no access for group and others.
PRIVATE_UMASK = 0o077

log = logging.getLogger(__name__)


def make_private(*paths: str | os.PathLike[str]) -> None:
    """Make each of ``paths`` that exists a regular file of mode 0600 (missing ones and
    ones this user may not change are left as they are, the latter with a warning)."""
    for path in paths:
        p = Path(path)
        try:
            if p.is_file() and p.stat().st_mode & 0o077:
                os.chmod(p, 0o600)
        except OSError as exc:
            log.warning("could not make %s private (mode 0600): %s", p, exc)


def restrict_umask() -> int:
    """Add :data:`PRIVATE_UMASK` to this process's umask (files it creates from now on
    are private); return the umask it had."""
    old = os.umask(PRIVATE_UMASK)
    os.umask(old | PRIVATE_UMASK)
    return old


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` as a file of mode 0600 (created so, not changed after),
    its missing folders made 0700, through a temporary file renamed into place (a reader
    never sees half a file).

    >>> import pathlib, stat, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "models" / "m.pkl"
    >>> write_private(f, b"x")
    >>> oct(stat.S_IMODE(f.stat().st_mode)), oct(stat.S_IMODE(f.parent.stat().st_mode))
    ('0o600', '0o700')
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
