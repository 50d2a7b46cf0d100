"""``edgewise train forecast`` / ``predict forecast`` from a CSV and from a gateway's store,
and ``edgewise bench forecast``'s refusals, run in-process through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.models.forecast import read_forecast_header
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.models.test_forecast import hourly

load_commands()
FAST = ["--horizon", "12"]


def cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner(mix_stderr=False).invoke(app, list(args))


@pytest.fixture(scope="module")
def history_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A month of hourly readings as CSV with ISO times, as a user would export them."""
    ts, y = hourly(days=30)
    path = tmp_path_factory.mktemp("csv") / "load.csv"
    pd.DataFrame({"time": pd.to_datetime(ts, utc=True).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "kw": y}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def model_file(history_csv: Path) -> Path:
    out = history_csv.with_name("load.forecast")
    done = cli("train", "forecast", "--csv", str(history_csv), "--time-column", "time",
               "--column", "kw", "--out", str(out), *FAST, "--json")
    assert done.exit_code == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["bytes"] == out.stat().st_size and summary["season"] == 24
    return out


def test_train_then_predict_json_and_csv(model_file: Path, tmp_path: Path) -> None:
    """Check predict prints the horizon's steps with intervals as JSON and writes the CSV."""
    assert read_forecast_header(model_file)["horizon"] == 12
    out = tmp_path / "next.csv"
    done = cli("predict", "forecast", "--model", str(model_file), "--out", str(out), "--json")
    assert done.exit_code == 0, done.stderr
    rows = json.loads(done.stdout)["forecast"]
    assert len(rows) == 12 and all(r["low"] <= r["forecast"] <= r["high"] for r in rows)
    table = pd.read_csv(out)
    assert list(table.columns) == ["time", "forecast", "low", "high"] and len(table) == 12
    assert table["time"].iloc[0] == rows[0]["time"]


def test_predict_from_the_store_of_a_gateway(model_file: Path, tmp_path: Path) -> None:
    """Check train and predict read a device's metric from a gateway data dir's store."""
    ts, y = hourly(days=30, seed=5)
    store = open_store(f"duckdb:///{tmp_path / 'edgewise.duckdb'}")
    try:
        store.append([Reading("meter-1", "kw", int(t), float(v)) for t, v in zip(ts, y,
                                                                                  strict=True)])
    finally:
        store.close()
    out = tmp_path / "m.forecast"
    done = cli("train", "forecast", "--data", str(tmp_path), "--device", "meter-1", "--metric",
               "kw", "--out", str(out), *FAST)
    assert done.exit_code == 0, done.stderr
    assert "meter-1/kw" in done.stdout and "season 24" in done.stdout
    done = cli("predict", "forecast", "--model", str(out), "--data", str(tmp_path), "--device",
               "meter-1", "--metric", "kw", "--json")
    assert done.exit_code == 0, done.stderr
    first = pd.Timestamp(json.loads(done.stdout)["forecast"][0]["time"]).value
    # the next reading's nominal time (the readings come 0-59 s after the hour: at :30)
    assert first % (3600 * 10**9) == 30 * 10**9
    assert abs(first - (int(ts[-1]) + 3600 * 10**9)) <= 30 * 10**9
    for args, words in (
        (["--device", "meter-9", "--metric", "kw"], "--device 'meter-9' is not in the store"),
        (["--device", "meter-1", "--metric", "rpm"], "metrics are ['kw']"),
    ):
        done = cli("predict", "forecast", "--model", str(out), "--data", str(tmp_path), *args)
        assert done.exit_code == 2 and words in done.stderr, done.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["--column", "nope"], "--column 'nope' is not a column"),
    (["--column", "kw", "--horizon", "0"], "--horizon must be a whole number of steps"),
    (["--column", "kw", "--season", "5000"], "needs a history of at least"),
    (["--column", "kw", "--step", "weekly-ish"], "--step must be a positive time step"),
    (["--column", "kw", "--seed", "-1"], "--seed -1: must be a whole number from 0"),
    # finer than the hourly readings: a traceback from scikit-learn (exit 1), or gigabytes
    (["--column", "kw", "--step", "30min", "--horizon", "1"],
     "The step '30min' (Forecaster's 'step', --step) is finer than the readings: they are 1h"),
    (["--column", "kw", "--step", "1s"], "at least 36m, e.g. the spacing '1h'"),
])
def test_train_refuses_bad_input_in_one_line(history_csv: Path, tmp_path: Path, args: list[str],
                                             words: str) -> None:
    """Check bad options and histories end in one 'error:' line and exit 2, no model file."""
    out = tmp_path / "m.forecast"
    done = cli("train", "forecast", "--csv", str(history_csv), "--time-column", "time", *args,
               "--out", str(out))
    assert done.exit_code == 2, done.stdout
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert words in done.stderr and not out.exists()


def test_train_sorts_an_unsorted_csv_and_refuses_an_inf(tmp_path: Path) -> None:
    """Check a CSV with times out of order is sorted, saying so, and one with an infinite
    value is refused by name."""
    ts, y = hourly(days=30)
    frame = pd.DataFrame({"time": ts, "kw": y})
    frame.iloc[[3, 4]] = frame.iloc[[4, 3]].to_numpy()
    frame.to_csv(tmp_path / "a.csv", index=False)
    done = cli("train", "forecast", "--csv", str(tmp_path / "a.csv"), "--time-column", "time",
               "--column", "kw", "--out", str(tmp_path / "m"))
    assert done.exit_code == 0 and "1 reading(s) out of time order" in done.stderr, done.stderr
    frame = pd.DataFrame({"time": ts, "kw": np.where(np.arange(len(y)) == 7, np.inf, y)})
    frame.to_csv(tmp_path / "b.csv", index=False)
    done = cli("train", "forecast", "--csv", str(tmp_path / "b.csv"), "--time-column", "time",
               "--column", "kw", "--out", str(tmp_path / "m"))
    assert done.exit_code == 2 and "row 8 has inf" in done.stderr, done.stderr


def test_predict_refuses_a_missing_or_foreign_model_and_both_sources(
        history_csv: Path, model_file: Path, tmp_path: Path) -> None:
    """Check predict names a missing model, a file that is no model, and two sources."""
    (tmp_path / "notes.txt").write_text("hello\n")
    for args, words in (
        (["--model", str(tmp_path / "absent")], "does not exist"),
        (["--model", str(tmp_path / "notes.txt")], "not an Edgewise forecast model"),
        (["--model", str(model_file), "--csv", str(history_csv), "--data", str(tmp_path)],
         "one of the two"),
    ):
        done = cli("predict", "forecast", *args)
        assert done.exit_code == 2 and words in done.stderr, done.stderr


def test_bench_forecast_refuses_a_wrong_nab_root(tmp_path: Path) -> None:
    """Check the benchmark names a NAB root without the series before any work."""
    done = cli("bench", "forecast", "--nab", str(tmp_path))
    assert done.exit_code == 2 and "has no data/realKnownCause/nyc_taxi.csv" in done.stderr
