"""Put an irregular series on a regular time grid, bridging only short gaps.

``how``: ``"mean"`` (average of the readings in each bin), ``"last"`` (last reading in
the bin) or ``"interpolate"`` (linear, at bin starts). Grid points inside a gap
between readings longer than ``max_gap_ns`` stay NaN, so a long outage is never papered
over (``mean`` and ``last`` leave every bin without readings NaN anyway, and a bin with
readings always has its value, however long the gaps around them).

>>> ts = np.array([0, 10, 20, 60]) * 10**9
>>> grid, v = resample(ts, [0.0, 1.0, 2.0, 6.0], every_ns=10 * 10**9, how="interpolate",
...                    max_gap_ns=15 * 10**9)
>>> (grid // 10**9).tolist(), v.tolist()
([0, 10, 20, 30, 40, 50, 60], [0.0, 1.0, 2.0, nan, nan, nan, 6.0])
>>> resample(np.array([0, 25, 26, 60]) * 10**9, [1.0, 2.0, 3.0, 4.0], every_ns=10 * 10**9,
...          how="mean", max_gap_ns=15 * 10**9)[1].tolist()
[1.0, nan, 2.5, nan, nan, nan, 4.0]
"""

from __future__ import annotations

import numpy as np

from edgewise.errors import QualityError
from edgewise.quality.base import as_series

__all__ = ["resample"]


def resample(
    ts: object, values: object, every_ns: int, how: str = "mean", max_gap_ns: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Regular grid from the first to the last time; returns ``(grid_ts, grid_values)``."""
    if not isinstance(every_ns, int | np.integer) or every_ns <= 0:
        raise QualityError(
            f"The 'every_ns' parameter of resample must be a positive int. Got {every_ns!r}."
        )
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
    start = t[0] - t[0] % every_ns
    # the length in integers: np.arange(start, stop, step) counts in float64, which drops the
    # last step of a long grid of epoch nanoseconds (10,320 half-hours gave 10,319 points)
    grid = start + every_ns * np.arange((t[-1] - start) // every_ns + 1, dtype=np.int64)
    if how == "interpolate":
        out = np.interp(grid.astype(float), t.astype(float), v)
    else:
        which = (t - start) // every_ns
        out = np.full(len(grid), np.nan)
        if how == "mean":
            sums = np.bincount(which, weights=v, minlength=len(grid))
            counts = np.bincount(which, minlength=len(grid))
            with np.errstate(invalid="ignore"):
                out = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        else:
            out[which] = v  # later readings overwrite earlier ones in the same bin
    if max_gap_ns is not None and how == "interpolate":  # a bin with readings keeps them
        nxt = t[np.minimum(np.searchsorted(t, grid, side="left"), len(t) - 1)]
        prev = t[np.maximum(np.searchsorted(t, grid, side="right") - 1, 0)]
        on_reading = (nxt == grid) | (prev == grid)
        out = np.where(on_reading | (nxt - prev <= max_gap_ns), out, np.nan)
    return grid, out
