"""Slow drift: how far a recent window's level has moved from a reference window.

The score is the shift of the recent median from the reference median, in units of the
robust spread (MAD × 1.4826) of the reference or of the recent window, whichever is
larger (a reference that repeated one value, a sensor warming up or a gateway filling in,
has no spread: the ordinary noise after it scored in the billions), never less than the
series' resolution (the smallest step between readings that recurs,
:func:`~edgewise.quality.spikes.resolution`: a sensor that reports tenths and mostly
repeats itself has no spread, and a move of its median by one tenth is a score of 1, not
billions; the one step of a flat series that shifts sets no floor, so that shift scores
high). A calibrated sensor that drifts shows a score growing over weeks while each
reading still looks normal. The score is always finite, even between readings whose
difference is past the largest float.

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
>>> drift_score(np.r_[np.full(100, 20.0), 20.0 + rng.normal(0, 0.5, 300)]) < 1  # no move
True

Fewer than :data:`MIN_READINGS` finite readings fill no two windows: there the drift
cannot be measured (:func:`drift_measurable`), and :func:`drift_score` gives 0.
"""

from __future__ import annotations

import numbers

import numpy as np

from edgewise.errors import QualityError
from edgewise.quality.spikes import MAD_SCALE, resolution

__all__ = ["MIN_READINGS", "MIN_WINDOW", "drift_measurable", "drift_score", "has_drift"]

#: The fewest finite readings a reference or a recent window holds for a drift score.
MIN_WINDOW = 5
#: The fewest finite readings whose default windows (quarters) hold :data:`MIN_WINDOW`.
MIN_READINGS = 4 * MIN_WINDOW
_TINY = float(np.nextafter(0.0, 1.0))  # the smallest positive float: no division by 0


def _windows(name: str, reference: object, recent: object) -> None:
    """Raise naming the window that is no int >= 0 (or None: a quarter): a float one
    (10.5) failed deep in numpy with 'slice indices must be integers', a bool was 1 or 0.

    >>> _windows("drift_score", 10.5, None)
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: The 'reference' window of drift_score must be an int >= 0 (readings; None: a quarter of them). Got 10.5 instead.
    """  # noqa: E501
    for what, x in (("reference", reference), ("recent", recent)):
        if x is not None and (isinstance(x, bool | np.bool_)
                              or not isinstance(x, numbers.Integral) or x < 0):
            raise QualityError(
                f"The {what!r} window of {name} must be an int >= 0 (readings; None: a "
                f"quarter of them). Got {x!r} instead.")


def drift_measurable(values: object, reference: int | None = None,
                     recent: int | None = None) -> bool:
    """Whether :func:`drift_score` can measure a drift of ``values`` with these windows:
    its finite values fill a reference and a recent window of at least :data:`MIN_WINDOW`
    each (by default quarters: at least :data:`MIN_READINGS` of them). Where it cannot,
    its score of 0 means "unknown", not "no drift" (a jump from 20 to 50 in 19 readings).

    >>> drift_measurable(np.r_[np.full(10, 20.0), np.full(9, 50.0)]), drift_measurable(
    ...     np.arange(20.0))
    (False, True)
    """
    _windows("drift_measurable", reference, recent)
    v = np.asarray(values, dtype=float)
    n = int(np.isfinite(v).sum())
    ref = reference if reference is not None else n // 4
    rec = recent if recent is not None else n // 4
    return min(ref, rec) >= MIN_WINDOW and n >= ref + rec


def drift_score(values: object, reference: int | None = None, recent: int | None = None) -> float:
    """Shift of the last ``recent`` values from the first ``reference`` (default: quarters);
    0 when the finite values do not fill two windows of at least :data:`MIN_WINDOW`
    (:func:`drift_measurable` tells that 0 from no drift).

    >>> drift_score(np.r_[np.full(20, -1.5e308), np.full(20, 1.5e308)]) > 1e9  # no NaN
    True
    >>> d = np.linspace(0, 6, 400) + np.random.default_rng(0).normal(0, 1, 400)
    >>> drift_score(np.r_[d[:200], 1.7e308, d[200:]]) == drift_score(d)  # one huge reading
    True
    """
    _windows("drift_score", reference, recent)
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    ref = reference if reference is not None else n // 4
    rec = recent if recent is not None else n // 4
    if ref < MIN_WINDOW or rec < MIN_WINDOW or n < ref + rec:
        return 0.0
    # in units of a power of two about the larger of the two windows' medians (taken in
    # quarters: those of readings near +-1.5e308 overflowed, inf / inf, a NaN score),
    # which is exact, never so small that a reading passes the largest float; of the
    # largest |reading| where both medians are 0. Not of the largest |reading| always:
    # one reading of 1.7e308 took the others to 1e-307, below the floor, and the score
    # of a drift by 6 sd to 0
    big = float(np.abs(v).max())
    q = np.ldexp(v, -2)
    mid = max(abs(float(np.median(q[:ref]))), abs(float(np.median(q[-rec:]))))
    top = int(np.frexp(big)[1])
    unit = int(np.frexp(mid)[1]) + 2 if mid > 0 else top
    v = np.ldexp(v, -max(unit, top - 1023))
    a, b = v[:ref], v[-rec:]
    med, med_b = np.median(a), np.median(b)
    # the larger spread of the two windows: a flat reference (one repeated value) left
    # the floors alone, and ordinary noise after it scored in the billions
    scale = MAD_SCALE * max(np.median(np.abs(a - med)), np.median(np.abs(b - med_b)))
    # floors relative to the windows (any units), the last one keeping the score finite
    scale = max(scale, resolution(v), 1e-12 * abs(med),
                1e-300 * max(abs(med), abs(med_b)), _TINY)
    return float(abs(med_b - med) / scale)


def has_drift(values: object, threshold: float = 3.0, **windows: int | None) -> bool:
    """Whether :func:`drift_score` exceeds ``threshold``."""
    return drift_score(values, **windows) > threshold
