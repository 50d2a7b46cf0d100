"""Run a federated round across real processes with Flower's deployment engine.

:class:`LocalFleet` starts one ``flower-superlink``, the gate in front of it
(:mod:`edgewise.federated.fleet_gate`) and N ``flower-supernode`` processes on loopback
(free ports, a private ``FLWR_HOME``; TLS when given :class:`TlsFiles`, else Flower's
insecure mode), submits the Edgewise Flower app (``edgewise.federated.server_app:app`` /
``client_app:app``) the way ``flwr run`` does, waits for it to finish and stops every
process it started. The pieces can also run on separate machines: ``edgewise federate
server`` starts the SuperLink and the gate and submits the run; each device runs
``edgewise federate client --superlink HOST:PORT --partition-id I``.

One fleet per work folder: :meth:`LocalFleet.start` (and ``edgewise federate server``
before it touches anything there) holds an exclusive ``flock`` on ``fleet.lock`` in it,
since the SuperLink's database, the run's checkpoint, privacy ledger and result live
there. The SuperLink's database is made afresh at each start: Flower would re-admit the
nodes a kept one knows, but it also keeps the runs and undelivered instructions of the
server that stopped, which a restarted SuperLink would hand out again. So a restarted server
(``--resume`` included) no longer knows the devices that had joined: ``edgewise federate
client`` runs its SuperNode under :func:`run_supernode`, which starts it again to join
afresh when its SuperLink refuses it (or ends non-zero, one line, when that keeps happening).

The SuperLink listens on 127.0.0.1 only, at a port of its own: Flower serves its Control API
(run submission, unauthenticated in Flower OSS) on the same port as the Fleet API the
devices need, so the address devices use is the gate's, which forwards the Fleet API and
refuses everything else. The run is submitted to the SuperLink directly, over loopback.

SuperNode authentication (``supernode_keys``): Flower 1.41's ``--enable-supernode-auth``
admits only SuperNodes whose public key was registered through the Control API, each
signing its Fleet calls with its private key (``flower-supernode
--auth-supernode-private-key``). Flower refuses it on an ``--insecure`` SuperLink, so with
keys the SuperLink serves TLS on loopback too, with a certificate made for 127.0.0.1 at each
start (the gate verifies it), and the keys are registered over loopback before the gate
opens. Flower signs only a timestamp, valid for minutes, not the request: whoever reads one
call could replay it, hence keys need TLS at the gate as well (:func:`load_supernode_keys`,
:func:`generate_supernode_key`).

The ``flwr`` command line itself cannot start under the Typer version Edgewise pins
(``typer<0.21``), so the run is submitted through ``flwr.cli.run.run`` from Python, and
public keys are registered through Flower's ``ControlHttpClient`` (what ``flwr supernode
register`` calls).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

import edgewise
from edgewise.config import is_loopback
from edgewise.errors import EdgewiseError, InvalidParameterError
from edgewise.security.certs import accepts_host, cert_names, describe_names

__all__ = ["LOCK_NAME", "RUN_DEFAULTS", "FleetBusyError", "LocalFleet", "SupernodeKey",
           "TlsFiles", "app_pyproject", "check_auth_key", "check_tls", "device_address",
           "free_port", "generate_supernode_key", "load_ca", "load_supernode_keys",
           "register_supernode_keys", "run_supernode", "supernode_command", "toml_string"]

#: The lock file, in a :class:`LocalFleet`'s work folder, that its holder ``flock``-s for
#: as long as its fleet may run there (``federate server``: its whole life).
LOCK_NAME = "fleet.lock"


class FleetBusyError(EdgewiseError, RuntimeError):
    """Another process runs a fleet in this work folder (it holds :data:`LOCK_NAME`)."""

#: The run config a :class:`LocalFleet` run starts from (``run`` overrides any of it).
RUN_DEFAULTS: dict[str, Any] = {
    "num-server-rounds": 2, "strategy": "trimmed", "dataset": "pump",
    "round-timeout": 60.0, "local-epochs": 1, "num-malicious": 0,
    "beta": 0.0, "dp-noise": 0.0, "dp-clip": 1.0, "data-dir": "",
    "data-dir-publish": "", "seed": 0, "threads": 1, "lr": 0.003,
    "batch-size": 32, "dp-sgd-noise": 0.0, "dp-sgd-clip": 1.0,
    "dp-sgd-epsilon": 0.0, "dp-delta": 1e-5, "evaluate": True,
    "dp-stats-bounds": "", "dp-stats-share": 0.1,
}

_PYPROJECT = """\
[project]
name = "edgewise-federated"
version = "1.0.0"
dependencies = []

[tool.flwr.app]
publisher = "edgewise"

[tool.flwr.app.components]
serverapp = "edgewise.federated.server_app:app"
clientapp = "edgewise.federated.client_app:app"

[tool.flwr.app.config]
{config}
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect_host(host: str) -> str:
    """The address a process on this machine reaches a SuperLink listening on ``host`` at:
    loopback for the wildcard addresses.

    >>> connect_host("0.0.0.0"), connect_host("::"), connect_host("10.0.0.5")
    ('127.0.0.1', '127.0.0.1', '10.0.0.5')
    """
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def connect_address(host: str, port: int) -> str:
    """Where a process on this machine reaches a SuperLink listening on ``host:port``
    (:func:`connect_host`, with brackets for IPv6).

    >>> connect_address("0.0.0.0", 9092), connect_address("10.0.0.5", 9092)
    ('127.0.0.1:9092', '10.0.0.5:9092')
    >>> connect_address("fe80::1", 9092)
    '[fe80::1]:9092'
    """
    h = connect_host(host)
    return f"[{h}]:{port}" if ":" in h else f"{h}:{port}"


def _local_hosts(host: str) -> list[str]:
    """The hosts processes on this machine reach a gate listening on ``host`` at, verifying
    its certificate: :class:`LocalFleet`'s readiness check and the SuperNodes it starts
    itself (:func:`connect_host`: loopback for the wildcard addresses)."""
    return [connect_host(host)]


@dataclass(frozen=True)
class TlsFiles:
    """A SuperLink's TLS files, checked by :func:`check_tls`: its certificate, its private key
    and the CA certificate that verifies it (absolute paths)."""

    cert: Path
    key: Path
    ca: Path


def _read_tls_file(option: str, path: str | Path) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise InvalidParameterError(
            f"{option} {str(path)!r} cannot be read ({exc.strerror or exc}); pass a readable "
            "PEM file.") from None


def _load_certs(option: str, path: str | Path) -> list[Any]:
    from cryptography import x509

    data = _read_tls_file(option, path)
    try:
        return list(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise InvalidParameterError(
            f"{option} {str(path)!r} holds no PEM certificate; pass a file that begins "
            "'-----BEGIN CERTIFICATE-----'.") from None


def load_ca(ca: str | Path, option: str = "--tls-ca") -> Path:
    """``ca`` as an absolute path, once it is known to hold a PEM certificate (a device's
    trust root for its SuperLink; refused naming ``option`` and the file otherwise)."""
    _load_certs(option, ca)
    return Path(ca).expanduser().resolve()


def _cert_holds(cert: Any, host: str) -> bool:
    """Whether TLS clients verifying ``cert`` accept it for ``host``: decided by a TLS
    handshake in memory with Python's ssl, as :class:`LocalFleet` checks the gate
    (:func:`~edgewise.security.certs.accepts_host`), not by rules restated here (a CN
    beside an IP-only subjectAltName counts; ``*.lan`` matches nothing)."""
    return accepts_host(cert, host)


def check_tls(cert: str | Path | None, key: str | Path | None, ca: str | Path | None = None,
              host: str = "127.0.0.1") -> TlsFiles | None:
    """Check a SuperLink's TLS files before anything starts; ``None`` when none are given.

    Refused, naming the option and the value: a certificate without its key (or the
    reverse, or a CA alone), a file that cannot be read or holds no PEM certificate or
    unencrypted private key, a key that is not the certificate's, a certificate out of its
    validity period, one not signed by ``ca`` (or, without ``ca``, not self-signed), and one
    not valid for the address this machine's own processes reach the gate at (``host``;
    127.0.0.1 for the wildcard ``0.0.0.0``): :class:`LocalFleet` checks the gate serves it
    there before it tells devices to connect (and its own SuperNodes connect there), so the
    run would never start.
    """
    from cryptography.hazmat.primitives import serialization

    if not cert and not key:
        if ca:
            raise InvalidParameterError(
                f"--tls-ca {str(ca)!r} is the CA certificate that signed --tls-cert; give it "
                "with --tls-cert and --tls-key, or drop it.")
        return None
    if not cert or not key:
        given, missing = ("--tls-cert", "--tls-key") if cert else ("--tls-key", "--tls-cert")
        raise InvalidParameterError(
            f"{given} {str(cert or key)!r} needs {missing} too (the SuperLink's certificate "
            f"and its private key go together); give both or neither.")
    chain = _load_certs("--tls-cert", cert)
    leaf = chain[0]
    key_data = _read_tls_file("--tls-key", key)
    try:
        private = serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise InvalidParameterError(
            f"--tls-key {str(key)!r} is encrypted; the SuperLink reads its key without a "
            "password, so pass an unencrypted PEM key (e.g. openssl pkey -in KEY -out "
            "PLAIN).") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidParameterError(
            f"--tls-key {str(key)!r} holds no PEM private key that can be read; pass the "
            "certificate's key file, which begins '-----BEGIN PRIVATE KEY-----' (or "
            "'-----BEGIN RSA/EC PRIVATE KEY-----').") from None
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if private.public_key().public_bytes(*der) != leaf.public_key().public_bytes(*der):
        raise InvalidParameterError(
            f"--tls-key {str(key)!r} is not the private key of --tls-cert {str(cert)!r} "
            f"(subject {leaf.subject.rfc4514_string()!r}); pass the key the certificate was "
            "made for.")
    now = datetime.now(UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        when = (f"expired on {leaf.not_valid_after_utc:%Y-%m-%d}" if now > leaf.not_valid_after_utc
                else f"is not valid before {leaf.not_valid_before_utc:%Y-%m-%d}")
        raise InvalidParameterError(
            f"--tls-cert {str(cert)!r} {when}; pass a certificate valid now.")
    if ca:
        cas = _load_certs("--tls-ca", ca)
    elif leaf.issuer == leaf.subject and _issued_by(leaf, leaf):
        cas, ca = [leaf], cert  # self-signed: it is its own CA
    else:
        raise InvalidParameterError(
            f"--tls-cert {str(cert)!r} is not self-signed (issuer "
            f"{leaf.issuer.rfc4514_string()!r}); pass --tls-ca with the CA certificate that "
            "signed it (devices verify the SuperLink with it, and so does this machine before "
            "it tells them to connect).")
    if not _chains_to(chain, cas):
        held = (f"subject {', '.join(repr(c.subject.rfc4514_string()) for c in cas)}"
                if len(cas) <= 3 else f"{len(cas)} certificates")
        raise InvalidParameterError(
            f"--tls-cert {str(cert)!r} (issuer {leaf.issuer.rfc4514_string()!r}) is not "
            f"signed by the CA in --tls-ca {str(ca)!r} ({held}); pass the CA certificate "
            "that signed it.")
    for local in _local_hosts(host):
        if not _cert_holds(leaf, local):
            where = (f"--host {host} is reached at {local} on this machine" if local != host
                     else f"--host {host}")
            raise InvalidParameterError(
                f"--tls-cert {str(cert)!r} is not valid for {local} (it names "
                f"{describe_names(leaf)}): {where}, where this machine checks that the "
                f"SuperLink serves it before devices connect; add {local} to its "
                "subjectAltName or choose a --host it names.")
    return TlsFiles(*(Path(p).expanduser().resolve() for p in (cert, key, ca)))


def _issued_by(cert: Any, issuer: Any) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _chains_to(chain: list[Any], cas: list[Any]) -> bool:
    """Whether ``chain[0]`` is signed by one of ``cas``, directly or through the
    intermediate certificates that follow it in ``chain``."""
    cert, rest = chain[0], list(chain[1:])
    for _ in range(len(chain)):
        if any(_issued_by(cert, c) for c in cas):
            return True
        nxt = next((c for c in rest if _issued_by(cert, c)), None)
        if nxt is None:
            return False
        rest.remove(nxt)
        cert = nxt
    return False


#: How to make the key files Flower reads (an OpenSSH EC private key for
#: ``--auth-supernode-private-key``, its OpenSSH public key line for registration), for
#: the messages that refuse other files.
_KEYGEN_HINT = ("make a key pair with `edgewise federate keygen --out DIR` (or `ssh-keygen "
                "-t ecdsa -b 384 -N ''`)")


def _nist_curve(key: Any) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ec

    return isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey) and \
        isinstance(key.curve, ec.SECP256R1 | ec.SECP384R1 | ec.SECP521R1 | ec.SECP224R1
                   | ec.SECP192R1)


def _key_kind(key: Any) -> str:
    """``key``'s type for a message: ``Ed25519``, ``RSA``, ``EC secp256k1``."""
    curve = getattr(key, "curve", None)
    if curve is not None:
        return f"EC {curve.name}"
    kind = type(key).__name__.lstrip("_")
    return kind.removesuffix("PublicKey").removesuffix("PrivateKey") or kind


@dataclass(frozen=True)
class SupernodeKey:
    """A device's public key, allowed to join a fleet's runs: where it was read
    (``file:line``) and the key as Flower stores it (PEM SubjectPublicKeyInfo)."""

    origin: str
    pem: bytes


def generate_supernode_key(out: str | Path, name: str = "supernode") -> tuple[Path, Path]:
    """Make a device's SuperNode key pair in the folder ``out`` (created, mode 0700, if
    missing): ``out/NAME``, its private key (EC P-384, OpenSSH format, unencrypted, mode
    0600: the device's ``federate client --auth-key``), and ``out/NAME.pub``, its public key
    (one OpenSSH line, ``ecdsa-sha2-nistp384 AAAA... NAME``: what the server's
    ``--supernode-keys`` reads). Returns both paths. Refused, before writing anything, when
    either file exists (a device's key is never overwritten), ``out`` is a file or ``name``
    is not a plain file name.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise InvalidParameterError(
            f"--name must be a plain file name (no folder). Got {name!r}.")
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InvalidParameterError(
            f"--out {str(folder)!r} is a file, not a folder; pass a folder (it is created "
            "if missing).")
    private, public = folder / name, folder / f"{name}.pub"
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise InvalidParameterError(
                f"{str(path)!r} already exists; a device's key is never overwritten. Pass "
                "another --out or --name, or remove the old pair first.")
    key = ec.generate_private_key(ec.SECP384R1())
    private_bytes = key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.OpenSSH,
                                      serialization.NoEncryption())
    public_line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                serialization.PublicFormat.OpenSSH)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_bytes)
        public.write_bytes(public_line + f" {name}\n".encode())
    except OSError as exc:
        raise InvalidParameterError(
            f"--out {str(folder)!r} cannot be written ({exc.strerror or exc}); pass a "
            "writable folder.") from None
    return private.absolute(), public.absolute()


def load_supernode_keys(source: str | Path,
                        option: str = "--supernode-keys") -> list[SupernodeKey]:
    """The public keys of the devices allowed to join, read from ``source``: a file of
    OpenSSH public key lines (``ecdsa-sha2-nistp384 AAAA... comment``; blank lines and
    ``#`` comments skipped, as in ``authorized_keys``) or a folder of such files named
    ``*.pub`` (what :func:`generate_supernode_key` writes).

    Refused, naming ``option``, the file and line: an unreadable path, a folder without
    ``*.pub`` files, no key at all, a line that is no OpenSSH public key (a private key
    above all: it stays on its device), a key that is not EC on a NIST curve (what Flower
    registers), and a key given twice (Flower registers a key once).
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(".pub") and p.is_file())
        if not files:
            raise InvalidParameterError(
                f"{option} {str(path)!r} is a folder without *.pub files; put each "
                f"device's public key there (NAME.pub), or pass a file of them; "
                f"{_KEYGEN_HINT}.")
    else:
        files = [path]
    keys: list[SupernodeKey] = []
    seen: dict[bytes, str] = {}
    for file in files:
        try:
            text = file.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise InvalidParameterError(
                f"{option} {str(file)!r} cannot be read ({exc.strerror or exc}); pass a "
                "readable file or folder of OpenSSH public keys.") from None
        if "PRIVATE KEY-----" in text:
            raise InvalidParameterError(
                f"{option} {str(file)!r} holds a private key; pass the device's public key "
                "(NAME.pub, one line 'ecdsa-sha2-nistp384 AAAA...'): the private key stays "
                "on the device.")
        for number, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{file}:{number}"
            try:
                key = serialization.load_ssh_public_key(line.encode())
            except (ValueError, UnsupportedAlgorithm) as exc:
                raise InvalidParameterError(
                    f"{option} {where} is not an OpenSSH public key ({exc}); each line "
                    f"must be one, 'ecdsa-sha2-nistp384 AAAA... [comment]': "
                    f"{_KEYGEN_HINT}.") from None
            if not _nist_curve(key):
                raise InvalidParameterError(
                    f"{option} {where} holds a key of type {_key_kind(key)}; Flower "
                    "authenticates SuperNodes by EC keys on a NIST curve (P-384: "
                    f"ecdsa-sha2-nistp384): {_KEYGEN_HINT}.")
            pem = key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)
            if pem in seen:
                raise InvalidParameterError(
                    f"{option} {where} is the same key as {seen[pem]}; each device needs "
                    "a key of its own (Flower registers a key once): drop the copy.")
            seen[pem] = where
            keys.append(SupernodeKey(where, pem))
    if not keys:
        raise InvalidParameterError(
            f"{option} {str(path)!r} holds no public key; pass the devices' OpenSSH public "
            f"keys (one a line, or NAME.pub files in a folder): {_KEYGEN_HINT}.")
    return keys


def check_auth_key(path: str | Path, option: str = "--auth-key") -> Path:
    """``path`` as an absolute path, once it is known to hold what ``flower-supernode
    --auth-supernode-private-key`` reads: an unencrypted OpenSSH EC private key on a NIST
    curve. Refused naming ``option`` and the file otherwise (a public key, a PEM key, an
    encrypted one, another kind of key)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise InvalidParameterError(
            f"{option} {str(file)!r} cannot be read ({exc.strerror or exc}); pass the "
            f"device's private key file: {_KEYGEN_HINT}.") from None
    try:
        key = serialization.load_ssh_private_key(data, password=None)
    except TypeError:
        raise InvalidParameterError(
            f"{option} {str(file)!r} is encrypted; the SuperNode reads its key without a "
            "passphrase, so pass an unencrypted one (ssh-keygen -p -N '' -f KEY removes "
            "it).") from None
    except (ValueError, UnsupportedAlgorithm):
        what = ("a public key" if data.lstrip().startswith((b"ecdsa-", b"ssh-"))
                else "a PEM key, not OpenSSH format" if b"-----BEGIN" in data
                else "no private key that can be read")
        raise InvalidParameterError(
            f"{option} {str(file)!r} holds {what}; pass the device's OpenSSH private key "
            f"(it begins '-----BEGIN OPENSSH PRIVATE KEY-----'): {_KEYGEN_HINT}.") from None
    if not _nist_curve(key):
        raise InvalidParameterError(
            f"{option} {str(file)!r} holds a key of type {_key_kind(key)}; Flower "
            f"authenticates SuperNodes by EC keys on a NIST curve (P-384): {_KEYGEN_HINT}.")
    return file.resolve()


def _loopback_tls(folder: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 and its key, made afresh in ``folder``
    (``link-cert.pem``, ``link-key.pem`` mode 0600), for a SuperLink that only this
    machine reaches but Flower must run with TLS (SuperNode authentication). Returns the
    certificate, which is its own CA."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "edgewise superlink")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "link-cert.pem", folder / "link-key.pem"
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def register_supernode_keys(address: str, ca: Path, keys: list[SupernodeKey]) -> list[int]:
    """Register ``keys`` with the SuperLink whose Control API is at ``address`` (over TLS,
    verified with ``ca``), as ``flwr supernode register`` does; their node ids, in order.
    ``RuntimeError`` naming the key and Flower's reason when one is refused."""
    import httpx
    from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.error import FlowerError

    ids: list[int] = []
    with ControlHttpClient.from_server_address(address, insecure=False,
                                               root_certificates=str(ca),
                                               interceptors=[]) as client:
        for key in keys:
            try:
                response = client.RegisterNode(RegisterNodeRequest(public_key=key.pem))
            except httpx.HTTPStatusError as exc:
                err = FlowerError.from_json(exc.response.text)
                why = (f"[{err.code}] {err.message}" if err
                       else f"HTTP {exc.response.status_code}: {exc.response.text[:300]}")
                raise RuntimeError(
                    f"The SuperLink refused to register the SuperNode key {key.origin}: "
                    f"{why}") from None
            except httpx.HTTPError as exc:
                raise RuntimeError(
                    f"The SuperNode key {key.origin} could not be registered with the "
                    f"SuperLink at {address} ({type(exc).__name__}: {exc})") from None
            if not response.node_id:
                raise RuntimeError(
                    f"The SuperLink did not register the SuperNode key {key.origin} (it "
                    "answered no node id)")
            ids.append(int(response.node_id))
    return ids


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def device_address(host: str, port: int, tls: TlsFiles | None = None) -> tuple[str, str]:
    """The ``--superlink`` address devices on other machines use for a SuperLink on
    ``host:port``, and a note on it (empty when ``host`` is that address already).

    For a wildcard ``host`` (``0.0.0.0``, ``::``), which no device can connect to: with TLS
    a name the certificate holds that is not loopback (a device verifies it by that name);
    else this machine's address on its default route or of its host name; else a
    placeholder, ``<this machine's address>``.

    >>> device_address("10.0.0.5", 9092)
    ('10.0.0.5:9092', '')
    """
    if host not in ("0.0.0.0", "::", ""):
        return _host_port(host, port), ""
    placeholder = f"<this machine's address>:{port}"
    if tls is not None:
        from cryptography import x509

        leaf = x509.load_pem_x509_certificates(tls.cert.read_bytes())[0]
        dns, ips = cert_names(leaf)
        dns = [d for d in dns if not is_loopback(d) and "*" not in d and " " not in d]
        addrs = [str(i) for i in ips if not i.is_loopback and not i.is_unspecified]
        # the subjectAltName's own names first: a common name (which counts only where it
        # names no DNS name) is often a label, not the address devices reach
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            san_dns = bool(san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            san_dns = False
        names = dns + addrs if san_dns else addrs + dns
        if not names:
            note = ("the certificate names only loopback addresses, so devices on other "
                    "machines cannot verify it; give the SuperLink a certificate for the "
                    "address they reach it at")
            return placeholder, note
        note = f"{names[0]} is a name the certificate holds; use the one devices reach it at"
        return _host_port(names[0], port), note
    addr = _machine_address()
    if addr is None:
        note = (f"--host {host or '0.0.0.0'} listens on every interface; put the address "
                "devices reach this machine at")
        return placeholder, note
    note = (f"{addr} is this machine's address on its default route; use the one devices "
            "reach it at if it differs")
    return _host_port(addr, port), note


def _machine_address() -> str | None:
    """This machine's non-loopback IPv4 address: the one its default route leaves from
    (a UDP socket connected nowhere sends nothing), else its host name's; ``None`` if none."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: never answered, only routed
        addr = str(s.getsockname()[0])
        if not is_loopback(addr) and addr != "0.0.0.0":
            return addr
    with contextlib.suppress(OSError):
        for addr in socket.gethostbyname_ex(socket.gethostname())[2]:
            if not is_loopback(addr):
                return str(addr)
    return None


def check_port_free(host: str, port: int) -> None:
    """Raise ``RuntimeError`` naming ``host:port`` when another program listens there (or
    the address cannot be bound), before a SuperLink is started on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = ("is already in use by another program" if exc.errno == errno.EADDRINUSE
                   else f"cannot be bound ({exc.strerror or exc})")
            raise RuntimeError(
                f"Port {port} on {host} {why}; stop that program or choose another --port."
            ) from None


#: TOML's short escapes in a basic string; every other control character is ``\uXXXX``.
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
                 "\f": "\\f", "\r": "\\r"}


def toml_string(s: str) -> str:
    r"""``s`` as a TOML basic string (double-quoted), which TOML reads back as ``s``.

    Characters outside ASCII are written as they are (the file is UTF-8): an escape of a
    character beyond U+FFFF as a UTF-16 surrogate pair, what ``json.dumps`` writes, is not
    TOML. The quote, the backslash and the control characters U+0000-U+001F and U+007F,
    which TOML forbids unescaped, are escaped. A lone surrogate (a file name's undecodable
    byte, as Python decodes it) is no Unicode character and cannot be written: refused.

    >>> print(toml_string('say "hi"\t\x7f to /srv/d-\U0001F680'))
    "say \"hi\"\t\u007F to /srv/d-🚀"
    """
    out = []
    for ch in s:
        code = ord(ch)
        if ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise InvalidParameterError(
                f"{s!r} holds the lone surrogate U+{code:04X} (a byte that is not UTF-8, as "
                "Python decodes a file name), which a TOML file cannot carry; rename it to "
                "valid UTF-8.")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return toml_string(str(v))


def app_pyproject(run_config: dict[str, Any]) -> str:
    """The ``pyproject.toml`` of the Flower app, with ``run_config`` as its defaults.

    >>> "num-server-rounds = 2" in app_pyproject({"num-server-rounds": 2})
    True
    """
    return _PYPROJECT.format(
        config="\n".join(f"{k} = {_toml_value(v)}" for k, v in run_config.items())
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERRORISH = re.compile(r"error|exception|failed|cannot|refused|denied|invalid", re.I)


def _last_error_line(text: str) -> str:
    """The line of a log's ``text`` that best says why its process ended: the last one that
    reads as an error (a traceback's last line, Flower's ``ERROR`` lines), else the last
    line; colour codes dropped, at most 300 characters ("" for an empty log).

    >>> _last_error_line("  File 'x.py', line 3\\nValueError: bad port\\nshutting down\\n")
    'ValueError: bad port'
    """
    lines = [" ".join(_ANSI.sub("", ln).split()) for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        return ""
    found = next((ln for ln in reversed(lines)
                  if _ERRORISH.search(ln) and not ln.startswith(("File ", "Traceback"))),
                 lines[-1])
    return found[:300]


#: A SuperNode its SuperLink forgot within this many seconds of joining counts as forgotten
#: at once; :func:`run_supernode` gives up after :data:`REJOIN_TRIES` such in a row.
REJOIN_QUICK_S = 60.0
REJOIN_TRIES = 3
#: What a SuperNode prints when it joined (Flower 1.41) and when its SuperLink refuses its
#: node id (HTTP 401 on its heartbeat or pull: the SuperLink no longer knows that node).
_JOINED = "SuperNode ID:"
_FORGOTTEN = ("401 Unauthorized", "Invalid SuperNode authentication")


def run_supernode(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run a device's ``flower-supernode`` (``cmd``, from :func:`supernode_command`) until
    it is stopped, its output passed on to stderr; return the exit status ``edgewise
    federate client`` ends with.

    A SuperLink started afresh (a server restarted, ``--resume`` included) no longer knows
    the node ids it gave out: Flower's SuperNode then gets HTTP 401 and ends itself with
    status 0, so a service manager restarting the device on failure never brought it back.
    Here a SuperNode that had joined and ends without being asked to is started again, and
    joins the SuperLink afresh under a new node id (its privacy ledger is the same file, so
    its budget holds), with a ``warning:`` line; one forgotten within
    :data:`REJOIN_QUICK_S` seconds of each of :data:`REJOIN_TRIES` joins in a row gives up
    with an ``error:`` line and status 1. A SuperNode that ends before joining ends this
    with its status (1 for 0), an ``error:`` line saying so. SIGTERM, SIGINT and SIGHUP are
    passed on to the SuperNode, and end this with its status (0 for a graceful stop).
    """
    where = cmd[cmd.index("--superlink") + 1] if "--superlink" in cmd else "the SuperLink"
    stopping: list[int] = []
    child: list[subprocess.Popen[str]] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        if child and child[0].poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child[0].send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    import threading

    quick = 0
    while True:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1)
        child[:] = [proc]
        seen: dict[str, float] = {}  # "joined": when, "forgotten": 1

        def relay(out: Any = proc.stdout, seen: dict[str, float] = seen) -> None:
            for line in out:
                sys.stderr.write(line)
                sys.stderr.flush()
                if "joined" not in seen and _JOINED in line:
                    seen["joined"] = time.monotonic()
                elif "joined" in seen and any(m in line for m in _FORGOTTEN):
                    seen["forgotten"] = 1.0

        reader = threading.Thread(target=relay, daemon=True)
        reader.start()
        rc = proc.wait()
        # what it printed last; a SuperExec it started may hold the pipe a little longer
        reader.join(timeout=10.0)
        joined_at, forgotten = seen.get("joined"), "forgotten" in seen
        if stopping:
            return 0 if rc in (0, -stopping[0]) else (rc if rc > 0 else 128 - rc)
        if joined_at is None:
            print(f"error: the SuperNode ended (status {rc}) before it joined the SuperLink "
                  f"at {where} (its output is above); check --superlink, --tls-ca and "
                  "--auth-key, and that the server runs.", file=sys.stderr, flush=True)
            return rc if rc > 0 else 1
        if not forgotten and rc != 0:
            print(f"error: the SuperNode connected to {where} exited with status {rc} (its "
                  "output is above).", file=sys.stderr, flush=True)
            return rc if rc > 0 else 128 - rc
        why = ("the SuperLink at {where} no longer knows this device (HTTP 401 for its node "
               "id: its server was restarted, --resume included, and forgot the devices "
               "that had joined)" if forgotten else
               "the SuperNode connected to {where} ended on its own (status 0), as "
               "Flower's does when its SuperLink no longer knows it (a restarted server, "
               "--resume included)").format(where=where)
        quick = quick + 1 if time.monotonic() - joined_at < REJOIN_QUICK_S else 1
        if quick > REJOIN_TRIES:
            print(f"error: {why}, and it was forgotten within {REJOIN_QUICK_S:g} s of each of "
                  f"its last {REJOIN_TRIES} joins; giving up. Check that one server runs at "
                  f"{where}, then start this device again.", file=sys.stderr, flush=True)
            return 1
        print(f"warning: {why}; starting its SuperNode again to join afresh.",
              file=sys.stderr, flush=True)
        time.sleep(1.0)


def _env(flwr_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["FLWR_HOME"] = str(flwr_home)
    src = str(Path(edgewise.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def check_ledger_path(path: str | Path, name: str) -> None:
    """Refuse a ledger path Flower's node config cannot carry (a quote or a line break),
    naming it ``name``."""
    if any(c in str(path) for c in "'\n\r"):
        raise InvalidParameterError(
            f"{name} must not hold a quote or a line break (Flower's node config cannot "
            f"carry it). Got {str(path)!r}.")


def supernode_command(superlink: str, partition_id: int, num_partitions: int,
                      port: int, attack: str = "", max_epsilon: float = 0.0,
                      ledger: str | Path | None = None,
                      root_certificates: str | Path | None = None,
                      auth_key: str | Path | None = None) -> list[str]:
    """The ``flower-supernode`` command line of one device (``max_epsilon`` > 0: the most
    record-level ε the device will spend, whatever the server asks, checked against its
    privacy ``ledger`` file: :mod:`edgewise.federated.ledger`). With ``root_certificates``
    (the PEM CA certificate that signed the SuperLink's) it connects over TLS and verifies
    the SuperLink with it (``--root-certificates``); without, unencrypted (``--insecure``).
    With ``auth_key`` (the device's OpenSSH private key, :func:`check_auth_key`) it signs
    its Fleet calls with it (``--auth-supernode-private-key``), which a SuperLink with
    SuperNode authentication needs; Flower allows it over TLS only, so it needs
    ``root_certificates``.

    >>> cmd = supernode_command("127.0.0.1:9092", 0, 3, 9100, max_epsilon=8.0,
    ...                         ledger="/var/lib/edgewise/federated/privacy-ledger-0.json")
    >>> cmd[cmd.index("--node-config") + 1]
    "partition-id=0 num-partitions=3 max-dp-epsilon=8.0 privacy-ledger='/var/lib/edgewise/federated/privacy-ledger-0.json'"
    """  # noqa: E501
    node_config = f"partition-id={partition_id} num-partitions={num_partitions}"
    if max_epsilon > 0:
        node_config += f" max-dp-epsilon={float(max_epsilon)}"
    if ledger:
        check_ledger_path(ledger, "The privacy ledger path")
        node_config += f" privacy-ledger='{ledger}'"
    if attack:
        node_config += f' attack="{attack}"'
    if auth_key and not root_certificates:
        raise InvalidParameterError(
            f"--auth-key {str(auth_key)!r} needs --tls-ca too: Flower signs a SuperNode's "
            "calls over TLS only (the signature covers a timestamp, which anyone reading "
            "unencrypted traffic could replay); give the SuperLink's CA certificate.")
    exe = shutil.which("flower-supernode") or "flower-supernode"
    tls = ["--root-certificates", str(root_certificates)] if root_certificates else []
    auth = ["--auth-supernode-private-key", str(auth_key)] if auth_key else []
    return [exe, *([] if tls else ["--insecure"]), "--superlink", superlink,
            "--port", str(port), "--node-config", node_config,
            "--max-retries", "30", "--max-wait-time", "60", *tls, *auth]


class LocalFleet:
    """A SuperLink, its gate and ``clients`` SuperNodes as separate processes on loopback.

    Parameters
    ----------
    clients
        Number of SuperNodes (devices).
    workdir
        Where logs, results and Flower's state go (a temporary folder by default).
    attacks
        Optional ``{partition_id: attack}`` (see ``client_app.ATTACKS``).
    spawn_nodes
        Start the SuperNodes here (``False``: devices connect from elsewhere with
        ``edgewise federate client``).
    port, host
        Where devices reach the SuperLink (default: a free port on 127.0.0.1): the gate
        (:mod:`edgewise.federated.fleet_gate`) listens there and forwards the Fleet API
        only; the SuperLink itself listens on 127.0.0.1 at :attr:`link_port`, where this
        machine alone reaches it (and submits runs).
    max_epsilon
        Each SuperNode's own record-level ε limit (node config ``max-dp-epsilon``; 0: none),
        held against its privacy ledger ``workdir/privacy-ledger-<partition>.json``
        (:mod:`edgewise.federated.ledger`), which survives a restarted SuperNode.
    tls
        The SuperLink's certificate, key and CA (:func:`check_tls`): the gate then serves
        TLS only, and the SuperNodes started here verify it with the CA. ``None`` (the
        default): unencrypted, as Flower's ``--insecure`` mode.
    supernode_keys
        The public keys of the devices allowed to join (:func:`load_supernode_keys`; needs
        ``tls``): the SuperLink runs with Flower's ``--enable-supernode-auth`` (and TLS on
        loopback, which Flower requires for it) and they are registered with it before the
        gate opens; a SuperNode with any other key, or none, is refused. ``None`` (the
        default): any SuperNode that reaches the gate may join.
    auth_keys
        ``{partition_id: private key file}`` of the SuperNodes started here (their
        ``--auth-supernode-private-key``).

    Use as a context manager; :meth:`run` submits one federated run and returns its
    ``result.json``.
    """

    def __init__(self, clients: int = 3, workdir: str | Path | None = None,
                 attacks: dict[int, str] | None = None, spawn_nodes: bool = True,
                 port: int | None = None, host: str = "127.0.0.1",
                 max_epsilon: float = 0.0, tls: TlsFiles | None = None,
                 supernode_keys: list[SupernodeKey] | None = None,
                 auth_keys: dict[int, Path] | None = None) -> None:
        if clients < 1:
            raise InvalidParameterError(
                f"The 'clients' parameter of LocalFleet must be >= 1. Got {clients} instead."
            )
        if supernode_keys is not None and not supernode_keys:
            raise InvalidParameterError(
                "LocalFleet got supernode_keys=[]: no device could join. Pass the devices' "
                "public keys, or None for no SuperNode authentication.")
        if supernode_keys and tls is None:
            raise InvalidParameterError(
                "--supernode-keys needs --tls-cert and --tls-key: Flower signs a SuperNode's "
                "calls with its key only over TLS (the signature covers a timestamp, valid "
                "for minutes, which anyone reading unencrypted traffic could replay).")
        self.clients = clients
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edgewise-fl-")).absolute()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.attacks = attacks or {}
        self.max_epsilon = max_epsilon
        self.tls = tls
        self.supernode_keys = list(supernode_keys or [])
        self.auth_keys = dict(auth_keys or {})
        #: node ids the SuperLink gave the registered keys, in order (set at :meth:`start`)
        self.registered: list[int] = []
        self.flwr_home = self.workdir / "flwr-home"
        self.flwr_home.mkdir(exist_ok=True)
        self.port = port or free_port()
        self.host = host
        #: where this machine's processes reach the gate, as devices do (``host``; loopback
        #: for 0.0.0.0)
        self.address = connect_address(host, self.port)
        #: the SuperLink's own port, on 127.0.0.1 only (chosen at :meth:`start`)
        self.link_port = 0
        self.link: subprocess.Popen[bytes] | None = None
        self.gate: subprocess.Popen[bytes] | None = None
        self.spawn_nodes = spawn_nodes
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        self._lock_fd: int | None = None

    # -- the work folder -------------------------------------------------------------
    def lock(self) -> LocalFleet:
        """Hold an exclusive ``flock`` on :data:`LOCK_NAME` in :attr:`workdir` until
        :meth:`release` (or :meth:`stop`, or this process's end, however it ends): the
        SuperLink's database, the run's checkpoint, privacy ledger and result live there, and
        a second fleet started on them deleted the first's database under its running
        SuperLink and overwrote its results. Refused with :class:`FleetBusyError`, in one
        line naming the folder and the holder (pid, devices' port, since when) while another
        process holds it. Held already: nothing more. Where ``flock`` is missing (not POSIX,
        some NFS) nothing is held."""
        if self._lock_fd is not None:
            return self
        path = self.workdir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            import fcntl  # POSIX; elsewhere (ImportError) the folder runs unguarded

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = " ".join(os.pread(fd, 200, 0).decode("utf-8", "replace").split())
            os.close(fd)
            raise FleetBusyError(
                f"{self.workdir} is in use by another federated server "
                f"({holder or 'holder unknown'}; it holds {path}): a second one there would "
                "delete the SuperLink database under the running one and overwrite its "
                "checkpoint, privacy ledger and result. Stop that server first, or give this "
                "one another --data-dir.") from None
        except (OSError, ImportError):
            os.close(fd)
            return self
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, devices' port {self.port}, since {since}\n"
                  .encode(), 0)
        self._lock_fd = fd
        return self

    def release(self) -> None:
        """Let go of :meth:`lock` (nothing when not held)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor drops the flock

    # -- processes -------------------------------------------------------------------
    def _spawn(self, cmd: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / log_name, "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                env=_env(self.flwr_home), cwd=self.workdir,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def start(self) -> LocalFleet:
        """Start the SuperLink on loopback, then the gate on ``host:port``, wait until the
        gate answers through to the SuperLink, then start the SuperNodes. If any step fails,
        whatever was started is stopped before the error propagates (a ``with`` block's
        ``__exit__`` never runs when ``__enter__`` raises). The work folder is locked first
        (:meth:`lock`): :class:`FleetBusyError` while another process runs a fleet there."""
        self.lock()
        check_port_free(self.host, self.port)
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> LocalFleet:
        # A fresh link state each time (under the folder's lock: never under a running
        # SuperLink): a kept one would hand out the stopped server's runs and messages again
        (self.workdir / "superlink.db").unlink(missing_ok=True)
        self.link_port = free_port()
        link = f"127.0.0.1:{self.link_port}"
        # SuperNode authentication: Flower refuses it on an --insecure SuperLink, so the
        # SuperLink serves TLS on loopback too, with a certificate made here for 127.0.0.1
        # that this machine's processes (the gate, the run submission, the SuperExec) trust
        link_cert = _loopback_tls(self.workdir) if self.supernode_keys else None
        # the run submission (flwr run) goes straight to the SuperLink, over loopback
        trust = (f"root-certificates = {toml_string(str(link_cert))}\n" if link_cert
                 else "insecure = true\n")
        (self.flwr_home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n[superlink.local]\n'
            f'address = {toml_string(link)}\n{trust}', encoding="utf-8"
        )
        # Loopback only: Flower serves its Control API (run submission, which Flower OSS
        # does not authenticate) and runtime API on this port too, so only this machine may
        # reach it. Devices reach the gate, which forwards the Fleet API alone and
        # terminates their TLS.
        link_tls = (["--ssl-certfile", str(link_cert),
                     "--ssl-keyfile", str(self.workdir / "link-key.pem"),
                     "--ssl-ca-certfile", str(link_cert), "--enable-supernode-auth"]
                    if link_cert else ["--insecure"])
        self.link = self._spawn(
            [shutil.which("flower-superlink") or "flower-superlink", *link_tls,
             "--host", "127.0.0.1", "--port", str(self.link_port),
             "--disable-runtime-dependency-installation",
             "--database", str(self.workdir / "superlink.db")], "superlink.log")
        self._wait_listening(self.link, "127.0.0.1", self.link_port, "SuperLink",
                             "superlink.log")
        if link_cert:  # before the gate opens: no device finds the fleet without its keys
            self.registered = register_supernode_keys(link, link_cert, self.supernode_keys)
        gate_tls = (["--ssl-certfile", str(self.tls.cert), "--ssl-keyfile", str(self.tls.key)]
                    if self.tls else [])
        upstream = (["--upstream", f"https://{link}", "--upstream-ca", str(link_cert)]
                    if link_cert else ["--upstream", f"http://{link}"])
        self.gate = self._spawn(
            [sys.executable, "-m", "edgewise.federated.fleet_gate", "--host", self.host,
             "--port", str(self.port), *upstream, *gate_tls],
            "fleet-gate.log")
        self._wait_gate(self.gate)
        if self.spawn_nodes:
            for i in range(self.clients):
                self.start_node(i)
        return self

    def _wait_listening(self, proc: subprocess.Popen[bytes], host: str, port: int,
                        what: str, log: str, timeout: float = 60.0) -> None:
        """Wait until ``proc`` accepts connections on ``host:port``; ``RuntimeError`` with
        its log's tail if it exits first, ``TimeoutError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    return
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(self._exited(proc, what, log)) from None
                time.sleep(0.2)
        raise TimeoutError(f"The {what} did not listen on port {port} within {timeout:.0f} s.")

    def _exited(self, proc: subprocess.Popen[bytes], what: str, log: str) -> str:
        """Why ``proc`` (the ``what``) ended before it served: a first line that says so,
        with the last error line of its ``log`` and where that log is, then the log's tail
        (the CLI prints the first line alone; the tail began mid-line)."""
        tail = self._tail(log)
        last = _last_error_line(tail)
        return (f"The {what} exited (status {proc.returncode}) before it served"
                + (f": {last}" if last else ", writing nothing to its log")
                + f"; log: {self.workdir / log}\nLast log lines:\n{tail}")

    def _wait_gate(self, gate: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
        """Wait until the ``gate`` process answers ``/health`` from the SuperLink behind it,
        over TLS verified with the CA when the fleet has TLS (as a device will)."""
        import ssl

        import httpx

        self._wait_listening(gate, connect_host(self.host), self.port, "gate",
                             "fleet-gate.log", timeout)
        scheme = "https" if self.tls else "http"
        url = f"{scheme}://{self.address}/health"
        verify: ssl.SSLContext | bool = (ssl.create_default_context(cafile=str(self.tls.ca))
                                         if self.tls else False)
        deadline = time.monotonic() + timeout
        why = ""
        while time.monotonic() < deadline:
            try:
                status = httpx.get(url, verify=verify, timeout=5.0, trust_env=False).status_code
                if status == 200:
                    return
                why = f"it answered {status}"
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
                if "CERTIFICATE_VERIFY_FAILED" in why:
                    break
            if gate.poll() is not None:
                raise RuntimeError(self._exited(gate, "gate", "fleet-gate.log"))
            time.sleep(0.2)
        raise RuntimeError(
            f"The gate at {url} did not answer /health from the SuperLink ({why}); devices "
            f"could not reach it either. Logs: {self.workdir / 'fleet-gate.log'}, "
            f"{self.workdir / 'superlink.log'}.")

    def start_node(self, partition_id: int) -> None:
        """Start (or restart) the SuperNode of device ``partition_id``."""
        ledger = (self.workdir / f"privacy-ledger-{partition_id}.json").resolve() \
            if self.max_epsilon > 0 else None
        cmd = supernode_command(self.address, partition_id, self.clients,
                                free_port(), self.attacks.get(partition_id, ""),
                                max_epsilon=self.max_epsilon, ledger=ledger,
                                root_certificates=self.tls.ca if self.tls else None,
                                auth_key=self.auth_keys.get(partition_id))
        self.nodes[partition_id] = self._spawn(cmd, f"supernode-{partition_id}.log")

    def stop_node(self, partition_id: int) -> None:
        """Stop device ``partition_id`` (a dropout)."""
        self._kill(self.nodes.pop(partition_id))

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        self._kill_all([proc])

    @staticmethod
    def _kill_all(procs: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM the process groups (started by this fleet) of ``procs`` all at once, then
        wait for each; SIGKILL a group still there after 10 s."""
        live = [p for p in procs if p.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in live:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop every process this fleet started: the SuperNodes and any run together (each
        SuperNode takes 1-2 s to say goodbye), then the gate and the SuperLink they say it
        to."""
        links = [p for p in (self.gate, self.link) if p is not None]
        self._kill_all([p for p in reversed(self.procs) if p not in links])
        self._kill_all(links)
        self.release()

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _tail(self, name: str, n: int = 3000) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    # -- runs ------------------------------------------------------------------------
    def run(self, run_config: dict[str, Any], timeout: float = 300.0) -> dict[str, Any]:
        """Submit one run of the Edgewise Flower app and wait for its ``result.json``.

        Raises :class:`~edgewise.federated.server_app.FederatedRunError` with the
        ServerApp's reason when the run failed (its ``error.json``; nothing registered),
        and ``RuntimeError`` when it produced neither within ``timeout`` seconds.
        """
        out = Path(run_config.get("out-dir") or self.workdir / "out")
        config = {**RUN_DEFAULTS, "num-nodes": self.clients,
                  "min-available-nodes": self.clients}
        config.update(run_config)
        config["out-dir"] = str(out)
        app_dir = self.workdir / "app"
        app_dir.mkdir(exist_ok=True)
        (app_dir / "pyproject.toml").write_text(app_pyproject(config), encoding="utf-8")
        result, error = out / "result.json", out / "error.json"
        result.unlink(missing_ok=True)
        error.unlink(missing_ok=True)
        code = (
            "from flwr.cli.run.run import run\n"
            f"run(app={str(app_dir)!r}, superlink=None, federation=None, "
            "run_config_overrides=None, federation_config_overrides=None, stream=True, "
            "output_format='default')\n"
        )
        with open(self.workdir / "run.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=log,
                                    stderr=subprocess.STDOUT, env=_env(self.flwr_home),
                                    cwd=self.workdir, start_new_session=True)
            self.procs.append(proc)
            deadline = time.monotonic() + timeout
            exited: int | None = None
            while time.monotonic() < deadline and not result.exists() and not error.exists():
                if proc.poll() is not None and not result.exists():
                    time.sleep(1.0)  # the ServerApp may still be writing
                    if not result.exists() and not error.exists():
                        exited = proc.returncode
                        break
                time.sleep(0.3)
            self._kill(proc)
        if error.exists() and not result.exists():
            from edgewise.federated.server_app import FederatedRunError

            try:
                why = str(json.loads(error.read_text())["error"])
            except (OSError, ValueError, KeyError):
                why = error.read_text(errors="replace")
            raise FederatedRunError(why)
        if not result.exists() and exited is not None:
            tail = self._tail("run.log")
            last = next((ln.strip() for ln in reversed(tail.splitlines()) if ln.strip()), "")
            raise RuntimeError(
                f"The run exited (status {exited}) without a result or an error report"
                + (f"; its last log line: {last[:300]}" if last else "")
                + f"\nLast log lines:\n{tail}"
            )
        if not result.exists():
            raise RuntimeError(
                f"Federated run produced no result within {timeout:.0f} s. "
                f"Last log lines:\n{self._tail('run.log')}"
            )
        return dict(json.loads(result.read_text()))


if __name__ == "__main__":  # `edgewise federate client` execs into this
    if sys.argv[1:2] != ["supernode"] or len(sys.argv) < 3:
        sys.exit("usage: python -m edgewise.federated.deploy supernode FLOWER_SUPERNODE_ARGS...")
    sys.exit(run_supernode(sys.argv[2:]))
