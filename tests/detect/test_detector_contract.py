"""The detector contract, parametrized over every registered detector."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from edgewise.detect import DETECTORS, Detector, get_detector
from edgewise.detect.checks import all_detectors, roc_auc, yield_detector_checks


@pytest.mark.parametrize(
    "detector, check",
    [
        pytest.param(d, c, id=f"{type(d).__name__}:{c.__name__}")
        for d in all_detectors()
        for c in yield_detector_checks(d)
    ],
)
def test_detector_contract(detector: Detector, check: Callable[[Detector], None]) -> None:
    """Check that every detector passes every contract check."""
    check(detector.clone())


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_roc_auc_above_chance_on_a_labelled_nab_series(name, shared_data):
    """Check that each default detector ranks NAB's labelled anomaly windows above chance."""
    from edgewise.bench.nab_scorer import load_windows

    nab = shared_data / "nab"
    key = "realKnownCause/machine_temperature_system_failure.csv"
    df = pd.read_csv(nab / "data" / key)
    ts = pd.to_datetime(df["timestamp"]).to_numpy("datetime64[ns]")
    y = np.zeros(len(ts), dtype=bool)
    for a, b in load_windows(nab / "labels" / "combined_windows.json")[key]:
        y |= (ts >= a) & (ts <= b)
    s = get_detector(name).score_many(df["value"].to_numpy(float)[:, None], columns=["value"])
    assert roc_auc(s[1000:], y[1000:]) > 0.5
