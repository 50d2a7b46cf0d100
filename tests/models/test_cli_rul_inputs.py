"""`edgewise train rul` / `predict rul` on inputs they once got wrong, as real processes:
a bad --out path, an empty unit id, a unit's cycles given twice, ids read as floats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO
from tests.models.test_rul import fleet


def edgewise(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "edgewise", *args], capture_output=True, text=True, env=env,
        timeout=240,
    )


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


def test_a_units_rows_given_twice_are_refused(model: Path, tmp_path: Path):
    """Check a unit whose rows were appended twice is named with its duplicated cycle."""
    df = fleet(3, seed=4)
    pd.concat([df, df[df["unit"] == 1]]).to_csv(tmp_path / "n.csv", index=False)
    one_line_error(edgewise("predict", "rul", "--model", str(model), "--data",
                            str(tmp_path / "n.csv")), "unit 1 has cycle 0 more than once")
