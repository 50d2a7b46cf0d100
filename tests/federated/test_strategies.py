"""Robust aggregation under attack: bad updates are rejected or clipped, rules refuse bad n/f/β."""

from __future__ import annotations

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
