"""The number of groups is chosen by each k's margin over its own null (session 35 hunt)."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.models.cluster import BehaviourGroups


def _choose(Z: np.ndarray) -> tuple[int, BehaviourGroups]:
    model = BehaviourGroups(random_state=0)
    model.weights_ = np.ones(Z.shape[1])
    return model._choose(Z, 0), model


@pytest.mark.parametrize("seed", [6, 18, 36])
def test_one_continuous_cloud_is_one_group_whatever_k_scores_best(seed: int) -> None:
    # 20 devices spread evenly over a box (ratings varying continuously): one group. Its
    # best silhouette comes at some k whose null happens to be low (the old rule then
    # split it into 3-8 groups; which k won moved with a few readings more or less)
    Z = np.random.default_rng(seed).uniform(-4, 4, size=(20, 3))
    k, model = _choose(Z)
    assert k == 1, (model.silhouette_, model.null_silhouette_)
    # every k tried is measured against its own null
    assert set(model.null_silhouette_) == {k for k, s in model.silhouette_.items() if s > 0}


def test_a_clearly_grouped_fleet_is_still_found() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, 0.0], [8.0, 0.0, 0.0], [0.0, 8.0, 0.0]])
    Z = np.vstack([c + rng.normal(0, 0.7, size=(8, 3)) for c in centres])
    k, model = _choose(Z)
    assert k == 3
    assert model.silhouette_[3] > model.null_silhouette_[3]
