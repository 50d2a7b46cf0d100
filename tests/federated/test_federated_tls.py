"""`federate server --tls-cert/--tls-key/--tls-ca` and `federate client --tls-ca`: a CA and
certificates made here (:func:`make_pki`, shared with the real TLS runs of
test_supernode_auth.py and test_fleet_gate.py), the SuperNode's command line that trusts the
CA, and the refusals of files that would not work, each in one line before anything starts."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgewise.errors import InvalidParameterError
from edgewise.federated.deploy import LocalFleet, TlsFiles, check_tls, supernode_command
from tests.federated.test_cli_params import edgewise_in_process


@dataclass(frozen=True)
class Pki:
    """Certificates and keys made for these tests, all PEM files under one folder."""

    ca: Path  # the CA that signs `cert`
    cert: Path  # the SuperLink's: SAN DNS localhost and IP 127.0.0.1, signed by `ca`
    key: Path
    other_key: Path  # a key that is not `cert`'s
    other_ca: Path  # a CA that signed nothing here
    self_signed: Path  # SAN IP 127.0.0.1 and DNS fl.example.org, its own CA
    self_signed_key: Path
    dns_only: Path  # signed by `ca`, names only server.example (key: `key`)
    expired: Path  # signed by `ca`, valid until yesterday (key: `key`)
    encrypted_key: Path  # `key`, under a password


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          signer: ec.EllipticCurvePrivateKey, names: list[x509.GeneralName], *,
          ca: bool = False, days: tuple[int, int] = (-1, 1)) -> bytes:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now + dt.timedelta(days=days[0]))
               .not_valid_after(now + dt.timedelta(days=days[1])))
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                        critical=True)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey, password: bytes | None = None) -> bytes:
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             enc)


def make_pki(folder: Path) -> Pki:
    """A CA, a SuperLink certificate it signed for localhost / 127.0.0.1, and the wrong
    files the checks must refuse."""
    folder.mkdir(parents=True, exist_ok=True)
    loop = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    ca_key, key, other, other_ca_key, ss_key = (ec.generate_private_key(ec.SECP256R1())
                                                for _ in range(5))
    files = {
        "ca": _cert("edgewise test CA", ca_key, _name("edgewise test CA"), ca_key, [],
                    ca=True),
        "cert": _cert("superlink", key, _name("edgewise test CA"), ca_key, loop),
        "key": _key_pem(key),
        "other_key": _key_pem(other),
        "other_ca": _cert("another CA", other_ca_key, _name("another CA"), other_ca_key, [],
                          ca=True),
        "self_signed": _cert("fl.example.org", ss_key, _name("fl.example.org"), ss_key,
                             [x509.DNSName("fl.example.org"), *loop[1:]], ca=True),
        "self_signed_key": _key_pem(ss_key),
        "dns_only": _cert("server.example", key, _name("edgewise test CA"), ca_key,
                          [x509.DNSName("server.example")]),
        "expired": _cert("superlink", key, _name("edgewise test CA"), ca_key, loop,
                         days=(-3, -1)),
        "encrypted_key": _key_pem(key, b"secret"),
    }
    for name, data in files.items():
        (folder / f"{name}.pem").write_bytes(data)
    return Pki(**{name: folder / f"{name}.pem" for name in files})


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_a_checked_certificate_gives_absolute_paths_and_a_self_signed_one_is_its_own_ca(
        pki: Pki) -> None:
    """Check the CA, cert and key given are returned as they are, and a self-signed
    certificate without --tls-ca is its own CA."""
    assert check_tls(None, None) is None
    assert check_tls(pki.cert, pki.key, pki.ca) == TlsFiles(pki.cert, pki.key, pki.ca)
    assert check_tls(pki.cert, pki.key, pki.ca, host="0.0.0.0") is not None
    own = check_tls(pki.self_signed, pki.self_signed_key)
    assert own == TlsFiles(pki.self_signed, pki.self_signed_key, pki.self_signed)


@pytest.mark.parametrize(("files", "host", "needle"), [
    (("cert", None, None), "127.0.0.1", "--tls-cert {cert} needs --tls-key too"),
    ((None, "key", None), "127.0.0.1", "--tls-key {key} needs --tls-cert too"),
    ((None, None, "ca"), "127.0.0.1", "--tls-ca {ca} is the CA certificate that signed"),
    (("cert", "other_key", "ca"), "127.0.0.1",
     "--tls-key {other_key} is not the private key of --tls-cert {cert}"),
    (("cert", "key", "other_ca"), "127.0.0.1",
     ("--tls-cert {cert} (issuer 'CN=edgewise test CA') is not signed by the CA in --tls-ca "
      "{other_ca}")),
    (("cert", "key", None), "127.0.0.1", "--tls-cert {cert} is not self-signed"),
    (("key", "key", "ca"), "127.0.0.1", "--tls-cert {key} holds no PEM certificate"),
    (("cert", "ca", "ca"), "127.0.0.1", "--tls-key {ca} holds no PEM private key"),
    (("cert", "encrypted_key", "ca"), "127.0.0.1", "--tls-key {encrypted_key} is encrypted"),
    (("expired", "key", "ca"), "127.0.0.1", "--tls-cert {expired} expired on"),
    (("dns_only", "key", "ca"), "0.0.0.0",
     ("--tls-cert {dns_only} is not valid for 127.0.0.1 (it names server.example): --host "
      "0.0.0.0 is reached at 127.0.0.1 on this machine")),
    (("cert", "key", "ca"), "127.0.0.2", "--tls-cert {cert} is not valid for 127.0.0.2"),
])
def test_tls_files_that_would_not_work_are_refused_naming_the_option_and_file(
        pki: Pki, files: tuple[str | None, ...], host: str, needle: str) -> None:
    """Check a missing half, a wrong key, a wrong CA, non-PEM files, an encrypted key, an
    expired certificate and one the local SuperExec could not verify are each refused."""
    paths = {k: str(getattr(pki, k)) for k in vars(pki)}
    args = [getattr(pki, f) if f else None for f in files]
    with pytest.raises(InvalidParameterError) as err:
        check_tls(*args, host=host)
    message = str(err.value)
    assert needle.format(**{k: repr(v) for k, v in paths.items()}) in message
    assert "\n" not in message


def test_a_certificate_signed_through_an_intermediate_in_its_file_is_accepted(
        tmp_path: Path) -> None:
    """Check a certificate file holding the leaf and its intermediate CA chains to the root
    given as --tls-ca (the usual layout of a CA-issued certificate)."""
    root_key, mid_key, key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _cert("root", root_key, _name("root"), root_key, [], ca=True)
    mid = _cert("intermediate", mid_key, _name("root"), root_key, [], ca=True)
    leaf = _cert("superlink", key, _name("intermediate"), mid_key,
                 [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    (tmp_path / "chain.pem").write_bytes(leaf + mid)
    (tmp_path / "root.pem").write_bytes(root)
    (tmp_path / "key.pem").write_bytes(_key_pem(key))
    assert check_tls(tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "root.pem")
    (tmp_path / "leaf.pem").write_bytes(leaf)  # without its intermediate: no chain to root
    with pytest.raises(InvalidParameterError, match="is not signed by the CA in --tls-ca"):
        check_tls(tmp_path / "leaf.pem", tmp_path / "key.pem", tmp_path / "root.pem")


def test_an_unreadable_tls_file_is_named(pki: Pki, tmp_path: Path) -> None:
    """Check a certificate that does not exist is refused naming it and the reason."""
    missing = tmp_path / "nope.pem"
    with pytest.raises(InvalidParameterError,
                       match=rf"--tls-cert '{missing}' cannot be read \(No such file"):
        check_tls(missing, pki.key, pki.ca)


def test_supernode_command_trusts_the_ca_instead_of_running_insecure(pki: Pki) -> None:
    """Check the SuperNode gets --root-certificates and no --insecure with a CA."""
    plain = supernode_command("127.0.0.1:9092", 0, 1, 9100)
    tls = supernode_command("127.0.0.1:9092", 0, 1, 9100, root_certificates=pki.ca)
    assert "--insecure" in plain and "--root-certificates" not in plain
    assert "--insecure" not in tls
    assert tls[tls.index("--root-certificates") + 1] == str(pki.ca)
    assert tls[tls.index("--superlink") + 1] == "127.0.0.1:9092"


def _edgewise(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
              *args: str) -> tuple[int, str]:
    """``edgewise federate ARGS`` through the console script's entry point, in this process
    (exit status, stderr); starting a fleet or a SuperNode fails the test."""
    return edgewise_in_process(["federate", *args], monkeypatch, capsys)


def test_server_refuses_a_certificate_without_its_key_in_one_line(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate server --tls-cert` alone stops in one line, before anything starts."""
    code, err = _edgewise(monkeypatch, capsys, "server", "--tls-cert", str(pki.cert),
                          "--data-dir", str(tmp_path))
    assert code == 2, err
    assert err == (f"error: --tls-cert {str(pki.cert)!r} needs --tls-key too (the "
                   "SuperLink's certificate and its private key go together); give "
                   "both or neither.\n")
    assert not (tmp_path / "federated").exists()


def test_client_refuses_a_ca_file_that_holds_no_certificate(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate client --tls-ca KEY` stops in one line before starting a SuperNode."""
    code, err = _edgewise(monkeypatch, capsys, "client", "--superlink", "127.0.0.1:1",
                          "--tls-ca", str(pki.key), "--data-dir", str(tmp_path))
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith(
        f"error: --tls-ca {str(pki.key)!r} holds no PEM certificate"), err
    assert not (tmp_path / "federated").exists()  # refused before the ledger is made


def test_client_with_a_ca_runs_a_tls_supernode(pki: Pki, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate client --tls-ca` starts flower-supernode with --root-certificates
    and without --insecure, and warns of nothing."""
    from edgewise.cli.federate import client

    cmds: list[list[str]] = []
    monkeypatch.setattr(os, "execvpe", lambda _exe, cmd, _env: cmds.append(cmd))
    client(superlink="fl.example.org:9092", data_dir=tmp_path, partition_id=0,
           num_partitions=3, port=9999, max_epsilon=8.0, privacy_ledger=None,
           tls_ca=pki.self_signed)
    assert "--insecure" not in cmds[0]
    assert cmds[0][cmds[0].index("--root-certificates") + 1] == str(pki.self_signed)
    assert "warning" not in capsys.readouterr().err


def test_server_on_every_interface_with_tls_tells_devices_a_certificate_name_and_the_ca(
        pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Check `federate server --host 0.0.0.0 --tls-*` prints a name the certificate holds
    (not 0.0.0.0) and the CA to trust, and no warning of unencrypted traffic."""
    from edgewise.cli import federate

    fleets: list[LocalFleet] = []
    monkeypatch.setattr(federate, "_run_fleet", lambda fleet, *_a, **_k: fleets.append(fleet))
    monkeypatch.setattr(federate, "_print_result", lambda *_a: None)
    federate.server(data_dir=tmp_path, host="0.0.0.0", port=9092, tls_cert=pki.self_signed,
                    tls_key=pki.self_signed_key)
    out, err = capsys.readouterr()
    assert "--superlink fl.example.org:9092 " in out and "0.0.0.0:9092 --" not in out
    assert f"--tls-ca {pki.self_signed}" in out
    assert "unencrypted" not in err
    assert fleets[0].tls == TlsFiles(pki.self_signed, pki.self_signed_key, pki.self_signed)


def test_server_with_a_key_that_is_not_the_certificates_starts_nothing(
        pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the mismatched key is one error line and no fleet is made."""
    from edgewise.cli import federate

    monkeypatch.setattr(federate, "_run_fleet", lambda *_a, **_k: pytest.fail("started"))
    with pytest.raises(typer.Exit):
        federate.server(data_dir=tmp_path, tls_cert=pki.cert, tls_key=pki.other_key,
                        tls_ca=pki.ca)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not the private key of --tls-cert" in err


# A SuperNode that trusts the CA completing a round through the TLS gate, and ones running
# --insecure or trusting another CA refused by TLS, are checked in the real run of
# tests/federated/test_supernode_auth.py (test_only_supernodes_with_registered_keys_take_
# part_in_a_real_run), which shares its fleet with them; the gate serving TLS in front of
# a SuperLink without TLS (no device keys) in tests/federated/test_fleet_gate.py
# (test_with_tls_the_gate_serves_tls_that_devices_verify).
