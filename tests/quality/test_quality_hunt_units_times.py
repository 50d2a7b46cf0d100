"""What a data-quality hunt found wrong with units, times and limits: a drive at 130 %
load and a pump's suction under vacuum (-0.4 bar gauge) were 'impossible' and never
scored; units of the SenML registry were unknown; a row's ``ts`` in epoch seconds was
read as nanoseconds; a grid over three centuries wrapped int64; numpy limits were
refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgewise.config import Settings
from edgewise.errors import QualityError
from edgewise.gateway.pipeline import Pipeline
from edgewise.quality import resample as resample_module
from edgewise.quality.limits import Limits
from edgewise.quality.report import device_report
from edgewise.quality.resample import resample
from edgewise.quality.stream import StreamCleaner
from edgewise.quality.units import check_unit
from edgewise.store import open_store
from edgewise.telemetry import Reading

S = 10**9
YEAR = 365 * 86400 * S
T1724 = int(np.datetime64("1724-01-01T00:00:00", "ns").astype(np.int64))
T2023 = 1_700_000_000 * S

#: RFC 8428 section 12.1, the SenML Units registry (and NTU, registered since).
RFC8428 = (
    "m kg g s A K cd mol Hz rad sr N Pa J W C V F Ohm S Wb T H Cel lm lx Bq Gy Sv kat m2 m3 "
    "l m/s m/s2 m3/s l/s W/m2 cd/m2 bit bit/s lat lon pH dB dBW Bspl count / % %RH %EL EL "
    "1/s 1/min beat/min beats S/m B VA VAs var vars J/m kg/m3 deg NTU").split()
#: RFC 8798 section 4, the secondary units.
RFC8798 = (
    "ms min h MHz kW kVA kvar Ah Wh kWh varh kvarh kVAh Wh/km KiB GB Mbit/s B/s MB/s mV mA "
    "dBm ug/m3 mm/h m/h ppm /100 /1000 hPa mm cm km km/h").split()


@pytest.mark.parametrize(("unit", "value"), [
    ("%", 130.0), ("%", -5.0), ("/", 1.3), ("ppm", -20.0), ("bar", -0.4), ("Pa", -40e3),
    ("kPa", -40.0), ("hPa", -400.0), ("mbar", -400.0), ("kg", -0.2), ("rpm", -1450.0),
    ("Hz", -50.0), ("pH", -0.5)])
def test_a_value_real_sensors_report_is_possible(unit: str, value: float) -> None:
    """Check an overload, a gauge under vacuum, a tared scale's net weight, a drive in
    reverse and a strong acid are possible in their units: kept by the stream cleaner and
    in range in the batch report."""
    assert check_unit(unit, [value])["impossible"] == []
    rows = [Reading("d", "m", i * S, value + 0.01 * (i % 3), unit=unit) for i in range(10)]
    c = StreamCleaner()
    assert len(c.clean(rows)) == 10 and dict(c.removed) == {}
    assert device_report(rows)["metrics"]["m"]["out_of_range"] == 0


@pytest.mark.parametrize(("unit", "value"), [
    ("K", -1.0), ("Cel", -300.0), ("lat", 91.0), ("lon", -181.0), ("%RH", 101.0),
    ("%RH", -1.0), ("%EL", 100.5), ("count", -1.0)])
def test_a_value_past_a_physical_bound_is_impossible(unit: str, value: float) -> None:
    assert check_unit(unit, [value])["impossible"] == [0]
    c = StreamCleaner()
    assert c.clean_one(Reading("d", "m", 0, value, unit=unit)) is None
    assert dict(c.removed) == {"out_of_range": 1}


def test_the_gateway_scores_a_suction_under_vacuum_and_an_overload() -> None:
    """Check the pipeline's cleaner keeps all 40 suction readings in bar (all 40 were
    out_of_range) and the 130 % overload among the drive loads."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(), detect_async=False)
    try:
        for i in range(40):
            load = 130.0 if i == 35 else 80.0 + i % 3
            body = [{"bn": "pump-1/", "bt": 1_700_000_000 + i, "n": "load", "u": "%",
                     "v": load}, {"n": "suction", "u": "bar", "v": -0.40 + 0.01 * (i % 3)}]
            p.ingest("pump-1", json.dumps(body).encode())
        got = p.quality_counts("pump-1")["metrics"]
    finally:
        p.close()
        store.close()
    assert (got["suction"]["kept"], got["suction"]["removed"]) == (40, {})
    assert (got["load"]["kept"], got["load"]["removed"]) == (40, {})


@pytest.mark.parametrize("unit", RFC8428 + RFC8798)
def test_every_registered_senml_unit_is_known(unit: str) -> None:
    assert check_unit(unit, [1.0])["known"] is True


@pytest.mark.parametrize("ts", [
    [1_700_000_000 + i for i in range(10)],                       # epoch s: compact 'ts'
    [1_700_000_000_000 + 1000 * i for i in range(10)],            # epoch ms
    [f"2023-11-14T22:13:{20 + i}Z" for i in range(10)]])          # RFC 3339
def test_a_rows_ts_is_read_as_telemetry_reads_it(ts: list) -> None:
    """Check rows with ``ts`` in epoch seconds (the compact payload's) report a 1 s
    interval, not 1 ns, as do milliseconds and RFC 3339 text; ``ts_ns`` stays ns."""
    rows = [{"device_id": "d", "metric": "m", "ts": t, "value": 20.0 + i % 3}
            for i, t in enumerate(ts)]
    m = device_report(rows)["metrics"]["m"]
    assert (m["interval_s"], m["distinct_times"], m["gaps"]) == (1.0, 10, 0)
    rows = [{"device_id": "d", "metric": "m", "ts_ns": i * S, "value": 1.0} for i in range(3)]
    assert device_report(rows)["metrics"]["m"]["interval_s"] == 1.0


@pytest.mark.parametrize("bad", ["soon", True, 1e30])
def test_a_ts_that_is_no_time_is_refused_naming_ts_ns(bad: object) -> None:
    rows = [{"device_id": "d", "metric": "m", "ts": bad, "value": 1.0}]
    with pytest.raises(QualityError, match=r"'ts' must be .*give int nanoseconds as 'ts_ns'"):
        device_report(rows)


@pytest.mark.parametrize("how", ["mean", "last", "interpolate"])
def test_a_yearly_grid_over_three_centuries(how: str) -> None:
    """Check 1724 and 2023 on a grid of years: 301 ascending points (the int64 length
    wrapped: a bare numpy ValueError), the readings in their bins, and no bridge over
    the 300 years for ``interpolate``."""
    grid, v = resample(np.array([T1724, T2023]), [1.0, 2.0], every_ns=YEAR, how=how,
                       max_gap_ns=10 * YEAR)
    assert len(grid) == 301 and bool(np.all(grid[1:] > grid[:-1]))
    assert grid[0] <= T1724 < grid[1] and grid[-1] <= T2023 < grid[-1] + YEAR
    # interpolate: the first grid point lies before 1724's reading, where nothing is known
    assert (np.isnan(v[0]) if how == "interpolate" else v[0] == 1.0)
    assert np.isnan(v[1:-1]).all()
    if how == "interpolate":  # 2023's reading lies after the last grid point
        assert np.isnan(v[-1])
    else:
        assert v[-1] == 2.0


def test_a_grid_too_long_is_refused_naming_span_and_step() -> None:
    with pytest.raises(QualityError, match=r"9,463,040,001 points.* span 9\.46304e\+09 s "
                                           r"\(1724-01-01 to 2023-11-14\).* every_ns is "
                                           r"1000000000"):
        resample(np.array([T1724, T2023]), [1.0, 2.0], every_ns=S)
    assert resample_module.MAX_GRID_POINTS < 9_463_040_001


def test_limits_take_numpy_numbers_as_floats() -> None:
    """Check np.int64 and np.float32 limits are taken (refused as 'not a number') and kept
    as floats; a bool, text and NaN stay refused."""
    lim = Limits(low=np.int64(0), high=np.float32(5), max_rate=np.float64(1.5))
    assert (lim.low, lim.high, lim.max_rate) == (0.0, 5.0, 1.5)
    assert all(type(x) is float for x in (lim.low, lim.high, lim.max_rate))
    c = StreamCleaner(limits={"m": lim})
    assert [c.clean_one(Reading("d", "m", i * S, v)) is not None
            for i, v in enumerate([1.0, 9.0, 2.0])] == [True, False, True]
    for bad in (True, np.bool_(False), "5", float("nan"), np.float32("nan")):
        with pytest.raises(QualityError, match="Limit 'high' must be a number or None"):
            Limits(high=bad)
