"""Two-state series (a door open or shut, a pump running or not, a heater on or off, a
rain gauge's tips): told apart from measurements, so their long runs are not called stuck
and their switches are no spikes.

A device sends a boolean as ``true``/``false`` (SenML ``vb``), stored as 1.0 / 0.0
(:mod:`edgewise.telemetry`); a heater's power (0 or 1500 W), a pump's current (0 or 7.5 A)
or a rain gauge's tips (0 or 0.2 mm) have two levels of their own. Such a series holds one
value for as long as nothing happens, so a run of identical readings says nothing of a
stuck sensor, a drift score of its median says only which state was more common, and a
switch is no spike. A series is two-state when its finite readings take exactly two
values and both occur: any number of times for 0 and 1; else the rarer at least
:data:`MIN_STATE_COUNT` times and in at least :data:`MIN_STATE_SHARE` of the readings (a
flat 100.0 that drops to 0.0 now and then is a measurement with dropouts, whose dropouts
are spikes), and the series switched back at least once (one step from 20.0 to 25.0 is
a measurement's level shift, with a drift score). One that held a single value all along
cannot be told from a measurement that sat still, and is judged as one. ``on_fraction``
is the share of the higher value.

>>> two_state([0, 0, 1, 1, 1, 0, 0, 0])
{'binary': True, 'transitions': 2, 'on_fraction': 0.375}
>>> two_state([0.0, 0.5, 1.0])["binary"], two_state([1.0] * 5)["binary"]
(False, False)
>>> two_state(([0.0] * 10 + [1500.0] * 2) * 10)          # a heater, 2 on and 10 off
{'binary': True, 'transitions': 19, 'on_fraction': 0.1667}
>>> two_state([100.0] * 97 + [0.0] * 3)["binary"]       # three dropouts of a valve
False
>>> two_state([20.0] * 30 + [25.0] * 30)["binary"]      # one step: a level shift
False
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BAND_COUNT", "BAND_SWITCHES", "LEVEL_GAP", "LEVEL_SIGMAS", "MIN_STATE_COUNT",
           "MIN_STATE_SHARE", "level_bands", "two_state"]

#: Readings the rarer of two levels other than 0 and 1 needs for a two-state series.
MIN_STATE_COUNT = 3
#: Share of the readings the rarer of two levels other than 0 and 1 needs for a two-state
#: series: a rain gauge that tips once in eight readings is two-state, a valve that drops
#: to 0 once in fifty readings has dropouts.
MIN_STATE_SHARE = 0.05
#: How many times the larger spread (:func:`_spread`) of two noisy levels the gap between
#: them must be for the series to be two-level (:func:`level_bands`): a pump at 0 and
#: 7.5 +- 0.05 A, 150 times; a heater at 0 and 1500 +- 2 W, 750 times.
LEVEL_GAP = 20.0
#: Switches between two noisy levels that make them two states (:func:`level_bands`): on
#: and off twice. A setpoint moved once and back is a measurement's excursion, whose
#: readings the level-shift test of the stream cleaner judges.
BAND_SWITCHES = 4
#: Readings each of two noisy levels needs (:func:`level_bands`): the spread of fewer is
#: chance (three readings of 50 +- 5 can lie within 1 of each other).
BAND_COUNT = 5
#: How many spreads of the noisier level a reading of a two-level series may lie from its
#: nearest level and be at it (never less than the gap / :data:`LEVEL_GAP`).
LEVEL_SIGMAS = 5.0


def two_levels(a: tuple[float, int], b: tuple[float, int], switches: int) -> bool:
    """Whether a series of exactly two values, ``a`` and ``b`` (each ``(value, count)``),
    that switched between them ``switches`` times is two-state: 0 and 1 (a boolean), or
    whose rarer value came :data:`MIN_STATE_COUNT` times and in :data:`MIN_STATE_SHARE` of
    the readings, with two switches (a heater's 0 and 1500 W; one step is a level shift).
    The one rule of :func:`two_state` and of the stream cleaner's.

    >>> two_levels((0.0, 40), (1500.0, 3), switches=4), two_levels((1.0, 1), (0.0, 99), 1)
    (True, True)
    >>> two_levels((20.0, 50), (25.0, 50), switches=1)
    False
    """
    (x, nx), (y, ny) = a, b
    if x + y == 1.0 and x * y == 0.0:  # 0 and 1, either way round
        return True
    rare = min(nx, ny)
    return rare >= MIN_STATE_COUNT and rare >= MIN_STATE_SHARE * (nx + ny) and switches >= 2


def _spread(s: np.ndarray, centre: float) -> float:
    """The spread of sorted readings ``s`` about their median ``centre``: the larger of
    the MAD * 1.4826 and the interquartile range / 1.349 (both the standard deviation of
    normal noise; a few readings of 50 +- 5 can lie within 1 of their median, never all
    their middle half)."""
    q1, q3 = np.percentile(s, [25, 75])
    return max(1.4826 * float(np.median(np.abs(s - centre))), float(q3 - q1) / 1.349)


def level_bands(values: object) -> tuple[float, float, float] | None:
    """``(low level, high level, tolerance)`` where a series' finite readings cluster
    about two noisy levels (a pump drawing 0 or 7.5 +- 0.05 A, a heater at 0 or 1500 +- 2
    W), else None. The readings split at the widest gap that leaves each side
    :data:`BAND_COUNT` readings and :data:`MIN_STATE_SHARE` of them; each side's
    level is its median, its spread as noise's standard deviation (:func:`_spread`).
    Two-level when a spread is above 0 (levels of exactly one value each are
    :func:`two_levels`' to judge: a quantised sensor's 20.0 / 20.1 cannot be told from
    two states), the gap between the levels is
    :data:`LEVEL_GAP` times the larger spread, fewer than :data:`MIN_STATE_SHARE` of the
    readings lie beyond ``tolerance`` (:data:`LEVEL_SIGMAS` spreads, at least the gap /
    LEVEL_GAP) of both levels, and the readings at the levels switched between them
    :data:`BAND_SWITCHES` times (one move and back is a setpoint's excursion). A reading
    at a level is no spike; one further from both than the gap and the tolerance, and
    than ``n_sigmas`` steps the sensor moves in, is one (a 30 A reading of the pump); one
    between is judged as any (a switch caught half way). The batch report's and the
    stream cleaner's rule (:func:`~edgewise.quality.spikes.hampel_mask`).

    >>> rng = np.random.default_rng(0)
    >>> pump = np.where(np.arange(60) // 3 % 2, 7.5 + rng.normal(0, 0.05, 60), 0.0)
    >>> lo, hi, tol = level_bands(pump); float(lo), round(float(hi), 1), round(tol, 3)
    (0.0, 7.5, 0.375)
    >>> level_bands(20.0 + rng.normal(0, 1.0, 200)) is None        # one noisy level
    True
    >>> level_bands(np.r_[rng.normal(20, 0.1, 30), rng.normal(25, 0.1, 30)]) is None
    True
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    n = len(v)
    need = max(BAND_COUNT, math.ceil(MIN_STATE_SHARE * n))
    if n < 2 * need:
        return None
    # readings near the largest float: judged in units of 2**-64, exactly (their medians
    # overflowed to inf), as spikes.BIG_UNIT does
    unit = 2.0**-64 if float(np.abs(v).max()) > 2.0**960 else 1.0
    s = np.sort(v * unit)
    v = v * unit
    with np.errstate(all="ignore"):
        gaps = s[need:n - need + 1] - s[need - 1:n - need]  # splits leaving need each side
        k = int(np.argmax(gaps)) + need
        lo, hi = float(np.median(s[:k])), float(np.median(s[k:]))
        spread = max(_spread(s[:k], lo), _spread(s[k:], hi))
        gap = hi - lo
        if not (spread > 0.0 and math.isfinite(gap) and gap >= LEVEL_GAP * spread):
            return None
        tol = max(LEVEL_SIGMAS * spread, gap / LEVEL_GAP)
        near_lo, near_hi = np.abs(v - lo) <= tol, np.abs(v - hi) <= tol
    if n - int(np.count_nonzero(near_lo | near_hi)) >= MIN_STATE_SHARE * n:
        return None  # readings everywhere between: a measurement, not two states
    side = near_hi[near_lo | near_hi]
    if int(np.count_nonzero(side[1:] != side[:-1])) < BAND_SWITCHES:
        return None
    return lo / unit, hi / unit, tol / unit


def two_state(values: object) -> dict[str, bool | int | float]:
    """Whether a series (NaN skipped) is two-state, its switches, and its share of the
    higher value (of 1s for a boolean)."""
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    levels, counts = np.unique(v, return_counts=True)
    switches = int((v[1:] != v[:-1]).sum())
    binary = len(levels) == 2 and two_levels(
        (float(levels[0]), int(counts[0])), (float(levels[1]), int(counts[1])), switches)
    if not binary:
        return {"binary": False, "transitions": 0, "on_fraction": 0.0}
    return {"binary": True, "transitions": switches,
            "on_fraction": round(float(counts[1]) / len(v), 4)}
