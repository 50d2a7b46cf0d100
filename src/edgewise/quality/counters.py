"""Cumulative counters (an energy meter, a water meter, pulse counts): told apart from
levels, and their restarts and backward steps counted.

A counter only grows, except when it restarts from zero (a reboot, a rollover, an
"energy today" counter at midnight: a drop to half its last value or less). Any other
fall is a counter running backwards: a glitch, a replaced meter, tampering. A series is
taken for a counter when it rose at least three times and ran backwards at most once per
hundred rises, and restarted at most once per twenty (a flat series with spikes that fall
back "restarts" as often as it rises, and is a level).

For a counter the level drift of :mod:`~edgewise.quality.drift` says only that it counted,
so the report gives none; a stuck run (:mod:`~edgewise.quality.stuck`) is a stretch where
it did not count (idle, or a stuck meter).

>>> meter = np.r_[np.arange(200.0), 198.0 + np.arange(100.0), np.arange(1.0, 50.0)]
>>> counter_steps(meter)   # wound back by 2 once, restarted from zero once
{'counter': True, 'rises': 346, 'restarts': 1, 'backwards': 1}
>>> counter_steps([20.0, 21.0, 19.5, 20.5, 20.0])["counter"]
False
"""

from __future__ import annotations

import numpy as np

__all__ = ["counter_steps", "is_counter"]

#: At most one backward step per this many rises in a counter.
RISES_PER_BACKWARD = 100
#: At most one restart per this many rises in a counter.
RISES_PER_RESTART = 20


def counter_steps(values: object) -> dict[str, int | bool]:
    """Rises, restarts from zero and backward steps of a series (NaN skipped), and whether
    it is a counter by them."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    prev, cur = v[:-1], v[1:]
    rises = int((cur > prev).sum())
    falls = cur < prev
    restart = falls & (prev > 0) & (cur <= 0.5 * prev)
    restarts = int(restart.sum())
    backwards = int((falls & ~restart).sum())
    counter = (rises >= 3 and backwards * RISES_PER_BACKWARD <= rises
               and restarts * RISES_PER_RESTART <= rises)
    return {"counter": bool(counter), "rises": rises, "restarts": restarts,
            "backwards": backwards}


def is_counter(values: object) -> bool:
    """Whether the series is a cumulative counter (see :func:`counter_steps`).

    >>> is_counter(np.cumsum(np.ones(50))), is_counter(np.sin(np.arange(50)))
    (True, False)
    """
    return bool(counter_steps(values)["counter"])
