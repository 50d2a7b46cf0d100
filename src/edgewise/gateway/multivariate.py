"""A robust multivariate baseline: Mahalanobis distance under an exponentially weighted covariance.

One per device, scoring the device's metrics jointly, so a reading that is normal on each
sensor alone but breaks their usual relation (flow up while current falls) still stands
out. It lives in the gateway until :mod:`edgewise.detect` ships a multivariate default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edgewise.detect.base import Detector
from edgewise.params import Interval, validate_params

__all__ = ["EWMahalanobis"]


class EWMahalanobis(Detector):
    """Distance of a reading from the device's usual operating point, in [0, 1].

    The mean and covariance are exponentially weighted; updates are Huber-clipped (a
    reading far outside is learned as if it were at ``clip`` deviations) so one fault
    does not teach the detector that faults are normal. The squared distance is turned
    into an equivalent normal deviate (Wilson-Hilferty) and squashed as in
    :class:`~edgewise.detect.zscore.EWZScore`: ``1 - exp(-(z - z0))`` above ``z0``.

    Metrics missing from a reading are imputed at their mean (they add no distance);
    metrics first seen after the warm-up are ignored.

    Parameters
    ----------
    alpha
        Weight of the newest reading in the running mean and covariance.
    z0
        Equivalent deviations below which a reading scores 0.
    warmup
        Readings learned before any score above 0 is given.
    clip
        Mahalanobis distance at which updates are clipped.
    refresh
        The inverse covariance is recomputed every ``refresh`` updates.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> det = EWMahalanobis()
    >>> for _ in range(300):
    ...     q = rng.normal(50, 5)
    ...     det.learn_one({"flow": q, "current": 0.2 * q + rng.normal(0, 0.3)})
    >>> det.score_one({"flow": 50.0, "current": 10.0}) < 0.1
    True
    >>> det.score_one({"flow": 60.0, "current": 8.0}) > 0.9   # relation broken
    True
    >>> sorted(det.explain_one({"flow": 60.0, "current": 8.0}))
    ['current', 'flow']
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "z0": Interval(float, 0.0, None),
        "warmup": Interval(int, 2, None),
        "clip": Interval(float, 0.0, None, closed="neither"),
        "refresh": Interval(int, 1, None),
    }

    def __init__(
        self,
        alpha: float = 0.01,
        z0: float = 3.0,
        warmup: int = 50,
        clip: float = 4.0,
        refresh: int = 8,
    ) -> None:
        validate_params(
            self._constraints,
            {"alpha": alpha, "z0": z0, "warmup": warmup, "clip": clip, "refresh": refresh},
            self,
        )
        self.alpha = alpha
        self.z0 = z0
        self.warmup = warmup
        self.clip = clip
        self.refresh = refresh
        self.names_: list[str] = []
        self.n_ = 0
        self.mean_: np.ndarray = np.zeros(0)
        self.cov_: np.ndarray = np.zeros((0, 0))
        self._inv: np.ndarray | None = None
        self._since = 0

    def _vector(self, x: Mapping[str, float]) -> np.ndarray | None:
        if not self.names_:
            return None
        v = self.mean_.copy()
        seen = False
        for i, name in enumerate(self.names_):
            val = x.get(name)
            if val is not None and val == val:
                v[i] = float(val)
                seen = True
        return v if seen else None

    def _inverse(self) -> np.ndarray:
        if self._inv is None or self._since >= self.refresh:
            p = len(self.names_)
            scale = np.diag(self.cov_).copy()
            ridge = 1e-6 * (scale + 1e-12) + 1e-12 * (1.0 + np.abs(self.mean_))
            self._inv = np.linalg.pinv(self.cov_ + np.diag(ridge) + 1e-12 * np.eye(p))
            self._since = 0
        return self._inv

    def _distance(self, v: np.ndarray) -> tuple[float, np.ndarray]:
        d = v - self.mean_
        w = self._inverse() @ d
        return max(float(d @ w), 0.0), d * w

    def learn_one(self, x: Mapping[str, float]) -> None:
        if not self.names_:
            self.names_ = sorted(k for k, v in x.items() if v == v)
            p = len(self.names_)
            self.mean_ = np.array([float(x[k]) for k in self.names_])
            self.cov_ = np.zeros((p, p))
            self.n_ = 1
            return
        v = self._vector(x)
        if v is None:
            return
        self.n_ += 1
        a = max(self.alpha, 1.0 / self.n_)
        d = v - self.mean_
        if self.n_ > self.warmup:
            d2, _ = self._distance(v)
            m = math.sqrt(d2)
            if m > self.clip:
                d = d * (self.clip / m)
        self.mean_ = self.mean_ + a * d
        self.cov_ = (1 - a) * (self.cov_ + a * np.outer(d, d))
        self._since += 1

    def _z(self, d2: float) -> float:
        k = max(len(self.names_), 1)
        c = 2.0 / (9.0 * k)
        return ((d2 / k) ** (1.0 / 3.0) - (1.0 - c)) / math.sqrt(c)

    def score_one(self, x: Mapping[str, float]) -> float:
        if self.n_ < self.warmup:
            return 0.0
        v = self._vector(x)
        if v is None:
            return 0.0
        d2, _ = self._distance(v)
        z = self._z(d2)
        return 0.0 if z <= self.z0 else 1.0 - math.exp(-(z - self.z0))

    def explain_one(self, x: Mapping[str, float]) -> dict[str, float]:
        """Share of the squared distance each metric accounts for (non-negative, sums to 1)."""
        v = self._vector(x) if self.n_ >= 2 else None
        if v is None:
            return {}
        _, parts = self._distance(v)
        parts = np.abs(parts)
        total = float(parts.sum())
        if total <= 0:
            return {}
        return {n: float(p / total) for n, p in zip(self.names_, parts, strict=True)}
