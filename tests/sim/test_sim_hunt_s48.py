"""Hunt s48 on ``edgewise.sim``: a spike never takes a sensor that cannot read below 0
(vibration RMS, flow, absolute pressure, speed, current) below 0, and a runner's labels
can be cut at what the gateway stored (its seq watermark), not only at the acks a pump saw
(the gateway goes on storing after the last ack: those readings of a fault were left
outside its label)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgewise.sim.fleet import FleetRunner
from edgewise.sim.pumps import SENSORS, PumpFleet

T0 = 1_700_000_000 * 10**9
#: the sensors that cannot read below 0 (the temperatures, in Cel, can)
NON_NEGATIVE = set(SENSORS) - {"bearing_temp_c", "motor_temp_c"}
CLEAN = dict(p_gap=0.0, p_dropout=0.0, p_duplicate=0.0, p_swap=0.0)


@pytest.mark.parametrize("seed", [70, 123, 164])
def test_a_spike_never_takes_a_non_negative_sensor_below_zero(seed: int) -> None:
    """Before: a downward spike of 25 to 60 noise SDs took vibration_rms_mms (about
    1.3 mm/s, SD 0.05) to -0.78 mm/s, and suction pressure below 0 bar absolute (these
    seeds spike the vibration below 0 at their first sample). A spike stays as far off
    (it goes up instead) and the rest of the stream is what it was."""
    fleet = PumpFleet(1, seed=seed, fault_rate_per_h=3600.0)  # a fault at every chance
    twin = PumpFleet(1, seed=seed, fault_rate_per_h=0.0)  # the same pump, no faults
    spikes = 0
    for i in range(60):
        ts = T0 + i * 10**9
        (_, got), = fleet.step(ts)
        (_, clean), = twin.step(ts)
        low = {m: v for m, v in got.items() if m in NON_NEGATIVE and v < 0}
        assert not low, (i, low)
        f = fleet.faults[-1]
        if f.kind == "spike" and f.start_ns == ts:
            spikes += 1
            # far off still: 25 SDs at least, less the twin's own noise
            assert abs(got[f.metric] - clean[f.metric]) > 20 * SENSORS[f.metric][1]
    assert spikes >= 1


def test_labels_cut_at_the_stored_seq_watermark_hold_what_was_stored_after_the_acks(
) -> None:
    """The demo reads each pump's seq watermark from its store once the gateway has
    stopped; before, labels were cut at the last ack a pump saw, and a demo stopped
    during its history left 14-16 stored readings of each running fault outside its
    label."""
    fleet = PumpFleet(1, seed=0, fault_rate_per_h=3600.0)
    r = FleetRunner(fleet, [("pump-01", "s")], **CLEAN)  # never connected: no acks
    for i in range(30):
        r._emit(T0 + i * 10**9)
    assert r.labels() == []  # nothing acknowledged, nothing claimed
    cut = T0 + 19 * 10**9  # the gateway stored seqs 1..20: samples 0..19
    got = r.labels(stored_seq={"pump-01": 20})
    assert got == fleet.labels(until_ns=cut) and got
    assert max(int(f["end_ns"]) for f in got) == cut
    # a watermark below the acks changes nothing, and one of another device is ignored
    assert r.labels(stored_seq={"pump-01": 3, "pump-99": 10**6}) == got


def test_labels_of_a_fleet_stepped_with_numpy_times_go_to_json() -> None:
    """Before: times from ``np.arange`` (np.int64) made every fault time an np.int64, and
    ``json.dumps(fleet.labels())`` (labels "for JSON") raised TypeError."""
    fleet = PumpFleet(2, seed=1, fault_rate_per_h=600.0)
    plain = PumpFleet(2, seed=1, fault_rate_per_h=600.0)
    for t in T0 + np.arange(120, dtype=np.int64) * 10**9:
        assert fleet.step(t) == plain.step(int(t))
    assert fleet.labels() and json.loads(json.dumps(fleet.labels())) == plain.labels()
    assert type(fleet.last_ns) is int
