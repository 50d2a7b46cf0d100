"""Why a multivariate alert fired: which metrics drive its T², and their signed terms.

The gateway's multivariate detector scores a device's reading by Hotelling's
``T² = dᵀ S⁻¹ d`` (``d``: the reading minus the device's normal mean, ``S``: its shrunk
covariance). :func:`alert_explanation` rebuilds that from the *stored* readings, so it can
be asked about any alert later: the device's readings before the alert (``reference``)
give the mean and covariance, every reading time inside the alert's span is scored, and
the most anomalous one (the peak) is split exactly into ``d_i (S⁻¹ d)_i``
(:func:`~edgewise.explain.linear.quadratic_contributions`). A positive term pushed the
score up; a negative one is a metric that, given the others, looked *more* normal and
pulled it down. ``base`` is 0 and the terms sum to ``value`` (the peak's T²).

Those terms do not say which metric is at fault: a sensor frozen at its mean while its
partners move (a stuck flow meter as the load rises) has ``d_i = 0`` and a term of 0, and
its healthy partners take the score. So the metrics are ranked by ``shares`` instead
(:func:`~edgewise.explain.linear.conditional_shares`): each metric's share of
``(S⁻¹ d)_i² / (S⁻¹)_ii``, how far its reading misses what the other metrics predict for
it (the drop in T² were it at that prediction). :meth:`AlertExplanation.top` orders by them.

Metrics are carried forward between their readings (a reading time sees the last value
of every metric), as the detector sees one row per reading time. Every metric's standard
deviation is floored at a millionth of its spread (the largest distance of its readings
before and in the alert from its mean before the alert; never of its level, so an offset
does not hide a precise metric). A metric that was constant before the alert is named in
``constant_before`` if it moved in it; it gets the detector's ridge for a metric that has
not varied, a standard deviation of ``sqrt(1e-9)`` of its level
(:func:`~edgewise.detect.mahalanobis.shrink_covariance`), so a barometer constant at
101325 Pa that ticks by 1 Pa is as ordinary as in the score that raised the alert, while a
motor held at 1450 rpm that stops, or one off (``rpm`` 0, no level) that starts, gets a
large but finite term. A metric with no reading before the alert is left out (named in
``left_out``).

>>> rng = np.random.default_rng(0)
>>> rows = []
>>> for t in range(200):
...     a = rng.normal()
...     rows += [("flow", t, a), ("pressure", t, 2 * a + 0.1 * rng.normal())]
>>> rows += [("flow", 200, 1.0), ("pressure", 200, -2.0)]   # relationship broken
>>> ex = alert_explanation(rows, start_ns=200, end_ns=200)
>>> ex.check(), sorted(ex.contributions), ex.value > 100
(True, ['flow', 'pressure'], True)
>>> round(sum(ex.shares.values()), 6)
1.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from edgewise.detect.mahalanobis import shrink_covariance
from edgewise.errors import InvalidParameterError
from edgewise.explain.base import Explanation, check_top
from edgewise.explain.linear import conditional_shares, quadratic_contributions
from edgewise.models.history import wide_readings
from edgewise.params import Interval, validate_params

__all__ = ["CONSTANT_RELATIVE", "MIN_RELATIVE_SD", "AlertExplanation", "alert_explanation"]


#: Smallest standard deviation a metric is given, relative to its spread (the largest
#: distance of its readings in the reference and the span from its reference mean).
MIN_RELATIVE_SD = 1e-6

#: A metric whose newest reading at a reading time is older than this many of its usual
#: (median) intervals between readings is not read at that time: it dropped out, and
#: :func:`alert_explanation` leaves it out of that row (named in ``stale`` at the peak).
STALE_GAPS = 3.0

#: Readings of a metric that all lie within this share of its magnitude of their mean are
#: taken as constant (their differences are float rounding, not a change of the metric).
CONSTANT_RELATIVE = 1e-12

#: What :func:`alert_explanation` takes: a share of the covariance (as the detector's
#: ``shrinkage``) and a count of reference rows.
_CONSTRAINTS = {"shrinkage": Interval(float, 0.0, 1.0), "min_reference": Interval(int, 1, None)}


@dataclass
class AlertExplanation(Explanation):
    """An :class:`Explanation` of an alert's peak reading, with where it was found.

    ``constant_before`` names the metrics that did not vary in the reference (its readings
    equal to within :data:`CONSTANT_RELATIVE` of their own magnitude, whatever the alert's
    readings) but moved in the alert: their standard deviation is the one the detector gives
    such a metric, ``sqrt(1e-9)`` of its level, and at least :data:`MIN_RELATIVE_SD` of
    their spread, so their term is finite, and large unless the move is a tick of the
    level (1 Pa of 101325).
    ``left_out`` names the metrics with no reading before the alert, which the
    explanation cannot compare with anything and so leaves out. ``stale`` names the
    metrics not read at the peak (their newest reading older than :data:`STALE_GAPS` of
    their usual intervals: a sensor that dropped out): as the live detector scores a
    reading on the metrics it holds, they are left out of the peak's T², its terms and
    shares.

    ``shares`` ranks the metrics: each one's share (non-negative, summing to 1) of the
    conditional residuals ``(S⁻¹ d)_i² / (S⁻¹)_ii``, how far its reading misses what the
    other metrics predict for it. It names a sensor stuck at its mean while its partners
    move, whose signed term in ``contributions`` is 0. :meth:`top` orders by it.
    """

    peak_ns: int = 0
    reference_rows: int = 0
    constant_before: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    shares: dict[str, float] = field(default_factory=dict)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` metrics with the largest ``shares``, each with its signed T² term.

        Ordered by ``shares`` (the metric that most misses what the others predict for it
        first), not by the size of the term; by the term when there are no shares.

        >>> ex = AlertExplanation(9.0, 0.0, {"flow": 0.0, "speed": 9.0},
        ...                       shares={"flow": 0.6, "speed": 0.4})
        >>> ex.top(2)
        [('flow', 0.0), ('speed', 9.0)]
        """
        if not self.shares:
            return super().top(k)
        check_top(k)
        order = sorted(self.contributions, key=lambda m: -self.shares.get(m, 0.0))
        return [(m, self.contributions[m]) for m in order[:k]]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form: the signed terms and the ``shares`` that rank the metrics."""
        return {**super().to_dict(), "shares": self.shares}


def alert_explanation(
    rows: Sequence[tuple[str, int, float]],
    start_ns: int,
    end_ns: int,
    shrinkage: float = 0.01,
    min_reference: int = 20,
) -> AlertExplanation:
    """Signed per-metric terms of the T² of the alert's most anomalous reading, and the
    per-metric ``shares`` that rank which metrics drive it.

    Parameters
    ----------
    rows
        The device's ``(metric, ts_ns, value)`` readings up to ``end_ns``: those before
        ``start_ns`` are the reference of normal behaviour.
        A reading that is not a finite number (NaN, +-inf) is no reading: the metric's
        last value carries over it.
    start_ns, end_ns
        The alert's span (inclusive; ``start_ns <= end_ns``).
    shrinkage
        Share of the covariance replaced by its diagonal (as the detector does): a float
        in ``[0, 1]``.
    min_reference
        Fewest complete reference rows (every metric known) needed: an integer >= 1.

    Each metric's standard deviation is at least :data:`MIN_RELATIVE_SD` of its spread
    (the largest distance of its readings here from its mean before the alert, whatever
    its level), and a metric that was constant before the alert at least ``sqrt(1e-9)`` of
    its level, as the detector's ridge gives it; so one that moved in the alert (a motor
    off, ``rpm`` 0, that starts) gets a large finite term, named in ``constant_before``,
    and the T² and every term stay finite. A metric with no reading
    before the alert is left out (named in ``left_out``).

    Raises
    ------
    InvalidParameterError
        When ``shrinkage``, ``min_reference`` or the span is out of range (naming the
        value and the range), or the device has fewer than two metrics with history, no
        reading in the span, too little reference history (naming the metric that cuts it
        short), or readings too large for a finite T².

    >>> rows = [(m, t, v) for t in range(50) for m, v in (("flow", 30.0 + t % 3),
    ...                                                    ("temp", 60.0 - t % 5), ("rpm", 0.0))]
    >>> rows += [("flow", 50, 31.0), ("temp", 50, 58.0), ("rpm", 50, 1500.0)]  # motor starts
    >>> ex = alert_explanation(rows, start_ns=50, end_ns=50)
    >>> ex.top(1)[0][0], ex.constant_before, ex.check(), ex.value < 1e13
    ('rpm', ['rpm'], True, True)
    """
    validate_params(_CONSTRAINTS, {"shrinkage": shrinkage, "min_reference": min_reference},
                    "alert_explanation")
    if start_ns > end_ns:
        raise InvalidParameterError(
            f"The alert's span must not end before it starts (start_ns <= end_ns). Got "
            f"start_ns={start_ns!r}, end_ns={end_ns!r}.", field="end_ns", value=end_ns)
    # a reading that is not a finite number (the store refuses them; a caller may pass one)
    # is no reading, as the detectors take it: the metric's last value carries over it, as
    # over a NaN (one inf in the reference made the whole explanation "no finite T²")
    rows = [r for r in rows if math.isfinite(r[2])]
    if not rows:
        raise InvalidParameterError("The device has no stored readings around the alert.")
    wide = wide_readings(rows)
    if wide.shape[1] < 2:
        raise InvalidParameterError(
            f"A multivariate explanation needs at least two metrics; the device sends "
            f"{list(wide.columns)}."
        )
    before = wide[wide.index < start_ns]
    # a metric with no reading before the alert (one the device just started sending)
    # has nothing to be compared with: it is left out rather than emptying the reference
    left_out = [str(c) for c in wide.columns if not before[c].notna().any()]
    kept = [c for c in wide.columns if c not in left_out]
    if len(kept) < 2:
        raise InvalidParameterError(
            f"A multivariate explanation needs at least two metrics with readings before "
            f"the alert; {_named(left_out)} no reading before it, leaving {kept}."
        )
    wide = wide[kept]
    ref = wide[wide.index < start_ns].dropna()
    span = wide[(wide.index >= start_ns) & (wide.index <= end_ns)].dropna()
    need = max(min_reference, 2 * wide.shape[1])
    if len(ref) < need:
        counts = wide[wide.index < start_ns].notna().sum()
        short = [str(c) for c in counts.index if counts[c] < need]
        why = (f"; {_named(short)} fewer than {need} readings before it" if short
               and len(short) < wide.shape[1] else "")
        raise InvalidParameterError(
            f"The device has {len(ref)} complete reading times before the alert; a "
            f"multivariate explanation needs at least {need}{why}."
        )
    if span.empty:
        raise InvalidParameterError("No complete reading of the device lies in the alert's span.")
    x = ref.to_numpy(dtype=float)
    xs = span.to_numpy(dtype=float)
    # constant before the alert: the reference readings equal to within rounding of their
    # own magnitude (decided from the reference alone: the alert's own readings, an error
    # code far off, must not make a metric that varied look still by comparison)
    ref_mag = np.abs(x).max(axis=0)
    ref_mag = np.where(ref_mag > 0, ref_mag, 1.0)
    ref_unit = x / ref_mag
    still = (np.abs(ref_unit - ref_unit.mean(axis=0)).max(axis=0)
             <= CONSTANT_RELATIVE)  # did not vary in the reference
    # each metric in units of its magnitude first (the largest among its readings here),
    # so no sum or square of a reading near the float limit overflows; then centred on its
    # reference mean and put in units of its spread (the largest distance of its readings
    # from that mean): T², its split and the covariance ridge are the same in any units,
    # and the sd floor below depends on how far the metric moves, never on its level (an
    # offset such as 52.52° latitude or 101325 Pa does not hide a metric that varies)
    mag = np.maximum(np.abs(x).max(axis=0), np.abs(xs).max(axis=0))
    mag = np.where(mag > 0, mag, 1.0)  # a metric at 0 throughout
    x, xs = x / mag, xs / mag
    centre = x.mean(axis=0)
    x, xs = x - centre, xs - centre
    spread = np.maximum(np.abs(x).max(axis=0), np.abs(xs).max(axis=0))
    # a metric that never moved by more than rounding (readings equal to within
    # CONSTANT_RELATIVE of their magnitude) has no spread: left in units of its magnitude,
    # where its rounding residues stay ~1e-16 and contribute nothing
    spread = np.where(spread > CONSTANT_RELATIVE, spread, 1.0)
    x, xs = x / spread, xs / spread
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False)
    # a metric constant before the alert has no covariance but rounding residues: it gets
    # the detector's ridge for a metric that has not varied, 1e-9 of its level squared
    # (shrink_covariance), so a barometer at 101325 Pa that ticks by 1 Pa is as ordinary
    # here as in the score that raised the alert (the floor below alone made any tick
    # 1e6 sd, the whole blame); its level is its reference mean in units of its spread
    cov[still, :] = 0.0
    cov[:, still] = 0.0
    s = shrink_covariance(cov, np.where(still, centre / spread, mean), shrinkage)
    # floor each sd at MIN_RELATIVE_SD of the spread: a metric constant at 0 in the
    # reference (sd ~1e-150) that moved in the alert would otherwise blow its term up to
    # inf, and the rounding residues of its cross terms with the others up to ~1e135. With
    # the floor,
    # |d / sd| <= 2 / MIN_RELATIVE_SD for every metric, so T² and every term are finite.
    sd = np.maximum(np.sqrt(np.diag(s)), MIN_RELATIVE_SD)
    z = (xs - mean) / sd
    # the correlation matrix of the floored covariance: its shrunk part keeps every
    # eigenvalue at or above about `shrinkage`, so it is solved, not pseudo-inverted
    corr = s / np.outer(sd, sd)
    np.fill_diagonal(corr, 1.0)
    # a metric not read for more than STALE_GAPS of its usual intervals at a reading time
    # (a sensor that dropped out) is not in that row: the live detector scores the
    # metrics a reading holds, under their own marginal distribution, and the last value
    # carried forward must not take a share of an alert it was never part of
    fresh = _fresh(rows, span.index.to_numpy(), kept, start_ns)
    if not fresh.any():  # an explanation of no metric: T² 0, as if nothing were off
        new = f"; {_named(left_out)} no reading before it" if left_out else ""
        raise InvalidParameterError(
            f"No metric with readings before the alert was read in its span: "
            f"{_named([str(c) for c in kept])} stopped before it (their newest reading older "
            f"than {STALE_GAPS:g} of their usual intervals){new}."
        )
    t2 = np.empty(len(z))
    inverses: dict[bytes, np.ndarray] = {}
    for i, mask in enumerate(fresh):
        key = mask.tobytes()
        if key not in inverses:
            inverses[key] = _marginal_inverse(corr, mask)
        zi = np.where(mask, z[i], 0.0)
        t2[i] = zi @ inverses[key] @ zi
    if not np.isfinite(t2).all():  # not expected with the floor; never hand out inf or NaN
        raise InvalidParameterError(
            "The device's readings around the alert give no finite T²; no explanation."
        )
    peak = int(np.argmax(t2))
    read = fresh[peak]
    names = [c for c, f in zip(kept, read, strict=True) if f]
    stale = [str(c) for c, f in zip(kept, read, strict=True) if not f]
    inv_read = inverses[read.tobytes()][np.ix_(read, read)]
    # the split of T² in the standardised metrics equals that of dᵀ S⁻¹ d term by term
    ex = quadratic_contributions(z[peak][read], np.zeros(len(names)), inv_read, names=names)
    # the ranking: how far each metric misses what the others predict (same in any units)
    shares = conditional_shares(z[peak][read], np.zeros(len(names)), inv_read, names=names)
    moved = np.abs(xs[peak] - mean) > MIN_RELATIVE_SD  # by more than rounding
    constant = [str(c) for c, st, m, f in zip(kept, still, moved, read, strict=True)
                if st and m and f]
    return AlertExplanation(ex.value, ex.base, ex.contributions, peak_ns=int(span.index[peak]),
                            reference_rows=len(ref), constant_before=constant,
                            left_out=left_out, shares=shares, stale=stale)


def _fresh(rows: Sequence[tuple[str, int, float]], times: np.ndarray, metrics: list[str],
           start_ns: int) -> np.ndarray:
    """Which ``metrics`` were read at each of ``times`` (sorted): a boolean row per time,
    False where the metric's newest reading at or before it is older than
    :data:`STALE_GAPS` of its usual (median) interval between readings before ``start_ns``.
    A metric with fewer than two readings before ``start_ns`` has no usual interval and
    counts as read (its last value carries, as before)."""
    fresh = np.ones((len(times), len(metrics)), dtype=bool)
    names = np.array([r[0] for r in rows], dtype=object)
    stamps = np.array([r[1] for r in rows], dtype=np.int64)
    for j, m in enumerate(metrics):
        ts = np.unique(stamps[names == m])
        before = ts[ts < start_ns]
        if len(before) < 2:
            continue
        allowed = STALE_GAPS * float(np.median(np.diff(before)))
        last = ts[np.searchsorted(ts, times, side="right") - 1]  # every time has one:
        fresh[:, j] = (times - last) <= allowed  # the metric read before the alert
    return fresh


def _marginal_inverse(corr: np.ndarray, read: np.ndarray) -> np.ndarray:
    """The inverse of the block of ``corr`` of the metrics ``read`` (a boolean mask), put
    back at full size with zeros for the others: ``zᵀ M z`` with it is the marginal T² of
    the metrics read."""
    out = np.zeros_like(corr)
    block = corr[np.ix_(read, read)]
    inv = np.linalg.solve(block, np.eye(len(block)))
    out[np.ix_(read, read)] = (inv + inv.T) / 2
    return out


def _named(metrics: list[str]) -> str:
    """``'a' has`` or ``'a', 'b' have``: metric names as the subject of a sentence."""
    return ", ".join(map(repr, metrics)) + (" has" if len(metrics) == 1 else " have")
