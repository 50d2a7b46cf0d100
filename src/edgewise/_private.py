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
import tempfile
import threading
from pathlib import Path

__all__ = ["PRIVATE_UMASK", "create_private_once", "make_private", "replace_atomically",
           "restrict_umask", "sync_folder", "write_private"]

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
    its missing folders made 0700, through a temporary file synced and renamed into place
    (a reader never sees half a file, nor a power loss an empty one).

    >>> import pathlib, stat, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "models" / "m.pkl"
    >>> write_private(f, b"x")
    >>> oct(stat.S_IMODE(f.stat().st_mode)), oct(stat.S_IMODE(f.parent.stat().st_mode))
    ('0o600', '0o700')
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    replace_atomically(p, data)


def replace_atomically(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600,
                       exact: bool = False) -> None:
    """Make ``path`` hold ``data``, atomically and durably: a temporary file of its own
    beside it (a name no other writer, thread or process, uses; made with ``O_EXCL |
    O_NOFOLLOW``, so nothing planted there is written through), synced, renamed over
    ``path``, and the folder synced, so a reader sees the old file or the new one, never
    half of one, and a power loss keeps one of them. The folder must exist.

    ``mode`` is the new file's mode less the umask, as :func:`os.open` makes it (0600: private
    from the start; 0666: as a plain write makes it); with ``exact`` it is set as given,
    whatever the umask (a public key that must stay 0644 under the gateway's umask 077).

    >>> import pathlib, stat, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "signing_key.pub"
    >>> replace_atomically(f, b"old"); replace_atomically(f, b"new", mode=0o644, exact=True)
    >>> f.read_bytes(), oct(stat.S_IMODE(f.stat().st_mode)), len(list(f.parent.iterdir()))
    (b'new', '0o644', 1)
    """
    p = Path(path)
    tmp = write_beside(p, data, mode=mode, exact=exact)
    try:
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_folder(p.parent)


def write_beside(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600,
                 exact: bool = False) -> Path:
    """Write ``data`` whole and synced to a temporary file of its own beside ``path`` and
    return it, for the caller to rename over ``path`` (:func:`replace_atomically` does, one
    file; an export renames a set of them once all are written). Its name
    (``.<name>.<pid>.<thread>.<hex>.tmp``) no other writer, thread or process, uses; it is
    made with ``O_EXCL | O_NOFOLLOW``, so nothing planted there is written through, and it
    is removed again if the write fails. ``mode`` and ``exact`` as in
    :func:`replace_atomically`.

    >>> import pathlib, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "m.bin"
    >>> tmp = write_beside(f, b"x")
    >>> tmp.parent == f.parent, tmp.name.startswith(".m.bin."), tmp.read_bytes(), f.exists()
    (True, True, b'x', False)
    """
    p = Path(path)
    # the name cut to 150 characters: a file name of up to 255 (NAME_MAX) stays writable
    tmp = p.with_name(f".{p.name[:150]}.{os.getpid()}.{threading.get_ident()}."
                      f"{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if exact:
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())  # whole on disk before the rename makes it the file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def create_private_once(path: str | os.PathLike[str], data: bytes, *,
                        replace_without_links: bool = False) -> bool:
    """Make ``path`` a file of mode 0600 holding ``data`` unless a file is there already;
    return whether this call made it (``False``: another writer's, or an older, file is kept
    untouched, and the caller reads that one back).

    ``data`` goes to a temporary file of its own beside ``path`` (mode 0600 from the start),
    synced, then hard-linked to ``path``: :func:`os.link` fails if ``path`` exists, so a
    reader never sees half a file and, of several processes writing at once, exactly the
    first one's file is kept. The folder is then synced (where it can be), so the new name
    survives a power loss. The temporary file is removed whatever happens. The folder must
    exist.

    On a file system without hard links (:func:`os.link` fails otherwise than with
    :class:`FileExistsError`) that error is raised, unless ``replace_without_links``: then
    the file is put in place with :func:`os.replace` if there is still none, which is not
    exclusive (two writers at that very moment may both return ``True``, the last one's file
    kept; a caller that reads the file back after this uses whichever was kept).

    >>> import pathlib, stat, tempfile
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "client_id"
    >>> create_private_once(f, b"first\\n"), create_private_once(f, b"second\\n")
    (True, False)
    >>> f.read_bytes(), oct(stat.S_IMODE(f.stat().st_mode)), len(list(f.parent.iterdir()))
    (b'first\\n', '0o600', 1)
    """
    p = Path(path)
    fd, name = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")  # 0600
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)  # atomic and exclusive: the first link wins
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links
            if not replace_without_links:
                raise
            if p.exists():
                return False
            os.replace(tmp, p)
        sync_folder(p.parent)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def sync_folder(folder: str | os.PathLike[str]) -> None:
    """Sync ``folder``'s entries to disk where the platform lets a folder be opened and
    synced (a failure is ignored: the file itself is synced already)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
