"""The ``edgewise train rul`` / ``predict rul`` commands, run as real processes (and, where the
process boundary is not under test, in this one: :func:`tests.in_process.edgewise_here`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from edgewise.models.rul import read_header
from tests.conftest import REPO
from tests.in_process import edgewise_here
from tests.models.test_rul import fleet


def edgewise(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "edgewise", *args], capture_output=True, text=True, env=env,
        timeout=240,
    )


def test_train_then_predict_round_trip(tmp_path: Path) -> None:
    """Check that a trained model file is versioned and predicts each unit with an interval."""
    fleet(12).rename(columns={"unit": "pump", "cycle": "hour"}).to_csv(tmp_path / "h.csv")
    fleet(3, seed=4).rename(columns={"unit": "pump", "cycle": "hour"}).to_csv(tmp_path / "n.csv")
    out = tmp_path / "m.rul"
    # trained here (an interpreter start less), predicted by a fresh ``python -m edgewise``
    # process: the file alone carries the model from one process to the other
    done = edgewise_here(
        "train", "rul", "--data", str(tmp_path / "h.csv"), "--unit-column", "pump",
        "--time-column", "hour", "--sensor-columns", "temp,noise", "--cap", "60",
        "--out", str(out), "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["units"] == 12 and summary["bytes"] == out.stat().st_size
    assert read_header(out)["sensor_columns"] == ["temp", "noise"]

    done = edgewise("predict", "rul", "--model", str(out), "--data", str(tmp_path / "n.csv"),
                    "--json")
    assert done.returncode == 0, done.stderr
    preds = json.loads(done.stdout)["predictions"]
    assert [p["unit"] for p in preds] == [0, 1, 2]
    assert all(p["low"] <= p["rul"] <= p["high"] for p in preds)


def test_missing_column_is_one_readable_line(tmp_path: Path) -> None:
    """Check that a missing unit column exits non-zero with a line naming the column."""
    fleet(5).to_csv(tmp_path / "h.csv")
    done = edgewise_here("train", "rul", "--data", str(tmp_path / "h.csv"), "--unit-column", "pump",
                    "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 2
    assert "lacks the column(s) ['pump']" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
