"""``train transfer`` keeps the fine-tuned model over the fleet model only where, on the
same held-out windows, its balanced-accuracy gain is one chance alone rarely gives (an
exact one-sided paired test at :data:`~edgewise.label.fleet_transfer.KEEP_ALPHA`): any
higher score kept it, and on hold-outs of 30 windows that gave 60 of 300 simulated devices
a model worse than the fleet's, 23 of them with no warning
(``benchmarks/scripts/transfer_keep_sim.py 60``)."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from edgewise.label.fleet_transfer import KEEP_ALPHA, _keep
from edgewise.transfer import DeviceModel, FleetModel, holdout_scores, paired_p_value


def _fleet() -> FleetModel:
    """A one-feature fleet model: normal windows near 0, anomalies near 6 (flags x >= 3)."""
    return FleetModel().fit([[0.0], [1.0], [5.0], [6.0]], [0, 0, 1, 1])


def _case(borderline: int) -> tuple[DeviceModel, np.ndarray, dict[str, float]]:
    """A fine-tuned model moved by 1 (it flags x >= 4) and a device whose 20 labelled
    windows are normal near 0 and anomalies near 8, but for ``borderline`` normal windows
    at 3.5 in the later half: the fleet model flags them, the fine-tuned one lets them
    pass. Every other held-out window both get right."""
    fleet = _fleet()
    moved = DeviceModel(fleet, np.array([1.0]), None, 0.0, 10)
    later = [3.5] * borderline + [0.2] * (6 - borderline) + [8.0] * 4
    X = np.array([0.1] * 6 + [8.0] * 4 + later)[:, None]
    y = np.array([0] * 6 + [1] * 4 + [0] * 6 + [1] * 4)
    return moved, y, holdout_scores(fleet, moved, X, y, 10)


ALARMS = {"windows": 20, "fleet": 9, "fine_tuned": 8}


def test_a_gain_of_one_window_keeps_the_fleet_model() -> None:
    """Check a win by one held-out window (balanced accuracy 1.000 against the fleet
    model's 0.917: of 6 held-out normal windows, 1 let pass by the fine-tuned model
    alone): chance gives it half the time, so the fleet model is saved, saying why. The
    fine-tuned model was saved."""
    moved, y, holdout = _case(1)
    assert (holdout["device_only_right"], holdout["fleet_only_right"]) == (1, 0)
    assert holdout["device_balanced_accuracy"] > holdout["fleet_balanced_accuracy"]
    assert holdout["paired_p"] == 0.5
    kept, why, warning = _keep(moved, y, holdout, None, ALARMS)
    assert (kept, warning) == ("fleet", None)
    assert why == ("the fine-tuned model scored hold-out balanced accuracy 1.000, the fleet "
                   "model 0.917, but only it was right on 1 held-out window(s), only the "
                   "fleet model on 0: chance alone gives a gain that large with probability "
                   "0.500, where it must be at most 0.05 to keep the fine-tuned model; label "
                   "more windows and train again to show a gain")


def test_a_gain_chance_rarely_gives_keeps_the_fine_tuned_model() -> None:
    """Check the rule does not refuse every fine-tune: 6 held-out normal windows only the
    fine-tuned model lets pass, none the other way (p = 1/64) keep it, saying so."""
    moved, y, holdout = _case(6)
    assert holdout["paired_p"] == pytest.approx(1 / 64) and holdout["paired_p"] <= KEEP_ALPHA
    kept, why, _ = _keep(moved, y, holdout, None, ALARMS)
    assert kept == "device"
    assert why == ("the fine-tuned model scored hold-out balanced accuracy 1.000, the fleet "
                   "model 0.500 (only it was right on 6 held-out window(s), only the fleet "
                   "model on 0: chance alone gives a gain that large with probability 0.016)")


@pytest.mark.parametrize(("b", "c"), [(5, 1), (7, 0), (3, 3), (0, 4), (9, 4)])
def test_with_as_many_anomalies_as_normal_windows_it_is_mcnemars_exact_test(b: int,
                                                                           c: int) -> None:
    """Check the p-value is the one-sided exact McNemar (binomial) tail where the classes
    are of one size, however the discordant windows fall between them."""
    n = 20
    y = np.r_[np.ones(n), np.zeros(n)].astype(bool)
    device = np.ones(2 * n, dtype=bool)
    fleet = np.ones(2 * n, dtype=bool)
    device[n - c:n] = False  # c anomalies only the fleet model got right
    fleet[n:n + b] = False  # b normal windows only the device model got right
    tail = sum(comb(b + c, k) for k in range(b, b + c + 1)) / 2 ** (b + c)
    assert paired_p_value(device, fleet, y) == pytest.approx(tail)
