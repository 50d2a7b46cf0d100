"""The robust screen refuses a reply whose metric keys or records differ from the round's
(Flower used to end the whole run), and keeps the norm check when the median norm is 0."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

from edgewise.federated.inprocess import SERVER_NODE_ID
from edgewise.federated.strategies import RobustStrategy, make_strategy

METRICS = {"num-examples": 10, "train-loss": 1.0}


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    """Flower stamps replies with the server's task identity; set it as InProcessGrid does."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id = 1
    TaskIdentity.node_id = SERVER_NODE_ID
    TaskIdentity.task_id = 0


def _reply(node: int, arrays: dict[str, np.ndarray], metrics: dict | None = None,
           names: tuple[str, str] = ("arrays", "metrics")) -> Message:
    instr = Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")
    content = RecordDict({
        names[0]: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
        names[1]: MetricRecord(dict(METRICS if metrics is None else metrics)),
    })
    return Message(content, reply_to=instr)


def _strategy(name: str, n: int, model: dict[str, np.ndarray]) -> RobustStrategy:
    s = make_strategy(name, num_nodes=n, beta=0.0)  # trimmed: the auto beta
    assert isinstance(s, RobustStrategy)
    s.current_arrays = ArrayRecord({k: Array(v) for k, v in model.items()})
    return s


MODEL = {"w": np.zeros(4, np.float32), "b": np.zeros(2, np.float32)}


def _honest(n: int, seed: int = 0) -> list[Message]:
    rng = np.random.default_rng(seed)
    return [_reply(1000 + i, {k: rng.normal(size=v.shape).astype(np.float32)
                              for k, v in MODEL.items()}) for i in range(n)]


@pytest.mark.parametrize(("metrics", "names", "needle"), [
    ({**METRICS, "hello": 1.0}, ("arrays", "metrics"), "extra metric keys ['hello']"),
    ({"num-examples": 10}, ("arrays", "metrics"), "missing metric keys ['train-loss']"),
    (METRICS, ("arrays", "m"), "records named 'arrays'/'m'"),
    (METRICS, ("a", "metrics"), "records named 'a'/'metrics'"),
])
@pytest.mark.parametrize("rule", ["trimmed", "fedavg", "krum"])
def test_a_reply_with_other_metric_keys_is_refused_and_the_round_goes_on(
        rule: str, metrics: dict, names: tuple[str, str], needle: str) -> None:
    """Check that one device adding, dropping or renaming a metric key or a record is
    refused naming the device and the difference; the others are aggregated (Flower
    raised InconsistentMessageReplies on the whole round, ending the run)."""
    s = _strategy(rule, 6, MODEL)
    evil = _reply(2000, {k: v + 0.1 for k, v in MODEL.items()}, metrics, names)
    arrays, out = s.aggregate_train(1, [*_honest(5), evil])
    assert arrays is not None and out is not None and set(arrays) == set(MODEL)
    assert [(e.node_id, e.reason) for e in s.events] == [(2000, "metrics")]
    assert needle in s.events[0].detail
    assert "train-loss" in s.events[0].detail or "records named" in s.events[0].detail


def test_a_refused_layout_counts_against_f() -> None:
    """Check that a reply refused for its metric keys is one of the f faulty clients."""
    s = make_strategy("krum", num_nodes=6, num_malicious_nodes=1)
    assert isinstance(s, RobustStrategy)
    s.current_arrays = ArrayRecord({k: Array(v) for k, v in MODEL.items()})
    evil = _reply(2000, MODEL, {**METRICS, "hello": 1.0})
    arrays, _ = s.aggregate_train(1, [*_honest(5), evil])
    assert arrays is not None and s.skipped_rounds == []


def test_a_tied_layout_goes_to_the_last_rounds_or_skips_the_round() -> None:
    """Check that with as many replies of one layout as of another, last round's layout
    wins; with no last round, every reply is refused and the round is skipped, not ended
    by an exception."""
    s = _strategy("fedavg", 2, MODEL)
    other = {**METRICS, "hello": 1.0}
    replies = [*_honest(1), _reply(2000, MODEL, other)]
    assert s.aggregate_train(1, replies) == (None, None)
    assert [e.reason for e in s.events] == ["metrics", "metrics"]
    assert "no layout is shared by more replies" in s.events[0].detail
    assert s.skipped_rounds == [1]
    s.screen(2, [*_honest(3), _reply(2001, MODEL, other)])  # round 2 settles the layout
    kept = s.screen(3, [*_honest(1, seed=3), _reply(2002, MODEL, other)])
    assert len(kept) == 1 and s.events[-1].node_id == 2002


@pytest.mark.parametrize("rule", ["fedavg", "trimmed"])
def test_median_norm_of_zero_does_not_let_a_huge_update_through(rule: str) -> None:
    """Check that when most devices send the global model back unchanged (median update
    norm 0), a device sending 1e6 in every weight is refused, not averaged in."""
    s = _strategy(rule, 3, MODEL)
    zeros = [_reply(1000 + i, dict(MODEL)) for i in range(2)]
    evil = _reply(2000, {k: np.full_like(v, 1e6) for k, v in MODEL.items()})
    arrays, _ = s.aggregate_train(1, [*zeros, evil])
    assert [(e.node_id, e.reason) for e in s.events] == [(2000, "norm")]
    assert "most replies left the global model unchanged" in s.events[0].detail
    assert arrays is not None and all(not a.numpy().any() for a in arrays.values())


def test_median_norm_of_zero_lets_rounding_through_and_refuses_a_real_move() -> None:
    """Check the rule for a median of 0 on a non-zero model: an update of float32 rounding
    size (within 10 x 1e-6 of the model's norm) passes, a real move is refused."""
    model = {"w": np.array([1.0, -2.0, 3.0, 0.5], np.float32), "b": np.ones(2, np.float32)}
    s = _strategy("fedavg", 5, model)
    same = [_reply(1000 + i, dict(model)) for i in range(3)]
    ulp = _reply(2000, {**model, "w": np.nextafter(model["w"], np.float32(9))})
    moved = _reply(2001, {**model, "b": model["b"] + np.float32(0.01)})
    kept = s.screen(1, [*same, ulp, moved])
    assert ulp in kept and moved not in kept
    assert [(e.node_id, e.reason) for e in s.events] == [(2001, "norm")]
    assert "1e-06 x the global model's norm" in s.events[0].detail


def test_the_norm_bound_is_unchanged_when_the_median_is_not_zero() -> None:
    """Check that an ordinary round still bounds the norm by 10 x the median alone."""
    s = _strategy("fedavg", 5, MODEL)
    honest = _honest(4)
    evil = _reply(2000, {k: np.full_like(v, 100.0) for k, v in MODEL.items()})
    kept = s.screen(1, [*honest, evil])
    assert kept == honest and [e.reason for e in s.events] == ["norm"]
    assert "the round's median update norm" in s.events[0].detail
