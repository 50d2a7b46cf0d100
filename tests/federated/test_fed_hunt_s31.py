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

def _server(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgewise", "federate", "server",
                           "--data-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("content", ["garbage", "no-round"])
def test_resume_from_an_unreadable_checkpoint_is_one_line(tmp_path: Path, content: str) -> None:
    ckpt = tmp_path / "federated" / "server" / "out" / "checkpoint.npz"
    ckpt.parent.mkdir(parents=True)
    if content == "garbage":
        ckpt.write_bytes(b"not a checkpoint at all")
    else:
        np.savez(ckpt, **{"p:0.weight": np.zeros((2, 2))})
    out = _server(tmp_path, "--resume", "--rounds", "2")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: --resume: "), out.stderr
    assert str(ckpt) in out.stderr and "without resuming" in out.stderr


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
def test_an_option_without_the_one_it_needs_is_refused(tmp_path: Path, args: list[str],
                                                      needle: str) -> None:
    out = subprocess.run([sys.executable, "-m", "edgewise", "federate", *args,
                          "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2
    assert needle in out.stderr and out.stderr.count("\n") == 1, out.stderr
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
