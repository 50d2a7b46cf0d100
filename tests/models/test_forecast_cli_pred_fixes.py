"""``edgewise predict forecast`` with steps below a second: distinct times, and the step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from edgewise.cli import app, load_commands

load_commands()


def test_sub_second_steps_keep_distinct_times(tmp_path: Path) -> None:
    """Check that a 200 ms forecast's times in --json and the CSV are 200 ms apart (they
    were printed in whole seconds, five rows per time), that --json gives step_s, and that
    train says the step (it said "0 s")."""
    n = 600
    ts = pd.Timestamp("2023-11-14T22:13:20Z") + pd.to_timedelta(np.arange(n) * 200, "ms")
    rng = np.random.default_rng(0)
    y = 10 + np.sin(np.arange(n) / 10) + rng.normal(0, 0.05, n)
    csv = tmp_path / "subsec.csv"
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "v": y}).to_csv(
        csv, index=False)
    model = tmp_path / "sub.fc"
    run = CliRunner(mix_stderr=False)
    done = run.invoke(app, ["train", "forecast", "--csv", str(csv), "--column", "v",
                            "--horizon", "10", "--out", str(model)])
    assert done.exit_code == 0, done.stdout + done.stderr
    trained = done.stdout
    out = tmp_path / "fc.csv"
    done = run.invoke(app, ["predict", "forecast", "--model", str(model), "--json",
                            "--out", str(out)])
    assert done.exit_code == 0, done.stdout + done.stderr
    body = json.loads(done.stdout)
    times = [r["time"] for r in body["forecast"]]
    assert times[:2] == ["2023-11-14T22:15:20.000Z", "2023-11-14T22:15:20.200Z"], times
    assert (pd.to_datetime(times).to_series().diff().dropna() == pd.Timedelta("200ms")).all()
    assert pd.read_csv(out)["time"].tolist() == times
    assert body["step_s"] == 0.2
    assert "steps of 0.2 s" in trained, trained  # was "steps of 0 s"
