"""The ``edgewise train rul`` / ``predict rul`` commands, run as real processes, and
:func:`edgewise_here`, which runs a command in the test's own process as that process would."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from pathlib import Path

from edgewise.models.rul import read_header
from tests.conftest import REPO
from tests.models.test_rul import fleet


def edgewise(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "edgewise", *args], capture_output=True, text=True, env=env,
        timeout=240,
    )


def edgewise_here(*args: str) -> subprocess.CompletedProcess[str]:
    """``edgewise ARGS`` run in this process through the same entry point
    (:func:`edgewise.cli.main`) as ``python -m edgewise``, answered as :func:`edgewise` answers:
    its exit status, and everything written to file descriptors 1 and 2 (Python's and native
    libraries' output alike); warnings are printed to stderr under a fresh interpreter's
    filters, not recorded by pytest, and an uncaught exception is a traceback and status 1.
    It spares a test that checks what a command answers, not the process boundary, the
    seconds of a new interpreter importing pandas, scikit-learn and LightGBM."""
    from edgewise.cli import main

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    saved_argv, saved_streams = sys.argv, (sys.stdout, sys.stderr)
    saved_fds = (os.dup(1), os.dup(2))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        for stream in saved_streams:
            stream.flush()
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        here = sys.stdout, sys.stderr = tuple(
            io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                             write_through=True) for fd in (1, 2))
        sys.argv = ["edgewise", *args]
        code = 0
        try:
            with warnings.catch_warnings():
                warnings.resetwarnings()  # a fresh interpreter's filters
                for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                                 ResourceWarning):
                    warnings.simplefilter("ignore", category)
                warnings.showwarning = show
                main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (exc.code is not None)
            if isinstance(exc.code, str):
                sys.stderr.write(exc.code + "\n")
        except Exception:
            traceback.print_exc()
            code = 1
        finally:
            for stream in here:
                stream.close()
            sys.stdout, sys.stderr = saved_streams
            sys.argv = saved_argv
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(["edgewise", *args], int(code),
                                           out.read().decode(), err.read().decode())


def test_train_then_predict_round_trip(tmp_path: Path) -> None:
    """Check that a trained model file is versioned and predicts each unit with an interval."""
    fleet(12).rename(columns={"unit": "pump", "cycle": "hour"}).to_csv(tmp_path / "h.csv")
    fleet(3, seed=4).rename(columns={"unit": "pump", "cycle": "hour"}).to_csv(tmp_path / "n.csv")
    out = tmp_path / "m.rul"
    done = edgewise(
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
