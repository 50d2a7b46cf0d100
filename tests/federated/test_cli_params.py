"""`federate server`/`client` refuse bad parameters in one line before starting anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(("args", "needle"), [
    (["server", "--dp-noise", "1.0", "--strategy", "krum", "--clients", "5"], "--strategy fedavg"),
    (["server", "--dp-noise", "1.0", "--strategy", "trimmed"], "--strategy fedavg"),
    (["server", "--dp-noise", "-1", "--strategy", "fedavg"], "--dp-noise"),
    (["server", "--dp-noise", "1", "--strategy", "fedavg", "--dp-clip", "0"], "--dp-clip"),
    (["server", "--dp-noise", "1", "--strategy", "fedavg", "--dp-clip", "-2"], "--dp-clip"),
    (["server", "--rounds", "0"], "--rounds"),
    (["server", "--rounds", "-1"], "--rounds"),
    (["server", "--port", "70000"], "--port"),
    (["server", "--round-timeout", "-5"], "--round-timeout"),
    (["client", "--superlink", "127.0.0.1:1", "--num-partitions", "0"], "--num-partitions"),
    (["client", "--superlink", "127.0.0.1:1", "--partition-id", "3", "--num-partitions", "3"],
     "--partition-id"),
])
def test_bad_parameters_fail_in_one_line(tmp_path, args: list[str], needle: str) -> None:
    """Check each bad value gives one clear line, a non-zero exit and no traceback."""
    if args[0] == "server":
        args = [*args, "--data-dir", str(tmp_path)]
    out = subprocess.run([sys.executable, "-m", "edgewise", "federate", *args],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert needle in out.stderr + out.stdout, out.stderr
    assert not (tmp_path / "federated").exists()
