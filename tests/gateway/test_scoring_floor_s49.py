"""A device's scoring floor (:meth:`Pipeline._scoring_floor`) is its streams' oldest
last-scored time less the late horizon, so the alert manager keeps the device's alerts near
it extendable: a sensor that uploads in buffers joins its own alert while another sensor
of the device alarms. A stream that stopped for good (a sensor removed, a metric sent once)
pinned the floor at its last reading: every alert of the device since then was held by the
alert manager (up to ``MAX_HELD``) and taken up from the store again at each restart. A
stream silent for longer than ``FLOOR_SILENT_INTERVALS`` of its typical intervals, and at
least ``FLOOR_SILENT_MIN_S``, no longer holds the floor back; one merely uploaded late (in
hourly or 6-hourly batches) still does.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store

S = 10**9
STEP = 60  # s between readings
# readings are fed as fast as the CPU allows: no rate limit in the way
FAST = Settings(rate_limit_per_s=1e9, rate_limit_burst=1e9)


def _feed(p: Pipeline, n: int, t0: int,
          metrics: Callable[[int, random.Random], dict[str, float]],
          every: int = 60, device: str = "dev") -> None:
    """``n`` readings of ``device``, ``STEP`` s apart from ``t0`` (s), sent
    ``every`` readings a message, received just after its last reading."""
    rng = random.Random(7)
    for k in range(0, n, every):
        body = [{"ts": t0 + i * STEP, "metrics": metrics(i, rng)}
                for i in range(k, min(n, k + every))]
        out = p.ingest_many([(device, json.dumps(body).encode(), (body[-1]["ts"] + 1) * S)],
                            via="http")
        assert all(not getattr(r, "rejected", True) for r in out), out


def _faulty_a(i: int, rng: random.Random) -> float:
    """Metric ``a``: level 20 with noise, and a 3-reading fault every 3 hours."""
    return round(20 + rng.gauss(0, 0.5) + (40.0 if i > 300 and i % 180 < 3 else 0.0), 3)


def test_a_sensor_that_stopped_no_longer_holds_the_devices_alerts(tmp_path: Path) -> None:
    n = 2 * 86400 // STEP  # two days
    t0 = time.time_ns() // S - n * STEP - 3600

    def metrics(i: int, rng: random.Random) -> dict[str, float]:
        m = {"a": _faulty_a(i, rng)}
        if i < 10:  # sensor b sends 10 readings, then is removed
            m["b"] = round(50 + rng.gauss(0, 0.5), 3)
        return m

    url, state = f"duckdb://{tmp_path}/s.duckdb", tmp_path / "state.json"
    store = open_store(url)
    p = Pipeline(store, FAST, detect_async=False, state_path=state)
    try:
        _feed(p, n, t0, metrics)
        stored = store.list_alerts("dev", None, "anomaly", None, 1000)
        held = p.alerts._held.get("dev", [])
        last_a = p._last_scored[("dev", "a")]
        assert p._last_scored[("dev", "b")] == (t0 + 9 * STEP) * S
        assert len(stored) >= 3, stored  # the faults of a raised alerts
        # the manager lets go of a's old alerts (it held all of them: 2 days' worth) ...
        assert len(held) <= 1, (len(held), len(stored))
        # ... as b, silent for two days, no longer pins the floor: a's rule alone
        assert p._scoring_floor("dev") == last_a - p.late_horizon_ns
    finally:
        p.close()
        store.close()
    # after a clean restart: the saved last-scored times give the same floor, and the
    # manager takes up only the alerts near it from the store (it took up every one)
    store = open_store(url)
    p = Pipeline(store, FAST, detect_async=False, state_path=state)
    try:
        floor = p._scoring_floor("dev")
        assert floor == last_a - p.late_horizon_ns
        p.alerts.observe_many("dev", [(last_a + STEP * S, 1.0, {"a": 1.0})], floor_ns=floor)
        assert len(p.alerts._held["dev"]) <= 2, len(p.alerts._held["dev"])
    finally:
        p.close()
        store.close()


def test_streams_uploaded_late_still_hold_the_floor() -> None:
    # a: read every minute, sent every 10; b: read every minute, sent hourly; c: read every
    # 30 minutes, sent every 6 hours. Between their uploads b lags up to 59 min and c up
    # to 5.5 h: merely late (1 h and 100 x 30 min are longer), so each still holds the floor
    n = 86400 // STEP  # a day
    t0 = time.time_ns() // S - n * STEP - 3600
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, FAST, detect_async=False)
    rng = random.Random(3)
    checked = 0
    try:
        for k in range(0, n, 10):  # a message each 10 minutes: a's, and b and c when due
            t = t0 + (k + 9) * STEP
            body = [{"ts": t0 + i * STEP, "metrics": {"a": round(20 + rng.gauss(0, 0.5), 3)}}
                    for i in range(k, k + 10)]
            if (k + 10) % 60 == 0:  # b's hour of readings
                body += [{"ts": t0 + j * STEP, "metrics": {"b": round(5 + rng.gauss(0, 0.1), 3)}}
                         for j in range(k - 50, k + 10)]
            if (k + 10) % 360 == 0:  # c's 6 hours of readings, one per 30 min
                body += [{"ts": t0 + j * STEP, "metrics": {"c": round(9 + rng.gauss(0, 0.1), 3)}}
                         for j in range(k - 350, k + 10, 30)]
            p.ingest_many([("dev", json.dumps(body).encode(), (t + 1) * S)], via="http")
            if k >= 12 * 60:
                last = p._last_scored
                oldest = min(last[("dev", m)] for m in "abc")
                assert p._scoring_floor("dev") == oldest - p.late_horizon_ns, k
                checked += 1
        assert checked == 72
        assert p.fast_gate is not None
        assert p.fast_gate.interval_s(("dev", "c")) == pytest.approx(1800.0)
    finally:
        p.close()
        store.close()


def test_the_silence_that_lets_a_stream_go_is_100_of_its_intervals() -> None:
    # b read every minute like a: silent 1.5 h (over FLOOR_SILENT_MIN_S, under 100
    # intervals) it still holds the floor; silent over 100 minutes it does not
    n = 240
    t0 = time.time_ns() // S - 10 * 3600
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, FAST, detect_async=False)
    try:
        _feed(p, n, t0, lambda i, rng: {"a": round(20 + rng.gauss(0, 0.5), 3),
                                        **({"b": round(5 + rng.gauss(0, 0.1), 3)}
                                           if i < 120 else {})}, every=10)
        last_b = p._last_scored[("dev", "b")]
        assert p._last_scored[("dev", "a")] - last_b == 120 * STEP * S  # 2 h
        assert p._scoring_floor("dev") == p._last_scored[("dev", "a")] - p.late_horizon_ns
        _feed(p, n, t0, lambda i, rng: {"a": round(20 + rng.gauss(0, 0.5), 3),
                                        **({"b": round(5 + rng.gauss(0, 0.1), 3)}
                                           if i < 150 else {})}, every=10, device="dev2")
        last_b = p._last_scored[("dev2", "b")]
        assert p._last_scored[("dev2", "a")] - last_b == 90 * STEP * S  # 1.5 h
        assert p._scoring_floor("dev2") == last_b - p.late_horizon_ns
    finally:
        p.close()
        store.close()
