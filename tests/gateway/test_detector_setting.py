"""The gateway's ``detector`` setting (``EDGEWISE_DETECTOR``, ``--detector``) and
``edgewise bench fleet``, which measures what it changes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.bench.fleet import bench_fleet
from edgewise.cli import app, load_commands
from edgewise.config import Settings
from edgewise.errors import ConfigError
from edgewise.gateway.pipeline import Pipeline
from edgewise.gateway.runtime import Gateway
from edgewise.store import open_store

load_commands()
T0 = 1_700_000_000


def _msg(seq: int, ts: float, **metrics: float) -> bytes:
    return json.dumps({"ts": ts, "metrics": metrics, "seq": seq}).encode()


def _feed(p: Pipeline, n: int, seed: int = 0, start: int = 0) -> None:
    """Send ``n`` new readings (seq and time from ``start`` on: a reading the store already
    holds is not scored again)."""
    rng = np.random.default_rng(seed)
    for i in range(start, start + n):
        q = 100 + rng.normal(0, 1)
        p.ingest("pump-1", _msg(i + 1, T0 + i, flow=q, current=0.3 * q + rng.normal(0, 0.1)))
    assert p.flush(timeout=30)


def _bases(p: Pipeline) -> set[str]:
    return {d.base for d in p._detectors.values()}


def test_the_setting_picks_every_metrics_level_detector(tmp_path) -> None:
    assert Settings.load(env={"EDGEWISE_DETECTOR": "ewzscore"}).detector == "ewzscore"
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    for k, name in enumerate(("context-likelihood", "ewzscore")):
        p = Pipeline(store, Settings(data_dir=tmp_path, detector=name))
        try:
            _feed(p, 5, start=5 * k)
            assert _bases(p) == {name}
            assert {type(d).__name__ for d in p._detectors.values()} == {"StateAware"}
        finally:
            p.close()
    store.close()


def test_an_unknown_detector_is_refused_before_anything_opens(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"has value 'mahalanobis'\. Use one of the one-metric "
                                          r"level detectors: context-art, context-likelihood"):
        Gateway(Settings(data_dir=tmp_path / "d", detector="mahalanobis"))
    assert not (tmp_path / "d").exists()  # refused before the data directory was made
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    with pytest.raises(ConfigError, match="'hst'"):
        Pipeline(store, Settings(data_dir=tmp_path, detector="hst"))
    store.close()
    res = CliRunner(mix_stderr=False).invoke(
        app, ["serve", "--detector", "bogus", "--data-dir", str(tmp_path / "c")])
    assert isinstance(res.exception, ConfigError) and "'bogus'" in str(res.exception)


def test_a_restart_with_another_detector_warms_the_metrics_again(tmp_path) -> None:
    """The saved state of each metric is its old detector's: a restart under another
    ``--detector`` drops it (the device's multivariate state stays), one under the same
    keeps it."""
    state = tmp_path / "detectors.pickle"
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), state_path=state)
    _feed(p, 50)
    p.close()
    same = Pipeline(store, Settings(data_dir=tmp_path), state_path=state)
    assert _bases(same) == {"context-likelihood"} and len(same._detectors) == 2
    same.close()
    other = Pipeline(store, Settings(data_dir=tmp_path, detector="ewzscore"), state_path=state)
    try:
        assert other._detectors == {} and "pump-1" in other._mv
        _feed(other, 3, seed=1, start=50)
        assert _bases(other) == {"ewzscore"}
    finally:
        other.close()
        store.close()


def test_bench_fleet_grades_the_gateways_alerts_against_the_faults() -> None:
    r = bench_fleet(["context-likelihood", "ewzscore"], pumps=3, hours=0.4, seed=2,
                    fault_rate_per_h=6.0, fast_gate=(True, False))
    cl, cl_ungated, ez, ez_ungated = r["detectors"]
    assert r["readings"] == 3 * 1440 * 8
    for row in r["detectors"]:
        assert row["faults"] == cl["faults"] > 0  # the same fleet for all
        assert row["false_alerts"] == row["alerts"] - row["true_alerts"] >= 0
        assert 0 <= row["named"] <= row["found"] <= row["faults"]
        assert row["false_alerts_per_device_hour"] == pytest.approx(
            row["false_alerts"] / 1.2, abs=1e-3)
    assert cl["found"] > 0
    # the setting changed something (ungated: under the gates the two are close on this
    # small fleet)
    assert cl_ungated["alerts"] != ez_ungated["alerts"]
    # white noise read once a second: the default's per-reading novelty alarms, z-scores'
    # not; the fast-stream gate takes the default's below one an hour
    assert cl_ungated["noise_alarms_per_stream_hour"] > 1.0 > ez_ungated[
        "noise_alarms_per_stream_hour"]
    assert cl["noise_alarms_per_stream_hour"] < 1.0
    again = bench_fleet(["ewzscore"], pumps=3, hours=0.4, seed=2, fault_rate_per_h=6.0)
    assert {k: v for k, v in again["detectors"][0].items() if k != "seconds"} == {
        k: v for k, v in ez.items() if k != "seconds"}


def test_bench_fleet_compares_the_gates_in_one_run() -> None:
    """Each detector once per gate setting: the cross-sensor gate only where the fast gate
    is on (it needs it); false time is a part of all time under alert."""
    r = bench_fleet(["ewzscore"], pumps=2, hours=0.3, seed=2, fault_rate_per_h=6.0,
                    fast_gate=(True, False), cross_gate=(True, False))
    assert [(row["fast_gate"], row["cross_gate"]) for row in r["detectors"]] == [
        (True, True), (True, False), (False, False)]
    for row in r["detectors"]:
        assert 0 <= row["false_alert_time_share"] <= row["alert_time_share"] <= 1
        assert row["false_alert_time_share"] > 0 or row["false_alerts"] == 0
        by_hour = row["false_alerts_per_device_hour_by_hour"]  # 0.3 h: one partial hour
        assert len(by_hour) == 1
        assert by_hour[0] * 2 * 0.3 == pytest.approx(row["false_alerts"], abs=0.01)


def test_bench_fleet_bad_input_is_one_line_before_any_work() -> None:
    runner = CliRunner(mix_stderr=False)
    res = runner.invoke(app, ["bench", "fleet", "--detectors", "context-likelihood,iforest"])
    assert isinstance(res.exception, ConfigError) and "'iforest'" in str(res.exception)
    # the option named is this command's, not serve's --detector (EDGEWISE_DETECTOR)
    assert str(res.exception).startswith("--detectors names 'iforest'"), str(res.exception)
    assert "EDGEWISE_DETECTOR" not in str(res.exception) and "ewzscore" in str(res.exception)
    assert res.stderr == ""  # refused before the header
    with pytest.raises(ConfigError, match=r"pumps must be at least 1\. Got 0"):
        bench_fleet(["ewzscore"], pumps=0)
    with pytest.raises(ConfigError, match=r"hours must be above 0\. Got -1"):
        bench_fleet(["ewzscore"], hours=-1)
    res = runner.invoke(app, ["bench", "fleet", "--detectors", "ewzscore", "--pumps", "1",
                              "--hours", "0.1", "--json"])
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)["detectors"][0]
    assert row["detector"] == "ewzscore" and row["device_hours"] == 0.1
    out = json.loads(res.stdout)  # the measured machine, as every bench's JSON names it
    assert re.fullmatch(r"\S+ \S+, \d+ CPUs \(.+\)", out["machine"]) and out["cpus"] >= 1


def test_what_ewzscore_gives_up_on_a_counter_and_a_trend() -> None:
    """Check the README's caveat of ``--detector ewzscore``: a week of an energy meter
    raises no alarm under it, and its two hours of tripled consumption go unfound, while the
    default finds them; a month of a draining cell raises none (the default: a handful)."""
    from edgewise.gateway.pipeline import per_metric_factory
    from tests.detect.test_counter import DAY, _load, _meter
    from tests.detect.test_creep import _battery

    load = _load()
    fault = slice(5 * DAY + 600, 5 * DAY + 720)
    load[fault] *= 3
    meter = _meter(load).reshape(-1, 1)
    alarms = {name: np.flatnonzero(per_metric_factory(name)().score_many(meter) >= 0.9)
              for name in ("context-likelihood", "ewzscore")}
    assert alarms["ewzscore"].size == 0
    assert any(fault.start <= a < fault.stop for a in alarms["context-likelihood"])
    cell = _battery().reshape(-1, 1)
    assert (per_metric_factory("ewzscore")().score_many(cell) >= 0.9).sum() == 0
    assert 1 <= (per_metric_factory("context-likelihood")().score_many(cell) >= 0.9).sum() <= 10


def test_a_new_data_dir_is_readable_by_its_owner_only(tmp_path) -> None:
    """Check the gateway makes its data directory 0700: it was 0755 (the first thing to
    make it was the gateway, before Security's 0700), so with the files in it at 0644 any
    local user read the fleet's telemetry, alerts and notes."""
    d = tmp_path / "fresh"
    gw = Gateway(Settings(data_dir=d))
    try:
        assert d.stat().st_mode & 0o777 == 0o700
    finally:
        gw.pipeline.close()
        gw.store.close()
