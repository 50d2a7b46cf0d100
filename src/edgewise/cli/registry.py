"""``edgewise registry list|publish|rollout|pubkey|new-key``: model versions and signed releases.

Only ``rollout`` and ``pubkey`` make the signing key, and only for a registry that never had
one; ``list`` never does. A registry whose key was issued but whose ``signing_key.pem`` is gone
(or holds another key, or is damaged: unreadable, no Ed25519 key) refuses ``publish``,
``rollout`` (and ``pubkey`` for another key) with one line (restore the file, or ``new-key``
on purpose); ``list`` still lists.
``publish`` and ``rollout`` are audited (``model.publish``, ``model.rollout``) by ``cli``. The
registry and the audit log are two files: a publish stopped between them (killed, a full disk)
leaves its version published with no ``model.publish`` entry; running it again (the same
bytes) writes that entry then, marked ``late`` (later runs are audited ``again``). A rollout
stopped so leaves a signed release with no ``model.rollout`` entry: the next rollout of that
model to that target writes it, marked ``late``. (A federated run publishes a fresh version
each time: the next federated publish of the model records those of a stopped run.) The
helpers that find them live in :mod:`edgewise.registry`, which both use.
``publish`` refuses a model file over :data:`edgewise.registry.MAX_MODEL_BYTES` (256 MiB,
what an edge agent installs) before reading it, and ``--trained-on`` over
:data:`edgewise.registry.MAX_TRAINED_ON_BYTES` (256 KiB).

``rollout`` refuses, with one line and without spending a release counter: a target whose
device id or group name ``edgewise device add`` would not take (a blank group, ``device:a:b``),
a ``device:<id>`` of no registered device, a group release that would move a member off its
own rollback order (unless ``--keep-rollbacks``), an ``--expires-days`` under one hour
(:data:`edgewise.registry.MIN_EXPIRY_DAYS`) or over 3650, and a version whose stored model is
missing or damaged. ``publish`` with the same bytes (the same command again) rewrites a
damaged stored model.

Every one of them refuses a ``--data-dir`` that does not exist, in one line (exit 2), and
makes nothing there (``pubkey`` and ``new-key`` printed a brand-new key for a typo); only
``publish`` makes the default data directory, so the first publish on a fresh install works.
``list`` shows each release's expiry and marks an expired release devices are still offered
(every agent refuses it) with the rollout that signs it again.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import UTF8_TEXT, DataDir, Json, app, existing_data_dir, fail

#: what ``--format`` (or, without it, the file's suffix) may say, and the format it records
#: (:data:`edgewise.registry.MODEL_FORMATS`, which ``Registry.publish`` holds it to)
_FORMATS = {"pickle": "pickle", "pkl": "pickle", "onnx": "onnx", "c": "c", "npz": "npz",
            "npz-state-dict": "npz-state-dict", "bin": "bin", "": "bin"}
_ALLOWED = ", ".join(sorted({v for v in _FORMATS.values()}))


def model_format(model_file: Path, given: str = "") -> str:
    """The format to record for ``model_file``: ``given`` or its suffix, ``.pkl`` as pickle.

    >>> model_format(Path("build/ewz.pkl")), model_format(Path("m.onnx")), model_format(Path("m"))
    ('pickle', 'onnx', 'bin')
    """
    what = given.strip().lower() if given else model_file.suffix.lstrip(".").lower()
    if given and not what:  # a blank --format recorded 'bin', whatever the file was
        raise ValueError(f"--format must be one of {_ALLOWED}, or left out to take it from "
                         f"the file's suffix. Got {given!r}.")
    if what not in _FORMATS:
        source = (f"--format {given!r}" if given else
                  f"the suffix {model_file.suffix!r} of {str(model_file)!r}")
        # a --format that is wrong is to be corrected, not given (again)
        fix = "give --format one of them" if given else "pass --format"
        raise ValueError(f"Model format from {source} is not one of {_ALLOWED} "
                         f"(.pkl and .pickle mean pickle); {fix}.")
    return _FORMATS[what]


#: a model's name or version, a release's target: text UTF-8 can encode (one line otherwise)
TextArg = Annotated[str, typer.Argument(click_type=UTF8_TEXT, show_default=False)]

registry_app = typer.Typer(help="Model registry: versions, signed releases, rollout.",
                           no_args_is_help=True)
app.add_typer(registry_app, name="registry")


@registry_app.command("list")
def list_cmd(data_dir: DataDir,
             name: Annotated[str, typer.Option(help="Only this model.",
                                               click_type=UTF8_TEXT)] = "",
             json_out: Json = False) -> None:
    """List published versions and releases."""
    import time

    from edgewise.registry import Registry
    from edgewise.security.credentials import cannot_write

    now = time.time_ns()
    # a mistyped --data-dir is refused, not made; a data dir with no registry yet lists
    # nothing, and a listing makes none (registry.sqlite, blobs/)
    root = existing_data_dir(data_dir) / "registry"
    if (root / "registry.sqlite").exists() or any(root.glob("signing_key.*")):
        # read-only where this user may not write it (a backup, a read-only snapshot):
        # the writable open makes the write-ahead log's files and migrates
        reg = Registry(data_dir, read_only=cannot_write(root / "registry.sqlite") is not None
                       and (root / "registry.sqlite").exists())
        try:
            versions = reg.versions(name or None)
            releases = [r for r in reg.releases() if not name or r.name == name]
            state = reg.key_state
            key_id = reg.listed_key_id  # the issued key's even when both key files are gone
            offered = {r.release for r in reg.expired_current(now)}
        finally:
            reg.close()
    else:
        versions, releases, state, key_id, offered = [], [], "none", None, set()
    if json_out:  # strict JSON: a NaN metric published before they were checked is null
        typer.echo(json.dumps(_strict_json({
            "key_id": key_id,
            "key_state": state,
            "versions": [v.__dict__ for v in versions],
            "releases": [r.listing(now) for r in releases],
        }), allow_nan=False))
        return
    typer.echo({"ok": f"signing key {key_id}",
                "none": "signing key: none yet (made at the first rollout, gateway start or "
                        "'registry pubkey')",
                "lost": f"signing key {key_id}: LOST (signing_key.pem is gone; publish and "
                        "rollout are refused until it is restored, or 'registry new-key')",
                "mismatch": f"signing key {key_id}: MISMATCH (signing_key.pem holds another "
                            "key; publish and rollout are refused until the issued key is "
                            "restored, or 'registry new-key')",
                "damaged": f"signing key {key_id}: DAMAGED (signing_key.pem cannot be read "
                           "or holds no Ed25519 key; publish and rollout are refused until "
                           "it is restored from a backup, or moved away)"}[state])
    for v in versions:  # one line each: text stored by an older version is shown escaped
        typer.echo(f"{_shown(v.name)} {_shown(v.version)}  {_shown(v.format)}  {v.size} B  "
                   f"sha256 {v.sha256[:16]}  trained on {_shown(v.trained_on) or '-'}  "
                   f"{v.metrics}")
    for r in releases:  # offered: expired, and still offered
        row = r.listing(now)
        expiry = (f"EXPIRED {row['expires']} (devices refuse it; sign it again: "
                  f"{r.rerun_command()})" if r.release in offered else
                  f"expired {row['expires']}" if row["expired"] else f"expires {row['expires']}")
        typer.echo(f"release {r.release}: {_shown(r.name)} {_shown(r.version)} -> {r.target} "
                   f"({r.kind})  {expiry}")


def _shown(text: str) -> str:
    """``text`` as ``registry list`` prints it: as it is where every character is printable,
    else escaped as Python writes a string (no quotes), so a newline or an escape sequence
    stored by an older version neither makes a line of its own nor drives the terminal.

    >>> _shown("NAB realKnownCause"), _shown("NAB\\newz 9.9.9")
    ('NAB realKnownCause', 'NAB\\\\newz 9.9.9')
    """
    return text if text.isprintable() else repr(text)[1:-1]


def _strict_json(obj: object) -> object:
    """``obj`` with every non-finite float made ``None``, so it dumps as strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict_json(v) for v in obj]
    return obj


def parse_metric(text: str) -> tuple[str, float]:
    """One ``--metric NAME=VALUE``: a non-empty name and a finite number, else ``ValueError``
    with the one-line message to print.

    >>> parse_metric("auc=0.81")
    ('auc', 0.81)
    >>> parse_metric("auc=nan")
    Traceback (most recent call last):
    ...
    ValueError: --metric must be NAME=NUMBER with a finite NUMBER. Got 'auc=nan' instead.
    """
    k, sep, v = text.partition("=")
    if not sep or not k.strip():
        raise ValueError(f"--metric must be NAME=NUMBER with a non-empty NAME. Got {text!r} "
                         "instead.")
    try:
        value = float(v)
    except ValueError:
        raise ValueError(f"--metric must be NAME=NUMBER. Got {text!r} instead.") from None
    if not math.isfinite(value):
        raise ValueError(f"--metric must be NAME=NUMBER with a finite NUMBER. Got {text!r} "
                         "instead.")
    return k, value


@registry_app.command("publish")
def publish_cmd(
    name: TextArg, version: TextArg, model_file: Path, data_dir: DataDir,
    format: Annotated[str, typer.Option(
        "--format", help=f"One of {_ALLOWED}; by default from the file's suffix (.pkl: pickle). "
        "The edge agent runs pickle.", click_type=UTF8_TEXT)] = "",
    trained_on: Annotated[str, typer.Option(help="Data the model learned from.",
                                            click_type=UTF8_TEXT)] = "",
    metric: Annotated[list[str], typer.Option(help="NAME=VALUE, repeatable.",
                                              click_type=UTF8_TEXT)] = [],  # noqa: B006
) -> None:
    """Publish MODEL_FILE as NAME VERSION.

    Publishing a version again with the same file and options changes nothing but checks its
    stored model, and rewrites it if it was damaged on disk. The data directory must exist
    (a mistyped --data-dir is refused), except the default one, which the first publish on
    a fresh install makes.
    """
    from edgewise.errors import InvalidParameterError
    from edgewise.registry import (
        LATE_PUBLISH_NOTE,
        MAX_MODEL_BYTES,
        Registry,
        check_lengths,
        publish_audited,
    )

    _publish_data_dir(data_dir)
    if not (data_dir / "registry" / "registry.sqlite").exists():
        try:  # before anything is made; else the registry refuses (older versions aside)
            check_lengths(name, version, "edgewise registry publish")
        except InvalidParameterError as exc:
            raise fail(str(exc)) from None
    if model_file.is_dir():
        raise fail(f"Model file {str(model_file)!r} is a directory; give the model file to "
                   "publish, e.g. model.pkl.")
    if not model_file.is_file():
        if model_file.exists():  # a FIFO, a device, a socket: it was said not to exist
            raise fail(f"Model file {str(model_file)!r} is not a regular file (a pipe, device "
                       "or socket); save the model to a file and give that file.")
        raise fail(f"Model file {str(model_file)!r} does not exist.")
    size = model_file.stat().st_size
    if size > MAX_MODEL_BYTES:  # refused before it is read (every agent refuses it)
        raise fail(f"Model file {str(model_file)!r} is {size} bytes ({size / 2**20:.1f} MiB); "
                   f"models are at most {MAX_MODEL_BYTES} bytes ({MAX_MODEL_BYTES // 2**20} "
                   "MiB), what an edge agent installs: every device would refuse it as "
                   "too_large. Make the model smaller.")
    if size == 0:  # it was published, and signed for every device
        raise fail(f"Model file {str(model_file)!r} is empty (0 bytes): no model in any "
                   "format is; give the exported model file (an export that failed, or a "
                   "file truncated on the way, leaves an empty one).")
    metrics = {}
    for m in metric:
        try:
            k, value = parse_metric(m)
        except ValueError as exc:
            raise fail(str(exc)) from None
        if metrics.get(k, value) != value:  # the last was kept, the others dropped unsaid
            raise fail(f"--metric {k!r} is given more than once ({metrics[k]:g} and "
                       f"{value:g}); give each metric once.")
        metrics[k] = value
    try:
        fmt = model_format(model_file, format)
    except ValueError as exc:
        raise fail(str(exc)) from None
    from edgewise.errors import SignatureError
    from edgewise.security import Security

    payload = model_file.read_bytes()
    reg = Registry(data_dir)
    sec = Security(data_dir)
    try:
        # the audit log's write lock first: the version is published only where its
        # entry can be written, and the entry commits with it (Security.transaction)
        with sec.transaction():
            try:
                reg.version(name, version)
            except KeyError:
                again = False
            else:  # the very version again (if the same bytes): its stored model is checked
                again = True
            mv = reg.publish(name, version, payload, format=fmt, trained_on=trained_on,
                             metrics=metrics)
            # a version published by a process that stopped before its entry committed
            # (killed, a full disk) has none: this publish records it, saying so
            late = again and not publish_audited(sec, mv)
            sec.audit("cli", "model.publish", name, {
                "version": version, "sha256": mv.sha256, "size": mv.size,
                "format": mv.format, **({"late": True, "note": LATE_PUBLISH_NOTE} if late else
                                        {"again": True} if again else {})})
    except (InvalidParameterError, SignatureError) as exc:
        raise fail(str(exc)) from None
    finally:
        sec.close()
        reg.close()
    if late:
        typer.echo(f"{mv.name} {mv.version} was already published with these bytes ({mv.size} "
                   f"B, sha256 {mv.sha256[:16]}) by a publish that stopped before it was "
                   "audited: its model.publish entry is recorded now; its stored model is "
                   "intact (rewritten if it was damaged)")
        return
    if again:
        typer.echo(f"{mv.name} {mv.version} was already published with these bytes ({mv.size} "
                   f"B, sha256 {mv.sha256[:16]}); its stored model is intact (rewritten if it "
                   "was damaged)")
        return
    typer.echo(f"published {mv.name} {mv.version} ({mv.size} B, sha256 {mv.sha256[:16]})")


def _publish_data_dir(data_dir: Path) -> Path:
    """The data directory ``publish`` writes to: one that exists (else the one-line refusal
    of :func:`existing_data_dir`: a mistyped ``--data-dir`` would take the model to a new
    registry nobody serves), or the default data directory, which a first publish on a fresh
    install (no ``--data-dir``, no ``EDGEWISE_DATA_DIR``) makes.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _publish_data_dir(d) == d
    True
    """
    from edgewise.config import default_data_dir

    if not data_dir.exists() and data_dir.resolve() == default_data_dir().resolve():
        return data_dir
    return existing_data_dir(data_dir)


@registry_app.command("rollout")
def rollout_cmd(
    name: TextArg, version: TextArg, target: TextArg, data_dir: DataDir,
    expires_days: Annotated[float, typer.Option(
        help="Manifest lifetime in days, at least one hour (1/24, so devices can fetch it "
             "before it expires) and at most 3650.")] = 30.0,
    rollback: Annotated[bool, typer.Option(
        help="Sign an explicit rollback order: required to go back to a version published "
             "before the one TARGET was last given, refused otherwise.")] = False,
    keep_rollbacks: Annotated[bool, typer.Option(
        help="For a group: keep each member that runs its own rollback order (device:<id> "
             "--rollback) on it, by signing that order again in the same step; without it "
             "such a rollout is refused, naming the devices.")] = False,
) -> None:
    """Sign a release of NAME VERSION for TARGET (device:<id> of a registered device, or
    group:<name>)."""
    from edgewise.errors import InvalidParameterError, SignatureError
    from edgewise.registry import (
        LATE_ROLLOUT_NOTE,
        Registry,
        check_expires_days,
        unaudited_releases,
    )
    from edgewise.security import Security

    existing_data_dir(data_dir)  # a mistyped one: nothing was published there, nothing made
    try:
        days = check_expires_days(expires_days, "--expires-days")
        reg = Registry(data_dir)
        sec = Security(data_dir)  # a device: target must be a registered device
        try:
            # the audit log's write lock first: the release is signed only where its
            # entries can be written, and they commit with it (Security.transaction)
            with sec.transaction():
                s = reg.rollout(name, version, target, expires_in_s=days * 86400,
                                kind="rollback" if rollback else "release",
                                has_device=sec.has_device, keep_rollbacks=keep_rollbacks)
                m = s.manifest
                sec.audit("cli", "model.rollout", target, {
                    "name": name, "version": version, "release": m.release,
                    "kind": m.kind})
                for k in (x.manifest for x in s.kept):  # --keep-rollbacks: signed again
                    sec.audit("cli", "model.rollout", k.target, {
                        "name": name, "version": k.version, "release": k.release,
                        "kind": k.kind, "kept_with": m.release})
                # an earlier release of it to the target whose rollout stopped before its
                # entry committed (killed: the same command again) is recorded now
                late = unaudited_releases(sec, reg, name, target, before=m.release)
                for r in late:
                    sec.audit("cli", "model.rollout", target, {
                        "name": name, "version": r.version, "release": r.release,
                        "kind": r.kind, "late": True, "note": LATE_ROLLOUT_NOTE})
        finally:
            sec.close()
            reg.close()
    except (InvalidParameterError, SignatureError) as exc:
        raise fail(str(exc)) from None
    except KeyError as exc:
        reg = Registry(data_dir)
        try:
            published = ", ".join(v.version for v in reg.versions(name)) or "none"
        finally:
            reg.close()
        raise fail(f"{exc.args[0]} Published versions of {name!r}: {published} "
                   "(edgewise registry publish NAME VERSION FILE).") from None
    for r in late:
        typer.echo(f"release {r.release} ({name} {r.version} -> {target}, {r.kind}) had no "
                   "audit entry (its rollout stopped before writing it): recorded now")
    typer.echo(f"release {m.release}: {name} {version} -> {target} ({m.kind}), key {m.key_id}")
    for k in (x.manifest for x in s.kept):  # --keep-rollbacks: each order signed again
        typer.echo(f"release {k.release}: {name} {k.version} -> {k.target} ({k.kind}), key "
                   f"{k.key_id} (rollback order kept: signed again)")


@registry_app.command("pubkey")
def pubkey_cmd(data_dir: DataDir) -> None:
    """Print 'KEY_ID BASE64_PUBLIC_KEY', what agents get at enrolment.

    On a registry that never had a key this makes it (agents are enrolled before the first
    rollout); if the private half is lost it prints the public half left and warns.
    """
    from edgewise.errors import SignatureError
    from edgewise.registry import Registry, key_id_of

    # a mistyped --data-dir must not print a brand-new key as if it were the gateway's
    reg = Registry(existing_data_dir(data_dir))
    if reg.key_state == "mismatch":  # enrolling agents with either key would be wrong
        try:
            reg.signing_key()
        except SignatureError as exc:
            raise fail(str(exc)) from None
    try:
        public = reg.public_key_bytes
    except SignatureError as exc:
        raise fail(str(exc)) from None
    if reg.key_state == "lost":
        typer.echo("warning: the private half of this key (signing_key.pem) is gone; "
                   "rollouts are refused until it is restored.", err=True)
    elif reg.key_state == "damaged":
        typer.echo("warning: the private half of this key (signing_key.pem) is damaged; "
                   "rollouts are refused until it is restored.", err=True)
    typer.echo(f"{key_id_of(public)} {base64.b64encode(public).decode()}")


@registry_app.command("new-key")
def new_key_cmd(data_dir: DataDir) -> None:
    """Replace a LOST signing key on purpose (refused while signing_key.pem exists).

    Every agent must then be given the new signing_key.pub (--trust-key, repeatable: keep the
    old one too while devices still run releases it signed); until then they refuse new
    releases as signed by an unknown key. Prints 'KEY_ID BASE64_PUBLIC_KEY'.
    """
    from edgewise.errors import SignatureError
    from edgewise.registry import Registry
    from edgewise.security import Security

    reg = Registry(existing_data_dir(data_dir))  # never a new key in a mistyped data dir
    old_key_id = reg.issued_key_id  # the key agents trust until they are given the new one
    sec = Security(data_dir)
    try:
        # the audit log's write lock first: the key is made only where its entry can be
        # written, and the entry commits right after it (Security.transaction)
        with sec.transaction():
            key = reg.new_key()
            sec.audit("cli", "registry.new_key", key.key_id, {"old_key_id": old_key_id})
    except SignatureError as exc:
        raise fail(str(exc)) from None
    finally:
        sec.close()
    typer.echo("new signing key; give every agent the new signing_key.pub (--trust-key)",
               err=True)
    typer.echo(f"{key.key_id} {base64.b64encode(key.public_key_bytes).decode()}")
