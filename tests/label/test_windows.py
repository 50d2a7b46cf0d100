"""Windows cut from a device's history: the features active learning and feedback use."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.label.windows import windows_from_series


@pytest.mark.parametrize("unit", [2.0**-30, 2.0**30])
def test_window_features_do_not_depend_on_the_units(unit: float) -> None:
    """Check a metric read in tiny units (nA for A) gives the same window features and
    scores: the robust scaling has no absolute floor that would flatten it."""
    rng = np.random.default_rng(0)
    v = 0.01 * rng.standard_normal(600)
    v[300:320] += 0.2
    ts = np.arange(600) * 10**9
    ref = windows_from_series(v, ts, "d", length=30)
    got = windows_from_series(v * unit, ts, "d", length=30)
    np.testing.assert_allclose(got.features, ref.features, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(got.scores >= 0.9, ref.scores >= 0.9)
    assert ref.features[:, 0].std() > 0  # the features do vary between windows


def _windows(n: int = 3, length: int = 10):
    """``n`` windows of ``length`` ns each, back to back, of device 'd'."""
    from edgewise.label.windows import WindowSet

    starts = np.arange(n) * length
    return WindowSet(np.array(["d"] * n, dtype=object), starts, starts + length,
                     np.zeros((n, 1)), np.zeros((n, 1)), ["f"])


def _label(start: int, end: int, label: str = "anomaly", device: str = "d"):
    from edgewise.label.store import Label

    return Label(1, device, start, end, label, "", "test", 0, 1, True)


def test_a_label_that_only_grazes_a_window_does_not_label_it() -> None:
    """Check an anomaly label spilling one reading's worth into its neighbours labels only
    the window it covers: every window it touched became 'anomaly', and a quiet window
    (scored 0) labelled anomalous drove the device's threshold to 0."""
    from edgewise.label.windows import window_labels

    y, kind = window_labels(_windows(), [_label(9, 21)])
    assert y.tolist() == [-1, 1, -1]
    assert kind.tolist() == ["", "anomaly", ""]


@pytest.mark.parametrize(("start", "end", "want"), [
    (12, 16, [-1, 1, -1]),   # inside one window
    (17, 24, [-1, -1, 1]),   # 3 of 7 in window 1, 4 in window 2: the one holding most
    (15, 25, [-1, 1, 1]),    # half in each: both hold half of it
    (5, 30, [1, 1, 1]),      # covers half of window 0 and all of the others
    (6, 30, [-1, 1, 1]),     # covers 4 of window 0's 10: not half, nor half of the label
    (0, 5, [1, -1, -1]),     # a label at the very start
])
def test_a_window_takes_a_label_covering_half_of_it_or_holding_half_of_it(
        start: int, end: int, want: list[int]) -> None:
    """Check the rule: a window takes a label that covers at least half of the window, or
    when it holds at least half of the label."""
    from edgewise.label.windows import window_labels

    assert window_labels(_windows(), [_label(start, end)])[0].tolist() == want


@pytest.mark.parametrize("spike", [1e154, -1e300, 1.7e308])
def test_window_features_stay_finite_and_see_a_huge_reading(spike: float) -> None:
    """np.std squared readings beyond 1e154 to inf: the spread and step features of the
    window holding such a reading were inf (a classifier then refuses the whole set)."""
    v = np.full(200, 5.0)
    v[::7] += 0.25  # a little spread, so the window with the spike stands out
    v[105] = spike
    ws = windows_from_series(v, np.arange(200) * 10**9, "d", length=20)
    assert np.isfinite(ws.features).all()
    spread = ws.features[:, ws.feature_names.index("c0_spread")]
    assert int(np.argmax(spread)) == 5  # the window holding reading 105



@pytest.mark.parametrize("back_at", [50, 60])
def test_a_clock_going_back_is_not_called_repeated_times(back_at: int) -> None:
    """A history whose clock goes back two hours at a window's end (or inside the last
    window) was refused as "readings 1 to 50 (and the next) all have ts_ns 0 ... Merge
    repeated times first": no two readings shared a time. The message says the time goes
    back, and what to do."""
    ts = np.arange(100) * 60 * 10**9
    ts[back_at:] -= 2 * 3600 * 10**9
    with pytest.raises(InvalidParameterError, match=r"would end before it starts.*time goes back.*"
                       r"Put the readings in time order") as caught:
        windows_from_series(np.zeros(100), ts, "d", length=50)
    assert "repeated" not in str(caught.value)
    # repeated times are still called so
    with pytest.raises(InvalidParameterError,
                       match=r"no duration: readings 1 to 50 .*all have ts_ns 0"):
        windows_from_series(np.zeros(100), np.r_[np.zeros(60), np.arange(1, 41)] * 10**9,
                            "d", length=50)
