"""Hunt s48 on ``edgewise demo``: every stored reading a fault moved is inside its label,
also when the demo is stopped while its history still goes out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgewise.sim.pumps import PumpFleet
from edgewise.store import open_store
from tests.cli.test_demo_hunt_s31 import assert_labels_end_at_newest_stored_reading
from tests.conftest import start_demo, stop_demo, wait_stored


def assert_every_stored_fault_reading_labelled(d: Path, labels: list[dict]) -> None:
    """The fleet (seed 0) is simulated again over the times stored in the demo's data dir
    ``d``: its faults, cut at each pump's newest stored reading, are the ``labels`` the
    demo wrote, none shorter (before: each pump's labels were cut at the last ack it saw
    before the stop, and the gateway went on storing what had been sent: a 20-pump demo
    stopped during its history left 14-16 stored readings of every running fault, 3 of 3
    labels, outside its label, where `bench`/label import count them as normal)."""
    s = open_store(f"duckdb:///{d / 'edgewise.duckdb'}", create=False)
    try:
        newest = {x.device_id: x.last_ns for x in s.devices()}
        first = min(min(t for _, t, _ in s.query(dev, "speed_rpm")) for dev in newest)
    finally:
        s.close()
    fleet = PumpFleet(20, seed=0)
    t = first
    while t <= max(newest.values()):
        fleet.step(t)
        t += 10**9
    want = {(f["device_id"], f["start_ns"]): f["end_ns"]
            for f in fleet.labels(until_ns=newest)}
    got = {(f["device_id"], f["start_ns"]): f["end_ns"] for f in labels}
    assert want, "seed 0 starts faults early in the history: the test needs some"
    short = {k: (want[k] - got.get(k, k[1] - 10**9)) / 1e9 for k in want
             if got.get(k, -1) < want[k]}
    assert not short, short  # (device, start) -> stored seconds of it left unlabelled


@pytest.mark.slow  # test_demo's run checks the same by default (one demo run, not two)
def test_a_stopped_demo_labels_every_stored_reading_of_its_faults(tmp_path: Path) -> None:
    d = tmp_path / "d"
    proc, _lines, http = start_demo(d)  # 20 pumps, seed 0: the history outruns the acks
    try:
        wait_stored(http, 20 * 8 * 100, timeout=60)
    finally:
        rest = stop_demo(proc)
    assert proc.returncode == 0, rest
    labels = json.loads((d / "demo-labels.json").read_text())
    assert_labels_end_at_newest_stored_reading(d, labels)
    assert_every_stored_fault_reading_labelled(d, labels)
