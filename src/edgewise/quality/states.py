"""Two-state series (a door open or shut, a pump running or not, a heater on or off, a
rain gauge's tips): told apart from measurements, so their long runs are not called stuck
and their switches are no spikes.

A device sends a boolean as ``true``/``false`` (SenML ``vb``), stored as 1.0 / 0.0
(:mod:`edgewise.telemetry`); a heater's power (0 or 1500 W), a pump's current (0 or 7.5 A)
or a rain gauge's tips (0 or 0.2 mm) have two levels of their own. Such a series holds one
value for as long as nothing happens, so a run of identical readings says nothing of a
stuck sensor, a drift score of its median says only which state was more common, and a
switch is no spike. A series is two-state when its finite readings take exactly two
values and both occur: any number of times for 0 and 1; else the rarer at least
:data:`MIN_STATE_COUNT` times and in at least :data:`MIN_STATE_SHARE` of the readings (a
flat 100.0 that drops to 0.0 now and then is a measurement with dropouts, whose dropouts
are spikes), and the series switched back at least once (one step from 20.0 to 25.0 is
a measurement's level shift, with a drift score). One that held a single value all along
cannot be told from a measurement that sat still, and is judged as one. ``on_fraction``
is the share of the higher value.

>>> two_state([0, 0, 1, 1, 1, 0, 0, 0])
{'binary': True, 'transitions': 2, 'on_fraction': 0.375}
>>> two_state([0.0, 0.5, 1.0])["binary"], two_state([1.0] * 5)["binary"]
(False, False)
>>> two_state(([0.0] * 10 + [1500.0] * 2) * 10)          # a heater, 2 on and 10 off
{'binary': True, 'transitions': 19, 'on_fraction': 0.1667}
>>> two_state([100.0] * 97 + [0.0] * 3)["binary"]       # three dropouts of a valve
False
>>> two_state([20.0] * 30 + [25.0] * 30)["binary"]      # one step: a level shift
False
"""

from __future__ import annotations

import numpy as np

__all__ = ["MIN_STATE_COUNT", "MIN_STATE_SHARE", "two_state"]

#: Readings the rarer of two levels other than 0 and 1 needs for a two-state series.
MIN_STATE_COUNT = 3
#: Share of the readings the rarer of two levels other than 0 and 1 needs for a two-state
#: series: a rain gauge that tips once in eight readings is two-state, a valve that drops
#: to 0 once in fifty readings has dropouts.
MIN_STATE_SHARE = 0.05


def two_levels(a: tuple[float, int], b: tuple[float, int], switches: int) -> bool:
    """Whether a series of exactly two values, ``a`` and ``b`` (each ``(value, count)``),
    that switched between them ``switches`` times is two-state: 0 and 1 (a boolean), or
    whose rarer value came :data:`MIN_STATE_COUNT` times and in :data:`MIN_STATE_SHARE` of
    the readings, with two switches (a heater's 0 and 1500 W; one step is a level shift).
    The one rule of :func:`two_state` and of the stream cleaner's.

    >>> two_levels((0.0, 40), (1500.0, 3), switches=4), two_levels((1.0, 1), (0.0, 99), 1)
    (True, True)
    >>> two_levels((20.0, 50), (25.0, 50), switches=1)
    False
    """
    (x, nx), (y, ny) = a, b
    if x + y == 1.0 and x * y == 0.0:  # 0 and 1, either way round
        return True
    rare = min(nx, ny)
    return rare >= MIN_STATE_COUNT and rare >= MIN_STATE_SHARE * (nx + ny) and switches >= 2


def two_state(values: object) -> dict[str, bool | int | float]:
    """Whether a series (NaN skipped) is two-state, its switches, and its share of the
    higher value (of 1s for a boolean)."""
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    levels, counts = np.unique(v, return_counts=True)
    switches = int((v[1:] != v[:-1]).sum())
    binary = len(levels) == 2 and two_levels(
        (float(levels[0]), int(counts[0])), (float(levels[1]), int(counts[1])), switches)
    if not binary:
        return {"binary": False, "transitions": 0, "on_fraction": 0.0}
    return {"binary": True, "transitions": switches,
            "on_fraction": round(float(counts[1]) / len(v), 4)}
