"""Forecasting hunt, session 39: a longer history refused where a shorter one fit, a stated
minimum then refused for too few training rows, a message overflowing pandas' Timedelta,
a list of timezone-aware datetimes refused, a store's whole history loaded as tuples, and
the benchmark's NaN (invalid JSON) for a flat series."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.bench import forecast as bench
from edgewise.cli import app, load_commands
from edgewise.cli import forecast as cli_forecast
from edgewise.errors import InvalidParameterError
from edgewise.models.forecast import Forecaster, _span, to_ns
from edgewise.store import open_store
from edgewise.telemetry import Reading

load_commands()
HOUR = 3600 * 10**9


def cli(*args: str) -> Any:
    return CliRunner(mix_stderr=False).invoke(app, list(args))


def _daily(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` hourly readings of a plain daily cycle with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return t * HOUR, 20 + 5 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.3, n)


@pytest.mark.parametrize("n", [500, 504, 540, 571, 572])
def test_a_longer_history_is_never_refused_where_a_shorter_one_fits(n: int) -> None:
    """Check horizon 72 on hourly readings fits at every length from 500 steps: at 504 (three
    weeks) the weekly season became testable, was found, doubled the lookback to 336 and
    had fit refuse 504..571 steps, while 500 fit. A found season the history cannot hold
    is left out (the daily one kept); at 572 both are kept. Weekends 3 lower: since session
    45 a weekly season is kept only where the days are not all alike."""
    ts, y = _daily(n)
    t = np.arange(n)
    y = y - 3.0 * (((t // 24) + 3) % 7 >= 5)
    model = Forecaster(horizon=72, n_estimators=10).fit(ts, y)
    assert sorted(model.seasons_) == ([24, 168] if n >= 572 else [24]), model.seasons_
    assert len(model.predict()) == 72


@pytest.mark.parametrize("horizon", [1, 2, 3, 4, 12])
def test_the_stated_minimum_is_accepted_and_one_less_refused(horizon: int) -> None:
    """Check the count a too-short gapless history is told is one fit accepts, and one step
    less is refused with the same count: horizon 1 was told 29 steps, and 29 gapless steps
    were then refused for "only 2 training rows ... mostly empty steps" (up to 46)."""
    ts, y = _daily(400)
    with pytest.raises(InvalidParameterError, match=r"at least \d+ steps of 1h") as err:
        Forecaster(horizon=horizon, n_estimators=5).fit(ts[:10], y[:10])
    need = int(re.search(r"at least (\d+) steps", str(err.value))[1])  # type: ignore[index]
    assert err.value.value == 10 and "training rows" not in str(err.value)
    Forecaster(horizon=horizon, n_estimators=5).fit(ts[:need], y[:need])
    with pytest.raises(InvalidParameterError, match=f"at least {need} steps of 1h .* got "
                       f"{need - 1} steps") as err:
        Forecaster(horizon=horizon, n_estimators=5).fit(ts[:need - 1], y[:need - 1])
    assert (err.value.field, err.value.value) == ("values", need - 1)


@pytest.mark.parametrize("n", range(40, 100, 3))
def test_horizon_one_fits_every_gapless_history_from_its_minimum(n: int) -> None:
    """Check horizon 1 fits each gapless hourly history of 47 steps or more (72 and 80 were
    refused for 3 and 11 training rows once the daily season was found at 72)."""
    ts, y = _daily(n)
    if n < 47:
        with pytest.raises(InvalidParameterError, match="at least 47 steps"):
            Forecaster(horizon=1, n_estimators=5).fit(ts, y)
    else:
        Forecaster(horizon=1, n_estimators=5).fit(ts, y)


@pytest.mark.parametrize(("kw", "words"), [
    ({"horizon": 1_000_000}, "at least 3000044 steps of 1h (125001d20h) for horizon 1000000"),
    ({"season": 1_000_000_000}, "(104166666d23h) for horizon 48 and season 1000000000"),
    ({"step": "1000d"}, "at least 188 steps of 1000d (188000d)"),
])
def test_a_refusal_spanning_centuries_is_said_not_a_timedelta_overflow(
        kw: dict[str, Any], words: str) -> None:
    """Check a history refusal whose needed span is past pandas' 292 years names it (it
    raised OutOfBoundsTimedelta building the message: a traceback and exit 1 from the CLI)."""
    ts, y = _daily(240)
    with pytest.raises(InvalidParameterError) as err:
        Forecaster(n_estimators=5, **kw).fit(ts, y)
    assert words in str(err.value), str(err.value)
    assert _span(10**6 * 3 * 86_400 * 10**9) == "3000000d"


def test_train_with_a_huge_horizon_is_one_error_line(tmp_path: Path) -> None:
    """Check ``train forecast --horizon 1000000`` on 10 days is one ``error:`` line and exit
    2 (a traceback and exit 1)."""
    ts, y = _daily(240)
    csv = tmp_path / "h.csv"
    pd.DataFrame({"time": ts // 10**9, "value": y}).to_csv(csv, index=False)
    done = cli("train", "forecast", "--csv", str(csv), "--column", "value", "--out",
               str(tmp_path / "m.forecast"), "--horizon", "1000000")
    assert done.exit_code == 2, done.stderr
    assert done.stderr.startswith("error: Forecaster needs a history of at least 3000044")
    assert "Traceback" not in done.stderr


def test_a_list_of_timezone_aware_datetimes_is_taken() -> None:
    """Check ``fit`` takes a list of timezone-aware datetimes as it takes their index (it
    refused them: "must be ... timezone-aware datetimes. Got object"), and that a list
    holding a naive one is refused as naive."""
    t = pd.date_range("2024-01-01", periods=24 * 20, freq="h", tz="Europe/Berlin")
    y = 10 + np.sin(np.arange(len(t)) * 2 * np.pi / 24)
    np.testing.assert_array_equal(to_ns(list(t)), to_ns(t))
    a = Forecaster(horizon=6, n_estimators=10).fit(t, y).predict()
    b = Forecaster(horizon=6, n_estimators=10).fit(list(t), y).predict()
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(InvalidParameterError, match=r"naive datetimes .* at position 1"):
        to_ns([t[0], t[1].tz_localize(None)])


def _store(path: Path, ts: np.ndarray, y: np.ndarray) -> None:
    store = open_store(f"duckdb:///{path / 'edgewise.duckdb'}")
    try:
        store.append([Reading("m-1", "kw", int(t), float(v)) for t, v in zip(ts, y,
                                                                            strict=True)])
    finally:
        store.close()


class _Limits:
    """Wraps a store's ``query`` recording each call's limit and rows returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[Any, int]] = []
        real = cli_forecast.open_existing_store

        def opened(url: str) -> Any:
            store = real(url)
            query = store.query

            def counted(*args: Any, **kwargs: Any) -> Any:
                rows = query(*args, **kwargs)
                limit = kwargs.get("limit", args[5] if len(args) > 5 else None)
                self.calls.append((limit, len(rows)))
                return rows

            store.query = counted
            return store

        monkeypatch.setattr(cli_forecast, "open_existing_store", opened)


def test_store_history_is_read_into_arrays_a_page_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ``--data`` reads the metric a page of readings at a time into arrays, the same
    readings as one query of all of them (it read the whole history as one list of tuples:
    about 400 MiB a million readings)."""
    ts, y = _daily(24 * 5)
    _store(tmp_path, ts, y)
    monkeypatch.setattr(cli_forecast, "_PAGE", 7, raising=False)
    limits = _Limits(monkeypatch)
    got_ts, got_y, name = cli_forecast._store_history(str(tmp_path), "m-1", "kw")
    assert name == "m-1/kw" and got_ts.dtype == np.int64 and got_y.dtype == float
    np.testing.assert_array_equal(got_ts, ts)
    np.testing.assert_array_equal(got_y, y)
    assert limits.calls and all(limit == 7 for limit, _ in limits.calls), limits.calls


@pytest.mark.parametrize("old_low", [5.0, -1.0])
def test_predict_from_a_store_reads_the_recent_span_and_forecasts_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old_low: float) -> None:
    """Check ``predict forecast --data`` reads only the readings its model reads (the
    lookback; of the older ones their lowest, a page at a time) and forecasts what it
    forecasts from the whole history: with an old reading below the model's floor (0), the
    floor is off there too."""
    def night_zero(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        ts, y = _daily(n, seed)  # 0 half the day: an interval there reaches below 0
        return ts, np.clip((y - 20) / 5 + np.random.default_rng(seed).normal(0, 0.1, n), 0,
                           None)

    ts, y = night_zero(24 * 12, 0)
    model = tmp_path / "m.forecast"
    fc = Forecaster(horizon=24, n_estimators=10).fit(ts, y)
    fc.save(model)
    assert fc.floor_ == 0.0
    later, more = night_zero(24 * 30, 3)
    later = later + ts[-1] + HOUR
    more[40] = old_low  # a reading long before the lookback
    recent = later > later[-1] - (fc.lookback() + 1) * HOUR  # what predict reads
    if old_low < 0:  # the recent readings alone would keep the floor: the test tells
        assert fc.predict(later, more)["low"].min() < 0
        assert fc.predict(later[recent], more[recent])["low"].min() == 0.0
    data = tmp_path / "gw"
    data.mkdir()
    _store(data, later, more)
    monkeypatch.setattr(cli_forecast, "_PAGE", 50, raising=False)
    limits = _Limits(monkeypatch)
    done = cli("predict", "forecast", "--model", str(model), "--data", str(data), "--device",
               "m-1", "--metric", "kw", "--json")
    assert done.exit_code == 0, done.stderr
    got = json.loads(done.stdout)["forecast"]
    want = fc.predict(later, more)
    np.testing.assert_array_equal([r["forecast"] for r in got], want["forecast"].to_numpy())
    np.testing.assert_array_equal([r["low"] for r in got], want["low"].to_numpy())
    assert all(limit is not None and limit <= 50 for limit, _ in limits.calls), limits.calls
    np.testing.assert_array_equal([r["high"] for r in got], want["high"].to_numpy())


def _flat_nab(tmp_path: Path) -> Path:
    name = tmp_path / "data" / "synthetic" / "flat.csv"
    name.parent.mkdir(parents=True)
    times = pd.date_range("2024-01-01", periods=24 * 16, freq="h")
    pd.DataFrame({"timestamp": times.strftime("%Y-%m-%d %H:%M:%S"),
                  "value": 3.0}).to_csv(name, index=False)
    return tmp_path


def _strict(text: str) -> Any:
    def refuse(const: str) -> Any:
        raise AssertionError(f"{const} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_bench_of_a_flat_series_is_valid_json(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ``bench forecast --json`` of a flat series (its seasonal naive is exact
    in-sample: MASE scale 0) gives ``null`` MASE, not ``NaN`` (invalid JSON), and the
    table prints ``-`` for it."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "statsmodels" else real(name, *a))
    nab = _flat_nab(tmp_path)
    done = cli("bench", "forecast", "--nab", str(nab), "--series", "synthetic/flat.csv",
               "--origins", "1", "--json")
    assert done.exit_code == 0, done.stderr
    out = _strict(done.stdout)
    row = out["series"][0]
    assert row["mase_scale"] == 0.0
    assert row["methods"]["forecaster"]["mase"] is None
    assert out["median"]["forecaster"]["mase"] is None
    assert row["methods"]["forecaster"]["smape"] == 0.0
    done = cli("bench", "forecast", "--nab", str(nab), "--series", "synthetic/flat.csv",
               "--origins", "1")
    assert done.exit_code == 0, done.stderr
    assert "- / 0.0" in done.stdout


def test_bench_medians_leave_out_figures_that_are_not_numbers() -> None:
    """Check a median over series leaves a NaN figure out, whatever the series' order
    (statistics.median with a NaN in the list depends on where it is)."""
    def result(order: list[float]) -> dict[str, Any]:
        series = [{"methods": {"forecaster": {"mase": m, "smape": 1.0, "coverage": None}}}
                  for m in order]
        return bench.ForecastBench(series, ["forecaster"], 1, 0.2, None, {}).medians()

    a = result([float("nan"), 1.0, 2.0, 4.0])
    b = result([1.0, float("nan"), 4.0, 2.0])
    assert a["forecaster"]["mase"] == b["forecaster"]["mase"] == 2.0
    assert a["forecaster"]["coverage"] is None
