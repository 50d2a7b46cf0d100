"""Flower's deployment engine as real processes: a SuperLink and three SuperNodes on loopback."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from flwr.superlink.grid.http_grid import HttpGrid

from edgewise.federated.client_app import app
from edgewise.federated.deploy import LocalFleet
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.publish import load_global_model


# default: test_supernode_auth.py::test_only_supernodes_with_registered_keys_take_part_in_a_real_run
# (a real SuperLink + SuperNodes through the gate, with a NaN device and ε <= 6 node limits)
@pytest.mark.slow
def test_superlink_and_three_supernodes_complete_two_rounds(tmp_path, monkeypatch):
    """Check 3 SuperNode processes finish 2 rounds and only parameters reach the server,
    talking to the gate (``federate server``'s address for devices), which forwards their
    Fleet calls, while the SuperLink itself listens on loopback at a port of its own.

    The gate's part was test_devices_complete_a_federated_run_through_the_gate in
    test_fleet_gate.py, with a run of its own (21 s of the suite's time on 2 cores): this
    run goes through the same gate, so it checks it here."""
    # no usage report to flower.ai and no update check: each Flower process waits up to 4 s
    # (3 s) for them at exit (a ClientApp process per message), where the network is slow
    # or blackholed
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    # the run asks for no DP, but each device keeps its own limit (node config read by the
    # real SuperNode process): it trains under DP-SGD at ε <= 6 anyway
    with LocalFleet(3, workdir=tmp_path, attacks={2: "nan"}, max_epsilon=6.0) as fleet:
        result = fleet.run({"num-server-rounds": 2, "strategy": "fedavg", "evaluate": False,
                            "min-available-nodes": 3, "dp-sgd-epsilon": 0.0}, timeout=240)
        alive = [p.poll() is None for p in fleet.nodes.values()]
        node_cmds = [p.args for p in fleet.nodes.values()]
        # stop the SuperNodes all at once, while the SuperLink still answers their goodbye
        # (LocalFleet.stop stops one at a time, 1-2 s each); it then stops the SuperLink
        running = [p for p in fleet.nodes.values() if p.poll() is None]
        for p in running:
            os.killpg(p.pid, signal.SIGTERM)
        for p in running:
            p.wait(timeout=30)
    assert all(alive)
    assert result["rounds"] == 2
    # every device was sent to the gate, every Fleet call went through it, and the
    # SuperLink listens elsewhere (on loopback)
    assert fleet.link_port != fleet.port
    link = (tmp_path / "superlink.log").read_text(errors="replace")
    assert f"running on http://127.0.0.1:{fleet.link_port}" in link
    gate = (tmp_path / "fleet-gate.log").read_text(errors="replace")
    for call in ("register-node", "pull-messages", "push-messages", "push-object",
                 "pull-object"):
        assert f'"POST /v1/fleet/{call} HTTP/1.1" 200' in gate, call
    assert len(node_cmds) == 3
    for cmd in node_cmds:
        assert isinstance(cmd, list) and cmd[cmd.index("--superlink") + 1] == fleet.address
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


class _SlowLink(HttpGrid):
    """Flower's deployment grid whose replies reach the SuperLink ``ready`` seconds after
    the messages were pushed (None: never); counts its pulls."""

    def __init__(self, ready: list[float | None]) -> None:
        super().__init__(token="not-connected")
        self.ready, self.pulls, self.t0 = ready, 0, 0.0

    def push_messages(self, messages: Any) -> list[str]:
        self.t0 = time.monotonic()
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, ids: Any) -> list[Any]:
        self.pulls += 1
        now = time.monotonic() - self.t0
        return [SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=f"m{i}"))
                for i, at in enumerate(self.ready)
                if at is not None and at <= now and f"m{i}" in set(ids)]


def test_the_server_app_collects_each_round_promptly(tmp_path, monkeypatch):
    """Check the ServerApp's grid hands back a round's replies within a poll (0.5 s) of the
    last one reaching the SuperLink, not Flower's 3 s, each reply once, and, at the round
    timeout, the replies that came."""
    from flwr.app import Context, RecordDict

    from edgewise.federated import server_app

    link = _SlowLink([0.1, 0.6, 0.3])
    grid = server_app._PromptGrid(link, poll=0.1)
    t = time.monotonic()
    got = grid.send_and_receive(["a", "b", "c"], timeout=30)
    took = time.monotonic() - t
    assert sorted(m.metadata.reply_to_message_id for m in got) == ["m0", "m1", "m2"]
    assert took < 2.5, f"the last reply came at 0.6 s, the round ended at {took:.2f} s"
    link = _SlowLink([0.1, None])
    t = time.monotonic()
    got = server_app._PromptGrid(link, poll=0.1).send_and_receive(["a", "b"], timeout=0.5)
    assert [m.metadata.reply_to_message_id for m in got] == ["m0"]
    assert 0.5 <= time.monotonic() - t < 2.5 and link.pulls >= 3
    # the deployment entry point hands the run that grid, polling at most every 0.5 s;
    # another grid (in-process devices: its own message ids) as it is
    seen: list[Any] = []
    monkeypatch.setattr(server_app, "_main", lambda g, _rc, _out: seen.append(g))
    in_process = InProcessGrid(app, [{"partition-id": 0, "num-partitions": 1}])
    for grid in (link, in_process):
        server_app.main(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                      run_config={"out-dir": str(tmp_path / "out")}))
    assert isinstance(seen[0], server_app._PromptGrid) and seen[0].grid is link, seen
    assert seen[0].poll <= 0.5 and seen[1] is in_process, seen


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
