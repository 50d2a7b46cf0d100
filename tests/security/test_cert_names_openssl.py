"""The names a certificate is valid for agree with what Python's ssl (OpenSSL) accepts in a
real TLS handshake (run in memory here, with the certificate's own key).

``cert_names`` took the common name only where a certificate had no subjectAltName at
all, while OpenSSL takes it wherever the subjectAltName holds no DNS name (an IP-only one:
CN gw.local verifies for gw.local); the federated deployment's ``_cert_holds`` accepted a
``*.lan`` wildcard that OpenSSL refuses (it needs two labels after the star), so
``check_tls`` passed a certificate its own readiness check (httpx) then refused, and
refused one it accepts.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgewise.errors import InvalidParameterError
from edgewise.federated.deploy import _cert_holds, check_tls
from edgewise.security.certs import cert_names

IP = x509.IPAddress
DNS = x509.DNSName


def _ip(text: str) -> x509.IPAddress:
    return IP(ipaddress.ip_address(text))


def _make(folder: Path, cn: str | None, sans: list[Any] | None) -> tuple[Any, Path, Path]:
    """A self-signed certificate with common name ``cn`` and subjectAltName ``sans``
    (``None``: no such extension), written with its key to ``folder``."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)] if cn is not None else []
    attrs.append(x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "edgewise tests"))
    name = x509.Name(attrs)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    if sans is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert, cert_file, key_file


def _ssl_accepts(cert_file: Path, key_file: Path, host: str) -> bool:
    """The reference: whether Python's ssl, trusting ``cert_file``, completes a handshake
    in memory with a server presenting it (and its own key) for ``host``."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cert_file)
    bios = [ssl.MemoryBIO() for _ in range(4)]
    c = client.wrap_bio(bios[0], bios[1], server_hostname=host)
    s = server.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):
        try:
            c.do_handshake()
            return True
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError:
            return False
        bios[2].write(bios[1].read())
        try:
            s.do_handshake()
        except ssl.SSLError:
            pass
        bios[0].write(bios[3].read())
    raise AssertionError("the reference handshake did not finish")


# (common name, subjectAltName, hosts to ask about, cert_names as OpenSSL reads them)
SHAPES: dict[str, tuple[str | None, list[Any] | None, list[str], tuple[list[str], list[str]]]] = {
    "cn-only": ("gw.local", None, ["gw.local", "GW.LOCAL", "other.local", "10.0.0.5"],
                (["gw.local"], [])),
    "ip-only-san-and-cn": ("gw.local", [_ip("10.0.0.5")],
                           ["gw.local", "10.0.0.5", "10.0.0.6", "other.local"],
                           (["gw.local"], ["10.0.0.5"])),
    "dns-san-and-other-cn": ("cn.local", [DNS("san.local")],
                             ["san.local", "cn.local", "x.san.local"],
                             (["san.local"], [])),
    "wildcard-one-label": ("x", [DNS("*.lan")], ["gw.lan", "lan", "a.gw.lan"],
                           (["*.lan"], [])),
    "wildcard-two-labels": ("x", [DNS("*.example.com")],
                            ["gw.example.com", "GW.Example.COM", "example.com",
                             "a.b.example.com", "gw.example.org"],
                            (["*.example.com"], [])),
    "partial-wildcard": ("x", [DNS("gw*.example.com")], ["gw1.example.com"],
                         (["gw*.example.com"], [])),
    "ip-sans": ("x", [_ip("127.0.0.1"), _ip("::1")],
                ["127.0.0.1", "::1", "[::1]", "localhost", "x", "127.0.0.2"],
                (["x"], ["127.0.0.1", "::1"])),
    "cn-is-an-ip": ("127.0.0.1", None, ["127.0.0.1"], (["127.0.0.1"], [])),
    "dns-and-ip-sans": ("x", [DNS("localhost"), _ip("127.0.0.1")],
                        ["localhost", "127.0.0.1", "x"], (["localhost"], ["127.0.0.1"])),
    "no-cn-email-san": (None, [x509.RFC822Name("ops@example.com")], ["example.com"],
                        ([], [])),
}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path, Path]]:
    top = tmp_path_factory.mktemp("certs")
    return {shape: _make(top / shape, cn, sans) for shape, (cn, sans, _, _) in SHAPES.items()}


@pytest.mark.parametrize("shape", SHAPES)
def test_the_host_check_agrees_with_a_real_handshake(
        shape: str, certs: dict[str, tuple[Any, Path, Path]]) -> None:
    """Check ``_cert_holds`` (the deployment's check), ``accepts_host`` and
    ``tls_verify_error`` accept exactly the hosts Python's ssl accepts, for each shape."""
    cert, cert_file, key_file = certs[shape]
    for host in SHAPES[shape][2]:
        want = _ssl_accepts(cert_file, key_file, host.strip("[]"))
        assert _cert_holds(cert, host) is want, (shape, host, want)
    from edgewise.security.certs import accepts_host, tls_verify_error

    for host in SHAPES[shape][2]:
        want = _ssl_accepts(cert_file, key_file, host.strip("[]"))
        assert accepts_host(cert, host) is want, (shape, host, want)
        assert (tls_verify_error(cert_file, key_file, host.strip("[]")) is None) is want, \
            (shape, host, want)


@pytest.mark.parametrize("shape", SHAPES)
def test_cert_names_lists_what_openssl_reads(
        shape: str, certs: dict[str, tuple[Any, Path, Path]]) -> None:
    """Check ``cert_names`` gives the DNS names and IPs OpenSSL reads (the CN wherever no
    DNS name is in the subjectAltName), and that every plain name it lists verifies in a
    real handshake while a CN it leaves out does not."""
    cert, cert_file, key_file = certs[shape]
    dns, ips = cert_names(cert)
    assert (dns, [str(i) for i in ips]) == SHAPES[shape][3]
    for name in [d for d in dns if "*" not in d and not _is_ip(d)] + [str(i) for i in ips]:
        assert _ssl_accepts(cert_file, key_file, name), (shape, name)
    cn = SHAPES[shape][0]
    if cn is not None and cn not in dns:
        assert not _ssl_accepts(cert_file, key_file, cn), (shape, cn)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def test_check_tls_takes_the_cn_beside_an_ip_only_san(
        certs: dict[str, tuple[Any, Path, Path]]) -> None:
    """Check ``check_tls --host gw.local`` passes a certificate with CN gw.local and only an
    IP in its subjectAltName (httpx verifies it for gw.local; it was refused)."""
    _, cert_file, key_file = certs["ip-only-san-and-cn"]
    assert check_tls(cert_file, key_file, host="gw.local") is not None


def test_check_tls_refuses_a_one_label_wildcard(
        certs: dict[str, tuple[Any, Path, Path]]) -> None:
    """Check ``check_tls --host gw.lan`` refuses a ``*.lan`` certificate, naming the host
    and the certificate's names (it passed, and the fleet's readiness check then failed)."""
    _, cert_file, key_file = certs["wildcard-one-label"]
    with pytest.raises(InvalidParameterError, match=r"is not valid for gw\.lan \(it names "
                                                    r"\*\.lan\)"):
        check_tls(cert_file, key_file, host="gw.lan")
