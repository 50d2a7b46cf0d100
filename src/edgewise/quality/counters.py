"""Cumulative counters (an energy meter, a water meter, pulse counts): told apart from
levels, and their restarts and backward steps counted.

A counter only grows, except when it restarts from zero (a reboot, a rollover, an
"energy today" counter at midnight: a drop to half its last value or less). Any other
fall is a counter running backwards: a glitch, a replaced meter, tampering. A series is
taken for a counter when it rose at least three times and ran backwards at most once per
hundred rises, and restarted at most once per twenty (a flat series with spikes that fall
back "restarts" as often as it rises, and is a level).

By its values alone a level that only creeps up (a sensor reporting tenths, drifting from
20.0 to 23.0 without a tick back) looks like a meter. Where its unit is known and measures
a level (:data:`LEVEL_UNITS`: a temperature, a humidity, a pressure, a power, a speed ...)
it is never taken for a counter, and the report gives its drift. A unit a meter may count
in (``Wh``, ``kWh``, ``J``, ``m3``, ``l``, ``count``, ``B``, ``h``, ``m``, ``kg`` ...) or no
unit leaves it to the values.

For a counter the level drift of :mod:`~edgewise.quality.drift` says only that it counted,
so the report gives none; a stuck run (:mod:`~edgewise.quality.stuck`) is a stretch where
it did not count (idle, or a stuck meter).

>>> meter = np.r_[np.arange(200.0), 198.0 + np.arange(100.0), np.arange(1.0, 50.0)]
>>> counter_steps(meter)   # wound back by 2 once, restarted from zero once
{'counter': True, 'rises': 346, 'restarts': 1, 'backwards': 1}
>>> counter_steps([20.0, 21.0, 19.5, 20.5, 20.0])["counter"]
False
>>> creep = np.round(np.linspace(20.0, 23.0, 400), 1)   # tenths, never back
>>> counter_steps(creep)["counter"], counter_steps(creep, units=["Cel"])["counter"]
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["LEVEL_UNITS", "counter_steps", "is_counter", "level_unit"]

#: SenML units (:data:`~edgewise.quality.units.SENML_UNITS`) of levels, rates and shares,
#: which no cumulative counter counts in: a series in them is never a counter. Left out:
#: those a meter may count in (energy, charge, volume, mass, length, time, counts, bytes).
LEVEL_UNITS = frozenset(
    "K Cel %RH %EL EL % / /100 /1000 ppm ppb pH NTU ug/m3 kg/m3 "  # temperature, shares
    "Pa kPa hPa bar mbar "  # pressure
    "V mV A mA W kW VA kVA var kvar Ohm S S/m F H T Wb Hz MHz "  # electrical
    "m/s m/s2 km/h mm/s mm/h m/h m3/s l/s rpm 1/s 1/min beat/min bit/s B/s MB/s Mbit/s "
    "W/m2 cd cd/m2 lm lx dB dBW dBm Bspl N lat lon deg rad sr Wh/km Bq kat".split()
)

#: At most one backward step per this many rises in a counter.
RISES_PER_BACKWARD = 100
#: At most one restart per this many rises in a counter.
RISES_PER_RESTART = 20


def level_unit(units: Iterable[str | None]) -> bool:
    """Whether ``units`` (those of a series' readings; ``None``: none given) name a unit and
    every one named is a level's (:data:`LEVEL_UNITS`): such a series is no counter.

    >>> level_unit(["Cel", None]), level_unit(["kWh"]), level_unit([None]), level_unit([])
    (True, False, False, False)
    """
    named = [u for u in units if u is not None]
    return bool(named) and all(u in LEVEL_UNITS for u in named)


def counter_steps(values: object, units: Iterable[str | None] = ()) -> dict[str, int | bool]:
    """Rises, restarts from zero and backward steps of a series (NaN skipped), and whether
    it is a counter by them; never where ``units``, its readings' units, are a level's
    (:func:`level_unit`)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    prev, cur = v[:-1], v[1:]
    rises = int((cur > prev).sum())
    falls = cur < prev
    restart = falls & (prev > 0) & (cur <= 0.5 * prev)
    restarts = int(restart.sum())
    backwards = int((falls & ~restart).sum())
    counter = (rises >= 3 and backwards * RISES_PER_BACKWARD <= rises
               and restarts * RISES_PER_RESTART <= rises and not level_unit(units))
    return {"counter": bool(counter), "rises": rises, "restarts": restarts,
            "backwards": backwards}


def is_counter(values: object, units: Iterable[str | None] = ()) -> bool:
    """Whether the series is a cumulative counter (see :func:`counter_steps`).

    >>> is_counter(np.cumsum(np.ones(50))), is_counter(np.sin(np.arange(50)))
    (True, False)
    """
    return bool(counter_steps(values, units)["counter"])
