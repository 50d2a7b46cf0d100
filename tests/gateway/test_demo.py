"""``edgewise demo`` end to end: one process with broker, gateway, store, dashboard and fleet."""

from __future__ import annotations

import json
import time

import httpx

from tests.cli.test_demo_hunt_s31 import assert_labels_end_at_newest_stored_reading
from tests.conftest import start_demo, stop_demo, wait_stored
from tests.gateway.test_demo_hunt_s48 import assert_every_stored_fault_reading_labelled


def test_demo_runs_prints_credentials_stores_and_stops_cleanly(tmp_path) -> None:
    """Check the demo's banner, that it stores, serves the dashboard and stops cleanly, and
    that, stopped while its history still goes out (20 pumps: the history outruns the
    acks), every pump's fault labels end at or before its newest stored reading: a restart
    goes on after that reading, and every stored reading of a fault lies inside its label
    (this run also stands for test_demo_hunt_s31.py's
    test_each_pumps_labels_end_at_its_newest_stored_reading and test_demo_hunt_s48.py's
    test_a_stopped_demo_labels_every_stored_reading_of_its_faults, which run demos of
    their own under -m slow)."""
    d = tmp_path / "d"
    proc, lines, http = start_demo(d)
    try:
        out = "\n".join(lines)
        assert f"dashboard: http://127.0.0.1:{http}/" in out, out
        assert "admin token (shown once" in out
        creds = [ln.split(": ") for ln in lines if ln.startswith("  pump-")]
        assert len(creds) == 20 and all(len(s) >= 40 for _, s in creds)  # 256-bit secrets
        # up to 16,000 readings (the labels' run waited for), at least the 8,000 asked
        assert wait_stored(http, 20 * 8 * 100, timeout=60) >= 20 * 8 * 50
        assert httpx.get(f"http://127.0.0.1:{http}/", timeout=10).status_code == 200
    finally:
        rest = stop_demo(proc)
    assert proc.returncode == 0, rest
    assert "stopped;" in rest
    labels = json.loads((d / "demo-labels.json").read_text())
    assert isinstance(labels, list)
    assert json.loads((d / "demo-devices.json").read_text()).keys() == {
        dev.strip() for dev, _ in creds}
    assert_labels_end_at_newest_stored_reading(d, labels)
    assert_every_stored_fault_reading_labelled(d, labels)  # not cut at the last ack seen


def test_a_stopping_fleet_waits_for_its_last_acks_once_not_per_device() -> None:
    """Check stopping 50 simulated pumps whose last messages were never acknowledged
    (the gateway is gone) takes about 2 s, not 2 s per pump (a stopped 200-pump demo
    waited up to 400 s)."""

    from edgewise.sim.fleet import FleetRunner
    from edgewise.sim.pumps import PumpFleet
    from tests.conftest import free_port

    fleet = PumpFleet(n_pumps=50, seed=0)
    runner = FleetRunner(fleet, [(p.device_id, "x" * 43) for p in fleet.pumps],
                         port=free_port())  # nothing listens there
    for d in runner.devices:
        d.pending[1] = b"{}"
    t0 = time.monotonic()
    runner.stop()
    assert time.monotonic() - t0 < 10.0
