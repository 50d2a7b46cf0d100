"""bench csv / detect say mahalanobis' warm-up as the detector keeps it on wide tables:
3 readings of each column past 16 columns, not the 50 of its ``warmup``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgewise.bench.csv import detect_table


def test_the_warm_up_of_30_columns_is_said_as_the_rows_scored_0():
    """Check the notes name rows 1-87 (29 columns read from row 1: 3 readings each; the
    first row scored above 0 is row 88) and the late column 'after 90 readings' (30
    tracked from then): they said 50, while rows 51-87 were scored 0."""
    rng = np.random.default_rng(7)
    df = pd.DataFrame(rng.normal(size=(400, 30)), columns=[f"c{j}" for j in range(30)])
    df.loc[:199, "c29"] = np.nan  # one column first read at row 201
    res = detect_table(df, detector="mahalanobis")
    first = int(np.flatnonzero(res.frame["anomaly_score"].to_numpy() > 0)[0])
    assert res.warmup == first == 87
    assert res.notes == [
        "rows 1-87 are mahalanobis's warm-up: scored 0, not flagged",
        "mahalanobis scores a column after 90 readings of it: column 'c29' from row 291 on"]


def test_a_table_wider_than_the_window_is_said_to_score_no_column():
    """Check 300 columns (more than its window can hold at the default alpha) are said to
    be scored in no row, and why (it said only that all rows were its warm-up)."""
    rng = np.random.default_rng(8)
    df = pd.DataFrame(rng.normal(size=(120, 300)), columns=[f"c{j}" for j in range(300)])
    df.loc[:9, "c0"] = np.nan
    res = detect_table(df, detector="mahalanobis")
    assert (res.frame["anomaly_score"] == 0).all()
    assert res.notes[-1] == (
        "mahalanobis scores no column while it tracks more than 265 (300 here): its window "
        "(alpha 0.005) holds too few readings for so many; give it fewer columns (--columns)")
