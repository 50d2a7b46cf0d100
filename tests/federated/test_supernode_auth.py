"""SuperNode authentication: `federate server --supernode-keys` admits only the devices whose
public keys it registered (Flower 1.41's --enable-supernode-auth), `federate client
--auth-key` signs a device's calls with its private key, and `federate keygen` makes the
pair.

Without it, any program that reaches the gate joins as a SuperNode and takes part in the
rounds (TLS authenticates the server only)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from edgewise.cli import federate
from edgewise.errors import InvalidParameterError
from edgewise.federated import deploy
from edgewise.federated.deploy import (
    LocalFleet,
    check_auth_key,
    check_tls,
    generate_supernode_key,
    load_supernode_keys,
    supernode_command,
)
from edgewise.federated.publish import load_global_model
from tests.federated.test_cli_params import edgewise_in_process
from tests.federated.test_federated_tls import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _outsider(fleet: LocalFleet, name: str, root: Path | None, key: Path | None
              ) -> subprocess.Popen[bytes]:
    """A SuperNode trusting ``root`` (None: --insecure), with ``key`` (or none), that gives
    up after two retries. It starts no SuperExec (``--isolation process``): refused before
    any ClientApp could run, the one ``subprocess`` isolation starts beside it only took
    CPU, importing Flower and retrying the gone SuperNode for up to ~40 s after it."""
    cmd = supernode_command(fleet.address, 0, 2, deploy.free_port(), root_certificates=root,
                            auth_key=key)
    cmd[cmd.index("--max-retries") + 1] = "2"
    cmd[cmd.index("--max-wait-time") + 1] = "10"
    cmd += ["--isolation", "process"]
    return fleet._spawn(cmd, f"{name}.log")


def test_only_supernodes_with_registered_keys_take_part_in_a_real_run(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a SuperLink behind the TLS gate with two registered device keys completes a
    round with exactly those two SuperNodes (which verify the gate's CA-signed certificate),
    while one signing with an unregistered key and one with no key are refused at the door,
    and one running --insecure and one trusting another CA cannot even connect (refused by
    TLS, before any SuperLink answer); all four exit non-zero.

    The TLS refusals were a test of their own in test_federated_tls.py with a fleet and a
    run of their own (36 s of the suite's time on 2 cores); they share this run, whose
    TLS gate they meet before the SuperLink's key check could refuse them (a SuperNode
    that reaches it is told it "must be registered": asserted absent from their logs)."""
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")  # no wait on flower.ai at exit
    pairs = [generate_supernode_key(tmp_path / "allowed", f"dev{i}") for i in range(2)]
    stranger = generate_supernode_key(tmp_path / "stranger", "dev9")[0]
    keys = load_supernode_keys(tmp_path / "allowed")
    # device 1 sends NaN weights and both keep their own DP limit (node config read by the
    # real SuperNode processes): test_deploy.py's real run (now slow) checked these
    with LocalFleet(2, workdir=tmp_path / "fl", tls=check_tls(pki.cert, pki.key, pki.ca),
                    supernode_keys=keys, attacks={1: "nan"}, max_epsilon=6.0,
                    auth_keys={i: pair[0] for i, pair in enumerate(pairs)}) as fleet:
        outsiders = [_outsider(fleet, "unregistered", pki.ca, stranger),
                     _outsider(fleet, "keyless", pki.ca, None),
                     _outsider(fleet, "insecure", None, None),
                     _outsider(fleet, "untrusting", pki.other_ca, None)]
        result = fleet.run({"num-server-rounds": 1, "strategy": "fedavg", "evaluate": False,
                            "min-available-nodes": 2, "dp-sgd-epsilon": 0.0}, timeout=180)
        codes = [p.wait(timeout=60) for p in outsiders]
        link_cmd = fleet.link.args if fleet.link else []
    assert result["rounds"] == 1 and set(result["train_metrics"]) == {"1"}
    assert len(fleet.registered) == 2
    wire = json.loads((fleet.workdir / "out" / "wire.json").read_text())
    assert {e["node"] for e in wire} == set(fleet.registered)  # the outsiders sent nothing
    assert not any(e["error"] for e in wire)
    # the NaN-sending device was rejected, the model stayed finite, and the devices trained
    # under DP-SGD at their own ε <= 6 although the run asked for none
    assert result["privacy"]["unit"] == "record" and 5.9 < result["privacy"]["epsilon"] <= 6.0
    state, meta = load_global_model(fleet.workdir, "federated-pump")  # verified signature
    assert meta["strategy"] == "fedavg+robust"
    assert sum(r["reason"] == "non-finite" for r in meta["rejected"]) == 1, meta["rejected"]
    assert all(np.isfinite(v.numpy()).all() for v in state.values())
    assert "--enable-supernode-auth" in link_cmd and "--insecure" not in link_cmd
    assert all(code != 0 for code in codes), codes
    log = (fleet.workdir / "unregistered.log").read_text(errors="replace")
    assert "Failed to activate SuperNode" in log, log[-2000:]
    log = (fleet.workdir / "keyless.log").read_text(errors="replace")
    assert "All SuperNodes must be registered" in log, log[-2000:]
    for name in ("insecure", "untrusting"):  # refused by TLS, never by the SuperLink
        log = (fleet.workdir / f"{name}.log").read_text(errors="replace")
        assert "could not establish a connection to the SuperLink" in log, log[-2000:]
        assert "must be registered" not in log, log[-2000:]
    assert "CERTIFICATE_VERIFY_FAILED" in (fleet.workdir / "untrusting.log").read_text(
        errors="replace")
    gate = (fleet.workdir / "fleet-gate.log").read_text(errors="replace")
    assert f"running on https://127.0.0.1:{fleet.port}" in gate


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_public_key_flower_reads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate keygen` writes an OpenSSH P-384 private key (mode 0600) and its
    public key line, which --supernode-keys and --auth-key accept, and never overwrites."""
    federate.keygen(out=tmp_path / "keys", name="pump7", as_json=True)
    paths = json.loads(capsys.readouterr().out)
    private, public = Path(paths["private_key"]), Path(paths["public_key"])
    assert (private, public) == (tmp_path / "keys" / "pump7", tmp_path / "keys" / "pump7.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    key = serialization.load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    [loaded] = load_supernode_keys(public)
    assert loaded.origin == f"{public}:1"
    assert loaded.pem == key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert check_auth_key(private) == private.resolve()
    before = private.read_bytes()
    code, err = edgewise_in_process(["federate", "keygen", "--out", str(tmp_path / "keys"),
                                     "--name", "pump7"], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and "already exists" in err, err
    assert private.read_bytes() == before


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture
def key_files(tmp_path: Path) -> dict[str, Path]:
    """A device pair, an Ed25519 key, a PEM EC key and junk, as files."""
    private, public = generate_supernode_key(tmp_path / "pair", "dev")
    ed = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pem = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    (tmp_path / "empty").mkdir()
    return {"private": private, "public": public, "empty": tmp_path / "empty",
            "ed25519": _write(tmp_path / "ed.pub", ed + b"\n"),
            "twice": _write(tmp_path / "twice", public.read_bytes() * 2),
            "junk": _write(tmp_path / "junk", b"# allowed devices\n\nnot a key\n"),
            "pem": _write(tmp_path / "pem.key", pem)}


@pytest.mark.parametrize(("name", "needle"), [
    ("private", "holds a private key; pass the device's public key"),
    ("empty", "is a folder without *.pub files"),
    ("ed25519", ":1 holds a key of type Ed25519; Flower authenticates SuperNodes by EC"),
    ("twice", ":2 is the same key as "),
    ("junk", ":3 is not an OpenSSH public key"),
])
def test_supernode_keys_that_would_not_register_are_refused_naming_file_and_line(
        key_files: dict[str, Path], name: str, needle: str) -> None:
    """Check a private key, an empty folder, a non-EC key, a repeated key and a line that is
    no key are each refused in one line naming where."""
    with pytest.raises(InvalidParameterError) as err:
        load_supernode_keys(key_files[name])
    assert needle in str(err.value) and str(key_files[name]) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "needle"), [
    ("public", "holds a public key"),
    ("pem", "holds a PEM key, not OpenSSH format"),
])
def test_an_auth_key_flower_could_not_read_is_refused(
        key_files: dict[str, Path], name: str, needle: str) -> None:
    """Check --auth-key refuses a public key and a PEM private key (Flower reads OpenSSH)."""
    with pytest.raises(InvalidParameterError, match=needle):
        check_auth_key(key_files[name])


def test_server_with_keys_needs_tls_and_enough_keys_and_passes_them_to_the_fleet(
        pki: Pki, key_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate server --supernode-keys` is refused without TLS and with fewer keys
    than devices, each in one line before anything starts; with TLS the fleet gets the keys
    and devices are told to pass --auth-key."""
    keys = str(key_files["public"])
    tls = ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-ca", str(pki.ca)]
    code, err = edgewise_in_process(["federate", "server", "--supernode-keys", keys,
                                     "--clients", "1", "--strategy", "fedavg",
                                     "--data-dir", str(tmp_path)],
                                    monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: --supernode-keys {keys} needs --tls-cert and --tls-key")
    code, err = edgewise_in_process(["federate", "server", "--supernode-keys", keys, *tls,
                                     "--clients", "2", "--strategy", "fedavg",
                                     "--data-dir", str(tmp_path)],
                                    monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "holds 1 key but the run waits for --clients 2 devices" in err
    fleets: list[LocalFleet] = []
    monkeypatch.setattr(federate, "_run_fleet", lambda fleet, *_a, **_k: fleets.append(fleet))
    monkeypatch.setattr(federate, "_print_result", lambda *_a: None)
    federate.server(data_dir=tmp_path, clients=1, strategy="fedavg", tls_cert=pki.cert,
                    tls_key=pki.key, tls_ca=pki.ca, supernode_keys=key_files["public"])
    out, err = capsys.readouterr()
    assert [k.origin for k in fleets[0].supernode_keys] == [f"{keys}:1"]
    assert "SuperNode authentication: 1 device key" in out and "--auth-key" in out
    assert err == ""


def test_a_tls_server_beyond_loopback_without_keys_warns_that_anyone_may_join(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate server --host 0.0.0.0` with TLS but no --supernode-keys warns in one
    line that any program reaching it can join, and on loopback says nothing."""
    fleets: list[LocalFleet] = []
    monkeypatch.setattr(federate, "_run_fleet", lambda fleet, *_a, **_k: fleets.append(fleet))
    monkeypatch.setattr(federate, "_print_result", lambda *_a: None)
    for host in ("0.0.0.0", "127.0.0.1"):
        federate.server(data_dir=tmp_path, host=host, port=9092, tls_cert=pki.self_signed,
                        tls_key=pki.self_signed_key)
        err = capsys.readouterr().err
        if host == "0.0.0.0":
            assert err.count("\n") == 1 and err.startswith(
                "warning: any program that reaches 0.0.0.0:9092 can join as a device"), err
        else:
            assert err == ""
    assert all(not f.supernode_keys for f in fleets)


def test_client_auth_key_needs_tls_and_reaches_the_supernode(
        pki: Pki, key_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate client --auth-key` without --tls-ca is refused in one line, and with
    it flower-supernode gets --auth-supernode-private-key; a key others can read warns."""
    key = key_files["private"]
    code, err = edgewise_in_process(["federate", "client", "--superlink", "127.0.0.1:1",
                                     "--auth-key", str(key), "--data-dir", str(tmp_path)],
                                    monkeypatch, capsys)
    assert code == 2 and err == (
        f"error: --auth-key {key} needs --tls-ca: Flower signs a SuperNode's calls over TLS "
        "only (the signature covers a timestamp, valid for minutes, which anyone reading "
        "unencrypted traffic could replay); pass the SuperLink's CA certificate.\n")
    assert not (tmp_path / "federated").exists()
    cmds: list[list[str]] = []
    monkeypatch.setattr(os, "execvpe", lambda _exe, cmd, _env: cmds.append(cmd))
    args = dict(superlink="127.0.0.1:9092", data_dir=tmp_path, partition_id=0,
                num_partitions=3, port=9999, max_epsilon=8.0, privacy_ledger=None,
                tls_ca=pki.ca, auth_key=key)
    federate.client(**args)
    assert cmds[0][cmds[0].index("--auth-supernode-private-key") + 1] == str(key.resolve())
    assert capsys.readouterr().err == ""
    key.chmod(0o644)
    federate.client(**args)
    assert "can be read by other users (mode 0644)" in capsys.readouterr().err


def test_a_fleet_whose_key_registration_fails_stops_its_superlink(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a failure inside ``start`` (here: registering the device keys) stops the
    SuperLink already started before the error reaches the caller: ``with LocalFleet(...)``
    never runs ``__exit__`` when ``__enter__`` raises, so the SuperLink outlived the error
    and kept its port and database."""
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")

    def refuse(*_a: object, **_k: object) -> list[int]:
        raise RuntimeError("the SuperLink refused the keys")

    monkeypatch.setattr(deploy, "register_supernode_keys", refuse)
    generate_supernode_key(tmp_path / "allowed", "dev0")
    fleet = LocalFleet(1, workdir=tmp_path / "fl", tls=check_tls(pki.cert, pki.key, pki.ca),
                       supernode_keys=load_supernode_keys(tmp_path / "allowed"),
                       spawn_nodes=False)
    try:
        with pytest.raises(RuntimeError, match="refused the keys"), fleet:
            pytest.fail("the fleet started although its keys did not register")
        assert fleet.link is not None and fleet.link.poll() is not None  # stopped, not leaked
        assert fleet.gate is None
    finally:
        fleet.stop()  # on the old code: not left running after the test
