"""Exponentially weighted z-score: a robust, cheap baseline for one slowly varying sensor."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numba as nb
import numpy as np

from edgewise.detect.base import Detector, first_finite, first_finite_column
from edgewise.params import Interval, validate_params

__all__ = ["EWZScore"]

# Added to the deviation so it is never 0; nothing absolute beside it (1e-9 of the level is
# relative), so a stream read in small units (nA, microstrain) keeps its own scale.
_SD_MIN = 1e-300
# The C and ONNX exports read each reading as a float32 (a device reads a float) and keep
# the state in double, applying this same limit: a reading from which float32 rounding
# overflows (|v| >= 2**128 - 2**103, just above FLT_MAX) is missing as inf
# is, and a reading whose update would take the mean or variance that far is not learned,
# so Python and the device agree, and nothing overflows to inf or NaN (a warm-up of +-1e308
# gave NaN scores for ever). Nothing changes below: real readings are nowhere near.
_F32_LIMIT = 2.0**128 - 2.0**103


def _update_py(n, mean, var, v, alpha):  # type: ignore[no-untyped-def]
    """``(n, mean, var)`` after learning the reading ``v`` (unchanged if it would overflow).

    ``alpha`` is taken as a Python float: a NumPy ``float32`` one (a parameter read from a
    float32 array) turned the state into float32, zeroing small readings and giving NaN
    scores (``0 / 1e-300`` in float32), and the loop then disagreed with ``score_many``.
    """
    n1 = n + 1
    if n1 == 1:
        return n1, v, var
    a = max(float(alpha), 1.0 / n1)
    d = v - mean
    m1 = mean + a * d
    v1 = (1 - a) * (var + a * d * d)
    if abs(m1) < _F32_LIMIT and v1 < _F32_LIMIT:
        return n1, m1, v1
    return n, mean, var


_update = nb.njit(cache=True)(_update_py)  # the same step in the compiled replay


@nb.njit(cache=True)
def _replay(xs, st, alpha, z0, warmup, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    n, mean, var = int(st[0]), st[1], st[2]
    for i in range(len(xs)):
        v = xs[i]
        if not abs(v) < _F32_LIMIT:  # NaN, inf or beyond float32: missing
            out[i] = 0.0
            continue
        if n < warmup:
            out[i] = 0.0
        else:
            sd = math.sqrt(var) + 1e-9 * abs(mean) + _SD_MIN
            z = abs(v - mean) / sd
            out[i] = 0.0 if z <= z0 else 1.0 - math.exp(-(z - z0))
        n, mean, var = _update(n, mean, var, v, alpha)
    st[0], st[1], st[2] = n, mean, var


class EWZScore(Detector):
    """Distance of a reading from an exponentially weighted mean, squashed to [0, 1].

    Good for a single slowly varying sensor; poor for multimodal or periodic signals.
    The score is ``1 - exp(-(|z| - z0))`` above ``z0`` standard deviations, else 0, so
    the default threshold 0.9 fires at about ``z0 + 2.3`` deviations.

    The state stays within float32's range, as in the C export: a reading beyond it (about
    3.4e38) is missing like NaN and inf (scores 0, not learned), and one whose update would
    take the mean or variance beyond it scores (1 if far out) but is not learned.

    Parameters
    ----------
    alpha
        Weight of the newest reading in the running mean and variance.
    z0
        Deviations below which a reading scores 0.
    warmup
        Readings learned before any score above 0 is given.

    Examples
    --------
    >>> det = EWZScore()
    >>> for v in [20.0, 20.2, 19.9] * 20:
    ...     det.learn_one({"temp_c": v})
    >>> det.score_one({"temp_c": 35.0}) > 0.9
    True
    >>> det.score_one({"temp_c": 20.1}) < 0.1
    True
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "z0": Interval(float, 0.0, None),
        "warmup": Interval(int, 1, None),
    }

    def __init__(self, alpha: float = 0.02, z0: float = 3.0, warmup: int = 30) -> None:
        validate_params(self._constraints, {"alpha": alpha, "z0": z0, "warmup": warmup}, self)
        self.alpha = alpha
        self.z0 = z0
        self.warmup = warmup
        self.n_ = 0
        self.mean_ = 0.0
        self.var_ = 0.0

    def learn_one(self, x: Mapping[str, float]) -> None:
        v = first_finite(x)
        if v is None or not abs(v) < _F32_LIMIT:
            return
        self.n_, self.mean_, self.var_ = _update_py(self.n_, self.mean_, self.var_, v, self.alpha)

    def score_one(self, x: Mapping[str, float]) -> float:
        v = first_finite(x)
        if v is None or not abs(v) < _F32_LIMIT or self.n_ < self.warmup:
            return 0.0
        sd = math.sqrt(self.var_) + 1e-9 * abs(self.mean_) + _SD_MIN
        z = abs(v - self.mean_) / sd
        z0 = float(self.z0)  # as score_many reads it: float32 arithmetic would differ
        return 0.0 if z <= z0 else 1.0 - math.exp(-(z - z0))

    def score_many(self, X: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
        """Score then learn each value in order (first non-NaN column); compiled loop."""
        a = first_finite_column(X, columns)
        out = np.empty(len(a))
        st = np.array([self.n_, self.mean_, self.var_], dtype=float)
        _replay(a, st, float(self.alpha), float(self.z0), int(self.warmup), out)
        self.n_, self.mean_, self.var_ = int(st[0]), float(st[1]), float(st[2])
        return out
