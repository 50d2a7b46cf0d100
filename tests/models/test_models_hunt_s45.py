"""One absurd device among a fleet's groups; a daily-only series given a weekly season
(session 45)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.models.cluster import BehaviourGroups
from edgewise.models.forecast import Forecaster

load_commands()


def _cool_and_hot(seed: int, absurd: float | None) -> dict[str, pd.DataFrame]:
    """6 devices at 40 °C and 4 at 60 °C (sd 1), 300 readings 10 min apart; with
    ``absurd``, one more device reading ``absurd`` times a cool one's temperature."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-01", periods=300, freq="10min", tz="UTC")
    fleet = {f"cool-{i}": pd.DataFrame({"temp": 40 + rng.normal(0, 1, 300)}, index=idx)
             for i in range(6)}
    fleet |= {f"hot-{i}": pd.DataFrame({"temp": 60 + rng.normal(0, 1, 300)}, index=idx)
              for i in range(4)}
    if absurd is not None:
        fleet["absurd"] = pd.DataFrame({"temp": absurd * (40 + rng.normal(0, 1, 300))},
                                       index=idx)
    return fleet


def _three_wandering_kinds(seed: int, absurd: float | None) -> dict[str, pd.DataFrame]:
    """15 devices of three kinds (temp at 40/55/70, load at a quarter of it, both wandering
    as AR(1) with phi 0.97, the load noisier for each kind); with ``absurd``, one more
    device at ``absurd`` times the first kind's readings."""
    rng = np.random.default_rng(seed)
    n = 300
    idx = pd.date_range("2024-01-01", periods=n, freq="10min", tz="UTC")

    def wander(level: float) -> np.ndarray:
        x = np.zeros(n)
        e = rng.normal(0, 1, n)
        for t in range(1, n):
            x[t] = 0.97 * x[t - 1] + e[t]
        return level + x

    fleet = {}
    for k, level in enumerate((40, 55, 70)):
        for i in range(5):
            fleet[f"k{k}-{i}"] = pd.DataFrame({
                "temp": wander(level),
                "load": wander(level / 4) + 3 * k * rng.normal(0, 1, n)}, index=idx)
    if absurd is not None:
        fleet["absurd"] = pd.DataFrame({"temp": absurd * wander(40),
                                        "load": absurd * wander(10)}, index=idx)
    return fleet


@pytest.mark.parametrize("absurd", [1e6, 1e150])
def test_one_absurd_device_is_set_apart_and_the_fleet_keeps_its_groups(absurd: float
                                                                       ) -> None:
    """Check one device at 1e150 times the fleet's level is an odd one out while the
    others keep the two groups they make without it: it made "it and the rest" the best
    grouping, and the rest one group ("nothing separates it")."""
    model = BehaviourGroups(random_state=0).fit(_cool_and_hot(0, absurd))
    labels = model.labels_
    assert model.n_groups_ == 2, (model.silhouette_, model.null_silhouette_)
    assert labels[[f"cool-{i}" for i in range(6)]].nunique() == 1
    assert labels[[f"hot-{i}" for i in range(4)]].nunique() == 1
    assert labels["cool-0"] != labels["hot-0"]
    assert bool(model.odd_["absurd"])
    assert not model.odd_.drop("absurd").any()


@functools.cache
def _three_kinds_grouped_without_absurd() -> BehaviourGroups:
    """The fleet of three wandering kinds grouped with no absurd device: fitted once for
    both cases below (each only reads it), not once per case."""
    return BehaviourGroups(random_state=0).fit(_three_wandering_kinds(0, None))


@pytest.mark.parametrize("absurd", [1e6, 1e150])
def test_one_absurd_device_changes_neither_the_weights_nor_the_groups(absurd: float) -> None:
    """Check a fleet of three wandering kinds is grouped as it is without one device at
    1e6 (or 1e150) times its readings: that device alone made the noisy spread of a metric
    look reliable (split-half correlation 0 -> 0.92) and the fleet was one group."""
    without = _three_kinds_grouped_without_absurd()
    model = BehaviourGroups(random_state=0).fit(_three_wandering_kinds(0, absurd))
    assert without.n_groups_ == 3
    np.testing.assert_allclose(model.weights_, without.weights_, atol=0.01)
    assert model.n_groups_ == 3
    labels = model.labels_[without.labels_.index]
    assert pd.crosstab(labels, without.labels_).gt(0).sum().eq(1).all()
    assert bool(model.odd_["absurd"])


def test_groups_cli_sets_an_absurd_device_apart(tmp_path: Path) -> None:
    """Check ``edgewise groups --csv`` on a fleet with one device at 1e150 times the
    others' level: two groups (cool, hot) and the absurd device an odd one out, where it
    printed one group, "the whole fleet: nothing separates it"."""
    frames = []
    for device, frame in _cool_and_hot(0, 1e150).items():
        f = frame.rename_axis("time").reset_index()
        f.insert(0, "device", device)
        frames.append(f)
    path = tmp_path / "fleet.csv"
    pd.concat(frames).to_csv(path, index=False)
    import json

    res = CliRunner(mix_stderr=False).invoke(app, ["groups", "--csv", str(path), "--json"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["n_groups"] == 2
    members = sorted(sorted(g["members"]) for g in out["groups"])
    assert members == [[f"cool-{i}" for i in range(6)], [f"hot-{i}" for i in range(4)]]
    assert [o["device"] for o in out["odd_ones_out"]] == ["absurd"]


H = 3600 * 10**9


def _hourly(seed: int, weeks: int, weekend: float) -> tuple[np.ndarray, np.ndarray]:
    """``weeks`` of hourly readings: a daily cycle (amplitude 2-5) plus AR(1) noise, and
    ``weekend`` added on Saturdays and Sundays."""
    rng = np.random.default_rng(seed)
    t = np.arange(weeks * 168)
    dow = (t // 24 + 3) % 7  # epoch 0 is a Thursday; Monday 0
    y = 20 + rng.uniform(2, 5) * np.sin(2 * np.pi * (t % 24 - rng.uniform(0, 24)) / 24)
    y = y + np.where(dow >= 5, weekend, 0.0)
    e = np.zeros(len(t))
    z = rng.normal(0, 1, len(t))
    for i in range(1, len(t)):
        e[i] = 0.6 * e[i - 1] + z[i]
    return t * H, y + e


@pytest.mark.parametrize(("seed", "weeks"), [(0, 4), (1, 5), (2, 6)])
def test_a_daily_only_series_is_not_given_a_weekly_season(seed: int, weeks: int) -> None:
    """Check hourly readings whose every day is alike get the daily season alone: a daily
    cycle is as alike a week later as a day later, and the weekly season (features two
    weeks back, a lookback of two weeks) was added to every such series."""
    ts, y = _hourly(seed, weeks, 0.0)
    model = Forecaster(horizon=24, n_estimators=5).fit(ts, y)
    assert model.seasons_ == [24]


@pytest.mark.parametrize(("seed", "weeks"), [(0, 4), (1, 5), (2, 6)])
def test_a_series_with_weekends_keeps_its_weekly_season(seed: int, weeks: int) -> None:
    """Check hourly readings whose weekends run 3 lower keep the weekly season beside the
    daily one."""
    ts, y = _hourly(seed, weeks, -3.0)
    model = Forecaster(horizon=24, n_estimators=5).fit(ts, y)
    assert sorted(model.seasons_) == [24, 168]
