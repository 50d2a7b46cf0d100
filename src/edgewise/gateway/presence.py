"""Whether a gateway is running on a data directory.

A running gateway keeps what it knows of each device in memory: the seq watermark it
acknowledges, its detectors' state (saved to ``detectors.pickle`` when it stops), the
open alert. A command that deletes a device's data behind its back (``edgewise device
delete`` from a shell) would leave that memory stale: the gateway would go on
acknowledging the old watermark to a device registered again under the same id, which
then forgets messages that were never stored. With the embedded DuckDB store the file
lock refuses the command; with PostgreSQL nothing did.

So a gateway holds a shared ``flock`` on ``<data-dir>/gateway.lock`` from start to stop
(the system drops it when the process dies, ``kill -9`` included), and such a command
asks :func:`gateway_running` first. Shared, so that two gateways on one data dir (a
restart overlapping the old process) do not shut each other out; the question takes the
lock exclusively without waiting, which any holder refuses.

>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> gateway_running(d)
False
>>> held = GatewayPresence(d)
>>> gateway_running(d)
True
>>> held.release(); gateway_running(d)
False
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

__all__ = ["LOCK_NAME", "GatewayPresence", "gateway_running"]

#: the file in the data dir that a running gateway holds a shared lock on
LOCK_NAME = "gateway.lock"


def _open(data_dir: Path) -> int:
    return os.open(Path(data_dir) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)


def _open_existing(data_dir: Path) -> int:
    """The existing lock file, opened to be asked (never made); read-only where it cannot
    be written (a data dir on a read-only file system, a mounted snapshot: opening it for
    writing was an ``OSError`` traceback in ``edgewise device delete``). ``flock`` takes a
    read-only descriptor too."""
    path = Path(data_dir) / LOCK_NAME
    try:
        return os.open(path, os.O_RDWR)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        return os.open(path, os.O_RDONLY)


class GatewayPresence:
    """A shared lock on ``<data_dir>/gateway.lock``, held until :meth:`release` (or exit)."""

    def __init__(self, data_dir: Path) -> None:
        self._fd: int | None = _open(data_dir)
        try:  # waits only while a gateway_running() check holds it (microseconds)
            fcntl.flock(self._fd, fcntl.LOCK_SH)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Drop the lock; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops its flock


def gateway_running(data_dir: Path) -> bool:
    """Whether a gateway (this process's or another's) holds ``data_dir``'s lock now."""
    if not (Path(data_dir) / LOCK_NAME).exists():
        return False
    try:
        fd = _open_existing(data_dir)
    except FileNotFoundError:  # removed since (by hand): no gateway holds it
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
