"""What the cross-sensor gate costs the gateway's detection: the fleet bench's readings
(20 pumps, 30 simulated minutes, seed 3) through ``Pipeline.detect`` with the gate and
without it, alternating in one process, 3 times; medians.

    python benchmarks/scripts/fleet_cross_cost.py > benchmarks/results/fleet-cross-cost.json
"""

from __future__ import annotations

import json
import platform
import statistics

from edgewise.bench.fleet import bench_fleet

on: list[float] = []
off: list[float] = []
for _ in range(3):
    r = bench_fleet(["context-likelihood"], pumps=20, hours=0.5, seed=3, cross_gate=(True, False))
    with_gate, without = r["detectors"]
    on.append(with_gate["seconds"])
    off.append(without["seconds"])
print(json.dumps({"command": "python benchmarks/scripts/fleet_cross_cost.py",
                  "readings": r["readings"], "seconds_with_gate": on,
                  "seconds_without": off, "median_with_gate": statistics.median(on),
                  "median_without": statistics.median(off),
                  "ratio": round(statistics.median(on) / statistics.median(off), 3),
                  "machine": f"{platform.machine()} {platform.system()}, 2 cores (shared)"}))
