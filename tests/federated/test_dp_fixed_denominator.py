"""Device-level DP over a fixed denominator, per-device screening, and DP-SGD refused
without the robust screen (review s34).

1. _DeviceDP divided the sum of the clipped updates by the k that reached the mean and
   sized the noise z*C/k: whether one device's update was averaged (k vs k-1) changed the
   noise's own variance, which the ε accounted at z/2 does not cover. The denominator is
   now m, the devices sampled (configured), with noise z*C/m whatever k is; a refused or
   dropped device counts as a 0 update.
2. The screen's norm bound relative to the round's median let one device decide whether
   another device was averaged; under device-level DP only per-device checks remain.
3. run_federated(robust=False, dp_sgd_epsilon>0) dropped the no-dp-sgd refusal and
   averaged an update trained without DP-SGD.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg

from edgewise.federated import client_app as ca
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.server_app import _DeviceDP, _DeviceDPScreen, run_federated
from edgewise.federated.strategies import DPSGDScreen, RobustStrategy, make_strategy
from tests.federated.test_hunt_s34 import _task_identity  # noqa: F401 (autouse fixture)

torch.set_num_threads(1)
METRICS = {"num-examples": 10, "unit-weight": 1, "train-loss": 1.0}


def _instr(node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")


def _reply(node: int, w: np.ndarray, metrics: dict[str, Any] | None = None) -> Message:
    return Message(RecordDict({
        "arrays": ArrayRecord({"w": Array(np.asarray(w, np.float32))}),
        "metrics": MetricRecord(dict(METRICS if metrics is None else metrics)),
    }), reply_to=_instr(node))


def _dropped(node: int) -> Message:
    return Message(Error(code=0, reason="dropped out"), reply_to=_instr(node))


def _clipped(u: np.ndarray, c: float) -> np.ndarray:
    n = float(np.linalg.norm(u))
    return u if n <= c else u * (c / n)


@pytest.fixture
def sds(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The noise sd Flower's wrapper adds, each time it adds noise."""
    import flwr.serverapp.strategy.dp_fixed_clipping as dpfc

    seen: list[float] = []
    real = dpfc.compute_stdv
    monkeypatch.setattr(dpfc, "compute_stdv", lambda z, c, m: seen.append(real(z, c, m))
                        or seen[-1])
    return seen


def _release(replies: list[Message], m: int, *, z: float = 1e-9, clip: float = 1.0,
             robust: bool = False) -> tuple[np.ndarray, Any]:
    dp = _DeviceDP(FedAvg(weighted_by_key="unit-weight"), noise_multiplier=z,
                   clipping_norm=clip, num_sampled_clients=m)
    rule: Any = _DeviceDPScreen(dp) if robust else dp
    rule.current_arrays = dp.current_arrays = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    arrays, _ = rule.aggregate_train(1, replies)
    return arrays["w"].numpy().astype(np.float64), rule


UPDATES = [np.array([3.0, 0, 0, 0]), np.array([0, 0.5, 0, 0]), np.array([0, 0, 0.2, 0.1])]


@pytest.mark.parametrize("robust", [False, True])
def test_a_dropped_device_counts_as_a_zero_update_over_the_m_sampled(sds, robust):
    """m = 4 sampled, one dropped: the release is sum(clipped)/4, noise z*C/4 (it was
    sum/3 with noise z*C/3)."""
    replies = [_reply(1000 + i, u) for i, u in enumerate(UPDATES)] + [_dropped(1003)]
    got, _ = _release(replies, 4, robust=robust)
    expected = sum(_clipped(u, 1.0) for u in UPDATES) / 4
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert sds == [pytest.approx(1e-9 * 1.0 / 4)]


def test_a_refused_device_counts_as_a_zero_update_and_the_noise_does_not_depend_on_k(sds):
    """One device's NaN update is refused by the screen: the others' clipped sum over m = 4
    (not over k = 3), and the noise sd is z*C/m for k = 4, 3 and 0 alike."""
    z, clip = 2.0, 0.5
    honest = [_reply(1000 + i, u) for i, u in enumerate(UPDATES)]
    got, screen = _release([*honest, _reply(1003, np.full(4, np.nan))], 4, z=1e-9, clip=clip,
                           robust=True)
    assert [(e.node_id, e.reason) for e in screen.events] == [(1003, "non-finite")]
    np.testing.assert_allclose(got, sum(_clipped(u, clip) for u in UPDATES) / 4, atol=1e-6)
    sds.clear()
    for replies in (
        [*honest, _reply(1003, np.ones(4))],                      # k = 4
        [*honest, _reply(1003, np.full(4, np.nan))],              # k = 3
        [_reply(1000 + i, np.full(4, np.inf)) for i in range(4)],  # k = 0: still released
    ):
        fresh = [_reply(int(r.metadata.src_node_id),
                        r.content["arrays"]["w"].numpy()) for r in replies]
        out, _ = _release(fresh, 4, z=z, clip=clip, robust=True)
        assert out is not None and np.isfinite(out).all()
    assert sds == [pytest.approx(z * clip / 4)] * 3


def test_under_device_dp_one_device_does_not_decide_whether_another_is_averaged():
    """Devices a, b move by 1, c by 15. With device i moving by 1 the round's median is 1
    and c (15 > 10 x 1) was refused; with i moving by 100 the median is 8 and c was
    averaged (i refused). Under device-level DP the clip bounds every update to C, and
    neither is refused by a rule that reads the others' updates."""
    def refused(i_norm: float) -> list[tuple[int, str]]:
        replies = [_reply(1000, np.array([i_norm, 0, 0, 0])),
                   _reply(1001, np.array([0, 1.0, 0, 0])),
                   _reply(1002, np.array([0, 0, 1.0, 0])),
                   _reply(1003, np.array([0, 0, 0, 15.0]))]
        _, screen = _release(replies, 4, robust=True)
        return [(e.node_id, e.reason) for e in screen.events]

    assert refused(1.0) == [] and refused(100.0) == []


def test_under_device_dp_the_metric_layout_of_the_others_decides_nothing():
    """Two devices add a metric key: the majority layout used to refuse the other two
    (their update then not averaged because of the others' replies); now all four count."""
    extra = {**METRICS, "extra": 0.0}
    replies = [_reply(1000, np.array([0.1, 0, 0, 0])), _reply(1001, np.array([0, 0.1, 0, 0])),
               _reply(1002, np.array([0, 0, 0.1, 0]), extra),
               _reply(1003, np.array([0, 0, 0, 0.1]), extra)]
    got, screen = _release(replies, 4, robust=True)
    assert screen.events == []
    np.testing.assert_allclose(got, np.full(4, 0.1 / 4), atol=1e-6)


def test_without_the_robust_screen_a_dp_sgd_run_still_refuses_an_update_without_it():
    """make_strategy(robust=False, require_dp_sgd=True) returned the bare rule."""
    honest = {**METRICS, "dp-sgd-noise": 1.1, "dp-sgd-rate": 0.05, "dp-sgd-steps": 19,
              "dp-sgd-epsilon": 7.9}
    none = {**honest, "dp-sgd-noise": 0.0, "dp-sgd-rate": 0.0, "dp-sgd-steps": 0}
    s = make_strategy("fedavg", num_nodes=3, robust=False, require_dp_sgd=True,
                      weighted_by_key="unit-weight")
    assert isinstance(s, DPSGDScreen) and isinstance(s, RobustStrategy)
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(4, np.float32))})
    arrays, _ = s.aggregate_train(1, [_reply(1000, np.full(4, 100.0), none),
                                      _reply(1001, np.full(4, 0.1), honest),
                                      _reply(1002, np.full(4, 0.3), honest)])
    assert [(e.node_id, e.reason) for e in s.events] == [(1000, "no-dp-sgd")]
    np.testing.assert_allclose(arrays["w"].numpy(), np.full(4, 0.2), atol=1e-6)
    assert not isinstance(make_strategy("fedavg", num_nodes=3, robust=False), RobustStrategy)


@pytest.mark.parametrize("dp_noise", [0.0, 1e-6])
def test_run_federated_without_robust_refuses_a_device_without_dp_sgd(dp_noise):
    """robust=False with dp_sgd_epsilon > 0 (the bench's DP-SGD rows): the device whose
    client ignores the budget was averaged in, and the run reported record-level ε."""
    grid = InProcessGrid(ca.app, [{"partition-id": i, "num-partitions": 3} for i in range(3)],
                         {"dataset": "pump", "dp-sgd-epsilon": 8.0, "num-server-rounds": 1})
    grid.contexts[1000].run_config["dp-sgd-epsilon"] = 0.0
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=3,
                        rounds=1, strategy="fedavg", robust=False, dp_sgd_epsilon=8.0,
                        dp_noise=dp_noise)
    assert [(e["node_id"], e["reason"]) for e in res.refused] == [(1000, "no-dp-sgd")]
