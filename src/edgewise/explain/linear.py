"""Exact contributions for linear models and PCA/Mahalanobis-type multivariate scores.

* Linear: ``f(x) = b + w·x`` splits as ``base = b + w·mean`` and ``w_i (x_i - mean_i)``.
* PCA reconstruction error: ``||r||²`` with ``r = (I - P Pᵀ)(x - mean)`` splits as ``r_i²``
  (every contribution ≥ 0: which sensors the normal subspace cannot explain).
* Quadratic forms (Mahalanobis, Hotelling T²): ``dᵀ M d`` with ``d = x - mean`` splits
  as ``d_i (M d)_i`` (signed; a sensor can *reduce* the score when it moves with others).

Each sums exactly to the score (a waterfall). The quadratic split is *not* a ranking of
culprits: a sensor stuck at its mean has ``d_i = 0`` and so a term of exactly 0, however
far its partners moved without it. :func:`conditional_shares` ranks the sensors of a
quadratic form instead, by how far each misses what the others predict for it.

>>> x, mean = np.array([3.0, 1.0]), np.zeros(2)
>>> linear_contributions([2.0, -1.0], 0.5, x, mean, names=["a", "b"]).contributions
{'a': 6.0, 'b': -1.0}
>>> cov = np.array([[1.0, 0.8], [0.8, 1.0]])
>>> e = quadratic_contributions(x, mean, np.linalg.inv(cov))
>>> e.check(), round(e.value, 3)
(True, 14.444)
>>> {k: round(v, 3) for k, v in conditional_shares(x, mean, np.linalg.inv(cov)).items()}
{'x0': 0.712, 'x1': 0.288}
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from edgewise.detect.mahalanobis import conditional_terms, unit_deviation
from edgewise.errors import InvalidParameterError
from edgewise.explain.base import Explanation

__all__ = [
    "conditional_shares", "linear_contributions", "pca_contributions", "quadratic_contributions",
]


def _names(names: Sequence[str] | None, n: int) -> list[str]:
    """``n`` distinct feature names (``x0``, ``x1``, … when none are given).

    Two features of one name would share one entry of the contributions, losing a term,
    so duplicates are refused.
    """
    if names is None:
        return [f"x{i}" for i in range(n)]
    if len(names) != n:
        raise InvalidParameterError(f"Got {len(names)} feature names for {n} features.",
                                    field="names", value=list(names))
    out = [str(s) for s in names]
    dupes = sorted(name for name, k in Counter(out).items() if k > 1)
    if dupes:
        raise InvalidParameterError(
            f"Feature names must be distinct (each gets its own contribution). Got "
            f"{dupes} more than once in {out}.", field="names", value=out,
        )
    return out


def _vec(x: object, n: int | None, what: str) -> np.ndarray:
    v = np.asarray(x, dtype=float).reshape(-1)
    if n is not None and len(v) != n:
        raise InvalidParameterError(f"The {what} must have {n} entries. Got {len(v)} instead.")
    return v


def linear_contributions(
    coef: object, intercept: float, x: object, mean: object | None = None,
    names: Sequence[str] | None = None,
) -> Explanation:
    """Split ``intercept + coef·x`` into a base (the value at ``mean``) and per-feature parts."""
    w = _vec(coef, None, "coef")
    xv = _vec(x, len(w), "x")
    m = np.zeros(len(w)) if mean is None else _vec(mean, len(w), "mean")
    parts = w * (xv - m)
    return Explanation(
        value=float(intercept + w @ xv),
        base=float(intercept + w @ m),
        contributions=dict(zip(_names(names, len(w)), parts.tolist(), strict=True)),
    )


def pca_contributions(
    x: object, mean: object, components: object, scale: object | None = None,
    names: Sequence[str] | None = None,
) -> Explanation:
    """Split the PCA reconstruction error of ``x`` (rows of ``components`` orthonormal).

    ``scale`` (each feature's standard deviation, where the components were fitted on
    standardised features) must be positive and finite: a constant feature's 0 made every
    contribution NaN, not that feature's alone (give it 1, as scikit-learn's
    ``StandardScaler`` does).

    >>> pca_contributions([1.0, 2.0], [0.0, 0.0], [[1.0, 0.0]], scale=[1.0, 0.0],
    ...                   names=["flow", "rpm"])
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The scale must be positive and finite for every feature (each one's standard deviation; 1 for a constant one). Got 0.0 for 'rpm'.
    """  # noqa: E501
    m = _vec(mean, None, "mean")
    d = _vec(x, len(m), "x") - m
    if scale is not None:
        sc = _vec(scale, len(m), "scale").tolist()
        bad = [i for i, v in enumerate(sc) if not (math.isfinite(v) and v > 0.0)]
        if bad:
            keys = _names(names, len(m))
            raise InvalidParameterError(
                "The scale must be positive and finite for every feature (each one's "
                "standard deviation; 1 for a constant one). Got "
                + ", ".join(f"{sc[i]!r} for {keys[i]!r}" for i in bad[:5])
                + (f" and {len(bad) - 5} more" if len(bad) > 5 else "") + ".",
                field="scale", value=[sc[i] for i in bad[:5]])
        d = d / np.asarray(sc)
    p = np.atleast_2d(np.asarray(components, dtype=float))
    if p.shape[1] != len(m):
        raise InvalidParameterError(
            f"The components must have {len(m)} columns. Got shape {p.shape} instead."
        )
    r = d - p.T @ (p @ d)
    parts = r * r
    return Explanation(float(parts.sum()), 0.0,
                       dict(zip(_names(names, len(m)), parts.tolist(), strict=True)))


def quadratic_contributions(
    x: object, mean: object, precision: object, names: Sequence[str] | None = None
) -> Explanation:
    """Split ``dᵀ M d`` (``d = x - mean``, ``M`` symmetric) into ``d_i (M d)_i``.

    The terms sum exactly to ``dᵀ M d``, but a term says how much of the score runs
    through the sensor's own deviation ``d_i``, not whether the sensor is the one at fault:
    a sensor frozen at its mean while its partners move gets exactly 0. Rank sensors with
    :func:`conditional_shares`.

    >>> prec = np.linalg.inv(np.full((3, 3), 0.9) + 0.1 * np.eye(3))
    >>> e = quadratic_contributions([0.0, 3.0, 3.0], np.zeros(3), prec)  # x0 stuck
    >>> abs(e.contributions["x0"]), e.check()
    (0.0, True)
    """
    d, mat = _quadratic(x, mean, precision)
    parts = d * (mat @ d)
    return Explanation(float(d @ mat @ d), 0.0,
                       dict(zip(_names(names, len(d)), parts.tolist(), strict=True)))


def conditional_shares(
    x: object, mean: object, precision: object, names: Sequence[str] | None = None
) -> dict[str, float]:
    """Each sensor's share of the quadratic form ``dᵀ M d`` by its conditional residual.

    ``c_i = (M d)_i² / M_ii`` is how much ``dᵀ M d`` would drop were sensor ``i`` replaced
    by what the other sensors predict for it (its conditional expectation given them,
    ``M`` the precision, the inverse covariance): the square of how many conditional
    standard deviations it misses that prediction by. The shares are ``c_i / sum(c)``:
    non-negative, summing to 1 (all 0 when ``d`` is 0 or ``x`` or ``mean`` holds a value
    that is not finite; when some ``c_i`` is infinite, those sensors share 1 equally).
    With independent sensors (diagonal ``M``) ``c_i = d_i² M_ii``, the same as
    :func:`quadratic_contributions`' terms; a sensor stuck at its mean while its partners
    move leads, as does one spiking alone. They are the same
    in any units or offsets of the sensors and in any order of them, and of the deviation's
    size: where ``M d`` overflows (a reading near 1e308, a no-data sentinel), the shares are
    those of ``d`` scaled down (:func:`~edgewise.detect.mahalanobis.unit_deviation`; a
    ``d_i`` that itself overflowed, 1e308 from a mean of -1e308, dwarfs the rest), not
    the blame of whichever partner's entry overflowed first. They do not sum to the score:
    use :func:`quadratic_contributions` for a split that does.

    >>> prec = np.linalg.inv(np.full((3, 3), 0.9) + 0.1 * np.eye(3))  # correlation 0.9
    >>> s = conditional_shares([0.0, 3.0, 3.0], np.zeros(3), prec,
    ...                        names=["flow", "speed", "current"])   # flow stuck at its mean
    >>> {k: round(v, 3) for k, v in s.items()}
    {'flow': 0.618, 'speed': 0.191, 'current': 0.191}
    """
    with np.errstate(over="ignore"):  # x - mean past 1.8e308: inf, scaled below
        d, mat = _quadratic(x, mean, precision)
    read = bool(np.isfinite(_vec(x, None, "x")).all()
                and np.isfinite(_vec(mean, None, "mean")).all())  # else no shares
    with np.errstate(over="ignore", invalid="ignore"):
        w = mat @ d
        if not np.isfinite(w).all() and read and np.isfinite(mat).all():
            # the shares do not depend on d's scale; an infinite d_i (1e308 from -1e308)
            # dwarfs the rest (unit_deviation), where it split the blame with its partners
            w = mat @ unit_deviation(d)
        c = conditional_terms(w, np.diag(mat))
        total = float(c.sum())
    keys = _names(names, len(d))
    if not (read and math.isfinite(total) and total > 0.0):
        return {k: 0.0 for k in keys}
    return dict(zip(keys, (c / total).tolist(), strict=True))


def _quadratic(x: object, mean: object, precision: object) -> tuple[np.ndarray, np.ndarray]:
    """``(x - mean, symmetric part of precision)``, checked to fit each other."""
    m = _vec(mean, None, "mean")
    d = _vec(x, len(m), "x") - m
    mat = np.asarray(precision, dtype=float)
    if mat.shape != (len(m), len(m)):
        raise InvalidParameterError(
            f"The precision matrix must be {len(m)}x{len(m)}. Got shape {mat.shape} instead."
        )
    return d, (mat + mat.T) / 2
