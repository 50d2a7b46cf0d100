"""A sorted time column spanning more than 292 years is sorted.

``_check_time`` took ``np.diff`` of int64 ns: a step of over 2**63 ns (292 years) wrapped
round to a negative one, and ``edgewise detect`` called a sorted file unsorted.
"""

from __future__ import annotations

import pandas as pd
import pytest

from edgewise.bench.csv import detect_table
from edgewise.errors import QualityError


def test_a_step_over_292_years_is_no_step_back() -> None:
    """Check 1700 -> 2024 (324 years) is read in order and scored."""
    df = pd.DataFrame({"time": ["1700-01-01T00:00:00Z", "2024-01-01T00:00:00Z",
                                "2024-01-01T00:01:00Z"], "v": [1.0, 2.0, 3.0]})
    res = detect_table(df, detector="ewzscore")
    assert len(res.frame) == 3


def test_a_step_back_over_292_years_is_still_refused() -> None:
    """Check the reverse order is refused, naming the row that comes first in time."""
    df = pd.DataFrame({"time": ["2024-01-01T00:00:00Z", "1700-01-01T00:00:00Z"], "v": [1, 2]})
    with pytest.raises(QualityError, match=r"must be sorted; row 2 \('1700-01-01T00:00:00Z'\)"):
        detect_table(df, detector="ewzscore")


def test_equal_neighbours_are_duplicates() -> None:
    """Check a repeated time is still named as one."""
    df = pd.DataFrame({"ts": [1_700_000_000, 1_700_000_000], "v": [1, 2]})
    with pytest.raises(QualityError, match=r"duplicate timestamp 1700000000 \(rows 1 and 2\)"):
        detect_table(df, detector="ewzscore")
