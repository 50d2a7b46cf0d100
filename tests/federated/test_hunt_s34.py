"""Hunt s34: what the federated server claimed and what it did.

1. device-level DP was accounted at noise multiplier z for the sensitivity C/k of a device
   added or removed, while the mean of the k updates received moves by up to 2C/k when one
   device is replaced (or added): the ε was too small (z/2 is the multiplier), and sampling
   99 of 100 devices reported a larger ε (24.9) than taking all of them (8.08);
2. a device sending its arrays in another key order escaped the DP clip (Flower clips by
   position) or crashed Bulyan;
3. a device training without DP-SGD was averaged into a run that reported record-level ε 8;
4. Bulyan with f = 0 (the CLI's default --num-malicious) is a plain mean, and was accepted;
5. one device's malformed normaliser statistics ended the run even with f >= 1;
6. after a resume, refusals, skipped rounds and wire entries carried Flower's round
   (restarting at 1), not the run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from edgewise.errors import InvalidParameterError
from edgewise.federated import client_app as ca
from edgewise.federated.inprocess import SERVER_NODE_ID, InProcessGrid
from edgewise.federated.privacy import device_level_epsilon, rdp_epsilon
from edgewise.federated.server_app import (
    FederatedRunError,
    _DeviceDP,
    _DeviceDPScreen,
    fit_normaliser,
    run_federated,
)
from edgewise.federated.strategies import RobustStrategy, make_strategy
from tests.federated.test_cli_params import edgewise_in_process

torch.set_num_threads(1)
METRICS = {"num-examples": 10, "unit-weight": 1, "train-loss": 1.0}


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Flower stamps replies with the server's task identity; set it as InProcessGrid does."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SERVER_NODE_ID
    TaskIdentity.task_id = 0


def _reply(node: int, arrays: dict[str, np.ndarray], metrics: dict[str, Any] | None = None
           ) -> Message:
    instr = Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")
    return Message(RecordDict({
        "arrays": ArrayRecord({k: Array(np.asarray(v, np.float32)) for k, v in arrays.items()}),
        "metrics": MetricRecord(dict(METRICS if metrics is None else metrics)),
    }), reply_to=instr)


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, np.float32)) for k, v in arrays.items()})


def _app(transform: Any) -> ClientApp:
    """The real ClientApp; the node with ``bad`` in its node config has its replies passed
    through ``transform(msg, reply)``."""
    app = ClientApp()

    @app.train()
    def _train(msg: Message, ctx: Any) -> Message:
        reply = ca.train(msg, ctx)
        if ctx.node_config.get("bad") and not reply.has_error():
            return transform(msg, reply)
        return reply

    @app.evaluate()
    def _evaluate(msg: Message, ctx: Any) -> Message:
        return ca.evaluate(msg, ctx)

    return app


def _grid(app: ClientApp, n: int, bad: tuple[int, ...] = (0,), **run_config: Any
          ) -> InProcessGrid:
    return InProcessGrid(app, [{"partition-id": i, "num-partitions": n, "bad": i in bad}
                               for i in range(n)], {"dataset": "pump", **run_config})


# 1. device-level ε: one device replaced moves the mean of the k by 2C/k -------------------

def test_device_level_epsilon_is_that_of_the_noise_against_one_device_replaced(monkeypatch):
    """Measure the mechanism: the noise sd _DeviceDP adds and how far one device replaced
    moves the mean; the accounted ε must be that of noise sd / move (z/2), not of z."""
    import flwr.serverapp.strategy.dp_fixed_clipping as dpfc

    sds: list[float] = []
    real = dpfc.compute_stdv
    monkeypatch.setattr(dpfc, "compute_stdv",
                        lambda z, c, m: sds.append(real(z, c, m)) or sds[-1])
    z, clip = 1e-9, 1.0
    u = np.array([1.0, 0.0, 0.0, 0.0])

    def release(updates: list[np.ndarray]) -> np.ndarray:
        dp = _DeviceDP(FedAvg(weighted_by_key="unit-weight"), noise_multiplier=z,
                       clipping_norm=clip, num_sampled_clients=len(updates))
        dp.current_arrays = _record({"w": np.zeros(4)})
        arrays, _ = dp.aggregate_train(1, [_reply(1000 + i, {"w": w})
                                           for i, w in enumerate(updates)])
        return arrays["w"].numpy()

    move = float(np.linalg.norm(release([u, u, u, u]) - release([u, u, u, -u])))
    assert move == pytest.approx(2 * clip / 4, rel=1e-6)  # 2C/k, k = 4
    effective = sds[-1] / move  # the noise multiplier one replaced device faces
    assert effective == pytest.approx(z / 2, rel=1e-6)
    for zz, rounds in ((2.0, 10), (1.0, 3)):
        assert device_level_epsilon(zz, rounds) == pytest.approx(
            rdp_epsilon(zz * effective / z, 1.0, rounds), rel=1e-9)


@pytest.mark.parametrize(("n", "m"), [(10, 9), (100, 99), (100, 50), (260, 26)])
def test_sampling_devices_never_reports_a_larger_epsilon_than_taking_all(n: int, m: int):
    """Sampling can only amplify privacy: 99 of 100 reported 24.9 where all 100 reported
    8.08 (z=2, 10 rounds)."""
    full = device_level_epsilon(2.0, 10, num_devices=n, sample_size=n)
    assert device_level_epsilon(2.0, 10, num_devices=n, sample_size=m) <= full
    assert full == pytest.approx(rdp_epsilon(1.0, 1.0, 10))


# 2. arrays in another order ---------------------------------------------------------------

CURRENT = {"a": np.zeros(3), "b": np.full(3, 10.0)}


@pytest.mark.parametrize("robust", [True, False])
def test_a_device_sending_its_arrays_in_another_order_does_not_escape_the_dp_clip(robust):
    """Three devices send the same small update (norm 0.001 < C), one with its arrays in
    the order b, a: Flower's clip paired its b with the model's a (a move of 10 per value,
    clipped to C, and b set to about 0). The new model must be the old one plus that update
    (up to noise of z=1e-9), not b moved by 3.3 per value."""
    dp = _DeviceDP(FedAvg(weighted_by_key="unit-weight"), noise_multiplier=1e-9,
                   clipping_norm=0.01, num_sampled_clients=3)
    rule = _DeviceDPScreen(dp) if robust else dp
    rule.current_arrays = dp.current_arrays = _record(CURRENT)
    new = {"a": CURRENT["a"] + np.array([0.001, 0.0, 0.0]), "b": CURRENT["b"]}
    swapped = {"b": new["b"], "a": new["a"]}
    replies = [_reply(1000, swapped), _reply(1001, new), _reply(1002, new)]
    arrays, _ = rule.aggregate_train(1, replies)
    assert list(arrays.keys()) == ["a", "b"]
    for k, v in new.items():
        np.testing.assert_allclose(arrays[k].numpy(), v, atol=1e-5)


def test_the_screen_puts_a_reply_in_the_model_order_and_bulyan_takes_it():
    """Bulyan stacks arrays by position: a reply in the order b, w (shapes (2,), (4,))
    raised ValueError and ended the run."""
    model = {"w": np.zeros(4), "b": np.zeros(2)}
    s = make_strategy("bulyan", num_nodes=7, num_malicious_nodes=1)
    assert isinstance(s, RobustStrategy)
    s.current_arrays = _record(model)
    rng = np.random.default_rng(0)
    updates = [{k: rng.normal(size=v.shape) for k, v in model.items()} for _ in range(7)]
    replies = [_reply(1000 + i, u) for i, u in enumerate(updates)]
    replies[0] = _reply(1000, {"b": updates[0]["b"], "w": updates[0]["w"]})
    kept = s.screen(1, list(replies))
    assert len(kept) == 7
    assert list(kept[0].content["arrays"].keys()) == ["w", "b"]
    np.testing.assert_array_equal(kept[0].content["arrays"]["b"].numpy(),
                                  updates[0]["b"].astype(np.float32))
    replies[0] = _reply(1000, {"b": updates[0]["b"], "w": updates[0]["w"]})
    arrays, _ = s.aggregate_train(1, replies)
    assert {k: v.numpy().shape for k, v in arrays.items()} == {"w": (4,), "b": (2,)}


# 3. a device without DP-SGD in a DP-SGD run -----------------------------------------------

def test_a_device_training_without_dp_sgd_is_refused_when_the_run_asks_for_it():
    """Its run config says no DP-SGD (a client that ignores the budget): it was averaged in
    and the run still reported record-level ε ~8."""
    grid = _grid(ca.app, 3, bad=(), **{"dp-sgd-epsilon": 8.0, "num-server-rounds": 1})
    grid.contexts[1000].run_config["dp-sgd-epsilon"] = 0.0
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=3,
                        rounds=1, strategy="trimmed", dp_sgd_epsilon=8.0)
    assert [(e["node_id"], e["reason"]) for e in res.refused] == [(1000, "no-dp-sgd")]
    assert "dp-sgd-noise 0.0" in res.refused[0]["detail"]
    assert res.privacy.unit == "record" and res.privacy.epsilon <= 8.0


def test_the_screen_refuses_no_dp_sgd_only_when_the_run_asks_for_it():
    honest = {**METRICS, "dp-sgd-noise": 1.1, "dp-sgd-rate": 0.05, "dp-sgd-steps": 19,
              "dp-sgd-epsilon": 7.9}
    none = {**honest, "dp-sgd-noise": 0.0, "dp-sgd-rate": 0.0, "dp-sgd-steps": 0,
            "dp-sgd-epsilon": 0.0}
    model = {"w": np.zeros(4)}
    for required, refused in ((True, [1000]), (False, [])):
        s = RobustStrategy(FedAvg(), require_dp_sgd=required)
        s.current_arrays = _record(model)
        replies = [_reply(1000, {"w": np.full(4, 0.1)}, none)] + [
            _reply(1001 + i, {"w": np.full(4, 0.1 + 0.01 * i)}, honest) for i in range(2)]
        s.screen(1, replies)
        assert [e.node_id for e in s.events if e.reason == "no-dp-sgd"] == refused


def test_secagg_refuses_a_round_with_a_device_without_dp_sgd():
    from types import SimpleNamespace as NS

    from edgewise.federated.secagg import _AggregateScreen

    honest = {"train-loss": 0.5, "dp-sgd-epsilon": 7.9, "dp-sgd-noise": 1.1,
              "dp-sgd-rate": 0.05, "dp-sgd-steps": 19}
    none = {**honest, "dp-sgd-epsilon": 0.0, "dp-sgd-noise": 0.0, "dp-sgd-rate": 0.0,
            "dp-sgd-steps": 0}
    results = [(NS(node_id=7), NS(num_examples=100, metrics=none)),
               (NS(node_id=8), NS(num_examples=100, metrics=honest))]
    screen = _AggregateScreen([np.zeros(2)], max_weight=1e4, dp_sgd=True)
    assert len(screen.metrics_ok(3, results)) == 1
    assert screen.skipped_rounds == [3]
    assert screen.rejected[0]["reason"] == "no-dp-sgd" and screen.rejected[0]["node_id"] == 7
    assert len(_AggregateScreen([np.zeros(2)], max_weight=1e4).metrics_ok(3, results)) == 2


# 4. Bulyan with f = 0 ---------------------------------------------------------------------

def test_bulyan_with_no_malicious_client_is_refused_as_a_plain_mean():
    with pytest.raises(InvalidParameterError, match=r"Bulyan with f=0 .* a plain mean .*"
                                                    r"Use f >= 1 .* or strategy 'trimmed'"):
        make_strategy("bulyan", num_nodes=7, num_malicious_nodes=0)
    make_strategy("bulyan", num_nodes=7, num_malicious_nodes=1)  # f >= 1: fine


@pytest.mark.parametrize(("args", "needle"), [
    (["federate", "server", "--strategy", "bulyan", "--clients", "7"],
     "--strategy bulyan with --num-malicious 0 (the default) keeps every update"),
    (["federate", "server", "--strategy", "bulyan", "--clients", "8", "--num-malicious", "2"],
     "valid: --num-malicious 1 (or more clients)"),
    (["federate", "demo", "--strategy", "bulyan", "--clients", "7"],
     "demo runs with f = 0. Use --strategy trimmed here"),
])
def test_the_cli_refuses_bulyan_without_malicious_clients_in_one_line(
        tmp_path: Path, monkeypatch, capsys, args: list[str], needle: str) -> None:
    code, err = edgewise_in_process([*args, "--data-dir", str(tmp_path)], monkeypatch, capsys)
    assert code == 2 and needle in err, err
    assert err.startswith("error: ") and err.count("\n") == 1, err


# 5. malformed normaliser statistics -------------------------------------------------------

def _negative_count(msg: Message, reply: Message) -> Message:
    if msg.content["config"].get("phase") != "stats":
        return reply
    a = reply.content["arrays"]
    arrays = ArrayRecord({"count": Array(-a["count"].numpy()), "sum": a["sum"],
                          "sumsq": a["sumsq"]})
    return Message(RecordDict({"arrays": arrays, "metrics": reply.content["metrics"]}),
                   reply_to=msg)


def test_one_device_with_malformed_statistics_is_left_out_not_the_run_ended():
    honest = fit_normaliser(_grid(ca.app, 5, bad=()), 1, 5)
    rejected: list[dict[str, Any]] = []
    norm = fit_normaliser(_grid(_app(_negative_count), 5), 1, 5, num_malicious_nodes=1,
                          rejected=rejected)
    assert [(e["node_id"], e["reason"]) for e in rejected] == [(1000, "malformed-stats")]
    assert "count [-" in rejected[0]["detail"]
    assert np.isfinite(norm.mean).all() and np.isfinite(norm.std).all()
    np.testing.assert_allclose(norm.mean, honest.mean, rtol=0.2, atol=1.0)


def test_malformed_statistics_fail_the_run_when_too_few_devices_are_left():
    with pytest.raises(FederatedRunError, match=r"1 device\(s\) \(nodes \[1000\]\) sent "
                                                r"malformed statistics .* 2 device\(s\) are "
                                                r"left, fewer than the 2 max\(f, 1\) \+ 1 = 3"):
        fit_normaliser(_grid(_app(_negative_count), 3), 1, 3)


# 6. round numbers after a resume ----------------------------------------------------------

def test_a_resumed_run_reports_its_own_round_numbers(tmp_path: Path):
    """Round 2 (the first of the resumed part)'s refusal was reported as round 1."""
    def grid() -> InProcessGrid:
        return InProcessGrid(ca.app, [{"partition-id": i, "num-partitions": 4,
                                       **({"attack": "scale100"} if i == 0 else {})}
                                      for i in range(4)], {"dataset": "pump"})

    kw: dict[str, Any] = dict(kind="ae", n_features=6, n_conditions=1, num_nodes=4,
                              strategy="trimmed", num_malicious_nodes=1,
                              checkpoint=tmp_path / "checkpoint.npz")
    first = run_federated(grid(), rounds=1, **kw)
    assert [(e["server_round"], e["reason"]) for e in first.refused] == [(1, "norm")]
    resumed = run_federated(grid(), rounds=2, **kw)
    assert list(resumed.train_metrics) == [2]
    assert [(e["server_round"], e["reason"]) for e in resumed.refused] == [(2, "norm")]
    assert {e["round"] for e in resumed.wire if e["phase"] == "train"} == {2}


def test_a_skipped_round_is_the_runs_round():
    s = RobustStrategy(FedAvg(), num_malicious_nodes=0)
    s.round_offset = 3
    s.current_arrays = _record({"w": np.zeros(2)})
    assert s.aggregate_train(1, []) == (None, None)
    assert s.skipped_rounds == [4]


# a device sending the global model back unchanged --------------------------------------------

def test_an_unchanged_model_sent_back_does_not_end_a_device_dp_round() -> None:
    """Flower's clip divides the clipping norm by the update's norm: a device sending the
    global model back as it got it (no data, nothing learned) raised ZeroDivisionError and
    ended the run. Its update is 0, already inside the clip; it is averaged as 0."""
    current = {"w": np.array([0.5, -0.25, 1.0])}
    dp = _DeviceDP(FedAvg(weighted_by_key="unit-weight"), noise_multiplier=1e-9,
                   clipping_norm=1.0, num_sampled_clients=2)
    dp.current_arrays = _record(current)
    arrays, _ = dp.aggregate_train(1, [_reply(1000, {"w": current["w"].copy()}),
                                       _reply(1001, {"w": current["w"] + [3.0, 4.0, 0.0]})])
    # the other device's update (norm 5) is clipped to norm 1, the mean of the two is half it
    assert np.allclose(arrays["w"].numpy(), current["w"] + [0.3, 0.4, 0.0], atol=1e-6)
