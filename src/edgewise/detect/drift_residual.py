"""Multivariate per-device detection that learns normal from a training span, then tracks drift.

Built for industrial testbeds (pumps, valves) where a device's first readings are known
normal, faults are sustained (a valve stuck for minutes), and some metrics drift slowly
and harmlessly (temperatures warming up). Scores are in [0, 1]; high means anomalous.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numba as nb
import numpy as np

from edgewise.detect.base import DEFAULT_THRESHOLD, Detector, reading, readings
from edgewise.params import Interval, OneOf, validate_params

__all__ = [
    "ASSUMED_SPAN_ROWS",
    "MIN_SPAN_READINGS",
    "DriftResidual",
    "LongRunResidual",
    "PerMetricResidual",
    "long_run_factor",
]

#: Readings of a metric the training span must hold for the metric to be scored: one
#: reading gives no deviation (the others are left out, as metrics first seen later).
MIN_SPAN_READINGS = 2

#: Readings taken as the normal span when none is known (``train_rows`` left out).
ASSUMED_SPAN_ROWS = 400


# Floor of a metric's span deviation, and bound of a residual (in deviations): far from
# any real sensor's figures, they keep squares finite (a constant-0 metric that moves).
_SD_MIN = 1e-300
_R_MAX = 1e150

#: Least ``e / level`` that a fault beyond the cap can drive the smoothed score to, after
#: the level of an assumed span is widened (``cap`` where that is less): it still alarms.
_MIN_CAP_RATIO = 1.25


def _mean_sd(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and deviations of ``Z`` (NaN where missing), without overflow: each
    column is scaled by its largest magnitude first, so readings of 1e200 or 1e-200 are
    summarised as well as readings of 1."""
    big = np.nanmax(np.abs(Z), axis=0) if Z.size else np.ones(Z.shape[1])
    big = np.where(big > 0, big, 1.0)
    return np.nanmean(Z / big, axis=0) * big, np.nanstd(Z / big, axis=0) * big


@nb.njit(cache=True)
def _replay(Z, advance, base, sd, ema, prev, locked, held, recent, levels, bound, limit, st,  # type: ignore[no-untyped-def]  # pragma: no cover - jit
            p, out, drivers):
    """Score then learn each row of ``Z`` (trained metrics, NaN where missing): the one
    implementation of scoring and drift tracking after the span, for ``score_one``,
    ``learn_one`` and ``score_many`` alike.

    The score step is :meth:`DriftResidual._step`'s arithmetic (which the span and
    ``explain_one`` use), one metric at a time. ``advance[i]`` says whether row ``i`` is
    learned (it had any finite value); ``st`` holds ``(energy, level)``, ``p`` the
    parameters ``(alpha, gate, jump, patience, smooth, cap, per_metric)`` (``cap`` unused
    here: ``limit`` holds the caps), ``bound`` each metric's spike bound (``|r_j| /
    bound_j`` is the unsmoothed ratio), ``limit`` each metric's cap on the squares fed to
    the smoothing (:meth:`DriftResidual._limits`). The state arrays are updated in place;
    ``st[0]`` gets the new energy. ``drivers[i]`` (when it has a row per row of ``Z``) gets
    the metric with the largest share in :meth:`explain_one` before row ``i`` is learned
    (the first by index on a tie), -1 where no metric has a share or the row has no
    reading of a trained metric. Such a row scores 0; it is learned (as any row where
    ``advance``) or not exactly as before.
    """
    alpha, gate, jump, patience, smooth = p[0], p[1], p[2], int(p[3]), p[4]
    per_metric = p[6] > 0
    k = Z.shape[1]
    top_limit = limit[0] if k > 0 else math.inf  # pooled: one cap, the same for each metric
    energy, level = st[0], st[1]
    r = np.empty(k)
    ema_next = np.empty(k)
    for i in range(Z.shape[0]):
        # _step: residuals, smoothed squares, smoothed max square (or max per-metric ratio)
        top = 0.0
        spike = 0.0
        read = False  # any reading of a trained metric
        for j in range(k):
            zj = Z[i, j]
            read = read or not math.isnan(zj)
            rj = 0.0 if math.isnan(zj) else min(max((zj - base[j]) / sd[j], -_R_MAX), _R_MAX)
            r[j] = rj
            spike = max(spike, abs(rj) / bound[j])
            r2 = rj * rj
            # each metric's term capped as the energy caps it (what the drivers rank)
            ema_next[j] = ema[j] + smooth * (min(r2, limit[j]) - ema[j])
            if not per_metric:
                top = max(top, r2)
        if per_metric:
            e = 0.0
            for j in range(k):
                e = ema_next[j] / levels[j] if j == 0 else max(e, ema_next[j] / levels[j])
        else:
            e = energy + smooth * (min(top, top_limit) - energy)
        by_spike = spike > e / level  # the spike term sets the score
        if len(drivers) == len(out):  # explain_one's largest share, before learning
            best, best_v, total = -1, 0.0, 0.0
            for j in range(k):
                if by_spike:
                    v = abs(r[j]) / bound[j]
                else:
                    v = ema_next[j] / levels[j] if per_metric else ema_next[j]
                total += v
                if v > best_v:
                    best, best_v = j, v
            drivers[i] = best if read and math.isfinite(total) and total > 0.0 else -1
        # calibrate: u = 1 (the level, or a reading at its spike bound) is exactly
        # DEFAULT_THRESHOLD; a row with no reading of a trained metric scores 0
        u = max(e / level, spike)
        if not read:
            out[i] = 0.0
        elif not math.isfinite(u):
            out[i] = 1.0
        elif u <= 1.0:
            out[i] = DEFAULT_THRESHOLD * max(u, 0.0)
        else:
            out[i] = 1.0 - (1.0 - DEFAULT_THRESHOLD) / u
        if not advance[i]:
            continue
        # learn: commit the step, then track drift (never a fault); a change that outlasts
        # `patience` readings is the new normal: re-anchor at the recent level
        energy = e
        for j in range(k):
            ema[j] = ema_next[j]
            zj = Z[i, j]
            if math.isnan(zj):
                # a missing reading says nothing about the metric: its lock, patience
                # count and last residual carry over to its next reading
                continue
            a = abs(r[j])
            inside = a < gate
            drift = (not inside) and (not locked[j]) and (a - prev[j] < jump)
            locked[j] = (not inside) and (not drift)
            prev[j] = a
            if inside or drift:
                base[j] = base[j] + alpha * (zj - base[j])
            recent[j] = recent[j] + 0.05 * (zj - recent[j])
            held[j] = held[j] + 1 if locked[j] else 0
            if held[j] >= patience:
                base[j] = recent[j]
                locked[j] = False
                held[j] = 0
                prev[j] = 0.0
    st[0] = energy


def long_run_factor(x: np.ndarray) -> float:
    """How much wider a metric's long-run spread is than its sample deviation says.

    ``sqrt(long-run variance / variance)`` of the finite values of ``x``, with the
    Newey-West (Bartlett kernel) estimate of the long-run variance and its textbook
    bandwidth ``floor(4 (n / 100) ** (2 / 9))`` (5 lags for 400 readings), floored at 1.
    About 1 for a metric whose readings are independent noise; larger for one that wanders
    slowly (a temperature), whose few hundred training readings show only part of its
    normal range.

    >>> rng = np.random.default_rng(0)
    >>> noise = rng.standard_normal(400)
    >>> round(long_run_factor(noise), 2), round(long_run_factor(np.cumsum(noise)), 2)
    (1.0, 2.42)
    """
    v = np.asarray(x, dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n < 3:
        return 1.0
    v = v / max(float(np.abs(v).max()), 1e-300)  # the ratio is scale-free; no overflow
    v = v - v.mean()
    v0 = float(v @ v) / n
    if v0 <= 0.0:
        return 1.0
    lags = min(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)), n - 1)
    total = v0
    for k in range(1, lags + 1):
        total += 2.0 * (1.0 - k / (lags + 1.0)) * float(v[k:] @ v[:-k]) / n
    return math.sqrt(max(total / v0, 1.0))


class DriftResidual(Detector):
    """Per-metric residuals against a drift-tracking baseline, smoothed, max over metrics.

    1. **Training span.** The first ``train_rows`` readings are known normal: they fix
       each metric's mean and standard deviation, and the alarm level: ``margin`` times
       the largest smoothed score seen over the span (so the span itself never alarms).
       Metrics first seen after the span are ignored, and so are metrics read fewer than
       :data:`MIN_SPAN_READINGS` (2) times in it: one reading gives no deviation. With
       ``scale="long-run"`` each metric's deviation is widened by
       :func:`long_run_factor`: a slowly wandering metric's span shows only part of its
       normal range.
    2. **Residuals.** After the span, each metric's residual is ``r_j = (x_j - m_j) / sd_j``
       against a baseline ``m_j`` that starts at the training mean.
    3. **Smoothing.** An exponentially weighted mean ``e`` of ``max_j r_j²`` (weight
       ``smooth``), each term capped at ``cap`` times the alarm level: sustained faults
       add up, single noisy readings do not, and a huge fault does not leave a long tail
       of alarms after it ends.
    4. **Score.** ``u = max(e / level, max_j |r_j| / bound_j)``; the score is ``0.9 u``
       below 1 and ``1 - 0.1 / u`` above, so ``u = 1`` is exactly
       :data:`DEFAULT_THRESHOLD`. The second term is the **spike bound**: a single
       reading ``spike`` times farther out than any of the span's (``bound_j = spike *
       max(3, span max |r_j|)``) alarms at once, however short the fault; the smoothing
       alone needs several readings, so it could not see a one-reading fault of any size.
       A reading of no trained metric (every one missing) scores 0; it is learned as
       before (an empty reading not at all).
    5. **Drift tracking, not fault learning.** After the span, a metric's baseline moves
       towards the reading by ``alpha`` while ``|r_j| < gate``, and also beyond the gate
       while ``|r_j|`` got there gradually (each step grew it by less than ``jump``): slow
       drift (warming up) is followed however far it goes. A step of ``jump`` or more that
       leaves the gate (a fault) locks the baseline until the metric comes back inside,
       so a fault is not learned and keeps alarming, for up to ``patience`` readings.
       A missing reading of a metric leaves its baseline, lock and patience count as
       they were.

    **No known-normal span.** With ``train_rows`` left out (``edgewise detect`` without
    ``--train-rows``), the first :data:`ASSUMED_SPAN_ROWS` (400) readings are only assumed
    normal (``span="assumed"``), and the alarm level is widened by the span's
    :func:`long_run_factor` (the largest over the metrics; each metric's own with
    ``levels="per-metric"``), while the cap on each square fed to the smoothing stays
    ``cap`` times the level the span itself set (but at least ``min(cap, 1.25)`` times the
    widened level, so a fault beyond the cap still alarms). A span of autocorrelated
    readings (AR(1) noise, a slowly wandering temperature) holds few independent readings:
    its deviation, and the largest smoothed score that sets the level, can fall well short
    of the stream's (400 readings of ``x_t = 0.9 x_{t-1} + e_t`` hold about 20).
    Unwidened, ``edgewise detect`` flagged up to 11 % of 3000 rows of such noise at the
    default threshold (one metric, 30 streams; 0.8 % on average); now at most 0.7 % (phi
    from 0.5 to 0.99, one or three metrics, each of the three residual detectors; 30
    streams each). The cost, on such noise with ``phi = 0.9``: a 100-row shift of 4 sd on
    one metric was found in 17 of 20 streams by ``drift-residual``, not 20 (15 of 20, not
    19, with three metrics; 6 sd: all); widening by the factor's square instead was as
    quiet but found 16 and 8. Independent noise has a factor of about 1 and keeps its
    level and its power. A given ``train_rows`` (``span="known"``) keeps the span's level
    and cap as they are.

    With ``levels="per-metric"`` (:class:`PerMetricResidual`) steps 1, 3 and 4 are done
    per metric: each metric's ``e_j`` (the smoothing of its own ``r_j²``, each term capped
    at ``cap`` times that metric's level) is divided by its own level, ``margin`` times
    the largest ``e_j`` seen over the span, and ``u = max_j e_j / level_j``. A metric
    that is noisy or wanders within the span then needs a proportionally bigger change
    to alarm, and a quiet one alarms on a smaller change.

    :meth:`explain_one` ranks the metrics on the term that sets the score: each metric's
    share of ``sum_j e_j`` (of ``sum_j e_j / level_j`` per metric), where ``e_j`` is the
    same smoothing of ``r_j²`` alone, each term capped as the energy caps it (so one huge
    glitch does not stay on top for hundreds of readings after its alarm ended); where
    the spike term sets the score, each metric's share of ``sum_j |r_j| / bound_j``. The
    metric with the largest share drives the score (``top_column`` in ``edgewise
    detect``; the first by name on a tie).

    When to use: several metrics of one device with a known-normal start (``--train-rows``
    in ``edgewise detect``). When not: no normal span to learn from, or normal operation
    that changes regime abruptly (use :class:`~edgewise.detect.mahalanobis.Mahalanobis`).

    Parameters
    ----------
    train_rows
        Readings that define normal (learned, scored 0); default
        :data:`ASSUMED_SPAN_ROWS` (400), only assumed normal (``span``).
    alpha
        Drift-tracking rate of the baseline after the span.
    gate
        Residuals (in training standard deviations) within which a metric's baseline
        always follows the reading.
    jump
        One-step growth of ``|r_j|`` (in training standard deviations) that counts as a
        fault rather than drift once outside the gate.
    patience
        Readings of a metric (missing ones not counted) it may stay locked; then its
        baseline is re-anchored at the metric's recent level (a running mean of weight
        0.05): a change that lasts becomes the new normal, so its alarms end.
    smooth
        Weight of the newest squared residual in the smoothed score.
    margin
        Alarm level as a multiple of the largest smoothed score over the training span.
    cap
        Largest squared residual fed to the smoothing, as a multiple of the alarm level.
    spike
        A single reading alarms when its residual is ``spike`` times the largest of the
        span (at least ``3 * spike`` deviations); ``math.inf`` turns the bound off.
    levels
        ``"pooled"``: one alarm level for the max over metrics; ``"per-metric"``: one
        level per metric, the score is the max over metrics of their own ratio.
    scale
        ``"sample"``: each metric's deviation over the span; ``"long-run"``: that times
        :func:`long_run_factor` (autocorrelation-consistent).
    span
        ``"known"``: the first ``train_rows`` readings are known normal; ``"assumed"``:
        they are only taken to be, and the alarm level is widened by the span's
        :func:`long_run_factor` (the cap kept at ``cap`` times the span's own level, or
        ``min(cap, 1.25)`` times the widened one where that is more). Default: ``"known"``
        where ``train_rows`` is given, else ``"assumed"`` (over :data:`ASSUMED_SPAN_ROWS`
        readings).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> det = DriftResidual(train_rows=200)
    >>> for _ in range(200):
    ...     det.learn_one({"flow": 30 + rng.normal(), "temp": 60 + 0.1 * rng.normal()})
    >>> det.score_one({"flow": 30.5, "temp": 60.0}) < 0.9
    True
    >>> for _ in range(60):          # the flow collapses and stays down
    ...     x = {"flow": 20 + rng.normal(), "temp": 60 + 0.1 * rng.normal()}
    ...     s = det.score_one(x)
    ...     det.learn_one(x)
    >>> s > 0.9
    True
    >>> shares = det.explain_one(x)
    >>> max(shares, key=shares.get)
    'flow'
    """

    _constraints: ClassVar[dict[str, Any]] = {
        "train_rows": Interval(int, 2, None),
        "alpha": Interval(float, 0.0, 1.0),
        "gate": Interval(float, 0.0, None, closed="neither"),
        "jump": Interval(float, 0.0, None, closed="neither"),
        "patience": Interval(int, 1, None),
        "smooth": Interval(float, 0.0, 1.0, closed="right"),
        "margin": Interval(float, 0.0, None, closed="neither"),
        "cap": Interval(float, 1.0, None, closed="neither"),
        "spike": Interval(float, 1.0, math.inf),  # inf turns the bound off
        "levels": OneOf(("pooled", "per-metric")),
        "scale": OneOf(("sample", "long-run")),
        "span": OneOf(("known", "assumed")),
    }

    def __init__(
        self,
        train_rows: int | None = None,
        alpha: float = 0.03,
        gate: float = 2.0,
        jump: float = 1.5,
        patience: int = 900,
        smooth: float = 0.03,
        margin: float = 1.25,
        cap: float = 3.0,
        spike: float = 2.0,
        levels: str = "pooled",
        scale: str = "sample",
        span: str | None = None,
    ) -> None:
        if span is None:
            span = "assumed" if train_rows is None else "known"
        if train_rows is None:
            train_rows = ASSUMED_SPAN_ROWS
        validate_params(
            self._constraints,
            {
                "train_rows": train_rows,
                "alpha": alpha,
                "gate": gate,
                "jump": jump,
                "patience": patience,
                "smooth": smooth,
                "margin": margin,
                "cap": cap,
                "spike": spike,
                "levels": levels,
                "scale": scale,
                "span": span,
            },
            self,
        )
        self.train_rows = train_rows
        self.alpha = alpha
        self.gate = gate
        self.jump = jump
        self.patience = patience
        self.smooth = smooth
        self.margin = margin
        self.cap = cap
        self.spike = spike
        self.levels = levels
        self.scale = scale
        self.span = span
        self.metrics_: dict[str, int] = {}
        self.buffer_: list[dict[str, float]] = []
        self.n_ = 0
        self.sd_ = np.zeros(0)
        self.base_ = np.zeros(0)
        self.ema_ = np.zeros(0)
        self.prev_ = np.zeros(0)
        self.locked_ = np.zeros(0, dtype=bool)
        self.held_ = np.zeros(0, dtype=int)
        self.recent_ = np.zeros(0)
        self.energy_ = 0.0
        self.level_ = math.inf
        self.levels_ = np.zeros(0)  # per metric (levels="per-metric"); inf during the span
        self.bound_ = np.zeros(0)  # per metric spike bound, in deviations
        self.limit_ = np.zeros(0)  # per metric cap on the squares fed to the smoothing

    @classmethod
    def _unit_test_params(cls) -> list[dict[str, Any]]:
        return [{"train_rows": 50}, {"train_rows": 20, "smooth": 1.0, "alpha": 0.0, "cap": 1e9}]

    @property
    def trained(self) -> bool:
        """Whether the training span is over (scores are then non-zero)."""
        return self.n_ >= self.train_rows

    # -- internals ---------------------------------------------------------------------
    def _vector(self, x: Mapping[str, float]) -> np.ndarray:
        """The reading over the trained metrics; missing or non-finite values as NaN."""
        z = np.full(len(self.metrics_), np.nan)
        for k, v in x.items():
            j = self.metrics_.get(k)
            if j is not None and math.isfinite(v):
                z[j] = float(v)
        return z

    def _step(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(residuals, next per-metric smoothed squares, next smoothed max square)``."""
        r = np.where(np.isnan(z), 0.0, np.clip((z - self.base_) / self.sd_, -_R_MAX, _R_MAX))
        r2 = r * r
        limit = self._limits()
        if self.levels == "per-metric":
            ema = self.ema_ + self.smooth * (np.minimum(r2, limit) - self.ema_)
            return r, ema, float((ema / self.levels_).max()) if len(ema) else 0.0
        top = min(float(r2.max()), float(limit[0])) if len(r2) else 0.0
        return (
            r,
            # each metric's term capped as the energy caps it (what the drivers rank)
            self.ema_ + self.smooth * (np.minimum(r2, limit) - self.ema_),
            self.energy_ + self.smooth * (top - self.energy_),
        )

    def _min_cap_ratio(self) -> float:
        return min(self.cap, _MIN_CAP_RATIO)

    def _limits(self) -> np.ndarray:
        """Each metric's cap on the squares fed to the smoothing: ``cap`` times the level
        the span itself set (its own level per metric), before the widening of an assumed
        span (but at least ``min(cap, 1.25)`` times the widened level); ``inf`` during the
        span."""
        limit = getattr(self, "limit_", None)
        if limit is None or len(limit) != len(self.base_):  # the span; a pickle from before
            level = self.levels_ if self.levels == "per-metric" else self.level_
            limit = self.cap * np.broadcast_to(level, self.base_.shape)
        return np.asarray(limit, dtype=float)

    def _check_bound(self) -> None:
        """Give a pickle from before the spike bound one of ``inf`` per metric (none)."""
        if len(getattr(self, "bound_", ())) != len(self.base_):
            self.bound_ = np.full(len(self.base_), math.inf)

    def _run(
        self, Z: np.ndarray, advance: np.ndarray, drivers: np.ndarray | None = None
    ) -> np.ndarray:
        """Scores of the rows of ``Z`` (trained metrics, NaN where missing), learning the rows
        where ``advance``: :func:`_replay` on the state arrays, in place; ``drivers`` (a row
        per row of ``Z``) gets each row's most explaining metric index."""
        if self.held_.dtype != np.int64:  # a pickle from a platform with 32-bit int
            self.held_ = self.held_.astype(np.int64)
        # float64 whatever the parameters' type: two NumPy float32 (a float32 ``margin`` and
        # ``smooth`` leave both so) made a float32 array, which cut the energy to float32
        # at the end of each call, so split calls of score_many gave other scores
        st = np.array([self.energy_, self.level_], dtype=float)
        p = np.array([self.alpha, self.gate, self.jump, self.patience, self.smooth, self.cap,
                      1.0 if self.levels == "per-metric" else 0.0])
        out = np.empty(len(Z))
        if drivers is None:
            drivers = np.empty(0, dtype=np.int64)
        self._check_bound()
        _replay(Z, advance, self.base_, self.sd_, self.ema_, self.prev_, self.locked_,
                self.held_, self.recent_, self.levels_, self.bound_,
                np.ascontiguousarray(self._limits()), st, p, out, drivers)
        self.energy_ = float(st[0])
        return out

    def _finish_training(self) -> None:
        # a metric read fewer than MIN_SPAN_READINGS times in the span has no deviation to
        # judge it by (one reading: 0, floored to 1e-12 of its level, and every later
        # reading of it alarmed for good): left out, as a metric first seen after the span
        counts = Counter(k for row in self.buffer_ for k in row)
        names = sorted(k for k, c in counts.items() if c >= MIN_SPAN_READINGS)
        self.metrics_ = {k: i for i, k in enumerate(names)}
        Z = np.array([self._vector(row) for row in self.buffer_]).reshape(
            len(self.buffer_), len(names))
        seen = ~np.isnan(Z).all(axis=0)
        mean, sd = _mean_sd(Z[:, seen])
        self.base_ = np.zeros(len(names))
        self.sd_ = np.ones(len(names))
        self.base_[seen] = mean
        # A metric constant over the span gets a floor of 1e-12 of its own level, about
        # float rounding (none absolute: a metric read in small units, 1e-9 A say, keeps
        # its scale; and a tiny one: a metric with an offset, latitude 47.37 +- 1e-5 or
        # 101325 +- 1 Pa, keeps its own noise); a metric constant at 0 gets the smallest
        # one. Any change of a constant metric then stands out.
        self.sd_[seen] = np.maximum(sd, np.maximum(1e-12 * np.abs(mean), _SD_MIN))
        if getattr(self, "scale", "sample") == "long-run":  # pickles from before: sample
            for j in np.flatnonzero(seen):
                self.sd_[j] *= long_run_factor(Z[:, j])
        self.levels_ = np.full(len(names), math.inf)
        # Start the smoothing at the first reading's squares (not at 0, which would hide
        # the span's own noise level and set the alarm level too low).
        self.ema_ = np.zeros(len(names))
        r0 = self._step(Z[0])[0]
        self.ema_ = r0 * r0
        if self.levels == "per-metric":
            # Each metric's own mean square over the span is 1 (its residuals are scaled
            # by its span sd): start there, so one outlying first reading does not set
            # that metric's level.
            self.ema_ = np.ones(len(names))
        self.energy_ = peak = float(self.ema_.max()) if len(names) else 0.0
        peaks = self.ema_.copy()
        self.locked_ = np.zeros(len(names), dtype=bool)
        self.held_ = np.zeros(len(names), dtype=int)
        self.recent_ = self.base_.copy()
        widest = np.zeros(len(names))
        for z in Z:
            r, self.ema_, self.energy_ = self._step(z)
            peak = max(peak, self.energy_)
            peaks = np.maximum(peaks, self.ema_)
            self.prev_ = np.abs(r)
            widest = np.maximum(widest, self.prev_)
        self.bound_ = getattr(self, "spike", math.inf) * np.maximum(widest, 3.0)
        if self.levels == "per-metric":
            # The score is already the max of the per-metric ratios: its level is 1.
            self.levels_ = self.margin * np.maximum(peaks, 1e-12)
            self.limit_ = self.cap * self.levels_
            if getattr(self, "span", "known") == "assumed":  # pickles from before: known
                self.levels_ = self.levels_ * [long_run_factor(Z[:, j]) for j in range(len(names))]
                self.limit_ = np.maximum(self.limit_, self._min_cap_ratio() * self.levels_)
            self.ema_ = np.minimum(self.ema_, self.limit_)
            self.level_ = 1.0
            self.energy_ = float((self.ema_ / self.levels_).max()) if len(names) else 0.0
        else:
            self.level_ = self.margin * max(peak, 1e-12)
            self.limit_ = np.full(len(names), self.cap * self.level_)
            self.energy_ = min(self.energy_, self.cap * self.level_)
            self.ema_ = np.minimum(self.ema_, self.cap * self.level_)  # only explains
            if getattr(self, "span", "known") == "assumed" and len(names):
                self.level_ *= max(long_run_factor(Z[:, j]) for j in range(len(names)))
                self.limit_ = np.maximum(self.limit_, self._min_cap_ratio() * self.level_)
        self.buffer_ = []

    # -- API ---------------------------------------------------------------------------
    def score_one(self, x: Mapping[str, float]) -> float:
        """Score one device reading in [0, 1] without learning it (0 during training, and
        for a reading of no trained metric)."""
        if not self.trained or not self.metrics_:
            return 0.0
        return float(self._run(self._vector(x)[None, :], np.zeros(1, dtype=bool))[0])

    def learn_one(self, x: Mapping[str, float]) -> None:
        """Learn one reading: part of the training span, or one step of drift tracking."""
        finite = {k: float(v) for k, v in x.items() if math.isfinite(v)}
        if not finite:
            return
        if not self.trained:
            self.buffer_.append(finite)
            self.n_ += 1
            if self.trained:
                self._finish_training()
            return
        if self.metrics_:
            self._run(self._vector(finite)[None, :], np.ones(1, dtype=bool))

    def score_many(self, X: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
        """Score then learn each row of ``X``; equals the one-at-a-time loop.

        The training span goes through :meth:`learn_one`; the rows after it through one
        compiled loop (:func:`_replay`).
        """
        return self._score_many(X, columns, explain=False)[0]

    def score_explain_many(
        self, X: np.ndarray, columns: Sequence[str] | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """:meth:`score_many` plus each row's most explaining metric, in the same compiled
        loop: equals the loop of ``score_one``, ``explain_one``, ``learn_one``."""
        scores, top = self._score_many(X, columns, explain=True)
        names = list(self.metrics_)
        return scores, ["" if j < 0 else names[j] for j in top]

    def _score_many(
        self, X: np.ndarray, columns: Sequence[str] | None, explain: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        X, names = readings(X, columns)
        out = np.zeros(len(X))
        top = np.full(len(X), -1, dtype=np.int64)
        i = 0
        while i < len(X) and not self.trained:
            self.learn_one(reading(names, X[i]))
            i += 1
        if i == len(X) or not self.metrics_:
            return out, top
        rest = X[i:]
        finite = np.isfinite(rest)
        # the trained metrics, NaN where missing; a later column of the same name that is
        # finite wins, as in the one-at-a-time loop
        Z = np.full((len(rest), len(self.metrics_)), np.nan)
        for c, n in enumerate(names):
            j = self.metrics_.get(n)
            if j is not None:
                Z[:, j] = np.where(finite[:, c], rest[:, c], Z[:, j])
        rest_top = np.full(len(rest), -1, dtype=np.int64) if explain else None
        out[i:] = self._run(Z, finite.any(axis=1), rest_top)
        if rest_top is not None:
            top[i:] = rest_top
        return out, top

    def explain_one(self, x: Mapping[str, float]) -> dict[str, float]:
        """Share of each metric in the term that sets the score (sums to 1 when any; all 0
        for a reading of no trained metric): of ``sum_j |r_j| / bound_j`` where the spike
        term sets it, else of the capped smoothed squares ``sum_j e_j`` (``e_j / level_j``
        per metric)."""
        if not self.trained or not self.metrics_:
            return {}
        z = self._vector(x)
        if np.isnan(z).all():
            return {k: 0.0 for k in self.metrics_}
        self._check_bound()
        r, ema, e = self._step(z)
        ratio = np.abs(r) / self.bound_
        if float(ratio.max()) > e / self.level_:  # the spike term sets the score
            ema = ratio
        elif self.levels == "per-metric":
            ema = ema / self.levels_
        total = float(ema.sum())
        if total <= 0.0 or not math.isfinite(total):
            return {k: 0.0 for k in self.metrics_}
        return {k: float(ema[j] / total) for k, j in self.metrics_.items()}


class PerMetricResidual(DriftResidual):
    """:class:`DriftResidual` with one alarm level per metric, as ``"per-metric-residual"``.

    Defaults ``levels="per-metric"``, ``margin=2.0``, ``cap=2.0`` (chosen on SKAB's valve1
    files and its anomaly-free recording only: ``benchmarks/results/multivariate.md``,
    look #5). Every parameter of :class:`DriftResidual` is accepted by keyword.

    >>> det = PerMetricResidual(train_rows=50)
    >>> det.levels, det.margin, det.clone().cap
    ('per-metric', 2.0, 2.0)
    """

    def __init__(self, **params: Any) -> None:
        params.setdefault("levels", "per-metric")
        params.setdefault("margin", 2.0)
        params.setdefault("cap", 2.0)
        super().__init__(**params)

    @classmethod
    def _unit_test_params(cls) -> list[dict[str, Any]]:
        return [{"train_rows": 50}, {"train_rows": 20, "smooth": 1.0, "alpha": 0.0, "cap": 1e9}]


class LongRunResidual(DriftResidual):
    """:class:`DriftResidual` with long-run deviations (``scale="long-run"``), as
    ``"long-run-residual"``.

    Each metric's span deviation is widened by :func:`long_run_factor`, so a slowly
    wandering metric (a temperature) is judged against its normal spread, not the part of
    it a few hundred readings show. SKAB (``benchmarks/results/multivariate.md``, look #7):
    better than ``drift-residual`` on the dev files (valve1 F1 0.835 vs 0.784; false alarms
    on the anomaly-free recording 5.8 % vs 13.2 %) and on both held-out figures (F1 0.727 vs
    0.721, false-alarm rate 19.8 % vs 23.9 %), but short of the +0.01 F1 its adoption rule
    asked of a new default, so opt-in. Every parameter of :class:`DriftResidual` is
    accepted by keyword.

    >>> det = LongRunResidual(train_rows=50)
    >>> det.scale, det.levels, det.clone().scale
    ('long-run', 'pooled', 'long-run')
    """

    def __init__(self, **params: Any) -> None:
        params.setdefault("scale", "long-run")
        super().__init__(**params)
