"""Fleet model -> per-device fine-tune, from that device's own labels.

A fleet model learns what anomalous windows look like across many devices. A single
device differs: its sensors sit at another offset, its normal load is another. With a
handful of the device's labels :func:`fine_tune` adapts the fleet model without
retraining it:

* **re-centre**: the device's labelled-normal windows give its offset from the fleet's
  normal, which is removed before the fleet model sees a window. Only from at least
  :data:`MIN_NORMALS_TO_RECENTRE` (3) normal windows, and only when the offset passes a
  t-test at 5 % for the device as a whole: some feature's mean differs from the fleet's
  by more than ``t(1 - 0.025 / n_features, n - 1)`` standard errors of the mean of the
  ``n`` normal windows (Bonferroni over the features; on a feature whose values tie
  among them, a point mass like a detector score of 0 on quiet windows, their standard
  deviation is at least the fleet's normal windows'), so a device like the fleet's is
  moved by the noise of its windows on at most 5 % of devices. Re-centring on one window
  (no noise check at all) made the device model worse than the fleet's on 248 of 300
  devices drawn like the fleet, and a fixed two standard errors on two windows on 120 of
  300; now 0, 0 and 5 of 200 with three;
* **re-calibrate**: a one-dimensional logistic fit of the fleet model's decision value to
  the device's labels, and the decision threshold that best separates them (only when
  the device has at least two labels of each kind, and only when cross-validation over
  them says it beats the fleet's own threshold; otherwise the fleet's).

:func:`compare_on_holdout` measures what fine-tuning buys on data held back from it.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(0, 1, (600, 3)); y = (X[:, 0] > 1.5).astype(int)
>>> fleet = FleetModel().fit(X, y)
>>> Xd = rng.normal(0, 1, (200, 3)); yd = (Xd[:, 0] > 1.5).astype(int); Xd[:, 0] += 2.0
>>> dev = fine_tune(fleet, Xd[:100], yd[:100])
>>> bool((dev.predict(Xd[100:]) == yd[100:]).mean() > (fleet.predict(Xd[100:]) == yd[100:]).mean())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.params import Interval, validate_params

__all__ = ["MIN_NORMALS_TO_RECENTRE", "DeviceModel", "FleetModel", "compare_on_holdout",
           "fine_tune", "holdout_scores", "paired_p_value"]

#: Labelled-normal windows :func:`fine_tune` needs before it re-centres: with fewer, their
#: spread (what tells an offset from noise) is not measured, or (two windows, one degree of
#: freedom) so poorly that the t-test can hardly pass.
MIN_NORMALS_TO_RECENTRE = 3

#: The chance that a device drawn like the fleet is re-centred on some feature.
RECENTRE_ALPHA = 0.05


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = int((pred & y).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + int((pred & ~y).sum()) + int((~pred & y).sum()))


def _mcc(pred: np.ndarray, y: np.ndarray) -> float:
    """Matthews' correlation of boolean ``pred`` with boolean ``y``; 0.0 where either is
    constant (a model flagging every window, or none, tells nothing).

    >>> y = np.array([True] * 8 + [False] * 2)
    >>> _mcc(np.ones(10, dtype=bool), y), _mcc(y, y)
    (0.0, 1.0)
    """
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, tn = int((~pred & y).sum()), int((~pred & ~y).sum())
    den = float(np.sqrt(float((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))))
    return 0.0 if den == 0 else (tp * tn - fp * fn) / den


def _balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    """The mean of the share of anomalies caught and the share of normal windows let pass
    (boolean ``pred`` against boolean ``y``), over the classes ``y`` holds; 0.0 for none.

    Unlike F1 it sees false alarms however few normal windows there are: a model that
    flags every window scores 0.5, one that flags none 0.5, on any mix of labels.

    >>> y = np.array([True] * 8 + [False] * 2)
    >>> _balanced_accuracy(np.ones(10, dtype=bool), y), round(_f1(np.ones(10, dtype=bool), y), 3)
    (0.5, 0.889)
    >>> _balanced_accuracy(y, y)
    1.0
    """
    recalls = [float((pred[y == c] == c).mean()) for c in (True, False) if (y == c).any()]
    return float(np.mean(recalls)) if recalls else 0.0


def _windows(X: Any, who: str, n_features: int | None = None) -> np.ndarray:
    """``X`` as a 2-D float array of at least one window, with ``n_features`` columns when
    given, every value finite; else a one-line :class:`InvalidParameterError`.

    >>> _windows([[1.0, 2.0]], "fit").shape
    (1, 2)
    >>> _windows([1.0, 2.0], "fine_tune")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: fine_tune needs windows as a 2-D array (one row per window, one column per feature). Got a 1-D array of shape (2,).
    """  # noqa: E501
    try:
        arr = np.asarray(X, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidParameterError(
            f"{who} needs windows of numbers. Got {type(X).__name__} that is not: {exc}.",
            field="X", value=None,
        ) from None
    if arr.ndim != 2:
        raise InvalidParameterError(
            f"{who} needs windows as a 2-D array (one row per window, one column per "
            f"feature). Got a {arr.ndim}-D array of shape {arr.shape}.",
            field="X", value=arr.shape,
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidParameterError(
            f"{who} needs at least one window of at least one feature. Got shape {arr.shape}.",
            field="X", value=arr.shape,
        )
    if n_features is not None and arr.shape[1] != n_features:
        raise InvalidParameterError(
            f"{who} needs windows with the fleet model's {n_features} features. "
            f"Got {arr.shape[1]}.", field="X", value=arr.shape,
        )
    bad = np.argwhere(~np.isfinite(arr))
    if len(bad):
        i, j = (int(v) for v in bad[0])
        raise InvalidParameterError(
            f"{who} needs finite windows. Got {arr[i, j]} in window {i}, feature {j} "
            f"({len(bad)} non-finite value(s) in all).", field="X", value=float(arr[i, j]),
        )
    return arr


def _magnitudes(X: np.ndarray) -> np.ndarray:
    """Each column's largest finite magnitude (1.0 for a column of zeros or no finite
    value): what a model divides its features by before standardising them, so that
    neither their variance underflows (features near 1e-200; scikit-learn then leaves the
    column unscaled) nor overflows (near 1e200; it becomes NaN).

    >>> _magnitudes(np.array([[1e-200, 0.0, -3e200], [-2e-200, 0.0, 1.0]])).tolist()
    [2e-200, 1.0, 3e+200]
    """
    with np.errstate(invalid="ignore"):
        m = np.nanmax(np.where(np.isfinite(X), np.abs(X), np.nan), axis=0, initial=0.0)
    return np.where(m > 0, m, 1.0)


def _labels(y: Any, n: int, who: str) -> np.ndarray:
    """``y`` as ``n`` int labels, each 0 (normal) or 1 (anomaly); else a one-line
    :class:`InvalidParameterError` naming the labels found.

    Other conventions are not guessed at: scikit-learn's outlier labels (-1 anomaly,
    1 normal) are mapped by the caller, ``(np.asarray(y) == -1).astype(int)``.

    >>> _labels([0, 1, 1.0, True], 4, "fit").tolist()
    [0, 1, 1, 1]
    >>> _labels([-1, 1], 2, "fit")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: fit needs labels 0 (normal) or 1 (anomaly). Got labels [-1, 1]; for scikit-learn's outlier labels (-1 anomaly, 1 normal) pass (y == -1).astype(int).
    """  # noqa: E501
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InvalidParameterError(
            f"{who} needs one label per window as a 1-D array. Got shape {arr.shape}.",
            field="y", value=arr.shape,
        )
    if len(arr) != n:
        raise InvalidParameterError(
            f"{who} needs one label per window. Got {n} windows and {len(arr)} labels.",
            field="y", value=len(arr),
        )
    distinct = set(arr.tolist())
    try:
        found = sorted(distinct)
    except TypeError:  # labels of mixed types
        found = sorted(distinct, key=repr)
    numeric = arr.dtype.kind in "biuf"
    if not numeric or not set(np.unique(arr).tolist()) <= {0, 1}:
        shown = found[:10] + (["..."] if len(found) > 10 else [])
        hint = ("; for scikit-learn's outlier labels (-1 anomaly, 1 normal) pass "
                "(y == -1).astype(int)" if numeric and -1 in found else "")
        raise InvalidParameterError(
            f"{who} needs labels 0 (normal) or 1 (anomaly). Got labels {shown}{hint}.",
            field="y", value=shown,
        )
    return arr.astype(int)


def _check_fitted(fleet: Any, who: str) -> FleetModel:
    """``fleet`` if it is a fitted :class:`FleetModel`; else a one-line error."""
    if not isinstance(fleet, FleetModel):
        raise InvalidParameterError(
            f"{who} needs a FleetModel. Got {type(fleet).__name__}.",
            field="fleet", value=type(fleet).__name__,
        )
    if not hasattr(fleet, "model_"):
        raise NotFittedError(
            f"This FleetModel is not fitted yet; call fit(X, y) on it before {who}."
        )
    return fleet


class FleetModel(ClassifierMixin, BaseEstimator):
    """A binary anomaly classifier trained on windows of the whole fleet (scikit-learn style).

    Parameters
    ----------
    C
        Inverse regularisation of the logistic regression.
    """

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, X: Any, y: Any) -> FleetModel:
        """Fit on fleet windows ``X`` (2-D: one row per window) with labels ``y``: 1 for an
        anomaly, 0 for normal, and both present. Other labels are refused (map
        scikit-learn's -1/1 outlier labels with ``(y == -1).astype(int)``).

        >>> FleetModel().fit([[0.0], [1.0], [5.0], [6.0]], [0, 0, 1, 1]).predict([[5.5]])
        array([1])
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        C = self.C.item() if isinstance(self.C, np.generic) else self.C
        validate_params({"C": Interval(float, 0.0, None, closed="neither")}, {"C": C}, self)
        X = _windows(X, "FleetModel.fit")
        y = _labels(y, len(X), "FleetModel.fit")
        if len(np.unique(y)) < 2:
            raise InvalidParameterError(
                f"FleetModel.fit needs both normal (0) and anomalous (1) windows. Got only "
                f"label {int(y[0])}.", field="y", value=int(y[0]),
            )
        # each column divided by its largest magnitude before it is standardised: the
        # variance of features near 1e-200 underflowed to 0 (left unscaled, every window
        # looked alike: accuracy 0.05) and that of features near 1e200 overflowed (sklearn
        # refused the NaN it made)
        self.magnitude_ = _magnitudes(X)
        self.normal_mean_ = X[y == 0].mean(axis=0)
        # the spread of the fleet's normal windows: the least noise :func:`_recentre_shift`
        # grants a device's normal windows (0 with one normal window: no floor); measured
        # on the scaled columns, as squaring features near 1e200 overflows
        self.normal_sd_ = ((X[y == 0] / self.magnitude_).std(axis=0, ddof=1) * self.magnitude_
                           if (y == 0).sum() >= 2 else np.zeros(X.shape[1]))
        self.scaler_ = StandardScaler().fit(X / self.magnitude_)
        self.model_ = LogisticRegression(C=float(C), class_weight="balanced", max_iter=500).fit(
            self.scaler_.transform(X / self.magnitude_), y)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Log-odds of an anomaly."""
        if not hasattr(self, "model_"):
            raise NotFittedError("This FleetModel is not fitted yet; call fit(X, y) first.")
        X = _windows(X, "FleetModel.decision_function", self.n_features_in_)
        # a model saved before magnitude_ was learned standardised the features as they are
        X = X / getattr(self, "magnitude_", 1.0)
        return np.asarray(self.model_.decision_function(self.scaler_.transform(X)))

    def predict(self, X: Any) -> np.ndarray:
        """1 for anomalous windows, 0 for normal."""
        return (self.decision_function(X) >= 0).astype(int)


class DeviceModel:
    """A fleet model adapted to one device; made by :func:`fine_tune`."""

    def __init__(self, fleet: FleetModel, shift: np.ndarray, calibrator: Any | None,
                 threshold: float, n_labels: int) -> None:
        self.fleet = fleet
        self.shift_ = shift
        self.calibrator_ = calibrator
        self.threshold_ = threshold
        self.n_labels_ = n_labels

    def decision_function(self, X: Any) -> np.ndarray:
        """The fleet model's log-odds on the re-centred window, re-calibrated."""
        X = _windows(X, "DeviceModel.decision_function", len(self.shift_))
        d = self.fleet.decision_function(X - self.shift_)
        if self.calibrator_ is not None:
            d = np.asarray(self.calibrator_.decision_function(d[:, None]))
        return d

    def predict(self, X: Any) -> np.ndarray:
        """1 for anomalous windows, 0 for normal."""
        return (self.decision_function(X) >= self.threshold_).astype(int)


def fine_tune(fleet: FleetModel, X: Any, y: Any, *, recenter: bool = True,
              recalibrate: bool = True) -> DeviceModel:
    """Adapt ``fleet`` to one device from its labelled windows ``X``, ``y`` (1/0).

    ``X`` is 2-D with the fleet model's features; ``y`` holds 1 (anomaly) or 0 (normal)
    per window, nothing else. Re-centring needs at least :data:`MIN_NORMALS_TO_RECENTRE`
    (3) labelled-normal windows, and moves the device only where its offset from the
    fleet's normal passes the t-test of :func:`_recentre_shift`; re-calibration needs
    at least two windows of each label, and is kept only where cross-validation over them
    says it beats the fleet's threshold. Without them that step is skipped, and the device
    model decides as the fleet model does (``shift_`` all 0, no calibrator).

    Raises
    ------
    NotFittedError
        When ``fleet`` has not been fitted.
    InvalidParameterError
        When the windows are not 2-D, empty, not finite or have another number of
        features than the fleet model, or a label is not 0 or 1.

    >>> fleet = FleetModel().fit([[0.0], [1.0], [5.0], [6.0]], [0, 0, 1, 1])
    >>> fine_tune(fleet, [[2.0], [2.5], [3.0]], [0, 0, 0]).shift_.tolist()
    [2.0]
    >>> fine_tune(fleet, [[2.0], [3.0]], [0, 0]).shift_.tolist()  # two windows: not moved
    [0.0]
    >>> fine_tune(fleet, [[2.0, 1.0]], [0])
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: fine_tune needs windows with the fleet model's 1 features. Got 2.
    """  # noqa: E501
    fleet = _check_fitted(fleet, "fine_tune")
    X = _windows(X, "fine_tune", fleet.n_features_in_)
    y = _labels(y, len(X), "fine_tune")
    shift = _recentre_shift(fleet, X[y == 0]) if recenter else np.zeros(X.shape[1])
    calibrator = None
    threshold = 0.0
    if recalibrate and (y == 1).sum() >= 2 and (y == 0).sum() >= 2:
        d = fleet.decision_function(X - shift)
        if _recalibration_helps(d, y):
            calibrator, threshold = _recalibrate(d, y)
    return DeviceModel(fleet, shift, calibrator, threshold, len(y))


def _recentre_shift(fleet: FleetModel, normal: np.ndarray) -> np.ndarray:
    """The offset of a device's labelled-normal windows ``normal`` from the fleet's normal
    (their mean minus the fleet's, every feature) when it is beyond their noise; all 0
    when it is not, or with fewer than :data:`MIN_NORMALS_TO_RECENTRE` windows.

    The test: some feature has ``|mean - fleet mean| > t * sd / sqrt(n)`` over the ``n``
    windows (``sd`` at least the fleet's normal windows' sd, ``normal_sd_``, on a feature
    whose values tie among the windows: a point mass, such as a detector score that is 0
    on every quiet window, whose sd over a few windows is 0), ``t`` the
    ``1 - alpha / (2 * n_features)`` quantile of Student's t with ``n - 1`` degrees of
    freedom (``alpha`` = :data:`RECENTRE_ALPHA`): two-sided at 5 % for
    the device, not per feature, so a device drawn like the fleet is moved at most 5 % of
    the time however many features there are. (Two standard errors per feature, the rule
    before, is the 95 % quantile only for many windows: with two it is the 70 % one.) A
    device that passes is moved on every feature: its features move together (a level
    offset moves the largest |z| and the detectors' scores too), and moving only those
    that passed scored lower on the simulated pumps of :mod:`edgewise.bench.active`
    (hold-out F1 0.614, worse than the fleet model on 14 of 27 pumps, against 0.625 and
    11 of 27).

    >>> fleet = FleetModel().fit([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0], [6.0, 6.0]],
    ...                          [0, 0, 1, 1])
    >>> _recentre_shift(fleet, np.array([[3.0, 0.0], [3.1, 1.2], [2.9, -0.2]])).round(2).tolist()
    [2.5, -0.17]
    >>> _recentre_shift(fleet, np.array([[0.0, 0.0], [1.1, 1.2], [0.6, -0.2]])).tolist()
    [0.0, 0.0]
    >>> quiet = np.array([[0.0, 0.3], [0.0, 0.7], [0.0, 0.5]])  # feature 0: 0 on each
    >>> _recentre_shift(fleet, quiet).tolist()
    [0.0, 0.0]
    """
    n = len(normal)
    if n < MIN_NORMALS_TO_RECENTRE:
        return np.zeros(normal.shape[1])
    from scipy.stats import t as student_t

    offset = normal.mean(axis=0) - fleet.normal_mean_
    mag = getattr(fleet, "magnitude_", 1.0)  # squaring features near 1e200 overflows
    sd = (normal / mag).std(axis=0, ddof=1) * mag
    # A feature whose values tie over the device's normal windows has a point mass (a
    # detector's score is exactly 0 on most quiet windows): their sd says little of its
    # spread, 0 where all are 0, and any offset from the fleet's mean passed (8 of 12
    # devices drawn like the fleet from windows_from_series were moved). There the
    # fleet's normal windows' sd is the least spread granted. Not on every feature: a
    # device whose normal windows sit tightly off the fleet's, which their own sd shows,
    # would need many more windows to be moved. A fleet model saved before it kept that
    # sd gives no floor.
    tied = (np.diff(np.sort(normal, axis=0), axis=0) == 0).any(axis=0)
    floor = getattr(fleet, "normal_sd_", None)
    if floor is not None:
        sd = np.where(tied, np.maximum(sd, floor), sd)
    se = sd / np.sqrt(n)
    crit = float(student_t.ppf(1.0 - RECENTRE_ALPHA / (2 * normal.shape[1]), n - 1))
    # an offset within the rounding of the two means is none: on a feature constant in the
    # fleet's normal windows and the device's (a flat metric's spread, log(1e-3)) both sd
    # are 0, and the mean of 60 windows of 0.1 (0.09999999999999996) against that of 7
    # passed the test, so every device like the fleet was moved
    rounding = 64 * np.finfo(float).eps * np.maximum(
        np.abs(normal).max(axis=0), np.abs(fleet.normal_mean_))
    moved = (np.abs(offset) > crit * se) & (np.abs(offset) > rounding)
    return offset if bool(moved.any()) else np.zeros(normal.shape[1])


def _recalibrate(d: np.ndarray, y: np.ndarray) -> tuple[Any, float]:
    """A logistic fit of the decision values ``d`` to ``y`` and the threshold on its output
    with the best Matthews correlation (:func:`_mcc`) on them (ties: the one nearest 0).

    Not F1: labels taken from fault logs are mostly anomalies, and on them the best F1
    is often where every window is flagged (24 simulated pumps labelled from their fault
    logs and 4 normal stretches: 8 fine-tuned models flagged all 100 of their windows;
    chosen by Matthews correlation, which scores flagging everything 0, none). Not balanced
    accuracy either: weighing each class alike, it bought recall with false alarms on a
    device whose labels were drawn like its windows (hold-out F1 0.48, the fleet
    threshold's 0.84)."""
    from sklearn.linear_model import LogisticRegression

    calibrator = LogisticRegression(class_weight="balanced").fit(d[:, None], y)
    cal = calibrator.decision_function(d[:, None])
    cands = np.unique(np.concatenate([[0.0], cal]))
    return calibrator, float(max(
        cands, key=lambda c: (_mcc(cal >= c, y == 1), -abs(c))))


def _recalibration_helps(d: np.ndarray, y: np.ndarray) -> bool:
    """Whether re-calibrating beats the fleet's own threshold (0) on windows it was not
    fitted on: stratified k-fold over the device's labels (k = fewest of a label, 2 to
    5). A threshold picked by F1 on two or three anomalies overfits, and left unchecked it
    made the device model worse than the fleet's on 16-33 % of devices drawn like the
    fleet (F1 down by up to 1.0). Judged by Matthews correlation, as :func:`_recalibrate`
    picks its threshold.

    >>> d = np.array([-3.0, -2.5, -2.0, -1.0, 2.0, 2.5, 3.0, 3.5])
    >>> _recalibration_helps(d, np.array([0, 0, 0, 0, 1, 1, 1, 1]))  # 0 already separates
    False
    >>> _recalibration_helps(d - 2.75, np.array([0, 0, 0, 0, 1, 1, 1, 1]))  # shifted: it helps
    True
    """
    from sklearn.model_selection import StratifiedKFold

    k = int(min(5, (y == 1).sum(), (y == 0).sum()))
    cal_pred = np.zeros(len(y), dtype=bool)
    for train, test in StratifiedKFold(n_splits=k).split(d[:, None], y):
        calibrator, threshold = _recalibrate(d[train], y[train])
        cal_pred[test] = calibrator.decision_function(d[test][:, None]) >= threshold
    return _mcc(cal_pred, y == 1) > _mcc(d >= 0.0, y == 1)


def compare_on_holdout(fleet: FleetModel, X: Any, y: Any, *, train_fraction: float = 0.5,
                       ) -> dict[str, float]:
    """Fine-tune on the first ``train_fraction`` of a device's windows (in time order) and
    compare the fleet and the fine-tuned model on the rest.

    Returns ``{"fleet_f1", "device_f1", "fleet_balanced_accuracy",
    "device_balanced_accuracy", "n_train", "n_holdout", "device_only_right",
    "fleet_only_right", "paired_p"}``: the held-out windows only the fine-tuned model got
    right, those only the fleet model did, and how often chance alone would give the
    fine-tuned model a balanced-accuracy gain this large (:func:`paired_p_value`). F1 alone
    cannot see false alarms on a hold-out of mostly anomalies (a model flagging every
    window scores 0.96 on 25 anomalies and 2 normal windows); balanced accuracy
    (:func:`_balanced_accuracy`) can.
    ``X`` and ``y`` are checked as :func:`fine_tune` checks them; ``train_fraction`` is in
    [0, 1] and must leave windows on both sides of the split.
    """
    fleet = _check_fitted(fleet, "compare_on_holdout")
    validate_params({"train_fraction": Interval(float, 0.0, 1.0)},
                    {"train_fraction": train_fraction.item() if isinstance(
                        train_fraction, np.generic) else train_fraction}, "compare_on_holdout")
    X = _windows(X, "compare_on_holdout", fleet.n_features_in_)
    y = _labels(y, len(X), "compare_on_holdout")
    # rounded first: 100 windows at 0.29 are 28.999999999999996, and int() gave 28
    cut = int(round(len(X) * train_fraction, 9))
    if not 0 < cut < len(X):
        raise InvalidParameterError(
            f"compare_on_holdout needs windows on both sides of the split. Got {len(X)} "
            f"windows and train_fraction={train_fraction!r}."
        )
    return holdout_scores(fleet, fine_tune(fleet, X[:cut], y[:cut]), X, y, cut)


def holdout_scores(fleet: FleetModel, dev: Any, X: np.ndarray, y: np.ndarray, cut: int,
                   ) -> dict[str, float]:
    """:func:`compare_on_holdout`'s figures for ``dev``, a model already fine-tuned on the
    windows before ``cut`` (checked arrays: the caller checked them)."""
    yh = y[cut:] == 1
    pf, pd = fleet.predict(X[cut:]) == 1, dev.predict(X[cut:]) == 1
    rf, rd = pf == yh, pd == yh
    return {"fleet_f1": _f1(pf, yh), "device_f1": _f1(pd, yh),
            "fleet_balanced_accuracy": _balanced_accuracy(pf, yh),
            "device_balanced_accuracy": _balanced_accuracy(pd, yh),
            "n_train": float(cut), "n_holdout": float(len(X) - cut),
            "device_only_right": float((rd & ~rf).sum()),
            "fleet_only_right": float((rf & ~rd).sum()),
            "paired_p": paired_p_value(rd, rf, yh)}


def paired_p_value(device_right: Any, fleet_right: Any, y: Any) -> float:
    """How often chance alone would give the device model a balanced-accuracy gain over
    the fleet model at least as large as it has on these windows: the one-sided p-value
    of an exact paired (sign-flip) test. ``device_right`` and ``fleet_right`` say, per
    window, whether each model was right; ``y`` whether the window is an anomaly.

    Only the windows where one model is right and the other wrong tell the models apart.
    Were the models alike, each such window would favour either with chance 1/2; the
    p-value is the chance that these coin flips give a balanced-accuracy difference at
    least the one seen (each window weighs one over its class's count, as in balanced
    accuracy). With as many anomalies as normal windows it is the exact one-sided
    McNemar test (a binomial test of ``b`` windows only the device model got right
    against ``c`` only the fleet model got right). 1.0 where no window tells them apart.

    >>> y = np.array([True] * 4 + [False] * 4)
    >>> both = np.ones(8, dtype=bool)
    >>> paired_p_value(both, both, y)  # the same on every window: no evidence
    1.0
    >>> fleet = np.array([False] * 4 + [True] * 4)  # the fleet misses 4 anomalies
    >>> paired_p_value(both, fleet, y)  # b = 4, c = 0: (1/2) ** 4
    0.0625
    >>> paired_p_value(fleet, both, y)  # the other way round: no gain at all
    1.0
    """
    from scipy.stats import binom

    rd = np.asarray(device_right, dtype=bool)
    rf = np.asarray(fleet_right, dtype=bool)
    yy = np.asarray(y, dtype=bool)
    n1, n0 = int(yy.sum()), int((~yy).sum())
    # each class's discordant windows weigh 1 / its count; times n1 * n0, whole numbers
    w1, w0 = (n0 or 1), (n1 or 1)
    b1, c1 = int((rd & ~rf & yy).sum()), int((rf & ~rd & yy).sum())
    b0, c0 = int((rd & ~rf & ~yy).sum()), int((rf & ~rd & ~yy).sum())
    d1, d0 = b1 + c1, b0 + c0
    if d1 + d0 == 0:
        return 1.0
    seen = w1 * (b1 - c1) + w0 * (b0 - c0)
    x1 = np.arange(d1 + 1)
    # x1 anomalies and x0 normal windows favouring the device model reach ``seen`` when
    # w1 * (2 x1 - d1) + w0 * (2 x0 - d0) >= seen, i.e. x0 >= need (rounded up)
    need = -((-(seen - w1 * (2 * x1 - d1) + w0 * d0)) // (2 * w0))
    p = float((binom.pmf(x1, d1, 0.5) * binom.sf(need - 1, d0, 0.5)).sum())
    return min(1.0, p)
