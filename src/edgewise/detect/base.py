"""The Detector protocol: a streaming anomaly detector scores one reading at a time.

Scores are calibrated to [0, 1]: 0.0 is normal, 1.0 is certainly anomalous, and the
same threshold (``DEFAULT_THRESHOLD``) means the same thing on every stream. The loop
order is *score, then learn*. ``score_many(X)`` returns exactly what that loop would,
faster. State is serialisable (``dumps``/``loads``) to save, restore and ship it.
"""

from __future__ import annotations

import abc
import inspect
import math
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_THRESHOLD",
    "Detector",
    "first_finite",
    "first_finite_column",
    "reading",
    "readings",
]

#: One threshold for every calibrated detector.
DEFAULT_THRESHOLD = 0.9


def first_finite(x: Mapping[str, float]) -> float | None:
    """The first finite value of a reading, or ``None`` (what one-metric detectors read).

    >>> first_finite({"a": float("nan"), "b": 2.0}), first_finite({"a": float("inf")})
    (2.0, None)
    """
    for v in x.values():
        if math.isfinite(v):
            return float(v)
    return None


def first_finite_column(X: np.ndarray) -> np.ndarray:
    """:func:`first_finite` of each row of ``X`` (1-D input is one value a row): a contiguous
    float vector, NaN where a row has no finite value (inf counts as missing).

    >>> first_finite_column(np.array([[np.nan, 2.0], [np.inf, np.nan], [3.0, 4.0]]))
    array([ 2., nan,  3.])
    """
    a = np.asarray(X, dtype=float)
    a = np.where(np.isfinite(a), a, np.nan)
    if a.ndim == 2:
        if a.shape[1] == 0:
            a = np.full(len(a), np.nan)
        else:
            a = a[np.arange(len(a)), np.argmax(~np.isnan(a), axis=1)]
    return np.ascontiguousarray(a, dtype=float)


def readings(
    X: np.ndarray, columns: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """``X`` as a 2-D float array (1-D input is one column) and its column names
    (``columns``, else ``x0``, ``x1``, ...): what ``score_many`` and its kin take.

    >>> X, names = readings([1.0, 2.0])
    >>> X.shape, names
    ((2, 1), ['x0'])
    """
    X = np.asarray(X, dtype=float)
    if X.ndim == 1:
        X = X[:, None]
    return X, list(columns) if columns is not None else [f"x{i}" for i in range(X.shape[1])]


def reading(names: Sequence[str], row: np.ndarray) -> dict[str, float]:
    """One row as a reading: its finite values by column name (NaN and inf are missing).

    >>> reading(["a", "b"], np.array([1.0, np.nan]))
    {'a': 1.0}
    """
    return {n: float(v) for n, v in zip(names, row, strict=True) if math.isfinite(v)}


class Detector(abc.ABC):
    """A streaming anomaly detector: one reading at a time, scores in [0, 1]."""

    @abc.abstractmethod
    def learn_one(self, x: Mapping[str, float]) -> None:
        """Update the detector with one reading. Must not modify ``x``."""

    @abc.abstractmethod
    def score_one(self, x: Mapping[str, float]) -> float:
        """Score one reading: 0.0 is normal, 1.0 is certainly anomalous. Learns nothing."""

    def score_many(self, X: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
        """Score then learn each row of ``X`` in order; return the scores.

        The default is the plain loop; fast detectors override it with a vectorised or
        compiled path that gives the same result.
        """
        X, names = readings(X, columns)
        out = np.empty(len(X))
        for i, row in enumerate(X):
            x = reading(names, row)
            out[i] = self.score_one(x)
            self.learn_one(x)
        return out

    def score_explain_many(
        self, X: np.ndarray, columns: Sequence[str] | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """:meth:`score_many` plus, for each row, the column with the largest share in
        :meth:`explain_one` before the row is learned (``""`` where none has a share).

        The default is the plain loop; a detector with a compiled path overrides it.

        >>> from edgewise.detect import Mahalanobis
        >>> X = np.r_[np.zeros((30, 2)) + np.arange(30)[:, None] % 3, [[1.0, 9.0]]]
        >>> scores, top = Mahalanobis(warmup=10).score_explain_many(X, ["flow", "temp"])
        >>> bool(scores[-1] > 0.9), top[-1]
        (True, 'temp')
        """
        X, names = readings(X, columns)
        out = np.empty(len(X))
        top: list[str] = []
        for i, row in enumerate(X):
            x = reading(names, row)
            out[i] = self.score_one(x)
            shares = self.explain_one(x) if x else {}
            top.append(max(shares, key=shares.__getitem__) if any(shares.values()) else "")
            self.learn_one(x)
        return out, top

    def explain_one(self, x: Mapping[str, float]) -> dict[str, float]:
        """Per-feature share of the last score (non-negative, sums to 1 when any)."""
        n = len(x)
        return {k: 1.0 / n for k in x} if n else {}

    # -- parameters and state ----------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        """The constructor's parameter names.

        Taken from the first class in the MRO that names them: a variant that only changes
        defaults may take ``**params`` (``PerMetricResidual``) and still accepts its
        parent's parameters.

        >>> from edgewise.detect import PerMetricResidual
        >>> "train_rows" in PerMetricResidual.param_names()
        True
        """
        for klass in cls.__mro__:
            names = [n for n, p in inspect.signature(klass.__init__).parameters.items()
                     if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
            if names:
                return names
        return []

    def get_params(self) -> dict[str, Any]:
        """The constructor's parameters and their values (scikit-learn's convention).

        >>> from edgewise.detect import EWZScore
        >>> EWZScore(warmup=5).get_params()["warmup"]
        5
        """
        return {name: getattr(self, name) for name in self.param_names() if hasattr(self, name)}

    def clone(self) -> Detector:
        """A fresh, untrained detector with the same parameters."""
        return type(self)(**self.get_params())

    @classmethod
    def _unit_test_params(cls) -> list[dict[str, Any]]:
        """Parameter sets the contract suite builds this detector with."""
        return [{}]

    def dumps(self) -> bytes:
        """Serialise parameters and learned state."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(data: bytes) -> Detector:
        """Restore a detector from :meth:`dumps` output. Only load data you trust."""
        obj = pickle.loads(data)
        if not isinstance(obj, Detector):
            raise TypeError(f"Expected a serialised Detector, got {type(obj).__name__}.")
        return obj

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
