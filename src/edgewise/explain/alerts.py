"""Why a multivariate alert fired: exact signed contributions of each metric to its T².

The gateway's multivariate detector scores a device's reading by Hotelling's
``T² = dᵀ S⁻¹ d`` (``d``: the reading minus the device's normal mean, ``S``: its shrunk
covariance). :func:`alert_explanation` rebuilds that from the *stored* readings, so it can
be asked about any alert later: the device's readings before the alert (``reference``)
give the mean and covariance, every reading time inside the alert's span is scored, and
the most anomalous one (the peak) is split exactly into ``d_i (S⁻¹ d)_i``
(:func:`~edgewise.explain.linear.quadratic_contributions`). A positive term pushed the
score up; a negative one is a metric that, given the others, looked *more* normal and
pulled it down. ``base`` is 0 and the terms sum to ``value`` (the peak's T²).

Metrics are carried forward between their readings (a reading time sees the last value
of every metric), as the detector sees one row per reading time.

>>> rng = np.random.default_rng(0)
>>> rows = []
>>> for t in range(200):
...     a = rng.normal()
...     rows += [("flow", t, a), ("pressure", t, 2 * a + 0.1 * rng.normal())]
>>> rows += [("flow", 200, 1.0), ("pressure", 200, -2.0)]   # relationship broken
>>> ex = alert_explanation(rows, start_ns=200, end_ns=200)
>>> ex.check(), sorted(ex.contributions), ex.value > 100
(True, ['flow', 'pressure'], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgewise.detect.mahalanobis import shrink_covariance
from edgewise.errors import InvalidParameterError
from edgewise.explain.base import Explanation
from edgewise.explain.linear import quadratic_contributions
from edgewise.models.history import wide_readings

__all__ = ["AlertExplanation", "alert_explanation"]


@dataclass
class AlertExplanation(Explanation):
    """An :class:`Explanation` of an alert's peak reading, with where it was found."""

    peak_ns: int = 0
    reference_rows: int = 0


def alert_explanation(
    rows: Sequence[tuple[str, int, float]],
    start_ns: int,
    end_ns: int,
    shrinkage: float = 0.01,
    min_reference: int = 20,
) -> Explanation:
    """Signed per-metric contributions to the T² of the alert's most anomalous reading.

    Parameters
    ----------
    rows
        The device's ``(metric, ts_ns, value)`` readings up to ``end_ns``: those before
        ``start_ns`` are the reference of normal behaviour.
    start_ns, end_ns
        The alert's span (inclusive).
    shrinkage
        Share of the covariance replaced by its diagonal (as the detector does).
    min_reference
        Fewest complete reference rows (every metric known) needed.

    Raises
    ------
    InvalidParameterError
        When the device has fewer than two metrics, no reading in the span, or too little
        reference history.
    """
    if not rows:
        raise InvalidParameterError("The device has no stored readings around the alert.")
    wide = wide_readings(rows)
    if wide.shape[1] < 2:
        raise InvalidParameterError(
            f"A multivariate explanation needs at least two metrics; the device sends "
            f"{list(wide.columns)}."
        )
    ref = wide[wide.index < start_ns].dropna()
    span = wide[(wide.index >= start_ns) & (wide.index <= end_ns)].dropna()
    need = max(min_reference, 2 * wide.shape[1])
    if len(ref) < need:
        raise InvalidParameterError(
            f"The device has {len(ref)} complete reading times before the alert; a "
            f"multivariate explanation needs at least {need}."
        )
    if span.empty:
        raise InvalidParameterError("No complete reading of the device lies in the alert's span.")
    x = ref.to_numpy(dtype=float)
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False)
    # inverted on the correlation scale, so pinv's relative cutoff does not drop a metric
    # read in small units (its variance 1e-22 beside another's 1)
    s = shrink_covariance(cov, mean, shrinkage)
    scale = np.sqrt(np.diag(s))
    precision = np.linalg.pinv(s / np.outer(scale, scale)) / np.outer(scale, scale)
    d = span.to_numpy(dtype=float) - mean
    t2 = np.einsum("ij,jk,ik->i", d, precision, d)
    peak = int(np.argmax(t2))
    ex = quadratic_contributions(span.iloc[peak].to_numpy(dtype=float), mean, precision,
                                 names=list(wide.columns))
    return AlertExplanation(ex.value, ex.base, ex.contributions, peak_ns=int(span.index[peak]),
                            reference_rows=len(ref))
