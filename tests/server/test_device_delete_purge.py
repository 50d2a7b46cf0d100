"""DELETE /v1/devices/{id} leaves none of the device's readings in the store's files."""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

from tests.server.conftest import Env


def _values(seed: int, n: int = 200) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(-1e6, 1e6) for _ in range(n)]


def _found(path: Path, values: list[float]) -> int:
    data = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + ".wal"))
                    if p.exists())
    return sum(struct.pack("<d", v) in data for v in values)


def test_rest_delete_purges_the_device_readings_from_the_duckdb_file(env: Env) -> None:
    """Check that after DELETE /v1/devices/pump-1 none of its values is left in the
    DuckDB file or its log, while pump-2's readings are all there."""
    # Prepare
    mate, mate_secret = env.security.add_device("pump-2")
    t0 = int(time.time()) - 600
    gone, kept = _values(1), _values(2)
    for device, secret, values in ((env.device, env.secret, gone), (mate, mate_secret, kept)):
        batch = [{"ts": t0 + i, "seq": i + 1, "metrics": {"temp_c": v}}
                 for i, v in enumerate(values)]
        assert env.send(batch, device=device, secret=secret).status_code == 200
    env.store.checkpoint()
    path = Path(env.store.path)  # type: ignore[attr-defined]
    assert _found(path, gone) == len(gone)  # the scan sees stored values
    # Execute
    resp = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
    # Assert
    assert resp.status_code == 200, resp.text
    assert resp.json()["rows_deleted"] >= len(gone)
    assert _found(path, gone) == 0
    assert [v for _, _, v in env.store.query(mate)] == kept
