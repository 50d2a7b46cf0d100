"""Regression tests for the federated defects a bug hunt reproduced: a dropout loosening the
robust rule, resumed runs misreporting ε, one device setting the normaliser, SecAgg+ passing
bad updates on, and ``--resume --secagg`` ignoring the checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edgewise.federated import client_app as ca
from edgewise.federated import server_app as sa
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.ledger import RunLedger
from edgewise.federated.strategies import RobustStrategy, make_strategy

torch.set_num_threads(1)

MODEL = {"w": np.ones(4, np.float32), "b": np.ones(2, np.float32)}
METRICS = {"num-examples": 10, "train-loss": 1.0}


# Flower stamps replies with the server's task identity; set it as InProcessGrid does
from tests.federated.test_screen_layout_and_norm import _task_identity  # noqa: E402, F401


def _instruction(node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")


def _reply(node: int, step: float, rng: np.random.Generator | None = None) -> Message:
    """A reply moving the model by ``step`` in every weight (plus a little noise)."""
    rng = rng or np.random.default_rng(node)
    arrays = {k: (v + step + 0.01 * rng.standard_normal(v.shape)).astype(np.float32)
              for k, v in MODEL.items()}
    content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord(dict(METRICS))})
    return Message(content, reply_to=_instruction(node))


def _dropped(node: int) -> Message:
    from flwr.app import Error
    from flwr.common.constant import ErrorCode

    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                         reason="device went offline"), reply_to=_instruction(node))


def _strategy(name: str, n: int) -> RobustStrategy:
    s = make_strategy(name, num_nodes=n, beta=0.0)  # trimmed: the automatic beta
    assert isinstance(s, RobustStrategy)
    s.current_arrays = ArrayRecord({k: Array(v) for k, v in MODEL.items()})
    return s


def _moved(arrays: ArrayRecord) -> float:
    """How far the aggregate moved the model, per weight (the mean over weights)."""
    return float(np.mean([(arrays[k].numpy() - v).mean() for k, v in MODEL.items()]))


# -- 1. a dropout must not turn the default robust rule into a plain mean ------------------

def test_a_dropout_does_not_turn_the_trimmed_mean_of_three_into_a_plain_mean() -> None:
    """3 sampled, one drops out, one of the two left moves 5x the other (within the norm
    bound): a trimmed mean of 2 cannot trim one per side, so the round is skipped; it used
    to be their plain mean, which the attacker moves at will."""
    s = _strategy("trimmed", 3)
    arrays, _ = s.aggregate_train(1, [_reply(1000, 0.1), _reply(1001, 0.5), _dropped(1002)])
    assert (arrays, s.skipped_rounds) == (None, [1])
    assert [e.reason for e in s.events] == ["error"]


def test_a_dropout_still_trims_one_per_side_when_enough_are_left() -> None:
    """5 sampled (auto beta 0.2: one per side), one drops out: beta 0.2 of the 4 left trims
    none, so the round's beta is raised to trim one per side, and an attacker that passes
    the norm screen is trimmed rather than averaged in."""
    s = _strategy("trimmed", 5)
    honest = [_reply(1000 + i, 0.1) for i in range(3)]
    arrays, _ = s.aggregate_train(1, [*honest, _reply(2000, 0.9), _dropped(1003)])
    assert arrays is not None and s.skipped_rounds == []
    assert _moved(arrays) == pytest.approx(0.1, abs=0.02)  # a plain mean of 4: 0.3
    assert s.strategy.beta == pytest.approx(0.2)  # restored after the round


@pytest.mark.parametrize(("step", "needle"), [
    (1e5, "2 x the global model's norm"),  # scaled 1e6: past every bound
    (1.5, "the smaller update norm of the round's two"),  # 15x the other, within 2x the model
])
@pytest.mark.parametrize("rule", ["fedavg", "trimmed"])
def test_of_two_updates_one_scaled_far_beyond_the_other_is_refused(
        rule: str, step: float, needle: str) -> None:
    """The median of two norms is their mean, which the larger never exceeds 10 times: one
    update scaled 1e6 was averaged in under fedavg (2 clients) and under trimmed after a
    dropout. The smaller of the two is the reference now, and the model's norm caps both."""
    s = _strategy(rule, 2 if rule == "fedavg" else 3)
    replies = [_reply(1000, 0.1), _reply(2000, step)]
    if rule == "trimmed":
        replies.append(_dropped(1002))
    arrays, _ = s.aggregate_train(1, replies)
    assert [(e.node_id, e.reason) for e in s.events if e.reason == "norm"] == [(2000, "norm")]
    assert needle in s.events[-1].detail
    assert arrays is not None and _moved(arrays) == pytest.approx(0.1, abs=0.02)


def test_a_lone_update_is_bounded_by_the_earlier_rounds_and_the_model() -> None:
    """One update left in a round has no median to compare with: it is bounded by 10x the
    earlier rounds' accepted norms, and in a first round by 2x the global model's norm."""
    s = _strategy("fedavg", 3)
    s.aggregate_train(1, [_reply(1000 + i, 0.1) for i in range(3)])  # accepted: ~0.24
    s.current_arrays = ArrayRecord({k: Array(v) for k, v in MODEL.items()})
    arrays, _ = s.aggregate_train(2, [_reply(2000, 5.0), _dropped(1001), _dropped(1002)])
    assert arrays is None and s.events[-1].reason == "norm"
    assert "accepted in the last 1 round(s)" in s.events[-1].detail
    first = _strategy("fedavg", 3)
    arrays, _ = first.aggregate_train(1, [_reply(2000, 50.0), _dropped(1001), _dropped(1002)])
    assert arrays is None and "x the global model's norm" in first.events[-1].detail
    ok, _ = first.aggregate_train(2, [_reply(1000, 0.1), _dropped(1001), _dropped(1002)])
    assert ok is not None  # an ordinary lone update passes


def _scaling_app(attacker: int, k: float, dropout: int | None) -> ClientApp:
    """The real ClientApp, except ``attacker`` scales its update by ``k`` and ``dropout``
    fails in every training round."""
    app = ClientApp(mods=[ca.secagg_when_asked])

    @app.train()
    def train(msg, context):
        pid = context.node_config["partition-id"]
        fit = msg.content["config"].get("phase", "fit") == "fit"
        if fit and pid == dropout:
            raise RuntimeError("device dropped out")
        reply = ca.train(msg, context)
        if not fit or pid != attacker:
            return reply
        old, new = msg.content["arrays"], reply.content["arrays"]
        out = ArrayRecord({n: Array(old[n].numpy() + k * (new[n].numpy() - old[n].numpy()))
                           for n in new})
        return Message(RecordDict({"arrays": out, "metrics": reply.content["metrics"]}),
                       reply_to=msg)

    @app.evaluate()
    def evaluate(msg, context):
        return ca.evaluate(msg, context)

    return app


def _grid(n: int, app: ClientApp = ca.app, nodes: dict[int, dict] | None = None,
          **rc) -> InProcessGrid:
    return InProcessGrid(app, [{"partition-id": i, "num-partitions": n,
                                **(nodes or {}).get(i, {})} for i in range(n)],
                         {"dataset": "pump", **rc})


def _run(grid: InProcessGrid, rounds: int = 1, **kw) -> sa.FederatedResult:
    return sa.run_federated(grid, kind="ae", n_features=6, n_conditions=1,
                            num_nodes=len(list(grid.get_node_ids())), rounds=rounds, **kw)


def _maxabs(res: sa.FederatedResult) -> float:
    return max(float(np.abs(v.numpy()).max()) for v in res.arrays.values())


def test_the_default_rule_with_a_dropout_keeps_a_scaled_update_out_end_to_end() -> None:
    """``--num-malicious 0`` trimmed over 3 devices, one scaling its update by 1e4 and one
    dropping out: the model's largest weight was 295; now the attacker is refused and the
    model is the honest device's (largest weight about 0.57)."""
    res = _run(_grid(3, _scaling_app(0, 1e4, dropout=1)), strategy="trimmed", beta=0.0)
    assert sorted(e["reason"] for e in res.rejected) == ["error", "norm"]
    assert _maxabs(res) < 2.0


# -- 2. a resumed run must not report a device-level ε that does not cover the model -------

def test_resuming_with_dp_noise_after_rounds_without_it_is_refused(tmp_path) -> None:
    """Round 1 aggregated without server noise; a resume adding --dp-noise reported
    unit=device, eps=4.73 for a model round 1 moved without noise."""
    ckpt = tmp_path / "checkpoint.npz"
    rc = {"dp-sgd-noise": 1.0}  # record-level DP-SGD at a fixed noise: no calibration
    _run(_grid(3, **rc), rounds=1, strategy="fedavg", checkpoint=ckpt)
    with pytest.raises(sa.FederatedRunError, match=r"round\(s\) \[1\] were aggregated without "
                                                   r"device-level DP noise"):
        _run(_grid(3, **rc), rounds=2, strategy="fedavg", checkpoint=ckpt, dp_noise=1.0)
    ledger = json.loads(sa.run_ledger_path(ckpt).read_text())["rounds"]
    assert [(r["round"], r["kind"]) for r in ledger] == [(1, "record"), (1, "aggregated")]


def test_device_epsilon_needs_every_finished_round_noisy() -> None:
    led = RunLedger()
    led.aggregated_round(1)
    led.device_round(2, noise_multiplier=1.0, num_devices=3, sample_size=3)
    led.aggregated_round(2)
    from edgewise.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=r"round\(s\) \[1\] were aggregated "
                                                    "without device-level DP noise"):
        led.device_epsilon(1e-5)
    assert led.resume_conflict(noise_multiplier=1.0, num_devices=3, sample_size=3)
    assert led.resume_conflict(noise_multiplier=0.0, num_devices=3, sample_size=3)
    noisy = RunLedger()
    noisy.device_round(1, noise_multiplier=1.0, num_devices=3, sample_size=3)
    noisy.aggregated_round(1)
    assert noisy.resume_conflict(noise_multiplier=1.0, num_devices=3, sample_size=3) is None
    assert "not --dp-noise 2" in noisy.resume_conflict(noise_multiplier=2.0, num_devices=3,
                                                       sample_size=3)
    assert "resume with --dp-noise 1" in noisy.resume_conflict(
        noise_multiplier=0.0, num_devices=3, sample_size=3)


def _checkpoint(tmp_path, ledger: RunLedger | None = None) -> None:
    out = tmp_path / "federated" / "server" / "out"
    out.mkdir(parents=True)
    np.savez(out / "checkpoint.npz", __round__=np.array(1), __norm_mean__=np.zeros((1, 6)),
             __norm_std__=np.ones((1, 6)))
    if ledger is not None:
        ledger.path = sa.run_ledger_path(out / "checkpoint.npz")
        ledger._add({"round": 1, "kind": "aggregated", "segment": 0})


@pytest.mark.parametrize(("options", "needle"), [
    ({"dp_noise": 1.0, "strategy": "fedavg", "dp_epsilon": 0.0},
     "--resume: Cannot resume from .*were aggregated without device-level DP noise"),
    ({"secagg": True, "strategy": "fedavg"}, "--resume cannot be combined with --secagg"),
])
def test_federate_server_refuses_a_resume_it_cannot_honour(tmp_path, capsys, monkeypatch,
                                                            options, needle) -> None:
    """Refused in one line before any process starts: a resume adding --dp-noise after
    rounds without it, and --resume --secagg (SecAgg+ keeps no checkpoint, so the run
    started afresh while the user asked to resume)."""
    import re

    import typer

    from edgewise.cli import federate
    from edgewise.cli.federate import server

    def started(*_a, **_k):
        raise AssertionError("the fleet was started")

    monkeypatch.setattr(federate, "_run_fleet", started)

    _checkpoint(tmp_path, RunLedger())
    kw = {"rounds": 2, "clients": 3, "min_available": 0, "num_malicious": 0, "beta": 0.0,
          "dp_noise": 0.0, "dp_clip": 1.0, "dp_epsilon": 0.0, "dataset": "pump",
          "cmapss_dir": "", "host": "127.0.0.1", "port": 9092, "round_timeout": 60.0,
          "resume": True, "secagg": False, "rollout_to": "group:federated", "as_json": False,
          "strategy": "trimmed", **options}
    with pytest.raises(typer.Exit) as exc:
        server(data_dir=tmp_path, **kw)
    assert exc.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(needle, err), err


# -- 3. one device must not set the fleet normaliser by default ----------------------------

def _stats_poisoner() -> ClientApp:
    """Partition 0 claims 10^9 records of mean 1000 in the normaliser round."""
    app = ClientApp(mods=[ca.secagg_when_asked])

    @app.train()
    def train(msg, context):
        reply = ca.train(msg, context)
        if context.node_config["partition-id"] != 0 \
                or msg.content["config"].get("phase") != "stats":
            return reply
        a = reply.content["arrays"]
        count, total = a["count"].numpy(), a["sum"].numpy()
        n, mu = 1e9, 1e3
        out = ArrayRecord({"count": Array(np.full_like(count, n)),
                           "sum": Array(np.full_like(total, mu * n)),
                           "sumsq": Array(np.full_like(total, (mu * mu + 1) * n))})
        return Message(RecordDict({"arrays": out, "metrics": reply.content["metrics"]}),
                       reply_to=msg)

    return app


def test_one_device_cannot_move_the_normaliser_with_the_default_f() -> None:
    """f=0 (the default): the statistics used to be pooled exactly, so one device claiming
    10^9 records of mean 1000 set every feature's mean to 1000."""
    honest = sa.fit_normaliser(_grid(5), 1, 5)
    poisoned = sa.fit_normaliser(_grid(5, _stats_poisoner()), 1, 5)
    np.testing.assert_allclose(poisoned.mean, honest.mean, rtol=0.1, atol=5.0)
    np.testing.assert_allclose(poisoned.std, honest.std, rtol=0.5)
    assert abs(poisoned.mean[0, 2] - 1000) > 900


# -- 4. SecAgg+: bad counts and bad aggregates never reach the published model -------------

def test_secagg_aggregate_screen_refuses_nan_huge_moves_and_bad_counts() -> None:
    from edgewise.federated.secagg import _AggregateScreen

    class Res:
        def __init__(self, n):
            self.num_examples = n

    class Proxy:
        def __init__(self, nid):
            self.node_id = nid

    initial = [np.ones(4), np.ones(2)]
    screen = _AggregateScreen(initial, max_weight=1e4)
    assert screen.weights_ok(1, [(Proxy(1), Res(600)), (Proxy(2), Res(650))])
    assert not screen.weights_ok(1, [(Proxy(1), Res(600)), (Proxy(2), Res(10**9))])
    assert "node 2" in screen.rejected[-1]["detail"] and "max_weight" in \
        screen.rejected[-1]["detail"]
    assert not screen.weights_ok(2, [(Proxy(1), Res(600)), (Proxy(2), Res(9000))])
    assert not screen.aggregate_ok(3, [np.full(4, np.nan), np.ones(2)])
    assert not screen.aggregate_ok(4, [np.full(4, 45467.0), np.ones(2)])
    assert screen.aggregate_ok(5, [np.full(4, 1.1), np.ones(2)])
    assert not screen.aggregate_ok(6, [np.full(4, 4.0), np.ones(2)])  # 10x the last move
    assert screen.skipped_rounds == [1, 2, 3, 4, 6]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's NaN cast in quantisation
@pytest.mark.parametrize("attack", ["nan", "weight"])
def test_one_bad_device_does_not_corrupt_the_secagg_model(attack: str) -> None:
    """Under --secagg a device sending NaN gave a model of finite garbage (largest weight
    45467), and one claiming 10^9 examples took the average. Now the device refuses to send
    a non-finite update (the round goes on without it), and a count above 10x the others'
    refuses the round, so a one-round run registers nothing."""
    grid = _grid(3, nodes={0: {"attack": attack}})
    if attack == "weight":
        with pytest.raises(sa.FederatedRunError, match=r"num-examples 10000, more than 10 x"):
            _run(grid, strategy="fedavg", secagg=True, robust=False, round_timeout=60)
        return
    res = _run(grid, strategy="fedavg", secagg=True, robust=False, round_timeout=60)
    assert _maxabs(res) < 2.0


# -- 5. a resumed run stays within the record-level budget ----------------------------------

def test_dp_sgd_budget_of_a_resumed_run_leaves_room_for_the_earlier_rounds() -> None:
    """Devices used to calibrate afresh for every round of the run, ignoring what the
    earlier rounds (before a resume) spent: eps=8 for round 1, resumed to 2 rounds, 8.97."""
    from edgewise.federated.client_app import dp_sgd_budget
    from edgewise.federated.privacy import (
        dp_sgd_history,
        rdp_to_epsilon,
        worst_case_rdp,
    )

    def total(*segments: tuple[float, int]) -> float:
        return rdp_to_epsilon(worst_case_rdp([[[dp_sgd_history(z, 32, 600, r)]]
                                              for z, r in segments]))

    z1, _ = dp_sgd_budget({"dp-sgd-epsilon": 8.0, "num-server-rounds": 1}, 600)
    spent = worst_case_rdp([[[dp_sgd_history(z1, 32, 600, 1)]]])
    assert 7.9 < rdp_to_epsilon(spent) <= 8.0
    two = {"dp-sgd-epsilon": 8.0, "num-server-rounds": 2}
    afresh, _ = dp_sgd_budget(two, 600)  # what the devices did: 8.97 over the 2 rounds
    assert total((z1, 1), (afresh, 1)) > 8.9
    z2, _ = dp_sgd_budget(two, 600, rounds_done=1, run_prior_rdp=spent)
    assert z2 > afresh and 7.99 < total((z1, 1), (z2, 1)) <= 8.0
    # a run stopped after round 1 of 3 and resumed as planned keeps its noise
    z3, _ = dp_sgd_budget({"dp-sgd-epsilon": 8.0, "num-server-rounds": 3}, 600)
    kept, _ = dp_sgd_budget({"dp-sgd-epsilon": 8.0, "num-server-rounds": 3}, 600,
                            rounds_done=1,
                            run_prior_rdp=worst_case_rdp([[[dp_sgd_history(z3, 32, 600, 1)]]]))
    assert kept == z3


def test_a_resume_past_the_spent_budget_is_refused(tmp_path) -> None:
    led = RunLedger(sa.run_ledger_path(tmp_path / "c.npz"))
    led.record_round(1, {"7": (0.5, 0.05, 200)}, reported=30.0)
    led.aggregated_round(1)
    np.savez(tmp_path / "c.npz", __round__=np.array(1))
    with pytest.raises(sa.FederatedRunError, match=r"already spent record-level epsilon 30"):
        sa.check_resume(tmp_path / "c.npz", rounds=2, dp_sgd_epsilon=8.0, num_devices=3)


def test_a_resumed_run_tells_the_devices_what_the_earlier_rounds_spent(tmp_path) -> None:
    """The server's train config of a resumed run carries the rounds already done and the
    ledger's worst-case RDP curve of them, which the devices calibrate the rest against."""
    from edgewise.federated.privacy import composed_epsilon, rdp_to_epsilon

    ckpt = tmp_path / "checkpoint.npz"
    _run(_grid(3), rounds=1, strategy="fedavg", checkpoint=ckpt)
    RunLedger(sa.run_ledger_path(ckpt)).load().record_round(1, {"1000": (1.0, 0.05, 19)})
    seen: list[dict] = []
    spy = ClientApp(mods=[ca.secagg_when_asked])

    @spy.train()
    def train(msg, context):
        if msg.content["config"].get("phase") == "fit":
            seen.append(dict(msg.content["config"]))
        return ca.train(msg, context)

    _run(_grid(3, spy), rounds=2, strategy="fedavg", checkpoint=ckpt)
    assert len(seen) == 3 and all(c["dp-sgd-rounds-done"] == 1 for c in seen)
    assert rdp_to_epsilon(seen[0]["dp-sgd-prior-rdp"]) == pytest.approx(
        composed_epsilon([(1.0, 0.05, 19)]), rel=1e-9)
