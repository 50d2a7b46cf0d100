"""Forecaster defects found by a bug hunt, each checked here: damaged model files, readings
off the whole step (jitter, a phase such as hh:15:01), trending series (seasons found in a
trend, intervals too narrow beyond the calibration forecasts), intervals from too few
residuals (now pooled, or unbounded and shown so), a step far finer than the readings, and
a 'too short' refusal that named too few steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.forecast import (
    Forecaster,
    ForecastFileError,
    load_forecaster,
    regular_series,
)
from tests.in_process import edgewise_here

HOUR = 3600 * 10**9
SEC = 10**9
FAST = {"n_estimators": 30, "learning_rate": 0.3, "max_rows": 3000, "calibration_origins": 8}


def _sine(n: int = 24 * 30, seed: int = 0, jitter_s: int = 0, phase_ns: int = 0,
          ) -> tuple[int, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = np.arange(n)
    t0 = 1_700_000_000 * SEC // HOUR * HOUR + phase_ns
    ts = t0 + k * HOUR + rng.integers(-jitter_s, jitter_s + 1, n) * SEC
    y = 10 + 5 * np.sin(2 * np.pi * k / 24) + rng.normal(0, 0.3, n)
    return t0, ts, y


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, ts, y = _sine()
    path = tmp_path_factory.mktemp("fc") / "m.forecast"
    Forecaster(horizon=6, **FAST).fit(ts, y).save(path)
    return path


def test_a_flipped_bit_in_the_body_is_refused_before_unpickling(saved: Path,
                                                                 tmp_path: Path) -> None:
    """Check one flipped bit anywhere in the pickled body is a ForecastFileError naming the
    checksum (before: a segfault, a traceback or a silently different forecast), and the
    header carries the body's SHA-256."""
    import hashlib
    import json

    data = saved.read_bytes()
    magic, head, body = data.split(b"\n", 2)
    assert json.loads(head)["body_sha256"] == hashlib.sha256(body).hexdigest()
    start = len(magic) + len(head) + 2
    for off in np.linspace(start, len(data) - 1, 12).astype(int):
        bad = bytearray(data)
        bad[off] ^= 0x01
        path = tmp_path / f"bad_{off}.forecast"
        path.write_bytes(bytes(bad))
        with pytest.raises(ForecastFileError, match="does not match its checksum") as err:
            load_forecaster(path)
        assert str(path) in str(err.value)


def test_the_cli_refuses_a_damaged_model_in_one_line(saved: Path, tmp_path: Path) -> None:
    """Check 'edgewise predict forecast' on a model with a flipped bit exits 2 with one
    error line, never a crash or a traceback (the hunter's file that segfaulted)."""
    data = bytearray(saved.read_bytes())
    data[len(data) // 3] ^= 0x01
    path = tmp_path / "bad.forecast"
    path.write_bytes(bytes(data))
    r = subprocess.run([sys.executable, "-m", "edgewise", "predict", "forecast", "--model",
                        str(path), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.startswith("error:") and "checksum" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_version_1_file_is_refused_in_one_line(saved: Path, tmp_path: Path) -> None:
    """Check a file of the format before the checksum is refused, saying to retrain."""
    magic, head, body = saved.read_bytes().split(b"\n", 2)
    old = tmp_path / "v1.forecast"
    old.write_bytes(magic + b"\n" + head.replace(b'"format_version": 2', b'"format_version": 1')
                    + b"\n" + body)
    with pytest.raises(ForecastFileError, match=r"format version 1; .* Retrain"):
        load_forecaster(old)


def test_jittered_readings_keep_one_per_step_and_forecast_the_next_hour() -> None:
    """Hourly readings sent up to 60 s early or late: no step is empty, the forecast starts
    at the hour after the last reading's (not at the hour already observed), and it is
    about as accurate as with punctual readings (before: 176 of 720 steps empty)."""
    t0, ts, y = _sine(jitter_s=60)
    _, clean, _ = _sine()
    grid, v = regular_series(ts, y, HOUR)
    assert np.isnan(v).sum() == 0 and grid[0] == t0 and len(grid) == len(ts)
    truth = 10 + 5 * np.sin(2 * np.pi * np.arange(720, 744) / 24)
    mae = {}
    for name, t in (("clean", clean), ("jitter", ts)):
        out = Forecaster(horizon=24, **FAST).fit(t, y).predict()
        mae[name] = float(np.abs(out["forecast"].to_numpy() - truth).mean())
        assert out["time"].iloc[0].value == t0 + 720 * HOUR, name
    assert mae["jitter"] < 1.5 * mae["clean"], mae


def test_forecast_times_follow_the_readings_phase() -> None:
    """Hourly readings at hh:15:01 (as NAB's realAdExchange): the forecast's times are the
    next readings' times, from the last one plus an hour (before: hh:00), in the header
    too, and predict on a new history keeps the phase."""
    _, ts, y = _sine(phase_ns=(15 * 60 + 1) * SEC)
    model = Forecaster(horizon=6, **FAST).fit(ts, y)
    out = model.predict()
    assert out["time"].astype("int64").tolist() == [ts[-1] + h * HOUR for h in range(1, 7)]
    assert model.header()["phase_ns"] == (15 * 60 + 1) * SEC
    later = model.predict(ts[:-24], y[:-24])
    assert later["time"].iloc[0].value == ts[-25] + HOUR


@pytest.mark.parametrize("kind", ["ramp", "counter", "walk"])
def test_no_season_is_found_in_a_trend(kind: str) -> None:
    """A ramp, an energy counter (kWh total) and a random walk have no cycle; their
    lag-one-day autocorrelation is near 1 because they trend (before: seasons [24, 168])."""
    rng = np.random.default_rng(0)
    n = 24 * 28
    k = np.arange(n)
    y = {"ramp": k + rng.normal(0, 1, n),
         "counter": np.cumsum(rng.uniform(0.5, 1.5, n)).round(),
         "walk": rng.normal(0, 1, n).cumsum()}[kind]
    model = Forecaster(horizon=24, **FAST).fit(k * HOUR, y)
    assert model.seasons_ == [] and model.season_ == 1


def test_a_daily_cycle_on_a_trend_is_still_found() -> None:
    """Check taking out the trend keeps a real daily cycle riding on it."""
    rng = np.random.default_rng(1)
    k = np.arange(24 * 28)
    y = 0.5 * k + 5 * np.sin(2 * np.pi * k / 24) + rng.normal(0, 1, len(k))
    assert Forecaster(horizon=24, **FAST).fit(k * HOUR, y).season_ == 24


def test_intervals_beyond_the_calibration_forecasts_use_every_residual() -> None:
    """An hourly energy counter: every forecast lies above every calibration forecast, where
    a neighbourhood in size held only the few residuals at its edge. Over 12 seeds the 90%
    interval held the truth 0.66 of the time before, 0.81 now (still short of 0.9: the
    trees' trend error grows past the calibration tail). FAST's trees, but the default
    calibration origins: with FAST's 8 the forecasts stay inside the calibration ones and
    the fix is never reached (0.80 either way); the default trees took 5x as long for 0.67
    before and 0.76 now."""
    n = 24 * 28
    trees = {k: v for k, v in FAST.items() if k != "calibration_origins"}
    covers = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        y = np.cumsum(rng.uniform(0.5, 1.5, n + 24)).round()
        out = Forecaster(horizon=24, random_state=seed, **trees).fit(np.arange(n) * HOUR,
                                                                     y[:n]).predict()
        truth = y[n:]
        covers.append(np.mean((truth >= out["low"]) & (truth <= out["high"])))
    assert np.mean(covers) >= 0.72, np.round(covers, 2)


def test_noisy_cycle_coverage_stays_near_the_target() -> None:
    """Check the intervals on a noisy daily sine still hold the truth about 90% of the time
    (not widened everywhere by the trend fallback)."""
    covers, widths = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        k = np.arange(24 * 31)
        y = 10 + 5 * np.sin(2 * np.pi * k / 24) + rng.normal(0, 1, len(k))
        out = Forecaster(horizon=24, random_state=seed, **FAST).fit(
            k[:-24] * HOUR, y[:-24]).predict()
        covers.append(np.mean((y[-24:] >= out["low"]) & (y[-24:] <= out["high"])))
        widths.append(float((out["high"] - out["low"]).mean()))
    assert 0.8 <= np.mean(covers) <= 0.99, covers
    assert np.mean(widths) < 5.0, widths  # noise sd 1: a 90% band of the noise is 3.3 wide


def test_readings_on_whole_steps_keep_their_grid() -> None:
    """Check punctual readings keep the grid they had (whole steps since the epoch)."""
    ts = pd.date_range("2024-03-01", periods=24 * 20, freq="h", tz="UTC")
    ns = ts.as_unit("ns").asi8
    grid, _ = regular_series(ns, np.ones(len(ns)), HOUR)
    assert grid.tolist() == ns.tolist()


def _noise(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hourly i.i.d. noise around 10 (exchangeable residuals) from 1,700,000,000 s."""
    rng = np.random.default_rng(seed)
    return 1_700_000_000 * SEC + np.arange(n) * HOUR, 10 + rng.normal(0, 1, n)


def test_quarters_with_too_few_residuals_are_pooled_and_cover() -> None:
    """Check quarters of the horizon holding fewer residuals than a finite 90% band needs
    (19) are pooled: ``calibration_origins=5``, horizon 4 gave 5 per quarter and bands of
    [min, max] of 5 residuals, which held the truth 0.68 of the time on i.i.d. noise."""
    covers = []
    for seed in range(24):
        ts, y = _noise(24 * 20, seed)
        m = Forecaster(horizon=4, season=1, calibration_origins=5, n_estimators=20,
                       random_state=seed).fit(ts[:-4], y[:-4])
        assert sorted(int(s) for hs, _, _ in m.bands_ for s in hs) == [0, 1, 2, 3]
        assert all(len(local.pred_) >= 19 for _, local, _ in m.bands_)
        out = m.predict()
        covers.append(np.mean((y[-4:] >= out["low"]) & (y[-4:] <= out["high"])))
    assert np.mean(covers) >= 0.84, np.round(covers, 2)


def _unbounded() -> Forecaster:
    """3 calibration origins of 2 steps: 6 residuals in all, too few for finite bands."""
    ts, y = _noise(24 * 10, 0)
    return Forecaster(horizon=2, season=1, calibration_origins=3, n_estimators=10).fit(
        ts, y - 10)  # negative readings: no floor at 0


def test_too_few_residuals_in_all_give_an_unbounded_interval(tmp_path: Path) -> None:
    """Check 6 residuals give an interval of (-inf, inf) around a finite forecast (they gave
    the smallest and largest residual), and that ``predict forecast`` says so: ``null`` in
    its JSON (JSON holds no infinity), ``-inf``/``inf`` in its table and CSV."""
    model = _unbounded()
    out = model.predict()
    assert np.isfinite(out["forecast"]).all()
    assert (out["low"] == -np.inf).all() and (out["high"] == np.inf).all()
    path = tmp_path / "m.forecast"
    model.save(path)
    done = edgewise_here("predict", "forecast", "--model", str(path), "--json", "--out",
                         str(tmp_path / "f.csv"))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["forecast"]
    assert [(r["low"], r["high"]) for r in rows] == [(None, None)] * 2
    assert all(isinstance(r["forecast"], float) for r in rows)
    table = pd.read_csv(tmp_path / "f.csv")
    assert np.isneginf(table["low"]).all() and np.isposinf(table["high"]).all()
    shown = edgewise_here("predict", "forecast", "--model", str(path))
    assert shown.returncode == 0 and "[-inf, inf]" in shown.stdout, shown.stdout


def test_the_forecast_api_answers_an_unbounded_bound_as_null() -> None:
    """Check the gateway's forecast answer is valid JSON with ``null`` for an unbounded
    bound: horizon 1 calibrates on 20 residuals, and a tail missing every other reading
    leaves about 10 (an inf bound made the answer unserialisable, a 500)."""
    from edgewise.server.routes.forecast import _fit

    ts, y = _noise(24 * 20, 1)
    keep = np.ones(len(ts), dtype=bool)
    keep[-96::2] = False  # every other reading of the last 4 days (the tail) missing
    rows = [("m", int(t), float(v)) for t, v in zip(ts[keep], y[keep] - 10, strict=True)]
    answer = _fit("d", "m", 1, rows, None).answer
    body = json.loads(json.dumps(answer, allow_nan=False))
    assert body["forecast"]["low"] == [None] and body["forecast"]["high"] == [None]
    assert isinstance(body["forecast"]["forecast"][0], float)


def test_a_short_history_is_told_the_count_that_is_then_accepted() -> None:
    """Check the refusal of a short hourly history names the steps a history long enough to
    test (and find) a daily cycle needs: 50 steps were told 188 (season 1), and 188 were
    then refused for 212 (season 24 found)."""
    y = 10 + 3 * np.sin(2 * np.pi * np.arange(1000) / 24)
    with pytest.raises(InvalidParameterError, match="at least 212 steps of 1h") as err:
        Forecaster(horizon=48, n_estimators=10).fit(np.arange(50) * HOUR, y[:50])
    assert "a season of up to 24 steps" in str(err.value)
    model = Forecaster(horizon=48, n_estimators=10).fit(np.arange(212) * HOUR, y[:212])
    assert model.season_ == 24


@pytest.mark.parametrize("step", ["1h", "10s", 10**9])
def test_a_step_far_finer_than_the_readings_is_refused_before_fitting(step: str | int) -> None:
    """Check a step under 0.6 of the readings' spacing is refused naming the step, the
    spacing and what would do (it failed inside scikit-learn on a feature empty in every
    row, or took gigabytes for a 1 s grid), while a step near the spacing still fits."""
    ts = np.arange(1500) * 2 * HOUR
    y = 10 + np.sin(np.arange(1500) * 2 * np.pi / 12)
    with pytest.raises(InvalidParameterError, match=r"readings: they are 2h apart .* at "
                       r"least 1h12m, e.g. the spacing '2h'") as err:
        Forecaster(step=step, horizon=1, n_estimators=10).fit(ts, y)
    assert err.value.field == "step" and f"step '{step}" in str(err.value)
    assert Forecaster(step="80min", horizon=1, n_estimators=10).fit(ts, y).step_ns_ == (
        80 * 60 * SEC)
