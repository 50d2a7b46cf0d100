"""Two-state series (a door open or shut, a pump running or not, an alarm contact):
told apart from measurements, so their long runs are not called stuck.

A device sends a boolean as ``true``/``false`` (SenML ``vb``), stored as 1.0 / 0.0
(:mod:`edgewise.telemetry`). Such a series holds one value for as long as nothing happens,
so a run of identical readings says nothing of a stuck sensor, a drift score of its median
says only which state was more common, and a switch is no spike. A series is two-state
when every finite reading is 0 or 1 and both occur; one that held a single value all along
cannot be told from a measurement that sat still, and is judged as one.

>>> two_state([0, 0, 1, 1, 1, 0, 0, 0])
{'binary': True, 'transitions': 2, 'on_fraction': 0.375}
>>> two_state([0.0, 0.5, 1.0])["binary"], two_state([1.0] * 5)["binary"]
(False, False)
"""

from __future__ import annotations

import numpy as np

__all__ = ["two_state"]


def two_state(values: object) -> dict[str, bool | int | float]:
    """Whether a series (NaN skipped) is two-state, its switches, and its share of 1s."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    ones = v == 1.0
    binary = bool(len(v)) and bool(np.all(ones | (v == 0.0))) and 0 < int(ones.sum()) < len(v)
    if not binary:
        return {"binary": False, "transitions": 0, "on_fraction": 0.0}
    return {"binary": True, "transitions": int((v[1:] != v[:-1]).sum()),
            "on_fraction": round(float(ones.mean()), 4)}
