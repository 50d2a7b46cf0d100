"""Multivariate per-device detection: Hotelling T² against a running covariance.

Scores are in [0, 1]; high means anomalous. Each reading is a mapping of every metric of
one device; the detector keeps an exponentially weighted mean and covariance over all of
them, so it catches readings that break the *relationship* between metrics (pressure up
while flow is flat) even when each metric alone looks normal.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from scipy.special import betaincc

from edgewise.detect._mahalanobis_replay import replay
from edgewise.detect.base import Detector, readings
from edgewise.params import Interval, validate_params

__all__ = [
    "GUARD_RUN",
    "GUARD_SD",
    "Mahalanobis",
    "conditional_terms",
    "effective_count",
    "needed_count",
    "shrink_covariance",
    "t2_tail",
    "unit_deviation",
    "warm_count",
]

#: A metric of a device of ``d`` metrics is scored once the running estimate rests on
#: ``ROOM * d`` effective readings of it (:func:`effective_count`), or on ``WINDOW_SHARE`` of
#: the window where that is fewer (the default alpha's window of 399 readings: over 126
#: metrics), and never on fewer than ``LEAST_ROOM * d`` (:func:`needed_count`,
#: :func:`warm_count`). With barely more readings than metrics the covariance is near
#: singular and the tail so heavy that only a huge break scores.
ROOM = 3.0
LEAST_ROOM = 1.5
WINDOW_SHARE = 0.95
#: The most effective readings counted (:func:`effective_count`; reached only with alpha
#: under 2e-5): the tail there differs from the chi-squared one about as T² scaled by
#: ``1 - (d + 1) / 1e5`` would, and the C export's tail keeps its precision (its log-gamma
#: differences lose digits as the count grows).
MOST_EFFECTIVE = 1e5
#: A reading of a warm metric more than ``GUARD_SD`` of that metric's learned standard
#: deviations from its mean is scored but not learned (:meth:`Mahalanobis.learn_one`). By
#: Chebyshev's inequality such a reading has probability at most ``1 / GUARD_SD²`` (1e-10,
#: the tail the default score puts at 1) under any distribution of that variance, normal or
#: not. Real anomalies lie far nearer and are learned as before: the farthest in the NAB
#: corpus, a spike of ec2_network_in_5abac7, 6e3 deviations off (a guard at 100 held it
#: and a few others, and the detector's NAB standard score fell from 35.8 to 30.8). Learned
#: at weight ``alpha``, a reading ``r`` deviations off multiplies the metric's variance by
#: about ``1 + alpha r²``: a no-data sentinel of 1e150 in a metric of deviation 1 by 5e297,
#: the metric blind for some 1e5 readings. A metric that has not varied yet (variance 0)
#: learns any reading.
GUARD_SD = 1e5
#: The most readings in a row of one metric left out by :data:`GUARD_SD`: the next one is
#: learned as any other, so a genuine level shift (a range switched, a process restarted)
#: is learned ``GUARD_RUN`` readings late, while a glitch or a short burst of them is not.
GUARD_RUN = 10


def shrink_covariance(cov: np.ndarray, mean: np.ndarray, shrinkage: float) -> np.ndarray:
    """``cov`` shrunk towards its diagonal by ``shrinkage``, plus a ridge relative to each
    metric's own variance, ``1e-9 variance`` (``1e-9 mean²`` for a metric that has not
    varied, and 1e-300, so it is never 0).

    No part is absolute, so a metric read in small units keeps its scale beside one read
    in large units; none depends on the level of a metric that varies, so an offset
    (absolute pressure in Pa, about 101325 +- 1) does not hide it.

    >>> shrink_covariance(np.diag([4e-18, 9e6]), np.zeros(2), 0.1).diagonal() / [4e-18, 9e6]
    array([1., 1.])
    """
    diag = np.diag(cov)
    with np.errstate(over="ignore"):  # a metric whose first value was a sentinel (1.7e308):
        # inf, its row left out of every score until it starts again (Mahalanobis.learn_one)
        eps = 1e-9 * np.where(diag > 0, diag, mean * mean) + 1e-300
    return (1.0 - shrinkage) * cov + np.diag(shrinkage * diag + eps)


def effective_count(count: Any, alpha: float) -> np.ndarray:
    """The effective number of readings behind a running mean and covariance that learned
    ``count`` readings, the ``i``-th with weight ``max(alpha, 1/i)``: Kish's ``1 / sum(w²)``
    of the readings' final weights ``w``, at most :data:`MOST_EFFECTIVE`.

    Up to ``1/alpha`` readings the weights are equal and it is ``count``; past it each step
    gives ``sum(w²) <- (1 - alpha)² sum(w²) + alpha²``, which tends to ``alpha / (2 - alpha)``:
    the effective count tends to ``(2 - alpha) / alpha`` (399 at the default 0.005). With
    that count the running mean's variance is ``S / n`` and the covariance's expectation
    ``(1 - 1/n) S``, as for ``n`` equally weighted readings.

    >>> effective_count(np.array([10.0, 200.0, 300.0, 1e5]), 0.005).round(1).tolist()
    [10.0, 200.0, 292.3, 399.0]
    """
    c = np.asarray(count, dtype=float)
    m = 1.0 / alpha  # the count from which the weight is alpha
    floor = alpha / (2.0 - alpha)
    with np.errstate(under="ignore"):
        sq = floor + (alpha - floor) * (1.0 - alpha) ** (2.0 * np.maximum(c - m, 0.0))
    return np.minimum(np.where(c <= m, c, 1.0 / sq), MOST_EFFECTIVE)


def needed_count(dof: Any, alpha: float) -> np.ndarray:
    """The effective readings (:func:`effective_count`) a reading of ``dof`` metrics is
    scored from: ``max(LEAST_ROOM d, min(ROOM d, WINDOW_SHARE window))``, the window being
    the most there can be, ``effective_count(inf)`` (399 at alpha 0.005).

    >>> needed_count(np.array([8, 100, 133, 200, 256, 300]), 0.005).round(2).tolist()
    [24.0, 300.0, 379.05, 379.05, 384.0, 450.0]
    """
    d = np.asarray(dof, dtype=float)
    window = float(effective_count(np.inf, alpha))
    return np.maximum(LEAST_ROOM * d, np.minimum(ROOM * d, WINDOW_SHARE * window))


@functools.lru_cache(maxsize=256)
def warm_count(metrics: int, alpha: float, warmup: int) -> float:
    """The fewest readings of its own a metric of a device tracking ``metrics`` metrics is
    scored after: ``warmup``, or more, the fewest whose :func:`effective_count` reaches
    :func:`needed_count` for ``metrics``; inf where none does (the window is too short for
    that many metrics: over 266 at alpha 0.005).

    >>> [warm_count(d, 0.005, 50) for d in (8, 30, 120, 256, 300)]
    [50.0, 90.0, 422.0, 523.0, inf]
    """
    need = float(needed_count(metrics, alpha))
    if need >= float(effective_count(np.inf, alpha)):
        return math.inf
    m, floor = 1.0 / alpha, alpha / (2.0 - alpha)
    if need <= m:
        c = math.ceil(need)
    else:  # effective_count solved for the count, then stepped to the exact whole one
        c = math.ceil(m + math.log((1.0 / need - floor) / (alpha - floor))
                      / (2.0 * math.log1p(-alpha)))
    while c > 1 and effective_count(c - 1, alpha) >= need:
        c -= 1
    while effective_count(c, alpha) < need:
        c += 1
    return float(max(warmup, c))


def t2_tail(t2: Any, dof: Any, n: Any) -> np.ndarray:
    """The tail probability of ``T²`` of a new reading of ``dof`` metrics against a mean and
    (divide-by-``n``) covariance estimated from ``n`` readings: the predictive Hotelling
    distribution, ``T² (n - d) / ((n + 1) d) ~ F(d, n - d)``, written as the regularised
    incomplete beta ``1 - I_y(d/2, (n - d)/2)`` with ``y = T² / (n + 1 + T²)``. It tends to
    the chi-squared tail with ``d`` degrees of freedom as ``n`` grows; with ``n`` near ``d``
    it is far heavier (a covariance from few readings underrates the spread of a new one).
    ``n`` must exceed ``dof``.

    >>> from scipy.special import gammaincc
    >>> round(float(t2_tail(60.0, 8, 399.0) / gammaincc(4, 30.0)), 1)  # 8 metrics, 399 readings
    9.2
    >>> round(float(t2_tail(60.0, 8, 1e5) / gammaincc(4, 30.0)), 2)  # 100,000 readings
    1.01
    """
    t2 = np.asarray(t2, dtype=float)
    n = np.asarray(n, dtype=float)
    dof = np.asarray(dof, dtype=float)
    with np.errstate(invalid="ignore"):
        y = np.where(np.isposinf(t2), 1.0, t2 / (n + 1.0 + t2))
        return betaincc(dof / 2.0, (n - dof) / 2.0, y)


class Mahalanobis(Detector):
    """Hotelling T² of a reading under a shrunk running covariance, with attribution.

    ``T² = z' S⁻¹ z`` where ``z`` is the reading minus the running mean and ``S`` the
    running covariance shrunk towards its diagonal. Its tail probability ``p`` gives the
    score ``-log10(p) / tail_digits`` (1 at ``p <= 10**-tail_digits``). The mean and
    covariance are estimated, from about ``(2 - alpha) / alpha`` readings (399 at the
    default) or from fewer while warming up, so ``p`` is the predictive Hotelling tail
    (:func:`t2_tail`, an F distribution) with the effective number of readings
    (:func:`effective_count`) of the least read metric scored, not the chi-squared one,
    which holds only for a known covariance: with 120 independent metrics and a 399-reading
    window the chi-squared scored 0.55 % of normal readings 0.9 or more (p <= 1e-9).

    :meth:`explain_one` gives each metric's share (summing to 1) of the conditional
    residuals ``(S⁻¹ z)_j² / (S⁻¹)_jj``: how far the metric misses what the others predict
    for it. Unlike the split of ``T²`` into ``z_j (S⁻¹ z)_j``, it names a sensor frozen at
    its mean while its partners move.

    Metrics may appear and disappear: a new metric gets its own row and column (its first
    value is its mean). A reading is scored on the metrics it holds: a missing (or NaN/inf)
    metric is left out, so ``T²`` is that of the metrics read under their own marginal
    distribution (their block of ``S``), with one degree of freedom per metric read. (Imputing
    it at its mean made its correlated partners look as if they broke the relationship.) A
    reading of no (warm) metric scores 0. Learning updates only what was read, each metric
    with weight ``a_i = max(alpha, 1/count)`` from its own count of readings (``counts_``): its
    mean, and the covariance as ``M S M + u u'`` with ``M = diag(sqrt(1 - a_i))`` and
    ``u_i = sqrt(a_i (1 - a_i)) d_i`` (``a_i = 0`` for a metric not read), which keeps the
    covariance positive semi-definite; so a metric read less often, or offline for a while,
    keeps its variance. (With every metric in every reading this is the usual
    ``(1 - a)(S + a d d')``.) A warm metric read more than :data:`GUARD_SD` (1e5) of its
    deviations off (a glitch such as 1e150) is scored, but the reading is not learned, up to
    :data:`GUARD_RUN` readings of it in a row (:meth:`learn_one`). A metric with fewer than
    ``warmup`` readings of its own (one
    added late) is left out of the score and of :meth:`explain_one` until it has them, or
    more on a device of many metrics: enough for a covariance of that many
    (:func:`warm_count`: 3 effective readings per metric tracked, or 95 % of the window where
    it holds fewer, never under 1.5 per metric; 90 readings for 30 metrics). At
    most ``max_metrics`` metrics are tracked (bounded memory); later ones are ignored.

    When to use: several correlated metrics of one device. When not: one metric (use
    :class:`~edgewise.detect.context_likelihood.ContextLikelihood`), or strongly
    non-Gaussian, multimodal operation (consider half-space trees).

    Parameters
    ----------
    alpha
        Weight of the newest reading in the running mean and covariance, below 1 (at 1 the
        covariance would only ever hold the newest reading: always 0).
    shrinkage
        Share of the covariance replaced by its diagonal (0: none, 1: metrics independent).
    warmup
        Readings learned before any non-zero score (of the device, and of a metric before
        it is scored); more for a metric of a device of over ``warmup / 3`` metrics
        (:func:`warm_count`).
    tail_digits
        Tail probability ``10**-tail_digits`` maps to score 1.
    max_metrics
        Most metrics tracked.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> det = Mahalanobis()
    >>> for _ in range(500):
    ...     a = rng.normal()
    ...     det.learn_one({"flow": a, "pressure": 2 * a + 0.1 * rng.normal()})
    >>> det.score_one({"flow": 1.0, "pressure": 2.0}) < 0.1      # consistent pair
    True
    >>> det.score_one({"flow": 1.0, "pressure": -2.0}) > 0.9     # broken relationship
    True
    >>> shares = det.explain_one({"flow": 0.0, "pressure": 3.0})
    >>> max(shares, key=shares.get)
    'pressure'
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "shrinkage": Interval(float, 0.0, 1.0),
        "warmup": Interval(int, 1, None),
        "tail_digits": Interval(float, 0.0, None, closed="neither"),
        "max_metrics": Interval(int, 1, 4096),
    }

    def __init__(
        self,
        alpha: float = 0.005,
        shrinkage: float = 0.01,
        warmup: int = 50,
        tail_digits: float = 10.0,
        max_metrics: int = 256,
    ) -> None:
        validate_params(
            self._constraints,
            {
                "alpha": alpha,
                "shrinkage": shrinkage,
                "warmup": warmup,
                "tail_digits": tail_digits,
                "max_metrics": max_metrics,
            },
            self,
        )
        self.alpha = alpha
        self.shrinkage = shrinkage
        self.warmup = warmup
        self.tail_digits = tail_digits
        self.max_metrics = max_metrics
        self.metrics_: dict[str, int] = {}
        self.n_ = 0
        self.mean_ = np.zeros(0)
        self.cov_ = np.zeros((0, 0))
        #: readings learned of each metric
        self.counts_ = np.zeros(0)
        #: each metric's readings in a row left out by the guard (:data:`GUARD_SD`)
        self.refused_ = np.zeros(0)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickle; one saved before per-metric counts takes every count as
        ``n_`` (every metric read in every row: the behaviour it was saved with), one saved
        before the guard (:data:`GUARD_SD`) no reading left out by it."""
        if "counts_" not in state:
            state["counts_"] = np.full(len(state["metrics_"]), float(state["n_"]))
        if "refused_" not in state:
            state["refused_"] = np.zeros(len(state["metrics_"]))
        self.__dict__.update(state)

    @classmethod
    def _unit_test_params(cls) -> list[dict[str, Any]]:
        return [{"warmup": 10}, {"warmup": 5, "shrinkage": 1.0, "max_metrics": 3}]

    # -- internals ---------------------------------------------------------------------
    def _vector(self, x: Mapping[str, float], grow: bool) -> np.ndarray:
        """The reading as a vector over known metrics; missing values at their mean."""
        if grow:
            for k, v in x.items():
                room = len(self.metrics_) < self.max_metrics
                if math.isfinite(v) and k not in self.metrics_ and room:
                    i = len(self.metrics_)
                    self.metrics_[k] = i
                    self.mean_ = np.append(self.mean_, float(v))
                    cov = np.zeros((i + 1, i + 1))
                    cov[:i, :i] = self.cov_
                    self.cov_ = cov
                    self.counts_ = np.append(self.counts_, 0.0)
                    self.refused_ = np.append(self.refused_, 0.0)
        z = self.mean_.copy()
        for k, v in x.items():
            j = self.metrics_.get(k)
            if j is not None and math.isfinite(v):
                z[j] = float(v)
        return z

    def _read(self, x: Mapping[str, float]) -> np.ndarray:
        """Which known metrics the reading holds a finite value of."""
        read = np.zeros(len(self.metrics_), dtype=bool)
        for k, v in x.items():
            j = self.metrics_.get(k)
            if j is not None and math.isfinite(v):
                read[j] = True
        return read

    def _warm(self) -> np.ndarray:
        """Which metrics have :func:`warm_count` readings of their own, ``warmup`` on a
        device of up to ``warmup / 3`` metrics (the others are not scored)."""
        return self.counts_ >= self._warm_count()

    def _warm_count(self) -> float:
        """:func:`warm_count` for the metrics tracked now."""
        return warm_count(len(self.metrics_), float(self.alpha), int(self.warmup))

    def _used(self, x: Mapping[str, float]) -> np.ndarray:
        """Which metrics the reading is scored on: warm (:meth:`_warm`) and read (:meth:`_read`)."""
        return self._warm() & self._read(x)

    def shrunk_covariance(self) -> np.ndarray:
        """The running covariance, shrunk and ridged by :func:`shrink_covariance`."""
        return shrink_covariance(self.cov_, self.mean_, self.shrinkage)

    def _solve(self, z: np.ndarray, s: np.ndarray | None = None,
               used: np.ndarray | None = None,
               unit: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """``(z - mean, S⁻¹ (z - mean))`` with the shrunk covariance over the metrics ``used``
        (:meth:`_used`; by default the warm ones, as for a reading of every metric); any other
        is left out: its deviation, row and column are 0 and its diagonal 1 (its terms 0), so
        ``dz' S⁻¹ dz`` is the marginal T² of the metrics used.

        With ``unit`` (for shares, which do not depend on the deviation's scale), where a
        product ``dz_i (S⁻¹ dz)_i`` is not finite (a reading near 1e308, a sentinel) ``dz`` is
        first scaled by :func:`unit_deviation`, so what overflows is not whichever partner's
        entry happens to pass 1.8e308 first; a deviation whose products are finite is used as
        it is.

        ``s`` is :meth:`shrunk_covariance` where the caller has built it already; it is
        overwritten."""
        with np.errstate(over="ignore"):  # a reading near 1e308 from the mean: inf, scored 1
            dz = z - self.mean_
        if s is None:
            s = self.shrunk_covariance()
        out = ~(self._warm() if used is None else used)
        dz[out] = 0.0  # the marginal T² of the metrics used
        _leave_out(s, out)
        w = _lin_solve(s, dz)
        if unit:
            with np.errstate(over="ignore", invalid="ignore"):
                risky = not np.isfinite(dz * w).all()
            if risky:
                dz = unit_deviation(dz)
                w = _lin_solve(s, dz)
        return dz, w

    # -- API ---------------------------------------------------------------------------
    def score_one(self, x: Mapping[str, float]) -> float:
        """Score one device reading in [0, 1] without learning it: the marginal T² of the
        metrics it holds (and that are warm), 0 when it holds none."""
        used = self._used(x)
        dof = int(used.sum())  # one degree per metric scored
        if self.n_ < self.warmup or not dof:
            return 0.0
        least = float(self.counts_[used].min())  # the effective readings behind them all
        dz, w = self._solve(self._vector(x, grow=False), used=used)
        with np.errstate(over="ignore", invalid="ignore"):  # a metric constant at 0 moved
            t2 = float(dz @ w)
        # T² = w' S w >= (smallest eigenvalue of S) |w|², so an overflowed w means a T² past
        # any float; the dot of such terms may come out inf, NaN or -inf (inf - inf in
        # whatever order the BLAS sums them: y at 1e307 beside its correlated x gave -inf,
        # clamped to 0, and the reading scored 0)
        if not (math.isfinite(t2) and np.isfinite(w).all()):
            return 1.0
        return self._tail_one(t2, float(dof), least)

    def _tail_one(self, t2: float, dof: float, least: float) -> float:
        """:meth:`_tails` of one finite ``T²``, on floats: the same formulas without the
        one-element arrays, whose overhead made T² scoring 70 % slower per reading than
        the chi-squared tail it replaced (the gateway scores a device's rows one by one).

        >>> det = Mahalanobis()
        >>> det._tail_one(30.0, 4.0, 600.0) == float(det._tails(
        ...     np.array([30.0]), np.array([4.0]), np.array([600.0]))[0])
        True
        """
        alpha = float(self.alpha)
        m = 1.0 / alpha  # effective_count, on a float (an underflowed power is 0.0 here)
        floor = alpha / (2.0 - alpha)
        n = least if least <= m else 1.0 / (
            floor + (alpha - floor) * (1.0 - alpha) ** (2.0 * (least - m)))
        n = min(n, MOST_EFFECTIVE)
        t = max(t2, 0.0)
        p = float(betaincc(dof / 2.0, (n - dof) / 2.0, t / (n + 1.0 + t)))
        return min(max(-math.log10(p + 1e-300) / self.tail_digits, 0.0), 1.0) + 0.0

    def score_explain_many(
        self, X: np.ndarray, columns: Sequence[str] | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """:meth:`score_many` plus each row's metric with the largest share in
        :meth:`explain_one` (``""`` where none has a share): the loop of ``score_one``,
        ``explain_one`` and ``learn_one``, compiled. Each row's masked correlation is
        factored once (one Cholesky) for its T² and the conditional residuals' shares,
        then the row is learned exactly as :meth:`learn_one` learns it; scores and shares
        equal the loop's but for rounding (1e-12). A row that adds a metric, or whose
        deviation overflows, or whose correlation is near singular (where
        :meth:`explain_one` takes a pseudo-inverse) goes through the loop itself.

        >>> X = np.r_[np.zeros((30, 2)) + np.arange(30)[:, None] % 3, [[1.0, 9.0]]]
        >>> scores, top = Mahalanobis(warmup=10).score_explain_many(X, ["flow", "temp"])
        >>> bool(scores[-1] > 0.9), top[-1], top[0]
        (True, 'temp', '')
        """
        X, names = readings(X, columns)
        if len(set(names)) < len(names):  # a name twice: a reading keeps the last one
            return super().score_explain_many(X, names)
        n = len(X)
        scores = np.zeros(n)
        top = [""] * n
        finite = np.isfinite(X)
        any_finite = finite.any(axis=1)
        i, known, stop = 0, -1, n
        while i < n:
            if len(self.metrics_) != known:  # the metrics and the next row to add one
                known = len(self.metrics_)
                new = [j for j, c in enumerate(names) if c not in self.metrics_]
                hits = np.flatnonzero(finite[i:, new].any(axis=1)) if new else []
                room = len(self.metrics_) < self.max_metrics
                stop = i + int(hits[0]) if room and len(hits) else n
                cols = np.array([names.index(k) if k in names else -1 for k in self.metrics_],
                                dtype=np.int64)
            if known and i < stop:
                i += self._compiled(X[i:stop], cols, any_finite[i:stop], scores[i:stop],
                                    top, i)
                if i == n:
                    break
            # the row adds a metric, or the kernel left it: the loop's own step
            one, name = super().score_explain_many(X[i:i + 1], names)
            scores[i], top[i] = one[0], name[0]
            i += 1
        return scores, top

    def _compiled(self, X: np.ndarray, cols: np.ndarray, any_finite: np.ndarray,
                  scores: np.ndarray, top: list[str], first: int) -> int:
        """:func:`~edgewise.detect._mahalanobis_replay.replay` over the rows of ``X`` (its
        metric ``m`` in column ``cols[m]``, -1 for none), learning them: their scores into
        ``scores`` and the most explaining metric into ``top`` from index ``first``; returns
        how many rows it did."""
        n = len(X)
        t2, dof, least, share = np.full(n, np.nan), np.zeros(n), np.zeros(n), np.zeros(n)
        best = np.full(n, -1, dtype=np.int64)
        st = np.array([float(self.n_)])
        p = np.array([self.alpha, self.shrinkage, self.warmup, self._warm_count(), GUARD_SD,
                      GUARD_RUN])
        # learn_one assigns new arrays: the kernel updates copies in place
        mean, cov, counts = self.mean_.copy(), self.cov_.copy(), self.counts_.copy()
        refused = self.refused_.copy()
        done = replay(X, cols, any_finite, mean, cov, counts, refused, st, p, t2, dof, least,
                      best, share)
        self.mean_, self.cov_, self.counts_, self.n_ = mean, cov, counts, int(st[0])
        self.refused_ = refused
        scores[:done] = self._tails(t2[:done], dof[:done], least[:done])
        metrics = list(self.metrics_)
        for r in np.flatnonzero(best[:done] >= 0):
            top[first + r] = metrics[best[r]]
        return done

    def _tails(self, t2: np.ndarray, dof: np.ndarray, least: np.ndarray) -> np.ndarray:
        """:meth:`score_one`'s score of each ``T²`` with ``dof`` degrees of freedom, the
        least read metric of which has ``least`` readings: ``-log10(p) / tail_digits`` of the
        predictive tail :func:`t2_tail` with :func:`effective_count` readings (which warm
        metrics have enough of for ``dof``); 0 where ``t2`` is NaN (a row not scored:
        warm-up, or no metric read and warm), 1 where ``t2`` is infinite."""
        out = np.zeros(len(t2))
        ok = ~np.isnan(t2)
        t = np.maximum(t2[ok], 0.0)
        with np.errstate(divide="ignore"):
            pr = t2_tail(t, dof[ok], effective_count(least[ok], self.alpha))
            sc = np.minimum(np.maximum(-np.log10(pr + 1e-300) / self.tail_digits, 0.0), 1.0)
        out[ok] = np.where(np.isfinite(t), sc, 1.0) + 0.0
        return out

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Update the running mean and covariance with one device reading.

        A reading whose update would overflow them (a deviation near 1e154 or more: a
        sentinel such as 1e308) is not learned (:meth:`score_one` gives it 1), so it cannot
        leave an infinite covariance that scores every later reading 1. A metric seen for the
        first time is still registered at its value. Where the metric's own mean is the
        extreme one (its first value was a sentinel: every later update of it overflowed, it
        never warmed up and the device scored 0 for good) and it is not warm yet, it starts
        again from the reading instead, as the fast-stream gate's warm-up does
        (:mod:`edgewise.gateway.fast_streams`); the other metrics of the reading are learned.

        A warm metric read more than :data:`GUARD_SD` of its learned standard deviations
        from its mean (a glitch, a no-data sentinel such as 1e150 that does not overflow) is
        scored but not learned, the reading left out as an overflowing one is, up to
        :data:`GUARD_RUN` readings of it in a row (``refused_``); the next is learned, so a
        genuine level shift is learned that late. Learned, two readings of 1e150 in a
        pressure of deviation 0.1 took its variance to 9e296, and a break of 100 deviations
        a few hundred readings later scored 4e-5.

        Only what was read is learned, each metric with weight ``max(alpha, 1/n_i)`` (``n_i``
        its readings, this one included); see the class docstring.
        """
        if not any(math.isfinite(v) for v in x.values()):
            return
        z = self._vector(x, grow=True)
        read = self._read(x)
        held = self._held(z, read)
        if held.any():
            self.refused_ = self.refused_ + held
            return
        mean, cov = self._update(z, read)
        counts = self.counts_ + read
        if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
            # the metrics that overflow: restarted where their mean, not the reading, is the
            # extreme and they are not warm; else the reading is not learned
            bad = read & ~(np.isfinite(mean) & np.isfinite(np.diag(cov)))
            again = bad & (self.counts_ < self._warm_count()) & (np.abs(z) < np.abs(self.mean_))
            if not bad.any() or (bad & ~again).any():
                return
            mean, cov = self._update(z, read & ~again)
            if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
                return
            mean[again] = z[again]
            cov[again, :] = 0.0
            cov[:, again] = 0.0
            counts[again] = 1.0
        self.n_, self.mean_, self.cov_, self.counts_ = self.n_ + 1, mean, cov, counts
        self.refused_ = np.where(read, 0.0, self.refused_)

    def _held(self, z: np.ndarray, read: np.ndarray) -> np.ndarray:
        """The metrics of ``z`` (those ``read``) for which :meth:`learn_one` leaves the reading
        out: warm, varied (variance above 0), more than :data:`GUARD_SD` standard deviations
        from their mean, and left out fewer than :data:`GUARD_RUN` times in a row so far."""
        var = np.diag(self.cov_)
        with np.errstate(over="ignore", invalid="ignore"):  # a deviation near 1e308: inf
            far = np.abs(z - self.mean_) > GUARD_SD * np.sqrt(var)
        return read & far & (var > 0.0) & self._warm() & (self.refused_ < GUARD_RUN)

    def _update(self, z: np.ndarray, read: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mean and covariance after learning the metrics ``read`` of ``z`` (may be
        non-finite where the update overflows)."""
        counts = self.counts_ + read
        a = np.where(read, np.maximum(self.alpha, 1.0 / np.maximum(counts, 1.0)), 0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            d = np.where(read, z - self.mean_, 0.0)
            mean = self.mean_ + a * d
            if read.all() and (a == a[0]).all():  # every metric, one weight: as it always was
                cov = (1.0 - a[0]) * (self.cov_ + a[0] * np.outer(d, d))
            else:  # M S M + u u': positive semi-definite, a metric not read keeps its variance
                m = np.sqrt(1.0 - a)
                u = np.sqrt(a * (1.0 - a)) * d
                cov = m[:, None] * self.cov_ * m[None, :] + np.outer(u, u)
        return mean, cov

    def explain_one(self, x: Mapping[str, float]) -> dict[str, float]:
        """Each metric's share of the reading's anomaly (non-negative, sums to 1 when any).

        The share is of ``(S⁻¹ z)_i² / (S⁻¹)_ii``: how far the metric misses what the other
        metrics predict for it (the drop in T² were it at that prediction), so a sensor
        stuck at its mean while its partners move leads, where its T² term is 0. As in
        :meth:`score_one`, only the metrics read (and warm) count: ``S`` is their block, and
        a metric missing from the reading gets share 0.
        """
        if not self.metrics_:
            return {}
        s = self.shrunk_covariance()  # (S⁻¹)_ii from the correlation: alike in any units
        sd = np.sqrt(np.diag(s))
        with np.errstate(invalid="ignore"):  # inf / inf: a metric not warm (shrink_covariance)
            corr = s / np.outer(sd, sd)
        used = self._used(x)
        _, w = self._solve(self._vector(x, grow=False), s, used, unit=True)  # s: not read after
        _leave_out(corr, ~used)  # as in _solve: the precision of the metrics used
        # a metric not used has w 0 and term 0 (1 keeps an infinite sd from making it NaN)
        pii = np.where(used, np.diag(np.linalg.pinv(corr, hermitian=True)) / (sd * sd), 1.0)
        return self._shares(conditional_terms(w, pii))

    def t2_shares(self, x: Mapping[str, float]) -> dict[str, float]:
        """Each metric's share of the reading's T² itself (non-negative, sums to 1 when
        any): the positive part of its term ``z_i (S⁻¹ z)_i``, over the metrics read and
        warm, as :meth:`score_one` scores them.

        Where :meth:`explain_one` ranks culprits (which sensor breaks from its partners),
        this says what the score rests on: an operating change that moves every sensor
        together spreads it over all of them. The gateway's cross-sensor gate weighs a
        device-wide alarm by it (:meth:`~edgewise.gateway.cross_sensor.CrossSensorGate.
        cap_device_score`).

        >>> det = Mahalanobis(warmup=1)   # 2 metrics: scored from 6 readings (warm_count)
        >>> for a, b in ((0.0, 1.0), (2.0, 0.0), (1.0, 2.0), (0.5, 0.5), (1.5, 1.0), (0.0, 0.0)):
        ...     det.learn_one({"a": a, "b": b})
        >>> sorted(det.t2_shares({"a": 9.0, "b": 1.0}).items())[0][1] > 0.9
        True
        """
        if not self.metrics_:
            return {}
        dz, w = self._solve(self._vector(x, grow=False), used=self._used(x), unit=True)
        with np.errstate(over="ignore", invalid="ignore"):
            terms = np.maximum(dz * w, 0.0)
        if np.isinf(terms).any():  # a sensor of zero variance that moved: it alone
            terms = np.isinf(terms).astype(float)
        return self._shares(terms)

    def _shares(self, terms: np.ndarray) -> dict[str, float]:
        """``terms`` (one per metric, non-negative) as shares of their sum, by metric name;
        all 0 when the sum is 0 or not finite."""
        total = float(terms.sum())
        if total <= 0.0 or not math.isfinite(total):
            return {k: 0.0 for k in self.metrics_}
        return {k: float(terms[i] / total) for k, i in self.metrics_.items()}


def _lin_solve(s: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``s⁻¹ b`` for a covariance ``s``, solved in its correlation's units (``D⁻¹ c⁻¹ D⁻¹ b``,
    ``D`` the standard deviations), as the compiled replay solves it; a least-squares
    solution where ``s`` is singular.

    Solved on ``s`` itself, variances far apart (a metric that learned a reading of 1e150:
    about 1e299, beside one of 1) lost digits: below, two metrics of correlation 3e-17 one
    0.32 sd off, the other 1, gave T² 1.36, not 1.1; a reading of the detector scored 0.053
    where the compiled replay (:meth:`Mahalanobis.score_explain_many`) scored it 0.025, and
    the shares named the wrong sensor. Where a standard deviation is not finite (a warm
    metric constant beyond 1e154, whose ridge overflows), ``s`` is solved as it is.

    >>> s, b = np.array([[1.0, 1e133], [1e133, 1e299]]), np.array([1.0, 1e149])
    >>> round(float(b @ _lin_solve(s, b)), 12)
    1.1
    """
    sd = np.sqrt(np.diag(s))
    scaled = bool(np.isfinite(sd).all() and (sd > 0).all())
    # overflow as the solve on s overflows (a reading near 1e308: inf, scored 1)
    with np.errstate(over="ignore", invalid="ignore"):
        if scaled:
            s, b = s / np.outer(sd, sd), b / sd
        try:
            w = np.linalg.solve(s, b)
        except np.linalg.LinAlgError:
            w = np.linalg.lstsq(s, b, rcond=None)[0]
        return w / sd if scaled else w


def unit_deviation(d: np.ndarray) -> np.ndarray:
    """``d`` scaled by a power of two so its largest ``|d_i|`` lies in [0.5, 1): exactly
    ``d / 2**e``, so every product with it is that of ``d`` over ``2**e`` (rounded alike)
    until it would have overflowed. An infinite ``d_i`` (a difference that overflowed) is
    infinitely larger than the rest: ``d`` becomes its sign there, 0 elsewhere. A ``d``
    that is 0 or holds a NaN is returned as it is.

    Shares of a quadratic form (:func:`conditional_terms`, a T² split) do not depend on
    the deviation's scale; the overflow of a sentinel near 1e308 does, and it strikes
    first whichever entry of ``M d`` has the largest coefficient, often a correlated
    partner of the sensor that moved.

    >>> unit_deviation(np.array([3.0, -1.0, 0.0]) * 2.0**1000).tolist()
    [0.75, -0.25, 0.0]
    >>> unit_deviation(np.array([-np.inf, 1e300])).tolist()
    [-1.0, 0.0]
    """
    d = np.asarray(d, dtype=float)
    a = np.abs(d)
    if np.isnan(a).any():
        return d
    if np.isinf(a).any():
        return np.where(np.isinf(a), np.sign(d), 0.0)
    top = float(a.max(initial=0.0))
    if top == 0.0:
        return d
    return np.ldexp(d, -math.frexp(top)[1])


def _leave_out(m: np.ndarray, out: np.ndarray) -> None:
    """Leave the metrics ``out`` (a mask) out of the square matrix ``m`` in place: their
    rows and columns 0, their diagonal 1, so a solve or an inverse gives the marginal of the
    others (and 0 for them).

    >>> m = np.full((3, 3), 2.0); _leave_out(m, np.array([False, True, False])); m.tolist()
    [[2.0, 0.0, 2.0], [0.0, 1.0, 0.0], [2.0, 0.0, 2.0]]
    """
    m[out, :] = 0.0
    m[:, out] = 0.0
    m[out, out] = 1.0


def conditional_terms(w: np.ndarray, pii: np.ndarray) -> np.ndarray:
    """The terms ``w_i² / pii_i`` up to one common factor (all that shares need), with
    ``w = M d`` and ``pii`` the precision's diagonal: ``w`` is divided by its largest finite
    ``|w_i|`` first, so a deviation of 1e160 (whose ``w²`` overflows) is split as one of 1
    is, not equally between every sensor. An infinite ``w_i``, or a term that still
    overflows (a sensor with zero variance that moved: ``pii`` about 0), alone takes the
    blame, shared equally. (Where ``d`` is near 1e308, ``M d`` overflows first in whichever
    entry has the largest coefficient, not necessarily the sensor that moved: callers
    compute ``w`` from :func:`unit_deviation` of ``d`` there.)

    >>> conditional_terms(np.array([1e160, 1e150]), np.array([1.0, 1.0])).tolist()
    [1.0, 1e-20]
    >>> conditional_terms(np.array([np.inf, 2.0]), np.array([1.0, 1.0])).tolist()
    [1.0, 0.0]
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        a = np.abs(w)
        if np.isinf(a).any():
            return np.isinf(a).astype(float)
        top = float(np.max(a, initial=0.0, where=np.isfinite(a)))
        ws = w / top if top > 0.0 else w
        terms = np.maximum(ws * (ws / pii), 0.0)  # ws (ws / pii): ws² underflows later
    if np.isinf(terms).any():  # a sensor constant at 0 that moved: it alone drives it
        terms = np.isinf(terms).astype(float)
    return terms
