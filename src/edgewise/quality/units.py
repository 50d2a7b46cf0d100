"""Unit sanity from SenML units (RFC 8428 section 12.1): known unit, physically possible value.

A value is impossible only where no reading in its unit can cross the bound: below
absolute zero, a latitude past a pole, a relative humidity or battery level outside
0..100 %. Bounds a metric should keep (a tank level in %, a pump's suction pressure)
are its :class:`~edgewise.quality.limits.Limits`.

>>> check_unit("Cel", [21.5, -300.0])
{'known': True, 'impossible': [1]}
>>> check_unit("%", [130.0])["impossible"], check_unit("bar", [-0.4])["impossible"]
([], [])
>>> check_unit("furlongs", [1.0])["known"]
False
"""

from __future__ import annotations

import numpy as np

__all__ = ["PHYSICAL_RANGE", "SENML_UNITS", "check_unit"]

#: SenML units: the IANA SenML Units registry RFC 8428 section 12.1 set up (with NTU,
#: registered since), the secondary units of RFC 8798 (``kWh``, ``ug/m3``, ``cm`` ...),
#: and a few common units gateways accept (``kPa``, ``bar``, ``mbar``, ``rpm``, ``ppb``,
#: ``mm/s``).
SENML_UNITS = frozenset(
    # RFC 8428 section 12.1 (and NTU)
    "m kg g s A K cd mol Hz rad sr N Pa J W C V F Ohm S Wb T H Cel lm lx Bq Gy Sv kat "
    "m2 m3 l m/s m/s2 m3/s l/s W/m2 cd/m2 bit bit/s lat lon pH dB dBW Bspl count / % %RH "
    "%EL EL 1/s 1/min beat/min beats S/m B VA VAs var vars J/m kg/m3 deg NTU "
    # RFC 8798 secondary units
    "ms min h MHz kW kVA kvar Ah Wh kWh varh kvarh kVAh Wh/km KiB GB Mbit/s B/s MB/s mV mA "
    "dBm ug/m3 mm/h m/h ppm /100 /1000 hPa mm cm km km/h "
    # common, unregistered
    "kPa bar mbar rpm ppb mm/s".split()
)

#: Values no reading in these units can take. None for a pressure (a gauge reads below
#: 0 under vacuum, and SenML does not say gauge or absolute), a mass (a tared scale's net
#: weight), a share (``%``, ``/``, ``ppm``: a drive at 130 % load, a clock 20 ppm slow),
#: a frequency or speed (signed on a drive running in reverse) or pH (below 0 in strong
#: acids): a metric's own bounds are its :class:`~edgewise.quality.limits.Limits`.
PHYSICAL_RANGE: dict[str, tuple[float, float]] = {
    "K": (0.0, np.inf),
    "Cel": (-273.15, np.inf),
    "%RH": (0.0, 100.0),
    "%EL": (0.0, 100.0),
    "count": (0.0, np.inf),
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
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
