"""`edgewise train rul` / `predict rul` on inputs they once got wrong, through the CLI's entry
point (in this process: :func:`tests.models.test_cli_rul.edgewise_here`): a bad --out path,
an empty unit id, a unit's cycles given twice, ids read as floats."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.in_process import edgewise_here as edgewise  # in this process
from tests.models.test_rul import fleet


def one_line_error(p: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for part in parts:
        assert part in lines[0], lines[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rul")
    fleet(6).to_csv(d / "h.csv", index=False)
    out = d / "m.rul"
    done = edgewise("train", "rul", "--data", str(d / "h.csv"), "--sensor-columns", "temp",
                    "--cap", "60", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_train_to_a_bad_out_path_is_one_line(tmp_path: Path):
    """Check a missing directory and an existing directory as --out, before any training."""
    fleet(3).to_csv(tmp_path / "h.csv", index=False)
    missing = tmp_path / "nope" / "m.rul"
    one_line_error(edgewise("train", "rul", "--data", str(tmp_path / "h.csv"),
                            "--out", str(missing)), f"--out {str(missing)!r}", "does not exist")
    one_line_error(edgewise("train", "rul", "--data", str(tmp_path / "h.csv"),
                            "--out", str(tmp_path)), "is a directory")


def test_an_empty_unit_id_is_refused_by_row(model: Path, tmp_path: Path):
    """Check an empty unit cell is no unit called 'nan': one line names its row."""
    df = fleet(3, seed=4).astype({"unit": float})
    df.loc[5, "unit"] = np.nan
    df.to_csv(tmp_path / "n.csv", index=False)
    one_line_error(edgewise("predict", "rul", "--model", str(model), "--data",
                            str(tmp_path / "n.csv")), "row 6 has an empty 'unit'")


def test_whole_number_ids_read_as_floats_print_as_ints(model: Path, tmp_path: Path):
    """Check ids written 0.0, 1.0, 2.0 come back as 0, 1, 2."""
    fleet(3, seed=4).astype({"unit": float}).to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"),
                    "--json")
    assert done.returncode == 0, done.stderr
    units = [p["unit"] for p in json.loads(done.stdout)["predictions"]]
    assert units == [0, 1, 2] and all(isinstance(u, int) for u in units)
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"))
    assert done.returncode == 0, done.stderr
    assert [line.split()[0] for line in done.stdout.splitlines()[1:]] == ["0", "1", "2"]


def test_a_units_rows_given_twice_are_skipped_naming_the_cycle(model: Path, tmp_path: Path):
    """Check a unit whose rows were appended twice is skipped, named with its duplicated
    cycle, while the other units are predicted (as README says of a repeated cycle)."""
    df = fleet(3, seed=4)
    pd.concat([df, df[df["unit"] == 1]]).to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(model), "--data",
                    str(tmp_path / "n.csv"), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert [p["unit"] for p in answer["predictions"]] == [0, 2]
    assert [s["unit"] for s in answer["skipped"]] == [1]
    assert "'cycle' 0 is given more than once" in answer["skipped"][0]["reason"]


def test_a_unit_whose_sensor_has_no_value_is_skipped_with_why(model: Path, tmp_path: Path):
    """Check that a unit whose 'temp' is empty in every row is listed as skipped, naming the
    sensor, while the other units are predicted (it was filled with a raw 0 and predicted
    silently far off), in text and in --json; and that with no unit left it is one line."""
    df = fleet(3, seed=4)
    df.loc[df.unit == 1, "temp"] = np.nan
    df.to_csv(tmp_path / "n.csv", index=False)
    rows = int((df.unit == 1).sum())
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"),
                    "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert [p["unit"] for p in answer["predictions"]] == [0, 2]
    assert answer["skipped"] == [
        {"unit": 1, "reason": f"sensor 'temp' has no value in any of its {rows} row(s)"}]
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"))
    assert done.returncode == 0, done.stderr
    assert (f"skipped 1 unit(s): 1 (sensor 'temp' has no value in any of its {rows} row(s))"
            in done.stdout), done.stdout
    df[df.unit == 1].to_csv(tmp_path / "one.csv", index=False)
    one_line_error(edgewise("predict", "rul", "--model", str(model), "--data",
                            str(tmp_path / "one.csv")), "no unit can be scored",
                   "1 (sensor 'temp' has no value")


def test_an_infinite_value_is_named_not_used(model: Path, tmp_path: Path):
    """Check that a unit with an infinite sensor value is skipped with the value and its
    cycle (it was predicted from inf, with RuntimeWarnings on stderr)."""
    df = fleet(2, seed=4)
    df.loc[3, "temp"] = np.inf
    df.to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"),
                    "--json")
    assert done.returncode == 0 and done.stderr == "", done.stderr
    answer = json.loads(done.stdout)
    assert [p["unit"] for p in answer["predictions"]] == [1]
    assert answer["skipped"][0]["unit"] == 0
    assert answer["skipped"][0]["reason"].startswith("sensor 'temp' is inf at cycle 3")


@pytest.mark.parametrize("command", ["train", "predict"])
def test_a_text_or_missing_time_is_one_line(model: Path, tmp_path: Path, command: str):
    """Check that a time column of text ('10c' sorted before '2c': predict answered wrongly,
    train gave a TypeError traceback) or with an empty cell (sklearn's 'Input y contains
    NaN', or a row silently sorted last) is refused in one line naming the column."""
    df = fleet(4, seed=4)
    text = df.assign(cycle=df["cycle"].astype(str) + "c")
    text.to_csv(tmp_path / "text.csv", index=False)
    gap = df.astype({"cycle": float})
    gap.loc[6, "cycle"] = np.nan
    gap.to_csv(tmp_path / "gap.csv", index=False)
    args = (["train", "rul", "--out", str(tmp_path / "m.rul"), "--sensor-columns", "temp"]
            if command == "train" else ["predict", "rul", "--model", str(model)])
    one_line_error(edgewise(*args, "--data", str(tmp_path / "text.csv")),
                   "time column 'cycle' must be numeric", "row 1 has '0c'")
    one_line_error(edgewise(*args, "--data", str(tmp_path / "gap.csv")),
                   "time column 'cycle' has no value in row 7")


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["--seed", "-1"], ["--seed -1", "from 0 to 2147483647"]),
        (["--sensor-columns", "temp,unit"],
         ["column 'unit' is named in both --unit-column and --sensor-columns"]),
        (["--sensor-columns", "temp,temp"], ["column 'temp' is named twice in --sensor-columns"]),
        (["--condition-columns", "load", "--sensor-columns", "load,temp"],
         ["'load' is named in both --condition-columns and --sensor-columns"]),
        (["--models", "gbm,gbm"], ["--models 'gbm,gbm' names 'gbm' more than once"]),
    ],
)
def test_train_options_that_cannot_be_right_are_one_line(tmp_path: Path, args, parts):
    """Check a negative seed (a numpy traceback), a column in two roles ('column label is not
    unique') and a member named twice (a model file every prediction crashed on) are refused
    in one line naming the option, and no model file is written."""
    fleet(3).to_csv(tmp_path / "h.csv", index=False)
    out = tmp_path / "m.rul"
    one_line_error(edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--out",
                            str(out), *args), *parts)
    assert not out.exists()


def test_a_prediction_at_the_cap_prints_as_at_least_the_cap(model: Path, tmp_path: Path):
    """Check that a unit predicted at the cap prints '>=60.0' with an open interval and a note
    saying predictions are capped (a one-row unit printed '125.0 [120.0, 125.35]', as if its
    RUL were known to be about 125), and that --json flags it."""
    fleet(3, seed=4).groupby("unit").head(1).to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"),
                    "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["cap"] == 60.0
    preds = answer["predictions"]
    assert all(p["high"] <= 60.0 and p["high_open"] == (p["high"] == 60.0) for p in preds)
    assert all(p["rul_open"] == (p["rul"] == 60.0) for p in preds)
    opened = [p for p in preds if p["rul_open"]]
    assert opened, preds  # a unit seen for one cycle is predicted healthy: at the cap
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"))
    line = next(x for x in done.stdout.splitlines() if x.split()[0] == str(opened[0]["unit"]))
    assert ">=60.0" in line and line.endswith("open)"), line
    assert "note: the model predicts the RUL capped at 60 steps" in done.stdout


def test_a_device_with_a_metric_named_like_the_time_column_is_skipped(model: Path,
                                                                       tmp_path: Path):
    """Check that predicting from a store skips, with why, a device whose metrics include
    one named 'cycle' (the model's time column), and scores the others (every store RUL
    path crashed with 'cannot insert cycle, already exists')."""
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    store = open_store(f"duckdb:///{tmp_path / 'edgewise.duckdb'}")
    t0 = 1_700_000_000 * 10**9
    for device, extra in (("pump-1", []), ("pump-2", ["cycle"])):
        g = fleet(1, seed=4)
        store.append([Reading(device, m, t0 + int(c) * 10**9, float(v))
                      for m in ["temp", "noise", "load", "flat", *extra]
                      for c, v in zip(g.cycle, g[m if m != "cycle" else "cycle"], strict=True)])
    store.close()
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert [p["unit"] for p in answer["predictions"]] == ["pump-1"]
    assert answer["skipped"] == [{"device": "pump-2", "reason": "has a metric named 'cycle', "
                                  "the name of the time column (rename the metric, or train "
                                  "with another --time-column)"}]
