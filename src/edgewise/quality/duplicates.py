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
        raise QualityError("deduplicate needs times sorted ascending; call sort_by_time first.")
    if not len(t):
        return CleanResult(t, v, {"duplicate": 0, "conflict": 0}, 0)
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])
    ends = np.r_[starts[1:], len(t)]
    out = np.empty(len(starts))
    dup = conflict = 0
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        group = v[s:e]
        # each later reading against the first, as the stream cleaner judges it against
        # the one it kept: [23, 30, 23] holds a conflict and a duplicate
        same = (group[1:] == group[0]) | (np.isnan(group[1:]) & np.isnan(group[0]))
        dup += int(same.sum())
        if same.all():
            out[i] = group[0]
            continue
        conflict += int((~same).sum())
        if policy == "error":
            raise QualityError(
                f"Conflicting values {group.tolist()} at time {int(t[s])} ns; "
                "policy 'error' allows none (use 'first', 'last' or 'mean')."
            )
        out[i] = {"first": group[0], "last": group[-1]}.get(policy, np.nanmean(group))
    return CleanResult(t[starts], out, {"duplicate": dup, "conflict": conflict}, len(t))
