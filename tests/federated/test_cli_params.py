"""`federate server`/`client` refuse bad parameters in one line before starting anything."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def edgewise_in_process(args: list[str], monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``edgewise ARGS`` through the console script's own entry point
    (:func:`edgewise.cli.main`, what ``python -m edgewise`` runs) in this process: its exit
    status and what it wrote to stderr. A refusal that does not end in ``SystemExit`` (a
    traceback) fails the test, and so does starting a fleet or a SuperNode. (The real
    process is run by test_client_refuses_an_unreadable_privacy_ledger.)"""
    import os

    from edgewise.cli import federate, main

    monkeypatch.setattr(federate, "_run_fleet",
                        lambda *_a, **_k: pytest.fail(f"{args}: a fleet was started"))
    monkeypatch.setattr(os, "execvpe",
                        lambda *_a: pytest.fail(f"{args}: a SuperNode was started"))
    monkeypatch.setattr(sys, "argv", ["edgewise", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main()
    return exited.value.code, capsys.readouterr().err


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
    # SecAgg+ with one device: refused before Flower starts (it used to fail inside Flower)
    (["demo", "--clients", "1", "--secagg", "--strategy", "fedavg"],
     ("--secagg needs --clients >= 2 (SecAgg+ hides each device's update in the sum of at "
      "least two). Got --clients 1.")),
    (["server", "--clients", "1", "--secagg", "--strategy", "fedavg"], "--secagg needs --clients"),
    (["server", "--clients", "3", "--min-available", "1", "--secagg", "--strategy", "fedavg"],
     "--secagg needs --min-available >= 2"),
    # every numeric option with a known range, before anything starts
    (["server", "--beta", "0.5"], "--beta must be in [0, 0.5)"),
    (["server", "--beta", "-0.1", "--strategy", "krum", "--clients", "5"], "Got -0.1."),
    (["server", "--beta", "0.7", "--strategy", "fedavg"], "Got 0.7."),
    (["server", "--clients", "0"], "--clients must be >= 1. Got 0."),
    (["server", "--min-available", "4", "--clients", "3"], "--min-available must be between 0"),
    (["server", "--num-malicious", "-1"], "--num-malicious must be >= 0. Got -1."),
    (["server", "--dataset", "nab"], "--dataset must be pump or cmapss. Got 'nab'."),
    (["bench", "federated", "--clients", "3"], "--clients must be >= 4"),
    (["bench", "federated", "--dp-sample", "300"], "--dp-sample must be between 0"),
    # an impossible record-level budget: named, with the smallest one that can be met
    (["demo", "--dp-epsilon", "0.0001"],
     ("--dp-epsilon 0.0001 cannot be met: over 2 round(s) x 1 local epoch(s), a device of 600 "
      "records (batch 32, sampling rate 0.0526, 38 steps, delta 1e-05) would need a noise "
      "multiplier above 100, the most DP-SGD uses; the smallest budget every device can meet "
      "is --dp-epsilon 0.0111 (or --dp-epsilon 0 for no DP-SGD).")),
    (["server", "--dp-epsilon", "0.001", "--dataset", "cmapss", "--rounds", "3"],
     "a device holding one batch (32 records) or fewer"),
])
def test_bad_parameters_fail_in_one_line(tmp_path, monkeypatch, capsys, args: list[str],
                                        needle: str) -> None:
    """Check each bad value gives one clear line, a non-zero exit and no traceback, before
    any process starts."""
    if args[0] in ("server", "demo"):
        args = [*args, "--data-dir", str(tmp_path)]
    code, err = edgewise_in_process([*([] if args[0] == "bench" else ["federate"]), *args],
                                    monkeypatch, capsys)
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert needle in err, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert not (tmp_path / "federated").exists()


def test_client_refuses_an_unreadable_privacy_ledger(tmp_path) -> None:
    """Check ``federate client`` reads its privacy ledger before starting the SuperNode: a
    corrupt one is one line naming the file (the device would refuse every round)."""
    ledger = tmp_path / "ledger.json"
    ledger.write_text("{not json")
    out = subprocess.run([sys.executable, "-m", "edgewise", "federate", "client",
                          "--superlink", "127.0.0.1:1", "--privacy-ledger", str(ledger),
                          "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"Privacy ledger {ledger} cannot be read" in out.stderr
