"""Hampel despiking: a value far from the median of its neighbours is a spike.

The scale is the median absolute deviation (MAD) times 1.4826 (the normal-consistent
factor); a point is a spike when it lies more than ``n_sigmas`` scales from the
centred median of ``2 * half_window + 1`` points. The scale never drops below the
series' noise level (median absolute first difference / sqrt 2, less the steps into and
out of the readings that stand out by the noise the other steps show: in a series of
five readings or fewer a spike's own two steps are half the steps, and set the median;
and less the repeats of a sensor read more often than it refreshes, :func:`_held`: read
two or three times, half or more of its steps were 0 and the noise level 0, and 7 % of
its readings spikes),
the step the sensor moves in (:func:`usual_step`: its resolution, the smallest step
between two readings that recurs, :func:`resolution`, or where that is jitter an order
of magnitude below the steps it routinely moves by, the smallest of those: a sensor that
reports tenths and mostly repeats itself has no spread, yet a move by a tenth or two is
no spike, nor is a move by one 0.067 % step of a CPU reading that also jitters by
0.002), ``1e-9`` of the local median, nor ``min_scale`` (0 by default: no floor in
absolute units, so a series read in nA is judged as the same series read in A), so a
locally flat stretch does not call every tiny step a spike. A reading at one of the
series' levels (:func:`levels`: a value it takes in at least 5 % of its readings, as the
rarer level of a two-level series) is no spike: the sensor reads it by nature. A series
with a reading near the largest float (beyond :data:`BIG_VALUE`) is judged in units of
:data:`BIG_UNIT`, exactly: its steps and spreads overflowed to inf (1e308 to -1e308), an
infinite step was no noise and an infinite threshold flagged nothing.

The test takes two passes: the readings that are spikes without the resolution floor
are candidates, and the step the sensor moves in is taken with the candidates (less
those at a level) as ``outliers``, so the way down to a dropout and back up, however
often the same dropout recurs, is never the floor that hides it, while the lone tenth of
a quiet sensor that reports tenths (a candidate too: its window has no spread) still
shows its resolution. A step into or out of an outlier shows the resolution only where
it is small beside both its readings and no step between two readings that are no
outliers is smaller (:data:`RESOLUTION_SHARE`): a glitch by a fifth of a noisy sensor's
level, however often the same one recurs, is no step it moves in, while a quiet sensor
that leaves its value only for lone readings shows its step.
Near 0, where every step is large beside the readings, steps of one size into and out
of outliers count once the outliers lay both above and below (0.0 with a lone 0.1 or
-0.1); a quiet quantised sensor that reads at most four of its steps from 0 and blips
one way only (0.0 with a lone 0.1 now and then, rarer than a level) is the exception:
its blips look like glitches up from zero in other units, and are spikes.

Near the ends the window runs past the readings, and the first (last) reading stands in
for what lies beyond: a reading is a spike when it stands out from the readings on both
its sides where both exist. The first and last readings, and a step within the first or
last ``half_window`` readings, have no reading on one side to come back to, and cannot be
told from the first readings of a new level (a setpoint moved two readings before the end
of a dashboard's window): they are spikes only when clearly beyond the readings on their
one side (:data:`EDGE_CLEAR`: a glitch from 20 to 500), else once a reading after them
comes back (a lone 30 after 20s as the last reading is a spike once the next reading is
back at 20). Near 0, where any step is large beside the level, a step in the last
readings further than twice the span of the other readings is such a glitch until a
reading after it comes (a pump that never ran in the window, started at its end).

>>> v = np.array([1.0, 1.1, 0.9, 1.0, 50.0, 1.0, 1.1, 0.9, 1.0])
>>> hampel_mask(v).nonzero()[0].tolist()
[4]
>>> float(despike(v)[4])
1.0
>>> tenths = np.array([20.0] * 6 + [20.1] + [20.0] * 6 + [20.1] + [20.0] * 6 + [20.3]
...                   + [20.0] * 6)
>>> hampel_mask(tenths, n_sigmas=5.0).any()   # steps of one or three tenths
np.False_
>>> flat = np.array([20.0] * 10 + [100.0] + [20.0] * 10)
>>> hampel_mask(flat, n_sigmas=5.0).nonzero()[0].tolist()  # its own step sets no floor
[10]
>>> step = np.array([20.0, 20.1, 19.9] * 6 + [30.0, 30.1])  # the last two: a new level?
>>> hampel_mask(step, n_sigmas=5.0).any()
np.False_
>>> hampel_mask(np.r_[step, 20.0], n_sigmas=5.0).nonzero()[0].tolist()  # no: came back
[18, 19]
>>> hampel_mask(np.r_[step[:18], 500.0], n_sigmas=5.0).nonzero()[0].tolist()  # a glitch
[18]
>>> valve = np.full(100, 100.0)
>>> valve[[10, 50, 90]] = 0.0                 # the same dropout three times
>>> hampel_mask(valve, n_sigmas=5.0).nonzero()[0].tolist()
[10, 50, 90]
>>> hampel_mask([20.0, 500.0, 20.1, 20.0]).nonzero()[0].tolist()  # four readings
[1]
>>> held = np.repeat(20.0 + np.random.default_rng(0).normal(0, 0.5, 300), 2)  # read twice
>>> hampel_mask(held, n_sigmas=5.0).any()
np.False_
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from edgewise.errors import QualityError
from edgewise.quality.states import MIN_STATE_COUNT, MIN_STATE_SHARE, level_bands

__all__ = ["BIG_UNIT", "BIG_VALUE", "EDGE_CLEAR", "JITTER_GAP", "MAD_SCALE", "RESOLUTION_SEEN",
           "RESOLUTION_SHARE", "despike", "hampel_mask", "levels", "resolution", "usual_step"]

MAD_SCALE = 1.4826
#: Times a step must be seen to be taken for the resolution: a spike's way up and back
#: down is two steps, a level shift one, and neither shows what the sensor resolves.
RESOLUTION_SEEN = 3
#: A step into or out of an outlier counts towards the resolution by itself only when it
#: is less than this share of both its readings' ``|value|``, and no larger than every
#: move between two readings that are no outliers. A quiet sensor that reports tenths
#: leaves 20.0 only for a lone 20.1, an outlier by its window's zero spread, and that step
#: shows what it resolves; a dropout from 100 to 0, a glitch to twice the value or from 20
#: to 25 does not, however often it recurs, nor a glitch by 4 of a sensor whose other
#: readings move by tenths (20 +- 0.5, read twice: the glitch's way up from the reading
#: it repeats was 4.0 each time, and hid every such glitch).
RESOLUTION_SHARE = 0.25
#: How many times the next recurring step size must be to set the sizes below it aside
#: as jitter (:func:`usual_step`): an order of magnitude, as AWS CPU readings jitter by
#: 0.002 % between levels 0.067 % apart.
JITTER_GAP = 10.0
#: A reading within ``half_window`` of an end, a spike by the readings on its one side,
#: is one when it lies further from their median than this many times the larger of that
#: median's size and the span of the series' other readings: a glitch from 20 to 500 or
#: to -127, not a setpoint moved from 20 to 30 nor a dropout to 0 (a pump switched off).
EDGE_CLEAR = 2.0
#: Magnitude past which a series is judged in units of :data:`BIG_UNIT` (a finite reading
#: beyond it): the steps, spreads and thresholds of readings near the largest float
#: (1.7e308) overflowed to inf (1e308 - -1e308, 5 robust deviations of 1e308), an
#: infinite step was no noise and an infinite threshold flagged nothing. 2**960 leaves
#: 2**64 of headroom for them; below it nothing is scaled.
BIG_VALUE = 2.0**960
#: The unit a series beyond :data:`BIG_VALUE` is judged in: a power of two, so each value,
#: step and ratio is the unscaled one exactly, and the series is judged as the same series
#: of ordinary magnitudes is.
BIG_UNIT = 2.0**-64


def _unit(v: np.ndarray) -> float:
    """The unit to judge ``v`` in: :data:`BIG_UNIT` where a finite reading lies beyond
    :data:`BIG_VALUE`, else 1.0 (nothing scaled).

    >>> _unit(np.array([20.0, np.inf])), _unit(np.array([20.0, -1e308])) == BIG_UNIT
    (1.0, True)
    """
    with np.errstate(invalid="ignore"):
        big = np.abs(v) > BIG_VALUE
    return BIG_UNIT if bool((big & np.isfinite(v)).any()) else 1.0


def _check(half_window: int, n_sigmas: float, min_scale: float = 0.0) -> None:
    """Raise naming the parameter that is out of its range or no number: numpy's ints are
    ints (np.int64(3) was refused), a bool is none, and text failed in a compare.

    >>> _check(np.int64(3), np.float32(5.0))
    >>> _check(3, "5")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: The 'n_sigmas' parameter of hampel must be a number > 0. Got '5'.
    """
    if (isinstance(half_window, bool | np.bool_)
            or not isinstance(half_window, numbers.Integral) or half_window < 1):
        raise QualityError(
            f"The 'half_window' parameter of hampel must be an int >= 1. Got {half_window!r}."
        )
    if not isinstance(n_sigmas, numbers.Real) or not n_sigmas > 0:
        raise QualityError(
            f"The 'n_sigmas' parameter of hampel must be a number > 0. Got {n_sigmas!r}.")
    if not isinstance(min_scale, numbers.Real) or not 0 <= min_scale < np.inf:
        # NaN flagged nothing, silently
        raise QualityError(
            f"The 'min_scale' parameter of hampel must be a finite number >= 0 (in the "
            f"readings' units; 0: no floor). Got {min_scale!r} instead.")


def _medians(v: np.ndarray, half_window: int,
             mode: str = "edge") -> tuple[np.ndarray, np.ndarray]:
    """Each reading's window median and scale. ``"edge"``: the first and last readings
    stand in for what lies beyond the ends (mirroring the readings there made a step in
    the last two readings a minority of its window, and both spikes); ``"reflect"``
    (``len(v) > half_window``): the readings on an end's one side, mirrored."""
    n = len(v)
    padded = np.pad(v, half_window, mode=mode)
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * half_window + 1)[:n]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window of NaN only: NaN
        med = np.nanmedian(win, axis=1) if np.isnan(v).any() else np.median(win, axis=1)
        mad = np.nanmedian(np.abs(win - med[:, None]), axis=1)
    return med, MAD_SCALE * mad


def _median_without(d: np.ndarray, own: np.ndarray) -> np.ndarray:
    """For each row of ``own`` (indices into ``d``, -1 for none), the median of ``d`` less
    those entries, as :func:`numpy.median` takes it; 0.0 where nothing is left.

    >>> _median_without(np.array([480.0, 479.9, 0.1]),
    ...                 np.array([[-1, 0], [0, 1], [1, 2]])).tolist()
    [240.0, 0.1, 480.0]
    """
    m = len(d)
    order = np.argsort(d, kind="stable")
    ds = d[order]
    rank = np.empty(m + 1, dtype=np.intp)
    rank[order] = np.arange(m)
    rank[m] = m  # -1, no step: a rank past every other, never skipped
    r = np.sort(rank[np.where(own < 0, m, own)], axis=1)
    r1, r2 = r[:, 0], r[:, 1]
    left = m - (r1 < m) - (r2 < m)  # the steps left

    def at(p: np.ndarray) -> np.ndarray:  # the p-th smallest step left
        p = p + (p >= r1)
        return ds[np.minimum(p + (p >= r2), m - 1)] if m else np.zeros(len(p))

    with np.errstate(over="ignore"):  # two steps past 1e308: inf, as numpy's
        mid = (at(np.maximum(left - 1, 0) // 2) + at(left // 2)) / 2
    return np.where(left > 0, mid, 0.0)


def _held(steps: np.ndarray, half_window: int) -> bool:
    """Whether readings with these consecutive ``steps`` (finite) are sampled and held:
    most of their runs of one value hold from two to ``half_window + 1`` readings. A
    sensor polled more often than it refreshes repeats each value it reads, and its
    repeats show the polling, not its noise; a quantised sensor whose noise is about its
    step repeats itself in runs of any length, most of one reading, and a quiet one (or a
    flat series with a dropout now and then) in runs longer than the window's majority:
    their repeats are noise.

    >>> _held(np.array([0.0, 0.4, 0.0, 0.7, 0.0, 0.2, 0.0]), 3)   # each value read twice
    True
    >>> _held(np.array([0.1, 0.0, 0.1, 0.1, 0.0, 0.1, 0.2]), 3)   # tenths: runs of one
    False
    """
    runs = np.diff(np.r_[-1, np.flatnonzero(steps > 0), len(steps)])  # readings per run
    return bool(2 * np.count_nonzero((runs >= 2) & (runs <= half_window + 1)) > len(runs))


def _noise(v: np.ndarray, med: np.ndarray, scale: np.ndarray, n_sigmas: float,
           min_scale: float, half_window: int) -> float:
    """The series' noise level: the median absolute step between consecutive finite
    readings / sqrt 2, times :data:`MAD_SCALE`, leaving out the steps into and out of the
    readings that stand out from their window by more than ``n_sigmas`` times the noise
    level the *other* steps show (each reading's own two steps left out of it), so that a
    spike's own way up and back down is no noise that hides it: with five readings or
    fewer a spike's two steps are half the steps, and set the median (20, 500, 20.1, 20
    had a noise level of 500 and no spike). Where every step is such a way in or out, no
    step shows the noise and all of them give it. Of a series sampled and held
    (:func:`_held`) only the steps that change the value count, here and in the noise of
    the other steps."""
    fin = np.flatnonzero(np.isfinite(v))
    with np.errstate(all="ignore"):  # steps between readings past +-1e308 overflow
        raw = np.abs(np.diff(v[fin]))
    ok = np.isfinite(raw)
    if not ok.any():
        return 0.0
    use = ok & (raw > 0)  # sampled and held: its repeats show the polling, not the noise
    if not (use.any() and _held(raw[ok], half_window)):
        use = ok
    k = len(raw)
    step = np.where(use, np.cumsum(use) - 1, -1)  # each step's index among those used
    own = np.stack([np.r_[-1, step], np.r_[step, -1]], axis=1)  # each reading's two steps
    other = MAD_SCALE * _median_without(raw[use], own) / np.sqrt(2)
    f = v[fin]
    with np.errstate(all="ignore"):
        floor = np.maximum(np.maximum(other, max(min_scale, 1e-300)), 1e-9 * np.abs(med[fin]))
        out = np.abs(f - med[fin]) > n_sigmas * np.maximum(scale[fin], floor)
    keep = use & ~(out[:k] | out[1:])
    d = raw[keep] if keep.any() else raw[use]
    with np.errstate(over="ignore"):
        return MAD_SCALE * float(np.median(d)) / np.sqrt(2)


def _candidates(
    v: np.ndarray, med: np.ndarray, scale: np.ndarray, n_sigmas: float, min_scale: float,
    half_window: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The readings that are spikes by every floor but the resolution, and that floor."""
    noise = _noise(v, med, scale, n_sigmas, min_scale, half_window)
    with np.errstate(all="ignore"):
        floor = np.maximum(max(min_scale, noise, 1e-300), 1e-9 * np.abs(med))
        return np.abs(v - med) > n_sigmas * np.maximum(scale, floor), floor


def _recurring_steps(values: object, outliers: object | None,
                     name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The sizes, ascending, of the steps between consecutive finite readings seen at least
    :data:`RESOLUTION_SEEN` times (see :func:`resolution`: which steps count, and equal
    within 1e-9 of the largest reading), how often each was seen, how often between two
    readings neither of which is an outlier (or small beside both), and how many steps
    there are between consecutive finite readings."""
    v = np.asarray(values, dtype=float).reshape(-1)
    unit = _unit(v)
    if unit != 1.0:  # readings near the largest float: their steps finite, exactly
        v = v * unit
    none = np.zeros(0)
    if outliers is None:
        out = np.zeros(len(v), dtype=bool)
        if len(v) >= 3:
            med, scale = _medians(v, 3)
            out = _candidates(v, med, scale, 3.0, 0.0, 3)[0]
    else:
        out = np.asarray(outliers, dtype=bool).reshape(-1)
        if len(out) != len(v):
            raise QualityError(
                f"The 'outliers' of {name} must mark each of the {len(v)} values; "
                f"got {len(out)} marks."
            )
    finite = np.isfinite(v)
    v, out = v[finite], out[finite]
    with np.errstate(all="ignore"):  # readings past +-1e308 or below 1e-300
        d = np.abs(np.diff(v))
        prev, this, out_prev, out_this = v[:-1], v[1:], out[:-1], out[1:]
        tol = 1e-9 * float(np.abs(v).max()) if len(v) else 0.0  # 20.1 - 20.0 != 20.2 - 20.1
        # a step counts by itself with no outlier, or when small beside both readings and
        # no larger than every move between two readings that are no outliers
        clean = ~(out_prev | out_this)
        small = d < RESOLUTION_SHARE * np.minimum(np.abs(prev), np.abs(this))
        moved = d[clean & (d > tol) & np.isfinite(d)]
        finest = float(moved.min()) + tol if len(moved) else np.inf
        alone = clean | (small & (d <= finest))
        # else a large one into or out of a single outlier counts only once outliers of its
        # size lay both above and below their neighbours: quantisation noise, not a dropout
        lone = ~clean & ~small & (out_prev != out_this)
        up = np.where(out_this, this > prev, prev > this)
        # (in BIG_UNIT, a step past the largest float unscaled is none: no size to give)
        keep = (alone | lone) & (d > 0) & (d <= np.finfo(float).max * unit)
        d, alone, lone, up = d[keep], alone[keep], lone[keep], up[keep]
        if not len(d):
            return none, none, none, max(len(v) - 1, 0)
        _, first, size = np.unique(np.round(d / tol), return_index=True, return_inverse=True)
    k = len(first)
    lones = np.bincount(size, weights=lone, minlength=k)
    ups = np.bincount(size, weights=lone & up, minlength=k)
    moves = np.bincount(size, weights=alone, minlength=k)
    seen = moves + np.where((ups > 0) & (ups < lones), lones, 0)
    recur = seen >= RESOLUTION_SEEN
    return d[first[recur]] / unit, seen[recur], moves[recur], len(v) - 1


def resolution(values: object, outliers: object | None = None) -> float:
    """The smallest step between two consecutive finite readings that is seen at least
    :data:`RESOLUTION_SEEN` times (steps equal to 1e-9 of the largest reading count as
    one): the sensor's resolution, below which no spread is judged (here and in
    :mod:`~edgewise.quality.drift`). 0 if no step recurs: one anomaly's own step (a
    spike on a flat series, a level shift) is no floor.

    A step into or out of one of the ``outliers`` (a boolean mask over ``values``; by
    default the readings further than 3 scales from their Hampel median, without this
    floor) counts only when it is less than :data:`RESOLUTION_SHARE` of both its
    readings' ``|value|`` and no larger than every move between two readings that are no
    outliers, or, larger than that share, once outliers of its size were seen both above
    and below their neighbours (quantisation noise about 0, not a dropout): repeated
    dropouts, or a glitch by the same 4.0 off readings that move by tenths, are no
    resolution, however many.

    >>> resolution([20.0, 20.1, 20.0, 20.1, 20.3, 20.3])
    0.1...
    >>> resolution([20.0, 20.0, 100.0, 20.0, 20.0, 25.0])
    0.0
    >>> resolution([20.0] * 5 + [0.0] + [20.0] * 5 + [0.0] + [20.0] * 5)  # two dropouts
    0.0
    >>> resolution([20.0, 0.0, 20.0, 0.0], outliers=[False, False, False, False])
    20.0
    >>> v = [20.0, 20.0, 20.5, 24.5, 19.6, 19.6, 20.3, 24.3, 19.8, 19.8, 20.1, 24.1, 20.4]
    >>> resolution(v, outliers=[x > 24 for x in v])  # a glitch by 4.0 three times
    0.0
    """
    sizes = _recurring_steps(values, outliers, "resolution")[0]
    return float(sizes[0]) if len(sizes) else 0.0


def usual_step(values: object, outliers: object | None = None) -> float:
    """The step the sensor moves in: its :func:`resolution` once its jitter is set aside.
    Where the recurring step sizes (those :func:`resolution` counts) jump by
    :data:`JITTER_GAP` or more from one to the next, and steps of the sizes above the jump
    are routine (at least :data:`~edgewise.quality.states.MIN_STATE_SHARE` of the steps
    between consecutive readings, zero steps included), the sizes below it are jitter
    about the sensor's levels, not the steps it moves in, and the first size above the
    jump seen :data:`RESOLUTION_SEEN` times between readings that are no outliers (a
    glitch's way up and down, however often, is no move) is its step: AWS CPU readings
    come in steps of 0.067 % read as 0.066 or 0.068, jitter by 0.002 between them, and
    move by 0.067 in every other reading; a move by one such step is no spike, as a move
    by a tenth of a sensor that reports tenths is none. Else (no jump, or a few large
    moves above one: a flat 20.0 that blips by 0.1 and whose setpoint moved by 5.0 three
    times) the resolution.

    >>> cpu = [0.066, 0.134, 0.066, 0.134, 0.066, 0.068, 0.134, 0.066, 0.068, 0.066]
    >>> [round(f(cpu, outliers=[False] * 10), 3) for f in (resolution, usual_step)]
    [0.002, 0.068]
    >>> usual_step([20.0, 20.1, 20.0, 20.1, 20.3, 20.3])     # no jitter: the resolution
    0.1...
    >>> flat = np.r_[[20.0, 20.1] * 10, np.repeat([25.0, 20.0, 25.0, 20.0], 50)]
    >>> usual_step(flat, outliers=np.zeros(len(flat), dtype=bool))  # rare large moves
    0.1...
    """
    return _usual(*_recurring_steps(values, outliers, "usual_step"))


def _usual(sizes: np.ndarray, seen: np.ndarray, moves: np.ndarray, steps: int) -> float:
    """:func:`usual_step` of the recurring step ``sizes`` (ascending), each ``seen``
    times, ``moves`` of them between readings that are no outliers, among ``steps``."""
    if not len(sizes):
        return 0.0
    with np.errstate(all="ignore"):
        jump = np.flatnonzero(sizes[1:] >= JITTER_GAP * sizes[:-1]) + 1
    moved = moves >= RESOLUTION_SEEN  # a glitch's way up and down is no move
    for at in jump:  # the first jump above which the moves are routine
        if moves[at:].sum() >= MIN_STATE_SHARE * steps and moved[at:].any():
            return float(sizes[at + int(np.argmax(moved[at:]))])
    return float(sizes[0])


def levels(values: object) -> np.ndarray:
    """Boolean mask of the readings at one of the series' levels: a value its finite
    readings take at least :data:`~edgewise.quality.states.MIN_STATE_COUNT` times and in
    at least :data:`~edgewise.quality.states.MIN_STATE_SHARE` of them, the rule that makes
    the rarer level of a two-level series a state rather than a dropout. Such a reading is
    no spike, however far from its neighbours: a CPU idling at 0.066 % that reads 0.134 %
    (one step of its resolution up) in one reading of seven does so by nature, and a
    value the sensor reads that often is none of its glitches. A valve that drops to 0 in
    three readings of a hundred, a glitch to 500 once, are rarer, and still spikes.

    >>> levels([0.066, 0.066, 0.134, 0.066, 0.066, 0.134, 0.066, 0.134]).astype(int).tolist()
    [1, 1, 1, 1, 1, 1, 1, 1]
    >>> valve = np.full(100, 100.0)
    >>> valve[[10, 50, 90]] = 0.0
    >>> levels(valve)[[10, 50, 90]].tolist()
    [False, False, False]
    """
    v = np.asarray(values, dtype=float).reshape(-1)
    fin = np.isfinite(v)
    out = np.zeros(len(v), dtype=bool)
    if fin.any():
        _, at, count = np.unique(v[fin], return_inverse=True, return_counts=True)
        common = (count >= MIN_STATE_COUNT) & (count >= MIN_STATE_SHARE * int(fin.sum()))
        out[fin] = common[at.reshape(-1)]
    return out


def _end_medians(v: np.ndarray, half_window: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_medians` with ``"reflect"`` for the ``half_window`` readings at each end
    (``len(v) > half_window``), NaN between: only the first (last) ``2 * half_window``
    readings reach their windows.

    >>> v = np.arange(10.0) ** 2
    >>> np.array_equal(_end_medians(v, 3)[0][[0, 1, 2, 7, 8, 9]],
    ...                _medians(v, 3, mode="reflect")[0][[0, 1, 2, 7, 8, 9]])
    True
    """
    n, h = len(v), half_window
    k = min(n, 2 * h)
    med, scale = np.full(n, np.nan), np.full(n, np.nan)
    head, head_scale = _medians(v[:k], h, mode="reflect")
    tail, tail_scale = _medians(v[n - k:], h, mode="reflect")
    med[:h], scale[:h] = head[:h], head_scale[:h]
    med[n - h:], scale[n - h:] = tail[k - h:], tail_scale[k - h:]
    return med, scale


def _judge(
    v: np.ndarray, half_window: int, n_sigmas: float, min_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """The spikes of ``v`` (at least 3 values) and the median each is judged against. In
    a series of two noisy levels (:func:`~edgewise.quality.states.level_bands`: a pump
    at 0 and 7.5 +- 0.05 A) a reading at a level is no spike, as one at an exact level
    is none (a window that spans a switch spreads over the gap: 57 of 60 on-readings of
    such a pump were spikes), and one further from both levels than the gap between them
    and the tolerance, and than ``n_sigmas`` steps the sensor moves in (:func:`usual_step`:
    a CPU read in steps of 0.067 % that idles and busies at two of them), is one (a 30 A
    reading: in a window that spans a switch it stood out from none); else it is judged
    as any."""
    med, scale = _medians(v, half_window)
    mask, floor = _candidates(v, med, scale, n_sigmas, min_scale, half_window)
    bands = level_bands(v)
    far = at = None
    if bands is not None:
        lo, hi, tol = bands
        with np.errstate(invalid="ignore"):
            nearest = np.where(np.abs(v - lo) <= np.abs(v - hi), lo, hi)
            off = np.abs(v - nearest)
            at, far = off <= tol, off > (hi - lo) + tol
        if far.any():  # and beyond the steps it moves in (a CPU's 0.067 %: a ladder)
            out = (mask & ~at & ~levels(v)) | far  # the outliers, as _judge_rest's
            far &= off > n_sigmas * _usual(*_recurring_steps(v, out, "hampel"))
        mask |= far  # an outlier: its steps show no resolution
    mask, med = _judge_rest(v, mask, med, scale, floor, half_window, n_sigmas, at)
    if far is not None:
        mask |= far
        med = np.where(far, nearest, med)
    return mask, med


def _judge_rest(v: np.ndarray, mask: np.ndarray, med: np.ndarray, scale: np.ndarray,
                floor: np.ndarray, half_window: int, n_sigmas: float,
                at_band: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_judge` past the candidates ``mask``: less the readings at a level (an exact
    one, or ``at_band``: at one of two noisy levels), by the resolution, and at the
    ends."""
    with np.errstate(all="ignore"):
        level = levels(v) if mask.any() else np.zeros(len(v), dtype=bool)
        if at_band is not None:
            level |= at_band
        mask &= ~level
        if mask.any():  # the resolution only raises the floor
            floor = np.maximum(floor, _usual(*_recurring_steps(v, mask, "hampel")))
            mask &= np.abs(v - med) > n_sigmas * np.maximum(scale, floor)
        n, h = len(v), half_window
        if n <= h:
            return mask, med
        # the ends, where the window's far side is the end reading itself: judged also on
        # the readings on their one side (less the spikes found), and spikes when clearly
        # beyond them
        end = np.zeros(n, dtype=bool)
        end[:h] = end[n - h:] = True
        end &= ~mask & ~level & np.isfinite(v)
        if end.any():
            med_1, scale_1 = _end_medians(np.where(mask, np.nan, v), h)
            dev = np.abs(v - med_1)
            out = end & (dev > n_sigmas * np.maximum(scale_1, floor))
            rest = v[np.isfinite(v) & ~mask & ~out]
            span = float(np.ptp(rest)) if len(rest) else 0.0
            clear = out & (dev > EDGE_CLEAR * np.maximum(np.abs(med_1), span))
            mask |= clear
            med = np.where(clear, med_1, med)
    return mask, med


def hampel_mask(
    values: object, half_window: int = 3, n_sigmas: float = 3.0, min_scale: float = 0.0
) -> np.ndarray:
    """Boolean mask of spikes."""
    _check(half_window, n_sigmas, min_scale)
    half_window, n_sigmas, min_scale = int(half_window), float(n_sigmas), float(min_scale)
    v = np.asarray(values, dtype=float)
    if len(v) < 3:
        return np.zeros(len(v), dtype=bool)
    unit = _unit(v)  # readings near the largest float: judged in BIG_UNIT, exactly
    if unit != 1.0:
        v, min_scale = v * unit, min_scale * unit
    return _judge(v, half_window, n_sigmas, min_scale)[0]


def despike(
    values: object, half_window: int = 3, n_sigmas: float = 3.0, min_scale: float = 0.0
) -> np.ndarray:
    """A copy with each spike replaced by the median it was judged against: its
    neighbourhood's (at an end, that of its neighbours on the one side)."""
    _check(half_window, n_sigmas, min_scale)
    half_window, n_sigmas, min_scale = int(half_window), float(n_sigmas), float(min_scale)
    v = np.asarray(values, dtype=float).copy()
    if len(v) >= 3:
        unit = _unit(v)  # readings near the largest float: judged in BIG_UNIT, exactly
        mask, med = _judge(v * unit, half_window, n_sigmas, min_scale * unit)
        v[mask] = med[mask] / unit
    return v
