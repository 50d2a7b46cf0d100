"""Stuck (flat-line) sensors: a sensor that stopped changing while it usually changes.

A run of identical readings (within ``tol``) is stuck when it holds at least ``min_run``
readings *and* lasts at least ``min_run`` times the series' typical hold: the hold (time
from a run's first reading to the next change) that the series spends its time in
elsewhere, the median over the time outside the run. A noisy sensor changes at every
reading, so its typical hold is one reading and ``min_run`` readings in a row are stuck,
as a fixed run length says; a sensor that reports tenths and warms slowly holds each tenth
for minutes as it should, and is stuck only when it holds one ``min_run`` times as long as
it holds a tenth elsewhere. A run of more than ``min_run`` readings counts towards that
time with its hold scaled to ``min_run`` of its readings: a sensor that holds long runs by
nature, run after run, still makes them typical, but a few long freezes, however long,
cannot make a freeze typical and hide each other (a sensor stuck three days, live one,
stuck three days again has both freezes stuck). An interval longer than
:data:`~edgewise.quality.gaps.GAP_FACTOR` times the series' expected spacing (a gap, an
outage) counts that long only, in every hold: what the sensor read in an outage is not
known, so a slow sensor whose value held across one is no more stuck for it. A series
whose whole history has between two and :data:`FEW_LEVELS` distinct values (a setpoint, a
mode, a two-level signal) is never stuck for holding one: it holds its values by nature.
A series that never changed (one value, or one run within ``tol``, from its first reading
to its last) has no other hold to judge its run by: as the stream cleaner does, its
length alone decides, so ``min_run`` readings of one value throughout are stuck, the
classic frozen sensor (a setpoint that never moved in the span reads the same; the
quality report says so with its ``unchanged`` figure). Nor is a run at the value the
series rests at and keeps coming back to: one whose *other* runs hold more than
:data:`REST_SHARE` of the time outside it, each counting as towards the typical hold (a
disk that writes 0 bytes in nine readings of ten, idle between its writes, is not stuck
at 0; one freeze counts ``min_run`` of its readings and nothing towards itself, so a
sensor frozen at one value most of the time, once or twice, is still stuck). A run's
value is its first reading. With ``ts`` (int ns, ascending) holds are times, so readings
sent irregularly are judged by how long the value held; without, every reading counts
one.

>>> live = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
>>> v = live + [3.0] * 5 + live
>>> stuck_runs(v, min_run=5)
[(6, 11)]
>>> stuck_mask(v, min_run=5).astype(int).tolist()[4:13]
[0, 0, 1, 1, 1, 1, 1, 0, 0]
>>> stuck_runs(np.repeat([20.0, 20.1, 20.2, 20.3, 20.4, 20.5], 50), min_run=5)  # quantised
[]
>>> stuck_runs([55.0] * 60 + [60.0] * 60, min_run=20)   # a setpoint holds its values
[]
>>> stuck_runs([21.3] * 30, min_run=20), stuck_runs([21.3] * 19, min_run=20)  # never changed
([(0, 30)], [])
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from edgewise.errors import QualityError
from edgewise.quality.gaps import GAP_FACTOR, intervals, usual_interval

__all__ = ["FEW_LEVELS", "REST_SHARE", "stuck_mask", "stuck_runs"]

#: Distinct values at most of a series that holds values by nature (a setpoint, a mode, a
#: two-level signal): no run of it is stuck.
FEW_LEVELS = 5
#: Share of the time outside a run (each run counting as in the typical hold) that the
#: other runs at its value hold beyond which that value is where the series rests (an
#: idle disk's 0 bytes written): no run of it is stuck.
REST_SHARE = 0.5


def _holds(t: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each run's hold as a float: from its first reading to the next run's first; the
    last run's to its last reading plus the median spacing of the readings. An interval
    longer than GAP_FACTOR expected spacings (a gap) counts as GAP_FACTOR of them."""
    # offsets from the first time, exact modulo 2**64 where int64 differences wrap
    off = (t.astype(np.uint64) - np.uint64(int(t[0]) % 2**64)).astype(np.float64)
    d = np.diff(off)
    # gaps.expected_interval, the ascending times' positive intervals: no sort of t again
    di = intervals(t)
    every = usual_interval(di[di > 0])
    # whole ns, as the stream counts: the sums of holds stay exact below 2**53 ns
    cap = float(math.floor(GAP_FACTOR * every)) if every > 0 else np.inf
    step = float(np.median(d)) if len(off) > 1 else 1.0
    ends = np.r_[off[starts[1:]], off[-1] + min(step, cap)]
    hold = ends - off[starts]
    if len(d) and float(d.max()) > cap:
        # what each gap lasts past the cap, summed up to each reading, off each run's hold
        excess = np.r_[0.0, np.cumsum(np.maximum(d - cap, 0.0))]
        hold = hold - (excess[np.r_[starts[1:], len(off) - 1]] - excess[starts])
    return hold


def _typical_other(hold: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """For each run, the hold that the series spends the median of its time in over the
    other runs: their holds' median weighted by ``weight`` (each run's time, see the
    module; inf with no other run)."""
    k = len(hold)
    if k < 2:
        return np.full(k, np.inf)
    order = np.argsort(hold, kind="stable")
    h = hold[order]
    w = weight[order]
    cum = np.cumsum(w)
    pos = np.empty(k, dtype=np.intp)
    pos[order] = np.arange(k)
    half = (cum[-1] - w[pos]) / 2  # half the time outside each run
    # the first sorted run whose cumulative time outside run i reaches half of it: before
    # run i's place the cumulative sums are unchanged, from it on they lack run i's time
    j = np.searchsorted(cum, half, side="left")
    after = np.maximum(np.searchsorted(cum, half + w[pos], side="left"), pos + 1)
    j = np.where(j < pos, j, np.minimum(after, k - 1))
    return np.where(j == pos, np.inf, h[j])


def _run_weight(hold: object, readings: object, min_run: int) -> np.ndarray:
    """The time a run counts with towards the series' typical hold: its ``hold``, scaled
    to ``min_run`` of its ``readings`` where it has more, in whole units (so a few long
    freezes cannot make a freeze typical, see the module; whole, so the sums that pick the
    median are exact, as the stream's).

    >>> _run_weight([60.0, 4320.0], [1, 4320], 20).tolist()
    [60.0, 20.0]
    """
    h = np.asarray(hold, dtype=float)
    n = np.asarray(readings, dtype=float)
    return np.where(n > min_run, np.floor(h * min_run / np.maximum(n, 1.0)), h)


def _at_rest(value: object, weight: object) -> np.ndarray:
    """For each run (its ``value`` and its ``weight``, :func:`_run_weight`), whether the
    other runs at its value hold more than :data:`REST_SHARE` of the time the series
    spends outside it: the value the series rests at and keeps coming back to (a disk
    that writes 0 bytes in nine readings of ten), whose runs are no freeze. One long
    freeze counts only ``min_run`` of its readings, and not at all towards itself, so
    freezes do not make their own value the rest.

    >>> _at_rest([0.0, 5.0, 0.0, 7.0, 0.0], [20.0, 1.0, 20.0, 1.0, 20.0]).tolist()
    [True, False, True, False, True]
    >>> _at_rest([1.0, 21.4, 2.0, 19.8], [24.0, 20.0, 24.0, 20.0]).tolist()
    [False, False, False, False]
    """
    val = np.asarray(value, dtype=float)
    w = np.asarray(weight, dtype=float)
    _, group = np.unique(val, return_inverse=True)
    group = group.reshape(-1)
    same = np.bincount(group, weights=w)[group] - w  # the other runs at its value
    rest = w.sum() - w  # the time outside it
    return np.isfinite(val) & (same > REST_SHARE * rest)


def stuck_runs(
    values: object, min_run: int = 10, tol: float = 0.0, ts: object | None = None
) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges of stuck runs: at least ``min_run`` values that stay
    within ``tol`` of the one before, held at least ``min_run`` times the series' typical
    hold (see the module), in a series of more than :data:`FEW_LEVELS` distinct values;
    in one that never changed (one value, or one run), each run of ``min_run``."""
    # numpy's ints too (np.int64(20) was refused as no int); a bool is none
    if (isinstance(min_run, bool | np.bool_) or not isinstance(min_run, numbers.Integral)
            or min_run < 2):
        raise QualityError(
            f"The 'min_run' parameter of stuck must be an int >= 2. Got {min_run!r} instead."
        )
    min_run = int(min_run)
    # NaN, or below 0: no two readings were ever the same; text failed in a compare
    if not isinstance(tol, numbers.Real) or not 0 <= tol <= np.inf:
        raise QualityError(
            f"The 'tol' parameter of stuck must be a number >= 0 (the change within which "
            f"readings count as the same). Got {tol!r} instead.")
    v = np.asarray(values, dtype=float).reshape(-1)
    if ts is None:
        t = np.arange(len(v), dtype=np.int64)
    else:
        t = np.asarray(ts, dtype=np.int64).reshape(-1)
        if len(t) != len(v):
            raise QualityError(
                f"The 'ts' of stuck must give one time per value: {len(t)} times for "
                f"{len(v)} values."
            )
        if len(t) > 1 and bool(np.any(t[1:] < t[:-1])):
            at = int(np.flatnonzero(t[1:] < t[:-1])[0])
            raise QualityError(
                f"The 'ts' of stuck must be in ascending order; time {int(t[at + 1])} at "
                f"index {at + 1} comes after {int(t[at])}. Sort the readings by time first."
            )
    distinct = len(np.unique(v[np.isfinite(v)]))
    if len(v) < min_run or 2 <= distinct <= FEW_LEVELS:
        return []
    with np.errstate(invalid="ignore", over="ignore"):
        same = np.abs(np.diff(v)) <= tol
    starts = np.r_[0, np.flatnonzero(~same) + 1]
    stops = np.r_[starts[1:], len(v)]
    if distinct <= 1 or len(starts) == 1:  # never changed: no other hold to judge by
        long = (stops - starts >= min_run) & np.isfinite(v[starts])
        return [(int(a), int(b)) for a, b in zip(starts[long], stops[long], strict=True)]
    hold = _holds(t, starts)
    weight = _run_weight(hold, stops - starts, min_run)
    typical = _typical_other(hold, weight)
    # a hair under min_run holds: float sums of equal steps need not match their product
    long = (stops - starts >= min_run) & (hold >= min_run * typical * (1 - 1e-9))
    if long.any():
        long &= ~_at_rest(v[starts], weight)
    return [(int(a), int(b)) for a, b in zip(starts[long], stops[long], strict=True)]


def stuck_mask(
    values: object, min_run: int = 10, tol: float = 0.0, ts: object | None = None
) -> np.ndarray:
    """Boolean mask of readings inside a stuck run (:func:`stuck_runs`)."""
    v = np.asarray(values, dtype=float).reshape(-1)
    mask = np.zeros(len(v), dtype=bool)
    for a, b in stuck_runs(v, min_run, tol, ts):
        mask[a:b] = True
    return mask
