"""``train transfer``'s hold-out: where the later half of a device's labels cannot measure
the fine-tuned model, the earlier half is held out instead (fine-tuned on the later), so a
model the device's own labels show worse than the fleet's is not saved unchecked."""

from __future__ import annotations

import numpy as np

from edgewise.label.fleet_transfer import _alarms, _changed, _holdout, _keep
from edgewise.transfer import FleetModel, _balanced_accuracy, fine_tune


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of 3 features, 30 % faults 2.5 sd along the first (as in
    ``benchmarks/scripts/transfer_keep_sim.py``): a device drawn like the fleet."""
    X = rng.normal(0, 1, (n, 3))
    y = (rng.random(n) < 0.3).astype(int)
    X[y == 1, 0] += 2.5
    return X, y


def test_a_later_half_that_cannot_measure_holds_out_the_earlier_half() -> None:
    """Check a device drawn like the fleet with 60 labels: fine-tuning the earlier 30
    changes nothing, all 60 re-calibrate. The later half could not measure that, and the
    re-calibrated model, worse than the fleet's on 2,000 fresh windows (balanced accuracy
    0.859 against 0.895), was saved unchecked. Fine-tuned on the later half it scores
    0.797 on the earlier, the fleet model 0.902: the fleet model is saved."""
    fleet = FleetModel().fit(*_draw(np.random.default_rng(0), 600))
    rng = np.random.default_rng(61)
    X, y = _draw(rng, 60)
    tuned = fine_tune(fleet, X, y)
    assert _changed(tuned) and not _changed(fine_tune(fleet, X[:30], y[:30]))
    Xt, yt = _draw(rng, 2000)
    fresh = [_balanced_accuracy(m.predict(Xt) == 1, yt == 1) for m in (tuned, fleet)]
    assert fresh[0] < fresh[1] - 0.03  # the fine-tuned model is worse on fresh windows

    holdout, why = _holdout(fleet, X, y)
    assert why is None and holdout is not None
    assert holdout["held_out"] == "earlier"
    assert (holdout["n_train"], holdout["n_holdout"]) == (30.0, 30.0)
    assert round(holdout["device_balanced_accuracy"], 3) == 0.797
    assert round(holdout["fleet_balanced_accuracy"], 3) == 0.902
    kept, kept_why, warning = _keep(tuned, y, holdout, why, _alarms(fleet, tuned, X))
    assert (kept, warning) == ("fleet", None)
    assert kept_why == ("the fine-tuned model scored hold-out balanced accuracy 0.797, "
                        "below the fleet model's 0.902")


def test_the_later_half_is_held_out_where_it_can_measure() -> None:
    """Check the ordinary case is unchanged: fine-tuned on the earlier half (it re-centres
    an offset device), measured on the later, and the result says which half."""
    fleet = FleetModel().fit(*_draw(np.random.default_rng(0), 600))
    X, y = _draw(np.random.default_rng(7), 60)
    X[:, 0] += 1.5  # an offset on the faulty feature: the earlier half re-centres it
    holdout, why = _holdout(fleet, X, y)
    assert why is None and holdout is not None
    assert holdout["held_out"] == "later" and holdout["n_train"] == 30.0
