"""The API over the PostgreSQL store: ingest, readings, alerts, delete, the same as DuckDB."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.store.base import Alert
from tests.server.conftest import Env, build_postgres_env, problem

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_env(data_dir: Path, postgres_url: str) -> Iterator[Env]:
    """An app on a PostgreSQL schema of its own, dropped afterwards."""
    yield from build_postgres_env(data_dir, postgres_url, "ew_srv_")


def test_api_round_trip_on_postgres(pg_env: Env) -> None:
    """Check ingest with a bad record, downsampled readings, ack/label and delete on PostgreSQL."""
    env = pg_env
    t0 = (int(time.time()) // 60) * 60 - 600
    batch = [{"ts": t0 + i, "metrics": {"a": float(i)}, "seq": i + 1} for i in range(120)]
    batch.append({"ts": "never", "metrics": {"a": 1.0}, "seq": 121})
    body = env.send(batch).json()
    # seq 121 is rejected but handled (reported back), so the ack covers it
    assert (body["accepted"], body["ack_seq"]) == (120, 121)
    assert [(r["field"], r["value"]) for r in body["rejected"]] == [("ts", "never")]
    got = env.client.get(f"/v1/devices/{env.device}/readings",
                         params={"start": t0, "end": t0 + 120, "step": "1m"},
                         headers=env.auth("viewer")).json()
    assert got["series"]["a"] == {"t": [t0, t0 + 60], "v": [29.5, 89.5]}
    problem(env.send(b"{oops"), 422)
    assert env.store.count_readings() == 120

    alert = env.store.add_alert(Alert(env.device, t0 * 10**9, (t0 + 5) * 10**9, 0.99))
    env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                    json={"label": "true_alarm", "note": "bearing"})
    stored = env.store.get_alert(alert.id)
    assert (stored.status, stored.label, stored.note) == ("acknowledged", "true_alarm", "bearing")

    resp = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
    assert resp.json()["rows_deleted"] >= 120
    assert env.store.query(env.device) == []
    assert env.store.list_alerts(device_id=env.device) == []
