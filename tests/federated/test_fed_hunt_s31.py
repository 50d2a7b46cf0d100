"""Hunt s31: device replies that crashed the server or bent what it published, and options
that were silently ignored.

1. evaluation replies were never screened: one device claiming 10⁹ examples and a loss of
   10⁶ set the published eval-loss, and one extra metric key failed the run after training;
2. a train metric that is not a finite number (NaN steps, a list) crashed the privacy
   accounting before the robust screen saw the reply;
3. under SecAgg+ a NaN ε from one device dropped the round out of the reported ε;
4. ``federate server --resume`` on a damaged checkpoint printed numpy's traceback;
5. ``run_federated`` checked its rule only after the normaliser round, and its default β
   (0.2) was not the CLI's (the smallest that trims);
6. options that only act with another one were silently ignored without it.

Review of those fixes:

7. under SecAgg+ a device whose ε was fine but whose train-loss was not was left out of the
   round's ε (6.63 reported where 7.99 was spent), and a round in which every device had
   such a metric left the spent rounds; a reported ε is read one way everywhere;
8. with fewer than 3 evaluation replies one device still set the published eval-loss, and
   a capped (used) evaluation weight was counted as a refusal;
9. statistics stating ``dp-stats-noise`` 0 or -1.0 were said to state none.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edgewise.errors import InvalidParameterError
from edgewise.federated import client_app as ca
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.server_app import run_federated
from edgewise.federated.stats_privacy import StatsBounds
from tests.conftest import REPO
from tests.federated.test_cli_params import edgewise_in_process

torch.set_num_threads(1)
PUMP_BOUNDS = {"lower": [1000, 20, 1, 5, 30, 1], "upper": [2000, 90, 8, 30, 65, 6]}


def _bad_app(*, train: dict[str, Any] | None = None, evaluate: dict[str, Any] | None = None,
             stats: dict[str, Any] | None = None) -> ClientApp:
    """The real ClientApp, except that the node with ``bad`` in its node config sets these
    metrics in its train, evaluate or normaliser-statistics replies."""
    bad = ClientApp()

    def patched(msg: Message, reply: Message, ctx: Any,
                patch: dict[str, Any] | None) -> Message:
        if not patch or not ctx.node_config.get("bad") or reply.has_error():
            return reply
        content = RecordDict(dict(reply.content.array_records))
        for key, rec in reply.content.metric_records.items():
            content[key] = MetricRecord({**dict(rec), **patch})
        return Message(content, reply_to=msg)

    @bad.train()
    def _train(msg: Message, ctx: Any) -> Message:
        phase = msg.content["config"].get("phase", "fit")
        return patched(msg, ca.train(msg, ctx), ctx, stats if phase == "stats" else train)

    @bad.evaluate()
    def _evaluate(msg: Message, ctx: Any) -> Message:
        return patched(msg, ca.evaluate(msg, ctx), ctx, evaluate)

    return bad


def _grid(app: ClientApp, n: int = 4, **run_config: Any) -> InProcessGrid:
    return InProcessGrid(app, [{"partition-id": i, "num-partitions": n, "bad": i == 0}
                               for i in range(n)], {"dataset": "pump", **run_config})


def _refused(res: Any) -> list[tuple[int, str]]:
    return [(e["node_id"], e["reason"]) for e in res.rejected]


# -- 1. evaluation replies are screened -----------------------------------------------------

@pytest.mark.parametrize(("patch", "reason"), [
    ({"num-examples": 10**9, "eval-loss": 1e6}, "eval-weight-capped"),
    ({"extra": 1.0}, "eval-metrics"),  # raised InconsistentMessageReplies after training
    ({"eval-loss": [1.0, 2.0]}, "eval-metrics"),
])
def test_one_evaluation_reply_neither_sets_nor_fails_the_published_loss(
        patch: dict[str, Any], reason: str) -> None:
    res = run_federated(_grid(_bad_app(evaluate=patch)), kind="ae", n_features=6,
                        n_conditions=1, num_nodes=4, rounds=1, strategy="trimmed",
                        evaluate=True)
    loss = res.evaluate_metrics[1]["eval-loss"]
    assert math.isfinite(loss) and loss < 10, loss  # 999999.1 before
    assert _refused(res) == [(1000, reason)]
    # a capped weight is used, not refused (it was counted among the refused updates)
    capped = reason.endswith("-capped")
    assert [(e["node_id"], e["reason"]) for e in res.capped] == ([(1000, reason)] if capped
                                                                 else [])
    assert [(e["node_id"], e["reason"]) for e in res.refused] == ([] if capped
                                                                  else [(1000, reason)])
    assert res.evaluate_metrics[1]["eval-robust"] == 1  # 4 replies: trimmed


# -- 2. train metrics that are no finite number are refused, not a crash ----------------------

@pytest.mark.parametrize("patch", [
    {"dp-sgd-steps": float("nan")},  # ValueError: cannot convert float NaN to integer
    {"dp-sgd-steps": float("inf")},
    {"dp-sgd-noise": [1.0]},  # TypeError in float()
    {"train-loss": [1.0, 2.0]},  # TypeError in Flower's metric mean
    {"dp-sgd-epsilon": float("nan")},  # went through: the round's ε came out NaN
    {"dp-sgd-epsilon": -1.0},
])
def test_a_malformed_train_metric_is_refused_naming_the_device(patch: dict[str, Any],
                                                              caplog: Any) -> None:
    grid = _grid(_bad_app(train=patch), **{"dp-sgd-epsilon": 8.0, "num-server-rounds": 1})
    with caplog.at_level(logging.WARNING):
        res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=4,
                            rounds=1, strategy="trimmed", dp_sgd_epsilon=8.0)
    assert _refused(res) == [(1000, "metrics")]
    assert next(iter(patch)) in res.rejected[0]["detail"]
    assert res.privacy.epsilon is not None and 7.9 < res.privacy.epsilon <= 8.0 + 1e-6
    assert all(math.isfinite(v) for v in res.train_metrics[1].values())
    assert any("node 1000" in r.getMessage() for r in caplog.records)


def test_a_malformed_stated_statistics_noise_leaves_the_device_out() -> None:
    """A ``dp-stats-noise`` that is a list crashed the normaliser round (float([..]))."""
    grid = _grid(_bad_app(stats={"dp-stats-noise": [5.0]}),
                 **{"dp-sgd-epsilon": 8.0, "num-server-rounds": 1})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=4,
                        rounds=1, strategy="trimmed", dp_sgd_epsilon=8.0,
                        stats_bounds=StatsBounds.from_doc(PUMP_BOUNDS, 1))
    assert (1000, "no-dp-stats") in _refused(res)
    assert "[5.0]" in res.rejected[0]["detail"]


# -- 3. under SecAgg+ a NaN ε never makes the reported ε smaller ------------------------------

def test_secagg_nan_epsilon_refuses_the_round_and_keeps_the_honest_epsilon(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spent: list[float] = []
    fit = ca._fit

    def nan_in_round_2(data: Any, norm: Any, state: Any, context: Any, server_round: int,
                       *a: Any, **k: Any) -> Any:
        keys, sent, n, loss, (eps, z, q, steps) = fit(data, norm, state, context,
                                                      server_round, *a, **k)
        spent.append(eps)
        if context.node_config.get("bad") and server_round == 2:
            eps = math.nan
        return keys, sent, n, loss, (eps, z, q, steps)

    monkeypatch.setattr(ca, "_fit", nan_in_round_2)
    grid = _grid(ca.app, 3, **{"dp-sgd-epsilon": 8.0, "num-server-rounds": 2})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=3,
                        rounds=2, strategy="fedavg", robust=False, secagg=True,
                        dp_sgd_epsilon=8.0)
    assert res.privacy.epsilon >= max(spent) - 1e-9  # 6.63 over 1 round before, 7.99 spent
    assert res.privacy.rounds == 2
    assert res.skipped_rounds == [2]
    assert [(e["node_id"], e["reason"]) for e in res.rejected] == [(1000, "metrics")]


# -- 4. a damaged checkpoint is one line on --resume ----------------------------------------

@pytest.mark.parametrize("content", ["garbage", "no-round"])
def test_resume_from_an_unreadable_checkpoint_is_one_line(
        tmp_path: Path, content: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "federated" / "server" / "out" / "checkpoint.npz"
    ckpt.parent.mkdir(parents=True)
    if content == "garbage":
        ckpt.write_bytes(b"not a checkpoint at all")
    else:
        np.savez(ckpt, **{"p:0.weight": np.zeros((2, 2))})
    code, err = edgewise_in_process(["federate", "server", "--data-dir", str(tmp_path),
                                     "--resume", "--rounds", "2"], monkeypatch, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: --resume: "), err
    assert str(ckpt) in err and "without resuming" in err


# -- 5. run_federated: the rule is checked first, and beta defaults as the CLI's ------------

def test_a_rule_that_cannot_run_is_refused_before_the_normaliser_round() -> None:
    grid = _grid(ca.app, 3)
    with pytest.raises(InvalidParameterError, match=r"Krum cannot tolerate f=1"):
        run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=3, rounds=1,
                      strategy="krum", num_malicious_nodes=1)
    assert grid.bytes_down == 0  # no device was asked anything


def test_default_beta_is_the_smallest_that_trims() -> None:
    """Three devices with the trimmed mean and no beta: 0.2 trimmed nothing and was refused
    after the normaliser round; the default now trims one per side, as `federate server`."""
    res = run_federated(_grid(ca.app, 3), kind="ae", n_features=6, n_conditions=1,
                        num_nodes=3, rounds=1, strategy="trimmed")
    assert res.rounds_done == 1 and not res.skipped_rounds


# -- 6. options that depend on another are refused without it -------------------------------

@pytest.mark.parametrize(("args", "needle"), [
    # --port 70000 / --dp-epsilon 0.0001 fail later: before, the run would have started
    (["server", "--beta", "0.3", "--strategy", "krum", "--clients", "5", "--port", "70000"],
     "--beta 0.3 needs --strategy trimmed"),
    (["server", "--dp-clip", "2", "--port", "70000"], "--dp-clip 2 needs --dp-noise > 0"),
    (["server", "--cmapss-dir", "/data", "--port", "70000"],
     "--cmapss-dir /data needs --dataset cmapss"),
    (["server", "--stats-share", "0.5", "--dp-epsilon", "0.0001"],
     "--stats-share 0.5 needs --stats-bounds FILE"),
    (["demo", "--stats-share", "7", "--dp-epsilon", "0.0001"],
     "--stats-share 7 needs --stats-bounds FILE"),
])
def test_an_option_without_the_one_it_needs_is_refused(
        tmp_path: Path, args: list[str], needle: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, err = edgewise_in_process(["federate", *args, "--data-dir", str(tmp_path)],
                                    monkeypatch, capsys)
    assert code == 2
    assert needle in err and err.count("\n") == 1, err
    assert not (tmp_path / "federated").exists()


def test_max_epsilon_help_and_ledger_path_say_what_is_true() -> None:
    from edgewise.federated import ledger

    assert "privacy-ledger-<partition>.json" in (ledger.__doc__ or "")
    assert "-of-<partitions>" not in (ledger.__doc__ or "")
    out = subprocess.run([sys.executable, "-m", "edgewise", "federate", "client", "--help"],
                         capture_output=True, text=True, timeout=60, cwd=REPO,
                         env={**os.environ, "COLUMNS": "300"})
    text = " ".join(out.stdout.replace("│", " ").split())
    assert "not statistics sent without DP" in text, text


# -- 7. a reported ε counts whatever the reply's other metrics --------------------------------

@pytest.mark.parametrize("who", ["one", "all"])
def test_secagg_counts_the_epsilon_of_a_device_whose_other_metric_is_bad(
        monkeypatch: pytest.MonkeyPatch, who: str) -> None:
    """Round 2: the bad device (or every device) reports an infinite train-loss; the bad
    device's ε, a finite number, is the round's largest. It was left out with the round
    (one: an ε below what was spent; all: round 2 gone from the rounds that spent ε)."""
    spent: list[float] = []
    fit = ca._fit

    def bad_loss_in_round_2(data: Any, norm: Any, state: Any, context: Any,
                            server_round: int, *a: Any, **k: Any) -> Any:
        keys, sent, n, loss, (eps, z, q, steps) = fit(data, norm, state, context,
                                                      server_round, *a, **k)
        bad = bool(context.node_config.get("bad"))
        if server_round == 2 and (bad or who == "all"):
            loss = math.inf
            eps += 0.5 if bad else 0.0
        spent.append(eps)
        return keys, sent, n, loss, (eps, z, q, steps)

    monkeypatch.setattr(ca, "_fit", bad_loss_in_round_2)
    grid = _grid(ca.app, 3, **{"dp-sgd-epsilon": 8.0, "num-server-rounds": 2})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=3,
                        rounds=2, strategy="fedavg", robust=False, secagg=True,
                        dp_sgd_epsilon=8.0)
    assert res.skipped_rounds == [2]
    assert res.privacy.epsilon >= max(spent) - 1e-9
    assert math.isfinite(res.privacy.epsilon)
    assert res.privacy.rounds == 2 and res.rounds_done == 2


def _msg(node: int, metrics: dict[str, Any], kind: str = "train") -> Message:
    from flwr.supercore.task_identity import TaskIdentity

    from edgewise.federated.inprocess import SERVER_NODE_ID

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SERVER_NODE_ID, 0
    instr = Message(RecordDict(), dst_node_id=node, message_type=kind, group_id="1")
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=instr)


DP = {"dp-sgd-noise": 1.0, "dp-sgd-rate": 0.05, "dp-sgd-steps": 20}


@pytest.mark.parametrize(("metrics", "want"), [
    ({"dp-sgd-epsilon": math.nan}, math.inf),  # no mechanism to account: counted as 0
    ({"dp-sgd-epsilon": -1.0}, math.inf),
    ({**DP, "dp-sgd-epsilon": math.nan}, 2.0),  # the server accounts the mechanism itself
    ({**DP, "dp-sgd-epsilon": 7.5}, 7.5),
])
def test_plain_rounds_read_a_reported_epsilon_as_secagg_and_the_metrics_do(
        metrics: dict[str, Any], want: float) -> None:
    from edgewise.federated.server_app import _dp_sgd_spent

    mechanisms, reported = _dp_sgd_spent([_msg(7, {"dp-sgd-epsilon": 2.0}),
                                          _msg(8, metrics)])
    assert reported == want  # 2.0 for the first two before: an unknown ε counted as nothing
    assert ("8" in mechanisms) == ("dp-sgd-noise" in metrics)


# -- 8. evaluation with fewer than 3 devices is flagged; a cap is not a refusal ------------

def _eval(node: int, loss: float, n: int) -> Message:
    return _msg(node, {"num-examples": n, "unit-weight": 1, "eval-loss": loss}, "evaluate")


@pytest.mark.parametrize(("replies", "robust"), [
    ([(1, 0.2, 100), (2, 1e6, 100)], 0),  # one of two set the eval-loss (500000.1)
    ([(1, 0.2, 100)], 0),
    ([(1, 0.2, 100), (2, 0.3, 100), (3, 1e6, 100)], 1),
])
def test_evaluation_of_fewer_than_three_devices_is_flagged_not_robust(
        replies: list[tuple[int, float, int]], robust: int, caplog: Any) -> None:
    from edgewise.federated.strategies import make_strategy

    s = make_strategy("fedavg", num_nodes=len(replies), fraction_evaluate=1.0)
    with caplog.at_level(logging.WARNING):
        out = s.aggregate_evaluate(1, [_eval(*r) for r in replies])
    assert out is not None and out["eval-robust"] == robust
    assert ("one device can set the published evaluation metrics" in caplog.text) == (
        not robust)
    if robust:
        assert out["eval-loss"] == pytest.approx(0.3)


def test_a_capped_evaluation_weight_is_logged_as_used_not_rejected(caplog: Any) -> None:
    from edgewise.federated.strategies import make_strategy

    s = make_strategy("fedavg", num_nodes=3, fraction_evaluate=1.0)
    with caplog.at_level(logging.WARNING):
        s.aggregate_evaluate(1, [_eval(1, 0.2, 100), _eval(2, 0.3, 100),
                                 _eval(3, 0.4, 10**9)])
    assert [e.reason for e in s.events] == ["eval-weight-capped"]
    (line,) = [r.getMessage() for r in caplog.records if "node 3" in r.getMessage()]
    assert "used with its weight capped" in line and "rejected" not in line


# -- 9. a stated dp-stats-noise of 0 or below is named as stated -----------------------------

@pytest.mark.parametrize("stated", [0, -1.0])
def test_statistics_stating_no_noise_are_named_by_what_they_state(stated: float) -> None:
    from edgewise.federated.server_app import _StatsRound

    rule = _StatsRound(1, 2, 0, dp=True, dp_noise=5.0)
    assert not rule._released_with_dp(_msg(9, {"dp-stats-noise": stated}))
    detail = rule.refused[0]["detail"]
    assert f"stating dp-stats-noise {stated!r}" in detail, detail
    assert "no dp-stats-noise" not in detail  # said it stated none
