"""Requests about one device read that device's summary alone (scale hunt, session 41).

Each of them (readings, the CSV export at every slice, quality, RUL, an unknown id's
404) read every device's summary (``store.devices()``) once or more: on PostgreSQL with
8,000 devices one ``/readings`` took 197 ms and one ``/quality`` 473 ms. They ask
``store.device(id)`` now; only the fleet's listings read ``devices()``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import edgewise.server.routes.rul as rul
from tests.server.conftest import Env


def test_per_device_requests_do_not_list_the_fleet(env: Env,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that a device's readings (JSON and CSV), quality report, RUL answer and an
    unknown device's 404 ask ``store.devices()`` nothing (before: each did, the CSV
    export once per slice), and answer as before."""
    now = int(time.time())
    sent = env.send([{"ts": now - 120 + i, "seq": i + 1, "metrics": {"temp": 20.0 + i}}
                     for i in range(60)])
    assert sent.status_code == 200, sent.text
    env.pipeline.flush()
    listed: list[int] = []
    real = env.store.devices

    def devices() -> Any:
        listed.append(1)
        return real()

    monkeypatch.setattr(env.store, "devices", devices)
    viewer = env.auth("viewer")
    dev = env.device
    start = f"{now - 600}"
    r = env.client.get(f"/v1/devices/{dev}/readings", params={"start": start}, headers=viewer)
    assert r.status_code == 200 and r.json()["points"] == 60, r.text
    r = env.client.get(f"/v1/devices/{dev}/readings.csv", params={"start": start},
                       headers=viewer)
    assert r.status_code == 200 and len(r.text.strip().splitlines()) == 61, r.text[:300]
    r = env.client.get(f"/v1/devices/{dev}/readings", params={"metric": "flow"},
                       headers=viewer)
    assert r.status_code == 404 and "temp" in r.text, r.text  # lists the metrics it has
    r = env.client.get(f"/v1/devices/{dev}/quality", params={"start": start}, headers=viewer)
    assert r.status_code == 200, r.text
    r = env.client.get("/v1/devices/nobody/readings", headers=viewer)
    assert r.status_code == 404, r.text
    answer = rul._score(env.store, [Path("never-loaded.joblib")], "nobody")
    assert answer["reason"] == "no_history", answer
    assert listed == []
    r = env.client.get("/v1/devices", headers=viewer)  # the fleet's listing still does
    assert r.status_code == 200 and listed, r.text
