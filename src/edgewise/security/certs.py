"""The names a TLS certificate is valid for, as clients verifying it read them: the
gateway's demo check and the federated deployment's address checks share one reading.

Whether a client accepts a certificate for a host is decided by a real TLS handshake in
memory, with Python's :mod:`ssl` (OpenSSL) as the client (as the demo's pumps, paho, and
the federated deployment's own check, httpx, are): :func:`tls_verify_error` for a
certificate and its key, :func:`accepts_host` for a certificate alone. OpenSSL's rules are
not restated here, so they cannot drift: the common name counts where the certificate has
no DNS name in its subjectAltName (an IP-only one included), a ``*`` stands for a whole
leftmost label and needs two labels after it (``*.lan`` matches nothing), an IP address is
matched against the IP entries only. :func:`cert_names` lists the names by those rules.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["IPAddress", "accepts_host", "cert_names", "describe_names", "expiry_warning",
           "server_files_error", "tls_verify_error"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def cert_names(cert: Any) -> tuple[list[str], list[IPAddress]]:
    """The DNS names and IP addresses ``cert`` (a ``cryptography`` x509 certificate) is
    valid for, as OpenSSL (Python's ``ssl``) reads them: its subjectAltName's DNS names,
    else (none of that type, whatever else it holds) its common names; its
    subjectAltName's IP addresses (a common name never stands for an IP address).

    >>> import datetime, ipaddress
    >>> from cryptography import x509
    >>> from cryptography.hazmat.primitives import hashes
    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> key = ec.generate_private_key(ec.SECP256R1())
    >>> name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "gw.local")])
    >>> now = datetime.datetime(2026, 1, 1)
    >>> builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
    ...            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
    ...            .not_valid_after(now + datetime.timedelta(days=1)))
    >>> cert_names(builder.sign(key, hashes.SHA256()))
    (['gw.local'], [])
    >>> ip_only = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("10.0.0.5"))])
    >>> cert_names(builder.add_extension(ip_only, critical=False).sign(key, hashes.SHA256()))
    (['gw.local'], [IPv4Address('10.0.0.5')])
    """
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        dns: list[str] = []
        ips: list[IPAddress] = []
    else:
        dns = list(san.get_values_for_type(x509.DNSName))
        ips = list(san.get_values_for_type(x509.IPAddress))
    if not dns:  # OpenSSL's X509_check_host: the CN only where no DNS name is given
        dns = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    return dns, ips


def describe_names(cert: Any) -> str:
    """``cert``'s names for a message: ``"gw.local, 10.0.0.5"``, or ``"no names"``."""
    dns, ips = cert_names(cert)
    return ", ".join([*dns, *map(str, ips)]) or "no names"


def _handshake_error(server: ssl.SSLContext, client: ssl.SSLContext, host: str) -> str | None:
    """Why ``client``, connecting to ``host``, refuses ``server`` in a TLS handshake run in
    memory; ``None`` when it accepts it."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    try:
        c = client.wrap_bio(c_in, c_out, server_hostname=host)
    except ValueError as exc:  # a host name ssl refuses outright (empty, a leading dot)
        return f"{host!r} is no host name a client can check: {exc}"
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        try:
            c.do_handshake()
            return None
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLCertVerificationError as exc:
            return str(exc.verify_message or exc)
        except ssl.SSLError as exc:
            return str(exc)
        s_in.write(c_out.read())
        try:
            srv.do_handshake()
        except ssl.SSLError:
            pass  # wants more, or the client's alert: the client's own error says why
        c_in.write(s_out.read())
    return "the TLS handshake did not finish"


def tls_verify_error(cert_file: str | Path, key_file: str | Path, host: str) -> str | None:
    """Why a client that trusts ``cert_file`` only and checks the name ``host`` (as the
    demo's simulated pumps do: ``ssl.PROTOCOL_TLS_CLIENT``, what paho's ``tls_set``
    makes) refuses a server presenting ``cert_file``/``key_file``; ``None`` when it
    accepts it. The TLS handshake runs in memory."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(str(cert_file), str(key_file))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(str(cert_file))
    return _handshake_error(server, client, host)


def accepts_host(cert: Any, host: str) -> bool:
    """Whether a TLS client (Python's ``ssl``: OpenSSL with its default host checks)
    accepts ``cert`` (a ``cryptography`` x509 certificate) for ``host``, a DNS name or an
    IP address (``[::1]`` as ``::1``); its chain and validity are not looked at.

    Decided by a handshake in memory, not by rules restated here: the client trusts a
    stand-in certificate with ``cert``'s subject and subjectAltName, made and signed for
    this check alone with a key of its own (``cert``'s key is not needed).

    >>> import datetime
    >>> from cryptography import x509
    >>> from cryptography.hazmat.primitives import hashes
    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> key = ec.generate_private_key(ec.SECP256R1())
    >>> name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "x")])
    >>> now = datetime.datetime(2026, 1, 1)
    >>> cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
    ...         .public_key(key.public_key()).serial_number(1).not_valid_before(now)
    ...         .not_valid_after(now + datetime.timedelta(days=1))
    ...         .add_extension(x509.SubjectAlternativeName([x509.DNSName("*.lan"),
    ...                        x509.DNSName("*.example.com")]), critical=False)
    ...         .sign(key, hashes.SHA256()))
    >>> accepts_host(cert, "gw.example.com"), accepts_host(cert, "gw.lan")
    (True, False)
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        pass
    else:
        builder = builder.add_extension(san.value, critical=san.critical)
    stand_in = builder.sign(key, hashes.SHA256())
    pem = stand_in.public_bytes(serialization.Encoding.PEM)
    with tempfile.TemporaryDirectory(prefix="edgewise-cert-check-") as folder:  # 0700
        cert_file, key_file = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert_file.write_bytes(pem)
        key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cert_file, key_file)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(cadata=pem.decode("ascii"))
    return _handshake_error(server, client, host.strip("[]")) is None


class _Encrypted(Exception):
    """Raised from the password callback: the key asks for a passphrase."""


def _no_passphrase() -> bytes:
    raise _Encrypted  # never OpenSSL's own prompt on the terminal


def _read(option: str, path: str | Path) -> tuple[bytes | None, str | None]:
    try:
        return Path(path).read_bytes(), None
    except OSError as exc:
        return None, f"{option} {str(path)!r} cannot be read: {exc.strerror or exc}"


def server_files_error(cert_file: str | Path, key_file: str | Path, *,
                       now: datetime.datetime | None = None, cert_option: str = "--tls-cert",
                       key_option: str = "--tls-key") -> str | None:
    """Why a TLS server cannot serve ``cert_file`` (PEM: the certificate, optionally
    followed by its intermediates) with ``key_file`` (its unencrypted PEM private key;
    the same file as ``cert_file`` is fine), as one message naming the option, the file
    and what would be right; ``None`` when it can. Refused: a file that cannot be read,
    one in DER or no PEM at all, a key with a passphrase (OpenSSL would prompt for it on
    the terminal, once per listener), a key that is not the certificate's, and a
    certificate outside its validity period at ``now`` (every client that checks it would
    refuse every handshake)."""
    import ssl

    from cryptography import x509

    head = (f"{cert_option} {str(cert_file)!r} / {key_option} {str(key_file)!r} cannot be "
            "loaded as a PEM certificate and its private key")
    cert_data, error = _read(cert_option, cert_file)
    if cert_data is None:
        return error
    key_data, error = _read(key_option, key_file)
    if key_data is None:
        return error
    if b"-----BEGIN CERTIFICATE-----" not in cert_data:
        try:
            x509.load_der_x509_certificate(cert_data)
        except ValueError:
            what = "holds no PEM certificate"
        else:
            what = ("is a DER (binary) certificate; convert it with `openssl x509 -inform DER "
                    f"-in {cert_file} -out cert.pem`")
        return (f"{head}: {cert_option} {str(cert_file)!r} {what} (PEM begins "
                "'-----BEGIN CERTIFICATE-----')")
    if b"PRIVATE KEY-----" not in key_data:
        return (f"{head}: {key_option} {str(key_file)!r} holds no PEM private key (PEM begins "
                "'-----BEGIN PRIVATE KEY-----'; a DER key converts with `openssl pkey -inform "
                f"DER -in {key_file} -out key.pem`)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert_file), str(key_file), password=_no_passphrase)
    except _Encrypted:
        return (f"{head}: {key_option} {str(key_file)!r} is encrypted with a passphrase, which "
                "the gateway cannot be given; decrypt it (`openssl pkey -in "
                f"{key_file} -out key.pem`, kept owner-only) and pass that file")
    except ssl.SSLError as exc:
        if getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
            return (f"{head}: {key_option} {str(key_file)!r} is not the private key of the "
                    f"first certificate in {cert_option} {str(cert_file)!r}; pass the key it "
                    "was made for, and put the server's own certificate first in the file")
        return f"{head}: {exc}"
    except OSError as exc:
        return f"{head}: {exc.strerror or exc}"
    try:
        leaf = x509.load_pem_x509_certificates(cert_data)[0]
    except (ValueError, IndexError):  # OpenSSL took it; a stricter reading is not ours
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    if now > leaf.not_valid_after_utc:
        when = f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    elif now < leaf.not_valid_before_utc:
        when = f"is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    else:
        return None
    return (f"{cert_option} {str(cert_file)!r} {when}: every client that checks it would "
            "refuse every connection; pass a certificate valid now.")


def expiry_warning(cert_file: str | Path, *, now: datetime.datetime | None = None,
                   within: datetime.timedelta = datetime.timedelta(days=14),
                   cert_option: str = "--tls-cert") -> str | None:
    """A warning when the first certificate in the PEM ``cert_file`` expires within
    ``within`` of ``now`` and within the last third of its lifetime (when ACME clients
    renew: a 6-day certificate has 2 days left at most, not always); ``None`` otherwise
    (or when it cannot be read: that is :func:`server_files_error`'s to say)."""
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None
    now = now or datetime.datetime.now(datetime.UTC)
    left = leaf.not_valid_after_utc - now
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    if not datetime.timedelta(0) <= left <= min(within, lifetime / 3):
        return None
    return (f"{cert_option} {str(cert_file)!r} expires on "
            f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC (in {left.days} days, "
            f"{left.seconds // 3600} hours); renew it and restart, else clients refuse "
            "every connection from then on")
