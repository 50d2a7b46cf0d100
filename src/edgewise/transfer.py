"""Fleet model -> per-device fine-tune, from that device's own labels.

A fleet model learns what anomalous windows look like across many devices. A single
device differs: its sensors sit at another offset, its normal load is another. With a
handful of the device's labels :func:`fine_tune` adapts the fleet model without
retraining it:

* **re-centre**: the device's labelled-normal windows give its offset from the fleet's
  normal, which is removed before the fleet model sees a window;
* **re-calibrate**: a one-dimensional logistic fit of the fleet model's decision value to
  the device's labels, and the decision threshold that best separates them (only when
  the device has at least two labels of each kind; otherwise the fleet's).

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
from edgewise.params import validate_params

__all__ = ["DeviceModel", "FleetModel", "compare_on_holdout", "fine_tune"]


def _f1(pred: np.ndarray, y: np.ndarray) -> float:
    tp = int((pred & y).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + int((pred & ~y).sum()) + int((~pred & y).sum()))


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
        """Fit on fleet windows ``X`` with labels ``y`` (1 anomaly, 0 normal)."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        validate_params({"C": float}, {"C": float(self.C)}, self)
        X = np.asarray(X, dtype=float)
        y = np.asarray(y).astype(int)
        if len(np.unique(y)) < 2:
            raise InvalidParameterError(
                "FleetModel.fit needs both normal (0) and anomalous (1) windows."
            )
        self.normal_mean_ = X[y == 0].mean(axis=0)
        self.scaler_ = StandardScaler().fit(X)
        self.model_ = LogisticRegression(C=self.C, class_weight="balanced", max_iter=500).fit(
            self.scaler_.transform(X), y)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        """Log-odds of an anomaly."""
        if not hasattr(self, "model_"):
            raise NotFittedError("This FleetModel is not fitted yet; call fit(X, y) first.")
        return np.asarray(self.model_.decision_function(
            self.scaler_.transform(np.asarray(X, dtype=float))))

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
        d = self.fleet.decision_function(np.asarray(X, dtype=float) - self.shift_)
        if self.calibrator_ is not None:
            d = np.asarray(self.calibrator_.decision_function(d[:, None]))
        return d

    def predict(self, X: Any) -> np.ndarray:
        """1 for anomalous windows, 0 for normal."""
        return (self.decision_function(X) >= self.threshold_).astype(int)


def fine_tune(fleet: FleetModel, X: Any, y: Any, *, recenter: bool = True,
              recalibrate: bool = True) -> DeviceModel:
    """Adapt ``fleet`` to one device from its labelled windows ``X``, ``y`` (1/0).

    Re-centring needs at least one labelled-normal window; re-calibration at least two
    windows of each label. Without them that step is skipped.
    """
    from sklearn.linear_model import LogisticRegression

    X = np.asarray(X, dtype=float)
    y = np.asarray(y).astype(int)
    if len(X) != len(y):
        raise InvalidParameterError(
            f"fine_tune needs one label per window. Got {len(X)} windows and {len(y)} labels."
        )
    shift = np.zeros(X.shape[1])
    if recenter and (y == 0).any():
        shift = X[y == 0].mean(axis=0) - fleet.normal_mean_
    calibrator = None
    threshold = 0.0
    if recalibrate and (y == 1).sum() >= 2 and (y == 0).sum() >= 2:
        d = fleet.decision_function(X - shift)[:, None]
        calibrator = LogisticRegression(class_weight="balanced").fit(d, y)
        cal = calibrator.decision_function(d)
        cands = np.unique(np.concatenate([[0.0], cal]))
        best = max(cands, key=lambda c: (_f1(cal >= c, y == 1), -abs(c)))
        threshold = float(best)
    return DeviceModel(fleet, shift, calibrator, threshold, len(y))


def compare_on_holdout(fleet: FleetModel, X: Any, y: Any, *, train_fraction: float = 0.5,
                       ) -> dict[str, float]:
    """Fine-tune on the first ``train_fraction`` of a device's windows (in time order) and
    compare F1 of the fleet and the fine-tuned model on the rest.

    Returns ``{"fleet_f1", "device_f1", "n_train", "n_holdout"}``.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y).astype(int)
    cut = int(len(X) * train_fraction)
    if not 0 < cut < len(X):
        raise InvalidParameterError(
            f"compare_on_holdout needs windows on both sides of the split. Got {len(X)} "
            f"windows and train_fraction={train_fraction!r}."
        )
    dev = fine_tune(fleet, X[:cut], y[:cut])
    yh = y[cut:] == 1
    return {"fleet_f1": _f1(fleet.predict(X[cut:]) == 1, yh),
            "device_f1": _f1(dev.predict(X[cut:]) == 1, yh),
            "n_train": float(cut), "n_holdout": float(len(X) - cut)}
