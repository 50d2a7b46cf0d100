"""Differential privacy: the accountant reproduces known values; DP runs report their ε."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgewise.errors import InvalidParameterError
from edgewise.federated.client_app import app
from edgewise.federated.inprocess import InProcessGrid
from edgewise.federated.model import build_model, train_local
from edgewise.federated.privacy import (
    device_level_epsilon,
    device_noise_for_epsilon,
    dp_sgd_epsilon,
    noise_for_epsilon,
    rdp_epsilon,
)
from edgewise.federated.server_app import run_federated

torch.set_num_threads(1)


def test_rdp_accountant_reproduces_known_epsilon():
    """Check z=1.5, q=0.04, 2,250 steps, delta=1e-5 gives epsilon 7.329 (Abadi et al. setting)."""
    assert rdp_epsilon(1.5, 0.04, 2250, 1e-5) == pytest.approx(7.329, abs=5e-4)


def test_opacus_accountant_agrees():
    """Check that Opacus's own RDP accountant gives the same epsilon for the same steps."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(1.5, 0.04, 2250)]
    assert acc.get_epsilon(1e-5) == pytest.approx(rdp_epsilon(1.5, 0.04, 2250), rel=0.02)


def test_noise_for_epsilon_inverts_the_accountant():
    """Check that the calibrated noise meets the target and is not much larger than needed."""
    z = noise_for_epsilon(1.0, sampling_rate=1.0, steps=10)
    assert rdp_epsilon(z, 1.0, 10) <= 1.0 < rdp_epsilon(0.97 * z, 1.0, 10)
    # device-level: one device replaced faces z/2, so it takes twice the noise
    zd = device_noise_for_epsilon(1.0, 10)
    assert device_level_epsilon(zd, 10) <= 1.0 < device_level_epsilon(0.97 * zd, 10)
    assert zd == pytest.approx(2 * z, rel=2e-3)


@pytest.mark.parametrize(("target", "q", "steps", "most"), [
    (8.0, 0.0526, 57, 9), (0.5, 0.0064, 314, 9), (20.0, 0.0667, 150, 9), (1.0, 0.1, 50, 9),
    (50.0, 0.0526, 19, 9), (0.02, 0.0526, 19, 9), (2.0, 0.032, 93, 9),
    # here ε jumps from 1.59 to 0.95 x target between z 2.766 and 2.828 (the best order
    # changes), which interpolation cannot see through at once
    (0.05, 0.00032, 3125, 12),
])
def test_calibration_finds_the_smallest_noise_in_few_accountant_calls(target, q, steps, most):
    """Check the noise search meets the target, misses it 0.1 % lower, and asks the
    accountant for few epsilons (each a fresh RDP curve, in every DP-SGD training message;
    halving the bracket asked for 12-17 on these)."""
    from edgewise.federated.privacy import MAX_DP_SGD_NOISE, _bisect

    asked: list[float] = []

    def epsilon_of(z: float) -> float:
        asked.append(z)
        return rdp_epsilon(z, q, steps)

    z = _bisect(target, epsilon_of, max_noise=MAX_DP_SGD_NOISE)
    assert rdp_epsilon(z, q, steps) <= target < rdp_epsilon(z / 1.001, q, steps)
    assert len(asked) <= most, asked


@pytest.mark.parametrize("prior_z", [1.1117, 0.6085])
def test_calibration_after_a_nearly_spent_prior_asks_for_few_epsilons(prior_z):
    """Check the noise search after a prior history that spent nearly the whole target (a
    device's ledger, a resumed run's earlier rounds), where ε flattens towards what was
    spent as the noise grows, still meets the target, misses it 0.1 % lower, and asks for
    few epsilons: stepping up by the shrinking gap asked for 450-1,600 (30-40 s)."""
    from edgewise.federated.privacy import MAX_DP_SGD_NOISE, _bisect, composed_epsilon

    prior = [(prior_z, 1 / 19, 38)]
    target = composed_epsilon(prior) * 1.0002  # the prior left 0.02 % of the target
    asked: list[float] = []

    def epsilon_of(z: float) -> float:
        asked.append(z)
        return composed_epsilon([*prior, (z, 1 / 19, 19)])

    z = _bisect(target, epsilon_of, max_noise=MAX_DP_SGD_NOISE)
    assert epsilon_of(z) <= target < epsilon_of(z / 1.001)
    assert len(asked) <= 40, len(asked)


def test_calibration_drops_only_the_accountants_unconverged_order_warnings():
    """Check a calibration at small noise logs none of dp-accounting's "failed to converge
    ... Excluding this order" warnings (dozens per training message), and that other absl
    warnings still pass."""
    import logging

    from edgewise.federated.privacy import _step_rdp, dp_sgd_noise_for_epsilon

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    absl, keep = logging.getLogger("absl"), Keep()
    was = absl.disabled, absl.level
    absl.disabled = False  # another test's logging setup may have switched it off
    absl.setLevel(logging.WARNING)
    absl.addHandler(keep)
    try:
        _step_rdp.cache_clear()
        dp_sgd_noise_for_epsilon(8.0, batch_size=32, n_records=608, epochs=3)  # z about 0.69
        absl.warning("something else")
    finally:
        absl.removeHandler(keep)
        absl.disabled, level = was
        absl.setLevel(level)
    assert not [m for m in keep.messages if "failed to converge" in m]
    assert "something else" in keep.messages


def test_calibration_stops_at_the_least_noise_and_names_the_floor():
    """Check a budget met by the least noise returns it, and one beyond the most noise
    names the smallest budget that would do."""
    from edgewise.federated.privacy import MIN_NOISE, _bisect

    assert _bisect(1e6, lambda z: 1.0 / z, max_noise=100.0) == MIN_NOISE
    with pytest.raises(InvalidParameterError, match=r"the most noise gives epsilon=0\.01\. "
                       r"Use a budget >= 0\.01\."):
        _bisect(1e-3, lambda z: 1.0 / z, max_noise=100.0)


def test_bad_accountant_arguments_are_refused():
    """Check the accountant names its arguments when they are out of range."""
    with pytest.raises(InvalidParameterError, match="sampling_rate in"):
        rdp_epsilon(1.0, 1.5, 10)


def test_dp_sgd_with_opacus_trains_and_clips():
    """Check record-level DP-SGD trains the model and reports a finite epsilon."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 4)).astype(np.float32)
    y = (30 * X[:, 0] + 50).astype(np.float32)
    m = build_model("rul", 4, seed=0)
    before = [p.detach().clone() for p in m.parameters()]
    loss = train_local(m, X, y, epochs=2, batch_size=32, lr=0.01, dp_noise_multiplier=1.0,
                       dp_max_grad_norm=1.0)
    assert np.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    eps = dp_sgd_epsilon(1.0, batch_size=32, n_records=256, epochs=2)
    assert 0 < eps < 20


def test_device_level_dp_run_reports_epsilon():
    """Check a run wrapped in Flower's server-side DP reports device-level epsilon from z."""
    n = 4
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": n} for i in range(n)],
                         {"dataset": "pump"})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n, rounds=2,
                        strategy="fedavg", dp_noise=2.0, dp_clip=0.5)
    assert res.privacy.unit == "device"
    assert res.privacy.epsilon == pytest.approx(device_level_epsilon(2.0, 2), rel=1e-9)
    assert res.strategy == "fedavg+robust+dp"
    assert all(np.isfinite(v.numpy()).all() for v in res.arrays.values())


def test_sampled_device_level_dp_accounts_for_the_sample():
    """Check a DP run sampling 2 of 4 devices per round sends to 2 devices a round and reports
    the subsampled epsilon of the accountant."""
    n = 4
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": n} for i in range(n)],
                         {"dataset": "pump"})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n, rounds=3,
                        strategy="fedavg", robust=False, dp_noise=2.0, dp_clip=0.5,
                        sample_size=2)
    per_round = {}
    for e in res.wire:
        if e["phase"] == "train" and "count" not in e["array_records"].get("arrays", {}):
            per_round[e["round"]] = per_round.get(e["round"], 0) + 1
    assert per_round == {1: 2, 2: 2, 3: 2}
    expected = device_level_epsilon(2.0, 3, num_devices=4, sample_size=2)
    assert res.privacy.epsilon == pytest.approx(expected, rel=1e-9)
    assert 0 < expected < float("inf")
    # a small sampling rate amplifies privacy, even with the replace-one factor of 2
    assert device_level_epsilon(2.0, 3, num_devices=260, sample_size=26) \
        < device_level_epsilon(2.0, 3)
    assert res.privacy.sample_size == 2 and res.privacy.num_devices == 4


def _dp_step(global_seed: int) -> np.ndarray:
    """One DP-SGD epoch from the same weights, data and seed, after fixing torch's seed."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = rng.uniform(0, 100, 64).astype(np.float32)
    torch.manual_seed(global_seed)
    model = build_model("rul", 4, seed=0)
    train_local(model, X, y, epochs=1, batch_size=32, lr=0.01, seed=0,
                dp_noise_multiplier=1.0, dp_max_grad_norm=1.0)
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()


def test_dp_sgd_noise_cannot_be_replayed_from_seeds():
    # Same weights, data, `seed` and global torch seed: without fresh entropy the noise (and
    # the Poisson sample) would repeat exactly, so whoever knows the seeds could subtract it,
    # and every device of a fleet would add the same noise, which then does not average out.
    a, b = _dp_step(0), _dp_step(0)
    assert not np.allclose(a, b)


def test_build_model_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model("rul", 4, seed=0)
    assert torch.equal(torch.rand(3), expected)
    first, again = build_model("rul", 4, seed=5), build_model("rul", 4, seed=5)
    assert torch.equal(first[0].weight, again[0].weight)


def test_record_level_budget_is_calibrated_on_each_device_and_reported():
    """Check a run with a ``dp-sgd-epsilon`` budget: every device calibrates DP-SGD to it from
    its own record count, and the run reports the largest ε spent, unit ``record``."""
    n = 3
    rc = {"dataset": "pump", "dp-sgd-epsilon": 4.0, "num-server-rounds": 2, "batch-size": 32}
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": n} for i in range(n)], rc)
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n, rounds=2,
                        strategy="fedavg", robust=False)
    assert res.privacy.unit == "record" and res.privacy.record_epsilon == res.privacy.epsilon
    assert 3.9 < res.privacy.epsilon <= 4.0  # calibrated: spends (almost) all, never more
    assert res.privacy.noise_multiplier > 0
    per_round = [m["dp-sgd-epsilon"] for m in res.train_metrics.values()]
    assert len(per_round) == 2 and max(per_round) <= 4.0
    # without a budget nothing is claimed
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": n} for i in range(n)],
                         {"dataset": "pump"})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n, rounds=1,
                        strategy="fedavg", robust=False)
    assert res.privacy.unit == "none" and res.privacy.epsilon is None


def test_a_smaller_device_needs_more_noise_for_the_same_budget():
    from edgewise.federated.client_app import dp_sgd_budget

    rc = {"dp-sgd-epsilon": 8.0, "num-server-rounds": 20, "batch-size": 64}
    z_small, eps_small = dp_sgd_budget(rc, 500)
    z_big, eps_big = dp_sgd_budget(rc, 5000)
    assert z_small > z_big
    assert 7.9 < eps_small <= 8.0 and 7.9 < eps_big <= 8.0
    assert dp_sgd_epsilon(z_small, 64, 500, 20) == pytest.approx(eps_small)


def test_a_device_never_spends_more_than_its_own_limit():
    """Check the node config ``max-dp-epsilon``: a device caps a larger budget, and runs
    DP-SGD at its limit when the server asks for none or fixes too little noise."""
    from edgewise.federated.client_app import dp_sgd_budget

    rc = {"num-server-rounds": 5, "batch-size": 32}
    assert 1.9 < dp_sgd_budget({**rc, "dp-sgd-epsilon": 8.0}, 800, max_epsilon=2.0)[1] <= 2.0
    assert 0.9 < dp_sgd_budget({**rc, "dp-sgd-epsilon": 1.0}, 800, max_epsilon=2.0)[1] <= 1.0
    assert 1.9 < dp_sgd_budget(rc, 800, max_epsilon=2.0)[1] <= 2.0
    assert 1.9 < dp_sgd_budget({**rc, "dp-sgd-noise": 0.3}, 800, max_epsilon=2.0)[1] <= 2.0
    # a run asking for none, over devices that each keep a limit of 3: private anyway
    n = 3
    cfgs = [{"partition-id": i, "num-partitions": n, "max-dp-epsilon": 3.0} for i in range(n)]
    grid = InProcessGrid(app, cfgs, {"dataset": "pump", "num-server-rounds": 1})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n, rounds=1,
                        strategy="fedavg", robust=False)
    assert res.privacy.unit == "record" and 2.9 < res.privacy.epsilon <= 3.0
