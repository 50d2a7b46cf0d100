"""Slow drift: how far a recent window's level has moved from a reference window.

The score is the shift of the recent median from the reference median, in units of the
reference's robust spread (MAD × 1.4826), never less than the series' resolution (the
smallest step between readings that recurs, :func:`~edgewise.quality.spikes.resolution`:
a sensor that reports tenths and mostly repeats itself has no spread, and a move of its
median by one tenth is a score of 1, not billions; the one step of a flat series that
shifts sets no floor, so that shift scores high). A calibrated sensor that drifts shows
a score growing over weeks while each reading still looks normal. The score is always
finite, even between readings whose difference is past the largest float.

>>> rng = np.random.default_rng(0)
>>> steady = rng.normal(0, 1, 400)
>>> drifting = steady + np.linspace(0, 6, 400)
>>> round(drift_score(steady), 1) < 1, drift_score(drifting) > 3
(True, True)
>>> tenths = np.r_[np.full(300, 20.0), [20.1, 20.0] * 50, np.full(300, 20.1)]
>>> drift_score(tenths)   # the median moved by one step of the sensor's resolution
1.0
>>> has_drift(np.r_[np.full(300, 20.0), np.full(100, 25.0)])   # a flat series shifts
True
"""

from __future__ import annotations

import numpy as np

from edgewise.errors import QualityError
from edgewise.quality.spikes import MAD_SCALE, resolution

__all__ = ["drift_score", "has_drift"]


def drift_score(values: object, reference: int | None = None, recent: int | None = None) -> float:
    """Shift of the last ``recent`` values from the first ``reference`` (default: quarters);
    0 when the finite values do not fill two windows of at least 5.

    >>> drift_score(np.r_[np.full(20, -1.5e308), np.full(20, 1.5e308)]) > 1e9  # no NaN
    True
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    ref = reference if reference is not None else n // 4
    rec = recent if recent is not None else n // 4
    if ref < 0 or rec < 0:
        raise QualityError(f"Drift windows must be >= 0. Got reference={ref}, recent={rec}.")
    if ref < 5 or rec < 5 or n < ref + rec:
        return 0.0
    # in units of a power of two above the largest |reading|, which is exact: the medians
    # and steps of readings near +-1.5e308 overflowed (inf / inf: a NaN score)
    big = float(np.abs(v).max())
    if big > 0:
        v = np.ldexp(v, -np.frexp(big)[1])
    a, b = v[:ref], v[-rec:]
    med = np.median(a)
    scale = MAD_SCALE * np.median(np.abs(a - med))
    scale = max(scale, resolution(v), 1e-12 * abs(med), 1e-300)  # relative: any units
    return float(abs(np.median(b) - med) / scale)


def has_drift(values: object, threshold: float = 3.0, **windows: int | None) -> bool:
    """Whether :func:`drift_score` exceeds ``threshold``."""
    return drift_score(values, **windows) > threshold
