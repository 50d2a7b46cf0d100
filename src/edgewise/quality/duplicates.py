"""Remove repeated timestamps with an explicit policy for conflicting values.

A *duplicate* repeats a time with the value of its first reading (a re-delivery); a
*conflict* repeats a time with a different value. ``policy`` says which value survives a conflict:
``"first"``, ``"last"``, ``"mean"``, or ``"error"`` (raise :class:`QualityError`).

>>> r = deduplicate([1, 1, 2, 2], [5.0, 5.0, 7.0, 9.0], policy="last")
>>> r.ts.tolist(), r.values.tolist(), r.removed
([1, 2], [5.0, 9.0], {'duplicate': 1, 'conflict': 1})
>>> deduplicate([1, 1, 1], [23.0, 30.0, 23.0]).removed
{'duplicate': 1, 'conflict': 1}
"""

from __future__ import annotations

import numpy as np

from edgewise.errors import QualityError
from edgewise.quality.base import CleanResult, as_series

__all__ = ["POLICIES", "deduplicate"]

POLICIES = ("first", "last", "mean", "error")


def deduplicate(ts: object, values: object, policy: str = "first") -> CleanResult:
    """One reading per time; input must be sorted by time (see ``order.sort_by_time``)."""
    if policy not in POLICIES:
        raise QualityError(
            f"The 'policy' parameter of deduplicate must be one of {POLICIES}. "
            f"Got {policy!r} instead."
        )
    t, v = as_series(ts, values)
    if len(t) > 1 and np.any(t[1:] < t[:-1]):  # no np.diff: it overflows past 2**63 ns
        at = int(np.flatnonzero(t[1:] < t[:-1])[0])
        raise QualityError(
            f"deduplicate needs times sorted ascending; time {int(t[at + 1])} at index "
            f"{at + 1} comes after {int(t[at])}. Call sort_by_time first.")
    new = np.r_[True, t[1:] != t[:-1]] if len(t) else np.zeros(0, dtype=bool)
    if new.all():  # no time repeats (no reading too): nothing to remove
        return CleanResult(t.copy(), v.copy(), {"duplicate": 0, "conflict": 0}, len(t))
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(t)]
    group = np.cumsum(new) - 1  # each reading's time, as its index in starts
    first = v[starts]
    # each later reading against the first, as the stream cleaner judges it against the
    # one it kept: [23, 30, 23] holds a conflict and a duplicate
    same = (v == first[group]) | (np.isnan(v) & np.isnan(first[group]))
    dup = int((same & ~new).sum())
    differs = ~same & ~new
    conflict = int(differs.sum())
    out = first.copy()
    if conflict:
        clash = np.bincount(group[differs], minlength=len(starts)) > 0  # times in conflict
        if policy == "error":
            i = int(np.argmax(clash))
            s, e = int(starts[i]), int(ends[i])
            raise QualityError(
                f"Conflicting values {v[s:e].tolist()} at time {int(t[s])} ns; "
                "policy 'error' allows none (use 'first', 'last' or 'mean')."
            )
        if policy == "last":
            out[clash] = v[ends - 1][clash]
        elif policy == "mean":
            out[clash] = _means(v, group, starts, ends, clash)
    return CleanResult(t[starts], out, {"duplicate": dup, "conflict": conflict}, len(t))


def _means(v: np.ndarray, group: np.ndarray, starts: np.ndarray, ends: np.ndarray,
           which: np.ndarray) -> np.ndarray:
    """``np.nanmean`` of each group of readings ``v[starts[i]:ends[i]]`` where ``which``
    (each holds a number: a conflict), in order. The sums of groups of fewer than 8 are
    taken at once (np.bincount adds them in order, as np.sum does so few); a larger group,
    which np.sum adds pairwise, is averaged by np.nanmean itself, so that the means are
    exactly those of the loop this replaced.

    >>> v = np.array([1.0, np.nan, 3.0, 5.0])
    >>> _means(v, np.array([0, 0, 0, 1]), np.array([0, 3]), np.array([3, 4]),
    ...        np.array([True, False])).tolist()
    [2.0]
    """
    nan = np.isnan(v)
    sums = np.bincount(group, weights=np.where(nan, 0.0, v), minlength=len(starts))
    counts = np.bincount(group, weights=~nan, minlength=len(starts))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    big = which & (ends - starts >= 8)
    for i in np.flatnonzero(big).tolist():
        means[i] = np.nanmean(v[starts[i]:ends[i]])
    return means[which]
