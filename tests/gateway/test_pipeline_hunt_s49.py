"""Session 49 pipeline hunt: the detection path from a stored reading to an alert.

* A fast counter whose clock ran a few minutes ahead (within ``max_future_s``) and was
  set right lost its gate until real time caught up with the time it had been stamped
  ahead (every increment went to the detector ungated: 1-3 false alerts in 4 minutes),
  and then alarmed: its increment was taken from the reading stamped ahead.
* A fast cumulative counter (a 1 Hz energy meter) that missed some messages (a network
  dropout, QoS 0 messages lost, readings refused) raised an anomaly alert when it came
  back: the fast-stream gate took the counter's rise over the whole gap for one
  interval's increment (20 s of normal consumption read as a 20x jump).
* After a restart a fast counter's first increment had nothing to be taken from (the
  counter's last reading was not kept): it went to the detector ungated, and where the
  meter's readings were lost while the gateway was down, it alarmed at every restart.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store

S = 10**9


def _meter(gap: range, rate: float = 1.0, seed: int = 1, n: int = 900,
           ahead: range = range(0), ahead_s: int = 0) -> list[tuple[int, int]]:
    """``n`` seconds of a 1 Hz meter (increments 0.5 +- 5 %, ``rate`` times that within
    ``gap``) whose readings within ``gap`` never arrive, and those within ``ahead`` are
    stamped ``ahead_s`` late (its clock ahead, then set right), sent 20 a message and
    received as they would be live; its alerts' spans (seconds from the first reading)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(), detect_async=False)
    rng = random.Random(seed)
    t0 = time.time_ns() // S - 2 * n
    v, vals = 1000.0, []
    for i in range(n):
        v += 0.5 * (1 + rng.gauss(0, 0.05)) * (rate if i in gap else 1.0)
        vals.append(round(v, 3))
    try:
        for k in range(0, n, 20):
            body = [{"ts": t0 + i + (ahead_s if i in ahead else 0), "metrics": {"kwh": vals[i]}}
                    for i in range(k, k + 20) if i not in gap]
            if body:
                p.ingest_many([("meter", json.dumps(body).encode(), (t0 + k + 20) * S)],
                              via="http")
        return [(a.start_ns // S - t0, a.end_ns // S - t0)
                for a in store.list_alerts("meter", limit=1000)]
    finally:
        p.close()
        store.close()


def test_a_fast_counter_back_from_a_dropout_raises_no_alert() -> None:
    assert _meter(range(0)) == []
    for gap in (range(600, 620), range(600, 660), range(600, 700)):
        assert _meter(gap) == [], f"readings {gap.start}-{gap.stop - 1} lost"


def test_a_fast_counter_that_ran_fast_during_a_dropout_still_alerts() -> None:
    # five times the consumption for the minute its readings were lost: the rise over
    # the gap is five times what the minute would use, and alarms when it comes back
    assert any(s <= 660 <= e + 60 for s, e in _meter(range(600, 660), rate=5.0))


def test_a_fast_counter_whose_clock_ran_ahead_and_was_set_right_raises_no_alert() -> None:
    for seed in (1, 3):
        assert _meter(range(0), seed=seed, n=1200, ahead=range(600, 640), ahead_s=240) == [], seed


def _meter_restarted(tmp_path: Path, down: int, seed: int, n: int = 1200) -> list[int]:
    """A 1 Hz meter whose gateway restarts at its reading 600 (state saved and loaded),
    the ``down`` readings before it lost; its alerts' starts (seconds)."""
    path = tmp_path / f"detectors-{down}-{seed}.pickle"
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False, state_path=path)
    rng = random.Random(seed)
    t0 = time.time_ns() // S - 2 * n
    v = 1000.0
    try:
        for k in range(0, n, 20):
            if k == 600:
                p.close()
                p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False,
                             state_path=path)
            body = []
            for i in range(k, k + 20):
                v += 0.5 * (1 + rng.gauss(0, 0.05))
                if not 600 - down <= i < 600:
                    body.append({"ts": t0 + i, "metrics": {"kwh": round(v, 3)}})
            if body:
                p.ingest_many([("meter", json.dumps(body).encode(), (t0 + k + 20) * S)],
                              via="http")
        p.flush()
        return [a.start_ns // S - t0 for a in store.list_alerts("meter", limit=1000)]
    finally:
        p.close()
        store.close()


def test_a_fast_counter_raises_no_alert_after_a_restart_that_lost_readings(
        tmp_path: Path) -> None:
    for seed in (1, 2):
        assert _meter_restarted(tmp_path, 0, seed) == [], seed
        assert _meter_restarted(tmp_path, 30, seed) == [], seed
