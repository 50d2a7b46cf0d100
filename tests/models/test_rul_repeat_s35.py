"""`predict rul`: a unit repeating a cycle is skipped with why, the others predicted; training
still refuses it (session 35 hunt). It aborted the whole run with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.in_process import edgewise_here as edgewise  # in this process
from tests.models.test_rul import fleet


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("rul")
    fleet(6).to_csv(d / "h.csv", index=False)
    out = d / "m.rul"
    done = edgewise("train", "rul", "--data", str(d / "h.csv"), "--sensor-columns", "temp",
                    "--cap", "60", "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def _repeat_a_row(df: pd.DataFrame, unit: int, at: int) -> pd.DataFrame:
    i = df.index[df["unit"] == unit][at]
    return pd.concat([df.loc[:i], df.loc[[i]], df.loc[i + 1:]], ignore_index=True)


def test_a_unit_repeating_a_cycle_is_skipped_the_others_predicted(model: Path,
                                                                 tmp_path: Path) -> None:
    df = fleet(3, seed=4)
    bad = _repeat_a_row(df, 1, 4)
    row = int(bad.index[(bad["unit"] == 1)][4]) + 1  # 1-based data row of the first copy
    cycle = int(bad.loc[row - 1, "cycle"])
    bad.to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"),
                    "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [p["unit"] for p in out["predictions"]] == [0, 2]
    [skip] = out["skipped"]
    assert skip["unit"] == 1
    why = skip["reason"]
    assert f"'cycle' {cycle!r} is given more than once (rows {row} and {row + 1})" in why
    assert "a step of 0 (the model was trained on steps of 1)" in why
    text = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"))
    assert text.returncode == 0, text.stderr
    assert "skipped 1 unit(s): 1 (its 'cycle'" in text.stdout


def test_every_unit_repeating_a_cycle_is_one_error(model: Path, tmp_path: Path) -> None:
    df = fleet(2, seed=4)
    _repeat_a_row(_repeat_a_row(df, 0, 2), 1, 2).to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(model), "--data", str(tmp_path / "n.csv"))
    assert done.returncode == 2
    assert "no unit can be scored by this model" in done.stderr
    assert "given more than once" in done.stderr


def test_training_still_refuses_a_repeated_cycle(tmp_path: Path) -> None:
    _repeat_a_row(fleet(3), 2, 3).to_csv(tmp_path / "h.csv", index=False)
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--sensor-columns",
                    "temp", "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 2
    assert "unit 2 has cycle" in done.stderr and "more than once (rows" in done.stderr
