"""Fixtures of the registry tests."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest


def file_mode(p: Path) -> int:
    """The permission bits of ``p``."""
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The umask of a shell that runs the CLI or restores a backup (not the gateway's 077)."""
    old = os.umask(0o022)
    yield
    os.umask(old)
