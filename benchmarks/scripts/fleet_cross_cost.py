"""What the cross-sensor gate costs the gateway's detection: the fleet bench's readings
(20 pumps, 30 simulated minutes, seed 3) through ``Pipeline.detect`` with the gate (with
and without its fleet prior) and without it, alternating in one process, 3 times; medians.

    python benchmarks/scripts/fleet_cross_cost.py > benchmarks/results/fleet-cross-cost.json
"""

from __future__ import annotations

import json
import statistics

from edgewise.bench._machine import machine_fields
from edgewise.bench.fleet import bench_fleet

on: list[float] = []
no_prior: list[float] = []
off: list[float] = []
for _ in range(3):
    r = bench_fleet(["context-likelihood"], pumps=20, hours=0.5, seed=3, cross_gate=(True, False),
                    fleet_prior=(True, False))
    with_gate, without_prior, without = r["detectors"]
    assert with_gate["fleet_prior"] and not without_prior["fleet_prior"]
    assert not without["cross_gate"]
    on.append(with_gate["seconds"])
    no_prior.append(without_prior["seconds"])
    off.append(without["seconds"])
print(json.dumps({"command": "python benchmarks/scripts/fleet_cross_cost.py",
                  "readings": r["readings"], "seconds_with_gate": on,
                  "seconds_with_gate_no_fleet_prior": no_prior,
                  "seconds_without": off, "median_with_gate": statistics.median(on),
                  "median_with_gate_no_fleet_prior": statistics.median(no_prior),
                  "median_without": statistics.median(off),
                  "ratio": round(statistics.median(on) / statistics.median(off), 3),
                  "ratio_no_fleet_prior": round(statistics.median(no_prior)
                                                / statistics.median(off), 3),
                  **machine_fields()}))  # the machine as measured, never a hard-coded one
