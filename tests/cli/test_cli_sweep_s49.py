"""A bad-input sweep of the CLI (session 49): a CSV given as a DuckDB store, a fleet size
that ran without end, options refused in words that named no option."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.test_cli_sweep_s46 import _one_error_line
from tests.conftest import REPO, free_port
from tests.in_process import edgewise_here

CSV = "time,temp_c,flow\n" + "".join(f"{1_700_000_000 + 60 * i},{20 + i % 7},{10 - i % 3}\n"
                                    for i in range(400))



def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_store_purge_of_a_csv_is_refused_and_the_csv_is_kept(tmp_path: Path) -> None:
    # DuckDB opens a CSV as a read-only view without an error: the purge copied its (no)
    # store rows to a new file that replaced the CSV, exit 0 ("143.3 KiB -> 524.0 KiB")
    csv = tmp_path / "pump-7.csv"
    csv.write_text(CSV)
    before = _digest(csv)
    r = edgewise_here("store", "purge", "--store", f"duckdb://{csv}")
    assert r.returncode == 2, r.stdout
    _one_error_line(r.stderr, str(csv), "no DuckDB database file", "'time,temp_c,'")
    assert _digest(csv) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pump-7.csv"]


def test_repair_of_a_csv_is_refused_not_said_to_open_cleanly(tmp_path: Path) -> None:
    csv = tmp_path / "pump-7.csv"
    csv.write_text(CSV)
    before = _digest(csv)
    r = edgewise_here("repair", "--store", f"duckdb://{csv}")
    assert r.returncode == 2, r.stdout  # was 0: "opens cleanly (0 readings); nothing to repair"
    _one_error_line(r.stderr, str(csv), "no DuckDB database file")
    assert _digest(csv) == before


def test_purge_and_repair_still_take_a_real_store(tmp_path: Path) -> None:
    from edgewise.store.duckdb import DuckDBStore
    from edgewise.telemetry import Reading

    store = DuckDBStore(tmp_path / "edgewise.duckdb")
    store.append([Reading("pump-1", "temp_c", 10**18 + i, 1.0, seq=i + 1) for i in range(5)])
    store.close()
    r = edgewise_here("repair", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "opens cleanly (5 readings)" in r.stdout
    r = edgewise_here("store", "purge", "--data-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr


def _limited() -> None:  # the old code ran without end, its memory growing: bounded here
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))


@pytest.mark.parametrize("args", [
    ["server", "--clients", "99999999999", "--port", "1"],
    ["demo", "--clients", "99999999999"],
    ["client", "--superlink", "127.0.0.1:1", "--num-partitions", "99999999999"],
])
def test_a_fleet_too_large_to_simulate_is_refused_at_once(tmp_path: Path,
                                                          args: list[str]) -> None:
    # 'federate server --clients 99999999999' printed nothing and simulated pumps until
    # killed (the DP budget check before a pump run builds the whole fleet)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    try:
        r = subprocess.run([sys.executable, "-m", "edgewise", "federate", *args, "--data-dir",
                            str(tmp_path / "data")], capture_output=True, text=True,
                           timeout=60, cwd=REPO, env=env, preexec_fn=_limited)
    except subprocess.TimeoutExpired:
        pytest.fail(f"federate {' '.join(args)} still ran after 60 s")
    assert r.returncode == 2, r.stderr[-2000:]
    option = "--num-partitions" if "client" in args else "--clients"
    _one_error_line(r.stderr, option, "at most 10,000", "99999999999")


def test_a_fleet_of_10000_is_still_taken_and_0_keeps_its_message(tmp_path: Path) -> None:
    from edgewise.cli.federate import MAX_FLEET, _check_fleet_size

    assert MAX_FLEET == 10_000
    _check_fleet_size("--clients", 10_000)
    r = edgewise_here("federate", "server", "--clients", "0", "--data-dir", str(tmp_path))
    assert r.returncode == 2
    _one_error_line(r.stderr, "--clients must be >= 1. Got 0.")


@pytest.mark.parametrize(("args", "option"), [
    (["--horizon", "0"], "--horizon"),
    (["--horizon", "-3"], "--horizon"),
    (["--season", "0"], "--season"),
    (["--step", "abc"], "--step"),
    (["--step", "0s"], "--step"),
])
def test_train_forecast_names_the_option_of_a_bad_number(tmp_path: Path, args: list[str],
                                                         option: str) -> None:
    # was "The 'horizon' parameter of Forecaster must be an int in the range [1, inf)",
    # naming no option, once the whole history had been read
    csv = tmp_path / "h.csv"
    csv.write_text(CSV)
    out = tmp_path / "m.forecast"
    r = edgewise_here("train", "forecast", "--out", str(out), "--csv", str(csv), "--column",
                      "temp_c", *args)
    assert r.returncode == 2, r.stdout
    line = _one_error_line(r.stderr, option, args[1])
    assert "Forecaster" not in line, line
    assert not out.exists()


@pytest.mark.parametrize(("args", "option"), [
    (["--format", "ONNX"], "--format"),
    (["--format", "xyz"], "--format"),
    (["--dtype", "float16"], "--dtype"),
])
def test_export_names_an_unknown_format_or_dtype(tmp_path: Path, args: list[str],
                                                 option: str) -> None:
    # was "Cannot export EWZScore to format='ONNX' with dtype='float32'", naming no option
    out = tmp_path / "export"
    r = edgewise_here("export", "--detector", "ewzscore", "--out", str(out), *args)
    assert r.returncode == 2, r.stdout
    line = _one_error_line(r.stderr, f"{option} must be one of", repr(args[1]))
    assert "onnx" in line or "float32" in line, line
    assert not out.exists()


def test_serve_on_a_csv_store_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    # the gateway started on it ("ready") and took readings that were gone at its next
    # start: DuckDB holds what is written to a CSV opened as a store in memory only
    csv = tmp_path / "pump-7.csv"
    csv.write_text(CSV)
    before = _digest(csv)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    try:  # a subprocess: the old code ran the gateway until stopped
        r = subprocess.run([sys.executable, "-m", "edgewise", "serve", "--data-dir", str(data),
                            "--store", f"duckdb://{csv}", "--port", str(free_port()),
                            "--mqtt-port", str(free_port())], capture_output=True, text=True,
                           timeout=30, cwd=REPO, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("serve on a CSV store still ran after 30 s")
    assert r.returncode == 2, r.stderr[-2000:]
    _one_error_line(r.stderr, "--store", str(csv), "no DuckDB database file")
    assert _digest(csv) == before
    assert not data.exists()


def test_the_store_itself_refuses_a_file_that_is_no_duckdb_database(tmp_path: Path) -> None:
    """Every caller (the demo, the HTTP API, Python users), not only the three commands:
    DuckDB opened a CSV as a read-only view, and appends to it were gone at the next open."""
    from edgewise.errors import StoreError
    from edgewise.store import open_store

    csv = tmp_path / "pump.csv"
    csv.write_text("time,temp_c\n2024-01-01T00:00:00Z,21.0\n")
    before = csv.read_bytes()
    with pytest.raises(StoreError, match="is no DuckDB database file"):
        open_store(f"duckdb://{csv}")
    assert csv.read_bytes() == before
