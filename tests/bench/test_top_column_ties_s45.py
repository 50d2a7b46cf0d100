"""``edgewise detect`` with a univariate detector on several columns: which column a row's
alarm is put on where two columns both score 1.0 (scores clip there)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgewise.bench.csv import detect_table


def _two_faults(order: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 2000
    cols = {"a": 20 + rng.normal(0, 1, n), "b": 50 + rng.normal(0, 1, n)}
    cols["a"][1500] += 15  # 15 sd: scores 1
    cols["b"][1500] += 10_000  # 10,000 sd: scores 1 too
    return pd.DataFrame({c: cols[c] for c in order})


def test_a_tie_at_one_blames_the_farthest_reading_whatever_the_column_order() -> None:
    """Check the row where column a is 15 sd off and column b 10,000 sd off puts the alarm
    on b in either column order: both score 1.0, and argmax took the first column, so the
    blame followed the order of the columns (a first: a)."""
    for order in (["a", "b"], ["b", "a"]):
        res = detect_table(_two_faults(order), detector="context-likelihood")
        row = res.frame.iloc[1500]
        assert row["anomaly_score"] == 1.0
        assert row["top_column"] == "b", (order, row.to_dict())


def test_without_a_tie_the_highest_score_is_named() -> None:
    """Check the tie-break leaves rows alone where one column scores highest."""
    rng = np.random.default_rng(1)
    n = 1500
    df = pd.DataFrame({"a": 20 + rng.normal(0, 1, n), "b": 50 + rng.normal(0, 1, n)})
    df.loc[1200, "a"] += 40
    res = detect_table(df, detector="context-likelihood")
    scores = res.frame.iloc[1200]
    assert scores["top_column"] == "a" and scores["anomaly_score"] > 0.9
