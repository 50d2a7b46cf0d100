"""``edgewise export`` of an int8 ONNX graph: the host check and README it writes say where
int8 clips, as ``OnnxExport.predict`` does.

The graph keeps its calibration range in its metadata (``edgewise.calibration_min`` /
``edgewise.calibration_max``), but ``<name>_host_test.py`` printed the clipped output of a
row beyond it (0.33 where torch gives 19.9) with no word, and ``<name>_README.md`` said
nothing of the range."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")


def _run_cli(*args: str):
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, ["export", *args])


@pytest.fixture(scope="module")
def int8_out(tmp_path_factory) -> Path:
    """A seeded 1-8-1 MLP exported by the CLI to int8 ONNX, calibrated on -1..1."""
    tmp = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 1)).eval()
    (tmp / "net.pkl").write_bytes(pickle.dumps(net))
    (tmp / "cal.csv").write_text("\n".join(f"{v:.6g}" for v in np.linspace(-1, 1, 200)) + "\n")
    out = tmp / "out"
    r = _run_cli(str(tmp / "net.pkl"), "--format", "onnx", "--dtype", "int8", "--calibration",
                 str(tmp / "cal.csv"), "--out", str(out), "--name", "narrow")
    assert r.exit_code == 0, r.stderr
    return out


def _host(out: Path, feed: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "narrow_host_test.py"], input=feed, cwd=out,
                          capture_output=True, text=True, timeout=120)


def test_int8_host_test_warns_on_stderr_of_rows_beyond_the_calibration_range(int8_out):
    """Check the generated host_test.py, run as a program, names on stderr the rows beyond
    the recorded range (how many, the input, its value and range) and still prints one
    output per row on stdout (old: silent)."""
    run = _host(int8_out, "0.5 -5 50 nan")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.split()) == 4
    assert ("warning: int8 graph 'narrow': 2 of the 4 rows hold an input beyond the range of "
            "the calibration rows (input 0: 50.0 outside [-1.0, 1.0])") in run.stderr


def test_int8_host_test_inside_the_calibration_range_is_quiet(int8_out):
    """Check rows within the range (its ends included) and a NaN row give no warning."""
    run = _host(int8_out, "-1 0 1 nan")
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.split()) == 4
    assert run.stderr == ""


def test_int8_host_test_reads_the_range_as_the_float32_bounds_it_is(tmp_path):
    """Check a bound that is no float32 in decimal (0.1, kept as "0.1") is read back as the
    float32 the graph was calibrated on: an input row of 0.1 is inside (a first version read
    0.1 as float64 and warned "0.1 outside [-0.7, 0.1]"), the next float32 up is not, and
    the warning tells them apart."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 1)).eval()
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(net))
    (tmp_path / "cal.csv").write_text("0.1\n-0.7\n0.05\n")
    r = _run_cli(str(tmp_path / "net.pkl"), "--format", "onnx", "--dtype", "int8",
                 "--calibration", str(tmp_path / "cal.csv"), "--out", str(tmp_path / "out"),
                 "--name", "narrow")
    assert r.exit_code == 0, r.stderr
    run = _host(tmp_path / "out", "0.1 -0.7 0.05")
    assert run.returncode == 0 and run.stderr == "", run.stderr
    run = _host(tmp_path / "out", "0.10000001")
    assert "(input 0: 0.10000001 outside [-0.7, 0.1])" in run.stderr


def test_int8_readme_names_the_calibration_range_and_the_warning(int8_out):
    """Check the README says int8 clips to the calibration range, gives the range and the
    metadata keys it is kept under, and that host_test.py warns (old: nothing)."""
    text = " ".join((int8_out / "narrow_README.md").read_text().split())
    assert "## Calibration range (int8)" in text
    assert "`edgewise.calibration_min` and `edgewise.calibration_max`" in text
    assert "input 0: [-1.0, 1.0]" in text
    assert "narrow_host_test.py warns on stderr of rows beyond it" in text


def test_float32_onnx_host_test_and_readme_say_nothing_of_calibration(tmp_path):
    """Check a float32 graph (no range) gets no range check and no such README section."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 1)).eval()
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(net))
    r = _run_cli(str(tmp_path / "net.pkl"), "--format", "onnx", "--out", str(tmp_path / "o"),
                 "--name", "narrow")
    assert r.exit_code == 0, r.stderr
    assert "Calibration range" not in (tmp_path / "o" / "narrow_README.md").read_text()
    run = _host(tmp_path / "o", "50")
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_cli_int8_onnx_stderr_has_no_onnxruntime_preprocessing_advice(tmp_path):
    """Check ``edgewise export --format onnx --dtype int8``, run as a program, prints its own
    lines on stderr only: onnxruntime's root-logger advice ("WARNING:root:Please consider to
    run pre-processing before quantization. Refer to example: https://...", twice) came
    with every int8 graph, telling the user to run a script they cannot run on it."""
    import os

    import edgewise

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 1)).eval()
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(net))
    rows = np.random.default_rng(0).normal(size=(50, 2))
    (tmp_path / "cal.csv").write_text("\n".join(f"{a:.6g},{b:.6g}" for a, b in rows) + "\n")
    env = {**os.environ, "PYTHONPATH": str(Path(edgewise.__file__).parents[1])}
    run = subprocess.run([sys.executable, "-m", "edgewise", "export", "net.pkl", "--format",
                          "onnx", "--dtype", "int8", "--calibration", "cal.csv", "--out", "o"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "pre-processing" not in run.stderr
    assert "int8: RMSE" in run.stderr  # the command's own line is still there


def test_cli_out_and_calibration_with_a_leading_tilde_are_under_home(tmp_path, monkeypatch):
    """Check ``--out=~/fw`` and ``--calibration=~/cal.csv`` (a ``~`` the shell leaves as it
    is after ``=``) are under the home folder, as every other path option of edgewise
    takes them: the files went to ``./~/fw`` in the working directory, and the calibration
    file "did not exist"."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.ReLU(),
                              torch.nn.Linear(4, 1)).eval()
    (home / "net.pkl").write_bytes(pickle.dumps(net))
    (home / "cal.csv").write_text("\n".join(f"{v:.3f}" for v in np.linspace(-1, 1, 50)) + "\n")
    r = _run_cli("~/net.pkl", "--format=onnx", "--dtype=int8", "--calibration=~/cal.csv",
                 "--out=~/fw", "--name=tilde")
    assert r.exit_code == 0, r.stderr
    assert (home / "fw" / "tilde.onnx").is_file() and (home / "fw" / "tilde_README.md").is_file()
    assert not (work / "~").exists()


def test_onnx_host_test_names_a_word_that_is_no_number_and_a_partial_row(int8_out):
    """Check host_test.py given a CSV row ("0.5,1") or a row short of its inputs ends in one
    ``error:`` line naming it, not a traceback (ValueError from float(), or "cannot reshape
    array of size 3" from numpy)."""
    run = _host(int8_out, "0.5,1")
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip() == ("error: word 1 on stdin, '0.5,1', is not a number; give "
                                  "numbers separated by spaces or newlines.")
    assert _host(int8_out, "0.5").returncode == 0  # one input: any count is whole rows


def test_onnx_host_test_of_two_inputs_refuses_a_partial_row(tmp_path):
    """Check a graph of two inputs given three numbers says so in one line."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 1)).eval()
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(net))
    r = _run_cli(str(tmp_path / "net.pkl"), "--format", "onnx", "--out", str(tmp_path / "o"),
                 "--name", "narrow")
    assert r.exit_code == 0, r.stderr
    run = _host(tmp_path / "o", "1 2 3")
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip() == ("error: 3 numbers on stdin are not whole rows of 2 inputs "
                                  "(the last row has 1); give 2 numbers per row.")
    run = _host(tmp_path / "o", "1 2\n3 4\n")
    assert run.returncode == 0 and len(run.stdout.split()) == 2, run.stderr
