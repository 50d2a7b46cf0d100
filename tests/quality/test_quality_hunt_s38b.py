"""Session 38 hunt, report side: a creeping level in a level's unit is no meter and keeps
its drift; a metric added to a device is judged from its first reading (REST); a flat
reference scores ordinary noise as no drift; the CLI's drift column stays 6 wide; too few
readings give an unknown drift (None), never 0.0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from edgewise.quality.counters import counter_steps
from edgewise.quality.drift import drift_score, has_drift
from edgewise.quality.report import device_report, metric_issues
from tests.in_process import edgewise_here

S = 10**9
M = 60 * S
H = 3600 * S


def _creep() -> np.ndarray:
    """A sensor reporting tenths, drifting 20.0 -> 23.0 without a tick back."""
    return np.round(20.0 + np.linspace(0, 3, 400), 1)


def test_a_creeping_level_in_a_level_unit_keeps_its_drift() -> None:
    """Check a temperature (Cel) creeping up by tenths is no counter and has its drift (it
    was taken for a meter: drift None, the case drift exists for); a kWh meter, or the
    same values with no unit, is still a counter without drift."""
    v = _creep()
    f = metric_issues(np.arange(400) * M, v, "Cel")["figures"]
    assert not f["counter"] and f["drift"] is not None and f["drift"] > 3
    rows = [{"device_id": "p", "metric": "temp", "ts_ns": i * M, "value": float(x),
             "unit": "%RH"} for i, x in enumerate(v)]
    assert device_report(rows)["metrics"]["temp"]["drift"] > 3
    meter = metric_issues(np.arange(400) * M, v + 1000.0, "kWh")["figures"]
    assert meter["counter"] and meter["drift"] is None
    assert metric_issues(np.arange(400) * M, v)["figures"]["counter"]  # no unit: values
    assert counter_steps(v, ["Cel"])["counter"] is False and counter_steps(v)["counter"]


def test_a_metric_with_no_history_is_judged_from_its_first_reading() -> None:
    """Check a metric first sent at half past in an hour's span, its history read and
    empty, is whole with no gap (it was 50 % complete with a 30-minute gap), while one
    with a reading before the span still has that silence as a gap, and the batch
    report (no history read) is unchanged."""
    t = H + 30 * M + np.arange(30) * M
    v = 50.0 + np.arange(30) % 2
    f = metric_issues(t, v, span=(H, 2 * H), before=[])["figures"]
    assert (f["completeness"], f["timeliness"], f["gaps"], f["longest_gap_s"]) == (
        1.0, 1.0, 0, 0.0)
    old = metric_issues(t, v, span=(H, 2 * H), before=[H - 20 * M])["figures"]
    assert old["gaps"] == 1 and old["completeness"] < 1.0
    assert metric_issues(t, v, span=(H, 2 * H))["figures"]["completeness"] == 0.5


def test_rest_report_of_a_sensor_added_to_a_device() -> None:
    """Check the REST report of a device that sent temp for a day, with hum added half
    past the hour: hum whole, no gap, no plot (was 50 %, a 30-minute gap, a plot)."""
    from edgewise.server.routes.quality import _report
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    t0 = 1_700_000_000 * S - (1_700_000_000 * S) % H
    store = open_store("duckdb://:memory:")
    try:
        store.append([Reading("p", "temp", t0 + 23 * H + i * M, 20.0 + i % 3)
                      for i in range(2 * 60)])
        new = t0 + 24 * H + 30 * M
        store.append([Reading("p", "hum", new + i * M, 50.0 + i % 2) for i in range(30)])
        rep = _report(store, "p", t0 + 24 * H, t0 + 25 * H, now_ns=t0 + 25 * H)
    finally:
        store.close()
    hum = rep["metrics"]["hum"]
    assert (hum["completeness"], hum["gaps"]) == (1.0, 0)
    assert rep["summary"]["completeness"] == 1.0 and rep["plots"] == []


def test_flat_reference_then_noise_is_no_drift() -> None:
    """Check a series flat at 20.0 for its first quarter, then noisy around 20.0, has no
    drift (8.65e9: the scale fell to 1e-12 of the median), and one flat at 0.0 then 20 +-1
    scores about 20 (was 6e299)."""
    rng = np.random.default_rng(0)
    same = np.r_[np.full(100, 20.0), 20.0 + rng.normal(0, 0.5, 300)]
    assert drift_score(same) < 1 and not has_drift(same)
    warm = np.r_[np.zeros(100), 20.0 + rng.normal(0, 1, 300)]
    assert 10 < drift_score(warm) < 40
    f = metric_issues(np.arange(400) * M, warm)["figures"]
    assert 10 < f["drift"] < 40


def _csv(tmp_path: Path, values: np.ndarray) -> str:
    path = tmp_path / "r.csv"
    pd.DataFrame({"ts": 1_700_000_000 + 60 * np.arange(len(values)),
                  "temp": values}).to_csv(path, index=False)
    return str(path)


def test_cli_table_drift_column_is_bounded(tmp_path: Path) -> None:
    """Check a flat series that shifts (a drift of about 1e299 in the reference's units)
    is shown 6 wide in the table, not as a 300-digit number."""
    done = edgewise_here("quality", _csv(tmp_path, np.r_[np.zeros(300), np.full(100, 25.0)]))
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.strip().startswith("temp"))
    assert len(row) < 100 and row.split()[-1].startswith(("1e+", "2e+", "3e+", "4e+",
                                                          "5e+", "6e+", "7e+", "8e+", "9e+"))


def test_too_few_readings_give_unknown_drift(tmp_path: Path) -> None:
    """Check 19 readings jumping from 20 to 50 have an unknown drift (None; '-' in the
    table, null in JSON), not 0.0 ('no drift'), and 20 readings have one."""
    jump = np.r_[np.full(10, 20.0), np.full(9, 50.0)]
    assert metric_issues(np.arange(19) * M, jump)["figures"]["drift"] is None
    from edgewise.quality.drift import drift_measurable

    assert not drift_measurable(jump)
    more = np.r_[jump, 50.0]
    assert drift_measurable(more)
    assert metric_issues(np.arange(20) * M, more)["figures"]["drift"] > 3
    path = _csv(tmp_path, jump)
    out = json.loads(edgewise_here("quality", path, "--json").stdout)
    assert out["devices"]["device"]["metrics"]["temp"]["drift"] is None
    table = edgewise_here("quality", path).stdout
    row = next(line for line in table.splitlines() if line.strip().startswith("temp"))
    assert row.split()[-1] == "-"
