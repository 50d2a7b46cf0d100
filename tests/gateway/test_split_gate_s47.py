"""A device that sends each metric in its own message, its rows assembled
(``assemble_split_rows``), is judged by the cross-sensor gate as one that sends them
together: the gate learns each assembled row, caps its T² and the per-metric alarms of its
readings where the device's sensors agree on the move (an operating change), and a sensor
that breaks away from the others still alarms."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from edgewise.telemetry import Reading

T0 = 1_700_000_000
#: each setpoint held for 150 samples, one a second; the last (1.1) beyond those seen
SETPOINTS = (0.8, 0.9, 0.8, 0.9, 1.1)
HOLD = 150
CHANGE_S = HOLD * (len(SETPOINTS) - 1)  # 600: the change to 1.1
BREAK_S = CHANGE_S + HOLD  # 750: the flow alone drops by 15 %, for 20 samples


def _rows() -> list[dict[str, float]]:
    """Speed, flow and power of one pump, proportional to its setpoint, each with its own
    noise; then the flow alone drops."""
    rng = np.random.default_rng(0)
    out = []
    for s in SETPOINTS:
        for _ in range(HOLD):
            out.append({"speed": 2950 * s + rng.normal(0, 3),
                        "flow": 120 * s + rng.normal(0, 0.3),
                        "power": 30 * s + rng.normal(0, 0.05)})
    for _ in range(20):
        s = SETPOINTS[-1]
        out.append({"speed": 2950 * s + rng.normal(0, 3),
                    "flow": 0.85 * 120 * s + rng.normal(0, 0.3),
                    "power": 30 * s + rng.normal(0, 0.05)})
    return out


def _readings(i: int, row: dict[str, float], split: bool) -> list[Reading]:
    """Sample ``i``: at one time, or (``split``) each metric 3 ms after the one before."""
    ts = (T0 + i) * 10**9
    return [Reading("p0", m, ts + (j * 3_000_000 if split else 0), v)
            for j, (m, v) in enumerate(row.items())]


@cache
def _run(split: bool, one_per_batch: bool = False
         ) -> tuple[list[tuple[float, dict[str, float]]], int]:
    """Each alert's start (s after T0) and drivers, and how many rows the gate learned, of
    the pump's readings given to detection a sample a batch (``one_per_batch``: a reading
    a batch, as messages each committed alone)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(assemble_split_rows=True), detect_async=False)
    try:
        for i, row in enumerate(_rows()):
            rs = _readings(i, row, split)
            for batch in ([[r] for r in rs] if one_per_batch else [rs]):
                p.detect(batch)
        p.alerts.flush(force=True)
        alerts = sorted((a.start_ns / 1e9 - T0, a.drivers)
                        for a in store.list_alerts(kind="anomaly", limit=100))
        assert p.cross_gate is not None
        return alerts, p.cross_gate.devices_["p0"].n
    finally:
        p.close()
        store.close()


def test_the_gate_learns_each_assembled_row_as_a_row_sent_together() -> None:
    """Check the gate learned about as many rows from the assembled rows as from the rows
    sent together, one a sample (measured: 752 and 750 of 770 samples; old code: 0, it
    learned none)."""
    together, split = _run(False)[1], _run(True)[1]
    assert together > 700 and abs(split - together) <= 5, (split, together)


def test_an_operating_change_sent_split_raises_no_alert_as_sent_together() -> None:
    """Check the change to a setpoint never run at (600 s), each metric sent in its own
    message: no alert, as when sent together, where the gate, having learned the earlier
    changes, caps the T² and the per-metric alarms of all three readings (old code: an
    alert at 600.0 s on all three metrics; the gate capped neither). The first change
    (150 s, nothing learned yet) alerts either way."""
    together, split = _run(False)[0], _run(True)[0]
    assert [round(t) for t, _ in together if t < BREAK_S] == [150]
    assert [round(t) for t, _ in split if t < BREAK_S] == [150], split


def test_a_flow_breaking_away_sent_split_is_still_caught() -> None:
    """Check the flow dropping alone at 750 s, each metric in its own message: an alert
    at that sample (750.006 s: its row's last reading), naming the flow first, as when
    sent together (750.0 s)."""
    for split in (False, True):
        ((start, drivers),) = [(t, d) for t, d in _run(split)[0] if t >= BREAK_S]
        assert BREAK_S <= start <= BREAK_S + 0.01
        assert max(drivers, key=drivers.get) == "flow", (split, drivers)


def test_an_alarm_whose_row_is_still_open_at_the_batch_end_is_raised_as_it_is() -> None:
    """Check each reading given to detection alone (each message committed alone): an
    alarming reading whose row is not complete when its batch ends is not held back (it
    alarms uncapped, as before the gate judged assembled rows), and the break is caught."""
    alerts, learned = _run(True, one_per_batch=True)
    assert learned == _run(True)[1]  # the gate learned the same rows
    starts = [round(t) for t, _ in alerts]
    assert CHANGE_S in starts and BREAK_S in starts, alerts


@pytest.mark.slow
def test_split_assembled_fleet_raises_as_many_false_alerts_as_together() -> None:
    """Check 4 simulated pumps with no fault for an hour (the gate's own fleet simulator),
    metrics sent together and sent 3 ms apart with assembly on: at most one alert more
    split than together (measured: 4 and 4, 1 and 1 at setpoint changes; old code: 4 and
    10, 1 and 6); then pump-01's flow dropping alone, sent split, alerts naming the flow."""
    from tests.gateway.test_cross_sensor import T0 as FLEET_T0
    from tests.gateway.test_cross_sensor import PumpFleet, _fleet_readings

    fleet = PumpFleet(4, seed=5, fault_rate_per_h=0.0)
    batches, changes = _fleet_readings(fleet, 3600)

    def split(batch: list[Reading]) -> list[Reading]:
        order: dict[str, int] = {}
        return [Reading(r.device_id, r.metric,
                        r.ts_ns + order.setdefault(r.metric, len(order)) * 3_000_000, r.value)
                for r in batch]

    counts = {}
    for name in ("together", "split"):
        store = open_store("duckdb://:memory:")
        p = Pipeline(store, Settings(assemble_split_rows=True), detect_async=False)
        for b in batches:
            p.detect(b if name == "together" else split(b))
        p.alerts.flush(force=True)
        alerts = store.list_alerts(kind="anomaly", limit=1000)
        near = sum(any(0 <= a.start_ns - c <= 30 * 10**9 for c in changes[a.device_id][1:])
                   for a in alerts)
        counts[name] = (len(alerts), near)
        if name == "split":
            ts = (FLEET_T0 + 3600) * 10**9
            row = dict(dict(fleet.step(ts))["pump-01"])
            row["flow_m3h"] -= 25 * 0.6
            p.detect(split([Reading("pump-01", m, ts, v) for m, v in row.items()]))
            p.alerts.flush(force=True)
            drops = [a for a in store.list_alerts(kind="anomaly", limit=1000)
                     if ts <= a.start_ns < ts + 10**9]
            assert drops and "flow_m3h" in drops[0].drivers, drops
        p.close()
        store.close()
    assert counts["split"][0] <= counts["together"][0] + 1, counts
    assert counts["split"][1] <= counts["together"][1] + 1, counts


def test_an_assembled_row_holding_a_spike_is_not_learned_by_the_gate() -> None:
    """Check a sample whose first reading (speed) the cleaner flags as a spike, sent one
    metric per message: the gate learns the next sample's row, not the spiked one (as a
    row sent together holding a spike)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(assemble_split_rows=True), detect_async=False)
    try:
        rows = _rows()[:300]
        for i, row in enumerate(rows):
            p.detect(_readings(i, row, True))
        assert p.cross_gate is not None
        learned = p.cross_gate.devices_["p0"].n

        def spikes() -> int:
            flagged = p.quality_counts("p0")["metrics"]["speed"]["flagged"]  # type: ignore[index]
            return int(flagged.get("spike", 0))

        before = spikes()
        spike = dict(rows[-1], speed=10 * rows[-1]["speed"])
        p.detect(_readings(300, spike, True))
        assert spikes() == before + 1
        assert p.cross_gate.devices_["p0"].n == learned
        p.detect(_readings(301, rows[-2], True))
        assert p.cross_gate.devices_["p0"].n == learned + 1
    finally:
        p.close()
        store.close()
