"""Hunt fixes in the benchmarks: options checked before any work, with one-line errors
(M3, M4, L1, L2), no fake data left in a user's store (M4), no unpaced "half load" (M3),
and honest labels of what was measured (M5)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import ConfigError

load_commands()


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner(mix_stderr=False).invoke(app, list(args))


# M3: bench ingest ---------------------------------------------------------------------

@pytest.mark.parametrize(("args", "wanted"), [
    (["--consumer", "junk"], "--consumer must be one of 'plugin', 'subscriber'. Got 'junk'"),
    (["--seconds", "0"], "--seconds must be a float in the range (0, 86400]. Got 0.0"),
    (["--window", "0"], "--window must be an int in the range [1, inf). Got 0"),
])
def test_bench_ingest_refuses_bad_options_before_any_run(args: list[str], wanted: str) -> None:
    res = _invoke("bench", "ingest", "--seconds", "0.3", *args)
    assert isinstance(res.exception, ConfigError), res.exception
    assert wanted in str(res.exception)
    assert res.stderr == ""  # nothing ran: no progress line


def test_bench_ingest_refuses_zero_devices_naming_the_range_this_process_allows() -> None:
    """Check --devices 0 is refused before any run, naming both ends of the range (the
    open-file limit caps it; '[1, inf)' was named before, session 45)."""
    res = _invoke("bench", "ingest", "--seconds", "0.3", "--devices", "0")
    assert res.exit_code == 2 and res.stderr.startswith("error: --devices"), res.stderr
    assert re.search(r"must be an int in \[1, \d+\]", res.stderr), res.stderr
    assert "Got 0." in res.stderr, res.stderr


def test_half_load_is_refused_when_the_max_run_acked_nothing(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import edgewise.bench.ingest as ingest

    runs: list[float | None] = []

    def fake_gateway(n, seconds, rate, *a, **k):  # type: ignore[no-untyped-def]
        runs.append(rate)
        return {"messages_per_s": 0.0, "readings_per_s": 0.0}

    monkeypatch.setattr(ingest, "_raw", lambda *a, **k: {"readings_per_s": 100.0})
    monkeypatch.setattr(ingest, "_gateway", fake_gateway)
    with pytest.raises(ConfigError, match=r"acked no message in the 0\.5 s max-rate run"):
        ingest.run_ingest_bench(devices=2, seconds=0.5)
    assert runs == [None]  # the "half" run never ran unpaced
    with pytest.raises(ValueError, match="rate_per_device must be above 0"):
        ingest._Load([], 1.0, 0.0, 10, 0, 0.0)


def test_ingest_text_prints_na_for_a_missing_ratio(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import edgewise.bench.ingest as ingest

    run = {"readings_per_s": 0.0, "messages_per_s": 0.0, "p50_ms": None, "p99_ms": None,
           "p50_stored_ms": None, "p99_stored_ms": None, "p50_alert_ms": None,
           "p99_alert_ms": None}
    monkeypatch.setattr(ingest, "run_ingest_bench", lambda **k: {
        "broker": "amqtt (embedded)", "consumer": "plugin", "raw": run, "max": run,
        "half": run, "gateway_vs_raw": None})
    res = _invoke("bench", "ingest")
    assert res.exit_code == 0, res.exception
    assert "= n/a of raw" in res.stdout


def test_a_server_that_exits_says_why(tmp_path: Path) -> None:
    from edgewise.bench.ingest import _wait_port
    from tests.conftest import free_port

    log = tmp_path / "gateway.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", "print('error: the reason'); exit(1)"],
                                stdout=out, stderr=subprocess.STDOUT)
        proc.wait()
    with pytest.raises(RuntimeError, match=r"exited with 1; its log ends: error: the reason"):
        _wait_port(free_port(), proc, log=log)


# M4: bench store ----------------------------------------------------------------------

def test_bench_store_never_writes_into_an_existing_duckdb_file(tmp_path: Path) -> None:
    from edgewise.bench.store import run_store_bench
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    url = f"duckdb:///{tmp_path / 'mine.duckdb'}"
    s = open_store(url)
    s.append([Reading("pump-000", "temp_c", 1, 1.0)])
    s.close()
    with pytest.raises(ConfigError, match="names an existing DuckDB file"):
        run_store_bench(url, batch=160, batches=2, devices=2)
    s = open_store(url)
    assert s.count_readings() == 1
    s.close()
    fresh = tmp_path / "fresh.duckdb"
    r = run_store_bench(f"duckdb:///{fresh}", batch=160, batches=2, devices=2)
    assert r["append"]["readings"] == 160
    assert not fresh.exists()  # made for the run, removed after


def test_bench_store_keeps_its_devices_apart_and_refuses_bad_sizes() -> None:
    from edgewise.bench.store import make_batch

    assert {r.device_id for r in make_batch(0, 16, 2)} == {"bench-000", "bench-001"}
    for args, wanted in ((["--batches", "0"], "--batches must be an int >= 1. Got 0"),
                         (["--devices", "0"], "--devices must be an int >= 1. Got 0"),
                         (["--batch", "0"], "--batch must be at least --devices x 8 = 160")):
        res = _invoke("bench", "store", *args)
        assert isinstance(res.exception, ConfigError), (args, res.exception)
        assert wanted in str(res.exception)


# M5: bench csv ------------------------------------------------------------------------

def test_bench_csv_names_every_detector_and_the_real_machine(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 600
    lab = np.zeros(n, int)
    lab[500:510] = 1
    ts = np.arange(n) * 60 + 1_700_000_000
    a = pd.DataFrame({"timestamp": ts, "x": rng.normal(size=n), "y": rng.normal(size=n),
                      "anomaly": lab})
    b = pd.DataFrame({"timestamp": ts, "x": rng.normal(size=n), "anomaly": lab})
    a.loc[500:509, "x"] += 8
    b.loc[500:509, "x"] += 8
    a.to_csv(tmp_path / "a_two_metrics.csv", index=False)
    b.to_csv(tmp_path / "b_one_metric.csv", index=False)
    args = ["bench", "csv", str(tmp_path), "--train-rows", "300", "--time-column", "timestamp"]
    res = _invoke(*args, "--json")
    assert res.exit_code == 0, res.exception
    doc = json.loads(res.stdout)
    used = [f["detector"] for f in doc["files"]]
    assert len(set(used)) == 2, used  # the case the hunt found
    assert doc["detectors"] == {d: 1 for d in used}
    assert "shared VM" not in doc["machine"] and f"{os.cpu_count()} CPUs" in doc["machine"]
    text = _invoke(*args).stdout
    pooled = next(ln for ln in text.splitlines() if "pooled:" in ln)
    assert all(f"{d} x1" in pooled for d in used), pooled
    assert "mix detectors" in text


# L1: bench fleet ----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "wanted"), [
    (["--seed", "-1"], "--seed must be an int >= 0. Got -1"),
    (["--hours", "inf"], "Got inf instead"),
    (["--hours", "1e-9"], "must give at least one reading"),
    (["--fault-rate", "nan"], "--fault-rate must be a finite number in [0, 3600]"),
    (["--fault-rate", "-1"], "--fault-rate must be a finite number in [0, 3600]"),
    (["--detectors", ","], "--detectors must name at least one level detector"),
])
def test_bench_fleet_refuses_bad_options_in_one_line(args: list[str], wanted: str) -> None:
    res = _invoke("bench", "fleet", "--detectors", "ewzscore", "--pumps", "1", *args)
    assert isinstance(res.exception, ConfigError), res.exception
    assert wanted in str(res.exception)
    assert res.stderr == ""  # refused before the header


# L2: bench detect ---------------------------------------------------------------------

@pytest.mark.parametrize(("args", "wanted"), [
    (["--repeats", "0"], "--repeats must be an int >= 1. Got 0"),
    (["--points", "0"], "--points must be an int >= 1. Got 0"),
    (["--points", "-5"], "--points must be an int >= 1. Got -5"),
    (["--one-points", "0"], "--one-points must be an int >= 1. Got 0"),
    (["--nab", "/nonexistent"], "--nab '/nonexistent' has no data/realKnownCause/"),
])
def test_bench_detect_refuses_bad_sizes_and_a_nab_dir_without_the_file(
        args: list[str], wanted: str) -> None:
    res = _invoke("bench", "detect", "--points", "2000", "--one-points", "200", "--repeats",
                  "1", *args)
    assert isinstance(res.exception, ConfigError), res.exception
    assert wanted in str(res.exception)
