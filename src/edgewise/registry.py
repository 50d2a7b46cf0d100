"""Model registry: versions, Ed25519-signed release manifests, rollout to devices and groups.

A *model version* is a blob (exported C sources, an ONNX graph, a pickled detector…) with
metadata: what it was trained on, its metrics, its format, its sha256 and size. A *release*
sends one version to one target (``"device:<id>"`` or ``"group:<name>"``) and is described by
a **manifest** that binds the model's hash and size, a monotonic release counter (separate from
the semantic version), the target, an expiry time and the signer's key id. The manifest is
signed with the registry's Ed25519 key, made under the data directory (private key mode 0600)
when a registry that never had one first needs it (the gateway's first start, the first rollout,
``edgewise registry pubkey``); agents get the public key at enrolment. Reading a registry
(listing, serving releases and blobs to agents) never makes a key. A registry whose key was
issued (it holds signed releases, or ``signing_key.pub``) but whose private half is gone refuses
to publish and sign (:class:`SignatureError`, reason ``"key_lost"``) rather than make a new key
that no agent trusts; :meth:`Registry.new_key` replaces a lost key on purpose. A
``signing_key.pem`` that cannot be read or holds no Ed25519 key (damaged) is treated alike
(reason ``"bad_key"``): the registry opens, lists and serves its releases, and refuses to sign.

:func:`verify` is what an agent runs before installing; it raises :class:`SignatureError` with
one of these ``reason`` values (python-tuf's update attacks, one test each):

==================  =================================================================
``unknown_key``     signed by a key the agent does not trust
``tampered``        manifest signature invalid, or payload hash differs (bit flip)
``mix_and_match``   payload is another release's model under this manifest
``endless_data``    payload longer than the manifest says (reading stops at size + 1)
``wrong_device``    the manifest targets another device or group
``expired``         the manifest's expiry has passed (freeze attack)
``rollback``        release counter older than the installed one
``replay``          the installed release again (callers log it and do nothing)
==================  =================================================================

Going back to an older model is an explicit, signed *rollback order*: a new release (higher
counter) of ``kind="rollback"`` whose payload is the older model. :meth:`Registry.rollout`
enforces it per model for every device a release reaches: a version published before one that
a device of the target can already receive (the newest release of the model to the target, to
the device itself or to any group it is in, per the device groups of the credentials) is refused
unless it is a rollback order, and a rollback order for a version that is older for none of them
is refused. Releases to targets that share no device are independent. Versions are ordered by
when they were published on this registry: a publish counter (:attr:`ModelVersion.seq`) that
only grows, never the host's clock (a clock stepped back made the newer version "older").
A device's own rollback order (to ``device:<id>``) holds against its groups: a group release
that would move a member off it to a newer version is refused unless it is rolled out with
``keep_rollbacks=True`` (the order is signed again in the same step).

Changing a device's groups never hands it an older version of a model without a signed
rollback order either: :meth:`Registry.check_group_change` (run by
:meth:`edgewise.security.Security.set_device_groups`) refuses a change after which the newest
release of a model the device is offered would be of a version published before the one it is
offered now, naming the release and the rollout or rollback order to sign first. A device that
leaves the last target offering it a model keeps that version as its floor: later releases of
the model that reach it are checked against it as against its own releases.

>>> import tempfile
>>> reg = Registry(tempfile.mkdtemp())
>>> v = reg.publish("ewz", "1.0.0", b"model bytes", format="pickle", trained_on="NAB")
>>> rel = reg.rollout("ewz", "1.0.0", "device:pump-1")
>>> m = verify(rel.manifest_bytes, rel.signature, b"model bytes",
...            trusted_keys={reg.key_id: reg.public_key_bytes}, device_id="pump-1")
>>> (m.release, m.version, m.size)
(1, '1.0.0', 11)
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import os
import sqlite3
import stat
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgewise._private import create_private_once, make_private, replace_atomically
from edgewise._sqlite import write_transaction
from edgewise.errors import InvalidParameterError, PayloadError, SignatureError
from edgewise.telemetry import validate_device_id

__all__ = [
    "FORMAT_ALIASES",
    "LATE_PUBLISH_NOTE",
    "LATE_ROLLOUT_NOTE",
    "MAX_EXPIRY_DAYS",
    "MAX_MODEL_BYTES",
    "MAX_NAME_BYTES",
    "MAX_TRAINED_ON_BYTES",
    "MAX_VERSION_BYTES",
    "MIN_EXPIRY_DAYS",
    "MODEL_FORMATS",
    "REASONS",
    "Artifact",
    "Manifest",
    "ModelVersion",
    "Registry",
    "Release",
    "SignedArtifact",
    "SigningKey",
    "check_expires_days",
    "check_lengths",
    "key_id_of",
    "load_key",
    "load_or_create_key",
    "model_format_of",
    "publish_audited",
    "sign",
    "unaudited_releases",
    "unaudited_versions",
    "verify",
]

REASONS = (
    "unknown_key",
    "tampered",
    "mix_and_match",
    "endless_data",
    "wrong_device",
    "expired",
    "rollback",
    "replay",
)
DEFAULT_EXPIRY_S = 30 * 24 * 3600
MAX_EXPIRY_DAYS = 3650  # ten years; a manifest that outlives that is one nobody will re-sign
#: The shortest manifest lifetime an operator may sign (REST and CLI): one hour. A release must
#: outlive the time its devices need to fetch it: an agent asks every ``--update-interval``
#: (30 s by default) and backs off while the gateway is away, and a device clock may run ahead
#: of the gateway's by as much as the gateway accepts for readings (5 minutes), which shortens
#: the lifetime that device sees. One hour is twelve times that skew; anything shorter risks
#: a release that is expired on arrival and that every device refuses.
MIN_EXPIRY_S = 3600
MIN_EXPIRY_DAYS = MIN_EXPIRY_S / 86400
#: The longest model name and version :meth:`Registry.publish` takes, in bytes of UTF-8.
#: Nothing bounded them: a 2,000,000-character name was published, and every release of it
#: signed a 2 MB manifest that each device was offered (2.7 MB of JSON each update check) and
#: kept twice (the agent's ``current.json`` and each of its 20 ``history.json`` entries), the
#: listing (``registry list``, ``GET /v1/registry``) carried it whole, and a rollout of it over
#: HTTP was refused as too large a body (413). 128 and 64 bytes keep a name, a version and a
#: separator within 255 bytes (a file name, NAME_MAX) with room to spare, and far exceed any
#: real name ("ewz-line-a-pumps") or version ("2024.06.1-rc.3+build.20240601").
MAX_NAME_BYTES = 128
MAX_VERSION_BYTES = 64
#: The largest model :meth:`Registry.publish` takes, in bytes: what an edge agent installs at
#: most (:mod:`edgewise.edge.agent` imports it). A larger model was published and signed, and
#: every agent it was released to refused it as ``too_large`` without fetching it.
MAX_MODEL_BYTES = 256 * 1024 * 1024
#: The longest ``trained_on`` :meth:`Registry.publish` takes, in bytes of UTF-8. It is signed
#: into every release manifest of the version, which each device is offered at each update
#: check (every 30 s by default) and keeps in its ``current.json`` and in each of its 20
#: ``history.json`` entries: unbounded, a 5 MB ``trained_on`` made each manifest 5 MB (over
#: 100 MB kept per device). A federated run stores its metadata there as JSON (privacy
#: accounting, normaliser statistics, the per-round evaluation), tens of KB for long runs;
#: 256 KiB leaves such a run room several times over while a device keeps at most about
#: 5 MB of manifests. A version published with a longer one before there was a limit loads,
#: releases and may be published again (its repair) as before.
MAX_TRAINED_ON_BYTES = 256 * 1024
#: The model formats :meth:`Registry.publish` records (what ``edgewise registry publish
#: --format`` takes); an edge agent runs ``pickle`` (its ``AGENT_FORMATS``), and compares
#: formats exactly, so a format is recorded lower case: ``"PICKLE"`` was published as such
#: and refused by every agent as ``unsupported_format``.
MODEL_FORMATS = ("bin", "c", "npz", "npz-state-dict", "onnx", "pickle")
#: Other names of a format that :meth:`Registry.publish` records as the format they name.
FORMAT_ALIASES = {"pkl": "pickle"}
_LIMITS = {"name": MAX_NAME_BYTES, "version": MAX_VERSION_BYTES}
_CHUNK = 64 * 1024


def check_expires_days(days: float, name: str = "expires_days") -> float:
    """Return ``days`` if it is a manifest lifetime a rollout may sign, else raise
    :class:`InvalidParameterError` naming ``name``: at least :data:`MIN_EXPIRY_DAYS` (one
    hour: an expired release is refused by every device, and one that expires before its
    devices can fetch it is of use to none; see :data:`MIN_EXPIRY_S`) and at most
    :data:`MAX_EXPIRY_DAYS`.

    >>> check_expires_days(30), check_expires_days(1 / 24)
    (30.0, 0.041666666666666664)
    >>> check_expires_days(0, "--expires-days")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --expires-days must be a number of days in (0, 3650]. Got 0 instead.
    >>> check_expires_days(1e-9, "--expires-days")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --expires-days must be at least one hour (0.04167 days): a release that expires sooner may expire before its devices fetch it, and every device refuses an expired release. Got 1e-09 instead.
    """  # noqa: E501
    ok = isinstance(days, int | float) and not isinstance(days, bool)
    if not ok or not math.isfinite(days) or not 0 < days <= MAX_EXPIRY_DAYS:
        raise InvalidParameterError(
            f"{name} must be a number of days in (0, {MAX_EXPIRY_DAYS}]. Got {days!r} instead."
        )
    if days < MIN_EXPIRY_DAYS:
        raise InvalidParameterError(
            f"{name} must be at least one hour ({MIN_EXPIRY_DAYS:.4g} days): a release that "
            "expires sooner may expire before its devices fetch it, and every device refuses "
            f"an expired release. Got {days!r} instead."
        )
    return float(days)


def key_id_of(public_key_raw: bytes) -> str:
    """Key id: the first 16 hex digits of the sha256 of the raw 32-byte public key.

    >>> key_id_of(bytes(32))
    '66687aadf862bd77'
    """
    return hashlib.sha256(public_key_raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and its id."""

    private: Ed25519PrivateKey

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte public key, what agents are given at enrolment."""
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def key_id(self) -> str:
        """See :func:`key_id_of`."""
        return key_id_of(self.public_key_bytes)


KEY_FILE = "signing_key.pem"
PUBLIC_KEY_FILE = "signing_key.pub"
#: Bytes of ``signing_key.pem`` read at most (the registry's is 119).
_KEY_FILE_MAX = 64 * 1024


def load_key(key_dir: str | os.PathLike[str]) -> SigningKey | None:
    """Load ``signing_key.pem`` from ``key_dir``; ``None`` if there is none. Never makes one.

    >>> import tempfile
    >>> load_key(tempfile.mkdtemp()) is None
    True
    """
    path = Path(key_dir) / KEY_FILE
    try:
        # without blocking, and only a file: a FIFO put in its place hung every open
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SignatureError(f"Key file {str(path)!r} is no regular file (a FIFO, a "
                                 "device, a folder): the registry writes its key to a file.",
                                 "bad_key")
        pem = f.read(_KEY_FILE_MAX + 1)
    if len(pem) > _KEY_FILE_MAX:
        raise SignatureError(f"Key file {str(path)!r} is larger than {_KEY_FILE_MAX} bytes; an "
                             "Ed25519 key in PEM, as the registry writes it, is 119.", "bad_key")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"Key file {str(path)!r} is not an Ed25519 private key in PEM "
                             "(PKCS8, unencrypted), as the registry writes it.", "bad_key")
    return SigningKey(key)


def _make_key_private(path: Path, mode: int) -> None:
    """Make the signing key file ``path``, found with ``mode`` readable by group or others
    (restored from a backup with ``cp`` or ``tar`` under umask 022), mode 0600, and log a
    warning naming it, its mode and what to do: whoever could read it can sign models every
    agent accepts. One that cannot be changed (another user's, a read-only copy) is warned
    about all the same."""
    mode = stat.S_IMODE(mode)
    risk = ("whoever could read it can sign models every agent accepts; if someone else may "
            f"have read it, move it away and run 'edgewise registry new-key' (then give every "
            f"agent the new {PUBLIC_KEY_FILE}, --trust-key)")
    try:
        os.chmod(path, 0o600)
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "registry: signing key %s can be read by other users (mode %04o, not 0600) and "
            "could not be made 0600 (%s): run 'chmod 600 %s'; %s.", path, mode,
            exc.strerror or exc, path, risk)
        return
    logging.getLogger(__name__).warning(
        "registry: signing key %s could be read by other users (mode %04o); it is made 0600, "
        "the owner's only. %s.", path, mode, risk[0].upper() + risk[1:])


def _blob_problem(path: Path, sha256: str, size: int) -> str | None:
    """``None`` if ``path`` holds the ``size`` bytes whose sha256 is ``sha256``; else what is
    wrong with it (``"missing"``, ``"damaged"``).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "b"
    >>> _blob_problem(p, hashlib.sha256(b"abc").hexdigest(), 3)
    'missing'
    >>> _ = p.write_bytes(b"ab")
    >>> _blob_problem(p, hashlib.sha256(b"abc").hexdigest(), 3)
    'damaged'
    """
    try:
        if path.stat().st_size != size:
            return "damaged"
        h = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK * 16):
                h.update(chunk)
    except FileNotFoundError:
        return "missing"
    return None if h.hexdigest() == sha256 else "damaged"


def _write_public_file(d: Path, key: SigningKey) -> None:
    """Write ``signing_key.pub`` for ``key`` atomically (mode 0644: it is public)."""
    replace_atomically(d / PUBLIC_KEY_FILE, base64.b64encode(key.public_key_bytes) + b"\n",
                       mode=0o644, exact=True)


def load_or_create_key(key_dir: str | os.PathLike[str]) -> SigningKey:
    """Load ``signing_key.pem`` from ``key_dir``, creating it (mode 0600) if there is none.

    The public key is written beside it as ``signing_key.pub`` (base64 of the raw 32 bytes).
    :class:`Registry` does not call this blindly: it makes a key only for a registry that never
    had one (see :meth:`Registry.signing_key`).

    Safe across processes: a candidate key is written with
    :func:`edgewise._private.create_private_once` (a temporary file linked to
    ``signing_key.pem`` with :func:`os.link`, which fails if the file exists), so exactly one
    process's key wins; every process then uses the key read back from ``signing_key.pem``
    (never its own candidate), and ``signing_key.pub`` is written from that key.

    >>> import tempfile, stat
    >>> d = tempfile.mkdtemp()
    >>> k = load_or_create_key(d)
    >>> oct(stat.S_IMODE(os.stat(os.path.join(d, "signing_key.pem")).st_mode))
    '0o600'
    >>> load_or_create_key(d).key_id == k.key_id
    True
    """
    d = Path(key_dir)
    d.mkdir(parents=True, exist_ok=True)
    found = load_key(d)
    if found is not None:
        if not (d / PUBLIC_KEY_FILE).exists():  # its maker stopped before writing it
            _write_public_file(d, found)
        return found
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    create_private_once(d / KEY_FILE, pem)  # False: another process made the key first
    won = load_key(d)
    if won is None:  # deleted between our link and this read: nothing to sign with
        raise SignatureError(f"Key file {str(d / KEY_FILE)!r} disappeared while it was being "
                             "made; run the command again.", "key_lost")
    _write_public_file(d, won)
    return won


@dataclass(frozen=True)
class Manifest:
    """What a release promises: the signed half of a :class:`SignedArtifact`."""

    name: str
    version: str
    release: int
    sha256: str
    size: int
    format: str
    target: str
    expires_ns: int
    key_id: str
    kind: str = "release"  # or "rollback"
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces): the bytes that get signed."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"),
                          allow_nan=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse canonical manifest JSON; raise :class:`SignatureError` if malformed."""
        try:
            obj = json.loads(data)
            return cls(**obj)
        except (ValueError, TypeError) as exc:
            msg = f"Manifest is not valid manifest JSON: {exc}."
            raise SignatureError(msg, "tampered") from None


@dataclass(frozen=True)
class Artifact:
    """An unsigned release: payload bytes and what the manifest will say about them."""

    payload: bytes
    name: str
    version: str
    release: int
    target: str
    format: str = "bin"
    expires_ns: int = 0  # 0: now + 30 days
    kind: str = "release"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SignedArtifact:
    """Manifest bytes, their Ed25519 signature, and the payload they describe."""

    manifest_bytes: bytes
    signature: bytes
    payload: bytes
    #: the rollback orders signed again with this release, in the same step
    #: (:meth:`Registry.rollout` with ``keep_rollbacks``), oldest first
    kept: tuple[SignedArtifact, ...] = ()

    @property
    def manifest(self) -> Manifest:
        """The parsed manifest (not verified: use :func:`verify`)."""
        return Manifest.from_bytes(self.manifest_bytes)

    def envelope(self) -> dict[str, str]:
        """JSON-ready ``{"manifest", "signature"}`` (base64) as served to agents."""
        return {
            "manifest": base64.b64encode(self.manifest_bytes).decode(),
            "signature": base64.b64encode(self.signature).decode(),
        }


def sign(artifact: Artifact, key: SigningKey) -> SignedArtifact:
    """Build the manifest for ``artifact`` and sign it with ``key``.

    >>> import tempfile
    >>> k = load_or_create_key(tempfile.mkdtemp())
    >>> s = sign(Artifact(b"abc", "m", "1.0.0", 1, "group:all"), k)
    >>> s.manifest.size, len(s.signature)
    (3, 64)
    """
    if artifact.kind not in ("release", "rollback"):
        raise InvalidParameterError(
            f"The 'kind' parameter of Artifact must be one of 'release', 'rollback'. "
            f"Got {artifact.kind!r} instead."
        )
    _check_target(artifact.target)
    expires = artifact.expires_ns or time.time_ns() + DEFAULT_EXPIRY_S * 10**9
    m = Manifest(
        name=artifact.name,
        version=artifact.version,
        release=artifact.release,
        sha256=hashlib.sha256(artifact.payload).hexdigest(),
        size=len(artifact.payload),
        format=artifact.format,
        target=artifact.target,
        expires_ns=expires,
        key_id=key.key_id,
        kind=artifact.kind,
        metadata=dict(artifact.metadata),
    )
    mb = m.to_bytes()
    return SignedArtifact(mb, key.private.sign(mb), artifact.payload)


#: What a release target may be (messages and problem answers name it).
TARGET_ALLOWED = ("'device:<id>' or 'group:<name>', the id or name 1-64 characters of letters, "
                  "digits, '_', '.', '-', starting with a letter or digit")


def _check_target(target: str) -> None:
    """Refuse a target that no device can ever be reached by: not ``device:<id>`` or
    ``group:<name>``, or whose id or name is not one ``edgewise device add`` takes (a blank
    group name, ``device:pump-7:x``): :class:`InvalidParameterError` naming ``target``.

    >>> _check_target("group:line-a")
    >>> _check_target("group: ")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: Target 'group: ' names group ' ', which is not a valid group name: it must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit (as 'edgewise device add ID --group NAME' takes it). Got 'group: ' instead.
    """  # noqa: E501
    kind, _, ident = target.partition(":") if isinstance(target, str) else ("", "", "")
    if kind not in ("device", "group") or not ident:
        raise InvalidParameterError(
            "The 'target' parameter must be 'device:<id>' or 'group:<name>'. "
            f"Got {target!r} instead.", field="target", value=target,
        )
    try:
        validate_device_id(ident)
    except PayloadError as exc:
        what, how = (("device id", "'edgewise device add ID'") if kind == "device" else
                     ("group name", "'edgewise device add ID --group NAME'"))
        raise InvalidParameterError(
            f"Target {target!r} names {kind} {ident!r}, which is not a valid {what}: it must "
            f"be {exc.allowed} (as {how} takes it). Got {target!r} instead.",
            field="target", value=target,
        ) from None


def _digest_bounded(payload: bytes | BinaryIO, size: int) -> tuple[str, bool]:
    """Read at most ``size + 1`` bytes; return (sha256 hex of the first ``size``, whether there
    was more). Nothing read is kept: a stream (an agent's download, written to disk as it
    goes) is hashed chunk by chunk, so a model of N MiB needs no N MiB here.

    >>> _digest_bounded(b"abcd", 3) == (hashlib.sha256(b"abc").hexdigest(), True)
    True
    """
    stream = io.BytesIO(payload) if isinstance(payload, bytes | bytearray) else payload
    h = hashlib.sha256()
    got = 0
    while got <= size:
        chunk = stream.read(min(_CHUNK, size + 1 - got))
        if not chunk:
            break
        h.update(chunk[: max(size - got, 0)])
        got += len(chunk)
    return h.hexdigest(), got > size


def verify(
    manifest_bytes: bytes,
    signature: bytes,
    payload: bytes | BinaryIO,
    *,
    trusted_keys: Mapping[str, bytes],
    device_id: str,
    groups: Iterable[str] = (),
    installed_release: int = 0,
    known: Iterable[Manifest] = (),
    now_ns: int | None = None,
) -> Manifest:
    """Check a release before installing it; return its manifest or raise :class:`SignatureError`.

    Parameters
    ----------
    manifest_bytes, signature
        As served by the registry (:class:`SignedArtifact`).
    payload
        The model bytes, or a binary stream; never more than ``manifest.size + 1`` bytes are read.
    trusted_keys
        Key id to raw Ed25519 public key, as given at enrolment.
    device_id, groups
        Who is installing; the manifest's target must name one of them.
    installed_release
        The release counter currently installed (0 if none).
    known
        Manifests verified earlier (for telling mix-and-match from plain tampering).

    Examples
    --------
    >>> import tempfile
    >>> k = load_or_create_key(tempfile.mkdtemp())
    >>> s = sign(Artifact(b"abc", "m", "1.0.0", 2, "device:d1"), k)
    >>> verify(s.manifest_bytes, s.signature, b"abc", trusted_keys={k.key_id: k.public_key_bytes},
    ...        device_id="d1", installed_release=2)
    Traceback (most recent call last):
    ...
    edgewise.errors.SignatureError: Release 2 of 'm' is already installed; nothing to do.
    """
    # 1. who signed it, and is the signature good? (nothing else is trusted before this)
    try:
        head = json.loads(manifest_bytes)
        key_id = head["key_id"]
    except (ValueError, TypeError, KeyError):
        raise SignatureError("Manifest is not valid manifest JSON.", "tampered") from None
    if not isinstance(key_id, str):  # a list or object raised TypeError (unhashable)
        raise SignatureError(
            f"Manifest's key_id is a JSON {type(key_id).__name__} "
            f"({json.dumps(key_id, default=str)[:40]}), not a key id string.",
            "tampered",
        )
    if key_id not in trusted_keys:
        raise SignatureError(
            f"Manifest is signed by key {key_id!r}, which this device does not trust "
            f"(trusted: {', '.join(sorted(trusted_keys)) or 'none'}).",
            "unknown_key",
        )
    try:
        Ed25519PublicKey.from_public_bytes(trusted_keys[key_id]).verify(signature, manifest_bytes)
    except InvalidSignature:
        raise SignatureError(
            f"Manifest signature does not verify with key {key_id!r}: manifest or signature was "
            "altered.",
            "tampered",
        ) from None
    m = Manifest.from_bytes(manifest_bytes)
    # 2. is it for us, still fresh, and newer than what we run?
    mine = {f"device:{device_id}"} | {f"group:{g}" for g in groups}
    if m.target not in mine:
        raise SignatureError(
            f"Release {m.release} of {m.name!r} targets {m.target!r}, not this device "
            f"({', '.join(sorted(mine))}).",
            "wrong_device",
        )
    now = time.time_ns() if now_ns is None else now_ns
    if m.expires_ns <= now:
        raise SignatureError(
            f"Release {m.release} of {m.name!r} expired at {m.expires_ns} ns (now {now} ns); "
            "the registry must re-sign it.",
            "expired",
        )
    if m.release == installed_release:
        raise SignatureError(
            f"Release {m.release} of {m.name!r} is already installed; nothing to do.", "replay"
        )
    if m.release < installed_release:
        raise SignatureError(
            f"Release {m.release} of {m.name!r} is older than the installed release "
            f"{installed_release}; only a signed rollback order (a newer release) goes back.",
            "rollback",
        )
    # 3. is the payload the one the manifest describes?
    digest, more = _digest_bounded(payload, m.size)
    if more:
        raise SignatureError(
            f"Payload of release {m.release} is longer than the {m.size} bytes its manifest "
            "says; stopped reading.",
            "endless_data",
        )
    if digest != m.sha256:
        for other in known:
            if other.sha256 == digest and other.release != m.release:
                raise SignatureError(
                    f"Payload is the model of release {other.release} ({other.version}), not of "
                    f"release {m.release} ({m.version}) that the manifest describes.",
                    "mix_and_match",
                )
        raise SignatureError(
            f"Payload sha256 {digest[:16]}… differs from the manifest's {m.sha256[:16]}… "
            f"(release {m.release} of {m.name!r}): corrupted or tampered.",
            "tampered",
        )
    return m


# -- the registry itself -----------------------------------------------------------------------


def _targets_of(device_id: str, groups: Iterable[str]) -> tuple[list[str], str]:
    """The release targets that reach a device (``device:<id>`` and ``group:<g>`` of each of
    its groups) and the SQL placeholders for them.

    >>> _targets_of("pump-1", ["line-a"])
    (['device:pump-1', 'group:line-a'], '?,?')
    """
    targets = [f"device:{device_id}", *(f"group:{g}" for g in groups)]
    return targets, ",".join("?" * len(targets))


def _offer_sql(columns: str, targets: list[str],
               formats: Iterable[str] | None) -> tuple[str, list[str]]:
    """The query of the releases a device reached by ``targets`` may be offered, in one of
    ``formats`` (None: any format), and its arguments: the selection :meth:`Registry.current`
    and :meth:`Registry.check_group_change` share (``r``: the release, ``v``: its version).

    >>> _offer_sql("r.release", ["device:p1"], ["pickle"])[1]
    ['device:p1', 'pickle']
    """
    sql = (f"SELECT {columns} FROM releases r LEFT JOIN versions v ON v.name = r.name AND "
           f"v.version = r.version WHERE r.target IN ({','.join('?' * len(targets))})")
    args = list(targets)
    if formats is not None:
        wanted = sorted(set(formats))
        sql += f" AND v.format IN ({','.join('?' * len(wanted))})"
        args += wanted
    return sql, args


def _devices(ids: list[str]) -> str:
    """Device ids as messages name them.

    >>> _devices(["pump-7"]), _devices(["p1", "p2", "p3", "p4"])
    ("device 'pump-7'", "devices 'p1', 'p2', 'p3' and 1 more")
    """
    if len(ids) == 1:
        return f"device {ids[0]!r}"
    shown = ", ".join(map(repr, ids[:3]))
    return f"devices {shown}" + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")


def _check_label(value: object, what: str, where: str, *, strict: bool = False) -> str:
    """Return ``value`` if it is a usable model name or version: non-empty text, not only
    blanks (``""`` matched every model's versions, and a release named ``''`` was signed).
    ``strict`` (what :meth:`Registry.publish` checks): also no blank at either end and no
    control or other unprintable character (``"1.0.0 "`` and ``"1.0.0\\n"`` were published
    as versions apart from ``"1.0.0"`` and listed alike), and in Unicode NFC form (``"cafe"``
    with a combining accent was published apart from ``"café"`` and listed alike).

    >>> _check_label("1.0.0", "version", "Registry.rollout")
    '1.0.0'
    >>> _check_label("", "name", "Registry.rollout")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'name' parameter of Registry.rollout must be non-empty text, not only blanks. Got '' instead.
    >>> _check_label("1.0.0\\n", "version", "Registry.publish", strict=True)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'version' parameter of Registry.publish must be text without blanks at either end and without control characters, e.g. '1.0.0'. Got '1.0.0\\n' instead.
    """  # noqa: E501
    if not isinstance(value, str) or not value.strip():
        raise InvalidParameterError(
            f"The {what!r} parameter of {where} must be non-empty text, not only blanks. "
            f"Got {value!r} instead.", field=what, value=value)
    _check_utf8(value, what, where)
    if strict and (value != value.strip() or not value.isprintable()):
        example = (value.strip() if value.strip().isprintable()
                   else {"name": "ewz", "format": "pickle"}.get(what, "1.0.0"))
        raise InvalidParameterError(
            f"The {what!r} parameter of {where} must be text without blanks at either end "
            f"and without control characters, e.g. {example!r}. Got {value!r} instead.",
            field=what, value=value)
    if strict and value != unicodedata.normalize("NFC", value):
        raise InvalidParameterError(
            f"The {what!r} parameter of {where} must be text in Unicode NFC form (composed "
            "characters, as most keyboards type them): its decomposed form is published "
            f"apart from the composed one and listed alike. Use "
            f"{unicodedata.normalize('NFC', value)!r}. Got {value!r} instead.",
            field=what, value=value)
    return value


def _too_long(value: str, what: str, where: str) -> InvalidParameterError | None:
    """The refusal of a model ``name`` or ``version`` (``what``) longer than its limit
    (:data:`MAX_NAME_BYTES`, :data:`MAX_VERSION_BYTES`, in bytes of UTF-8), naming the
    parameter, its length and the limit; ``None`` if it fits (or is no text UTF-8 encodes:
    refused elsewhere)."""
    limit = _LIMITS[what]
    try:
        size = len(value.encode("utf-8"))
    except (AttributeError, UnicodeEncodeError):
        return None
    if size <= limit:
        return None
    chars = f" ({len(value)} characters)" if len(value) != size else ""
    shown = value if len(value) <= 40 else f"{value[:40]}…"
    return InvalidParameterError(
        f"The {what!r} parameter of {where} must be at most {limit} bytes of UTF-8. Got "
        f"{size} bytes{chars} instead, starting {shown!r}.", field=what,
        value=shown)


def check_lengths(name: str, version: str, where: str) -> None:
    """Refuse a model ``name`` over :data:`MAX_NAME_BYTES` or a ``version`` over
    :data:`MAX_VERSION_BYTES` bytes of UTF-8 (:class:`InvalidParameterError` naming the
    first such parameter, its length and the limit); what :meth:`Registry.publish` takes.

    >>> check_lengths("ewz", "1.0.0", "Registry.publish")
    >>> check_lengths("ewz", "1" * 65, "Registry.publish")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'version' parameter of Registry.publish must be at most 64 bytes of UTF-8. Got 65 bytes instead, starting '1111111111111111111111111111111111111111…'.
    """  # noqa: E501
    for value, what in ((name, "name"), (version, "version")):
        exc = _too_long(value, what, where)
        if exc is not None:
            raise exc


def model_format_of(format: str, where: str = "Registry.publish") -> str:
    """The format :meth:`Registry.publish` records for ``format``: one of
    :data:`MODEL_FORMATS`, given in any case or as one of its :data:`FORMAT_ALIASES`; else
    :class:`InvalidParameterError` naming it and the formats (an agent refused a model
    published as ``"PICKLE"`` or ``"pkl"`` as ``unsupported_format``, on every device).

    >>> model_format_of("PICKLE"), model_format_of("pkl"), model_format_of("onnx")
    ('pickle', 'pickle', 'onnx')
    >>> model_format_of("tflite")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'format' parameter of Registry.publish must be one of bin, c, npz, npz-state-dict, onnx, pickle (pkl for pickle; any case), the edge agent runs pickle. Got 'tflite' instead.
    """  # noqa: E501
    what = format.lower()
    what = FORMAT_ALIASES.get(what, what)
    if what not in MODEL_FORMATS:
        aliases = ", ".join(f"{k} for {v}" for k, v in FORMAT_ALIASES.items())
        raise InvalidParameterError(
            f"The 'format' parameter of {where} must be one of {', '.join(MODEL_FORMATS)} "
            f"({aliases}; any case), the edge agent runs pickle. Got {format!r} instead.",
            field="format", value=format)
    return what


def _check_utf8(value: str, what: str, where: str) -> str:
    """Return ``value`` if it is text UTF-8 can encode (what the database stores), else
    :class:`InvalidParameterError` naming ``what``: a lone surrogate (``"\\ud800"`` in JSON,
    or a command-line argument with bytes that are not UTF-8, which Python reads as
    surrogates) failed as a 500 or a traceback where the database was asked.

    >>> _check_utf8("ewz\\udcff", "name", "Registry.rollout")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'name' parameter of Registry.rollout must be text that UTF-8 can encode, without lone surrogates (a command-line argument with bytes that are not UTF-8 reads as one). Got 'ewz\\udcff' instead.
    """  # noqa: E501
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidParameterError(
            f"The {what!r} parameter of {where} must be text that UTF-8 can encode, without "
            "lone surrogates (a command-line argument with bytes that are not UTF-8 reads as "
            f"one). Got {value!r} instead.", field=what, value=value) from None
    return value


def _encodes(text: str) -> bool:
    """Whether UTF-8 can encode ``text`` (no lone surrogate).

    >>> _encodes("1.0.0"), _encodes("1\\udc00")
    (True, False)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` as a dict of non-empty names to finite floats, else
    :class:`InvalidParameterError` naming the bad entry (a signed manifest is strict JSON:
    no NaN or infinity, and a metric needs a name).

    >>> _check_metrics({"auc": 0.8})
    {'auc': 0.8}
    >>> _check_metrics({"auc": float("nan")})
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: Metric 'auc' must be a finite number. Got nan instead.
    """
    if not isinstance(metrics, Mapping):  # a list of pairs failed as an AttributeError
        raise InvalidParameterError(
            "The 'metrics' parameter of Registry.publish must be a mapping of metric names to "
            f"numbers, e.g. {{'auc': 0.81}}. Got {type(metrics).__name__} instead.",
            field="metrics")
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if not isinstance(k, str) or not k.strip() or not _encodes(k):
            raise InvalidParameterError(f"Metric names must be non-empty text that UTF-8 can "
                                        f"encode. Got {k!r} (value {v!r}) instead.",
                                        field="metrics", value=k)
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        try:  # an int past float's range (10**400) raised OverflowError here
            ok = ok and math.isfinite(v)
        except OverflowError:
            ok = False
        if not ok:
            shown = repr(v) if len(repr(v)) <= 40 else f"{repr(v)[:40]}…"
            raise InvalidParameterError(f"Metric {k!r} must be a finite number. Got {shown} "
                                        "instead.", field=f"metrics.{k}", value=v)
        out[k] = float(v)
    return out


#: The ``versions`` columns a :class:`ModelVersion` is made of, in its fields' order.
_VERSION_COLS = "name, version, format, sha256, size, trained_on, metrics, created_ns, seq"


def _model_version(row: tuple[Any, ...]) -> ModelVersion:
    """A ``versions`` row (:data:`_VERSION_COLS`) as a :class:`ModelVersion`."""
    return ModelVersion(row[0], row[1], row[2], row[3], row[4], row[5], json.loads(row[6]),
                        row[7], int(row[8] or 0))


def _rfc3339(ns: int) -> str:
    """RFC 3339 UTC text of nanoseconds since the epoch, to the second.

    >>> _rfc3339(1706702400_500_000_000)
    '2024-01-31T12:00:00Z'
    """
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ModelVersion:
    """One published model version and its metadata."""

    name: str
    version: str
    format: str
    sha256: str
    size: int
    trained_on: str
    metrics: dict[str, float]
    created_ns: int
    #: publish order on this registry: 1 for its first version, one more with each publish.
    #: Versions are ordered by it (which is older), never by ``created_ns``, the publishing
    #: host's clock (a clock stepped back made a newer version "older").
    seq: int = 0


@dataclass(frozen=True)
class Release:
    """A signed rollout of one version to one target."""

    release: int
    name: str
    version: str
    target: str
    kind: str
    created_ns: int
    manifest_bytes: bytes
    signature: bytes

    @property
    def manifest(self) -> Manifest:
        """The parsed manifest."""
        return Manifest.from_bytes(self.manifest_bytes)

    def envelope(self) -> dict[str, str]:
        """JSON-ready ``{"manifest", "signature"}`` (base64) as served to agents."""
        return SignedArtifact(self.manifest_bytes, self.signature, b"").envelope()

    @property
    def expires_ns(self) -> int:
        """When the signed manifest expires (ns since the epoch); 0 if it cannot be read."""
        try:
            return int(json.loads(self.manifest_bytes)["expires_ns"])
        except (ValueError, TypeError, KeyError):
            return 0

    def expired(self, now_ns: int | None = None) -> bool:
        """Whether the manifest's expiry has passed: every agent refuses it (``expired``)
        until it is signed again (the same rollout run again).

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> _ = reg.publish("m", "1.0.0", b"x", format="bin")
        >>> _ = reg.rollout("m", "1.0.0", "group:a", expires_in_s=3600)
        >>> rel = reg.releases()[0]
        >>> rel.expired(), rel.expired(rel.expires_ns)
        (False, True)
        """
        return self.expires_ns <= (time.time_ns() if now_ns is None else now_ns)

    def listing(self, now_ns: int | None = None) -> dict[str, Any]:
        """The release as ``GET /v1/registry`` and ``edgewise registry list --json`` show it:
        ``release``, ``name``, ``version``, ``target``, ``kind``, ``expires`` (RFC 3339 UTC)
        and ``expired``."""
        return {"release": self.release, "name": self.name, "version": self.version,
                "target": self.target, "kind": self.kind, "expires": _rfc3339(self.expires_ns),
                "expired": self.expired(now_ns)}

    def rerun_command(self) -> str:
        """The command that signs this release again (with a new counter and expiry).

        >>> Release(3, "ewz", "1.0.0", "group:a", "rollback", 0, b"{}", b"").rerun_command()
        'edgewise registry rollout ewz 1.0.0 group:a --rollback'
        """
        import shlex

        return (f"edgewise registry rollout {shlex.quote(self.name)} "
                f"{shlex.quote(self.version)} {shlex.quote(self.target)}"
                + (" --rollback" if self.kind == "rollback" else ""))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
  name TEXT NOT NULL, version TEXT NOT NULL, format TEXT NOT NULL, sha256 TEXT NOT NULL,
  size INTEGER NOT NULL, trained_on TEXT NOT NULL, metrics TEXT NOT NULL,
  created_ns INTEGER NOT NULL, seq INTEGER, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS releases (
  release INTEGER PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL, target TEXT NOT NULL,
  kind TEXT NOT NULL, created_ns INTEGER NOT NULL, manifest BLOB NOT NULL, signature BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS withdrawn (
  release INTEGER PRIMARY KEY, key_id TEXT NOT NULL, withdrawn_ns INTEGER NOT NULL);
"""
#: a device's floor per model and format (:meth:`Registry.check_group_change`)
_FLOORS_COLUMNS = (
    "(device_id TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL, "
    "release INTEGER NOT NULL, target TEXT NOT NULL, format TEXT NOT NULL DEFAULT '', "
    "PRIMARY KEY (device_id, name, format))")
_SCHEMA += f"CREATE TABLE IF NOT EXISTS floors {_FLOORS_COLUMNS};\n"
#: a floors table keyed by (device, model), as the first registries with floors made it,
#: copied into the one keyed by format too (each floor its version's format)
_FLOORS_COPY = (
    "INSERT INTO floors_by_format SELECT f.device_id, f.name, f.version, f.release, f.target, "
    "COALESCE(v.format, '') FROM floors f LEFT JOIN versions v ON v.name = f.name AND "
    "v.version = f.version")
#: The highest release counter a registry signed, kept beside its key (``registry/``) as
#: well as in ``registry.sqlite``: a damaged database set aside (a fresh one made) signed
#: release 1 again under the same key, and every agent that had installed a later release
#: refused each new one as ``rollback`` until the counter passed what it ran. Counters
#: continue above it, whatever the database holds.
COUNTER_FILE = "release_counter"
#: a publish's temporary blob file older than this is left by a publish that died (kill -9,
#: power loss) and is removed when a registry is opened; a younger one may be being written
STALE_TMP_S = 15 * 60


def _read_device_groups(path: Path) -> dict[str, set[str]]:
    """Each registered device's groups (``{device id: groups}``, every device, an empty set
    for one in none), from the credentials file ``path`` (``security.sqlite``) on a
    read-only connection of its own, in one read transaction (a snapshot, WAL mode).

    :meth:`Registry.rollout` reads it inside its write transaction, so it must never wait
    for that file's write lock: a group change holds it while it waits for the registry's
    (:meth:`Registry.group_change`), and opening :class:`edgewise.security.Security`, which
    writes its schema and migrations, would wait for it. A file without the tables (made,
    never opened by the gateway) has no devices."""
    from edgewise.security.credentials import open_read_only

    db, _uri = open_read_only(path)  # immutable where the folder cannot be written
    try:
        db.execute("PRAGMA busy_timeout=30000")
        db.execute("BEGIN")
        try:
            out: dict[str, set[str]] = {
                str(r[0]): set() for r in db.execute("SELECT id FROM devices")}
            for device, group in db.execute("SELECT device_id, grp FROM device_groups"):
                if device in out:
                    out[device].add(str(group))
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            return {}
        return out
    finally:
        db.close()


class Registry:
    """Model versions, blobs and signed releases under ``<data_dir>/registry``.

    Multi-process safe (SQLite WAL; release counters are allocated inside a write transaction).

    Opening a registry and reading it (versions, releases, blobs, :attr:`key_state`) never makes
    a signing key. The key is made (:meth:`signing_key`) when a registry that never had one first
    signs or is asked for its public key (:attr:`public_key_bytes`, for enrolment); a registry
    whose key was issued but whose ``signing_key.pem`` is gone refuses
    :meth:`publish`, :meth:`rollout` and :meth:`signing_key` with :class:`SignatureError`
    (reason ``"key_lost"``): every agent trusts only the key it was given, so a silently made
    new key would have each of them refuse every later update as ``unknown_key``. A damaged
    ``signing_key.pem`` (unreadable, or no Ed25519 key) never stops the registry from opening
    (the gateway's telemetry starts all the same): it is refused alike, reason ``"bad_key"``.

    Parameters
    ----------
    data_dir
        The gateway's data directory; the registry lives in its ``registry/`` folder.
    device_groups
        Returns each device's groups (``{device id: groups}``), which :meth:`rollout` reads to
        see which devices a release reaches. Default: the groups of the device credentials in
        ``<data_dir>/security.sqlite`` (:meth:`edgewise.security.Security.device_groups`), none
        while there is no such file.
    """

    def __init__(self, data_dir: str | os.PathLike[str], *,
                 device_groups: Callable[[], Mapping[str, Iterable[str]]] | None = None,
                 read_only: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.root = Path(data_dir) / "registry"
        self._device_groups = device_groups
        if read_only:
            self._open_read_only()
            return
        # the owner's only (0700, 0600), whatever the data directory's mode or the umask of
        # the command that makes them: they hold the fleet's models and releases
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.root / "blobs").mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:  # a file there or above, a parent this user may not write
            from edgewise.errors import folder_not_made

            raise folder_not_made("The registry folder", self.root, exc,
                                  "give a data directory this user may write.") from None
        self._key: SigningKey | None = None
        self._key_file: tuple[int, int, int] | None = None  # (inode, size, mtime) _key was read at
        self._key_problem: str | None = None  # what is wrong with a damaged signing_key.pem
        self._reload_key()
        db = self.root / "registry.sqlite"
        # one connection shared by threads (a gateway serves from a thread pool), used under a lock
        self._db = sqlite3.connect(db, timeout=30, isolation_level=None, check_same_thread=False)
        # 0600 before the WAL is made (SQLite gives it the database's mode), and the files an
        # older version made 0644
        make_private(db, db.with_name(f"{db.name}-wal"), db.with_name(f"{db.name}-shm"))
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._number_versions()
        self._floors_by_format()
        self._sweep_temporary_blobs()

    def _open_read_only(self) -> None:
        """Open the existing ``registry.sqlite`` for reading only (``read_only=True``, as
        ``registry list`` does): nothing made or migrated, so a data directory this user
        may not write (a backup, a read-only snapshot) is listed; refused
        (:class:`~edgewise.errors.ConfigError`) where the file is absent or was made by an
        older version (brought up to date only where it can be written)."""
        from edgewise.errors import ConfigError
        from edgewise.security.credentials import open_read_only

        db = self.root / "registry.sqlite"
        if not db.is_file():
            raise ConfigError(f"{str(db)!r} does not exist: there is no registry to read "
                              f"in {str(self.data_dir)!r}.")
        self._key, self._key_file, self._key_problem = None, None, None
        self._reload_key()
        self._db, _uri = open_read_only(db)
        self._lock = threading.RLock()
        if not (self._has_column("versions", "seq") and self._has_column("floors", "format")):
            self._db.close()
            raise ConfigError(
                f"{str(db)!r} was made by an older Edgewise version: it is brought up to "
                f"date only where it can be written; open it once so (e.g. 'edgewise "
                f"registry list' on a writable copy of the data directory).")

    def _floors_by_format(self) -> None:
        """Key a registry's floors by (device, model, format), as a device is offered each
        format's newest release (:meth:`current`): a floors table keyed by (device, model)
        is rebuilt once, each floor given its version's format, under a write lock."""
        if self._has_column("floors", "format"):
            return
        with self._write_tx():
            if not self._has_column("floors", "format"):
                self._db.execute(f"CREATE TABLE floors_by_format {_FLOORS_COLUMNS}")
                self._db.execute(_FLOORS_COPY)
                self._db.execute("DROP TABLE floors")
                self._db.execute("ALTER TABLE floors_by_format RENAME TO floors")

    def _number_versions(self) -> None:
        """Give a registry made before versions had a publish counter one: its versions
        numbered in the order they were then sorted by (``created_ns``, then the row's
        insertion order); once, under a write lock, so processes opening it together agree."""
        def unnumbered() -> bool:
            return self._db.execute(
                "SELECT 1 FROM versions WHERE seq IS NULL LIMIT 1").fetchone() is not None

        if self._has_column("versions", "seq") and not unnumbered():
            self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS versions_seq ON versions (seq)")
            return
        with self._write_tx():
            if not self._has_column("versions", "seq"):
                self._db.execute("ALTER TABLE versions ADD COLUMN seq INTEGER")
            if unnumbered():  # after those numbered already, in their old order
                (top,) = self._db.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM versions").fetchone()
                rows = self._db.execute("SELECT rowid FROM versions WHERE seq IS NULL "
                                        "ORDER BY created_ns, rowid").fetchall()
                self._db.executemany("UPDATE versions SET seq = ? WHERE rowid = ?",
                                     [(int(top) + i, r[0]) for i, r in enumerate(rows, 1)])
            self._db.execute("CREATE UNIQUE INDEX IF NOT EXISTS versions_seq ON versions (seq)")

    def _has_column(self, table: str, column: str) -> bool:
        """Whether ``table`` of the registry database has a column named ``column`` (the
        schema migrations probe for what an older version made)."""
        return any(r[1] == column for r in self._db.execute(f"PRAGMA table_info({table})"))

    @contextmanager
    def _write_tx(self) -> Iterator[None]:
        """One write transaction of the registry database: under this object's lock, a
        ``BEGIN IMMEDIATE`` (the database's write lock, taken at once, so what the block reads
        no other process changes before it commits), committed when the block exits without
        an exception, else rolled back, unless SQLite already did (it does on a full disk or
        an I/O error), and the block's own exception raised again, never one of the
        rollback's."""
        with self._lock, write_transaction(self._db):
            yield

    def _sweep_temporary_blobs(self, now: float | None = None) -> list[Path]:
        """Remove the temporary blob files (``blobs/.<sha256>.*.tmp``) of publishes that died
        while writing (each as large as its model, and never reused: the next publish writes
        a file of its own), those not written for :data:`STALE_TMP_S`: younger ones may be
        a running publish's. Returns the files removed."""
        cutoff = (time.time() if now is None else now) - STALE_TMP_S
        gone: list[Path] = []
        for path in (self.root / "blobs").glob(".*.tmp"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    gone.append(path)
            except FileNotFoundError:  # another process swept it first
                continue
        if gone:
            logging.getLogger(__name__).info(
                "registry: removed %d temporary model file(s) left by publishes that "
                "stopped while writing: %s", len(gone), ", ".join(p.name for p in gone))
        return gone

    # -- the signing key ----------------------------------------------------------------------
    @property
    def issued_key_id(self) -> str | None:
        """Id of the key this registry issued (the one agents trust), even when its private
        half is lost; ``None`` if it never had one."""
        return self._issued_key_id()

    def _issued_key_id(self) -> str | None:
        """Id of the key this registry issued, from what is left when the private half is gone:
        ``signing_key.pub``, else the newest release's manifest; ``None`` if it never had one."""
        raw = self._public_file_bytes()
        if raw is not None:
            return key_id_of(raw)
        with self._lock:
            row = self._db.execute(
                "SELECT manifest FROM releases ORDER BY release DESC LIMIT 1").fetchone()
            if row is None:  # every release withdrawn: their key was issued all the same
                gone = self._db.execute(
                    "SELECT key_id FROM withdrawn ORDER BY release DESC LIMIT 1").fetchone()
                return None if gone is None else str(gone[0])
        try:
            return str(json.loads(row[0])["key_id"])
        except (ValueError, TypeError, KeyError):
            return "unknown"

    def _public_file_bytes(self) -> bytes | None:
        try:
            raw = base64.b64decode((self.root / PUBLIC_KEY_FILE).read_text().strip(),
                                   validate=True)
        except (OSError, ValueError):
            return None
        return raw if len(raw) == 32 else None

    @property
    def listed_key_id(self) -> str | None:
        """The key id a listing shows (``registry list``, ``GET /v1/registry``), never making
        a key: that of ``signing_key.pem`` when it is the issued key, else the issued key's
        (:attr:`issued_key_id`: from ``signing_key.pub``, or the newest release's manifest
        when both key files are gone); ``None`` for a registry that never had one."""
        if self.key_state == "ok":
            try:
                return self.key_id
            except SignatureError:  # the file went away meanwhile
                pass
        return self.issued_key_id

    @property
    def key_state(self) -> str:
        """``"ok"`` (the private key is here and is the one issued), ``"none"`` (never had one:
        it is made at the first rollout or gateway start), ``"lost"`` (issued, but
        ``signing_key.pem`` is gone: publishing and signing are refused until it is restored or
        :meth:`new_key` is run), ``"mismatch"`` (``signing_key.pem`` holds another key than
        the one issued, ``signing_key.pub`` or the newest release's: refused the same way, as
        every agent would refuse what it signs) or ``"damaged"`` (``signing_key.pem`` is there
        but cannot be read or holds no Ed25519 key: refused the same way, reason
        ``"bad_key"``, until it is restored or moved away; existing releases are still
        served)."""
        # the issued id first: a first key's maker writes signing_key.pem before
        # signing_key.pub, so a .pub seen here means its .pem is on disk (a key being made
        # meanwhile is not "lost"); new_key, replacing a lost key, writes the .pub first, so
        # while it runs the key reads "lost", as it was, never "mismatch"
        issued = self._issued_key_id()
        self._reload_key()
        if self._key_problem is not None:
            return "damaged"
        if self._key is None:
            return "none" if issued is None else "lost"
        if issued is not None and issued != self._key.key_id:
            return "mismatch"
        return "ok"

    def _reload_key(self) -> None:
        """Make the key in memory the one in ``signing_key.pem`` now: none if the file was
        deleted while open (sign no more with the copy), the file's if it was restored or
        replaced since it was read (one ``stat`` when nothing changed). A file that cannot be
        read or is no key (damaged: truncated, overwritten) is never raised here: the key is
        none and :attr:`key_state` ``"damaged"`` (opening and reading the registry, serving
        its releases, go on; signing is refused, :meth:`signing_key`)."""
        path = self.root / KEY_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            self._key, self._key_file, self._key_problem = None, None, None
            return
        except OSError as exc:  # the folder unreadable: as damaged, never a crash
            self._key, self._key_file = None, None
            self._key_problem = f"cannot be read ({type(exc).__name__}: {exc.strerror or exc})"
            return
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen == self._key_file and (self._key is not None or self._key_problem is not None):
            return
        try:
            key = load_key(self.root)
        except SignatureError:
            key, problem = None, ("is not an Ed25519 private key in PEM (PKCS8, unencrypted), "
                                  "as the registry writes it: it is damaged or was replaced")
        except OSError as exc:  # unreadable (permissions, a directory): as damaged
            key, problem = None, f"cannot be read ({type(exc).__name__}: {exc.strerror or exc})"
        else:
            problem = None
            if key is not None and st.st_mode & 0o077:
                _make_key_private(path, st.st_mode)
        self._key, self._key_problem = key, problem
        self._key_file = seen if key is not None or problem is not None else None

    def _damaged_key_error(self) -> SignatureError:
        """The refusal to sign while ``signing_key.pem`` is there but unusable (reason
        ``"bad_key"``): the file, what is wrong with it, and what to do."""
        kid = self._issued_key_id()
        path = str(self.root / KEY_FILE)
        if kid is None:  # never issued: no agent trusts it yet
            fix = ("move it away (the registry makes a new key at the next rollout or "
                   "gateway start), or restore it from a backup")
        else:
            fix = (f"restore the {KEY_FILE} of key {kid!r} from a backup (agents trust only "
                   f"that key), or, if it is lost for good, move it away and run 'edgewise "
                   f"registry new-key' (then give every agent the new {PUBLIC_KEY_FILE}, "
                   "--trust-key)")
        return SignatureError(
            f"The registry's signing key file {path!r} {self._key_problem}; publishing and "
            f"signing are refused until it is fixed: {fix}.", "bad_key")

    def _mismatch_error(self) -> SignatureError:
        assert self._key is not None
        kid, issued = self._key.key_id, self._issued_key_id()
        return SignatureError(
            f"{str(self.root / KEY_FILE)!r} holds key {kid!r}, but this registry issued key "
            f"{issued!r} ({PUBLIC_KEY_FILE} and its signed releases), the only key agents trust: "
            f"restore the {KEY_FILE} of key {issued!r} from a backup, or to switch keys on "
            f"purpose move {KEY_FILE} away and run 'edgewise registry new-key'.",
            "key_mismatch",
        )

    def _refuse_unusable_key(self) -> None:
        """Raise :class:`SignatureError` unless the key is usable or can be made."""
        state = self.key_state
        if state == "damaged":
            raise self._damaged_key_error()
        if state == "lost":
            raise self._lost_key_error()
        if state == "mismatch":
            raise self._mismatch_error()

    def _lost_key_error(self) -> SignatureError:
        kid = self._issued_key_id()
        return SignatureError(
            f"The registry's signing key {kid!r} is gone: {str(self.root / KEY_FILE)!r} does not "
            f"exist, but the registry issued that key (signed releases or {PUBLIC_KEY_FILE}) and "
            "agents trust only it, so a new key would have every device refuse every update. "
            f"Restore {KEY_FILE} from a backup, or run 'edgewise registry new-key' to replace it "
            f"on purpose and give every agent the new {PUBLIC_KEY_FILE} (--trust-key).",
            "key_lost",
        )

    def ensure_key(self) -> str:
        """At a gateway's start: make the signing key if this registry never had one (agents
        are enrolled before the first rollout), or log that an issued key is lost (its
        releases are still served; signing is refused); and log a warning for each expired
        release devices are still offered (:meth:`warn_expired`). Returns
        :attr:`key_state`."""
        try:
            self.signing_key()
        except SignatureError as exc:
            logging.getLogger(__name__).warning(
                "registry: %s Existing releases are still served.", exc)
        self.warn_expired()
        return self.key_state

    def expired_current(self, now_ns: int | None = None) -> list[Release]:
        """The releases devices are still offered whose manifest has expired, oldest first.
        Every agent refuses them (``expired``); the registry does not re-sign them on its own
        (a signature is the operator's act): run the same rollout again
        (:meth:`Release.rerun_command`).

        "Offered" is what :meth:`current` answers: to each registered device (the device
        groups the registry reads, as :meth:`rollout` does) with its groups, asking for any
        format or for one; and, for a target that reaches no registered device (a group
        nobody is in yet, a device not registered yet), to a device that only it reaches
        (the next one put there is offered it). A release every device it reaches has moved
        on from (a newer release through another of its targets) is offered to nobody and
        is not listed: its device is offered the newer one, and signing the old one again
        would not reach it.

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> _ = reg.publish("m", "1.0.0", b"x", format="bin")
        >>> _ = reg.rollout("m", "1.0.0", "group:a", expires_in_s=3600)
        >>> reg.expired_current(), [r.release for r in reg.expired_current(2**62)]
        ([], [1])
        """
        offered = self._offered()
        with self._lock:
            rows = self._db.execute("SELECT * FROM releases ORDER BY release").fetchall()
        return [rel for rel in (Release(*r) for r in rows)
                if rel.release in offered and rel.expired(now_ns)]

    def _offered(self) -> set[int]:
        """The release counters :meth:`current` answers to someone (see
        :meth:`expired_current`): computed in one pass over the releases, as :meth:`current`
        selects (the newest release to the asker's targets, over every format, and over the
        versions of each format)."""
        with self._lock:
            rows = self._db.execute(  # the join of _offer_sql, over every target
                "SELECT r.release, r.target, v.format FROM releases r LEFT JOIN versions v "
                "ON v.name = r.name AND v.version = r.version").fetchall()
        # per target: its newest release (format None: an asker naming no format), and its
        # newest release of a version published in each format (releases of a version with
        # no row are offered only to an asker naming no format, as current() selects)
        newest: dict[str, dict[str | None, int]] = {}
        for release, target, fmt in rows:
            best = newest.setdefault(str(target), {})
            for key in (None, fmt) if fmt is not None else (None,):
                if best.get(key, 0) < int(release):
                    best[key] = int(release)
        askers: list[list[str]] = []
        reached: set[str] = set()
        for device, groups in self._groups_of_devices().items():
            targets = _targets_of(device, sorted(groups))[0]
            reached.update(targets)
            askers.append(targets)
        askers += [[t] for t in newest if t not in reached]
        offered: set[int] = set()
        for targets in askers:
            best: dict[str | None, int] = {}
            for t in targets:
                for key, release in newest.get(t, {}).items():
                    if best.get(key, 0) < release:
                        best[key] = release
            offered.update(best.values())
        return offered

    def warn_expired(self, now_ns: int | None = None) -> list[Release]:
        """Log a warning for each expired release devices are still offered
        (:meth:`expired_current`), naming the rollout that signs it again; return them."""
        gone = self.expired_current(now_ns)
        for rel in gone:
            logging.getLogger(__name__).warning(
                "registry: release %d (%s %s -> %s, %s) expired at %s: every device refuses "
                "it (expired) and is offered nothing newer of it; sign it again with: %s",
                rel.release, rel.name, rel.version, rel.target, rel.kind,
                _rfc3339(rel.expires_ns), rel.rerun_command())
        return gone

    def signing_key(self) -> SigningKey:
        """The private signing key; made (mode 0600) if this registry never had one.

        Raises :class:`SignatureError` (reason ``"key_lost"``) if the registry issued a key whose
        ``signing_key.pem`` is gone, or (reason ``"key_mismatch"``) if ``signing_key.pem`` holds
        another key than the one issued: restore it, or replace it on purpose with
        :meth:`new_key`; (reason ``"bad_key"``) if ``signing_key.pem`` cannot be read or holds
        no Ed25519 key (damaged: :attr:`key_state` ``"damaged"``), naming the file: restore it
        or move it away. Across processes one key is made (see :func:`load_or_create_key`).
        """
        with self._lock:
            self._refuse_unusable_key()
            if self._key is None:
                load_or_create_key(self.root)
                self._refuse_unusable_key()  # reads the key that won back from the file
                if self._key is None:
                    raise SignatureError(f"Key file {str(self.root / KEY_FILE)!r} disappeared "
                                         "just after it was made; run the command again.",
                                         "key_lost")
            return self._key

    def new_key(self) -> SigningKey:
        """Replace a lost signing key on purpose (or make the first one); return the new key.

        Refused (:class:`SignatureError`, reason ``"key_exists"``) while ``signing_key.pem``
        exists (move a mismatching one away first). Releases signed with the old key still
        verify for agents that trust it; every agent must be given the new ``signing_key.pub``
        (``--trust-key``, repeatable) before it accepts a release signed with the new key.
        """
        with self._lock:
            if self.key_state == "damaged":
                raise SignatureError(
                    f"{str(self.root / KEY_FILE)!r} exists but {self._key_problem}; "
                    "'registry new-key' replaces only a lost key: restore the file from a "
                    "backup, or move it away (keep it: it may be repairable) and run "
                    "'edgewise registry new-key' again.", "bad_key")
            if self.key_state in ("ok", "mismatch"):
                assert self._key is not None
                raise SignatureError(
                    f"The registry already has signing key {self._key.key_id!r} "
                    f"({str(self.root / KEY_FILE)!r}); agents trust it. A new key is made only "
                    "when that file is lost.", "key_exists")
            if self.key_state == "none":  # never issued: made as at a first rollout
                load_or_create_key(self.root)
                self._reload_key()
                if self._key is None:
                    raise self._lost_key_error()
                return self._key
            old = self._public_file_bytes()
            if old is not None:  # keep the lost key's public half: agents may still need it
                (self.root / f"signing_key.{key_id_of(old)}.pub").write_text(
                    base64.b64encode(old).decode() + "\n")
            # signing_key.pub first, then signing_key.pem: stopped between the two (killed,
            # power lost), the registry's key is still lost (the new .pub names a key with
            # no .pem), so this runs again. The other order left the new .pem with no .pub:
            # another key than the one its releases name, "mismatch", refused to sign and
            # refused by new-key itself, as a key that is there.
            candidate = SigningKey(Ed25519PrivateKey.generate())
            _write_public_file(self.root, candidate)
            create_private_once(self.root / KEY_FILE, candidate.private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))  # False: another new-key's won; read it back
            self._reload_key()
            if self._key is None:
                raise self._lost_key_error()
            if self._public_file_bytes() != self._key.public_key_bytes:
                _write_public_file(self.root, self._key)  # the key that won, not our candidate
            return self._key

    @property
    def key(self) -> SigningKey:
        """The private signing key: :meth:`signing_key` (made only if the registry never had
        one; refused if it was lost)."""
        return self.signing_key()

    @property
    def key_id(self) -> str:
        """Id of the registry's key: see :attr:`public_key_bytes`."""
        return key_id_of(self.public_key_bytes)

    @property
    def public_key_bytes(self) -> bytes:
        """Raw public key to hand to agents at enrolment.

        Of ``signing_key.pem``; if that is lost, or holds another key than the one issued, of
        ``signing_key.pub``, the key agents trust (a lost key is never remade;
        :class:`SignatureError`, reason ``"key_lost"`` or ``"key_mismatch"``, if the public half
        is gone too).
        On a registry that never had a key this makes it (:meth:`signing_key`), as agents are
        enrolled before the first rollout; check :attr:`key_state` first to only read.
        """
        with self._lock:
            try:  # one look at the key files: signing_key() reads key_state itself
                return self.signing_key().public_key_bytes
            except SignatureError as exc:
                if exc.reason not in ("key_lost", "key_mismatch", "bad_key"):
                    raise
                error = exc
            raw = self._public_file_bytes()
            if raw is None:
                raise error
            return raw

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def publish(
        self,
        name: str,
        version: str,
        payload: bytes,
        *,
        format: str,
        trained_on: str = "",
        metrics: Mapping[str, float] | None = None,
    ) -> ModelVersion:
        """Store a model version (blob + metadata). Versions are immutable once published.

        ``name`` and ``version`` must be non-empty text (not only blanks), at most
        :data:`MAX_NAME_BYTES` and :data:`MAX_VERSION_BYTES` bytes of UTF-8 (a version
        published before there were limits may be published again); each metric a
        non-empty name and a finite number (the signed manifests carry them as strict JSON);
        ``payload`` not empty, and ``trained_on`` printable text (no newline or other control
        character: ``registry list`` prints it) of at most :data:`MAX_TRAINED_ON_BYTES`
        bytes of UTF-8, ``payload`` at most :data:`MAX_MODEL_BYTES` bytes (what an edge agent
        installs), and ``format`` one of :data:`MODEL_FORMATS`, in any case or an alias,
        recorded as that (:func:`model_format_of`), except for a version published before
        these checks, published again.
        Refused (:class:`SignatureError`, reason ``"key_lost"`` or ``"key_mismatch"``) while the
        registry's signing key is lost or is not the key it issued: nothing published could be
        released. Safe when several processes publish the same bytes at once (the blob is
        content-addressed: each writes its own temporary file and the last rename wins).

        Publishing bytes whose blob is stored already checks that blob (size and sha256) and
        rewrites it if it is damaged (truncated or corrupted on disk: :meth:`rollout` and
        :meth:`blob` refuse such a blob, reason ``"blob_damaged"``). Publishing a version
        again with the same bytes, format, ``trained_on`` and metrics is how a damaged blob is
        repaired: it returns the version as first published; anything else that differs from
        the published version is refused (versions are immutable).

        >>> import tempfile
        >>> Registry(tempfile.mkdtemp()).publish("ewz", " ", b"m", format="pickle")
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: The 'version' parameter of Registry.publish must be non-empty text, not only blanks. Got ' ' instead.
        """  # noqa: E501
        _check_label(name, "name", "Registry.publish", strict=True)
        _check_label(version, "version", "Registry.publish", strict=True)
        _check_label(format, "format", "Registry.publish", strict=True)
        self._check_lengths(name, version, "Registry.publish")
        if not isinstance(trained_on, str):  # NOT NULL in the table: refused before any write
            raise InvalidParameterError(
                "The 'trained_on' parameter of Registry.publish must be text (\"\" for none). "
                f"Got {trained_on!r} instead.", field="trained_on", value=trained_on)
        # a lone surrogate failed at the insert, as a UnicodeEncodeError (a blob written)
        _check_utf8(trained_on, "trained_on", "Registry.publish")
        if not isinstance(payload, bytes | bytearray):
            raise InvalidParameterError(
                "The 'payload' parameter of Registry.publish must be bytes (the model file's "
                f"contents). Got {type(payload).__name__} instead.", field="payload")
        checked = _check_metrics({} if metrics is None else metrics)
        format = self._format(name, version, format)
        if len(payload) > MAX_MODEL_BYTES:  # before it is hashed, copied or written
            self._refuse_too_large(name, version, len(payload))
        payload = bytes(payload)
        if not payload:
            self._refuse_empty(name, version)
        if not trained_on.isprintable():
            self._refuse_unprintable(name, version, trained_on)
        if len(trained_on) > MAX_TRAINED_ON_BYTES // 4 \
                and len(trained_on.encode("utf-8")) > MAX_TRAINED_ON_BYTES:
            self._refuse_long_trained_on(name, version, trained_on)
        self._refuse_unusable_key()
        digest = hashlib.sha256(payload).hexdigest()
        try:  # other bytes under a published version: refused before their blob is written
            old = self.version(name, version)
        except KeyError:
            pass
        else:
            if old.sha256 != digest:
                raise self._published_error(name, version, same=False)
        blob = self.root / "blobs" / digest
        # absent, or damaged (truncated, corrupted): write it; concurrent writers write the
        # same bytes whoever wins (by content), and each rename is atomic
        if _blob_problem(blob, digest, len(payload)) is not None:
            replace_atomically(blob, payload)
        created = time.time_ns()
        try:
            with self._write_tx():  # the next publish counter, taken under the write lock
                (seq,) = self._db.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM versions").fetchone()
                self._db.execute(
                    f"INSERT INTO versions ({_VERSION_COLS}) VALUES (?,?,?,?,?,?,?,?,?)",
                    (name, version, format, digest, len(payload), trained_on,
                     json.dumps(checked), created, int(seq)),
                )
        except sqlite3.IntegrityError as exc:
            try:  # only (name, version) taken is "already published": anything else is a bug
                old = self.version(name, version)
            except KeyError:
                raise exc from None
            if (old.sha256, old.size, old.format, old.trained_on, old.metrics) == (
                    digest, len(payload), format, trained_on, checked):
                return old  # the very version again: its blob is intact now (checked above)
            raise self._published_error(name, version, same=old.sha256 == digest) from None
        return ModelVersion(name, version, format, digest, len(payload), trained_on, checked,
                            created, int(seq))

    def _check_lengths(self, name: str, version: str, where: str) -> None:
        """:func:`check_lengths`, except for a version published before there were limits
        (an older registry's): it stays releasable, and repairable by publishing it again.
        Anything else over them is refused for its length, not as "not published"."""
        too_long = _too_long(name, "name", where) or _too_long(version, "version", where)
        if too_long is not None:
            try:
                self.version(name, version)
            except KeyError:
                raise too_long from None

    def _refuse_unprintable(self, name: str, version: str, trained_on: str) -> None:
        """Refuse a ``trained_on`` with a control or other unprintable character
        (:class:`InvalidParameterError`): ``registry list`` prints it, so a newline in it
        listed a version line of its own making (``ewz 9.9.9 ...``) and an escape sequence
        drove the terminal. A version published with one before this check may be published
        again (its repair)."""
        try:
            self.version(name, version)
        except KeyError:
            raise InvalidParameterError(
                "The 'trained_on' parameter of Registry.publish must be text without control "
                "or other unprintable characters (newlines, tabs, escape sequences), e.g. "
                f"'NAB realKnownCause'. Got {trained_on[:60]!r} instead.", field="trained_on",
                value=trained_on[:60]) from None

    def _published_as(self, name: str, version: str) -> ModelVersion | None:
        """The published ``version`` of ``name``, or ``None``."""
        try:
            return self.version(name, version)
        except KeyError:
            return None

    def _format(self, name: str, version: str, format: str) -> str:
        """The format to record (:func:`model_format_of`), except for a version published
        with ``format`` exactly before formats were checked, published again (its repair)."""
        old = self._published_as(name, version)
        if old is not None and old.format == format:
            return format
        return model_format_of(format)

    def _refuse_too_large(self, name: str, version: str, size: int) -> None:
        """Refuse a model over :data:`MAX_MODEL_BYTES` (:class:`InvalidParameterError`):
        every edge agent refuses such a release as ``too_large``, unfetched. A version
        published so before this check may be published again (its repair)."""
        if self._published_as(name, version) is None:
            raise InvalidParameterError(
                f"The 'payload' parameter of Registry.publish (model {name!r} version "
                f"{version!r}) is {size} bytes ({size / 2**20:.1f} MiB); models are at most "
                f"{MAX_MODEL_BYTES} bytes ({MAX_MODEL_BYTES // 2**20} MiB, MAX_MODEL_BYTES), "
                "what an edge agent installs: a larger one is refused by every device as "
                "too_large. Make the model smaller (fewer parameters, a compact export).",
                field="payload", value=size)

    def _refuse_long_trained_on(self, name: str, version: str, trained_on: str) -> None:
        """Refuse a ``trained_on`` over :data:`MAX_TRAINED_ON_BYTES` bytes of UTF-8
        (:class:`InvalidParameterError`): it is signed into every release manifest of the
        version that each device fetches and keeps. A version published with one before this
        check may be published again (its repair)."""
        if self._published_as(name, version) is None:
            size = len(trained_on.encode("utf-8"))
            raise InvalidParameterError(
                f"The 'trained_on' parameter of Registry.publish (model {name!r} version "
                f"{version!r}) must be at most {MAX_TRAINED_ON_BYTES} bytes of UTF-8 "
                f"(MAX_TRAINED_ON_BYTES, {MAX_TRAINED_ON_BYTES // 1024} KiB): every release "
                "manifest carries it to each device. Got "
                f"{size} bytes instead, starting {trained_on[:40]!r}; name the data (and put "
                "the details in a file beside the model).", field="trained_on",
                value=trained_on[:40])

    def _refuse_empty(self, name: str, version: str) -> None:
        """Refuse an empty model (:class:`InvalidParameterError`): no format's model is 0
        bytes (an export that failed, a file truncated or made by ``touch``), and one was
        published and signed for every device, each of which failed to load it. A version
        published empty before this check may be published again (its repair)."""
        try:
            self.version(name, version)
        except KeyError:
            raise InvalidParameterError(
                f"The 'payload' parameter of Registry.publish (model {name!r} version "
                f"{version!r}) must hold the model's bytes. Got 0 bytes instead: an empty "
                "file is no model in any format (an export that failed, or the wrong file).",
                field="payload", value=b"") from None

    @staticmethod
    def _published_error(name: str, version: str, *, same: bool) -> InvalidParameterError:
        """The refusal to publish ``name`` ``version`` again with anything else than it was
        published with (``same``: with its bytes, whose stored blob was checked)."""
        also = (" (the same bytes: their stored blob was checked, and rewritten had it been "
                "damaged)" if same else "")
        return InvalidParameterError(
            f"Model {name!r} version {version!r} is already published{also}; versions are "
            "immutable, publish a new version.", field="version", value=version)

    def versions(self, name: str | None = None) -> list[ModelVersion]:
        """Published versions, oldest first (in publish order, :attr:`ModelVersion.seq`),
        optionally of one model."""
        one = name is not None  # "" is a (never published) name, not "every model"
        if one and not isinstance(name, str):  # versions(5) failed as an AttributeError
            raise InvalidParameterError(
                "The 'name' parameter of Registry.versions must be a model name (text), or "
                f"None for every model. Got {name!r} ({type(name).__name__}) instead.",
                field="name", value=name)
        if one:
            _check_utf8(name, "name", "Registry.versions")
        q = (f"SELECT {_VERSION_COLS} FROM versions" + (" WHERE name = ?" if one else "")
             + " ORDER BY seq")
        with self._lock:
            rows = self._db.execute(q, (name,) if one else ()).fetchall()
        return [_model_version(r) for r in rows]

    def version(self, name: str, version: str) -> ModelVersion:
        """One published version of the model ``name``; ``KeyError`` naming it if absent.

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> _ = reg.publish("m", "1.0.0", b"abc", format="pickle")
        >>> reg.version("", "1.0.0")
        Traceback (most recent call last):
        ...
        KeyError: "Model '' has no published version '1.0.0'."
        """
        if not all(isinstance(x, str) and _encodes(x) for x in (name, version)):
            raise KeyError(f"Model {name!r} has no published version {version!r}.")
        with self._lock:
            row = self._db.execute(f"SELECT {_VERSION_COLS} FROM versions WHERE name = ? "
                                   "AND version = ?",
                                   (name, version)).fetchone()
        if row is None:
            raise KeyError(f"Model {name!r} has no published version {version!r}.")
        return _model_version(row)

    def blob(self, sha256: str) -> bytes:
        """The payload with this hash, checked; ``KeyError`` if no version has it and no blob
        is stored under it.

        Raises :class:`SignatureError` (reason ``"blob_damaged"``, naming the versions with
        that hash and how to repair it) if the stored bytes are missing or are not the bytes
        published (of another size or sha256: truncated or corrupted on disk), rather than
        hand out bytes that no manifest describes.

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> mv = reg.publish("m", "1.0.0", b"0123456789abcdef", format="bin")
        >>> path = reg.root / "blobs" / mv.sha256
        >>> _ = path.write_bytes(b"0123456789abc")
        >>> reg.blob(mv.sha256)
        Traceback (most recent call last):
        ...
        edgewise.errors.SignatureError: The stored model of 'm' version '1.0.0' ... is damaged: ...
        >>> _ = reg.publish("m", "1.0.0", b"0123456789abcdef", format="bin")  # repairs it
        >>> reg.blob(mv.sha256)
        b'0123456789abcdef'
        """
        if not isinstance(sha256, str) or len(sha256) != 64 or any(
                c not in "0123456789abcdef" for c in sha256):
            raise KeyError(f"No blob {sha256!r}.")
        path = self.root / "blobs" / sha256
        with self._lock:
            rows = self._db.execute(
                "SELECT name, version, size FROM versions WHERE sha256 = ? ORDER BY seq",
                (sha256,)).fetchall()
        if not rows:  # no version has it: a blob left by a refused publish, if any
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise KeyError(f"No blob {sha256!r}.") from None
            return self._intact_blob(sha256, size, f"blob {sha256[:16]}…")
        named = ", ".join(f"{n!r} version {v!r}" for n, v, _ in rows[:3])
        more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
        return self._intact_blob(sha256, int(rows[0][2]), named + more)

    def _intact_blob(self, sha256: str, size: int, what: str) -> bytes:
        """The stored blob ``sha256`` if it is the ``size`` bytes published with that hash;
        else :class:`SignatureError` (reason ``"blob_damaged"``) naming ``what`` (the model
        versions with that hash) and how to repair it."""
        path = self.root / "blobs" / sha256
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            problem = "is missing"
        else:
            got = hashlib.sha256(data).hexdigest()
            if len(data) == size and got == sha256:
                return data
            problem = (f"is damaged: it holds {len(data)} bytes with sha256 {got[:16]}…, not the "
                       f"{size} bytes with sha256 {sha256[:16]}… that were published")
        raise SignatureError(
            f"The stored model of {what} ({str(path)!r}) {problem}; it was truncated, "
            "corrupted or tampered with on disk, so the registry neither signs nor serves it "
            "(a release of it would name bytes no device can fetch). Publish the same model "
            "file again (edgewise registry publish NAME VERSION FILE, with this version and "
            "the same options, or as a new version): that rewrites the stored model.",
            "blob_damaged",
        )

    def rollout(
        self,
        name: str,
        version: str,
        target: str,
        *,
        expires_in_s: float = DEFAULT_EXPIRY_S,
        kind: str = "release",
        has_device: Callable[[str], bool] | None = None,
        keep_rollbacks: bool = False,
    ) -> SignedArtifact:
        """Sign a release of ``name``/``version`` for ``target`` with the next release counter.

        ``expires_in_s`` must lie in (0, :data:`MAX_EXPIRY_DAYS` days] (operators are held to
        at least :data:`MIN_EXPIRY_DAYS` by :func:`check_expires_days`); ``KeyError`` if the
        version is not published. ``target``'s device id or group name must be one a device can
        be registered with (:func:`_check_target`). Given ``has_device`` (whether a device id
        is registered: :meth:`edgewise.security.Security.has_device`, as the gateway's route
        and ``edgewise registry rollout`` pass it), a ``device:<id>`` target must name a
        registered device: a release to an unregistered id would wait for whichever device is
        registered under it later (checked last, inside the transaction that signs, so a
        device deleted meanwhile has its release withdrawn). The version's stored blob must be
        intact (the size and sha256 published; :class:`SignatureError`, reason
        ``"blob_damaged"``, if not: publish it again). Nothing refused spends a release
        counter.

        Going back is explicit: a version published before one that a device the target
        reaches can already receive (the newest release of ``name`` to the target, to that
        device or to any of its groups, of any format and of the version's own format: a
        device is offered the newest release in the formats it runs, which a later release
        in another format does not replace) is signed only with ``kind="rollback"``
        (:meth:`rollback`), and ``kind="rollback"`` only for such a version (or to re-sign the
        rollback order the target has); else :class:`InvalidParameterError`. A device's floor
        (the version it was offered through a group it left, :meth:`check_group_change`)
        counts as a release to it. Versions are ordered by when they were published on this
        registry (:attr:`ModelVersion.seq`), not by their text ("beta") nor by the clock.

        A device's own rollback order holds against its groups: a release to a group (a
        rollback order included) is refused (:class:`InvalidParameterError`, field
        ``keep_rollbacks``, naming the devices) when it would move a member off the rollback
        order to ``device:<id>`` that it is offered now of the model in that format, to a
        newer version (re-signing the group's release before it expires did, silently).
        Either roll the newer version out to that device first (it moves on, on purpose), or
        pass ``keep_rollbacks=True``: each such rollback order is signed again (a new counter,
        the same expiry as this release), in the same transaction, just after this release,
        so the device is never offered the newer version; they are this release's
        :attr:`SignedArtifact.kept`.

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp(), device_groups=lambda: {"pump-7": ["line-a"]})
        >>> for v in ("1.1.0", "1.2.0"):
        ...     _ = reg.publish("ewz", v, v.encode(), format="pickle")
        >>> _ = reg.rollout("ewz", "1.2.0", "group:line-a")
        >>> reg.rollout("ewz", "1.1.0", "device:pump-7")
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: Version '1.1.0' of 'ewz' for 'device:pump-7' is older than '1.2.0', already released to 'group:line-a', which reaches device 'pump-7' too: going back is an explicit rollback order; roll it out with --rollback (kind='rollback').
        >>> reg.rollout("ewz", "1.1.0", "device:pump-7", kind="rollback").manifest.kind
        'rollback'
        """  # noqa: E501
        _check_label(name, "name", "Registry.rollout")
        _check_label(version, "version", "Registry.rollout")
        self._check_lengths(name, version, "Registry.rollout")
        _check_target(target)
        if not (isinstance(expires_in_s, int | float) and math.isfinite(expires_in_s)
                and 0 < expires_in_s <= MAX_EXPIRY_DAYS * 86400):
            raise InvalidParameterError(
                f"The 'expires_in_s' parameter of Registry.rollout must be a number of seconds "
                f"in (0, {MAX_EXPIRY_DAYS * 86400}]. Got {expires_in_s!r} instead."
            )
        if kind not in ("release", "rollback"):
            raise InvalidParameterError(
                "The 'kind' parameter of Registry.rollout must be one of 'release', 'rollback'. "
                f"Got {kind!r} instead.", field="kind", value=kind)
        mv = self.version(name, version)
        bad = [k for k, v in mv.metrics.items() if not math.isfinite(v)]
        if bad:  # published before metrics were checked: a manifest cannot carry them
            raise InvalidParameterError(
                f"Model {name!r} version {version!r} has metric {bad[0]!r} = "
                f"{mv.metrics[bad[0]]!r}, which a signed manifest (strict JSON) cannot carry; "
                "publish a new version with finite metrics.", field="version", value=version)
        payload = self._intact_blob(mv.sha256, mv.size, f"{name!r} version {version!r}")
        with self._lock:
            key = self.signing_key()
            return self._sign_next(name, version, target, mv, payload, expires_in_s, kind, key,
                                   has_device, keep_rollbacks)

    @staticmethod
    def _reached(target: str, reach: Mapping[str, list[str]]) -> list[str]:
        """The devices a release to ``target`` goes to (``reach`` from :meth:`_reach`).

        >>> Registry._reached("group:a", {"group:a": [], "device:p7": ["p7"]})
        ['p7']
        """
        kind, _, ident = target.partition(":")
        if kind == "device":
            return [ident]
        return sorted({d for ds in reach.values() for d in ds})

    def _groups_of_devices(self) -> dict[str, set[str]]:
        """Each device's groups: from ``device_groups`` if given, else from the credentials
        (none while ``security.sqlite`` does not exist: opening it would make it), read by
        :func:`_read_device_groups`, which never waits for a writer of that file."""
        if self._device_groups is not None:
            return {str(d): {str(g) for g in gs} for d, gs in self._device_groups().items()}
        path = self.data_dir / "security.sqlite"
        if not path.exists():
            return {}
        return _read_device_groups(path)

    def _reach(self, target: str) -> dict[str, list[str]]:
        """The targets whose releases reach a device that ``target`` reaches, each with those
        devices: ``target`` itself, and for each of its devices (the device of
        ``device:<id>``, the members of ``group:<name>``) its own target and its groups'.

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp(), device_groups=lambda: {
        ...     "p7": ["a", "b"], "p8": ["a"], "p9": ["c"]})
        >>> reg._reach("group:b")
        {'group:b': [], 'device:p7': ['p7'], 'group:a': ['p7']}
        """
        kind, _, ident = target.partition(":")
        groups = self._groups_of_devices()
        devices = [ident] if kind == "device" else sorted(
            d for d, gs in groups.items() if ident in gs)
        reach: dict[str, list[str]] = {target: []}
        for d in devices:
            for t in (f"device:{d}", *(f"group:{g}" for g in sorted(groups.get(d, ())))):
                seen = reach.setdefault(t, [])
                if t != target:
                    seen.append(d)
        return reach

    def check_group_change(self, device_id: str, before: Iterable[str],
                           after: Iterable[str]) -> None:
        """Refuse to move device ``device_id`` from groups ``before`` to groups ``after`` when
        that would hand it an older version of a model without a signed rollback order
        (:class:`InvalidParameterError`, field ``groups``, naming the release, the one it is
        offered now, and the rollout or rollback order to sign first); else note what it
        leaves behind. :meth:`edgewise.security.Security.set_device_groups` runs it.

        Per model, the device is offered the newest release (by counter) to it or to its
        groups. A change is refused when, after it, that release would be another one, of a
        version published before the one it is offered now (or before its floor): joining a
        group that holds an older version (its agent would install it, as it has a newer
        counter), or leaving the group whose newer version it was offered (its agent would
        refuse the older release it falls back to, and a later release of that older version
        to the device alone would be signed as a plain release and installed). A device that
        leaves the last target offering it a model keeps that version as its *floor*: releases
        of the model that reach it later are checked against it (:meth:`rollout`) until one
        is signed for it. A release of the same or a newer version is never refused (a lower
        counter is refused by the agent, which keeps its version until the next release).

        All of it is judged per model *format*, as the device is offered the newest release in
        the formats it runs (:meth:`current` with ``formats``, as the agent asks for
        ``pickle``): a newer release in another format (a C build for a group's firmware
        devices) neither hides an older release it would be offered nor refuses a change it
        is never offered; floors are kept per model and format.

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> for v in ("1.0.0", "2.0.0"):
        ...     _ = reg.publish("ewz", v, v.encode(), format="pickle")
        >>> _ = reg.rollout("ewz", "2.0.0", "device:pump-8")
        >>> _ = reg.rollout("ewz", "1.0.0", "group:line-a")
        >>> reg.check_group_change("pump-8", [], ["line-a"])
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: Putting device 'pump-8' in group 'line-a' (from no group) would offer it release 2 of 'ewz', version '1.0.0' (to 'group:line-a'), older than '2.0.0' that it is offered now (release 1, to 'device:pump-8'): a device goes back to an older version only by a signed rollback order. First roll out 'ewz' '2.0.0' (or newer) to 'group:line-a' (edgewise registry rollout ewz 2.0.0 group:line-a), or sign the rollback for the device (edgewise registry rollout ewz 1.0.0 device:pump-8 --rollback); then change its groups.
        """  # noqa: E501
        with self.group_change(device_id, before, after):
            pass

    @contextmanager
    def group_change(self, device_id: str, before: Iterable[str],
                     after: Iterable[str]) -> Iterator[None]:
        """:meth:`check_group_change` as one unit of work with the caller's own: checked on
        entry (refused there), the floors it leaves written in a write transaction of the
        registry that commits only when the block exits without an exception (the block writes
        the groups, and commits them), else is rolled back.
        :meth:`edgewise.security.Security.set_device_groups` runs it inside its own write
        transaction of the groups.

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> _ = reg.publish("ewz", "1.0.0", b"m", format="pickle")
        >>> _ = reg.rollout("ewz", "1.0.0", "group:line-a")
        >>> with reg.group_change("pump-8", ["line-a"], []):
        ...     pass  # the groups are written (and committed) here
        >>> reg._db.execute("SELECT version, format FROM floors").fetchall()
        [('1.0.0', 'pickle')]
        """
        import shlex

        old_t = set(_targets_of(device_id, before)[0])
        new_t = set(_targets_of(device_id, after)[0])
        if old_t == new_t:
            yield
            return
        every = sorted(old_t | new_t)
        with self._write_tx():
            # each release the device may be offered, in any format: the selection of
            # current(); the newest per model and format is what current(formats=[f]) offers
            rows = self._db.execute(*_offer_sql(
                "r.release, r.name, r.version, r.target, v.seq, v.format", every, None
            )).fetchall()
            floors = {(str(f[1]), str(f[5])): f for f in self._db.execute(
                "SELECT f.release, f.name, f.version, f.target, v.seq, f.format FROM floors "
                "f JOIN versions v ON v.name = f.name AND v.version = f.version WHERE "
                "f.device_id = ?", (device_id,)).fetchall()}
            was: dict[tuple[str, str], tuple[Any, ...]] = {}
            will: dict[tuple[str, str], tuple[Any, ...]] = {}
            for row in rows:
                if row[4] is None:  # no version row: offered in no format asked for
                    continue
                key = (str(row[1]), str(row[5]))
                for targets, newest in ((old_t, was), (new_t, will)):
                    if row[3] in targets and (key not in newest or row[0] > newest[key][0]):
                        newest[key] = row
            for key in sorted(set(was) | set(floors)):
                b, f, a = was.get(key), floors.get(key), will.get(key)
                if a is None or (b is not None and a[0] == b[0]):
                    continue
                level = max((x for x in (b, f) if x is not None), key=lambda x: int(x[4]))
                if int(a[4]) < int(level[4]):
                    raise self._group_change_error(device_id, before, after, a, level,
                                                   level is f, shlex.quote)
            for key, b in was.items():  # offered no release of it after: its floor
                f = floors.get(key)
                if key not in will and (f is None or int(f[4]) < int(b[4])):
                    self._db.execute(
                        "INSERT OR REPLACE INTO floors (device_id, name, version, release, "
                        "target, format) VALUES (?,?,?,?,?,?)",
                        (device_id, key[0], b[2], b[0], b[3], key[1]))
            yield

    @staticmethod
    def _group_change_error(device_id: str, before: Iterable[str], after: Iterable[str],
                            a: tuple[Any, ...], b: tuple[Any, ...], floor: bool,
                            quote: Callable[[str], str]) -> InvalidParameterError:
        """The refusal of :meth:`check_group_change`: release ``a`` (``release, name,
        version, target, seq``) would be offered, older than ``b`` (a release or a floor)."""
        def named(groups: Iterable[str]) -> str:
            gs = sorted(set(groups))
            if not gs:
                return "no group"
            return ("group " if len(gs) == 1 else "groups ") + ", ".join(map(repr, gs))

        new = sorted(set(after))
        if not new:
            change = f"Taking device {device_id!r} out of {named(before)}"
        elif not set(before):
            change = f"Putting device {device_id!r} in {named(new)} (from no group)"
        else:
            change = (f"Changing the groups of device {device_id!r} from {named(before)} to "
                      f"{named(new)}")
        release, name, version, target = int(a[0]), str(a[1]), str(a[2]), str(a[3])
        now = (f"which it was offered (release {b[0]}, to {b[3]!r}) before it left that target"
               if floor else f"that it is offered now (release {b[0]}, to {b[3]!r})")
        forward = (f"edgewise registry rollout {quote(name)} {quote(str(b[2]))} "
                   f"{quote(target)}")
        back = (f"edgewise registry rollout {quote(name)} {quote(version)} "
                f"{quote('device:' + device_id)} --rollback")
        return InvalidParameterError(
            f"{change} would offer it release {release} of {name!r}, version {version!r} (to "
            f"{target!r}), older than {str(b[2])!r} {now}: a device goes back to an older "
            f"version only by a signed rollback order. First roll out {name!r} {str(b[2])!r} "
            f"(or newer) to {target!r} ({forward}), or sign the rollback for the device "
            f"({back}); then change its groups.", field="groups", value=new)

    def _check_direction(self, name: str, version: str, target: str, mv: ModelVersion,
                         kind: str, reach: Mapping[str, list[str]]) -> None:
        """Refuse a downgrade not signed as a rollback, and a rollback that is no downgrade
        (inside the write transaction of :meth:`_sign_next`): against the newest release of
        ``name`` to each target in ``reach`` (:meth:`_reach`), what the devices the release
        goes to can already receive, and against their floors (:meth:`check_group_change`)."""
        marks = ",".join("?" * len(reach))
        # per target its newest release of any format, and its newest in this version's
        # format: what a device asking for that format is offered (current()), which a
        # newer-numbered release in another format (a rollback order to an older C build)
        # does not replace; judged by the first alone, an older pickle went out as a plain
        # release to a device offered a newer one
        rows = self._db.execute(
            "SELECT r.target, r.version, r.kind, v.seq, r.release FROM releases r "
            "JOIN versions v ON v.name = r.name AND v.version = r.version WHERE r.release IN "
            "(SELECT MAX(release) FROM releases WHERE name = ? AND target IN "
            f"({marks}) GROUP BY target) OR r.release IN (SELECT MAX(f.release) FROM "
            "releases f JOIN versions fv ON fv.name = f.name AND fv.version = f.version "
            f"WHERE f.name = ? AND fv.format = ? AND f.target IN ({marks}) GROUP BY f.target)",
            [name, *reach, name, mv.format, *reach]).fetchall()
        devices = self._reached(target, reach)
        floors = self._db.execute(
            "SELECT f.device_id, f.version, f.target, v.seq, f.release, f.format FROM floors f "
            "JOIN versions v ON v.name = f.name AND v.version = f.version WHERE f.name = ? AND "
            f"f.device_id IN ({','.join('?' * len(devices))})", [name, *devices]).fetchall()
        givens = {str(r[0]): None for r in rows}
        for dev, fv, src, fseq, frel, ffmt in floors:  # what a device was offered before
            label = f"floor:{dev}:{ffmt}"
            rows.append((label, fv, "release", fseq, frel))
            givens[label] = (f"which device {dev!r} was offered (release {frel}, to {src!r}) "
                             "before it left that target")
        if not rows:
            if kind == "rollback":
                also = " nor has any device it reaches" if len(reach) > 1 else ""
                raise InvalidParameterError(
                    f"Rollback of {name!r} to {version!r} for {target!r} refused: {target!r} "
                    f"has no release of {name!r} to go back from{also}; roll it out without "
                    "--rollback (kind='release').", field="kind", value=kind)
            return
        # the newest version any of them has; of equals, the target's own, then the latest
        cur_target, cur_version, _, cur_seq, cur_release = max(
            rows, key=lambda r: (int(r[3] or 0), r[0] == target, int(r[4])))
        cur_target, cur_version, cur_seq = str(cur_target), str(cur_version), int(cur_seq or 0)
        # the target's newest release (its own, of any format): a rollback order it has
        own = max((r for r in rows if r[0] == target), key=lambda r: int(r[4]), default=None)
        latest = max((int(r[4]) for r in rows if r[0] == cur_target), default=0)
        given = givens[cur_target] or (
            (f"which {target!r} was last given" if int(cur_release) == latest else
             f"the newest {mv.format!r} release {target!r} was given (release "
             f"{cur_release})")
            if cur_target == target else
            (f"already released to {cur_target!r}" if int(cur_release) == latest else
             f"released to {cur_target!r} (release {cur_release}, its newest in format "
             f"{mv.format!r})") + f", which reaches {_devices(reach[cur_target])} too")
        older = mv.seq < cur_seq
        if older and kind != "rollback":
            what = "" if cur_target == target else f" for {target!r}"
            raise InvalidParameterError(
                f"Version {version!r} of {name!r}{what} is older than {cur_version!r}, "
                f"{given}: going back is an explicit rollback order; roll it out with "
                "--rollback (kind='rollback').", field="kind", value=kind)
        same_order = own is not None and version == own[1] and own[2] == "rollback"
        if kind == "rollback" and not older and not same_order:
            raise InvalidParameterError(
                f"Rollback of {name!r} to {version!r} for {target!r} refused: it is not older "
                f"than {cur_version!r}, {given}; roll it out without --rollback "
                "(kind='release').", field="kind", value=kind)

    def held_rollbacks(self, name: str, target: str,
                       fmt: str) -> list[tuple[str, tuple[Any, ...]]]:
        """The devices of group ``target`` on their own rollback order of ``name`` that a
        release of a new version of ``name`` (format ``fmt``) to it would move off, as
        :meth:`rollout` refuses (unless asked to sign the order again): each as ``(device,
        (release, target, version, kind, seq))`` of the order. Empty for a device target.
        A caller checks this before work that ends in such a release (a federated run)."""
        newest = ModelVersion(name, "", fmt, "", 0, "", {}, 0, seq=2**62)  # what comes next
        with self._lock:
            return self._undone_rollbacks(name, target, newest, self._reach(target))

    def withdraw(self, name: str, version: str) -> bool:
        """Take back ``version`` of ``name`` while no release names it (no device was ever
        offered it): for a publisher whose release was refused after it published. Its
        blob stays (content-addressed: other versions may hold the same bytes). Whether it
        is gone; ``False`` too when the database cannot be written."""
        try:
            with self._write_tx():
                gone = self._db.execute(
                    "DELETE FROM versions WHERE name = ? AND version = ? AND NOT EXISTS "
                    "(SELECT 1 FROM releases WHERE name = ? AND version = ?)",
                    (name, version, name, version)).rowcount
        except (sqlite3.Error, OSError):
            return False
        return bool(gone)

    def _undone_rollbacks(self, name: str, target: str, mv: ModelVersion,
                          reach: Mapping[str, list[str]]) -> list[tuple[str, tuple[Any, ...]]]:
        """The members of group ``target`` that a release of ``mv`` to it would move off their
        own rollback order to a newer version (inside the write transaction of
        :meth:`_sign_next`): each as ``(device, (release, target, version, kind, seq))`` of
        the rollback order it is offered now, the newest release of ``name`` in ``mv``'s
        format to its targets (:meth:`current` with that format), by device id."""
        if not target.startswith("group:"):  # a device: target names its device on purpose
            return []
        devices = self._reached(target, reach)
        if not devices:
            return []
        targets = sorted(set(reach) | {target})
        rows = self._db.execute(
            "SELECT r.release, r.target, r.version, r.kind, v.seq FROM releases r JOIN "
            "versions v ON v.name = r.name AND v.version = r.version WHERE r.name = ? AND "
            f"v.format = ? AND r.target IN ({','.join('?' * len(targets))})",
            [name, mv.format, *targets]).fetchall()
        newest: dict[str, tuple[Any, ...]] = {}
        for row in rows:
            t = str(row[1])
            if t not in newest or int(row[0]) > int(newest[t][0]):
                newest[t] = row
        of_device: dict[str, list[str]] = {}
        for t, ds in reach.items():
            for d in ds:
                of_device.setdefault(d, []).append(t)
        undone = []
        for d in devices:
            offered = [newest[t] for t in (*of_device.get(d, ()), target) if t in newest]
            if not offered:
                continue
            now = max(offered, key=lambda r: int(r[0]))
            if (now[3] == "rollback" and now[1] == f"device:{d}"
                    and mv.seq > int(now[4] or 0)):
                undone.append((d, now))
        return undone

    @staticmethod
    def _undone_error(name: str, version: str, target: str, kind: str,
                      undone: list[tuple[str, tuple[Any, ...]]]) -> InvalidParameterError:
        """The refusal of a group release that would undo its members' rollback orders."""
        import shlex

        d, (release, _, old, _, _) = undone[0]
        what = "Rollback order" if kind == "rollback" else "Release"
        more = (f" (and {_devices([x for x, _ in undone[1:]])} off theirs)"
                if len(undone) > 1 else "")
        forward = (f"edgewise registry rollout {shlex.quote(name)} {shlex.quote(version)} "
                   f"{shlex.quote('device:' + d)}")
        return InvalidParameterError(
            f"{what} of {name!r} {version!r} to {target!r} would move device {d!r} off its "
            f"rollback order to {str(old)!r} (release {release}, to 'device:{d}'), which it is "
            f"offered now, to the newer {version!r}{more}: a device's rollback order is undone "
            f"only on purpose. To keep {'it' if len(undone) == 1 else 'them'} where "
            f"{'it is' if len(undone) == 1 else 'they are'}, run this rollout with "
            "--keep-rollbacks (keep_rollbacks=True), which signs "
            f"{'its rollback order' if len(undone) == 1 else 'their rollback orders'} again "
            f"in the same step; to move {'it' if len(undone) == 1 else 'a device'} to "
            f"{version!r} too, first roll that out to it ({forward}).",
            field="keep_rollbacks", value=False)

    def _sign_next(self, name: str, version: str, target: str, mv: ModelVersion, payload: bytes,
                   expires_in_s: float, kind: str, key: SigningKey,
                   has_device: Callable[[str], bool] | None = None,
                   keep_rollbacks: bool = False) -> SignedArtifact:
        """Check and sign the release, in one write transaction of the registry.

        Which devices ``target`` reaches (:meth:`_reach`, their groups) is read inside it, so
        a group change (:meth:`group_change`, which holds this write lock while it writes
        the groups and commits them) comes wholly before or wholly after this release:
        read before it, a device put in the target's group meanwhile was not checked, and a
        plain release of an older version than the one it runs was signed to it."""
        with self._write_tx():
            reach = self._reach(target)
            self._check_direction(name, version, target, mv, kind, reach)
            undone = self._undone_rollbacks(name, target, mv, reach)
            if undone and not keep_rollbacks:
                raise self._undone_error(name, version, target, kind, undone)
            kind_of, _, ident = target.partition(":")  # last: only what would be signed
            if kind_of == "device" and has_device is not None and not has_device(ident):
                raise InvalidParameterError(
                    f"Target {target!r} names device {ident!r}, which is not registered: a "
                    "release to it would wait for whichever device is registered under that "
                    f"id later. Register it first (edgewise device add {ident}), or roll out "
                    "to a registered device or to a group.", field="target", value=target)
            expires_ns = time.time_ns() + int(expires_in_s * 1e9)
            signed = self._insert_signed(name, version, target, mv, payload, expires_ns,
                                         kind, key)
            kept = []
            for order in sorted({row for _, row in undone}, key=lambda r: int(r[0])):
                old = self.version(name, str(order[2]))  # signed again: its blob is checked
                blob = self._intact_blob(old.sha256, old.size, f"{name!r} version {old.version!r}")
                kept.append(self._insert_signed(name, old.version, str(order[1]), old, blob,
                                                expires_ns, "rollback", key))
            devices = self._reached(target, reach)  # checked against their floors: now this
            self._db.execute(  # release is what they are offered of the model in its format
                f"DELETE FROM floors WHERE name = ? AND format = ? AND device_id IN "
                f"({','.join('?' * len(devices))})", [name, mv.format, *devices])
            # before the commit: a counter the database holds is never above the mark
            self._set_counter_mark(max(int(x.manifest.release) for x in (signed, *kept)))
        if kept:
            signed = SignedArtifact(signed.manifest_bytes, signed.signature, signed.payload,
                                    tuple(kept))
        return signed

    def _insert_signed(self, name: str, version: str, target: str, mv: ModelVersion,
                       payload: bytes, expires_ns: int, kind: str,
                       key: SigningKey) -> SignedArtifact:
        """Sign and store the release of ``version`` to ``target`` with the next counter
        (inside the write transaction of :meth:`_sign_next`)."""
        (last,) = self._db.execute(  # withdrawn counters are never handed out again
            "SELECT MAX(COALESCE((SELECT MAX(release) FROM releases), 0), "
            "COALESCE((SELECT MAX(release) FROM withdrawn), 0))").fetchone()
        last = max(int(last), self._counter_mark())  # nor those of a database set aside
        art = Artifact(
            payload, name, version, last + 1, target, mv.format, expires_ns, kind,
            {"trained_on": mv.trained_on, "metrics": mv.metrics},
        )
        signed = sign(art, key)
        self._db.execute(
            "INSERT INTO releases VALUES (?,?,?,?,?,?,?,?)",
            (art.release, name, version, target, kind, time.time_ns(),
             signed.manifest_bytes, signed.signature),
        )
        return signed

    def _counter_mark(self) -> int:
        """The highest release counter this registry signed, as :data:`COUNTER_FILE` beside
        its key keeps it (0 if there is none, or it holds no counter: the database's then)."""
        try:
            text = (self.root / COUNTER_FILE).read_text().strip()
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            logging.getLogger(__name__).warning(
                "registry: %s cannot be read (%s); release counters continue from the "
                "database's", self.root / COUNTER_FILE, exc)
            return 0
        if not (text.isascii() and text.isdigit()):
            logging.getLogger(__name__).warning(
                "registry: %s holds %r, not a release counter; release counters continue from "
                "the database's", self.root / COUNTER_FILE, text[:40])
            return 0
        return int(text)

    def _set_counter_mark(self, release: int) -> None:
        """Keep ``release`` in :data:`COUNTER_FILE` (inside the write transaction that signed
        it), unless the file holds a higher one already."""
        if release > self._counter_mark():
            replace_atomically(self.root / COUNTER_FILE, f"{release}\n".encode())

    def rollback(self, name: str, to_version: str, target: str, **kw: Any) -> SignedArtifact:
        """Sign an explicit rollback order: a new release whose payload is ``to_version``."""
        return self.rollout(name, to_version, target, kind="rollback", **kw)

    def releases(self, target: str | None = None) -> list[Release]:
        """Releases, oldest first, optionally for one target (``None``: every target; ``""``
        is a target no release has, as :meth:`versions` takes ``""``: it listed every
        release, as if for that target).

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> _ = reg.publish("m", "1.0.0", b"x", format="bin")
        >>> _ = reg.rollout("m", "1.0.0", "group:a")
        >>> len(reg.releases()), len(reg.releases("group:a")), len(reg.releases(""))
        (1, 1, 0)
        >>> reg.close()
        """
        one = target is not None
        if one and not isinstance(target, str):
            raise InvalidParameterError(
                "The 'target' parameter of Registry.releases must be a release target "
                f"({TARGET_ALLOWED}), or None for every target. Got {target!r} "
                f"({type(target).__name__}) instead.", field="target", value=target)
        if one:
            _check_utf8(target, "target", "Registry.releases")
        q = "SELECT * FROM releases" + (" WHERE target = ?" if one else "") + " ORDER BY release"
        with self._lock:
            rows = self._db.execute(q, (target,) if one else ()).fetchall()
        return [Release(*r) for r in rows]

    def withdraw_device(self, device_id: str) -> list[Release]:
        """Withdraw every release aimed at ``device:<device_id>``; return them, oldest first.

        For a deleted device: a device registered again under the same id must not be served
        the old device's releases. Releases to groups stay (a group is not the device's), and so
        do the model versions and their blobs (published models, not the device's data). The
        withdrawn release counters are never handed out again, so the releases that follow stay
        newer than any an agent installed.

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> _ = reg.publish("ewz", "1.0.0", b"model", format="pickle")
        >>> _ = reg.rollout("ewz", "1.0.0", "device:pump-1")
        >>> _ = reg.rollout("ewz", "1.0.0", "group:line-a")
        >>> [r.release for r in reg.withdraw_device("pump-1")]
        [1]
        >>> reg.current("pump-1") is None, [r.target for r in reg.releases()]
        (True, ['group:line-a'])
        >>> reg.rollout("ewz", "1.0.0", "device:pump-1").manifest.release
        3
        """
        target = f"device:{device_id}"
        with self._write_tx():
            rows = self._db.execute(
                "SELECT * FROM releases WHERE target = ? ORDER BY release", (target,)
            ).fetchall()
            gone = [Release(*r) for r in rows]
            now = time.time_ns()
            self._db.executemany(
                "INSERT OR REPLACE INTO withdrawn VALUES (?,?,?)",
                [(r.release, str(json.loads(r.manifest_bytes).get("key_id", "unknown")), now)
                 for r in gone])
            self._db.execute("DELETE FROM releases WHERE target = ?", (target,))
            self._db.execute("DELETE FROM floors WHERE device_id = ?", (device_id,))
        return gone

    def serves(self, sha256: str, device_id: str, groups: Iterable[str] = ()) -> bool:
        """Whether a release aimed at this device or one of its groups carries the model
        ``sha256``: the models such a device may fetch (``GET /v1/models/{sha256}``).

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> mv = reg.publish("m", "1.0.0", b"abc", format="pickle")
        >>> _ = reg.rollout("m", "1.0.0", "group:line-a")
        >>> reg.serves(mv.sha256, "pump-1", ["line-a"]), reg.serves(mv.sha256, "pump-2")
        (True, False)
        """
        targets, marks = _targets_of(device_id, groups)
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM releases r JOIN versions v ON v.name = r.name AND "
                f"v.version = r.version WHERE v.sha256 = ? AND r.target IN ({marks}) LIMIT 1",
                [sha256, *targets],
            ).fetchone()
        return row is not None

    def current(self, device_id: str, groups: Iterable[str] = (), *,
                formats: Iterable[str] | None = None) -> Release | None:
        """The newest release aimed at this device or one of its groups, if any.

        ``formats``, if given, are the model formats the asking device runs: only a release
        of a version published in one of them is the answer, so a newer release in a format
        the device cannot run (a C export for a group's firmware devices) does not hide an
        older one it can. None: any format (what an agent that does not say gets).

        >>> import tempfile
        >>> reg = Registry(tempfile.mkdtemp())
        >>> _ = reg.publish("ewz", "1.0.0", b"pickled", format="pickle")
        >>> _ = reg.publish("clik", "1.0.0", b"/* C */", format="c")
        >>> _ = reg.rollout("ewz", "1.0.0", "device:pump-1")
        >>> _ = reg.rollout("clik", "1.0.0", "group:line-a")
        >>> reg.current("pump-1", ["line-a"]).name
        'clik'
        >>> reg.current("pump-1", ["line-a"], formats=["pickle"]).name
        'ewz'
        >>> reg.current("pump-1", ["line-a"], formats=["onnx"]) is None
        True
        """
        targets, _ = _targets_of(device_id, groups)
        if formats is not None:
            formats = sorted(set(formats))
            if not formats:
                return None
        sql, args = _offer_sql("r.*", targets, formats)
        with self._lock:
            row = self._db.execute(sql + " ORDER BY r.release DESC LIMIT 1", args).fetchone()
        return Release(*row) if row else None


# -- audit entries missed: the registry and the audit log are two databases ---------------
# A publish or rollout (``edgewise registry publish|rollout``, a federated run's
# :func:`edgewise.federated.publish.register_global_model`) commits its version or release
# first and its audit entry (``model.publish``, ``model.rollout``) right after, inside the
# audit log's write lock (``Security.transaction``); a process stopped between the two
# (killed, a full disk) leaves a version or release with no entry. The next such command
# finds them with these and records them, marked ``late`` with one of these notes.

#: The ``note`` of a ``model.publish`` entry recorded late.
LATE_PUBLISH_NOTE = ("recorded late: this version was stored with no model.publish entry (the "
                     "publish that stored it stopped before its entry was written: killed, or "
                     "the audit log could not be written; or it predates audited publishes)")
#: The ``note`` of a ``model.rollout`` entry recorded late.
LATE_ROLLOUT_NOTE = ("recorded late: this release was signed with no model.rollout entry (the "
                     "rollout that signed it stopped before its entry was written, or it "
                     "predates audited rollouts)")


def _audit_details(sec: Any, action: str, target: str | None = None) -> list[dict[str, Any]]:
    """The details (JSON objects), with ``"_target"`` added, of the committed ``action``
    entries (on ``target``; ``None``: on any) in the audit log of ``sec`` (a
    :class:`edgewise.security.Security`), read from a read-only connection: what was
    committed, not the entries of the caller's own open transaction. An entry whose detail
    is no JSON object (edited on disk) records nothing and is skipped."""
    from edgewise.security.credentials import open_read_only

    db, _uri = open_read_only(sec.path)
    try:
        rows = db.execute("SELECT target, detail FROM audit WHERE action = ?"
                          + ("" if target is None else " AND target = ?"),
                          (action,) if target is None else (action, target)).fetchall()
    finally:
        db.close()
    details = []
    for where, text in rows:
        try:
            detail = json.loads(text)
        except (TypeError, ValueError):
            continue
        if isinstance(detail, dict):
            details.append({**detail, "_target": where})
    return details


def _publishes_recorded(sec: Any, name: str) -> set[tuple[Any, Any]]:
    """The (version, sha256) pairs of model ``name`` that a ``model.publish`` entry of
    ``sec``'s audit log records as published (an entry of a publish ``again`` records no
    publish of its own)."""
    return {(d.get("version"), d.get("sha256"))
            for d in _audit_details(sec, "model.publish", name) if not d.get("again")}


def publish_audited(sec: Any, mv: ModelVersion) -> bool:
    """Whether the audit log of ``sec`` (a :class:`edgewise.security.Security`) records
    ``mv`` as published: a ``model.publish`` entry of its name for its version and bytes
    (sha256) that is not only a publish of it again (``again``). Call it inside
    ``sec.transaction()``: no other writer can add that entry before the block commits.

    >>> import tempfile
    >>> from edgewise.security import Security
    >>> d = Path(tempfile.mkdtemp())
    >>> mv = Registry(d).publish("m", "1.0.0", b"x", format="bin")
    >>> sec = Security(d)
    >>> publish_audited(sec, mv)
    False
    >>> sec.audit("cli", "model.publish", "m", {"version": "1.0.0", "sha256": mv.sha256})
    >>> publish_audited(sec, mv)
    True
    >>> sec.close()
    """
    return (mv.version, mv.sha256) in _publishes_recorded(sec, mv.name)


def unaudited_versions(sec: Any, reg: Registry, name: str, *,
                       besides: Iterable[str] = ()) -> list[ModelVersion]:
    """The published versions of model ``name`` in ``reg`` (but those named in
    ``besides``) that no ``model.publish`` entry of ``sec``'s audit log records
    (:func:`publish_audited`), oldest first: stored by a publish that stopped before its
    entry committed. Call it inside ``sec.transaction()``, as :func:`publish_audited`.

    >>> import tempfile
    >>> from edgewise.security import Security
    >>> d = Path(tempfile.mkdtemp())
    >>> reg = Registry(d)
    >>> mv = reg.publish("m", "1", b"x", format="bin")
    >>> _ = reg.publish("m", "2", b"y", format="bin")
    >>> sec = Security(d)
    >>> [v.version for v in unaudited_versions(sec, reg, "m", besides=["2"])]
    ['1']
    >>> sec.audit("cli", "model.publish", "m", {"version": "1", "sha256": mv.sha256})
    >>> unaudited_versions(sec, reg, "m", besides=["2"])
    []
    >>> sec.close(); reg.close()
    """
    skip = set(besides)
    mine = [v for v in reg.versions(name) if v.version not in skip]
    if not mine:
        return []
    recorded = _publishes_recorded(sec, name)
    return [v for v in mine if (v.version, v.sha256) not in recorded]


def unaudited_releases(sec: Any, reg: Registry, name: str, target: str | None, *,
                       before: int) -> list[Release]:
    """The releases of model ``name`` to ``target`` (``None``: to any target) numbered
    below ``before`` that no ``model.rollout`` entry of ``sec``'s audit log on their target
    records (by release number), oldest first: signed by a rollout that stopped before its
    entry committed. Call it inside ``sec.transaction()``, as :func:`publish_audited`.

    >>> import tempfile
    >>> from edgewise.security import Security
    >>> d = Path(tempfile.mkdtemp())
    >>> reg = Registry(d)
    >>> _ = reg.publish("m", "1.0.0", b"x", format="bin")
    >>> r1 = reg.rollout("m", "1.0.0", "group:a").manifest.release
    >>> sec = Security(d)
    >>> [r.release for r in unaudited_releases(sec, reg, "m", "group:a", before=9)]
    [1]
    >>> sec.audit("cli", "model.rollout", "group:a", {"name": "m", "release": r1})
    >>> unaudited_releases(sec, reg, "m", None, before=9)
    []
    >>> sec.close(); reg.close()
    """
    mine = [r for r in reg.releases(target) if r.name == name and r.release < before]
    if not mine:
        return []
    audited = {(d["_target"], d["release"])
               for d in _audit_details(sec, "model.rollout", target)
               if isinstance(d.get("release"), int) and not isinstance(d.get("release"), bool)}
    return [r for r in mine if (r.target, r.release) not in audited]
