"""``edgewise train/predict forecast`` and ``edgewise groups`` defects of a hunt: --json
rounded a forecast to 4 decimals (a metric of 1e-4 came out 0.0001, its low bound 0.0), a
CSV with a time given twice or out of order was refused (8 of NAB's 58 files), and flags of
the other source (--metric beside --csv, --column beside --data) were ignored without a
word."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.models.forecast import Forecaster

load_commands()
HOUR = 3600 * 10**9
FAST = {"n_estimators": 10, "learning_rate": 0.3, "max_rows": 1000, "calibration_origins": 8}


def _history(n: int = 24 * 20, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    k = np.arange(n)
    ts = 1_700_000_000 * 10**9 + k * HOUR
    return ts, scale * (10 + 5 * np.sin(2 * np.pi * k / 24) + rng.normal(0, 0.2, n))


def _csv(path: Path, ts: np.ndarray, y: np.ndarray) -> Path:
    times = pd.to_datetime(ts, utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
    pd.DataFrame({"timestamp": times, "v": y}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small hourly model of a metric about 1e-5 in size."""
    path = tmp_path_factory.mktemp("fc") / "small.fc"
    Forecaster(horizon=6, season=24, **FAST).fit(*_history(scale=1e-6)).save(path)
    return path


def _run(*args: str) -> tuple[int, str, str]:
    done = CliRunner(mix_stderr=False).invoke(app, list(args))
    return done.exit_code, done.stdout, done.stderr


def test_json_keeps_the_forecast_s_precision(model: Path, tmp_path: Path) -> None:
    """Check that --json gives the numbers the CSV --out holds (to the last digit), not
    rounded to 4 decimals (all of this metric's were 0.0 or 0.0)."""
    out = tmp_path / "fc.csv"
    code, stdout, stderr = _run("predict", "forecast", "--model", str(model), "--json",
                                "--out", str(out))
    assert code == 0, stderr
    rows = json.loads(stdout)["forecast"]
    written = pd.read_csv(out)
    for key in ("forecast", "low", "high"):
        got = np.array([r[key] for r in rows])
        assert (got > 1e-6).all(), (key, got)
        assert np.array_equal(got, written[key].to_numpy()), key


def test_csv_with_a_repeated_and_an_out_of_order_time(model: Path, tmp_path: Path) -> None:
    """Check that a CSV whose readings hold a time twice and one out of order is sorted and
    averaged, said in one note, and forecast as the same readings once each in order."""
    ts, y = _history(scale=1e-6)
    clean = _csv(tmp_path / "clean.csv", ts, y)
    # the 100th reading twice (its mean is the clean value), the 200th and 201st swapped
    t2 = np.insert(ts, 100, ts[100])
    y2 = np.insert(y, 100, y[100] + 2e-6)
    y2[101] -= 2e-6
    t2[[201, 202]], y2[[201, 202]] = t2[[202, 201]], y2[[202, 201]]
    messy = _csv(tmp_path / "messy.csv", t2, y2)
    runs = [_run("predict", "forecast", "--model", str(model), "--csv", str(f), "--column",
                 "v", "--json") for f in (clean, messy)]
    assert [r[0] for r in runs] == [0, 0], [r[2] for r in runs]
    assert runs[0][2] == ""
    note = runs[1][2].strip()
    assert "\n" not in note and note.startswith(f"note: --csv {str(messy)!r}: ")
    when = pd.Timestamp(int(ts[100]), tz="UTC").isoformat()
    assert f"more than one reading at 1 time(s) (the first {when}); their mean is used" in note
    assert "1 reading(s) out of time order" in note and "sorted by time" in note
    a, b = (json.loads(r[1])["forecast"] for r in runs)
    assert [r["time"] for r in a] == [r["time"] for r in b]
    assert np.allclose([r["forecast"] for r in a], [r["forecast"] for r in b], rtol=1e-9)


def test_train_takes_a_csv_with_a_repeated_time(tmp_path: Path) -> None:
    """Check that train forecast takes such a CSV too (it was refused: "strictly
    increasing")."""
    ts, y = _history()
    messy = _csv(tmp_path / "messy.csv", np.insert(ts, 5, ts[5]), np.insert(y, 5, y[5]))
    code, stdout, stderr = _run("train", "forecast", "--csv", str(messy), "--column", "v",
                                "--horizon", "4", "--season", "24", "--out",
                                str(tmp_path / "m.fc"))
    assert code == 0, stderr
    assert "their mean is used" in stderr and "trained forecaster" in stdout


def test_csv_with_many_repeated_times_is_refused(model: Path, tmp_path: Path) -> None:
    """Check that a file holding most times twice (two devices in one long file) is
    refused, not averaged into one metric."""
    ts, y = _history()
    both = _csv(tmp_path / "long.csv", np.repeat(ts, 2), np.repeat(y, 2))
    code, _, stderr = _run("predict", "forecast", "--model", str(model), "--csv", str(both),
                           "--column", "v")
    assert code == 2
    assert f"more than one reading at {len(ts)} of its {len(ts)} times" in stderr


@pytest.mark.parametrize(("args", "said"), [
    (["predict", "forecast", "--csv", "{csv}", "--column", "v", "--device", "X",
      "--metric", "nonexistent"],
     "--device 'X', --metric 'nonexistent' apply to store data (--data), not to --csv"),
    (["predict", "forecast", "--csv", "{csv}", "--column", "v", "--metric", "m"],
     "--metric 'm' applies to store data (--data), not to --csv"),
    (["predict", "forecast", "--data", "{dir}", "--device", "d", "--metric", "m",
      "--column", "nothing", "--time-column", "nothing"],
     ("--time-column 'nothing', --column 'nothing' apply to a CSV file (--csv), not to "
      "--data")),
    (["predict", "forecast", "--column", "v"],
     "--column 'v' applies to a history given with --csv or --data, and neither is given"),
])
def test_predict_refuses_flags_of_the_other_source(
        model: Path, tmp_path: Path, args: list[str], said: str) -> None:
    """Check that predict refuses a flag the history given would ignore (it forecast the
    CSV's column whatever --metric named)."""
    csv = _csv(tmp_path / "h.csv", *_history(scale=1e-6))
    args = [a.format(csv=csv, dir=tmp_path) for a in args]
    code, stdout, stderr = _run(*args[:2], "--model", str(model), *args[2:])
    assert code == 2 and stdout == "", stdout
    assert said in stderr


def test_train_refuses_csv_flags_with_a_store(tmp_path: Path) -> None:
    """Check that train forecast --data refuses --column (it fitted the store's metric as
    if it were not given)."""
    (tmp_path / "gw").mkdir()
    code, _, stderr = _run("train", "forecast", "--data", str(tmp_path / "gw"), "--device", "d",
                           "--metric", "m", "--column", "nothing", "--out",
                           str(tmp_path / "m.fc"))
    assert code == 2 and "--column 'nothing' applies to a CSV file (--csv), not to --data" \
        in stderr


def test_groups_refuses_a_time_column_with_a_store(tmp_path: Path) -> None:
    """Check that groups --data refuses --time-column (it grouped the store as if it were
    not given)."""
    (tmp_path / "gw").mkdir()
    code, _, stderr = _run("groups", "--data", str(tmp_path / "gw"), "--time-column", "nothing")
    assert code == 2 and "--time-column 'nothing' applies to CSV data (--csv) only" in stderr
