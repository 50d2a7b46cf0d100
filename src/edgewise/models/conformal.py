"""Split-conformal prediction intervals, local in the size of the prediction.

Residuals ``y - prediction`` on data the model never saw are kept sorted by the predicted
value. The interval of a new prediction is the prediction plus the finite-sample-corrected
``alpha/2`` and ``1 - alpha/2`` quantiles of the residuals of its *neighbours*: the
``share`` of calibration points whose predictions are nearest to it in rank (at least
``min_neighbours``, and at least :func:`min_residuals`, the fewest whose quantiles are
finite). A RUL model is far surer near failure than far from it, and its
errors are widest in mid-life, where degradation has begun but its pace is unknown;
fixed quantile bins mix those regimes (a fleet of test histories cut in mid-life then
gets too narrow intervals), a sliding neighbourhood does not.

The finite-sample correction is kept whole: the upper bound is the
``ceil((n + 1)(1 - alpha/2))``-th smallest of ``n`` residuals and the lower one the
``floor((n + 1) alpha/2)``-th; with fewer than :func:`min_residuals` residuals in all
(19 for ``alpha=0.1``) no residual is far enough out, and the bound is infinite
(``-inf`` / ``inf``: nothing that few residuals say supports a finite one). Clipping it to
the largest and smallest residual, as this module once did, covered 0.67 with 5
residuals instead of 0.90.

>>> rng = np.random.default_rng(0)
>>> pred = rng.uniform(0, 100, 2000)
>>> y = pred + rng.normal(0, 1 + pred / 10, 2000)
>>> cal = ConformalBands(alpha=0.1).fit(pred[:1000], y[:1000])
>>> low, high = cal.interval(pred[1000:])
>>> cover = np.mean((y[1000:] >= low) & (y[1000:] <= high))
>>> bool(0.86 < cover < 0.94), bool((high - low)[pred[1000:] > 75].mean() > (high - low)[pred[1000:] < 25].mean())
(True, True)
"""  # noqa: E501

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.params import Interval, validate_params

__all__ = ["ConformalBands", "min_residuals"]


def _ceil(x: float) -> int:
    """``ceil`` that ignores float noise in a product that should be whole (``(n + 1) * 0.95``)."""
    return math.ceil(x - 1e-9)


def _floor(x: float) -> int:
    return math.floor(x + 1e-9)


def min_residuals(alpha: float) -> int:
    """The fewest residuals whose split-conformal ``1 - alpha`` interval has finite bounds on
    both sides: ``ceil((n + 1)(1 - alpha/2)) <= n`` (and then ``floor((n + 1) alpha/2) >= 1``).

    >>> min_residuals(0.1), min_residuals(0.2), min_residuals(0.05)
    (19, 9, 39)
    """
    n = 1
    while _ceil((n + 1) * (1 - alpha / 2)) > n or _floor((n + 1) * (alpha / 2)) < 1:
        n += 1
    return n


class ConformalBands:
    """Asymmetric split-conformal bands from the residuals of neighbouring predictions.

    Parameters
    ----------
    alpha
        Miscoverage: intervals aim to hold the truth ``1 - alpha`` of the time.
    share
        Share of the calibration points that form a prediction's neighbourhood.
    min_neighbours
        Fewest residuals in a neighbourhood (all of them when there are fewer). A
        neighbourhood never holds fewer than :func:`min_residuals` ``(alpha)`` residuals
        when there are that many: fewer would make every bound infinite.

    With fewer than :func:`min_residuals` ``(alpha)`` residuals in all, the bounds are
    ``-inf`` and ``inf``:

    >>> ConformalBands(alpha=0.1).fit(np.arange(5.0), np.arange(5.0) + 1).interval(
    ...     np.array([2.0]))
    (array([-inf]), array([inf]))
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "share": Interval(float, 0.0, 1.0, closed="right"),
        "min_neighbours": Interval(int, 1, None),
    }

    def __init__(self, alpha: float = 0.1, share: float = 0.1, min_neighbours: int = 50) -> None:
        self.alpha = alpha
        self.share = share
        self.min_neighbours = min_neighbours

    def fit(self, prediction: np.ndarray, y: np.ndarray) -> ConformalBands:
        """Learn the residual quantiles of every neighbourhood from held-out predictions.

        Every prediction and truth must be finite: a missing truth (NaN) has no residual,
        so drop such pairs first.
        """
        validate_params(self._parameter_constraints, vars(self), self)
        pred = np.asarray(prediction, dtype=float).reshape(-1)
        truth = np.asarray(y, dtype=float).reshape(-1)
        if len(pred) == 0 or len(pred) != len(truth):
            raise InvalidParameterError(
                f"ConformalBands needs as many truths as predictions, at least one. Got "
                f"{len(pred)} predictions and {len(truth)} truths."
            )
        for name, values in (("prediction", pred), ("truth", truth)):
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad):
                at = int(bad[0])
                raise InvalidParameterError(
                    f"ConformalBands.fit needs finite predictions and truths; {name} {at} is "
                    f"{values[at]} ({len(bad)} of {len(values)} not finite). Drop the pairs "
                    "without a value (e.g. keep = np.isfinite(pred) & np.isfinite(y)).",
                    field=name, value=float(values[at]))
        resid = truth - pred
        order = np.argsort(pred, kind="stable")
        self.pred_ = pred[order]
        resid = resid[order]
        n = len(pred)
        self.k_ = min(n, max(self.min_neighbours, math.ceil(self.share * n),
                             min_residuals(self.alpha)))
        starts = n - self.k_ + 1
        self.low_ = np.zeros(starts)
        self.high_ = np.zeros(starts)
        for s in range(starts):
            self.low_[s], self.high_[s] = self._quantiles(np.sort(resid[s:s + self.k_]))
        return self

    def _quantiles(self, r: np.ndarray) -> tuple[float, float]:
        """The conformal lower and upper residual of sorted ``r``; infinite where ``r``
        holds too few residuals for the ``(n + 1)`` finite-sample correction."""
        n = len(r)
        k_hi = _ceil((n + 1) * (1 - self.alpha / 2)) - 1
        k_lo = _floor((n + 1) * (self.alpha / 2)) - 1
        return (float(r[k_lo]) if k_lo >= 0 else -math.inf,
                float(r[k_hi]) if k_hi < n else math.inf)

    def interval(self, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds around ``prediction`` (``-inf`` / ``inf`` where the
        calibration held too few residuals for a finite bound)."""
        if not hasattr(self, "low_"):
            raise NotFittedError("This ConformalBands is not fitted yet; call fit(pred, y).")
        pred = np.asarray(prediction, dtype=float)
        # the middle of any run of equal calibration predictions (many sit at a RUL cap)
        rank = (np.searchsorted(self.pred_, pred, "left")
                + np.searchsorted(self.pred_, pred, "right")) // 2
        start = np.clip(rank - self.k_ // 2, 0, len(self.low_) - 1)
        return pred + self.low_[start], pred + self.high_[start]
