"""Put an irregular series on a regular time grid, bridging only short gaps.

``how``: ``"mean"`` (average of the readings in each bin), ``"last"`` (last reading in
the bin) or ``"interpolate"`` (linear, at bin starts; a bin start before the first
reading, as the grid's first is unless that reading lies on it, stays NaN: nothing is
known there to interpolate from). Grid points inside a gap between readings longer than
``max_gap_ns`` stay NaN, so a long outage is never papered over (``mean`` and ``last``
leave every bin without readings NaN anyway, and a bin with readings always has its
value, however long the gaps around them).

>>> ts = np.array([0, 10, 20, 60]) * 10**9
>>> grid, v = resample(ts, [0.0, 1.0, 2.0, 6.0], every_ns=10 * 10**9, how="interpolate",
...                    max_gap_ns=15 * 10**9)
>>> (grid // 10**9).tolist(), v.tolist()
([0, 10, 20, 30, 40, 50, 60], [0.0, 1.0, 2.0, nan, nan, nan, 6.0])
>>> resample(np.array([0, 25, 26, 60]) * 10**9, [1.0, 2.0, 3.0, 4.0], every_ns=10 * 10**9,
...          how="mean", max_gap_ns=15 * 10**9)[1].tolist()
[1.0, nan, 2.5, nan, nan, nan, 4.0]
>>> resample(np.array([59, 119]) * 10**9, [1.0, 2.0], every_ns=60 * 10**9,
...          how="interpolate")[1].tolist()   # 0 s lies before the first reading
[nan, 1.0166666666666666]
"""

from __future__ import annotations

import numbers
from datetime import datetime, timedelta

import numpy as np

from edgewise.errors import QualityError
from edgewise.quality.base import as_series

__all__ = ["MAX_GRID_POINTS", "resample"]

#: The most points :func:`resample` makes (800 MB of int64 times, as much again of values).
MAX_GRID_POINTS = 100_000_000


def _day(ts_ns: int) -> str:
    """The day of an int64 nanosecond time, for messages.

    >>> _day(1_700_000_000 * 10**9)
    '2023-11-14'
    """
    return (datetime(1970, 1, 1) + timedelta(microseconds=ts_ns // 1000)).date().isoformat()


def _means(keys: np.ndarray, v: np.ndarray, n: int) -> np.ndarray:
    """The mean of the finite ``v`` of each key ``0 .. n - 1`` (NaN for a key with none),
    finite for finite readings: where their sum passes the largest float (two readings of
    1e308 gave inf), it is taken over the readings divided by the largest of their size.

    >>> _means(np.array([0, 0, 2]), np.array([1e308, 1e308, 1.0]), 3).tolist()
    [1e+308, nan, 1.0]
    """
    counts = np.bincount(keys, minlength=n)
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.bincount(keys, weights=v, minlength=n) / np.maximum(counts, 1)
    out[counts == 0] = np.nan
    off = (counts > 0) & ~np.isfinite(out)
    if off.any():
        scale = np.zeros(n)
        np.maximum.at(scale, keys, np.abs(v))
        with np.errstate(invalid="ignore", divide="ignore"):
            scaled = np.bincount(keys, weights=v / scale[keys], minlength=n)
        out[off] = scaled[off] / counts[off] * scale[off]
    return out


def resample(
    ts: object, values: object, every_ns: int, how: str = "mean", max_gap_ns: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Regular grid from the first to the last time; returns ``(grid_ts, grid_values)``.

    Raises :class:`~edgewise.errors.QualityError` naming the span and ``every_ns`` where the
    grid would have more than :data:`MAX_GRID_POINTS` points.

    >>> day = 86400 * 10**9
    >>> resample(np.array([0, 400 * day]), [1.0, 2.0], every_ns=day)[0].size
    401
    """
    if not isinstance(every_ns, int | np.integer) or every_ns <= 0:
        raise QualityError(
            f"The 'every_ns' parameter of resample must be a positive int. Got {every_ns!r}."
        )
    if max_gap_ns is not None and (  # NaN bridged nothing; "5" failed deep in a compare
            isinstance(max_gap_ns, bool | np.bool_) or not isinstance(max_gap_ns, numbers.Real)
            or not max_gap_ns == max_gap_ns):
        raise QualityError(
            "The 'max_gap_ns' parameter of resample must be a number of ns (or None: "
            f"bridge every gap). Got {max_gap_ns!r} instead.")
    if how not in ("mean", "last", "interpolate"):
        raise QualityError(
            "The 'how' parameter of resample must be one of 'mean', 'last', 'interpolate'. "
            f"Got {how!r} instead."
        )
    t, v = as_series(ts, values)
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    if not len(t):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    every = int(every_ns)
    first, last = int(t[0]), int(t[-1])
    start = first - first % every
    # the length in Python ints: np.arange(start, stop, step) counts in float64, which drops
    # the last step of a long grid of epoch nanoseconds (10,320 half-hours gave 10,319
    # points), and int64 wrapped past 2**63 ns (292 years)
    n = (last - start) // every + 1
    if n > MAX_GRID_POINTS or start < -(2**63):
        why = (f"at most {MAX_GRID_POINTS:,} points are made: give a larger every_ns"
               if n > MAX_GRID_POINTS else
               f"its first step, {start} ns, lies before int64 nanoseconds begin")
        raise QualityError(
            f"resample's grid would have {n:,} points: the readings span "
            f"{(last - first) / 1e9:.6g} s ({_day(first)} to {_day(last)}) and "
            f"every_ns is {every} ({every / 1e9:g} s); {why}."
        )
    # offsets from the start as uint64, exact (modulo 2**64) where int64 wraps, as
    # gaps.intervals takes intervals: every grid time lies between start and the last time
    grid = (np.uint64(start % 2**64) + np.uint64(every) * np.arange(n, dtype=np.uint64)
            ).astype(np.int64)
    if how == "interpolate":
        # readings at one time averaged first: np.interp took one on each side of it
        # ([0, 10, 10, 20] with [0, 1, 5, 2] gave 0.5 at 5 and 3.5 at 15, about 1 and 5)
        t, at = np.unique(t, return_inverse=True)
        v = _means(at, v, len(t))
        out = np.interp(grid.astype(float), t.astype(float), v)
        off = ~np.isfinite(out)  # a slope past the largest float (1e308 to -1e308): -inf
        if off.any():
            scale = float(np.max(np.abs(v)))
            out[off] = np.interp(grid[off].astype(float), t.astype(float), v / scale) * scale
        # NaN outside the readings (compared in int64: float64 rounds epoch ns to 256 ns):
        # np.interp repeats the first reading back to the grid's first point (a reading at
        # 59 s gave its value at 0 s); no grid point lies after the last reading
        out[grid < t[0]] = np.nan
    else:
        which = ((t.astype(np.uint64) - np.uint64(start % 2**64)) // np.uint64(every)
                 ).astype(np.intp)
        out = np.full(len(grid), np.nan)
        if how == "mean":
            out = _means(which, v, len(grid))
        else:
            out[which] = v  # later readings overwrite earlier ones in the same bin
    if max_gap_ns is not None and how == "interpolate":  # a bin with readings keeps them
        nxt = t[np.minimum(np.searchsorted(t, grid, side="left"), len(t) - 1)]
        prev = t[np.maximum(np.searchsorted(t, grid, side="right") - 1, 0)]
        on_reading = (nxt == grid) | (prev == grid)
        gap = nxt.astype(np.uint64) - prev.astype(np.uint64)  # exact: nxt >= prev
        bridged = (gap <= min(max_gap_ns, 2**64 - 1) if max_gap_ns >= 0
                   else np.zeros(len(grid), dtype=bool))
        out = np.where(on_reading | bridged, out, np.nan)
    return grid, out
