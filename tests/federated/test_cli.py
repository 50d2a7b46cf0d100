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
    """Check ``federate demo --clients 3 --rounds 2`` ends with the global model signed in the
    registry, its metadata verified."""
    from edgewise.federated.publish import load_global_model

    r = _edgewise("federate", "demo", "--clients", "3", "--rounds", "2", "--json",
                  "--data-dir", str(data_dir), timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert result["rounds"] == 2
    assert result["model"]["version"] == "1" and result["model"]["target"] == "group:federated"
    _, meta = load_global_model(data_dir, "federated-pump", "1")
    # private by default: every device ran DP-SGD calibrated to ε = 8 over the run
    assert meta["rounds"] == 2 and meta["privacy"]["unit"] == "record"
    assert 7.5 < meta["privacy"]["epsilon"] <= 8.0 and meta["privacy"]["noise_multiplier"] > 0
    assert meta["num_devices"] == 3 and meta["strategy"].startswith("trimmed")
    # private like a gateway's data dir: the results hold the normaliser's statistics
    shared = [p for p in (data_dir / "federated").rglob("*")
              if p.is_file() and p.stat().st_mode & 0o044]
    assert not shared, shared


def test_demo_refuses_a_bad_rollout_target(data_dir):
    """Check ``--rollout-to`` is checked before any process starts."""
    r = _edgewise("federate", "demo", "--rollout-to", "fleet", "--data-dir", str(data_dir))
    assert r.returncode != 0 and "device:<id> or group:<name>" in r.stderr
    assert not (data_dir / "federated").exists()


def test_server_refuses_secagg_with_a_robust_rule(data_dir):
    """Check ``--secagg`` with the (default) trimmed-mean rule fails naming both, up front."""
    r = _edgewise("federate", "server", "--secagg", "--strategy", "trimmed",
                  "--data-dir", str(data_dir))
    assert r.returncode != 0
    assert "SecAgg+" in r.stderr and "robust rule 'trimmed'" in r.stderr
    assert not (data_dir / "federated").exists()


@pytest.mark.parametrize(("command", "option"), [
    (("federate", "client", "--superlink", "127.0.0.1:1"), "--max-epsilon"),
    (("federate", "server"), "--dp-epsilon"),
    (("federate", "demo"), "--dp-epsilon"),
])
def test_a_negative_privacy_budget_is_refused(data_dir, command, option):
    """Check a negative ε is refused with one line naming the option, before anything starts."""
    extra = () if command[1] == "client" else ("--data-dir", str(data_dir))
    r = _edgewise(*command, option, "-1", *extra)
    assert r.returncode == 2
    assert f"{option} must be a finite number >= 0" in r.stderr and "-1" in r.stderr
    assert not (data_dir / "federated").exists()


@pytest.mark.slow
def test_a_run_in_which_every_device_fails_registers_nothing(data_dir, capsys):
    """Check a real fleet (SuperLink + 2 SuperNodes) whose devices all fail in round 1 (a
    budget none can meet, passed past the CLI's own check) ends with one error line and exit
    status 1, and that no model is registered, signed or published (it used to sign the
    untrained model as 'no DP')."""
    import typer

    from edgewise.cli.federate import _run_fleet
    from edgewise.federated.deploy import LocalFleet

    fleet = LocalFleet(2, workdir=data_dir / "federated" / "run")
    with pytest.raises(typer.Exit) as exc:
        _run_fleet(fleet, {"num-server-rounds": 1, "strategy": "fedavg", "evaluate": False,
                           "dp-sgd-epsilon": 1e-4, "data-dir-publish": str(data_dir)},
                   timeout=180)
    assert exc.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert ("federated run failed, no model registered: Round 1: every one of the 2 devices "
            "failed") in err
    assert not (data_dir / "registry").exists()
    assert not (fleet.workdir / "out" / "result.json").exists()
