"""fine_tune does not re-centre a device like the fleet because a feature constant in
both (a flat metric's window spread) has means that differ in their last bits: with both
standard deviations 0, that rounding passed the t-test, and every such device was moved
on every feature (100 of 100 devices drawn like the fleet)."""

from __future__ import annotations

import numpy as np

from edgewise.transfer import FleetModel, compare_on_holdout, fine_tune


def test_a_constant_feature_alone_does_not_move_a_device_like_the_fleet() -> None:
    """Check devices drawn like the fleet, with a feature of 0.1 in every window of both,
    are moved at most about the 5 % the test allows, and their constant feature not at all
    (the fleet's mean of sixty 0.1s is 0.09999999999999996)."""
    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=(60, 2)), np.full(60, 0.1)]
    fleet = FleetModel().fit(X, (X[:, 0] > 1).astype(int))
    assert fleet.normal_mean_[2] != 0.1  # the rounding the test is about
    moved = 0
    for _ in range(100):
        Xd = np.c_[rng.normal(size=(7, 2)), np.full(7, 0.1)]
        shift = fine_tune(fleet, Xd, np.zeros(7, dtype=int)).shift_
        moved += bool(shift.any())
    assert moved <= 12


def test_a_real_offset_on_a_constant_feature_still_moves_the_device() -> None:
    """Check a device whose constant feature sits at 0.2 where the fleet's sits at 0.1 is
    re-centred by that offset."""
    rng = np.random.default_rng(1)
    X = np.c_[rng.normal(size=(60, 2)), np.full(60, 0.1)]
    fleet = FleetModel().fit(X, (X[:, 0] > 1).astype(int))
    Xd = np.c_[rng.normal(size=(7, 2)), np.full(7, 0.2)]
    shift = fine_tune(fleet, Xd, np.zeros(7, dtype=int)).shift_
    assert abs(shift[2] - 0.1) < 1e-12


def test_compare_on_holdout_trains_on_the_share_asked_for() -> None:
    """Check train_fraction 0.29 of 100 windows fine-tunes on 29 of them, not the 28 that
    int(100 * 0.29) = int(28.999999999999996) gave."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(200, 2))
    fleet = FleetModel().fit(X, (X[:, 0] > 1).astype(int))
    Xd = rng.normal(size=(100, 2))
    out = compare_on_holdout(fleet, Xd, (Xd[:, 0] > 1).astype(int), train_fraction=0.29)
    assert (out["n_train"], out["n_holdout"]) == (29.0, 71.0)
