"""Forecaster and groups hunt (session 47): a history given to predict is cleaned of
spikes as fit cleans its own, and more bad-input checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.models.cluster import BehaviourGroups, GroupsFileError, load_groups
from edgewise.models.forecast import Forecaster
from tests.models.test_cluster_file_state import _rewrite, _set

load_commands()

H = 3600 * 10**9
N = 240


def _daily(seed: int = 0, n: int = N) -> tuple[pd.DatetimeIndex, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC")
    return t, 20 + np.sin(np.arange(n) * 2 * np.pi / 24) + rng.normal(0, 0.2, n)


@pytest.fixture(scope="module")
def clean_model() -> Forecaster:
    t, y = _daily()
    return Forecaster(horizon=12, n_estimators=40, learning_rate=0.2).fit(t, y)


@pytest.mark.parametrize("where", [[200, 215, 225], [230, 234, 237], [239]])
def test_predict_with_readings_leaves_their_spikes_out(clean_model: Forecaster,
                                                       where: list[int]) -> None:
    """Check three glitches to 200 (or a last one) among hourly readings about 20, given to
    predict, leave the forecast and interval as without them (the forecast was 199.6 ten
    steps ahead, the interval's high 200.2), and the forecast still starts the step after
    the last reading."""
    t, y = _daily()
    want = clean_model.predict(t, y)
    v = y.copy()
    v[where] = 200.0
    got = clean_model.predict(t, v)
    assert got["time"].tolist() == want["time"].tolist()
    assert got["time"].iloc[0] == t[-1] + pd.Timedelta("1h")
    assert np.abs(got["forecast"] - want["forecast"]).max() < 1.0, got
    assert got["high"].max() < 23.0 and got["low"].min() > 18.0, got


def test_predict_with_a_negative_glitch_keeps_the_floor() -> None:
    """Check a lone glitch to -127 among a never-negative metric's recent readings leaves
    the floor at 0 on (fit leaves such a glitch out of its floor too): it turned the floor
    off, and the interval reached below 0."""
    rng = np.random.default_rng(2)
    n = 24 * 12
    t = pd.date_range("2026-01-01", periods=n, freq="h", tz="UTC")
    hour = np.arange(n) % 24
    y = np.clip(np.sin(2 * np.pi * hour / 24), 0, None) * 5 + np.abs(rng.normal(0, 0.1, n))
    model = Forecaster(horizon=24, n_estimators=20).fit(t[:-48], y[:-48])
    assert model.floor_ == 0.0
    v = y.copy()
    v[-30] = -127.0
    out = model.predict(t, v)
    assert (out[["forecast", "low", "high"]] >= 0).all().all(), out
    assert np.abs(out["forecast"] - model.predict(t, y)["forecast"]).max() < 0.5


def test_fit_with_a_last_reading_that_is_a_spike_forecasts_the_steps_after_it() -> None:
    """Check a fitted history whose last reading is a glitch forecasts the steps after that
    reading (the first forecast was of the glitch's own step, every time one step early)."""
    t, y = _daily()
    y[-1] = 200.0
    model = Forecaster(horizon=12, n_estimators=20).fit(t, y)
    assert model.n_spikes_ == 1
    out = model.predict()
    assert out["time"].iloc[0] == t[-1] + pd.Timedelta("1h"), out
    assert out["time"].tolist() == model.predict(t, y)["time"].tolist()
    assert out["forecast"].max() < 23.0, out


# -- groups: readings set aside --------------------------------------------------------------
IDX = pd.date_range("2024-01-01", periods=200, freq="10min", tz="UTC")


def _fleet_with_sentinel() -> dict[str, pd.DataFrame]:
    """Six devices; p0's temperature reads the 'no value' sentinel 1.7e308 in 5 readings."""
    rng = np.random.default_rng(0)
    fleet = {}
    for d in range(6):
        temp = 20 + d + rng.normal(0, 1, len(IDX))
        if d == 0:
            temp[[3, 50, 90, 120, 160]] = 1.7e308
        fleet[f"p{d}"] = pd.DataFrame({"temp": temp, "rpm": 1400 + 10 * d + rng.normal(
            0, 1, len(IDX))}, index=IDX)
    return fleet


def test_a_saved_groups_model_keeps_its_readings_set_aside(tmp_path: Path) -> None:
    """Check a groups model saved and loaded still says which readings its fit set aside
    (a loaded model had no ``set_aside_`` and its summary said none)."""
    model = BehaviourGroups().fit(_fleet_with_sentinel())
    assert model.set_aside_ == {"p0": {"temp": 5}}
    path = tmp_path / "groups.json"
    model.save(path)
    loaded = load_groups(path)
    assert loaded.set_aside_ == {"p0": {"temp": 5}}
    assert loaded.summary() == model.summary()


def test_a_crafted_set_aside_is_refused_naming_it(tmp_path: Path) -> None:
    """Check a file whose ``set_aside_`` is not counts per device and metric is refused with
    one GroupsFileError naming the field (a file saved before it existed loads with none)."""
    model = BehaviourGroups().fit(_fleet_with_sentinel())
    path = tmp_path / "groups.json"
    model.save(path)
    bad = _rewrite(path, tmp_path, _set("state.set_aside_", {"p0": {"temp": "five"}}))
    with pytest.raises(GroupsFileError, match=r"state\.set_aside_"):
        load_groups(bad)
    older = _rewrite(path, tmp_path, _set("state.set_aside_", ...))
    assert load_groups(older).set_aside_ == {}


def test_groups_cli_says_how_many_readings_were_set_aside(tmp_path: Path) -> None:
    """Check ``edgewise groups --csv`` says in its table how many readings it set aside, and
    whose (only ``--json`` said so)."""
    rows = [{"time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "device": d, "temp": f["temp"].iloc[i],
             "rpm": f["rpm"].iloc[i]}
            for d, f in _fleet_with_sentinel().items() for i, t in enumerate(IDX)]
    csv = tmp_path / "fleet.csv"
    pd.DataFrame(rows).to_csv(csv, index=False, float_format="%.17g")
    done = CliRunner(mix_stderr=False).invoke(app, ["groups", "--csv", str(csv)])
    assert done.exit_code == 0, done.stderr
    assert "5 reading(s) past +-1e+160 set aside" in done.stdout, done.stdout
    assert "p0 temp 5" in done.stdout, done.stdout
