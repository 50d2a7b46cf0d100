"""A device whose old readings retention deleted is refused a RUL, never scored as young.

A store numbers a device's stored rows 1..n (``device_frame``): after retention
(``EDGEWISE_RETENTION_DAYS``, ``Store.delete_before``) the surviving tail starts again at
"cycle 1", and the model, which reads a unit's age and whole-history trends from its rows,
scored it as a young unit (FD001 test engines kept to their last 60 readings: RMSE 24.3
against 18.1 from their whole histories, none refused). Both the route and ``edgewise
predict rul`` from a store now refuse it (``history_trimmed``), naming the cut.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgewise.server.routes.rul import forget_device
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.in_process import edgewise_here as edgewise  # in this process
from tests.server.conftest import Env
from tests.server.test_rul_api import SENSORS, _small_model, _trained, _unit


def _history(env: Env, n: int, device: str | None = None, secret: str | None = None) -> int:
    """Send ``n`` readings of each sensor, one per second ending now; the first time (s)."""
    x = _unit(np.random.default_rng(1), 120)[:n]
    t0 = int(time.time()) - n
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {s: float(x[i, j]) for j, s in enumerate(SENSORS)}} for i in range(n)]
    assert env.send(batch, device=device, secret=secret).status_code == 200
    return t0


def _rul(env: Env, device: str) -> dict:
    r = env.client.get(f"/v1/devices/{device}/rul", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    return r.json()


def test_a_history_retention_trimmed_is_refused_until_the_device_is_deleted(
        any_env: Env) -> None:
    """Check the route scores a whole history, refuses it (``history_trimmed``, naming the
    cut, retention and the need for the whole history) once retention took its first
    readings, still scores a device retention took nothing of, and scores the device
    again once it was deleted and registered anew."""
    env = any_env
    _small_model(env)
    admin = env.auth("admin")
    t0 = _history(env, 80)
    assert _rul(env, env.device)["rul"] is not None  # whole: scored
    sec = env.client.post("/v1/devices", json={"name": "pump-2"}, headers=admin).json()["secret"]
    _history(env, 80, device="pump-2", secret=sec)

    cut = (t0 + 20) * 10**9
    assert env.store.delete_before(cut, device_id=env.device) == 20 * len(SENSORS)
    forget_device(env.device)  # the answer above is cached for a few seconds
    body = _rul(env, env.device)
    assert (body["rul"], body["reason"]) == (None, "history_trimmed"), body
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 20))
    assert f"readings before {when} were deleted by retention" in body["detail"], body
    assert "whole history" in body["detail"] and body["model"] == "rul-v1.ewm", body
    assert _rul(env, "pump-2")["rul"] is not None  # nothing of it deleted

    assert env.client.delete(f"/v1/devices/{env.device}", headers=admin).status_code == 200
    made = env.client.post("/v1/devices", json={"name": env.device}, headers=admin)
    assert made.status_code == 201, made.text
    _history(env, 60, secret=made.json()["secret"])
    body = _rul(env, env.device)
    assert body["rul"] is not None and body["rows"] == 60, body


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def cli_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty store's URL on each backend (a PostgreSQL schema of its own, dropped after)."""
    if request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'edgewise.duckdb'}"
        return
    import psycopg

    base = request.getfixturevalue("postgres_url")
    schema = f"ew_rul_trimmed_{uuid.uuid4().hex[:12]}"
    yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_predict_rul_from_a_trimmed_store_is_one_clear_error(
        cli_store: str, tmp_path: Path) -> None:
    """Check ``edgewise predict rul --data <store>`` scores a whole history, skips a device
    retention trimmed (naming why) beside it, and is one ``error:`` line when that device
    is all it was asked for."""
    path = tmp_path / "rul-v1.ewm"
    _trained(np.random.default_rng(0), 12, window=10, n_estimators=40, learning_rate=0.1,
             cap=60.0, random_state=0).save(path)
    x = _unit(np.random.default_rng(1), 120)[:80]
    t0 = 1_700_000_000 * 10**9
    store = open_store(cli_store)
    try:
        for device in ("whole-1", "kept-1"):
            store.append([Reading(device, s, t0 + i * 10**9, float(x[i, j]))
                          for i in range(80) for j, s in enumerate(SENSORS)])
        assert store.delete_before(t0 + 20 * 10**9, device_id="kept-1") == 20 * len(SENSORS)
    finally:
        store.close()

    done = edgewise("predict", "rul", "--model", str(path), "--data", cli_store, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [p["unit"] for p in out["predictions"]] == ["whole-1"], out
    (skip,) = out["skipped"]
    assert skip["device"] == "kept-1" and skip["reason"].startswith(
        "history trimmed: its readings before 2023-11-14T22:13:40Z were deleted by "
        "retention"), skip
    assert "whole history" in done.stderr, done.stderr

    done = edgewise("predict", "rul", "--model", str(path), "--data", cli_store,
                    "--devices", "kept-1")
    assert done.returncode == 2, done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    said = "kept-1 (history trimmed: its readings before 2023-11-14T22:13:40Z were deleted"
    assert len(errors) == 1 and said in errors[0], done.stderr
