"""Input checks of the fleet and per-device models (transfer.py) found missing by the
explanations hunt: feature counts, labels, window shapes and an unfitted fleet model."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.transfer import FleetModel, compare_on_holdout, fine_tune

rng = np.random.default_rng(0)
X = rng.normal(0, 1, (600, 3))
Y = (X[:, 0] > 1.5).astype(int)


@pytest.fixture(scope="module")
def fleet() -> FleetModel:
    return FleetModel().fit(X, Y)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_fine_tune_needs_the_fleet_models_features(fleet: FleetModel, k: int) -> None:
    """Check windows with another number of features are refused with both counts named
    (one column was broadcast into all three features; 2 or 4 gave a numpy traceback)."""
    Xk = np.c_[X, X][:100, :k]
    with pytest.raises(InvalidParameterError,
                       match=rf"^fine_tune needs windows with the fleet model's 3 features\. "
                             rf"Got {k}\.$"):
        fine_tune(fleet, Xk, Y[:100])


def test_a_device_model_needs_the_fleet_models_features(fleet: FleetModel) -> None:
    """Check the fine-tuned model refuses windows of another width too."""
    dev = fine_tune(fleet, X[:100], Y[:100])
    with pytest.raises(InvalidParameterError, match=r"3 features\. Got 1"):
        dev.predict(X[:5, :1])
    assert dev.predict(X[:5]).shape == (5,)


def test_labels_other_than_0_and_1_are_refused(fleet: FleetModel) -> None:
    """Check -1/1 labels (scikit-learn's outlier convention), which gave an inverted fleet
    model and a fine-tune that silently did nothing, are refused with the labels found and
    how to map them; so are text labels."""
    ypm = np.where(Y == 1, -1, 1)
    with pytest.raises(InvalidParameterError, match=r"labels 0 \(normal\) or 1 \(anomaly\)\. "
                                                    r"Got labels \[-1, 1\].*\(y == -1\)"):
        FleetModel().fit(X, ypm)
    with pytest.raises(InvalidParameterError, match=r"Got labels \[-1, 1\]"):
        fine_tune(fleet, X[:100], ypm[:100])
    with pytest.raises(InvalidParameterError, match=r"Got labels \['anomaly', 'normal'\]"):
        fine_tune(fleet, X[:2], ["normal", "anomaly"])
    with pytest.raises(InvalidParameterError, match=r"Got labels \[0\.0, 0\.5\]"):
        fine_tune(fleet, X[:2], [0.0, 0.5])
    # the documented mapping works, as do 0/1 given as floats or booleans
    mapped = FleetModel().fit(X, (ypm == -1).astype(int))
    assert np.array_equal(mapped.predict(X), fleet.predict(X))
    assert fine_tune(fleet, X[:100], Y[:100].astype(bool)).n_labels_ == 100


@pytest.mark.parametrize(("windows", "labels", "match"), [
    ([], [], r"2-D array .* Got a 1-D array of shape \(0,\)"),
    (np.zeros((0, 3)), [], r"at least one window .* Got shape \(0, 3\)"),
    (X[:50, 0], Y[:50], r"2-D array .* Got a 1-D array of shape \(50,\)"),
    (np.full((2, 3), np.nan), [0, 1], r"finite windows\. Got nan in window 0, feature 0"),
    (X[:3], Y[:3, None], r"1-D array\. Got shape \(3, 1\)"),
    (X[:3], Y[:2], r"Got 3 windows and 2 labels"),
])
def test_bad_windows_get_one_line_errors(fleet: FleetModel, windows: object, labels: object,
                                         match: str) -> None:
    """Check empty, 1-D and non-finite windows and mis-shaped labels get a one-line error
    (they ended in IndexError or a raw numpy/scikit-learn ValueError)."""
    with pytest.raises(InvalidParameterError, match=match) as info:
        fine_tune(fleet, windows, labels)
    assert "\n" not in str(info.value)


def test_an_unfitted_fleet_model_is_named(fleet: FleetModel) -> None:
    """Check fine-tuning an unfitted fleet model raises NotFittedError (it was an
    AttributeError on normal_mean_), and anything but a FleetModel is refused."""
    with pytest.raises(NotFittedError, match=r"not fitted yet.*before fine_tune"):
        fine_tune(FleetModel(), X[:50], Y[:50])
    with pytest.raises(InvalidParameterError, match=r"needs a FleetModel\. Got dict"):
        fine_tune({}, X[:50], Y[:50])  # type: ignore[arg-type]


@pytest.mark.parametrize("C", ["a", 0, -1.0, float("nan"), None])
def test_a_bad_C_is_named_before_use(C: object) -> None:
    """Check C is validated as given (it was converted first: 'a' gave a raw float error)."""
    with pytest.raises(InvalidParameterError, match=r"'C' parameter of FleetModel must be a "
                                                    r"float in the range \(0, inf\)"):
        FleetModel(C=C).fit(X, Y)  # type: ignore[arg-type]


def test_compare_on_holdout_checks_its_inputs(fleet: FleetModel) -> None:
    """Check a NaN train fraction and bad labels get one-line errors."""
    with pytest.raises(InvalidParameterError, match="'train_fraction' parameter"):
        compare_on_holdout(fleet, X, Y, train_fraction=float("nan"))
    with pytest.raises(InvalidParameterError, match=r"Got labels \[-1, 1\]"):
        compare_on_holdout(fleet, X, np.where(Y == 1, -1, 1))
