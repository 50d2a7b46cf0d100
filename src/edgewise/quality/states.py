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


def two_state(values: object) -> dict[str, bool | int | float]:
    """Whether a series (NaN skipped) is two-state, its switches, and its share of the
    higher value (of 1s for a boolean)."""
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    levels, counts = np.unique(v, return_counts=True)
    switches = int((v[1:] != v[:-1]).sum())
    binary = len(levels) == 2 and (
        (levels[0] == 0.0 and levels[1] == 1.0)
        or (int(counts.min()) >= MIN_STATE_COUNT
            and int(counts.min()) >= MIN_STATE_SHARE * len(v) and switches >= 2))
    if not binary:
        return {"binary": False, "transitions": 0, "on_fraction": 0.0}
    return {"binary": True, "transitions": switches,
            "on_fraction": round(float(counts[1]) / len(v), 4)}
