"""Classify anomaly / fault types from a few labels and many unlabelled windows.

:class:`FaultClassifier` follows scikit-learn conventions: parameters in ``__init__``,
``fit(X, y)`` with ``-1``, ``None`` or NaN (an empty cell of a pandas column) marking
unlabelled rows (as :class:`sklearn.semi_supervised.LabelSpreading` does), learned state in
attributes ending with ``_``, ``predict`` / ``predict_proba``. Class labels may be strings
(``"cavitation"``, ``"normal"``) or numbers (``0``, ``1``); ``classes_`` and ``predict``
give them back as they were given, so ``predict(X) == 1`` finds the 1s.

The texts ``"-1"``, ``"-1.0"``, ``"nan"`` and ``""`` (blanks around them ignored) mark
unlabelled rows too, so they cannot be class names: numpy writes ``-1`` and NaN as those
texts in an array that also holds text (``np.array(["normal", -1])`` is
``["normal", "-1"]``), and so does a label column read from a file as text. Taking them
as a fault class "-1" would predict that class for most windows.

* ``method="label_spreading"`` (default): a k-nearest-neighbour graph over all windows
  (labelled and not) carries each label along the dense regions it sits in; good when
  each fault forms its own cloud in feature space, whatever its shape.
* ``method="self_training"``: a logistic regression labels the unlabelled windows it is
  surest of and refits, round after round (:class:`sklearn.semi_supervised.SelfTrainingClassifier`).

Features are standardised using every window, labelled or not (each column first divided
by its largest magnitude, so features near 1e-200 or 1e200 are standardised as others).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = np.vstack([rng.normal(c, 0.3, (50, 2)) for c in ([0, 0], [3, 0], [0, 3])])
>>> y = np.full(150, -1, dtype=object); y[[0, 50, 100]] = ["normal", "cavitation", "seal_leak"]
>>> clf = FaultClassifier(random_state=0).fit(X, y)
>>> clf.predict([[3.1, 0.2], [0.1, 2.8]]).tolist()
['cavitation', 'seal_leak']
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.params import Interval, OneOf, validate_params

__all__ = ["FaultClassifier"]


def _missing(v: Any) -> bool:
    """``v`` is no label: ``None``, NaN (an empty cell of a pandas column), ``pd.NA``."""
    if v is None:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # not a scalar
        return False


# -1 and NaN as numpy writes them among text (np.array(["leak", -1, np.nan])), or as a
# text column of a file holds them; "" is an empty cell
_UNLABELLED_TEXT = frozenset({"", "-1", "-1.0", "nan"})


def _unlabelled(y: np.ndarray) -> np.ndarray:
    """Which rows carry no label: -1, ``None``, NaN, or the text "-1", "-1.0", "nan" or "".

    >>> _unlabelled(np.array([0, -1, 1, None, float("nan"), "", "leak"], dtype=object)).tolist()
    [False, True, False, True, True, True, False]
    >>> _unlabelled(np.array(["normal", -1, "leak", float("nan")])).tolist()
    [False, True, False, True]
    """
    return np.array([_missing(v)
                     or (isinstance(v, str) and v.strip().lower() in _UNLABELLED_TEXT)
                     or (not isinstance(v, str | bool) and v == -1)
                     for v in y], dtype=bool)


def _magnitudes(X: np.ndarray) -> np.ndarray:
    """Each column's largest finite magnitude (1.0 for a column of zeros or no finite
    value): what features are divided by before they are standardised, so that their
    variance neither underflows (near 1e-200; scikit-learn then leaves the column
    unscaled) nor overflows (near 1e200; it becomes NaN).

    >>> _magnitudes(np.array([[1e-200, 0.0, np.nan], [-2e-200, 0.0, -3e200]])).tolist()
    [2e-200, 1.0, 3e+200]
    """
    with np.errstate(invalid="ignore"):
        m = np.nanmax(np.where(np.isfinite(X), np.abs(X), np.nan), axis=0, initial=0.0)
    return np.where(m > 0, m, 1.0)


def _classes(labels: np.ndarray) -> np.ndarray:
    """The distinct labels, sorted, as given: numbers stay numbers (an integer array for
    integer labels, so ``predict(X) == 1`` finds the 1s), text stays text.

    >>> _classes(np.array([1, 0, 1], dtype=object)).tolist(), _classes(np.array([1, 0])).dtype
    ([0, 1], dtype('int64'))
    >>> _classes(np.array(["seal", "normal"], dtype=object)).tolist()
    ['normal', 'seal']
    """
    distinct = list(dict.fromkeys(v.item() if isinstance(v, np.generic) else v
                                  for v in labels))
    if all(isinstance(v, str) for v in distinct):
        return np.array(sorted(distinct), dtype=object)
    if all(isinstance(v, int | float) for v in distinct):  # bool is an int
        return np.array(sorted(distinct))
    # a mix (numbers and text): kept as given, numbers first
    return np.array(sorted(distinct, key=lambda v: (isinstance(v, str), str(v)
                                                    if isinstance(v, str) else v)),
                    dtype=object)


class FaultClassifier(ClassifierMixin, BaseEstimator):
    """Semi-supervised classifier of window types (normal, anomaly, fault classes).

    Parameters
    ----------
    method
        ``"label_spreading"`` or ``"self_training"``.
    n_neighbors
        Neighbours in the k-NN graph (label spreading; a window is its own first), at
        most ``(n - 1) // n_classes`` of ``n`` windows (at least 2): a few windows each
        joined to nearly all others would all take one class.
    alpha
        How much a window may move away from its given label (label spreading), in (0, 1).
    confidence
        Probability above which self-training adopts a pseudo-label.
    random_state
        Seed for anything random.

    Unlabelled rows have ``y`` -1, ``None`` or NaN, or the text "-1", "-1.0", "nan" or ""
    (how numpy writes -1 and NaN beside text labels), so none of these can be a class.

    Examples
    --------
    >>> X = [[0.0], [0.1], [0.2], [3.0], [3.1], [3.2]]
    >>> y = np.array(["normal", -1, -1, "leak", -1, -1])  # numpy makes -1 the text "-1"
    >>> FaultClassifier(n_neighbors=2).fit(X, y).classes_.tolist()
    ['leak', 'normal']
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "method": OneOf(("label_spreading", "self_training")),
        "n_neighbors": Interval(int, 1, None),
        "alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "confidence": Interval(float, 0.0, 1.0, closed="neither"),
        # any integral number, numpy's too (np.int64 from an array of seeds)
        "random_state": [Interval(int, None, None), None],
    }

    def __init__(self, method: str = "label_spreading", n_neighbors: int = 10,
                 alpha: float = 0.9, confidence: float = 0.8,
                 random_state: int | None = None) -> None:
        self.method = method
        self.n_neighbors = n_neighbors
        self.alpha = alpha
        self.confidence = confidence
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> FaultClassifier:
        """Fit on all rows of ``X``; ``y`` is -1, None or NaN for unlabelled rows (or the
        text "-1", "-1.0", "nan" or "", as numpy writes them among text labels)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler
        from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

        validate_params(self._parameter_constraints, self.get_params(), self)
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=object)
        if X.ndim != 2 or len(X) != len(y):
            raise InvalidParameterError(
                f"FaultClassifier.fit needs a 2-D X and one y per row. Got X of shape "
                f"{X.shape} and {len(y)} labels instead."
            )
        unl = _unlabelled(y)
        if unl.all():
            raise InvalidParameterError(
                "FaultClassifier.fit needs at least one labelled row (y other than -1, None, "
                f"NaN, or the text '-1', '-1.0', 'nan' or ''). None of the {len(y)} rows is "
                "labelled."
            )
        self.classes_ = _classes(y[~unl])
        code = np.full(len(y), -1)
        index = {c: i for i, c in enumerate(self.classes_.tolist())}
        code[~unl] = [index[v.item() if isinstance(v, np.generic) else v] for v in y[~unl]]
        self.prior_ = np.bincount(code[code >= 0], minlength=len(self.classes_)) / (code >= 0).sum()
        # each column divided by its largest magnitude first: the variance of features
        # near 1e-200 underflowed to 0 (left unscaled, every window was one point) and that
        # of features near 1e200 overflowed (sklearn refused the NaN it made)
        self.magnitude_ = _magnitudes(X)
        self.scaler_ = StandardScaler().fit(X / self.magnitude_)
        Z = self.scaler_.transform(X / self.magnitude_)
        self.n_features_in_ = X.shape[1]
        if len(self.classes_) == 1:
            self.model_ = None
        elif self.method == "label_spreading":
            # at most (n - 1) / classes neighbours (a window's own counts as one: at least
            # 2): a graph of a few windows (the alarms of one device) linking each window
            # to nearly all others spread the labels evenly, and every window took one
            # class (two clusters of 4 windows, one labelled in each: all the second's)
            k = min(self.n_neighbors, len(X) - 1,
                    max(2, (len(X) - 1) // len(self.classes_)))
            self.model_ = LabelSpreading(kernel="knn", n_neighbors=k, alpha=self.alpha,
                                         max_iter=2000).fit(Z, code)
        else:
            base = LogisticRegression(max_iter=500, class_weight="balanced")
            self.model_ = SelfTrainingClassifier(base, threshold=self.confidence).fit(Z, code)
        self.transduction_ = self.predict(X)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probability of each class (columns in ``classes_`` order)."""
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                "This FaultClassifier is not fitted yet; call fit(X, y) first."
            )
        # a classifier saved before magnitude_ was learned standardised features as they are
        Z = self.scaler_.transform(np.asarray(X, dtype=float) / getattr(self, "magnitude_", 1.0))
        if self.model_ is None:
            return np.ones((len(Z), 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            proba = np.asarray(self.model_.predict_proba(Z), dtype=float)
        # a point whose neighbours carry no label mass gets the classes' overall shares
        bad = ~np.isfinite(proba).all(axis=1) | (proba.sum(axis=1) <= 0)
        if bad.any():
            proba[bad] = self.prior_[np.asarray(self.model_.classes_, dtype=int)]
        # classes the model saw, in code order; fill any class it never kept
        out = np.zeros((len(Z), len(self.classes_)))
        out[:, np.asarray(self.model_.classes_, dtype=int)] = proba
        return out

    def predict(self, X: Any) -> np.ndarray:
        """The most likely class of each row."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
