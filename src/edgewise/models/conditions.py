"""Operating-condition normalisation for fleets that run in several regimes.

Sensor levels of a turbofan (or a pump, a compressor) depend more on *how* it is run
(altitude, speed, load) than on how worn it is. :class:`ConditionNormalizer` finds the
regimes by clustering the operating-setting columns, then z-scores each sensor within
its regime, so that what is left is wear and noise. The number of regimes is chosen
from the data (no per-fleet constant): the smallest ``k`` whose k-means clustering
explains at least ``1 - tol`` of the settings' variance, or a single regime when none
does. Sensors that carry no information (fewer than ``min_distinct`` distinct values
in every regime) are dropped. A row with a setting missing (NaN) has no known regime: it
is left out of the clustering and, when there are several regimes, of their statistics,
and :meth:`ConditionNormalizer.transform` gives it NaN, not a z-score against a regime
guessed for it (the settings' mean lies between regimes, in none of them).

>>> rng = np.random.default_rng(0)
>>> regime = rng.integers(0, 3, 600)
>>> settings = np.c_[regime * 10.0, regime * 0.3] + rng.normal(0, 0.01, (600, 2))
>>> sensors = np.c_[100 * regime + rng.normal(0, 1, 600), np.full(600, 5.0)]
>>> norm = ConditionNormalizer().fit(settings, sensors)
>>> norm.n_conditions_, norm.keep_.tolist()
(3, [True, False])
>>> z = norm.transform(settings, sensors)
>>> z.shape, bool(abs(z.mean()) < 0.1)
((600, 1), True)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.cluster import KMeans

from edgewise.errors import NotFittedError
from edgewise.params import Interval, validate_params

__all__ = ["ConditionNormalizer"]


class ConditionNormalizer:
    """Cluster operating settings into regimes; z-score each sensor within its regime.

    Parameters
    ----------
    max_conditions
        Largest number of regimes tried.
    tol
        A clustering into ``k`` regimes is accepted when its within-cluster sum of squares
        is at most ``tol`` times that of one regime (settings standardised first).
    min_distinct
        A sensor is kept when it shows at least this many distinct values in some regime.
    random_state
        Seed of k-means.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "max_conditions": Interval(int, 1, 64),
        "tol": Interval(float, 0.0, 1.0, closed="neither"),
        "min_distinct": Interval(int, 1, None),
        "random_state": [int, None],
    }

    def __init__(
        self,
        max_conditions: int = 10,
        tol: float = 1e-3,
        min_distinct: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.max_conditions = max_conditions
        self.tol = tol
        self.min_distinct = min_distinct
        self.random_state = random_state

    def fit(self, settings: np.ndarray | None, sensors: np.ndarray) -> ConditionNormalizer:
        """Find the regimes and each sensor's per-regime mean and spread.

        A row with a setting missing (NaN: its regime is unknown) takes no part in finding
        the regimes, nor, when there are several, in any regime's statistics; it is not
        scored against a regime (:meth:`transform` gives it NaN).
        """
        validate_params(self._parameter_constraints, vars(self), self)
        sensors = np.asarray(sensors, dtype=float)
        n = len(sensors)
        self.n_conditions_ = 1
        self.kmeans_: KMeans | None = None
        self.settings_mean_ = self.settings_scale_ = None
        if settings is not None and np.asarray(settings).size and n > 1:
            s = np.asarray(settings, dtype=float)
            known = ~np.isnan(s).any(axis=1)
            if not known.all():
                s = s[known]
            if len(s) > 1:
                self.settings_mean_ = s.mean(axis=0)
                self.settings_scale_ = np.where(s.std(axis=0) > 0, s.std(axis=0), 1.0)
                s = (s - self.settings_mean_) / self.settings_scale_
                total = float(((s - s.mean(axis=0)) ** 2).sum())
                if total > 0:
                    for k in range(2, min(self.max_conditions, len(s)) + 1):
                        km = KMeans(n_clusters=k, n_init=3, random_state=self.random_state).fit(s)
                        if km.inertia_ <= self.tol * total:
                            self.n_conditions_, self.kmeans_ = k, km
                            break
        labels = self._labels(settings, n)
        n_sensors = sensors.shape[1]
        self.mean_ = np.zeros((self.n_conditions_, n_sensors))
        self.scale_ = np.ones((self.n_conditions_, n_sensors))
        distinct = np.zeros(n_sensors, dtype=int)
        for c in range(self.n_conditions_):
            part = sensors[labels == c]
            if not len(part):
                continue
            self.mean_[c] = np.nanmean(part, axis=0)
            sd = np.nanstd(part, axis=0)
            self.scale_[c] = np.where(sd > 0, sd, 1.0)
            distinct = np.maximum(distinct, [len(np.unique(col)) for col in part.T])
        #: the most distinct values each sensor shows in one regime (``keep_`` compares it)
        self.distinct_ = distinct
        self.keep_ = distinct >= self.min_distinct
        return self

    def _labels(self, settings: np.ndarray | None, n: int) -> np.ndarray:
        """Each row's regime; -1 where a setting is missing (NaN) and there are several."""
        if self.kmeans_ is None:
            return np.zeros(n, dtype=int)
        s = (np.asarray(settings, dtype=float) - self.settings_mean_) / self.settings_scale_
        known = ~np.isnan(s).any(axis=1)
        if known.all():
            return self.kmeans_.predict(s)
        labels = np.full(n, -1, dtype=int)
        if known.any():
            labels[known] = self.kmeans_.predict(s[known])
        return labels

    def transform(self, settings: np.ndarray | None, sensors: np.ndarray) -> np.ndarray:
        """Per-regime z-scores of the kept sensors, shape ``(n_rows, n_kept)``; NaN in a
        row whose regime is unknown (a setting missing, when there are several regimes)."""
        if not hasattr(self, "keep_"):
            raise NotFittedError(
                "This ConditionNormalizer is not fitted yet; call fit(settings, sensors) first."
            )
        sensors = np.asarray(sensors, dtype=float)
        labels = self._labels(settings, len(sensors))
        z = (sensors - self.mean_[labels]) / self.scale_[labels]
        unknown = labels < 0
        if unknown.any():
            z[unknown] = np.nan
        return z[:, self.keep_]
