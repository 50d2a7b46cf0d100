"""What the ``train transfer`` hold-out can and cannot see: it compares the fleet and the
fine-tuned model by balanced accuracy, not F1 (labels taken from fault logs are mostly
anomalies, and F1 on them cannot see false alarms), needs normal and anomalous windows of
each among the later half, and a tie measured nothing."""

from __future__ import annotations

import numpy as np

from edgewise.label.fleet_transfer import _alarms, _holdout, _keep
from edgewise.transfer import DeviceModel, FleetModel, fine_tune, holdout_scores


def _fleet() -> FleetModel:
    """A fleet model: normal windows around 0, anomalous ones around 6 (2 features)."""
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (40, 2)), rng.normal(6, 1, (40, 2))])
    return FleetModel().fit(X, np.r_[np.zeros(40), np.ones(40)].astype(int))


def test_a_hold_out_tie_keeps_the_fleet_model() -> None:
    """Check a device 0.5 off the fleet's normal whose faults its features cannot show:
    the earlier half re-centres it, and on the later half neither model catches a fault
    (F1 0.000 each). That tie went out as a pass, the fine-tuned model saved with no
    warning; then with the unmeasured case's warning. The hold-out told the models apart
    on no window, so it showed no gain: the fleet model is saved (the paired keep rule,
    :data:`~edgewise.label.fleet_transfer.KEEP_ALPHA`), and the reason says why."""
    fleet = _fleet()
    rng = np.random.default_rng(1)
    y = np.array([0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0])  # earlier half: 1 fault, no re-
    X = 0.5 + rng.normal(0, 0.05, (12, 2))  # calibrating; faults look like normal windows
    holdout, why = _holdout(fleet, X, y)
    assert why is None and holdout is not None
    assert holdout["fleet_f1"] == holdout["device_f1"] == 0.0
    assert (holdout["device_only_right"], holdout["fleet_only_right"]) == (0, 0)
    tuned = fine_tune(fleet, X, y)
    kept, kept_why, warning = _keep(tuned, y, holdout, None, _alarms(fleet, tuned, X))
    assert (kept, warning) == ("fleet", None)
    assert kept_why == ("the hold-out could not tell the models apart: they were right and "
                        "wrong on the same 6 held-out windows (balanced accuracy 0.500 each); "
                        "label more windows and train again to show a gain")


def test_a_model_flagging_every_window_loses_a_hold_out_of_mostly_anomalies() -> None:
    """Check a hold-out of 25 anomalies (the fleet model catches 18) and 2 normal windows:
    a fine-tuned model flagging every window scored F1 0.962 against the fleet model's
    0.837 and was saved; by balanced accuracy it scores 0.500 against 0.860."""
    fleet = _fleet()
    rng = np.random.default_rng(2)
    X = np.vstack([rng.normal(0, 0.3, (10, 2)),        # earlier half, not scored
                   rng.normal(0, 0.3, (2, 2)),         # the later half's 2 normal windows
                   rng.normal(6, 0.3, (18, 2)),        # 18 faults the fleet model catches
                   rng.normal(1, 0.3, (7, 2))])        # 7 it misses
    y = np.r_[np.zeros(12), np.ones(25)].astype(int)
    flag_all = DeviceModel(fleet, np.full(2, 0.1), None, -1e9, 10)
    holdout = holdout_scores(fleet, flag_all, X, y, 10)
    alarms = _alarms(fleet, flag_all, X)
    kept, kept_why, warning = _keep(flag_all, y, holdout, None, alarms)
    assert (kept, warning) == ("fleet", None), kept_why
    assert kept_why == ("the fine-tuned model scored hold-out balanced accuracy 0.500, "
                        "below the fleet model's 0.860")
    assert round(holdout["device_f1"], 3) == 0.962 and round(holdout["fleet_f1"], 3) == 0.837


def test_a_hold_out_with_one_normal_window_is_not_measured() -> None:
    """Check a later half of 5 anomalies and 1 normal window: one window cannot show false
    alarms, so the hold-out is not measured (it was, and vouched for the saved model) and
    the fine-tuned model is saved with the unchecked warning."""
    fleet = _fleet()
    rng = np.random.default_rng(3)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 1, 1])
    X = np.where(y[:, None] == 0, 2.5 + rng.normal(0, 0.1, (12, 2)),
                 8 + rng.normal(0, 1, (12, 2)))
    holdout, why = _holdout(fleet, X, y)
    assert holdout is None
    assert why == ("the later 6 labelled windows hold 1 normal and 5 anomalous, where the "
                   "hold-out needs 2 of each to see both missed faults and false alarms")
    tuned = fine_tune(fleet, X, y)
    kept, kept_why, warning = _keep(tuned, y, holdout, why, _alarms(fleet, tuned, X))
    assert kept == "device" and kept_why == f"the hold-out was not measured ({why})"
    assert warning is not None and warning.endswith(
        "Label more windows (at least 2 normal and 2 anomalous among the later half) and "
        "train again to measure it.")


def test_a_fine_tuned_model_flagging_far_more_windows_is_saved_with_a_warning() -> None:
    """Check a fine-tuned model that wins the hold-out but flags 69 of the device's 100
    windows, the fleet model 14, is saved with a warning saying so (it went out with
    none); one flagging 20 where the fleet flags 1 (a fleet model blind to the device's
    faults) is not warned about."""
    moved = DeviceModel(_fleet(), np.full(2, 0.1), None, 0.0, 34)
    y = np.array([0, 1])
    scores = {"fleet_f1": 0.615, "device_f1": 0.818, "fleet_balanced_accuracy": 0.722,
              "device_balanced_accuracy": 0.75, "n_train": 34.0, "n_holdout": 34.0,
              "device_only_right": 6.0, "fleet_only_right": 0.0, "paired_p": 0.016}
    kept, _, warning = _keep(moved, y, scores, None,
                             {"windows": 100, "fleet": 14, "fine_tuned": 69})
    assert kept == "device" and warning == (
        "the fine-tuned model flags 69 of the device's 100 windows, the fleet model 14: more "
        "than half of them, and more than twice as many. It scored better on the hold-out, "
        "but 34 labelled windows can miss false alarms on the rest; look at its alarms "
        "('edgewise predict transfer'), label the normal ones among them, and train again.")
    assert _keep(moved, y, scores, None,
                 {"windows": 100, "fleet": 1, "fine_tuned": 20})[::2] == ("device", None)


def test_fault_heavy_labels_do_not_recalibrate_to_flag_every_window() -> None:
    """Check 4 normal and 20 anomalous labels, half the faults looking normal (labels from
    a fault log): the threshold with the best F1 on them flags every window (F1 0.91), so
    the fine-tuned model flagged all 4 labelled normal windows and 85 % of windows in the
    normal range. Chosen by Matthews correlation, flagging everything (0.0) never wins."""
    fleet = FleetModel().fit([[0.0], [1.0], [5.0], [6.0]], [0, 0, 1, 1])
    normal = np.array([0.0, 1.0, 2.0, 0.5])
    faults = np.r_[np.linspace(4.0, 7.0, 10), np.linspace(-0.5, 2.5, 10)]
    X, y = np.r_[normal, faults][:, None], np.r_[np.zeros(4), np.ones(20)].astype(int)
    device = fine_tune(fleet, X, y, recenter=False)
    assert device.predict(normal[:, None]).sum() == 0
    assert device.predict(np.linspace(-1.0, 2.5, 100)[:, None]).mean() < 0.1
