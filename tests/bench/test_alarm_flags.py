"""``edgewise.bench.csv.alarm_metrics`` parses the flags as it parses the labels (NaN or
empty: not flagged; 'True'/'False' text read; anything else refused by value) and refuses
flags and labels of different lengths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.csv import alarm_metrics
from edgewise.errors import InvalidParameterError, QualityError

LABELS = [0, 0, 1, 1]


def counts(m: dict) -> tuple[int, int, int, int]:
    return m["tp"], m["fp"], m["fn"], m["tn"]


@pytest.mark.parametrize("flags", [
    np.array(["False", "False", "True", "False"]),
    np.array([np.nan, 0.0, 1.0, np.nan]),
    pd.Series(["", None, "yes", "no"], dtype=object),
    pd.Series([False, pd.NA, True, pd.NA], dtype="boolean"),
    np.array([False, False, True, False]),
])
def test_flags_are_read_as_labels_are(flags):
    """Check text 'False' and NaN are no flag (np.asarray(..., dtype=bool) made both True:
    tp 2, fp 2 for the text flags)."""
    assert counts(alarm_metrics(flags, LABELS)) == (1, 0, 1, 2)


def test_a_flag_that_is_no_flag_is_refused_by_value():
    """Check a score where a flag belongs is named, not taken as True."""
    with pytest.raises(QualityError, match=r"flags \(is_anomaly\) must hold 0/1 or "
                                           r"true/false.*row 2 has 0\.7\.$"):
        alarm_metrics(np.array([0.0, 0.7, 1.0, 0.0]), LABELS)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_flags_and_labels_of_different_lengths_are_refused(n):
    """Check both lengths are named (one flag was broadcast over every label; others
    failed inside numpy without saying which input was short)."""
    with pytest.raises(InvalidParameterError, match=rf"got {n} flags but 4 labels"):
        alarm_metrics(np.zeros(n, dtype=bool), LABELS)
