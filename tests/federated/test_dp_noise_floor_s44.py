"""`federate server --dp-noise Z` with Z > 0 so small that the device-level accountant gives
epsilon inf is refused in one line before anything starts (it used to run and report inf)."""

from __future__ import annotations

import math

import pytest

from tests.federated.test_cli_params import edgewise_in_process


def epsilon(z: float, rounds: int, devices: int) -> float:
    """The device-level epsilon `federate server` reports (every device each round)."""
    import numpy as np

    from edgewise.federated.privacy import device_level_epsilon

    with np.errstate(over="ignore"):
        return device_level_epsilon(z, rounds, num_devices=devices, sample_size=devices)


@pytest.mark.parametrize(("noise", "rounds", "clients"), [
    ("1e-300", "3", "3"), ("1e-154", "3", "3"), ("1e-160", "1", "2")])
def test_server_refuses_noise_whose_epsilon_is_inf(tmp_path, monkeypatch, capsys,
                                                   noise: str, rounds: str,
                                                   clients: str) -> None:
    n = int(clients)
    assert epsilon(float(noise), int(rounds), n) == math.inf  # what the run would report
    code, err = edgewise_in_process(
        ["federate", "server", "--strategy", "fedavg", "--dp-noise", noise,
         "--rounds", rounds, "--clients", clients, "--data-dir", str(tmp_path)],
        monkeypatch, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --dp-noise "), err
    assert f"--dp-noise {float(noise):g} is too small" in lines[0]
    assert f"--rounds {rounds}" in lines[0]
    least = float(lines[0].split("noise multiplier >= ")[1].split(",")[0])
    # the bound named is right: finite there, inf a little below
    assert math.isfinite(epsilon(least, int(rounds), n))
    assert epsilon(least * 0.9, int(rounds), n) == math.inf


def test_server_accepts_the_smallest_finite_noise(tmp_path, monkeypatch, capsys) -> None:
    """Just above the floor the options pass: the run is started (here: stubbed)."""
    from edgewise.cli import federate

    started: list[dict] = []
    monkeypatch.setattr(federate, "_serve", lambda *_a, **k: started.append(k))
    monkeypatch.setattr("sys.argv", ["edgewise", "federate", "server", "--strategy", "fedavg",
                                     "--dp-noise", "1e-150", "--rounds", "3",
                                     "--data-dir", str(tmp_path)])
    from edgewise.cli import main

    try:
        main()
    except SystemExit as exited:
        assert exited.code in (0, None), capsys.readouterr().err
    assert started and started[0]["dp_noise"] == 1e-150
