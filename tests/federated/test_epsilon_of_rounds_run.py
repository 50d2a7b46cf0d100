"""The ε a run reports is the ε of the rounds that really ran (review finding: a server that
runs fewer rounds than declared reported the planned ε), and a stopped run's rounds stay
charged when it resumes."""

from __future__ import annotations

import json

import pytest
import torch
from flwr.clientapp import ClientApp

from edgewise.federated import client_app as ca
from edgewise.federated import server_app as sa
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.privacy import device_level_epsilon, dp_sgd_epsilon

torch.set_num_threads(1)


def _flaky(faults: dict[tuple[int, int], str]) -> ClientApp:
    """The real ClientApp, except device p in round r raises ("raise") or sends NaN ("nan")
    for each (p, r) in ``faults``."""
    app = ClientApp(mods=[ca.secagg_when_asked])

    @app.train()
    def train(msg, context):
        cfg = msg.content["config"]
        fault = faults.get((context.node_config["partition-id"],
                            int(cfg.get("server-round", 0))))
        if cfg.get("phase") == "stats" or not fault:
            return ca.train(msg, context)
        if fault == "raise":
            raise RuntimeError("device dropped out")
        context.node_config["attack"] = "nan"
        try:
            return ca.train(msg, context)
        finally:
            context.node_config["attack"] = ""

    @app.evaluate()
    def evaluate(msg, context):
        return ca.evaluate(msg, context)

    return app


def _grid(n: int, app: ClientApp = ca.app, **rc) -> InProcessGrid:
    return InProcessGrid(app, [{"partition-id": i, "num-partitions": n} for i in range(n)],
                         {"dataset": "pump", **rc})


def _run(grid: InProcessGrid, rounds: int, **kw) -> sa.FederatedResult:
    return sa.run_federated(grid, kind="ae", n_features=6, n_conditions=1,
                            num_nodes=len(list(grid.get_node_ids())), rounds=rounds,
                            strategy="fedavg", **kw)


def test_a_round_with_every_update_refused_still_releases_and_is_charged():
    """Round 2 of 3 has every update refused: under device-level DP each refused device
    is a 0 update over the fixed m, so the round still releases (the global model plus
    noise z*C/m) and is charged: 3 noisy rounds. (It used to be skipped, uncharged: then
    whether one device's update passed decided whether anything was released.)"""
    res = _run(_grid(3, _flaky({(i, 2): "nan" for i in range(3)})), 3, dp_noise=1.0)
    assert res.skipped_rounds == []
    assert res.privacy.epsilon == pytest.approx(device_level_epsilon(1.0, 3))
    assert (res.privacy.rounds, res.privacy.rounds_planned) == (3, 3)


def test_devices_that_miss_rounds_report_what_they_spent_not_the_plan():
    """Each of 2 devices misses one of 3 rounds: each spent 2 rounds of DP-SGD."""
    grid = _grid(2, _flaky({(0, 3): "raise", (1, 1): "raise"}),
                 **{"dp-sgd-epsilon": 8.0, "num-server-rounds": 3})
    res = _run(grid, 3, dp_sgd_epsilon=8.0)
    z = res.train_metrics[2]["dp-sgd-noise"]
    assert res.privacy.unit == "record"
    assert res.privacy.epsilon == pytest.approx(dp_sgd_epsilon(z, 32, 600, 2), rel=1e-6)
    assert res.privacy.epsilon < dp_sgd_epsilon(z, 32, 600, 3) - 0.5


def test_a_round_aggregated_before_a_kill_stays_charged_when_the_run_resumes(
        tmp_path, monkeypatch):
    """Killed after round 2's noisy model went out (evaluation) but before its checkpoint:
    the resumed run re-runs rounds 2 and 3, so 4 noisy models were published, not 3."""
    ckpt = tmp_path / "ckpt.npz"
    save = sa._save_checkpoint

    def killed_at_round_2(path, arrays, server_round, norm):
        if server_round == 2:
            raise KeyboardInterrupt("killed")
        save(path, arrays, server_round, norm)

    monkeypatch.setattr(sa, "_save_checkpoint", killed_at_round_2)
    with pytest.raises(KeyboardInterrupt):
        _run(_grid(3), 3, dp_noise=1.0, checkpoint=ckpt, evaluate=True)
    assert sa.load_checkpoint(ckpt)[1] == 1
    ledger = json.loads(sa.run_ledger_path(ckpt).read_text())
    assert [r["round"] for r in ledger["rounds"] if r["kind"] == "device"] == [1, 2]
    monkeypatch.setattr(sa, "_save_checkpoint", save)
    res = _run(_grid(3), 3, dp_noise=1.0, checkpoint=ckpt, evaluate=True)
    assert res.rounds_done == 3
    assert res.privacy.epsilon == pytest.approx(device_level_epsilon(1.0, 4))
    assert res.privacy.rounds == 4


def test_a_resumed_run_composes_with_what_was_spent_without_double_counting(tmp_path):
    """2 rounds, then resumed to 3: record-level ε is that of 3 rounds, not 2 or 2 + 3."""
    ckpt = tmp_path / "ckpt.npz"
    rc = {"dp-sgd-epsilon": 8.0, "num-server-rounds": 3}
    _run(_grid(2, **rc), 2, dp_sgd_epsilon=8.0, checkpoint=ckpt)
    res = _run(_grid(2, **rc), 3, dp_sgd_epsilon=8.0, checkpoint=ckpt)
    z = res.train_metrics[3]["dp-sgd-noise"]
    assert res.privacy.epsilon == pytest.approx(dp_sgd_epsilon(z, 32, 600, 3), rel=1e-6)
    assert res.privacy.epsilon <= 8.0
    assert res.train_metrics[3]["dp-sgd-epsilon"] < res.privacy.epsilon  # the device's own run


def test_resuming_without_the_privacy_ledger_is_refused(tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    _run(_grid(2), 1, dp_noise=1.0, checkpoint=ckpt)
    sa.run_ledger_path(ckpt).unlink()
    with pytest.raises(sa.FederatedRunError, match="no privacy ledger"):
        _run(_grid(2), 2, dp_noise=1.0, checkpoint=ckpt)


def test_cli_prints_the_rounds_the_epsilon_covers(capsys):
    from edgewise.cli.federate import _print_result

    privacy = sa._privacy_report({1: {}}, dp_noise=1.0, dp_clip=1.0, dp_delta=1e-5,
                                 dp_sgd_clip=1.0, num_devices=3, rounds=3, sample_size=3)
    assert (privacy.rounds, privacy.rounds_planned) == (1, 3)
    _print_result({"privacy": privacy.to_dict(), "rounds": 3, "strategy": "fedavg",
                   "train_metrics": {}, "model": {"name": "m", "version": 1, "data_dir": "d",
                                                  "release": "r", "target": "t",
                                                  "key_id": "k"}}, False)
    out = capsys.readouterr().out
    # rounded up (10.7255 is 10.8: a privacy loss is never printed below what was spent)
    assert "10.8 (unit: device) over the 1 of 3 rounds" in out
    assert device_level_epsilon(1.0, 1) == pytest.approx(10.7255, abs=1e-4)
