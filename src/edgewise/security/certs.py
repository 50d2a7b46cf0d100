"""The names a TLS certificate is valid for, as clients verifying it read them: the
gateway's demo check and the federated deployment's address checks share one reading."""

from __future__ import annotations

import ipaddress
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def cert_names(cert: Any) -> tuple[list[str], list[IPAddress]]:
    """The DNS names and IP addresses ``cert`` (a ``cryptography`` x509 certificate) is
    valid for: its subjectAltName's, else its common name as a DNS name (as Python's
    ``ssl`` falls back to it).

    >>> import datetime
    >>> from cryptography import x509
    >>> from cryptography.hazmat.primitives import hashes
    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> key = ec.generate_private_key(ec.SECP256R1())
    >>> name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "gw.local")])
    >>> now = datetime.datetime(2026, 1, 1)
    >>> cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
    ...         .public_key(key.public_key()).serial_number(1).not_valid_before(now)
    ...         .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    >>> cert_names(cert)
    (['gw.local'], [])
    """
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return [str(a.value) for a in cns], []
    return (list(san.get_values_for_type(x509.DNSName)),
            list(san.get_values_for_type(x509.IPAddress)))


def describe_names(cert: Any) -> str:
    """``cert``'s names for a message: ``"gw.local, 10.0.0.5"``, or ``"no names"``."""
    dns, ips = cert_names(cert)
    return ", ".join([*dns, *map(str, ips)]) or "no names"
