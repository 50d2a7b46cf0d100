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

A truth with a ceiling (a RUL capped at ``cap``; ``fit(..., cap=cap)``) cannot miss a lower
bound at or below the cap when it sits at the cap, so the lower bounds are calibrated on
the residuals of truths *below* the cap alone (their neighbourhoods by rank among those):
``P(truth < low) <= alpha/2`` among them, whatever share of the scored units sit at the cap.
With every residual, a calibration set crowded with capped truths predicted at the cap
(healthy early life: truth - prediction = 0) pinned the lower bound of a prediction at the
cap to the cap itself (or nearly), a zero-width interval, and a fleet with fewer healthy
units (test histories cut before failure) missed: C-MAPSS FD001 test units predicted at the
cap were covered 11 times in 21 (seeds 0-4; 21 in 21 with this). The upper bounds still
use every residual.

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
    >>> min_residuals(1e-8)  # found at once (counting up to it took 32 s)
    199999999
    """
    if not (isinstance(alpha, int | float | np.integer | np.floating)
            and not isinstance(alpha, bool) and 0.0 < alpha < 1.0
            and math.isfinite(2.0 / alpha)):
        raise InvalidParameterError(
            f"min_residuals needs alpha as a number between 0 and 1 (exclusive; at least "
            f"1e-307). Got {alpha!r}.", field="alpha", value=alpha)
    def ok(n: int) -> bool:
        return _ceil((n + 1) * (1 - alpha / 2)) <= n and _floor((n + 1) * (alpha / 2)) >= 1

    # both hold from (n + 1) alpha / 2 >= 1 on (less the 1e-9 the rounding allows): start
    # there and step to the first n that passes, as a count from 1 would (it took 2/alpha
    # steps: 32 s for alpha=1e-8)
    n = max(1, math.ceil(2 * (1 - 1e-9) / alpha) - 1)
    while n > 1 and ok(n - 1):
        n -= 1
    while not ok(n):
        n += 1
    return n


def _window_order_stats(values: np.ndarray, k: int,
                        orders: list[int]) -> list[np.ndarray]:
    """For each order ``j`` in ``orders``, the ``j``-th smallest (from 0) of every window of
    ``k`` consecutive ``values``: ``out[i][s] == np.sort(values[s:s + k])[orders[i]]``, in
    O(n log n) for ``n`` values (sorting each window was O(n k log k), and ``k`` is a share
    of ``n``: 25 s for 100,000 residuals).

    A wavelet matrix over the values' ranks (ties broken by position, so ranks are a total
    order that agrees with the values): one pass per bit of the rank, each a stable split of
    the ranks by that bit with a running count of the zeros; every window then descends the
    bits at once (vectorised), keeping ``j`` and its bounds in the split order. The result is
    taken from the values themselves, so it equals the sorted window's element exactly.

    >>> v = np.array([5.0, 1.0, 4.0, 1.0, 3.0])
    >>> [o.tolist() for o in _window_order_stats(v, 3, [0, 2])]
    [[1.0, 1.0, 1.0], [5.0, 4.0, 4.0]]
    """
    n = len(values)
    order = np.argsort(values, kind="stable")
    by_rank = values[order]
    cur = np.empty(n, dtype=np.int64)
    cur[order] = np.arange(n)
    n_bits = max(1, int(n - 1).bit_length())
    levels = []  # per bit, high to low: zeros before each position, and zeros in all
    for b in range(n_bits - 1, -1, -1):
        one = ((cur >> b) & 1).astype(bool)
        zeros = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(~one, out=zeros[1:])
        levels.append((b, zeros, int(zeros[-1])))
        cur = np.concatenate((cur[~one], cur[one]))  # stable split by the bit
    out = []
    first = np.arange(n - k + 1, dtype=np.int64)
    for j in orders:
        lo, hi = first, first + k
        want = np.full(len(first), j, dtype=np.int64)
        rank = np.zeros(len(first), dtype=np.int64)
        for b, zeros, n_zeros in levels:
            zl, zh = zeros[lo], zeros[hi]
            here = zh - zl  # zeros of this bit in the window
            up = want >= here  # the j-th smallest has this bit set
            want = np.where(up, want - here, want)
            lo = np.where(up, n_zeros + lo - zl, zl)
            hi = np.where(up, n_zeros + hi - zh, zh)
            rank |= up.astype(np.int64) << b
        out.append(by_rank[rank])
    return out


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

    def fit(self, prediction: np.ndarray, y: np.ndarray,
            cap: float | None = None) -> ConformalBands:
        """Learn the residual quantiles of every neighbourhood from held-out predictions.

        Every prediction and truth must be finite: a missing truth (NaN) has no residual,
        so drop such pairs first. ``cap``, when given, is the ceiling of the truth (a RUL
        capped there): the lower bounds then come from the pairs whose truth is below it
        only (a truth at the cap is above every lower bound at or below the cap), so
        capped truths predicted at the cap (residual 0) cannot pin a lower bound to its
        prediction. With no truth below the cap, or fewer than :func:`min_residuals`, the
        lower bound is ``-inf``.

        >>> pred = np.r_[np.full(60, 10.0), np.linspace(0.0, 10.0, 40)]
        >>> truth = np.r_[np.full(60, 10.0), np.linspace(0.0, 10.0, 40) - 2.0]
        >>> ConformalBands().fit(pred, truth).interval(np.array([10.0]))[0].tolist()
        [10.0]
        >>> ConformalBands().fit(pred, truth, cap=10.0).interval(np.array([10.0]))[0].tolist()
        [8.0]
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
        if cap is not None and not (isinstance(cap, int | float | np.integer | np.floating)
                                    and not isinstance(cap, bool) and math.isfinite(cap)):
            raise InvalidParameterError(
                f"ConformalBands.fit needs cap as a finite number (the truth's ceiling) or "
                f"None. Got {cap!r}.", field="cap", value=cap)
        self.pred_, self.k_, self.low_, self.high_ = self._bounds(pred, truth)
        self.cap_ = None if cap is None else float(cap)
        # without a cap the lower bounds share the upper ones' neighbours (a refit must not
        # keep those of an earlier fit with a cap: they index another calibration set)
        self.pred_low_, self.k_low_ = self.pred_, self.k_
        if self.cap_ is not None:
            below = truth < self.cap_ - 1e-9 * max(1.0, abs(self.cap_))
            self.pred_low_, self.k_low_, self.low_, _ = self._bounds(pred[below], truth[below])
        return self

    def _bounds(self, pred: np.ndarray, truth: np.ndarray
                ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """``(sorted predictions, k, lows, highs)``: the residual order statistics of
        every window of ``k`` neighbours in prediction order; infinite bounds where the
        residuals are too few (with no pairs: ``k`` 0 and one window, ``-inf`` / ``inf``)."""
        resid = truth - pred
        order = np.argsort(pred, kind="stable")
        resid = resid[order]
        n = len(pred)
        k = min(n, max(self.min_neighbours, math.ceil(self.share * n),
                       min_residuals(self.alpha)))
        if n == 0:
            return pred[order], 0, np.full(1, -math.inf), np.full(1, math.inf)
        # every neighbourhood holds k residuals: the same two order statistics of each
        k_hi = _ceil((k + 1) * (1 - self.alpha / 2)) - 1
        k_lo = _floor((k + 1) * (self.alpha / 2)) - 1
        starts = n - k + 1
        lows, highs = _window_order_stats(resid, k, [max(k_lo, 0), min(k_hi, k - 1)])
        # too few residuals for the (n + 1) finite-sample correction: an infinite bound
        return (pred[order], k, lows if k_lo >= 0 else np.full(starts, -math.inf),
                highs if k_hi < k else np.full(starts, math.inf))

    def interval(self, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds around ``prediction`` (``-inf`` / ``inf`` where the
        calibration held too few residuals for a finite bound)."""
        if not hasattr(self, "low_"):
            raise NotFittedError("This ConformalBands is not fitted yet; call fit(pred, y).")
        pred = np.asarray(prediction, dtype=float)
        # bands fitted before lower bounds had their own neighbours (no cap_) share them
        low_pred, low_k = getattr(self, "pred_low_", self.pred_), getattr(self, "k_low_", self.k_)
        return (pred + self.low_[_window(low_pred, low_k, len(self.low_), pred)],
                pred + self.high_[_window(self.pred_, self.k_, len(self.high_), pred)])


def _window(sorted_pred: np.ndarray, k: int, n_windows: int, pred: np.ndarray) -> np.ndarray:
    """The first calibration point of each prediction's window of ``k`` neighbours: the
    window centred on its rank (the middle of any run of equal calibration predictions,
    many of which sit at a RUL cap), moved inside the ``n_windows`` that exist."""
    rank = (np.searchsorted(sorted_pred, pred, "left")
            + np.searchsorted(sorted_pred, pred, "right")) // 2
    return np.clip(rank - k // 2, 0, n_windows - 1)
