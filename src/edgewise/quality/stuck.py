"""Stuck (flat-line) sensors: a sensor that stopped changing while it usually changes.

A run of identical readings (within ``tol``) is stuck when it holds at least ``min_run``
readings *and* lasts at least ``min_run`` times the series' typical hold: the hold (time
from a run's first reading to the next change) that the series spends its time in
elsewhere, the median over the time outside the run. A noisy sensor changes at every
reading, so its typical hold is one reading and ``min_run`` readings in a row are stuck,
as a fixed run length says; a sensor that reports tenths and warms slowly holds each tenth
for minutes as it should, and is stuck only when it holds one ``min_run`` times as long as
it holds a tenth elsewhere. A series whose whole history has at most :data:`FEW_LEVELS`
distinct values (a setpoint, a mode, a two-level signal) is never stuck for holding one:
it holds its values by nature. With ``ts`` (int ns, ascending) holds are times, so readings
sent irregularly are judged by how long the value held; without, every reading counts one.

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
"""

from __future__ import annotations

import numpy as np

from edgewise.errors import QualityError

__all__ = ["FEW_LEVELS", "stuck_mask", "stuck_runs"]

#: Distinct values at most of a series that holds values by nature (a setpoint, a mode, a
#: two-level signal): no run of it is stuck.
FEW_LEVELS = 5


def _holds(t: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each run's hold as a float: from its first reading to the next run's first; the
    last run's to its last reading plus the median spacing of the readings."""
    # offsets from the first time, exact modulo 2**64 where int64 differences wrap
    off = (t.astype(np.uint64) - np.uint64(int(t[0]) % 2**64)).astype(np.float64)
    step = float(np.median(np.diff(off))) if len(off) > 1 else 1.0
    ends = np.r_[off[starts[1:]], off[-1] + step]
    return ends - off[starts]


def _typical_other(hold: np.ndarray) -> np.ndarray:
    """For each run, the hold that the series spends the median of its time in over the
    other runs: their holds' median weighted by hold (inf with no other run)."""
    k = len(hold)
    if k < 2:
        return np.full(k, np.inf)
    order = np.argsort(hold, kind="stable")
    h = hold[order]
    cum = np.cumsum(h)
    pos = np.empty(k, dtype=np.intp)
    pos[order] = np.arange(k)
    half = (cum[-1] - h[pos]) / 2  # half the time outside each run
    # the first sorted run whose cumulative time outside run i reaches half of it: before
    # run i's place the cumulative sums are unchanged, from it on they lack run i's hold
    j = np.searchsorted(cum, half, side="left")
    after = np.maximum(np.searchsorted(cum, half + h[pos], side="left"), pos + 1)
    j = np.where(j < pos, j, np.minimum(after, k - 1))
    return np.where(j == pos, np.inf, h[j])


def stuck_runs(
    values: object, min_run: int = 10, tol: float = 0.0, ts: object | None = None
) -> list[tuple[int, int]]:
    """``(start, stop)`` index ranges of stuck runs: at least ``min_run`` values that stay
    within ``tol`` of the one before, held at least ``min_run`` times the series' typical
    hold (see the module), in a series of more than :data:`FEW_LEVELS` distinct values."""
    if not isinstance(min_run, int) or min_run < 2:
        raise QualityError(
            f"The 'min_run' parameter of stuck must be an int >= 2. Got {min_run!r} instead."
        )
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
    if len(v) < min_run or len(np.unique(v[np.isfinite(v)])) <= FEW_LEVELS:
        return []
    with np.errstate(invalid="ignore", over="ignore"):
        same = np.abs(np.diff(v)) <= tol
    starts = np.r_[0, np.flatnonzero(~same) + 1]
    stops = np.r_[starts[1:], len(v)]
    hold = _holds(t, starts)
    typical = _typical_other(hold)
    # a hair under min_run holds: float sums of equal steps need not match their product
    long = (stops - starts >= min_run) & (hold >= min_run * typical * (1 - 1e-9))
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
