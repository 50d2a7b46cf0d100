"""The ``edgewise federate`` commands, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _edgewise(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": os.environ["PATH"],
           "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=REPO)


def test_server_refuses_krum_with_too_few_clients(data_dir):
    """Check the server names n and f and exits non-zero before starting anything."""
    r = _edgewise("federate", "server", "--clients", "4", "--strategy", "krum",
                  "--num-malicious", "1", "--data-dir", str(data_dir))
    assert r.returncode != 0
    assert "f=1 malicious clients with n=4" in r.stderr
    assert not (data_dir / "federated").exists()


@pytest.mark.slow
def test_demo_publishes_a_global_model(data_dir):
    """Check ``federate demo --clients 3 --rounds 2`` ends with a versioned global model."""
    r = _edgewise("federate", "demo", "--clients", "3", "--rounds", "2", "--json",
                  "--data-dir", str(data_dir), timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert result["rounds"] == 2
    meta = json.loads((data_dir / "models" / "federated-pump" / "v1.json").read_text())
    assert meta["rounds"] == 2 and meta["privacy"]["unit"] == "none"
