"""README-walk fixes in ``edgewise demo``: fault labels that reached past what was stored
(a restart's readings then fell inside them), and ``--pumps`` past the open-file limit,
which died in a traceback without showing the admin token it had made."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from edgewise.store import open_store
from tests.conftest import REPO, free_port, start_demo, stop_demo, wait_stored


def assert_labels_end_at_newest_stored_reading(d: Path, labels: list[dict]) -> None:
    """Check the fault ``labels`` a stopped demo in ``d`` wrote: some, each ending at or
    before its pump's newest reading in the demo's store, none ending before it starts."""
    s = open_store(f"duckdb:///{d / 'edgewise.duckdb'}")
    try:
        newest = {x.device_id: x.last_ns for x in s.devices()}
    finally:
        s.close()
    assert labels, "seed 0 starts faults early in the history: the test needs some"
    past = [(f["device_id"], f["kind"], (f["end_ns"] - newest[f["device_id"]]) / 1e9)
            for f in labels if f["end_ns"] > newest[f["device_id"]]]
    assert not past, past  # (device, kind, seconds past its newest stored reading)
    assert all(f["start_ns"] <= f["end_ns"] for f in labels)


# test_demo.py::test_demo_runs_prints_credentials_stores_and_stops_cleanly runs this check
# by default on its own demo run (the same 20-pump demo stopped after 16,000 readings)
@pytest.mark.slow
def test_each_pumps_labels_end_at_its_newest_stored_reading(tmp_path: Path) -> None:
    """Stopped while its history still goes out, the demo cut every label at the last
    simulated sample, ~180 s past the pump's newest stored reading (what was sent was not
    yet acknowledged, so not stored). A restart goes on after the newest stored reading,
    so its normal readings fell inside the old labels (33 of them in one drift label)."""
    d = tmp_path / "d"
    proc, _lines, http = start_demo(d)  # 20 pumps: the history outruns the acks
    try:
        wait_stored(http, 20 * 8 * 100, timeout=60)
    finally:
        rest = stop_demo(proc)
    assert proc.returncode == 0, rest
    assert_labels_end_at_newest_stored_reading(d, json.loads(
        (d / "demo-labels.json").read_text()))


def _demo_limited(data: Path, *args: str, nofile: int | None = None,
                  prelude: str = "") -> subprocess.CompletedProcess[str]:
    """``edgewise demo`` in a child whose open-file limit is ``nofile`` and which runs
    ``prelude`` (Python) first."""
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    code = (f"{prelude}\nimport runpy, sys\nsys.argv = ['edgewise', *sys.argv[1:]]\n"
            "runpy.run_module('edgewise', run_name='__main__')")
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    return subprocess.run(
        [sys.executable, "-c", code, "demo", "--data-dir", str(data), "--port",
         str(free_port()), "--mqtt-port", str(free_port()), *args],
        capture_output=True, text=True, env=env, timeout=120, preexec_fn=limit)


def test_demo_refuses_more_pumps_than_the_open_file_limit_allows(tmp_path: Path) -> None:
    """``--pumps 100`` under ``ulimit -n 256`` was "OSError: [Errno 24] Too many open
    files" from paho, after the admin token was made and never shown. It is refused in one
    line before anything is made, with the bound ``bench ingest --devices`` has."""
    d = tmp_path / "d"
    res = _demo_limited(d, "--pumps", "100", nofile=256)
    lines = (res.stdout + res.stderr).splitlines()
    assert res.returncode == 2, lines
    assert lines == [(
        "error: --pumps must be an int in [1, 38], e.g. 20: each simulated pump takes up to "
        "5 open files in this process, which may open 256 (`ulimit -n`, at most "
        f"{_hard()}; raise it for more). Got 100.")], lines
    assert not d.exists()


def _hard() -> str:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return "unlimited" if hard == resource.RLIM_INFINITY else str(hard)


def test_the_admin_token_is_shown_when_the_pumps_cannot_be_started(tmp_path: Path) -> None:
    """Pumps that cannot be started for want of files (an OSError that is no
    ConnectionError) were a traceback, and the admin token made at the start was lost.
    Now the token is shown and one error line says why."""
    d = tmp_path / "d"
    res = _demo_limited(d, "--pumps", "2", prelude=(
        "import errno, os\n"
        "from edgewise.sim.fleet import FleetRunner\n"
        "def start(self):\n"
        "    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))\n"
        "FleetRunner.start = start"))
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    err = res.stderr.splitlines()
    assert err[0].startswith("admin token (shown once, keep it; the demo did not start): ew_")
    assert err[-1] == ("error: the demo's 2 simulated pumps could not be started: Too many "
                       "open files; give fewer --pumps (or raise `ulimit -n`)."), err


def test_demo_says_it_sends_no_webhooks_when_they_are_set(tmp_path: Path) -> None:
    """The demo leaves alert webhooks out (simulated alerts must not page anyone), but a
    user who set EDGEWISE_ALERT_WEBHOOKS to try them saw nothing say so. A damaged labels
    file stops the demo right after the settings are read, before anything is made."""
    d = tmp_path / "d"
    d.mkdir()
    (d / "demo-labels.json").write_text("{not json")
    env = {**os.environ, "EDGEWISE_ALERT_WEBHOOKS": "https://relay.example.org/hook"}
    res = subprocess.run(
        [sys.executable, "-m", "edgewise", "demo", "--data-dir", str(d), "--pumps", "1",
         "--port", str(free_port()), "--mqtt-port", str(free_port())],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert res.returncode != 0, res.stdout
    assert "demo sends no alert webhooks" in res.stderr, res.stderr
    assert "demo-labels.json" in res.stderr  # and the refusal that stopped it
