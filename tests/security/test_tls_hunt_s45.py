"""TLS hunt (s45): the files ``edgewise serve`` / ``demo`` take with ``--tls-cert`` and
``--tls-key``. An expired or not-yet-valid certificate started a gateway whose every
handshake a checking client refused; a key with a passphrase made OpenSSL prompt on the
terminal (three times, once per loader) or fail with "Invalid argument"; a DER file was
"[SSL] PEM lib"; a certificate close to its end gave no warning. What already worked (a
chain file, key and certificate in one file, TLS 1.2 at least) is kept here too."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgewise.cli.gateway import _settings
from edgewise.errors import ConfigError
from edgewise.security.certs import tls_verify_error
from tests.conftest import free_port

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
PEM = serialization.Encoding.PEM


def _cert(key: ec.EllipticCurvePrivateKey, start: dt.datetime, end: dt.datetime, *,
          cn: str = "localhost", ca: bool = False, sans: bool = True,
          issuer: x509.Certificate | None = None,
          issuer_key: ec.EllipticCurvePrivateKey | None = None) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(start)
         .not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def _key_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    return key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, enc)


def _write(folder: Path, name: str, data: bytes) -> str:
    (folder / name).write_bytes(data)
    return str(folder / name)


def _serve_settings(tmp_path: Path, cert: str, key: str):  # type: ignore[no-untyped-def]
    """What ``edgewise serve --tls-cert cert --tls-key key`` checks before anything starts."""
    return _settings(tmp_path / "data", "embedded", "", "127.0.0.1", free_port(), free_port(),
                     cert, key, "context-likelihood")


@pytest.mark.parametrize(("start", "end", "said"), [
    (NOW - 30 * DAY, NOW - DAY, "expired on"),
    (NOW + DAY, NOW + 30 * DAY, "is not valid before"),
])
def test_a_certificate_out_of_its_validity_is_refused_before_start(
        tmp_path: Path, start: dt.datetime, end: dt.datetime, said: str) -> None:
    """It was taken: the gateway said ready and a client checking it (the demo's pumps, an
    agent with --ca-file) refused every handshake."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _write(tmp_path, "cert.pem", _cert(key, start, end).public_bytes(PEM))
    key_file = _write(tmp_path, "key.pem", _key_pem(key))
    why = tls_verify_error(cert, key_file, "localhost")  # what every client would meet
    assert why is not None and ("expired" in why or "not yet valid" in why), why
    with pytest.raises(ConfigError) as err:
        _serve_settings(tmp_path, cert, key_file)
    msg = str(err.value)
    assert msg.startswith(f"--tls-cert {cert!r} {said} ") and "valid now" in msg, msg
    assert "\n" not in msg and not (tmp_path / "data").exists()


def test_a_key_with_a_passphrase_is_refused_without_a_prompt(tmp_path: Path) -> None:
    """It made OpenSSL prompt 'Enter PEM pass phrase:' on the terminal (and again for each
    listener), or without one fail as 'Invalid argument'."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _write(tmp_path, "cert.pem", _cert(key, NOW - DAY, NOW + 90 * DAY).public_bytes(PEM))
    key_file = _write(tmp_path, "key.pem", _key_pem(key, b"s3cret"))
    with pytest.raises(ConfigError) as err:
        _serve_settings(tmp_path, cert, key_file)
    msg = str(err.value)
    assert f"--tls-key {key_file!r} is encrypted with a passphrase" in msg, msg
    assert "openssl pkey" in msg and "cannot be loaded as a PEM certificate" in msg


def test_der_files_and_a_wrong_key_are_named(tmp_path: Path) -> None:
    """A DER certificate or key was '[SSL] PEM lib', naming neither file nor format."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(key, NOW - DAY, NOW + 90 * DAY)
    cert_pem = _write(tmp_path, "cert.pem", cert.public_bytes(PEM))
    key_pem = _write(tmp_path, "key.pem", _key_pem(key))
    cert_der = _write(tmp_path, "cert.der", cert.public_bytes(serialization.Encoding.DER))
    key_der = _write(tmp_path, "key.der", key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    other = _write(tmp_path, "other.pem", _key_pem(ec.generate_private_key(ec.SECP256R1())))
    for cert_file, key_file, needle in [
        (cert_der, key_pem, f"--tls-cert {cert_der!r} is a DER (binary) certificate"),
        (cert_pem, key_der, f"--tls-key {key_der!r} holds no PEM private key"),
        (cert_pem, other, (f"--tls-key {other!r} is not the private key of the first "
                           f"certificate in --tls-cert {cert_pem!r}")),
    ]:
        with pytest.raises(ConfigError) as err:
            _serve_settings(tmp_path, cert_file, key_file)
        assert needle in str(err.value), str(err.value)
        assert "PEM lib" not in str(err.value)


def test_a_certificate_near_its_end_warns_and_starts(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _write(tmp_path, "cert.pem", _cert(key, NOW - 300 * DAY, NOW + 3 * DAY)
                  .public_bytes(PEM))
    key_file = _write(tmp_path, "key.pem", _key_pem(key))
    assert _serve_settings(tmp_path, cert, key_file).tls_cert == cert
    err = capsys.readouterr().err
    assert err.startswith(f"warning: --tls-cert {cert!r} expires on "), err
    assert "(in 2 days" in err or "(in 3 days" in err, err
    far = _write(tmp_path, "far.pem", _cert(key, NOW - DAY, NOW + 90 * DAY).public_bytes(PEM))
    short = _write(tmp_path, "short.pem", _cert(key, NOW - DAY, NOW + 5 * DAY)  # 6-day cert
                   .public_bytes(PEM))
    for quiet in (far, short):  # far from its end, or short-lived and not yet due
        _serve_settings(tmp_path, quiet, key_file)
        assert capsys.readouterr().err == "", quiet


def test_chain_files_and_one_file_for_both_are_taken(tmp_path: Path) -> None:
    """Kept: a leaf followed by its intermediate (and root), and key and certificate in
    one file (given as both options); a client trusting the root accepts the chain for
    the names listed and refuses another."""
    from edgewise.security.certs import server_files_error

    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in "abc")
    root = _cert(root_key, NOW - DAY, NOW + 900 * DAY, cn="root", ca=True, sans=False)
    inter = _cert(inter_key, NOW - DAY, NOW + 900 * DAY, cn="inter", ca=True, sans=False,
                  issuer=root, issuer_key=root_key)
    leaf = _cert(leaf_key, NOW - DAY, NOW + 90 * DAY, issuer=inter, issuer_key=inter_key)
    chain = _write(tmp_path, "chain.pem", b"".join(c.public_bytes(PEM)
                                                   for c in (leaf, inter, root)))
    key_file = _write(tmp_path, "leaf.key", _key_pem(leaf_key))
    assert server_files_error(chain, key_file) is None
    _serve_settings(tmp_path, chain, key_file)
    both = _write(tmp_path, "both.pem", leaf.public_bytes(PEM) + inter.public_bytes(PEM)
                  + _key_pem(leaf_key))
    _serve_settings(tmp_path, both, both)
    for host, ok in [("localhost", True), ("127.0.0.1", True), ("gw.example.com", False)]:
        assert (tls_verify_error(chain, key_file, host) is None) is ok, host


def test_both_listeners_refuse_tls_below_1_2(tmp_path: Path) -> None:
    """The HTTPS (uvicorn) and MQTT (amqtt) contexts, built as the gateway builds them."""
    import ssl

    import uvicorn
    from amqtt.broker import Broker

    key = ec.generate_private_key(ec.SECP256R1())
    cert = _write(tmp_path, "cert.pem", _cert(key, NOW - DAY, NOW + 90 * DAY).public_bytes(PEM))
    key_file = _write(tmp_path, "key.pem", _key_pem(key))
    config = uvicorn.Config(app=None, ssl_certfile=cert, ssl_keyfile=key_file)  # type: ignore[arg-type]
    config.load()
    mqtt = Broker._create_ssl_context({"certfile": cert, "keyfile": key_file})  # type: ignore[arg-type]
    for context in (config.ssl, mqtt):
        assert context is not None and context.minimum_version >= ssl.TLSVersion.TLSv1_2
