"""Which model ``train transfer`` saves when the hold-out measured nothing: fine-tuning
that changed nothing is never reported as the device's model, and a hold-out whose own
fine-tune changed nothing does not vouch for the saved model."""

from __future__ import annotations

import numpy as np

from edgewise.label.fleet_transfer import _alarms, _holdout, _keep
from edgewise.transfer import FleetModel, fine_tune


def _fleet(seed: int) -> tuple[FleetModel, np.random.Generator]:
    """A fleet model (normal around 0, anomalies around 6) and the generator that drew it."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(0, 1, (40, 2)), rng.normal(6, 1, (40, 2))])
    return FleetModel().fit(X, np.r_[np.zeros(40), np.ones(40)].astype(int)), rng


def test_fine_tuning_that_changed_nothing_keeps_the_fleet_model_on_a_hold_out_tie() -> None:
    """Check 4 labels (2 normal) that neither re-centre nor re-calibrate save the fleet
    model with why, even though the hold-out F1s tie: it said 'device' kept, 'scored
    hold-out F1 1.000, the fleet model 1.000', about a model identical to the fleet's."""
    fleet, rng = _fleet(1)
    y = np.array([0, 1, 0, 1])
    X = np.where(y[:, None] == 0, rng.normal(0, 1, (4, 2)), 6 + rng.normal(0, 1, (4, 2)))
    tuned = fine_tune(fleet, X, y)
    assert not tuned.shift_.any() and tuned.calibrator_ is None
    tie = {"fleet_f1": 1.0, "device_f1": 1.0, "n_train": 2.0, "n_holdout": 2.0}
    kept, why, warning = _keep(tuned, y, tie, None, _alarms(fleet, tuned, X))
    assert kept == "fleet" and warning is None
    assert why == ("fine-tuning changed nothing: 2 labelled-normal window(s), fewer than "
                   "the 3 re-centring needs; re-calibrating did not beat the fleet's "
                   "threshold in cross-validation")


def test_a_hold_out_whose_fine_tune_changed_nothing_is_not_measured() -> None:
    """Check a device whose normal sits 2.5 off the fleet's, labelled [0, 0, 1, 0, 1, 1]:
    the whole (3 normals) re-centres, the earlier half (2 normals) cannot, so the hold-out
    compared the fleet model with itself (F1 1.0 each) and the re-centred model went out
    'kept' on it, unchecked, with no warning. Now: not measured, saved with the warning."""
    fleet, rng = _fleet(0)
    y = np.array([0, 0, 1, 0, 1, 1])
    X = np.where(y[:, None] == 0, 2.5 + rng.normal(0, 0.1, (6, 2)),
                 6 + rng.normal(0, 1, (6, 2)))
    tuned = fine_tune(fleet, X, y)
    assert tuned.shift_.all()
    holdout, holdout_why = _holdout(fleet, X, y)
    assert holdout is None
    assert holdout_why == (
        "fine-tuning the earlier 3 labelled windows changed nothing (2 labelled-normal "
        "window(s), fewer than the 3 re-centring needs; 2 normal and 1 anomalous window(s), "
        "where re-calibration needs 2 of each), so the hold-out would compare the fleet "
        "model with itself")
    kept, why, warning = _keep(tuned, y, holdout, holdout_why, _alarms(fleet, tuned, X))
    assert kept == "device" and why == f"the hold-out was not measured ({holdout_why})"
    assert warning is not None and warning.startswith(
        "the fine-tuned model is saved unchecked: it could not be compared with the fleet "
        f"model on a hold-out ({holdout_why}), and may be worse than it.")


def test_a_hold_out_whose_fine_tune_changed_something_is_measured() -> None:
    """Check the ordinary case still measures: enough earlier normals to re-centre. Both
    models are right on every held-out window: the fine-tuned model was saved ('both
    models were perfect'); under the paired keep rule a hold-out that tells the models
    apart on no window shows no gain, and the fleet model is saved, saying why."""
    fleet, _ = _fleet(0)
    rng = np.random.default_rng(5)
    y = np.array([0, 0, 0, 0, 1, 0, 0, 0, 1, 1])
    X = np.where(y[:, None] == 0, 2.5 + rng.normal(0, 0.1, (10, 2)),
                 8 + rng.normal(0, 1, (10, 2)))
    holdout, holdout_why = _holdout(fleet, X, y)
    assert holdout_why is None and holdout is not None
    assert holdout["n_train"] == 5.0 and holdout["n_holdout"] == 5.0
    tuned = fine_tune(fleet, X, y)
    assert holdout["fleet_balanced_accuracy"] == holdout["device_balanced_accuracy"] == 1.0
    kept, why, warning = _keep(tuned, y, holdout, None, _alarms(fleet, tuned, X))
    assert (kept, warning) == ("fleet", None)
    assert why == ("the hold-out could not tell the models apart: they were right and wrong "
                   "on the same 5 held-out windows (balanced accuracy 1.000 each); label "
                   "more windows and train again to show a gain")
