"""Find gaps in a series (intervals much longer than usual) and measure completeness.

>>> ts = np.array([0, 1, 2, 3, 10, 11]) * 10**9
>>> [(int(a // 10**9), int(b // 10**9)) for a, b in find_gaps(ts)]
[(3, 10)]
>>> round(completeness(ts), 2)
0.5
"""

from __future__ import annotations

import numpy as np

__all__ = ["completeness", "expected_interval", "find_gaps", "intervals", "timeliness"]


def intervals(t: np.ndarray) -> np.ndarray:
    """The intervals between neighbours of ascending int64 times ``t``, exact as uint64:
    ``np.diff`` of int64 overflows where two times lie more than 2**63 ns (292 years)
    apart, a mistyped year among good readings, and gave negative intervals.

    >>> t = np.array([np.datetime64("1724-01-01", "ns"), np.datetime64("2024-01-01", "ns")])
    >>> int(intervals(t.astype(np.int64))[0]) // (365 * 86400 * 10**9)
    300
    """
    t = np.asarray(t, dtype=np.int64)
    return t[1:].astype(np.uint64) - t[:-1].astype(np.uint64)  # modulo 2**64: exact here


def expected_interval(ts: object) -> float:
    """The usual spacing: the median of the positive intervals (0 when there are none)."""
    d = intervals(np.unique(np.asarray(ts, dtype=np.int64)))
    return float(np.median(d)) if len(d) else 0.0


def find_gaps(
    ts: object, every_ns: float | None = None, factor: float = 2.5
) -> list[tuple[int, int]]:
    """``(start, end)`` of each interval longer than ``factor`` times the expected spacing."""
    t = np.unique(np.asarray(ts, dtype=np.int64))
    step = every_ns if every_ns is not None else expected_interval(t)
    if step <= 0 or len(t) < 2:
        return []
    d = intervals(t)
    return [(int(t[i]), int(t[i + 1])) for i in np.flatnonzero(d > factor * step)]


def completeness(ts: object, every_ns: float | None = None) -> float:
    """Distinct readings over the readings the expected spacing implies (at most 1.0)."""
    t = np.unique(np.asarray(ts, dtype=np.int64))
    step = every_ns if every_ns is not None else expected_interval(t)
    if len(t) < 2 or step <= 0:
        return 1.0 if len(t) else 0.0
    expected = (int(t[-1]) - int(t[0])) / step + 1  # Python ints: no int64 overflow
    return float(min(1.0, len(t) / expected))


def timeliness(ts: object, every_ns: float | None = None, factor: float = 1.5) -> float:
    """Share of intervals no longer than ``factor`` times the expected spacing.

    >>> timeliness(np.array([0, 1, 2, 5]))
    0.6666666666666666
    """
    t = np.unique(np.asarray(ts, dtype=np.int64))
    step = every_ns if every_ns is not None else expected_interval(t)
    if len(t) < 2 or step <= 0:
        return 1.0
    return float(np.mean(intervals(t) <= factor * step))
