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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from edgewise.errors import InvalidParameterError

__all__ = [
    "DEFAULT_THRESHOLD",
    "Detector",
    "first_finite",
    "first_finite_column",
    "reading",
    "readings",
    "readings_array",
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


def first_finite_column(X: np.ndarray, columns: Iterable[str] | None = None) -> np.ndarray:
    """:func:`first_finite` of each row of ``X`` (1-D input is one value a row): a contiguous
    float vector, NaN where a row has no finite value (inf counts as missing). ``X`` and
    ``columns`` are checked as :func:`readings` checks them.

    Where ``columns`` names a metric twice, a row reads as :func:`reading` makes it: the
    metric's last finite value, in the place of its first (the score-then-learn loop's
    reading; the first column's value, as taken before, made ``score_many`` differ).

    >>> first_finite_column(np.array([[np.nan, 2.0], [np.inf, np.nan], [3.0, 4.0]]))
    array([ 2., nan,  3.])
    >>> first_finite_column(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, np.nan]]), ["a", "b", "a"])
    array([3., 1.])
    """
    a, names = _checked(X, columns)
    a = np.where(np.isfinite(a), a, np.nan)
    if a.ndim == 2 and names is not None and len(set(names)) < len(names):
        for name in {n for n in names if names.count(n) > 1}:
            idx = [j for j, n in enumerate(names) if n == name]
            sub = a[:, idx]
            seen = ~np.isnan(sub)
            last = sub[np.arange(len(sub)), len(idx) - 1 - np.argmax(seen[:, ::-1], axis=1)]
            a[:, idx] = np.where(seen, last[:, None], np.nan)
    if a.ndim == 2:
        if a.shape[1] == 0:
            a = np.full(len(a), np.nan)
        else:
            a = a[np.arange(len(a)), np.argmax(~np.isnan(a), axis=1)]
    return np.ascontiguousarray(a, dtype=float)


def _shown(columns: Any) -> str:
    """``columns`` as an error message shows it: its repr, the first names of a long list."""
    if isinstance(columns, list) and len(columns) > 8:
        return repr(columns[:8])[:-1] + ", ...]"
    return repr(columns)


def readings_array(X: Any, columns: Iterable[str] | None = None) -> np.ndarray:
    """``X`` as a float array, checked: 1-D (one value a row) or 2-D (a row a reading, a
    column a metric), and ``columns``, where given, one name per column (one for 1-D
    input). What :func:`readings` and :func:`first_finite_column` take.

    >>> readings_array([[1, 2], [3, 4]], ["a", "b"]).dtype
    dtype('float64')
    >>> readings_array([[1.0, 2.0]], ["a"])
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'columns' argument must name each column of X (2 columns, one name each; 1-D X is one column). Got ['a'] (1 name) instead.
    """  # noqa: E501
    return _checked(X, columns)[0]


def _checked(X: Any, columns: Iterable[str] | None) -> tuple[np.ndarray, list[str] | None]:
    """:func:`readings_array`, and ``columns`` as a list (``None`` where not given)."""
    a = np.asarray(X, dtype=float)
    if a.ndim not in (1, 2):
        raise InvalidParameterError(
            f"X must be 1-D (one value a row) or 2-D (a row a reading, a column a metric). "
            f"Got an array of shape {a.shape} instead."
        )
    if columns is None:
        return a, None
    width = 1 if a.ndim == 1 else a.shape[1]
    try:
        if isinstance(columns, str | bytes):
            raise TypeError
        names = list(columns)
    except TypeError:
        raise InvalidParameterError(
            f"The 'columns' argument must be a list of names, one per column of X "
            f"({width}). Got {_shown(columns)} instead."
        ) from None
    if len(names) != width:
        raise InvalidParameterError(
            f"The 'columns' argument must name each column of X ({width} "
            f"column{'s' if width != 1 else ''}, one name each; 1-D X is one column). "
            f"Got {_shown(names)} ({len(names)} name{'s' if len(names) != 1 else ''}) instead."
        )
    return a, names


def readings(
    X: np.ndarray, columns: Iterable[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """``X`` as a 2-D float array (1-D input is one column) and its column names
    (``columns``, else ``x0``, ``x1``, ...): what ``score_many`` and its kin take. ``X`` must
    be 1-D or 2-D and ``columns`` name each of its columns (:func:`readings_array`).

    >>> X, names = readings([1.0, 2.0])
    >>> X.shape, names
    ((2, 1), ['x0'])
    """
    X, names = _checked(X, columns)
    if X.ndim == 1:
        X = X[:, None]
    return X, names if names is not None else [f"x{i}" for i in range(X.shape[1])]


def reading(names: Sequence[str], row: np.ndarray) -> dict[str, float]:
    """One row as a reading: its finite values by column name (NaN and inf are missing).

    >>> reading(["a", "b"], np.array([1.0, np.nan]))
    {'a': 1.0}
    """
    try:
        return {n: float(v) for n, v in zip(names, row, strict=True) if math.isfinite(v)}
    except ValueError:
        if len(names) == len(row):
            raise
        raise InvalidParameterError(
            f"A row of {len(row)} value{'s' if len(row) != 1 else ''} needs one name each: "
            f"got {len(names)} names ({_shown(list(names))}). Give 'columns' one name per "
            f"column of X."
        ) from None


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
