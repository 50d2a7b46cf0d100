"""``edgewise federate demo`` checks its strategy before starting anything, and stops every
process it started when it is itself stopped (SIGTERM, as ``timeout`` sends)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": os.environ["PATH"],
       "HOME": os.environ.get("HOME", "/tmp")}


def _fleet_processes(data_dir: Path) -> list[int]:
    """Live processes whose environment points into ``data_dir`` (FLWR_HOME of the fleet)."""
    mark = str(data_dir / "federated").encode()
    found = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if mark in (d / "environ").read_bytes() and state != "Z":
                found.append(int(d.name))
        except (OSError, IndexError):
            continue
    return found


def test_demo_refuses_an_unknown_strategy_before_starting_anything(data_dir):
    """Check --strategy foo fails with one line naming the strategies and starts nothing (it
    used to start the SuperLink and SuperNodes first)."""
    r = subprocess.run([sys.executable, "-m", "edgewise", "federate", "demo", "--strategy",
                        "foo", "--data-dir", str(data_dir)], capture_output=True, text=True,
                       env=ENV, cwd=REPO, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "--strategy must be one of fedavg, trimmed, krum, bulyan. Got 'foo'." in r.stderr
    assert not (data_dir / "federated").exists()


def test_sigterm_stops_the_superlink_supernodes_and_superexecs(data_dir):
    """Check SIGTERM to `federate demo` mid-start ends it (143) with no SuperLink, SuperNode,
    SuperExec or ServerApp left behind (they used to be orphaned)."""
    p = subprocess.Popen([sys.executable, "-m", "edgewise", "federate", "demo", "--strategy",
                          "krum", "--clients", "3", "--data-dir", str(data_dir)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=ENV, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while len(_fleet_processes(data_dir)) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_fleet_processes(data_dir)) >= 4     # SuperLink, SuperExec, SuperNodes
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 128 + signal.SIGTERM
        assert "stopped by SIGTERM" in p.stderr.read()
        assert _fleet_processes(data_dir) == []
    finally:
        p.kill()
        for pid in _fleet_processes(data_dir):
            os.kill(pid, signal.SIGKILL)
