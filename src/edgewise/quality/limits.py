"""Range and rate-of-change checks from per-metric limits.

>>> import numpy as np
>>> lim = Limits(low=0.0, high=100.0, max_rate=5.0)
>>> ts = np.array([0, 1, 2, 3]) * 10**9
>>> check_limits(ts, [10.0, 12.0, 150.0, 40.0], lim)
{'out_of_range': [2], 'rate': [3]}
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from edgewise.errors import QualityError
from edgewise.quality.base import as_series

__all__ = ["Limits", "check_limits"]


def _limit_value(x: object) -> float | None:
    """``x`` as a float when it is a real number other than a bool or NaN, else ``None``;
    an int past the largest float is infinite.

    >>> _limit_value(np.int64(3)), _limit_value(-10**400), _limit_value(True), _limit_value("1")
    (3.0, -inf, None, None)
    """
    if isinstance(x, bool | np.bool_) or not isinstance(x, numbers.Real):
        return None
    try:
        f = float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf
    return None if math.isnan(f) else f


@dataclass(frozen=True)
class Limits:
    """Allowed range ``[low, high]`` and largest change per second ``max_rate`` (None: any).

    Any real number is taken, numpy's too, and kept as a float; a bool is no limit.

    >>> import numpy as np
    >>> Limits(low=np.int64(0), high=np.float32(5))
    Limits(low=0.0, high=5.0, max_rate=None)
    """

    low: float | None = None
    high: float | None = None
    max_rate: float | None = None

    def __post_init__(self) -> None:
        for name in ("low", "high", "max_rate"):
            x = getattr(self, name)
            if x is None:
                continue
            f = _limit_value(x)
            if f is None:
                raise QualityError(f"Limit {name!r} must be a number or None. Got {x!r} instead.")
            object.__setattr__(self, name, f)  # frozen: as dataclasses do it themselves
        if self.low is not None and self.high is not None and self.low > self.high:
            raise QualityError(
                f"Limit 'low' ({self.low}) must not exceed 'high' ({self.high})."
            )
        if self.max_rate is not None and self.max_rate < 0:
            raise QualityError(f"Limit 'max_rate' must be >= 0. Got {self.max_rate!r} instead.")

    def in_range(self, value: float) -> bool:
        """Whether ``value`` lies within ``[low, high]``."""
        return (self.low is None or value >= self.low) and (
            self.high is None or value <= self.high
        )


def changes_too_fast(t0: int, v0: float, t1: int, v1: float, max_rate: float) -> bool:
    """Whether going from ``v0`` at ``t0`` to ``v1`` at ``t1`` (nanoseconds) changes by more
    than ``max_rate`` per second; a same-time change counts over one nanosecond.

    >>> changes_too_fast(0, 0.0, 10**9, 2.0, 1.0), changes_too_fast(0, 0.0, 10**9, 1.0, 1.0)
    (True, False)

    A change past the largest float (1e308 to -1e308) is judged in halves, exactly, with
    no RuntimeWarning (numpy's float64 readings overflowed to inf with one):

    >>> changes_too_fast(0, np.float64(-1e308), 2 * 10**9, np.float64(1e308), 1.5e308)
    False
    """
    dt = max((t1 - t0) / 1e9, 1e-9)  # Python ints: no int64 wrap
    a, b = float(v0), float(v1)  # Python floats: an overflow is inf, with no warning
    d = abs(b - a)
    if d == math.inf and -math.inf < a < math.inf and -math.inf < b < math.inf:
        return abs(b / 2 - a / 2) / dt > max_rate / 2
    return d / dt > max_rate


def check_limits(ts: object, values: object, limits: Limits) -> dict[str, list[int]]:
    """Indices out of range, and indices whose change from the last good reading is too fast.

    The rate is judged against the last reading that passed both checks, so one bad
    reading does not condemn the good one after it. The readings are judged in time order:
    a late reading against the one before its time (against the later one it arrived after,
    the interval was negative, taken as 1 ns, and it was too fast). A NaN is no reading
    the limits judge (it is invalid, as in the stream cleaner): in neither list, and the
    rate is judged across it (it was out of range only where a bound was set, and else
    became the last good reading, after which any jump passed).

    >>> check_limits(np.arange(3) * 10**9, [0.0, float("nan"), 1000.0], Limits(max_rate=1.0))
    {'out_of_range': [], 'rate': [2]}
    >>> check_limits(np.array([0, 2, 1, 3]) * 10**9, [0.0, 2.0, 1.0, 3.0], Limits(max_rate=1.5))
    {'out_of_range': [], 'rate': []}
    """
    t, v = as_series(ts, values)
    out_range, fast = [], []
    last_t = last_v = None
    for i in np.argsort(t, kind="stable").tolist():
        if math.isnan(v[i]):
            continue
        if not limits.in_range(v[i]):
            out_range.append(i)
            continue
        if limits.max_rate is not None and last_t is not None \
                and changes_too_fast(int(last_t), last_v, int(t[i]), v[i], limits.max_rate):
            fast.append(i)
            continue
        last_t, last_v = t[i], v[i]
    return {"out_of_range": sorted(out_range), "rate": sorted(fast)}
