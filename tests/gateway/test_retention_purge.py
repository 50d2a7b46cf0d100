"""Retention purges the readings it deletes from the disk, at most once a day."""

from __future__ import annotations

import dataclasses
import random
import struct
import time
from pathlib import Path

from edgewise.config import Settings
from edgewise.gateway.runtime import Gateway
from edgewise.store import open_store
from edgewise.telemetry import Reading

DAY = 86_400 * 10**9


def _found(path: Path, values: list[float]) -> int:
    data = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + ".wal"))
                    if p.exists())
    return sum(struct.pack("<d", v) in data for v in values)


def test_apply_retention_purges_expired_readings_once_a_day(tmp_path: Path) -> None:
    """Check the first retention pass that deletes readings purges their bytes from the
    DuckDB file, and a pass within a day of that purge does not rewrite the file again."""
    # Prepare: a reading every 2.4 h over 30 days; those over 10 days old expire
    path = tmp_path / "edgewise.duckdb"
    now = time.time_ns() - 1
    rng = random.Random(11)
    values = [rng.uniform(-1e6, 1e6) for _ in range(300)]
    store = open_store(f"duckdb:///{path}")
    store.append([Reading("pump-1", "temp", now - k * DAY // 10, v)
                  for k, v in enumerate(values)])
    store.checkpoint()
    store.close()
    old = values[101:]
    assert _found(path, old) == len(old)
    gw = Gateway(Settings.load(env={}, data_dir=tmp_path))
    try:
        gw.settings = dataclasses.replace(gw.settings, retention_days=10)
        # Execute
        assert gw.apply_retention(now) == len(old)
        # Assert
        assert _found(path, old) == 0
        assert [v for _, _, v in gw.store.query("pump-1")] == values[:101][::-1]
        inode = path.stat().st_ino  # a purge replaces the file
        assert gw.apply_retention(now + DAY // 2) == 5
        assert path.stat().st_ino == inode, "purged again within a day"
        assert _found(path, values[96:101]) > 0  # deleted, not purged yet
        assert gw.apply_retention(now + DAY) == 5
        assert path.stat().st_ino != inode, "not purged after a day"
        assert _found(path, values[91:]) == 0
    finally:
        gw.pipeline.close()
        gw.store.close()
        gw.security.close()
        gw.registry.close()
