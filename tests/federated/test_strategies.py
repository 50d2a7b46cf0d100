"""Robust aggregation under attack: bad updates are rejected or clipped, rules refuse bad n/f/β."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from flwr.serverapp.strategy import Bulyan, FedTrimmedAvg, Krum

from edgewise.errors import InvalidParameterError
from edgewise.federated.client_app import app
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.server_app import run_federated
from edgewise.federated.strategies import RobustStrategy, check_rule_conditions, make_strategy

torch.set_num_threads(1)


def _run(attacks: dict[int, str], n: int = 10, rounds: int = 3, strategy: str = "trimmed",
         robust: bool = True, f: int = 0, beta: float = 0.2):
    cfgs = [{"partition-id": i, "num-partitions": n, "attack": attacks.get(i, "")}
            for i in range(n)]
    grid = InProcessGrid(app, cfgs, {"dataset": "pump", "local-epochs": 1, "seed": 3})
    return run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n,
                         rounds=rounds, strategy=strategy, robust=robust,
                         num_malicious_nodes=f, beta=beta, evaluate=True)


def test_malformed_updates_are_all_rejected_or_clipped():
    """Check that NaN, Inf, wrong shape, 100x norm and 10^9 examples never count unchecked."""
    attacks = {1: "nan", 3: "inf", 5: "shape", 7: "scale100", 9: "weight"}
    res = _run(attacks, n=10, rounds=2, f=0, strategy="fedavg")  # the wrapper alone
    node = {1000 + i: a for i, a in attacks.items()}
    expected = {"nan": "non-finite", "inf": "non-finite", "shape": "shape", "scale100": "norm",
                "weight": "weight-capped"}
    for rnd in (1, 2):
        got = {(e["node_id"], e["reason"]) for e in res.rejected if e["server_round"] == rnd}
        for nid, attack in node.items():
            assert (nid, expected[attack]) in got, (rnd, attack, got)
        honest = {e["node_id"] for e in res.rejected if e["server_round"] == rnd} - set(node)
        assert not honest, f"honest clients rejected: {honest}"
    arrays = [v.numpy() for v in res.arrays.values()]
    assert all(np.isfinite(a).all() for a in arrays)
    assert not res.skipped_rounds


def test_signflip_poisoning_breaks_fedavg_not_robust_rule():
    """Check that 20% sign-flipped x10 clients wreck FedAvg but not the robust trimmed mean."""
    poisoned = {0: "signflip", 5: "signflip"}
    clean = _run({}, strategy="trimmed", f=2)
    robust = _run(poisoned, strategy="trimmed", f=2)
    fedavg = _run(poisoned, strategy="fedavg", robust=False)
    loss = lambda r: r.evaluate_metrics[max(r.evaluate_metrics)]["eval-loss"]  # noqa: E731
    assert loss(robust) <= 1.1 * loss(clean), (loss(robust), loss(clean))
    assert loss(fedavg) > 2 * loss(clean), (loss(fedavg), loss(clean))


def test_krum_refuses_too_few_clients():
    """Check that Krum with n <= 2f + 2 is refused with n and f in the message."""
    with pytest.raises(InvalidParameterError, match=r"f=2 malicious clients with n=6.*2f \+ 2"):
        RobustStrategy(Krum(num_malicious_nodes=2, min_train_nodes=6), num_malicious_nodes=2)


def test_bulyan_refuses_too_few_clients():
    """Check that Bulyan with n < 4f + 3 is refused instead of skipping rounds silently."""
    with pytest.raises(InvalidParameterError, match=r"Bulyan .*f=2.*n=10.*4f \+ 3 = 11"):
        make_strategy("bulyan", num_nodes=10, num_malicious_nodes=2)


def test_trimmed_mean_refuses_small_beta():
    """Check that a trimmed mean that trims fewer than f per side is refused, naming beta."""
    with pytest.raises(InvalidParameterError, match=r"beta=0.1 trims 1 .* n=10.* f=2"):
        check_rule_conditions(FedTrimmedAvg(beta=0.1), n=10, f=2)


def test_fedavg_refuses_malicious_budget():
    """Check that asking plain FedAvg to tolerate f > 0 is an error."""
    with pytest.raises(InvalidParameterError, match="FedAvg has no tolerance"):
        make_strategy("fedavg", num_nodes=5, num_malicious_nodes=1)


def test_bulyan_and_krum_run_with_attackers():
    """Check that Krum and Bulyan wrapped by RobustStrategy finish rounds with attackers."""
    for name, n, f in (("krum", 7, 2), ("bulyan", 7, 1)):
        res = _run({0: "signflip", 1: "nan"}, n=n, rounds=2, strategy=name, f=f)
        assert not res.skipped_rounds, name
        assert all(np.isfinite(v.numpy()).all() for v in res.arrays.values())
        assert isinstance(make_strategy(name, num_nodes=n, num_malicious_nodes=f).strategy,
                          (Krum, Bulyan))


@pytest.mark.parametrize(("n", "f", "beta"), [(3, 1, 0.33), (7, 1, 0.14), (10, 3, 0.25)])
def test_trimmed_mean_refusal_suggests_a_beta_that_passes(n: int, f: int, beta: float) -> None:
    """Check the suggested beta trims f per side: the message rounded f/n to 2 digits, so
    n=3, f=1, beta=0.33 was told to use beta >= 0.33, the value just refused."""
    import re

    with pytest.raises(InvalidParameterError) as e:
        check_rule_conditions(FedTrimmedAvg(beta=beta), n=n, f=f)
    need = float(re.search(r"beta >= ([0-9.]+)", str(e.value)).group(1))
    assert need > beta
    check_rule_conditions(FedTrimmedAvg(beta=need), n=n, f=f)  # passes


def test_trimmed_mean_refusal_asks_for_clients_when_no_beta_can_do() -> None:
    """n=2, f=1 needs beta >= 0.5, which is out of range: the message asks for clients."""
    with pytest.raises(InvalidParameterError, match=r"more clients: n > 2f = 2") as e:
        check_rule_conditions(FedTrimmedAvg(beta=0.2), n=2, f=1)
    assert "beta >=" not in str(e.value)


# Krum, Multi-Krum and Bulyan as the papers state them; the refusals of rules and f ---------
# An independent float64 reference: Blanchard et al. 2017 (Krum: the update with the least
# sum of squared distances to its n - f - 2 nearest others; Multi-Krum: the plain mean of
# the m best) and El Mhamdi et al. 2018 (Bulyan: theta = n - 2f picked by Krum one at a
# time, each pick removed and the rest rescored; per coordinate the mean of the
# beta = theta - 2f picked values closest to their median).

def _ref_scores(xs: list[np.ndarray], f: int) -> list[float]:
    k = max(1, len(xs) - f - 2)
    return [sum(sorted(float(np.dot(a - b, a - b)) for j, b in enumerate(xs) if j != i)[:k])
            for i, a in enumerate(xs)]


def _ref_multikrum(xs: list[np.ndarray], f: int, m: int) -> np.ndarray:
    s = _ref_scores(xs, f)
    return np.mean([xs[i] for i in sorted(range(len(xs)), key=lambda i: (s[i], i))[:m]], 0)


def _ref_bulyan(xs: list[np.ndarray], f: int) -> np.ndarray:
    rest, picked = list(range(len(xs))), []
    theta = len(xs) - 2 * f
    while len(picked) < theta:
        s = _ref_scores([xs[i] for i in rest], f)
        picked.append(rest.pop(min(range(len(rest)), key=lambda i: (s[i], i))))
    cols = np.array([xs[i] for i in picked]).T
    out = []
    for col in cols:
        med = float(np.median(col))
        near = sorted(range(theta), key=lambda r: (abs(col[r] - med), r))[:theta - 2 * f]
        out.append(float(np.mean(col[near])))
    return np.array(out)


@pytest.fixture
def _task_identity() -> None:
    """Flower stamps replies with the server's task identity; set it as InProcessGrid does."""
    from flwr.supercore.task_identity import TaskIdentity

    from edgewise.federated.inprocess import SERVER_NODE_ID

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, SERVER_NODE_ID, 0


def _reply(node: int, w: np.ndarray, examples: int = 100) -> Any:
    from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict

    instr = Message(RecordDict(), dst_node_id=node, message_type="train", group_id="1")
    return Message(RecordDict({"arrays": ArrayRecord({"w": Array(np.asarray(w, np.float32))}),
                               "metrics": MetricRecord({"num-examples": examples})}),
                   reply_to=instr)


def _aggregate(rule: Any, f: int, w0: np.ndarray, ws: list[np.ndarray],
               examples: list[int] | None = None, extra: tuple[Any, ...] = ()) -> Any:
    from flwr.app import Array, ArrayRecord

    s = RobustStrategy(rule, num_malicious_nodes=f)
    s.current_arrays = ArrayRecord({"w": Array(np.asarray(w0, np.float32))})
    examples = examples or [100] * len(ws)
    replies = [_reply(1000 + i, w, e) for i, (w, e) in enumerate(zip(ws, examples, strict=True))]
    out, _ = s.aggregate_train(1, [*replies, *extra])
    return s, None if out is None else out["w"].numpy()


@pytest.mark.usefixtures("_task_identity")
@pytest.mark.parametrize(("name", "n", "f", "m"), [
    ("krum", 7, 2, 1), ("multikrum", 7, 1, 6), ("multikrum", 9, 2, 5),
    ("bulyan", 7, 1, 0), ("bulyan", 11, 2, 0)])
def test_krum_multikrum_bulyan_follow_the_papers(name: str, n: int, f: int, m: int) -> None:
    """Check the aggregate equals the float64 reference of the paper's rule, with attackers
    that claim 10x the examples: Flower weighted Multi-Krum's mean by them (the attacker
    had 71-77 % of it) and picked Bulyan's theta in one Multi-Krum pass."""
    from flwr.serverapp.strategy import MultiKrum

    for seed in range(6):
        rng = np.random.default_rng(seed)
        w0 = rng.normal(size=20).astype(np.float32)
        ws = [w0 + (rng.normal(size=20) * 0.1).astype(np.float32) for _ in range(n - f)]
        honest = np.array(ws, np.float64)
        bad = honest.mean(0) - 1.5 * honest.std(0)  # "a little is enough", colluding
        ws += [bad.astype(np.float32)] * f
        rule = {"krum": lambda: Krum(num_malicious_nodes=f, min_train_nodes=n),
                "multikrum": lambda: MultiKrum(num_malicious_nodes=f, min_train_nodes=n,
                                               num_nodes_to_select=m),
                "bulyan": lambda: Bulyan(num_malicious_nodes=f, min_train_nodes=n)}[name]()
        s, got = _aggregate(rule, f, w0, ws, [100] * (n - f) + [1000] * f)
        assert not s.events and not s.skipped_rounds, (s.events, s.skipped_rounds)
        xs = [w.astype(np.float64) for w in ws]
        ref = _ref_bulyan(xs, f) if name == "bulyan" else _ref_multikrum(xs, f, m)
        np.testing.assert_allclose(got, ref.astype(np.float32), rtol=0, atol=1e-6,
                                   err_msg=f"seed {seed}")


@pytest.mark.usefixtures("_task_identity")
def test_krum_selects_on_float64_updates_where_flower_picks_the_attacker() -> None:
    """Updates of norm 1e-3 beside weights of 100: Flower's |x|^2 + |y|^2 - 2x.y on the
    float32 weights is rounding noise there and picks the attacker (9x the honest norm,
    inside the screen's 10x); the float64 selection on the updates picks the reference's."""
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.multikrum import select_multikrum

    n, f, d = 7, 1, 64
    rng = np.random.default_rng(7)
    w0 = (rng.normal(size=d) * 0.1).astype(np.float32)
    w0[-6:] += 100
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    ups = [rng.normal(size=d) for _ in range(n)]
    ups = [9e-3 * u if i == n - 1 else g * 1e-3 / np.linalg.norm(g) for i, g in enumerate(ups)]
    ws = [(w0.astype(np.float64) + x).astype(np.float32) for x in ups]
    rd = [RecordDict({"a": ArrayRecord({"w": Array(w)}), "m": MetricRecord({"num-examples": 1})})
          for w in ws]
    assert select_multikrum(rd, f, 1)[0] is rd[n - 1]  # Flower 1.41: the attacker
    s, got = _aggregate(Krum(num_malicious_nodes=f, min_train_nodes=n), f, w0, ws)
    assert not s.events
    ref = _ref_multikrum([w.astype(np.float64) for w in ws], f, 1)
    assert not np.array_equal(got, ws[n - 1])
    np.testing.assert_array_equal(got, ref.astype(np.float32))


@pytest.mark.usefixtures("_task_identity")
def test_multikrum_refuses_selecting_more_than_n_minus_f() -> None:
    """Check num_nodes_to_select > n - f is refused at setup, with the numbers, and per
    round with the f still left: a dropout (maybe honest) leaves f, a refused update
    takes one off it."""
    from flwr.app import Error, Message, RecordDict
    from flwr.serverapp.strategy import MultiKrum

    with pytest.raises(InvalidParameterError, match=(
            r"^MultiKrum with num_nodes_to_select=5 of n=5 updates and f=1 malicious clients: "
            r"it must select between 1 and n - f = 4 .*num_nodes_to_select <= 4")):
        RobustStrategy(MultiKrum(num_malicious_nodes=1, num_nodes_to_select=5,
                                 min_train_nodes=5), num_malicious_nodes=1)
    rng = np.random.default_rng(0)
    w0 = np.zeros(4, np.float32)
    ws = [(rng.normal(size=4) * 0.1).astype(np.float32) for _ in range(7)]

    def rule() -> MultiKrum:
        return MultiKrum(num_malicious_nodes=1, num_nodes_to_select=6, min_train_nodes=7)

    instr = Message(RecordDict(), dst_node_id=1006, message_type="train", group_id="1")
    dropped = Message(Error(code=0, reason="dropped out"), reply_to=instr)
    s, got = _aggregate(rule(), 1, w0, ws[:6], extra=(dropped,))
    assert got is None and s.skipped_rounds == [1]  # 6 left, f=1 still: n - f = 5 < 6
    nan = np.full(4, np.nan, np.float32)
    s, got = _aggregate(rule(), 1, w0, [*ws[:6], nan])
    assert [e.reason for e in s.events] == ["non-finite"] and not s.skipped_rounds
    np.testing.assert_allclose(got, np.mean(ws[:6], 0), atol=1e-7)  # f=0 left: all 6


@pytest.mark.parametrize("rule", ["FedAvg", "FedProx", "FedAvgM", "FedAdam"])
def test_means_refuse_a_malicious_budget_whatever_their_class(rule: str) -> None:
    """FedProx, FedAvgM, FedAdam (FedAvg subclasses) passed the `type(rule) is FedAvg` test."""
    import flwr.serverapp.strategy as fs

    cls = getattr(fs, rule)
    with pytest.raises(InvalidParameterError, match=(
            rf"^{rule} has no tolerance for malicious clients, but f=1 was given with n=5\. "
            r"Rules that tolerate f > 0: FedTrimmedAvg, Krum, MultiKrum, Bulyan, FedMedian")):
        RobustStrategy(cls(min_train_nodes=5), num_malicious_nodes=1)
    RobustStrategy(cls(min_train_nodes=5), num_malicious_nodes=0)  # f = 0: fine


def test_fedmedian_needs_an_honest_majority() -> None:
    """FedMedian with f >= n/2 was accepted; it needs n > 2f."""
    from flwr.serverapp.strategy import FedMedian

    for n in (3, 4):
        with pytest.raises(InvalidParameterError, match=(
                rf"^FedMedian cannot tolerate f=2 malicious clients with n={n}: .*n > 2f = 4")):
            RobustStrategy(FedMedian(min_train_nodes=n), num_malicious_nodes=2)
    RobustStrategy(FedMedian(min_train_nodes=5), num_malicious_nodes=2)


def test_auto_beta_trims_f_as_flower_counts_for_every_fleet_up_to_1000() -> None:
    """0.29 * 100 is 28.999...: auto_beta(100, 29) = 0.29 trimmed 28 (Flower's
    int(beta * n)) and the default --beta refused a valid f in 25 fleets of n <= 1000;
    (999, 499) needs a beta off the 0.001 grid (0.499 trims 498, 0.5 is out of range)."""
    from edgewise.federated.strategies import auto_beta

    for n in range(3, 1001):
        for f in range(0, (n - 1) // 2 + 1):
            need = max(f, 1)
            if 2 * need >= n:
                continue
            b = auto_beta(n, f)
            assert b < 0.5 and int(b * n) >= need, (n, f, b)
    assert auto_beta(100, 29) == 0.291
    assert repr(make_strategy("trimmed", num_nodes=100, num_malicious_nodes=29, beta=0)) \
        == "RobustStrategy(FedTrimmedAvg, f=29)"
    make_strategy("trimmed", num_nodes=999, num_malicious_nodes=499, beta=0)


@pytest.mark.parametrize(("n", "f", "beta", "suggested"),
                         [(100, 29, 0.29, "0.291"), (999, 499, 0.49, "0.4994994994994995")])
def test_trimmed_refusal_suggests_the_beta_flower_trims_f_with(n: int, f: int, beta: float,
                                                                suggested: str) -> None:
    """The suggestion was ceil(f/n*1000)/1000 printed with :g: 'use beta >= 0.29' for the
    0.29 just refused, 0.5 (out of range) for n=999, f=499."""
    with pytest.raises(InvalidParameterError,
                       match=rf"trims {int(beta * n)} update per side of n={n}, fewer than "
                             rf"f={f} malicious clients; use beta >= {suggested} or more"):
        check_rule_conditions(FedTrimmedAvg(beta=beta), n=n, f=f)
    check_rule_conditions(FedTrimmedAvg(beta=float(suggested)), n=n, f=f)


def test_cli_names_the_f_the_trimmed_mean_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    """`federate server --strategy trimmed --clients 100`: every --num-malicious up to the
    49 its refusal names as valid is accepted (29 was refused: 'valid: 0 to 28')."""
    import typer

    from edgewise.cli.federate import _check_strategy

    for f in range(50):
        _check_strategy("trimmed", 100, num_malicious_nodes=f, beta=0.0)
    with pytest.raises(typer.Exit):
        _check_strategy("trimmed", 100, num_malicious_nodes=50, beta=0.0)
    assert "valid: --num-malicious 0 to 49 (or more clients)" in capsys.readouterr().err
