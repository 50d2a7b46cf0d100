"""Flower's deployment engine as real processes: a SuperLink and three SuperNodes on loopback."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import numpy as np
import pytest

from edgewise.federated.deploy import LocalFleet
from edgewise.federated.publish import load_global_model


def test_superlink_and_three_supernodes_complete_two_rounds(tmp_path, monkeypatch):
    """Check 3 SuperNode processes finish 2 rounds and only parameters reach the server."""
    # no usage report to flower.ai: each Flower process waits up to 4 s for it at exit (a
    # ClientApp process per message), where the network is slow or blackholed
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    # the run asks for no DP, but each device keeps its own limit (node config read by the
    # real SuperNode process): it trains under DP-SGD at ε <= 6 anyway
    with LocalFleet(3, workdir=tmp_path, attacks={2: "nan"}, max_epsilon=6.0) as fleet:
        result = fleet.run({"num-server-rounds": 2, "strategy": "fedavg", "evaluate": False,
                            "min-available-nodes": 3, "dp-sgd-epsilon": 0.0}, timeout=240)
        alive = [p.poll() is None for p in fleet.nodes.values()]
        # stop the SuperNodes all at once, while the SuperLink still answers their goodbye
        # (LocalFleet.stop stops one at a time, 1-2 s each); it then stops the SuperLink
        running = [p for p in fleet.nodes.values() if p.poll() is None]
        for p in running:
            os.killpg(p.pid, signal.SIGTERM)
        for p in running:
            p.wait(timeout=30)
    assert all(alive)
    assert result["rounds"] == 2
    assert set(result["train_metrics"]) == {"1", "2"}
    assert result["privacy"]["unit"] == "record" and 5.9 < result["privacy"]["epsilon"] <= 6.0
    wire = json.loads((tmp_path / "out" / "wire.json").read_text())
    nodes = {e["node"] for e in wire}
    assert len(nodes) == 3  # three distinct SuperNodes answered
    assert result["model"]["name"] == "federated-pump"
    state, meta = load_global_model(tmp_path, "federated-pump")  # verified signature
    shapes = {k: list(v.shape) for k, v in state.items()}
    fits = [e for e in wire if e["phase"] == "train" and "count" not in
            e["array_records"].get("arrays", {})]
    assert len(fits) == 6
    for e in wire:  # what crossed: one ArrayRecord, one MetricRecord, nothing else
        assert e["config_records"] == [] and not e["error"]
        assert set(e["metric_records"]) == {"metrics"}
        assert e["array_bytes"] < 5000  # a device's 600 raw readings are 14,400 bytes
    for e in fits:
        assert e["array_records"] == {"arrays": shapes}
        assert set(e["metric_records"]["metrics"]) == {"num-examples", "unit-weight",
                                                       "train-loss", "dp-sgd-epsilon",
                                                       "dp-sgd-noise", "dp-sgd-rate",
                                                       "dp-sgd-steps"}
    # the NaN-sending device was rejected each round, and the model stayed finite
    assert meta["strategy"] == "fedavg+robust"
    assert sum(r["reason"] == "non-finite" for r in meta["rejected"]) == 2
    assert all(np.isfinite(v.numpy()).all() for v in state.values())
    assert (tmp_path / "out" / "checkpoint.npz").exists()


@pytest.mark.slow
def test_a_supernode_dropping_out_does_not_stall_the_run(tmp_path):
    """Check that killing one of three SuperNodes mid-run still ends with all rounds done."""
    with LocalFleet(3, workdir=tmp_path) as fleet:
        def drop_when_training_starts() -> None:
            log = tmp_path / "run.log"
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if log.exists() and "[ROUND 1/3]" in log.read_text(errors="replace"):
                    break
                time.sleep(0.2)
            fleet.stop_node(2)

        killer = threading.Thread(target=drop_when_training_starts)
        killer.start()
        result = fleet.run({"num-server-rounds": 3, "strategy": "fedavg", "evaluate": False,
                            "min-available-nodes": 2, "round-timeout": 20.0}, timeout=400)
        killer.join()
    assert result["rounds"] == 3
    wire = json.loads((tmp_path / "out" / "wire.json").read_text())
    last = [e for e in wire if e["phase"] == "train" and e["round"] == 3]
    assert len(last) == 2  # the dropped device is gone; the other two carried on
