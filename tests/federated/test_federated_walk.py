"""What the README walk-through of `federate server` / `federate client` found: the address a
wildcard server told devices to use, no word on unencrypted traffic, and a privacy
disclosure that described the normaliser as it no longer is."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgewise.cli import federate
from edgewise.federated import deploy
from edgewise.federated.privacy import NOT_COVERED, PrivacyReport


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> list[deploy.LocalFleet]:
    """`federate server` up to the fleet it would start, which is kept, not started (nor its
    port checked: tests/federated/test_cli_port_held.py checks that)."""
    fleets: list[deploy.LocalFleet] = []
    monkeypatch.setattr(deploy, "check_port_free", lambda *_a: None)
    monkeypatch.setattr(federate, "_run_fleet", lambda fleet, *_a, **_k: fleets.append(fleet))
    monkeypatch.setattr(federate, "_print_result", lambda *_a: None)
    return fleets


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_server_on_every_interface_prints_this_machines_address_not_the_wildcard(
        host: str, tmp_path: Path, no_run: list[deploy.LocalFleet],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Check `--host 0.0.0.0` (or ::) tells devices an address they can connect to, with
    a note that it is this machine's, instead of `--superlink 0.0.0.0:9092`."""
    monkeypatch.setattr(deploy, "_machine_address", lambda: "10.1.2.3")
    federate.server(data_dir=tmp_path, host=host, port=9092)
    out = capsys.readouterr().out
    assert "connect devices with: edgewise federate client --superlink 10.1.2.3:9092 " in out
    assert "10.1.2.3 is this machine's address" in out
    assert f"--superlink {host}:" not in out and out.count("\n") == 1
    assert no_run[0].address == "127.0.0.1:9092"  # the local run still goes over loopback


def test_server_on_every_interface_without_a_known_address_prints_a_placeholder(
        tmp_path: Path, no_run: list[deploy.LocalFleet], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check a machine with no address but loopback gets `<this machine's address>:PORT`."""
    monkeypatch.setattr(deploy, "_machine_address", lambda: None)
    federate.server(data_dir=tmp_path, host="0.0.0.0", port=9092)
    out = capsys.readouterr().out
    assert "--superlink <this machine's address>:9092 " in out
    assert "--host 0.0.0.0 listens on every interface" in out


def test_machine_address_is_not_loopback() -> None:
    """Check the guessed address, when there is one, is not one a device cannot reach."""
    addr = deploy._machine_address()
    assert addr is None or (not deploy.is_loopback(addr) and addr != "0.0.0.0")


@pytest.mark.parametrize(("host", "warned"), [
    ("0.0.0.0", True), ("10.0.0.5", True), ("127.0.0.1", False), ("localhost", False),
])
def test_server_without_tls_off_loopback_warns_that_traffic_is_unencrypted(
        host: str, warned: bool, tmp_path: Path, no_run: list[deploy.LocalFleet],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check one warning line names the host when a plain SuperLink is reachable from other
    machines, and none on loopback; the SuperLink still runs --insecure then."""
    federate.server(data_dir=tmp_path, host=host, port=9092)
    err = capsys.readouterr().err
    if warned:
        assert err == (f"warning: the SuperLink listens on {host} without TLS: model "
                       "updates, metrics and normaliser statistics cross the network "
                       "unencrypted; pass --tls-cert and --tls-key (and --tls-ca) outside a "
                       "trusted network.\n")
    else:
        assert err == ""
    assert no_run[0].tls is None


@pytest.mark.parametrize(("superlink", "warned"), [
    ("10.0.0.5:9092", True), ("fl.example.org:9092", True), ("127.0.0.1:9092", False),
    ("[::1]:9092", False),
])
def test_client_without_tls_ca_warns_when_the_superlink_is_elsewhere(
        superlink: str, warned: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate client` without --tls-ca runs --insecure and warns in one line when
    the SuperLink is not on this machine."""
    cmds: list[list[str]] = []
    monkeypatch.setattr(os, "execvpe", lambda _exe, cmd, _env: cmds.append(cmd))
    federate.client(superlink=superlink, data_dir=tmp_path, partition_id=0, num_partitions=3,
                    port=9999, max_epsilon=8.0, privacy_ledger=None)
    err = capsys.readouterr().err
    assert "--insecure" in cmds[0]
    assert (err.count("\n") == 1 and err.startswith(
        f"warning: --superlink {superlink} without --tls-ca")) if warned else err == ""


def test_disclosure_says_the_normaliser_is_a_trimmed_combination_sent_without_noise() -> None:
    """Check what the CLI prints and the signed manifest's `not_covered` holds describes the
    normaliser the server computes (a trimmed combination of the devices' statistics), not
    the exact pooled one it used to."""
    normaliser = NOT_COVERED[0]
    assert "normaliser statistics" in normaliser
    assert "trimmed combination of the devices' own means and variances" in normaliser
    assert "without DP noise" in normaliser
    assert "pooled" not in normaliser and "exact" not in normaliser
    assert ";" not in normaliser  # the CLI joins the items with "; "
    report = PrivacyReport(unit="record", epsilon=8.0, delta=1e-5, noise_multiplier=1.0,
                           clipping_norm=1.0, num_devices=3, rounds=1)
    assert report.to_dict()["not_covered"][0] == normaliser
