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


@nb.njit(cache=True)
def _replay(xs, st, alpha, z0, warmup, out):  # type: ignore[no-untyped-def]  # pragma: no cover
    n, mean, var = int(st[0]), st[1], st[2]
    for i in range(len(xs)):
        v = xs[i]
        if v != v:
            out[i] = 0.0
            continue
        if n < warmup:
            out[i] = 0.0
        else:
            sd = math.sqrt(var) + 1e-9 * abs(mean) + _SD_MIN
            z = abs(v - mean) / sd
            out[i] = 0.0 if z <= z0 else 1.0 - math.exp(-(z - z0))
        n += 1
        if n == 1:
            mean = v
            continue
        a = max(alpha, 1.0 / n)
        d = v - mean
        mean += a * d
        var = (1 - a) * (var + a * d * d)
    st[0], st[1], st[2] = n, mean, var


class EWZScore(Detector):
    """Distance of a reading from an exponentially weighted mean, squashed to [0, 1].

    Good for a single slowly varying sensor; poor for multimodal or periodic signals.
    The score is ``1 - exp(-(|z| - z0))`` above ``z0`` standard deviations, else 0, so
    the default threshold 0.9 fires at about ``z0 + 2.3`` deviations.

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
        if v is None:
            return
        self.n_ += 1
        if self.n_ == 1:
            self.mean_ = v
            return
        a = max(self.alpha, 1.0 / self.n_)
        d = v - self.mean_
        self.mean_ += a * d
        self.var_ = (1 - a) * (self.var_ + a * d * d)

    def score_one(self, x: Mapping[str, float]) -> float:
        v = first_finite(x)
        if v is None or self.n_ < self.warmup:
            return 0.0
        sd = math.sqrt(self.var_) + 1e-9 * abs(self.mean_) + _SD_MIN
        z = abs(v - self.mean_) / sd
        return 0.0 if z <= self.z0 else 1.0 - math.exp(-(z - self.z0))

    def score_many(self, X: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
        """Score then learn each value in order (first non-NaN column); compiled loop."""
        a = first_finite_column(X)
        out = np.empty(len(a))
        st = np.array([self.n_, self.mean_, self.var_], dtype=float)
        _replay(a, st, float(self.alpha), float(self.z0), int(self.warmup), out)
        self.n_, self.mean_, self.var_ = int(st[0]), float(st[1]), float(st[2])
        return out
