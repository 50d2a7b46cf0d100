"""What the server trusts and when it resumes: device-level DP averaging by self-reported
weights, the weight cap of a two-device round, NaN screen ratios, an out dir's checkpoint
continued by a fresh run, the SecAgg+ model's dtype, and a checkpoint of another model."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from edgewise.errors import InvalidParameterError
from edgewise.federated import server_app as sa
from edgewise.federated.client_app import app
from edgewise.federated.deploy import RUN_DEFAULTS
from edgewise.federated.inprocess import SERVER_NODE_ID, InProcessGrid
from edgewise.federated.ledger import RunLedger
from edgewise.federated.model import build_model
from edgewise.federated.strategies import RobustStrategy, make_strategy

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Flower stamps replies with the server's task identity; set it as InProcessGrid does."""
    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SERVER_NODE_ID
    TaskIdentity.task_id = 0


def _rec(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, np.float32)) for k, v in arrays.items()})


def _reply(node: int, arrays: dict[str, np.ndarray], metrics: dict) -> Message:
    instr = Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")
    return Message(RecordDict({"arrays": _rec(arrays), "metrics": MetricRecord(dict(metrics))}),
                   reply_to=instr)


# -- 1. device-level DP averages every device with weight 1 ------------------------------------

def _honest_share(weights: list, robust: bool
                  ) -> tuple[float, sa._DeviceDP, RobustStrategy | None]:
    """Device i moves coordinate i by 0.5 (equal norms); device 0's share of the mean, built
    as run_federated builds device-level DP (the robust screen outside the DP wrapper)."""
    k = len(weights)
    rule = make_strategy("fedavg", num_nodes=k, robust=False, weighted_by_key="unit-weight")
    inner = sa._DeviceDP(rule, noise_multiplier=1e-9, clipping_norm=1.0, num_sampled_clients=k)
    outer: Any = sa._DeviceDPScreen(inner) if robust else inner
    model = {"w": np.ones(k + 1)}
    outer.current_arrays = _rec(model)
    inner.current_arrays = _rec(model)
    replies = []
    for i, w in enumerate(weights):
        a = np.ones(k + 1)
        a[i] += 0.5
        replies.append(_reply(1000 + i, {"w": a},
                              {"num-examples": 600, "unit-weight": w, "train-loss": 1.0}))
    arrays, _ = outer.aggregate_train(1, replies)
    return ((float(arrays["w"].numpy()[0]) - 1.0) / 0.5, inner,
            outer if robust else None)


@pytest.mark.parametrize(("weights", "robust"), [
    ([1, 1e-9, 1e-9], True),   # was 0.833 for an accounted 1/3
    ([1, 1e-9], True),         # was 1.0 for an accounted 1/2
    ([1, 1e-9, 1e-9], False),  # no screen (--secagg off, robust=False): the wrapper alone
])
def test_device_dp_averages_each_device_with_weight_one(weights, robust, caplog) -> None:
    """The noise z*C/m is sized for a mean in which each device counts 1/m; devices
    reporting unit-weight 1e-9 must not raise an honest device's share above that."""
    with caplog.at_level(logging.WARNING, logger="edgewise.federated.server_app"):
        share, dp, screen = _honest_share(weights, robust)
    assert share == pytest.approx(1 / len(weights), abs=1e-5)
    if screen is not None:  # no honest weight capped (10 x a median of 1e-9) and blamed
        assert screen.events == []
    low = [1000 + i for i, w in enumerate(weights) if w != 1]
    assert [(node, w) for _, node, w in dp.reweighted] == [(n, 1e-9) for n in low]
    for node in low:
        assert any(f"node {node}) reported 'unit-weight' 1e-09" in r.getMessage()
                   for r in caplog.records)


def test_device_dp_leaves_honest_weights_alone() -> None:
    """Every device reporting 1: nothing re-weighted, an equal share each."""
    share, dp, _ = _honest_share([1, 1, 1], robust=True)
    assert share == pytest.approx(1 / 3, abs=1e-5) and dp.reweighted == []


def test_device_dp_screen_still_refuses_a_malformed_weight() -> None:
    """A unit-weight that is no positive number is a malformed reply, refused as before;
    it counts as a 0 update over the fixed denominator m = 4 (1/4 each, not 1/3)."""
    share, dp, screen = _honest_share([1, 1, 1, float("nan")], robust=True)
    assert [(e.node_id, e.reason) for e in screen.events] == [(1003, "weight")]
    assert share == pytest.approx(1 / 4, abs=1e-5) and dp.reweighted == []


# -- 2. the weight cap of a round of two ----------------------------------------------------

def test_weight_cap_of_two_updates_uses_the_smaller() -> None:
    """One of two devices claims 10^9 examples: the median of two (their mean) never capped
    it and the mean was the attacker's update; now it is capped at 10 x the smaller."""
    s = make_strategy("fedavg", num_nodes=2)
    s.current_arrays = _rec({"w": np.ones(8)})
    arrays, _ = s.aggregate_train(1, [
        _reply(1000, {"w": np.ones(8) + 0.1}, {"num-examples": 600, "train-loss": 1.0}),
        _reply(1001, {"w": np.ones(8) - 0.7}, {"num-examples": 10**9, "train-loss": 1.0})])
    assert float(arrays["w"].numpy()[0]) == pytest.approx((600 * 1.1 + 6000 * 0.3) / 6600,
                                                          abs=1e-5)
    assert [(e.node_id, e.reason) for e in s.events] == [(1001, "weight-capped")]
    assert "capped to 6000 (10 x the smaller of the round's two 600)" in s.events[0].detail


# -- 3. NaN ratios are refused --------------------------------------------------------------

@pytest.mark.parametrize("name", ["max_norm_ratio", "max_examples_ratio", "max_num_examples"])
def test_nan_screen_parameters_are_refused_naming_them(name: str) -> None:
    """NaN compared false with `<=`/`<` and switched the norm check or weight cap off."""
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter .* Got nan"):
        make_strategy("fedavg", num_nodes=4, **{name: float("nan")})


# -- 4. a fresh run in an out dir does not continue the last one --------------------------

def _main(out, rounds: int, **rc) -> dict:
    """Run the ServerApp's entry point over 3 in-process pump devices into ``out``."""
    rc = {**RUN_DEFAULTS, "num-nodes": 3, "min-available-nodes": 3, "out-dir": str(out),
          "num-server-rounds": rounds, "strategy": "fedavg", "evaluate": False, **rc}
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": 3} for i in range(3)], rc)
    sa.main(grid, type("Ctx", (), {"run_config": rc})())
    return json.loads((out / "result.json").read_text())


def test_a_second_run_in_the_same_out_dir_starts_afresh_unless_asked_to_resume(tmp_path):
    """The ServerApp always checkpoints to <out-dir>/checkpoint.npz; a second run there
    continued the first (trained only the rounds past it) without anyone asking."""
    out = tmp_path / "out"
    _main(out, 1)
    ledger = sa.run_ledger_path(out / "checkpoint.npz")
    assert ledger.exists()
    fresh = _main(out, 2)
    assert sorted(fresh["train_metrics"]) == ["1", "2"] and fresh["rounds"] == 2
    # the run ledger is the fresh run's alone: one server run (segment 0), rounds 1 and 2
    rounds = RunLedger(ledger).load().rounds
    assert {r.get("segment", 0) for r in rounds} == {0}
    assert sorted({r["round"] for r in rounds if r["kind"] == "aggregated"}) == [1, 2]
    resumed = _main(out, 3, resume=True)
    assert sorted(resumed["train_metrics"]) == ["3"] and resumed["rounds"] == 3
    assert {r.get("segment", 0) for r in RunLedger(ledger).load().rounds} == {0, 1}


def test_resume_under_secagg_is_refused(tmp_path) -> None:
    """SecAgg+ keeps no checkpoint: asked to resume, the run would silently start afresh."""
    out = tmp_path / "out"
    with pytest.raises(InvalidParameterError, match=r"resume = true.*SecAgg"):
        _main(out, 1, resume=True, secagg=True)
    assert "SecAgg" in json.loads((out / "error.json").read_text())["error"]


def test_federate_server_passes_resume_in_the_run_config(tmp_path, monkeypatch) -> None:
    """`federate server --resume` is what asks the ServerApp to resume; without it, not."""
    from edgewise.cli import federate

    configs: list[dict] = []
    monkeypatch.setattr(federate, "_run_fleet", lambda _f, config, **_k: configs.append(config))
    monkeypatch.setattr(federate, "_print_result", lambda *_a: None)
    federate.server(data_dir=tmp_path, as_json=True)
    federate.server(data_dir=tmp_path, as_json=True, resume=True)
    assert [c["resume"] for c in configs] == [False, True]


# -- 5. the SecAgg+ model keeps the model's dtype --------------------------------------------

def test_secagg_global_model_is_float32_like_a_plain_one() -> None:
    """Flower's SecAgg+ dequantises to float64; the registered payload's dtype must not
    depend on --secagg."""
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": 3} for i in range(3)],
                         {"dataset": "pump"})
    res = sa.run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=3,
                           rounds=1, strategy="fedavg", robust=False, secagg=True)
    template = build_model("ae", 6).state_dict()
    assert {k: v.dtype for k, v in res.state_dict().items()} == \
        {k: v.dtype for k, v in template.items()}
    assert all(v.dtype == torch.float32 for v in res.state_dict().values())


# -- 6. a checkpoint of another model is refused, naming both layouts ------------------------

def _pump_checkpoint(path) -> None:
    arrays = build_model("ae", 6).state_dict()
    np.savez(path, __round__=np.array(1), __norm_mean__=np.zeros((1, 6)),
             __norm_std__=np.ones((1, 6)), **{f"p:{k}": v.numpy() for k, v in arrays.items()})


def test_resuming_another_models_checkpoint_is_refused_naming_both_layouts(tmp_path) -> None:
    """A pump (autoencoder) checkpoint resumed as a C-MAPSS (RUL) run failed in round 1
    blaming every device; now refused before any round, naming the file and layouts."""
    ckpt = tmp_path / "checkpoint.npz"
    _pump_checkpoint(ckpt)
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": 130} for i in range(3)],
                         {"dataset": "cmapss", "data-dir": "/nonexistent"})
    with pytest.raises(sa.FederatedRunError) as exc:
        sa.run_federated(grid, kind="rul", n_features=43, n_conditions=6, num_nodes=3,
                         rounds=2, strategy="trimmed", beta=0.34, checkpoint=ckpt)
    msg = str(exc.value)
    assert f"Cannot resume from {ckpt}" in msg
    assert "'0.weight': (16, 6)" in msg and "'6.bias': (6,)" in msg  # the checkpoint's
    assert "'0.weight': (32, 43)" in msg and "'4.bias': (1,)" in msg  # the run's


def test_check_resume_accepts_the_same_models_checkpoint(tmp_path) -> None:
    """The layout check passes a checkpoint of the run's own model."""
    ckpt = tmp_path / "checkpoint.npz"
    _pump_checkpoint(ckpt)
    assert sa.check_resume(ckpt, rounds=2, num_devices=3,
                           model=build_model("ae", 6).state_dict()) == 1
