"""``edgewise readings export`` against a real gateway app served over HTTP (real DuckDB
store, Security and Pipeline under uvicorn on a free port)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from edgewise.cli import load_commands
from edgewise.errors import StoreError
from edgewise.server import readings_csv
from edgewise.telemetry import Reading
from tests.cli.test_alerts_cli import Gateway as AlertsGateway
from tests.conftest import REPO, free_port
from tests.server.conftest import Env, build_env, serve_in_thread

load_commands()

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
S = 10**9


class Gateway(AlertsGateway):
    """A served app, its URL and a CLI runner for ``edgewise readings`` (viewer token)."""

    COMMAND = "readings"
    ROLE = "viewer"

    def csv(self, **params: str) -> str:
        r = httpx.get(f"{self.url}/v1/devices/{self.env.device}/readings.csv", params=params,
                      headers=self.env.auth("viewer"), timeout=30)
        assert r.status_code == 200, r.text
        return r.text


@pytest.fixture
def gw(data_dir: Path) -> Iterator[Gateway]:
    gen = build_env(data_dir)
    env = next(gen)
    try:
        with serve_in_thread(env.client.app) as port:
            yield Gateway(env, f"http://127.0.0.1:{port}")
    finally:
        gen.close()


def _pump(env: Env, n: int = 600) -> None:
    """Flow and pressure once a second, their relationship broken three quarters in; a temperature
    every 10 s (the wide CSV has empty cells between)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(n)
    p = 2 * a + 0.1 * rng.standard_normal(n)
    p[n * 3 // 4] = -8.0
    env.store.append([Reading(env.device, "flow", (T0 + i) * S, 20 + float(a[i]))
                      for i in range(n)]
                     + [Reading(env.device, "pressure", (T0 + i) * S, float(p[i]))
                        for i in range(n)]
                     + [Reading(env.device, "temp_c", (T0 + i) * S, 40.0 + i / 100)
                        for i in range(0, n, 10)])


def _one_line_error(result: Any, code: int = 1) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_export_writes_the_csv_that_detect_reads(gw: Gateway, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readings_csv, "SLICE_ROWS", 50)  # many slices, merged
    monkeypatch.setattr(readings_csv, "MIN_SLICE_ROWS", 50)
    _pump(gw.env)
    out = tmp_path / "exports" / "pump-1.csv"
    out.parent.mkdir()  # a missing folder is refused (test_walk_ux_s43)
    r = gw.cli("export", gw.env.device, "--out", str(out))
    assert r.exit_code == 0, r.stderr
    assert r.stdout == ""
    assert r.stderr.startswith(f"wrote 600 rows (0.0 MB) of 'pump-1' to {str(out)!r} in ")
    assert out.read_text() == gw.csv()
    assert _left(out.parent) == ["pump-1.csv"]  # no temporary file left beside it
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0600
    r = gw.cli("export", gw.env.device, "--out", os.devnull)  # written to, not replaced
    assert r.exit_code == 0 and Path(os.devnull).is_char_device(), r.stderr
    df = pd.read_csv(out)
    assert list(df.columns) == ["time", "flow", "pressure", "temp_c"]
    assert len(df) == 600 and df["temp_c"].notna().sum() == 60
    assert df["time"][1] == "2026-01-01T00:00:01.000000000Z"

    scored = tmp_path / "scored.csv"
    p = subprocess.run([sys.executable, "-m", "edgewise", "detect", str(out), "--time-column",
                        "time", "--out", str(scored)], capture_output=True, text=True,
                       timeout=300, check=False,
                       env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin",
                            # numba: the test process's own cache, not one of its own
                            **{k: v for k, v in os.environ.items()
                               if k == "NUMBA_CACHE_DIR"}})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("600 rows, detector ")
    result = pd.read_csv(scored)
    assert len(result) == 600 and bool(result["is_anomaly"][450])


def test_options_reach_the_api_and_stdout_is_the_csv(gw: Gateway) -> None:
    _pump(gw.env, n=200)
    args = ["--metric", "flow", "--start", "2026-01-01T00:01:00Z", "--end", str(T0 + 180),
            "--step", "1m", "--format", "long", "--time-format", "epoch_s"]
    r = gw.cli("export", gw.env.device, *args)
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""  # no progress on stdout's behalf
    expected = gw.csv(metric="flow", start="2026-01-01T00:01:00Z", end=str(T0 + 180),
                      step="1m", format="long", time_format="epoch_s")
    assert r.stdout == expected
    first = expected.splitlines()[1].split(",")
    assert r.stdout.splitlines()[:2] == ["time,metric,value", f"{T0 + 60},flow,{first[2]}"]
    assert len(r.stdout.splitlines()) == 3  # two buckets


def test_a_download_that_breaks_off_leaves_no_file(gw: Gateway, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The store fails after the first slices were streamed: the CLI says so in one line,
    and neither a half file nor its temporary file is left; an older file stays as it was."""
    monkeypatch.setattr(readings_csv, "SLICE_ROWS", 20)
    monkeypatch.setattr(readings_csv, "MIN_SLICE_ROWS", 20)
    monkeypatch.setattr(readings_csv, "CHUNK_ROWS", 10)
    _pump(gw.env)
    real = gw.env.store.query
    calls = []

    def failing(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        if len(calls) > 8:
            raise StoreError("disk went away")
        return real(*args, **kw)

    monkeypatch.setattr(gw.env.store, "query", failing)
    folder = tmp_path / "exports"
    folder.mkdir()
    out = folder / "pump-1.csv"
    r = gw.cli("export", gw.env.device, "--out", str(out))
    line = _one_line_error(r)
    assert f"the download from the gateway at {gw.url} broke off after " in line
    assert _left(folder) == []
    out.write_text("older export\n")
    r = gw.cli("export", gw.env.device, "--out", str(out))
    _one_line_error(r)
    assert _left(folder) == ["pump-1.csv"] and out.read_text() == "older export\n"


def test_a_device_deleted_during_the_export_leaves_no_file(
        gw: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The device is deleted while its CSV is streamed (after the export's fourth slice):
    the CLI exits 1 in one line and leaves no file, rather than renaming the rows read so
    far into place as if they were the whole history."""
    monkeypatch.setattr(readings_csv, "SLICE_ROWS", 20)
    monkeypatch.setattr(readings_csv, "MIN_SLICE_ROWS", 20)
    monkeypatch.setattr(readings_csv, "CHUNK_ROWS", 10)
    _pump(gw.env)
    real, calls = gw.env.store.query, []

    def query(*args: Any, **kw: Any) -> Any:
        calls.append(args)
        if len(calls) == 4:
            gw.env.store.delete_device(gw.env.device)
        return real(*args, **kw)

    monkeypatch.setattr(gw.env.store, "query", query)
    folder = tmp_path / "exports"
    folder.mkdir()
    for form in ("long", "wide"):
        calls.clear()
        if form == "wide":
            _pump(gw.env)
        r = gw.cli("export", gw.env.device, "--format", form, "--out",
                   str(folder / "pump-1.csv"))
        line = _one_line_error(r)
        assert f"the download from the gateway at {gw.url} broke off after " in line
        assert _left(folder) == []


def test_refusals_are_one_line_and_write_nothing(gw: Gateway, tmp_path: Path) -> None:
    _pump(gw.env, n=20)
    folder = tmp_path / "exports"
    folder.mkdir()
    out = folder / "x.csv"
    line = _one_line_error(gw.cli("export", "pump-9", "--out", str(out)))
    assert f"no device 'pump-9' on the gateway at {gw.url}" in line
    line = _one_line_error(gw.cli("export", gw.env.device, "--out", str(out), role=None),
                           code=2)
    assert "EDGEWISE_TOKEN" in line
    line = _one_line_error(gw.cli("export", gw.env.device, "--out", str(out), role=None,
                                  EDGEWISE_TOKEN=gw.env.secret))  # a device secret
    assert "refused the API token" in line and "EDGEWISE_TOKEN" in line
    assert gw.env.secret not in line
    line = _one_line_error(gw.cli("export", gw.env.device, "--start", "yesterday",
                                  "--out", str(out)))
    assert "HTTP 422 (bad_time)" in line and "'start'" in line and "yesterday" in line
    url = f"http://127.0.0.1:{free_port()}"
    line = _one_line_error(gw.cli("export", gw.env.device, "--gateway", url, "--out",
                                  str(out)))
    assert f"cannot reach the gateway at {url}" in line and "--gateway" in line
    r = gw.cli("export", gw.env.device, "--format", "xml")
    assert r.exit_code == 2 and "xml" in r.stderr
    assert _left(folder) == []


def test_a_metric_the_device_never_had_is_one_line_naming_its_metrics(
        gw: Gateway, tmp_path: Path) -> None:
    """Check ``--metric nope`` (a typo) exits 1 with the gateway's one-line answer naming
    the device's metrics and writes no file, instead of "wrote 0 rows" and a CSV of
    ``time,nope``; a metric it has, with no reading in the range, is still a header-only
    CSV (exit 0)."""
    _pump(gw.env, n=20)
    out = tmp_path / "x.csv"
    line = _one_line_error(gw.cli("export", gw.env.device, "--metric", "nope", "--out",
                                  str(out)))
    assert line == (f"error: --metric: the gateway at {gw.url} has no such metric: Device "
                    f"{gw.env.device!r} has no readings of metric 'nope'; its metrics: "
                    "'flow', 'pressure', 'temp_c'.")
    assert not out.exists()
    r = gw.cli("export", gw.env.device, "--metric", "flow", "--start", str(T0 + 3600),
               "--out", str(out))
    assert r.exit_code == 0, r.stderr
    assert out.read_text() == "time,flow\n"
