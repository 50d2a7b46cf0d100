"""`federate server` names a --port another program holds before anything starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_server_names_a_held_port_before_announcing_the_superlink(tmp_path: Path) -> None:
    """Check a held --port is refused in one line, exit 2, with no 'SuperLink on' line
    telling devices to connect to a SuperLink that never started."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        port = held.getsockname()[1]
        env = {"PYTHONPATH": str(REPO / "src"), "PATH": os.environ["PATH"],
               "HOME": os.environ.get("HOME", "/tmp")}
        r = subprocess.run(
            [sys.executable, "-m", "edgewise", "federate", "server", "--clients", "3",
             "--rounds", "1", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "SuperLink on" not in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"Port {port} on 127.0.0.1 is already in use" in errors[0]
    assert not (tmp_path / "federated" / "server" / "out" / "error.json").exists()
