"""`federate server` names a --num-malicious the fleet cannot tolerate, in one line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(("args", "needle"), [
    # the hunter's command: auto beta 0.667 ended in Flower's ValueError after 45 lines
    (["--clients", "3", "--num-malicious", "2"],
     ("error: --num-malicious 2 is more than --strategy trimmed can tolerate with 3 clients; "
      "valid: --num-malicious 0 to 1 (or more clients).")),
    (["--clients", "4", "--min-available", "3", "--num-malicious", "3"],
     ("--num-malicious 3 is more than --strategy trimmed can tolerate with 3 clients; "
      "valid: --num-malicious 0 to 1")),
    (["--clients", "5", "--strategy", "krum", "--num-malicious", "3"],
     ("--num-malicious 3 is more than --strategy krum can tolerate with 5 clients; "
      "valid: --num-malicious 0 to 1")),
    (["--clients", "3", "--strategy", "fedavg", "--num-malicious", "1"],
     "valid: --num-malicious 0. FedAvg has no tolerance"),
    # no f at all can work: the fleet is too small for the rule, said as such
    (["--clients", "2"], ("FedTrimmedAvg with the automatic beta=0.5 would trim every update "
                          "of n=2")),
])
def test_num_malicious_beyond_the_fleet_is_one_error_line(tmp_path, args: list[str],
                                                          needle: str) -> None:
    """Check that a --num-malicious (or a fleet) the rule cannot hold is one ``error:`` line
    naming the option, its value and the values that would hold, exit 2, no traceback."""
    cmd = [sys.executable, "-m", "edgewise", "federate", "server", "--rounds", "1", *args,
           "--data-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and "beta must be in the range" not in out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1, out.stderr
    assert needle in out.stderr, out.stderr
    assert not (tmp_path / "federated").exists()
