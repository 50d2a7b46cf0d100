"""The numpy paths of device_history and behaviour_profile (a store's sorted history) give
the very numbers of the general pandas paths (any other history)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from edgewise.models.profile import behaviour_profile, device_history


def _frame(seed: int, days: float, step_s: int, gaps: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = int(days * 86_400 / step_s)
    idx = pd.Timestamp("2024-01-01 05:17", tz="UTC") + pd.to_timedelta(
        np.arange(n) * step_s, unit="s")
    hour = (idx.hour + idx.minute / 60).to_numpy()
    frame = pd.DataFrame({"a": 20 + 3 * np.sin(2 * np.pi * hour / 24) + rng.normal(0, 1, n),
                          "b": rng.normal(0, 1, n).cumsum(), "c": rng.normal(5, 2, n)},
                         index=idx)
    if gaps:
        frame.loc[rng.random(n) < 0.1, "a"] = np.nan
        frame.iloc[: n // 4, 2] = np.nan
    return frame


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return list(a) == list(b) and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


@pytest.mark.parametrize(("days", "step_s", "grid_s", "gaps"), [
    (2.0, 300, 300, False), (3.0, 600, 600, True), (4.0, 900, 1800, False),
    (0.5, 60, 13, True)])
def test_profile_is_the_same_on_either_path(days: float, step_s: int, grid_s: int,
                                            gaps: bool) -> None:
    """Check a sorted history's profile (numpy) equals, to the last bit, the profile of
    the same readings in shuffled order (pandas), with a reference and relations."""
    frame = _frame(int(days * 10 + step_s), days, step_s, gaps)
    shuffled = frame.iloc[np.random.default_rng(1).permutation(len(frame))]
    kw = {"reference": "c", "reference_value": 5.0}
    fast = behaviour_profile(frame, grid_s * 10**9, **kw)
    assert _same(fast, behaviour_profile(shuffled, grid_s * 10**9, **kw)), fast
    assert np.isfinite(fast["corr:a~b"]) and np.isfinite(fast["at_ref:a"])
    assert (days >= 3) == np.isfinite(fast["daily:a"])


def test_device_history_is_the_same_on_either_path() -> None:
    """Check a store's rows (sorted by metric, then time) make the frame the general path
    makes of the same rows unsorted, its index sorted by time where metrics' times differ
    (before: metric by metric, so index[0] was not the first reading)."""
    rng = np.random.default_rng(7)
    rows = [(m, int(t), float(rng.normal()))
            for m, times in (("a", [5, 9, 20]), ("b", [1, 9, 30, 40]), ("c", [2, 5]))
            for t in np.array(times) * 10**9]
    fast = device_history(rows)
    pd.testing.assert_frame_equal(fast, device_history(rows[::-1]), check_exact=True)
    assert fast.index.asi8.tolist() == [t * 10**9 for t in (1, 2, 5, 9, 20, 30, 40)]
    assert fast["a"].dropna().index.asi8.tolist() == [t * 10**9 for t in (5, 9, 20)]
    assert fast.loc[pd.Timestamp(2 * 10**9, unit="ns", tz="UTC"), "c"] == rows[-2][2]


def test_the_daily_cycle_of_huge_values_is_read_not_made_up() -> None:
    """Check white noise at 1e160 has the daily share of the same noise at 1 (about 0), a
    single 1e200 spike gives no perfect cycle, a real cycle at 1e160 keeps its strength and
    peak, and hourly means that overflow give NaN (before: the variance overflowed to inf,
    the share was NaN, and ``min(1.0, nan)`` reported a perfect daily cycle, 1.0, each
    time; cluster.py groups devices on it)."""
    idx = pd.date_range("2024-01-01", periods=1000, freq="10min", tz="UTC")
    noise = np.random.default_rng(0).normal(size=1000)
    step = 600 * 10**9
    base = behaviour_profile(pd.DataFrame({"a": noise}, index=idx), step)
    huge = behaviour_profile(pd.DataFrame({"a": noise * 1e160}, index=idx), step)
    assert base["daily:a"] < 0.05 and abs(huge["daily:a"] - base["daily:a"]) < 1e-9
    spike = behaviour_profile(pd.DataFrame({"a": np.where(np.arange(1000) == 7, 1e200, noise)},
                                           index=idx), step)
    assert spike["daily:a"] < 0.5, spike
    hour = (idx.hour + idx.minute / 60).to_numpy()
    cycle = np.sin(2 * np.pi * (hour - 9) / 24) + 0.1 * noise
    one, big = (behaviour_profile(pd.DataFrame({"a": cycle * s}, index=idx), step)
                for s in (1.0, 1e160))
    assert one["daily:a"] > 0.9
    assert all(abs(big[k] - one[k]) < 1e-9 for k in ("daily:a", "daily_cos:a", "daily_sin:a"))
    with warnings.catch_warnings():  # the level and trend overflow too (other features)
        warnings.simplefilter("ignore", RuntimeWarning)
        over = behaviour_profile(pd.DataFrame(
            {"a": np.where(noise > 0, 1.7e308, -1.7e308)}, index=idx), step)
    assert math.isnan(over["daily:a"]) and math.isnan(over["daily_cos:a"]), over
