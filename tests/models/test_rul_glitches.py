"""RULModel.pass_over_glitches: a lone wild reading no longer refuses a unit for good (a
store's history cannot be edited), while a unit truly outside the domain still is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgewise.models.rul import GLITCH_ROWS, RULModel
from tests.models.test_rul_domain_checks import _histories


@pytest.fixture(scope="module")
def model() -> RULModel:
    return RULModel(window=10, n_estimators=30, learning_rate=0.1, calibration_folds=2,
                    cap=60.0).fit(_histories(8))


@pytest.fixture(scope="module")
def test() -> pd.DataFrame:
    test = _histories(4, seed=1)
    return test[test.cycle <= 40].reset_index(drop=True)


def _set(df: pd.DataFrame, unit: int, cycles: list[int], value: float) -> pd.DataFrame:
    out = df.copy()
    out.loc[(out.unit == unit) & out.cycle.isin(cycles), "vib"] = value
    return out


def test_a_lone_glitch_is_passed_over_as_the_previous_value_carried(
        model: RULModel, test: pd.DataFrame) -> None:
    """Check that one 1e6 reading in cycle 3 (unscorable before: its whole-history slope
    reads every row) is blanked and listed, and that the unit then scores exactly as the
    history with its cycle-2 value in cycle 3 (the carry a missing reading gets); the other
    units' rows and predictions are untouched."""
    glitch = _set(test, 1, [3], 1e6)
    assert list(model.unscorable(glitch)) == [1]
    clean, passed = model.pass_over_glitches(glitch)
    assert model.unscorable(clean) == {}
    (g,) = passed[1]
    row = int(np.flatnonzero((glitch.unit == 1) & (glitch.cycle == 3))[0])
    assert (g["sensor"], g["cycle"], g["value"], g["row"]) == ("vib", 3, 1e6, row)
    assert g["z"] > 20 and list(passed) == [1]
    carried = _set(test, 1, [3], float(test.vib[(test.unit == 1) & (test.cycle == 2)].iloc[0]))
    assert model.predict(clean).equals(model.predict(carried))
    assert clean.drop(index=row).equals(glitch.drop(index=row))


@pytest.mark.parametrize("cycles, why", [
    ([10, 11, 12, 13], "a run longer than GLITCH_ROWS"),
    ([40], "the last row: a real excursion may be starting"),
    ([1], "the first row: nothing in the domain before it"),
    ([5, 20], "two glitches in 40 rows: over one per 100 rows"),
])
def test_what_is_no_lone_glitch_stays_unscorable(
        model: RULModel, test: pd.DataFrame, cycles: list[int], why: str) -> None:
    """Check that out-of-domain readings that are no lone glitch are left as they were,
    for unscorable to refuse by name: {why}."""
    assert GLITCH_ROWS == 3
    bad = _set(test, 2, cycles, 1e6)
    clean, passed = model.pass_over_glitches(bad)
    assert passed == {} and clean is bad, why
    assert list(model.unscorable(clean)) == [2], why


def test_a_short_run_passes_and_another_fleet_does_not(
        model: RULModel, test: pd.DataFrame) -> None:
    """Check that a run of GLITCH_ROWS rows in a 300-row unit (3 readings, at most one
    per 100 rows) passes, and that a unit read in other units (x1000 throughout) is still
    refused: it is no glitch."""
    long = _histories(1, seed=3)
    while len(long) < 300:
        long = pd.concat([long, _histories(1, seed=len(long))], ignore_index=True)
    long = long.head(300).assign(unit=7, cycle=np.arange(1, 301))
    burst = _set(long, 7, [100, 101, 102], -5e5)
    clean, passed = model.pass_over_glitches(burst)
    assert [g["cycle"] for g in passed[7]] == [100, 101, 102]
    assert model.unscorable(clean) == {}
    shifted = test.assign(vib=np.where(test.unit == 0, test.vib * 1000, test.vib))
    clean, passed = model.pass_over_glitches(shifted)
    assert passed == {} and list(model.unscorable(clean)) == [0]


def test_a_repeated_index_and_integer_columns_are_handled(
        model: RULModel, test: pd.DataFrame) -> None:
    """Check that the glitch is found by row position (an index repeating labels would
    blank every row so labelled) and that an integer sensor column takes the blank."""
    glitch = _set(test, 3, [7], 1e6)
    glitch.index = np.zeros(len(glitch), dtype=int)
    glitch["vib"] = glitch["vib"].round().astype(np.int64)
    clean, passed = model.pass_over_glitches(glitch)
    assert [g["cycle"] for g in passed[3]] == [7]
    assert int(clean["vib"].isna().sum()) == 1 and (clean.index == 0).all()
