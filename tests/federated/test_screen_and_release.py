"""The robust screen refuses updates of the wrong dtype and with a non-finite norm."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import Krum

from edgewise.federated.inprocess import SERVER_NODE_ID, InProcessGrid
from edgewise.federated.strategies import RobustStrategy


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Flower stamps replies with the server's task identity; set it as InProcessGrid does."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SERVER_NODE_ID
    TaskIdentity.task_id = 0


def _reply(node: int, arrays: dict[str, np.ndarray]) -> Message:
    instr = Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")
    content = RecordDict({
        "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
        "metrics": MetricRecord({"num-examples": 10}),
    })
    return Message(content, reply_to=instr)


def _strategy() -> RobustStrategy:
    s = RobustStrategy(Krum(num_malicious_nodes=0, min_train_nodes=5), num_malicious_nodes=0)
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(4, dtype=np.float32))})
    return s


@pytest.mark.parametrize("bad", [
    np.array([1j, 2j, 0, 0], dtype=np.complex128),  # norm of the real part alone is NaN-prone
    np.array([5j, 0, 0, 0], dtype=np.complex64),
    np.zeros(4, dtype=np.float64),                  # would turn the model float64
    np.zeros(4, dtype=np.int32),
])
def test_screen_refuses_wrong_dtype_updates(bad: np.ndarray) -> None:
    """Check that complex, float64 and integer updates never pass to the rule."""
    s = _strategy()
    rng = np.random.default_rng(0)
    honest = [_reply(1000 + i, {"w": rng.normal(size=4).astype(np.float32)}) for i in range(4)]
    evil = _reply(2000, {"w": bad})
    kept = s.screen(1, [*honest, evil])
    assert evil not in kept and len(kept) == 4
    assert [(e.node_id, e.reason) for e in s.events] == [(2000, "dtype")]
    assert "float32" in s.events[0].detail


def test_screen_refuses_non_finite_norm() -> None:
    """Check that updates whose norm overflows are refused even when they are the median."""
    s = _strategy()
    s.current_arrays = ArrayRecord({"w": Array(np.zeros(4, dtype=np.float64))})
    honest = [_reply(1000 + i, {"w": np.ones(4)}) for i in range(2)]
    huge = [_reply(2000 + i, {"w": np.full(4, 1e200)}) for i in range(3)]
    with np.errstate(over="ignore"):
        kept = s.screen(1, [*honest, *huge])
    assert kept == honest
    assert {(e.node_id, e.reason) for e in s.events} == {(2000 + i, "non-finite") for i in range(3)}


def test_replayed_release_is_refused(tmp_path) -> None:
    """Check that a copy of release 1's row renumbered 99 is not loaded as the newest."""
    import torch

    from edgewise.errors import SignatureError
    from edgewise.federated.publish import load_global_model, register_global_model
    from edgewise.registry import Registry

    register_global_model({"w": torch.zeros(2)}, tmp_path, "demo", {})
    register_global_model({"w": torch.ones(2)}, tmp_path, "demo", {})
    reg = Registry(tmp_path)
    first = reg.releases("group:federated")[0]
    with reg._lock, reg._db:
        reg._db.execute("INSERT INTO releases VALUES (?,?,?,?,?,?,?,?)",
                        (99, *dataclasses.astuple(first)[1:]))
    reg.close()
    with pytest.raises(SignatureError, match=r"Release 99 .*release 1 "):
        load_global_model(tmp_path, "demo")


def test_device_dp_refused_with_robust_rules_and_screen_runs_first() -> None:
    """Check dp_noise > 0 is refused unless fedavg, and a wrong-shape update is screened out
    (not clipped by Flower's DP wrapper into a crash) under fedavg + DP."""
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.client_app import app
    from edgewise.federated.server_app import run_federated

    def grid(n: int, attacks: dict[int, str]) -> InProcessGrid:
        return InProcessGrid(app, [{"partition-id": i, "num-partitions": n,
                                    "attack": attacks.get(i, "")} for i in range(n)],
                             {"dataset": "pump", "local-epochs": 1})

    with pytest.raises(InvalidParameterError, match="strategy='krum'"):
        run_federated(grid(5, {}), kind="ae", n_features=6, n_conditions=1, num_nodes=5,
                      rounds=1, strategy="krum", dp_noise=1.0)
    res = run_federated(grid(3, {1: "shape"}), kind="ae", n_features=6, n_conditions=1,
                        num_nodes=3, rounds=1, strategy="fedavg", dp_noise=0.5)
    assert {(e["node_id"], e["reason"]) for e in res.rejected} == {(1001, "shape")}
    assert not res.skipped_rounds
