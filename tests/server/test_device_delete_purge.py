"""DELETE /v1/devices/{id} leaves none of the device's readings in the store's files."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import random_values, values_on_disk
from tests.server.conftest import Env


def test_rest_delete_purges_the_device_readings_from_the_duckdb_file(env: Env) -> None:
    """Check that after DELETE /v1/devices/pump-1 none of its values is left in the
    DuckDB file or its log, while pump-2's readings are all there."""
    # Prepare
    mate, mate_secret = env.security.add_device("pump-2")
    t0 = int(time.time()) - 600
    gone, kept = random_values(1), random_values(2)
    for device, secret, values in ((env.device, env.secret, gone), (mate, mate_secret, kept)):
        batch = [{"ts": t0 + i, "seq": i + 1, "metrics": {"temp_c": v}}
                 for i, v in enumerate(values)]
        assert env.send(batch, device=device, secret=secret).status_code == 200
    env.store.checkpoint()
    path = Path(env.store.path)  # type: ignore[attr-defined]
    assert values_on_disk(path, gone) == len(gone)  # the scan sees stored values
    # Execute
    resp = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
    # Assert
    assert resp.status_code == 200, resp.text
    assert resp.json()["rows_deleted"] >= len(gone)
    assert values_on_disk(path, gone) == 0
    assert [v for _, _, v in env.store.query(mate)] == kept
