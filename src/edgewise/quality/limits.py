"""Range and rate-of-change checks from per-metric limits.

>>> import numpy as np
>>> lim = Limits(low=0.0, high=100.0, max_rate=5.0)
>>> ts = np.array([0, 1, 2, 3]) * 10**9
>>> check_limits(ts, [10.0, 12.0, 150.0, 40.0], lim)
{'out_of_range': [2], 'rate': [3]}
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgewise.errors import QualityError
from edgewise.quality.base import as_series

__all__ = ["Limits", "check_limits"]


@dataclass(frozen=True)
class Limits:
    """Allowed range ``[low, high]`` and largest change per second ``max_rate`` (None: any)."""

    low: float | None = None
    high: float | None = None
    max_rate: float | None = None

    def __post_init__(self) -> None:
        for name in ("low", "high", "max_rate"):
            x = getattr(self, name)
            if x is not None and (not isinstance(x, int | float) or math.isnan(x)):
                raise QualityError(f"Limit {name!r} must be a number or None. Got {x!r} instead.")
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


def check_limits(ts: object, values: object, limits: Limits) -> dict[str, list[int]]:
    """Indices out of range, and indices whose change from the last good reading is too fast.

    The rate is judged against the last reading that passed both checks, so one bad
    reading does not condemn the good one after it.
    """
    t, v = as_series(ts, values)
    out_range, fast = [], []
    last_t = last_v = None
    for i in range(len(v)):
        if not limits.in_range(v[i]):
            out_range.append(i)
            continue
        if limits.max_rate is not None and last_t is not None:
            dt = max((int(t[i]) - int(last_t)) / 1e9, 1e-9)  # Python ints: no int64 wrap
            if abs(v[i] - last_v) / dt > limits.max_rate:
                fast.append(i)
                continue
        last_t, last_v = t[i], v[i]
    return {"out_of_range": out_range, "rate": fast}
