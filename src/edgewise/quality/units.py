"""Unit sanity from SenML units (RFC 8428 section 12.1): known unit, physically possible value.

>>> check_unit("Cel", [21.5, -300.0])
{'known': True, 'impossible': [1]}
>>> check_unit("furlongs", [1.0])["known"]
False
"""

from __future__ import annotations

import numpy as np

__all__ = ["PHYSICAL_RANGE", "SENML_UNITS", "check_unit"]

#: SenML units (RFC 8428 registry and common secondary units accepted by gateways).
SENML_UNITS = frozenset(
    "m kg g s A K cd mol Hz rad sr N Pa J W C V F Ohm S Wb T H Cel lm lx Bq Gy Sv kat "
    "m2 m3 l m/s m/s2 m3/s l/s W/m2 cd/m2 bit bit/s lat lon pH dB dBW Bspl count / % %RH "
    "%EL EL 1/s 1/min beat/min beats VA VAs var vars J/m Wh kWh mm mm/s ms min h MHz kW "
    "kVA kvar Ah km/h kPa mbar bar hPa rpm ppm ppb deg mV mA dBm".split()
)

#: Values no healthy sensor can report in these units.
PHYSICAL_RANGE: dict[str, tuple[float, float]] = {
    "K": (0.0, np.inf),
    "Cel": (-273.15, np.inf),
    "%": (0.0, 100.0),
    "%RH": (0.0, 100.0),
    "%EL": (0.0, 100.0),
    "pH": (0.0, 14.0),
    "Pa": (0.0, np.inf),
    "kPa": (0.0, np.inf),
    "hPa": (0.0, np.inf),
    "bar": (0.0, np.inf),
    "mbar": (0.0, np.inf),
    "kg": (0.0, np.inf),
    "g": (0.0, np.inf),
    "count": (0.0, np.inf),
    "Hz": (0.0, np.inf),
    "rpm": (0.0, np.inf),
    "ppm": (0.0, 1e6),
    "ppb": (0.0, 1e9),
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
    "/": (0.0, 1.0),
}


def check_unit(unit: str | None, values: object) -> dict[str, object]:
    """Whether ``unit`` is a known SenML unit, and the indices of impossible values."""
    v = np.asarray(values, dtype=float)
    if unit is None:
        return {"known": True, "impossible": []}
    lo, hi = PHYSICAL_RANGE.get(unit, (-np.inf, np.inf))
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero((v < lo) | (v > hi))
    return {"known": unit in SENML_UNITS, "impossible": bad.tolist()}
