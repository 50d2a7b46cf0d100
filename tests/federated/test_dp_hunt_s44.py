"""Differential privacy in federated learning (session 44's hunt)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgewise.federated.model import build_model, train_local
from edgewise.federated.privacy import device_level_epsilon, dp_sgd_history


def test_an_empty_poisson_batch_is_still_a_noisy_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check DP-SGD adds noise on every step ``dp_sgd_history`` counts: 3 records at batch 1
    sample each record with probability 1/3, so (2/3)^3 = 30% of the batches are empty,
    and those steps were skipped (44 and 45 noisy steps of the 60 accounted in two runs,
    42 expected: the model left exactly unchanged, which a noisy step never does, showed
    the batch was empty)."""
    from opacus.optimizers import DPOptimizer

    noisy = []
    add_noise = DPOptimizer.add_noise

    def counted(self: DPOptimizer) -> None:
        noisy.append(1)
        add_noise(self)

    monkeypatch.setattr(DPOptimizer, "add_noise", counted)
    X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    model = build_model("ae", 4, seed=0)
    loss = train_local(model, X, epochs=20, batch_size=1, dp_noise_multiplier=1.0)
    assert len(noisy) == dp_sgd_history(1.0, 1, 3, 20)[2] == 60
    assert np.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_without_dp_an_empty_batch_is_no_step() -> None:
    """Check plain training (no DP-SGD) on a batch larger than the data still trains."""
    X = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    loss = train_local(build_model("ae", 4, seed=0), X, epochs=2, batch_size=8)
    assert np.isfinite(loss)


@pytest.mark.parametrize("z", [1e-155, 1e-160, 1e-170])
def test_a_vanishing_device_noise_with_sampling_is_epsilon_inf(z: float) -> None:
    """Check device-level DP with m of n devices sampled and a noise multiplier next to 0
    has an infinite epsilon: dp-accounting's sampled-without-replacement curve is NaN
    there, and its epsilon of a NaN curve came back 0.0 (1e-155 and 1e-160: perfect
    privacy claimed for no noise; 1e-170 raised ZeroDivisionError). Every device in every
    round (no sampling) was already inf."""
    assert device_level_epsilon(z, 5) == float("inf")
    assert device_level_epsilon(z, 5, num_devices=10, sample_size=3) == float("inf")


def test_the_sampled_device_level_epsilon_is_the_accountant_s() -> None:
    """Check the sampled bound is still the one dp-accounting's RDP accountant composes
    (replace-one, m of n sampled without replacement, noise multiplier z / 2)."""
    import dp_accounting
    from dp_accounting import rdp

    from edgewise.federated.privacy import rdp_orders

    for z, rounds, n, m in ((2.0, 50, 260, 26), (1.0, 10, 100, 10), (5.0, 100, 1000, 100)):
        acc = rdp.RdpAccountant(rdp_orders(), dp_accounting.NeighboringRelation.REPLACE_ONE)
        acc.compose(dp_accounting.SelfComposedDpEvent(
            dp_accounting.SampledWithoutReplacementDpEvent(
                n, m, dp_accounting.GaussianDpEvent(z / 2)), rounds))
        assert device_level_epsilon(z, rounds, num_devices=n, sample_size=m) == \
            pytest.approx(min(acc.get_epsilon(1e-5), device_level_epsilon(z, rounds)),
                          rel=1e-12)
