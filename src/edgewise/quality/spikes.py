"""Hampel despiking: a value far from the median of its neighbours is a spike.

The scale is the median absolute deviation (MAD) times 1.4826 (the normal-consistent
factor); a point is a spike when it lies more than ``n_sigmas`` scales from the
centred median of ``2 * half_window + 1`` points. The scale never drops below the
series' noise level (median absolute first difference / sqrt 2), its resolution (the
smallest step between two readings that recurs, :func:`resolution`: a sensor that
reports tenths and mostly repeats itself has no spread, yet a move by a tenth or two is
no spike), ``1e-9`` of the local median, nor ``min_scale`` (0 by default: no floor in
absolute units, so a series read in nA is judged as the same series read in A), so a
locally flat stretch does not call every tiny step a spike.

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
"""

from __future__ import annotations

import numpy as np

from edgewise.errors import QualityError

__all__ = ["MAD_SCALE", "RESOLUTION_SEEN", "despike", "hampel_mask", "resolution"]

MAD_SCALE = 1.4826
#: Times a step must be seen to be taken for the resolution: a spike's way up and back
#: down is two steps, a level shift one, and neither shows what the sensor resolves.
RESOLUTION_SEEN = 3


def resolution(values: object) -> float:
    """The smallest step between two consecutive finite readings that is seen at least
    :data:`RESOLUTION_SEEN` times (steps equal to 1e-9 of the largest reading count as
    one): the sensor's resolution, below which no spread is judged (here and in
    :mod:`~edgewise.quality.drift`). 0 if no step recurs: one anomaly's own step (a
    spike on a flat series, a level shift) is no floor.

    >>> resolution([20.0, 20.1, 20.0, 20.1, 20.3, 20.3])
    0.1...
    >>> resolution([20.0, 20.0, 100.0, 20.0, 20.0, 25.0])
    0.0
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    d = np.abs(np.diff(v))
    steps = d[d > 0]
    if not len(steps):
        return 0.0
    tol = 1e-9 * float(np.abs(v).max())  # 20.1 - 20.0 and 20.2 - 20.1 differ in float
    _, first, counts = np.unique(np.round(steps / tol), return_index=True,
                                 return_counts=True)
    seen = counts >= RESOLUTION_SEEN
    return float(steps[first[seen][0]]) if seen.any() else 0.0


def _check(half_window: int, n_sigmas: float) -> None:
    if not isinstance(half_window, int) or half_window < 1:
        raise QualityError(
            f"The 'half_window' parameter of hampel must be an int >= 1. Got {half_window!r}."
        )
    if not n_sigmas > 0:
        raise QualityError(f"The 'n_sigmas' parameter of hampel must be > 0. Got {n_sigmas!r}.")


def _medians(v: np.ndarray, half_window: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(v)
    padded = np.pad(v, half_window, mode="reflect" if n > half_window else "edge")
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * half_window + 1)[:n]
    with np.errstate(all="ignore"):
        med = np.nanmedian(win, axis=1) if np.isnan(v).any() else np.median(win, axis=1)
        mad = np.nanmedian(np.abs(win - med[:, None]), axis=1)
    return med, MAD_SCALE * mad


def hampel_mask(
    values: object, half_window: int = 3, n_sigmas: float = 3.0, min_scale: float = 0.0
) -> np.ndarray:
    """Boolean mask of spikes."""
    _check(half_window, n_sigmas)
    v = np.asarray(values, dtype=float)
    if len(v) < 3:
        return np.zeros(len(v), dtype=bool)
    med, scale = _medians(v, half_window)
    d = np.abs(np.diff(v[np.isfinite(v)]))
    noise = MAD_SCALE * float(np.median(d)) / np.sqrt(2) if len(d) else 0.0
    floor = np.maximum(max(min_scale, noise, resolution(v), 1e-300), 1e-9 * np.abs(med))
    with np.errstate(invalid="ignore"):
        return np.abs(v - med) > n_sigmas * np.maximum(scale, floor)


def despike(
    values: object, half_window: int = 3, n_sigmas: float = 3.0, min_scale: float = 0.0
) -> np.ndarray:
    """A copy with each spike replaced by its neighbourhood median."""
    v = np.asarray(values, dtype=float).copy()
    mask = hampel_mask(v, half_window, n_sigmas, min_scale)
    if mask.any():
        med, _ = _medians(v, half_window)
        v[mask] = med[mask]
    return v
