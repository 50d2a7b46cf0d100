"""Hunt fixes in ``edgewise.sim``: labels that hold every faulty reading (H1, L3), checked
parameters (L1/M2), independent seed streams (L4), a restart that goes on after the stored
data (H2)."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.sim.pumps import SENSORS, PumpFleet

T0 = 1_700_000_000 * 10**9


def _outside_labels(period_s: int, seed: int, hours: float, pumps: int = 4
                    ) -> tuple[float, float, list[object]]:
    """Worst noise-sd distance of a faulty fleet's readings from the same fleet without
    faults (the pumps' own streams do not depend on the fault stream): outside every label
    of the pump, and inside a label on a sensor it does not name."""
    a = PumpFleet(pumps, seed=seed, fault_rate_per_h=6.0)
    b = PumpFleet(pumps, seed=seed, fault_rate_per_h=0.0)
    outside = unnamed = 0.0
    for i in range(int(hours * 3600 / period_s)):
        ts = T0 + i * period_s * 10**9
        for (dev, va), (_, vb) in zip(a.step(ts), b.step(ts), strict=True):
            wins = [f for f in a.faults if f.device_id == dev and f.start_ns <= ts <= f.end_ns]
            for m, (_, sd) in SENSORS.items():
                z = abs(va[m] - vb[m]) / sd
                if not wins:
                    outside = max(outside, z)
                elif all(m not in getattr(f, "metrics", (f.metric,)) for f in wins):
                    unnamed = max(unnamed, z)
    return outside, unnamed, a.faults


def test_bearing_wear_heat_stays_inside_its_label_and_the_label_names_it() -> None:
    """H1: the bearing's heat decayed for ~20 min after the label closed (125 sd off),
    and the label named vibration only."""
    outside, unnamed, faults = _outside_labels(period_s=1, seed=5, hours=3)
    wear = [f for f in faults if f.kind == "bearing_wear"]
    assert wear, "the check needs a bearing_wear fault"
    assert outside < 1.0 and unnamed < 1.0, (outside, unnamed)
    for f in wear:
        assert set(f.metrics) == {"vibration_rms_mms", "bearing_temp_c"}
        assert f.end_ns - f.start_ns > 1200 * 10**9  # the ramp, then the cooling
    labels = PumpFleet(2, seed=5).labels()
    assert all(isinstance(x["metrics"], list) for x in labels)


def test_no_fault_acts_after_its_window_whatever_the_period() -> None:
    """L3: at a 7 s period drift and stuck readings lay 1-2 s after ``end_ns``."""
    outside, _, faults = _outside_labels(period_s=7, seed=1, hours=3)
    assert {f.kind for f in faults} >= {"drift", "stuck"}
    assert outside < 1.0, outside


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"seed": -1}, "seed"), ({"fault_rate_per_h": float("nan")}, "fault_rate_per_h"),
    ({"fault_rate_per_h": -1.0}, "fault_rate_per_h"), ({"n_pumps": 0}, "n_pumps"),
    ({"fault_rate_per_h": float("inf")}, "fault_rate_per_h"),
])
def test_pump_fleet_refuses_bad_parameters_in_one_line(kwargs: dict[str, float],
                                                       name: str) -> None:
    """M2/L1: seed -1 was numpy's traceback; a NaN rate made a fault at every chance."""
    with pytest.raises(InvalidParameterError, match=rf"'{name}' parameter of PumpFleet"):
        PumpFleet(**kwargs)  # type: ignore[arg-type]


def test_seed_streams_do_not_overlap() -> None:
    """L4: pump-01 of seed 0 shared the fleet's fault stream, and pump i of seed s
    shared pump 0 of seed s*1000+i."""
    f0 = PumpFleet(2, seed=0)
    assert (np.random.default_rng(0).random(3).tolist()
            != f0.pumps[0].rng.random(3).tolist())
    f1, f2 = PumpFleet(2, seed=1), PumpFleet(1, seed=1001)
    assert f1.pumps[1].rng.random(3).tolist() != f2.pumps[0].rng.random(3).tolist()
    f0, f0b = PumpFleet(2, seed=0), PumpFleet(2, seed=0)  # still reproducible
    assert f0.pumps[1].rng.random(3).tolist() == f0b.pumps[1].rng.random(3).tolist()


def test_a_restarted_runner_starts_after_the_stored_data() -> None:
    """H2: every start back-filled from ``now - backfill_s``, over what was stored."""
    from edgewise.sim.fleet import FleetRunner

    now = T0 + 10_000 * 10**9
    fresh = FleetRunner(PumpFleet(1), [], backfill_s=600)
    assert fresh.first_ns(now) == now - 600 * 10**9
    again = FleetRunner(PumpFleet(1), [], backfill_s=600, start_after_ns=now - 60 * 10**9)
    assert again.first_ns(now) == now - 59 * 10**9


def test_sent_times_are_stored_as_the_ground_truth_has_them() -> None:
    """Check every time the runner sends (float seconds, kept to the microsecond by the
    gateway) is stored as the very ns its faults' ground truth holds: the demo's labels
    started 86 or 405 ns after the first faulty reading, so a spike's label held none."""
    from edgewise.sim.fleet import FleetRunner
    from edgewise.telemetry import epoch_ns

    rng = np.random.default_rng(0)
    for now in rng.integers(1_700_000_000 * 10**9, 1_800_000_000 * 10**9, 200):
        for after in (None, int(now) - 10**9 + int(rng.integers(1, 10**6))):
            r = FleetRunner(PumpFleet(1), [], backfill_s=600, start_after_ns=after)
            t = r.first_ns(int(now))
            sent = [t + k * 10**9 for k in range(0, 100_000, 997)]
            assert all(epoch_ns(x / 1e9) == x for x in sent), (now, after, t)
