"""``RULModel.fit(X, y)`` with a given ``y``: ``X`` concatenated from per-unit frames (its
index repeats 0, 1, … per unit) failed with a pandas IndexError (``y`` was looked up by
index label, which matched many rows), and a ``y`` of the wrong length with a pandas
ValueError that did not name ``y``. ``y`` is now taken by position, in ``X``'s row order,
and checked: one finite number per row, refused naming ``y`` otherwise."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.rul import RULModel, rul_targets
from tests.models.test_rul import fleet

FAST = {"models": ("gbm",), "n_estimators": 10, "cap": 60.0, "calibration_folds": 2}


def _per_unit() -> tuple[pd.DataFrame, np.ndarray]:
    """Units concatenated as their own frames (index 0.. per unit), and their targets."""
    df = fleet(8)
    X = pd.concat([g.reset_index(drop=True) for _, g in df.groupby("unit")])
    return X, rul_targets(X["unit"].to_numpy(), X["cycle"].to_numpy(), None)


def test_y_is_taken_by_position_when_the_index_repeats() -> None:
    """Check a repeating index fits (was: IndexError) the model a fresh index fits."""
    X, y = _per_unit()
    assert not X.index.is_unique
    model = RULModel(**FAST).fit(X, y)
    fresh = RULModel(**FAST).fit(X.reset_index(drop=True), y)
    assert np.array_equal(model.predict(X), fresh.predict(X))


def test_y_follows_the_rows_not_the_index_labels() -> None:
    """Check shuffled rows with their y beside them (and a shuffled, repeating index) learn
    what the sorted rows do: y is each row's, by position."""
    X, y = _per_unit()
    perm = np.random.default_rng(0).permutation(len(X))
    model = RULModel(**FAST).fit(X.iloc[perm], y[perm])
    sorted_model = RULModel(**FAST).fit(X.reset_index(drop=True), y)
    assert np.array_equal(model.predict(X), sorted_model.predict(X))


@pytest.mark.parametrize(("bad", "words"), [
    (np.zeros(10), "X has 1024 rows, y has shape (10,)"),
    (np.zeros((1024, 2)), "y has shape (1024, 2)"),
    (["a"] * 1024, "y must be numbers"),
])
def test_a_y_that_does_not_fit_x_is_refused_naming_y(bad: object, words: str) -> None:
    """Check a y of the wrong length or shape, or not numbers, is refused naming y (was: a
    pandas ValueError about an index)."""
    X, _ = _per_unit()
    assert len(X) == 1024
    with pytest.raises(InvalidParameterError, match=r"RULModel\.fit's y ") as err:
        RULModel(**FAST).fit(X, bad)
    assert err.value.field == "y" and words in str(err.value)


def test_a_missing_y_value_is_refused_naming_its_position() -> None:
    X, y = _per_unit()
    y = y.astype(float)
    y[7] = np.nan
    with pytest.raises(InvalidParameterError, match=r"y\[7\] is nan") as err:
        RULModel(**FAST).fit(X, y)
    assert err.value.field == "y"
