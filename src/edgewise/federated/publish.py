"""Register each federated global model in the signed model registry.

:func:`register_global_model` stores the parameters (``.npz`` bytes) as the next version of
model ``name`` in :class:`edgewise.registry.Registry` under the gateway's data directory, with
the run's metadata (ε, δ, privacy unit, what ε covers, the normaliser statistics' DP release
and its bounds when there was one, strategy, rounds, fleet size, normaliser, …), and signs
a release of it for ``target`` (by default ``group:federated``: no device runs it until it is
rolled out to that device's group or to the device). The metadata is in the signed manifest:
``trained_on`` holds it as JSON, ``metrics`` its numbers. :func:`load_global_model` reads it
back only after :func:`edgewise.registry.verify` accepts signature, target and payload hash.
Both steps are recorded in the data directory's audit log (``model.publish``,
``model.rollout``, by actor ``federated``) when it has one (``security.sqlite``), as
``edgewise registry publish`` and ``rollout`` record theirs by ``cli``.

The target is held to the registry's own rules before anything is published
(:func:`check_target`, which ``edgewise federate`` also runs before training): a device id
or group name a device can have, for ``device:<id>`` a device registered in the data
directory, and for a group no device that the operator rolled back on the model (its own
rollback order holds against the group's releases). A release refused all the same once
the version is published (a rollback order signed in between) has that version taken back,
and the error says so; the registry keeps no version of a run without its release.
Federated runs that end together in one data directory publish and release one after the
other (an exclusive lock on ``registry/federated-publish.lock``), and a version another
publisher takes between the choice and the insert is skipped for the next one.

The registry and the audit log are two files: a run stopped between them (killed, a full
disk) leaves its version, or its release, with no entry, and the next run publishes a new
version rather than that one again. So each publish, in the audit log's write lock, first
records every version of the model with no ``model.publish`` entry, and every release of it
(to any target) with no ``model.rollout`` entry, marked ``late`` (as ``edgewise registry
publish`` and ``rollout`` record those of their own command); the returned ``late`` lists
them. The metadata is held to the registry's limit on ``trained_on``
(:data:`~edgewise.registry.MAX_TRAINED_ON_BYTES`): a run too long for its per-round
evaluation keeps the last rounds' (``evaluate_rounds_dropped`` says how many were left out).

>>> import tempfile, torch
>>> d = Path(tempfile.mkdtemp())
>>> e = register_global_model({"w": torch.zeros(2)}, d, "demo", {"rounds": 2})
>>> e["version"], e["release"], e["target"]
('1', 1, 'group:federated')
>>> register_global_model({"w": torch.ones(2)}, d, "demo", {})["version"]
'2'
>>> state, meta = load_global_model(d, "demo", "1")
>>> state["w"].tolist(), meta["rounds"], meta["version"]
([0.0, 0.0], 2, '1')
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.errors import InvalidParameterError, SignatureError
from edgewise.registry import (
    LATE_PUBLISH_NOTE,
    LATE_ROLLOUT_NOTE,
    MAX_TRAINED_ON_BYTES,
    ModelVersion,
    Registry,
    unaudited_releases,
    unaudited_versions,
    verify,
)

__all__ = ["DEFAULT_TARGET", "check_target", "load_global_model", "next_version",
           "register_global_model"]

#: Release target of a freshly trained global model: a group no device is in by default.
DEFAULT_TARGET = "group:federated"
FORMAT = "npz-state-dict"
#: Who the audit log says published and released a global model.
ACTOR = "federated"
#: How many versions :func:`register_global_model` tries when other publishers take the one
#: it chose between its choice and its insert.
VERSION_TRIES = 20
#: The lock file, in the registry's folder, that orders federated runs' publish and release.
LOCK_NAME = "federated-publish.lock"


#: Entries of the devices' evaluation replies that weigh the average, not figures of it.
_EVAL_WEIGHTS = ("num-examples", "unit-weight")


def _last_evaluation(evaluate_metrics: Mapping[Any, Any]) -> tuple[int | None, Mapping[Any, Any]]:
    """The figures of the last evaluated round of ``{round: {name: value}}`` (the round
    keys are integers, or their strings after JSON) and that round; a flat
    ``{name: value}`` is taken as it is, round ``None``."""
    rounds: dict[int, Mapping[Any, Any]] = {}
    for k, v in evaluate_metrics.items():
        if isinstance(v, Mapping) and not isinstance(k, bool):
            try:
                rounds[int(k)] = v
            except (TypeError, ValueError):
                continue
    if not rounds:
        return None, evaluate_metrics
    last = max(rounds)
    return last, rounds[last]


def _numbers(meta: Mapping[str, Any]) -> dict[str, float]:
    """The numeric figures of a run, flat, for the registry's ``metrics``.

    The devices' evaluation is the last evaluated round's (``evaluate_metrics`` as
    ``{round: {"eval-loss": …}}``), as ``evaluate_<name>``, with that round as
    ``evaluate_round``.

    >>> _numbers({"rounds": 3, "evaluate_metrics": {2: {"eval-loss": 0.5, "unit-weight": 1.0},
    ...                                             10: {"eval-loss": 0.25}}})
    {'rounds': 3.0, 'evaluate_eval-loss': 0.25, 'evaluate_round': 10.0}
    """
    out: dict[str, float] = {}
    priv = meta.get("privacy") or {}
    for k in ("epsilon", "delta", "noise_multiplier", "clipping_norm", "record_epsilon",
              "stats_epsilon", "stats_noise_multiplier"):
        v = priv.get(k)
        if isinstance(v, int | float) and math.isfinite(v):
            out[k] = float(v)
    for k in ("rounds", "num_devices"):
        if isinstance(meta.get(k), int | float):
            out[k] = float(meta[k])
    last, figures = _last_evaluation(meta.get("evaluate_metrics") or {})
    for k, v in figures.items():
        if k not in _EVAL_WEIGHTS and isinstance(v, int | float) \
                and not isinstance(v, bool) and math.isfinite(v):
            out[f"evaluate_{k}"] = float(v)
    if last is not None and any(k.startswith("evaluate_") for k in out):
        out["evaluate_round"] = float(last)
    return out


def next_version(reg: Registry, name: str) -> str:
    """The next free numeric version of ``name``: one more than the largest numeric version
    published (a version named otherwise, or a gap, never makes it collide).

    >>> import tempfile
    >>> reg = Registry(tempfile.mkdtemp())
    >>> _ = reg.publish("m", "7", b"x", format=FORMAT)
    >>> _ = reg.publish("m", "beta", b"y", format=FORMAT)
    >>> next_version(reg, "m")
    '8'
    >>> reg.close()
    """
    numbers = [int(v.version) for v in reg.versions(name) if _is_number(v.version)]
    return str(max(numbers, default=0) + 1)


def _is_number(version: str) -> bool:
    """Whether ``version`` is written in ASCII digits alone: ``str.isdigit`` also holds for
    '²' or '١', which ``int`` refuses (or reads as another number), and one such version
    name made every later federated publish of the model fail.

    >>> _is_number("12"), _is_number("²"), _is_number("١٢"), _is_number("")
    (True, False, False, False)
    """
    return version.isascii() and version.isdigit()


def _has_device(data_dir: str | Path) -> Callable[[str], bool]:
    """Whether a device id is registered in ``data_dir`` (its ``security.sqlite``, read
    afresh on each call; no such file: no device is, and none is made)."""
    def has_device(device_id: str) -> bool:
        if not (Path(data_dir) / "security.sqlite").is_file():
            return False
        from edgewise.security import Security

        sec = Security(Path(data_dir))
        try:
            return sec.has_device(device_id)
        finally:
            sec.close()

    return has_device


def check_target(data_dir: str | Path, target: str, name: str | None = None) -> None:
    """Refuse a release target the registry would refuse for ``data_dir``, with
    :class:`~edgewise.errors.InvalidParameterError`: not ``device:<id>`` or
    ``group:<name>`` with an id or name a device can have (the registry's rule, as
    ``edgewise registry rollout`` and the REST route apply it), or ``device:<id>`` of a device
    not registered in ``data_dir`` (a release to it would wait for whichever device is
    registered under that id later). Given the model's ``name``, also a group one of whose
    devices the operator rolled back on that model (its own rollback order, which the
    registry refuses to undo: the release of a new version would fail after training,
    :func:`_refuse_held_rollbacks`).

    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> check_target(d, "group:line-a")
    >>> check_target(d, "group:line a")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: Target 'group:line a' names group 'line a', which is not a valid group name: it must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit (as 'edgewise device add ID --group NAME' takes it). Got 'group:line a' instead.
    >>> check_target(d, "device:ghost")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: Target 'device:ghost' names device 'ghost', which is not registered in ...
    """  # noqa: E501
    from edgewise.registry import _check_target

    _check_target(target)
    kind, _, ident = target.partition(":")
    if kind == "device" and not _has_device(data_dir)(ident):
        raise InvalidParameterError(
            f"Target {target!r} names device {ident!r}, which is not registered in {data_dir}: "
            "a release to it would wait for whichever device is registered under that id "
            f"later. Register it first (edgewise device add {ident}), or roll out to a "
            "registered device or to a group.", field="target", value=target)
    if name is not None and kind == "group" \
            and (Path(data_dir) / "registry" / "registry.sqlite").is_file():
        from edgewise.errors import ConfigError

        try:  # read only: a check makes nothing (no registry, no signing key)
            reg = Registry(data_dir, read_only=True)
        except ConfigError:  # made by an older version: checked when publishing
            return
        try:
            _refuse_held_rollbacks(reg, name, target)
        finally:
            reg.close()


def _refuse_held_rollbacks(reg: Registry, name: str, target: str) -> None:
    """Refuse (:class:`~edgewise.errors.InvalidParameterError`, field ``target``) to
    release a new version of ``name`` to the group ``target`` when a device in it is on its
    own rollback order of ``name``: the registry refuses such a release
    (:meth:`~edgewise.registry.Registry.rollout`, whose rule this is) unless it is asked to
    sign the rollback order again, which a federated run never does on its own."""
    held = reg.held_rollbacks(name, target, FORMAT)
    if not held:
        return
    device, (release, _, old, _, _) = held[0]
    more = (f" (and {len(held) - 1} more device(s): "
            f"{', '.join(repr(d) for d, _ in held[1:4])})" if len(held) > 1 else "")
    raise InvalidParameterError(
        f"Target {target!r} reaches device {device!r}{more}, which the operator rolled back "
        f"on {name!r} (rollback order to version {str(old)!r}, release {release}, to "
        f"'device:{device}'): the registry would refuse to release this run's new version "
        f"to {target!r}, since it would move the device off that order, and only after the "
        f"devices spent their privacy budget on training. Roll the device forward first "
        f"(edgewise registry rollout {name} VERSION device:{device}, with a version newer "
        f"than {str(old)!r}), take it out of the group, or release to another target "
        "(--rollout-to).", field="target", value=target)


@contextmanager
def _publish_lock(reg: Registry) -> Iterator[None]:
    """An exclusive ``flock`` on :data:`LOCK_NAME` in the registry's folder while held: two
    federated runs ending together each choose, publish and release in turn (else both chose
    version N, or the older version's release came after the newer's and was refused as a
    downgrade). Where ``flock`` is missing (not POSIX, some NFS) it holds nothing, and a
    version taken meanwhile is still skipped (:func:`register_global_model`)."""
    try:
        fd = os.open(reg.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        yield
        return
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        yield
    finally:
        os.close(fd)  # closing the descriptor drops the lock


def register_global_model(
    state_dict: Mapping[str, Any],
    data_dir: str | Path,
    name: str,
    metadata: Mapping[str, Any],
    *,
    target: str = DEFAULT_TARGET,
) -> dict[str, Any]:
    """Publish the next version of ``name`` in the registry and sign a release for ``target``.

    ``target`` is checked first (:func:`check_target`, and under the publish lock a group's
    devices' rollback orders of ``name``): refused, nothing is published. The version is
    the next free number (:func:`next_version`) chosen under the publish lock; one that
    another publisher took since is skipped for the next (up to :data:`VERSION_TRIES`),
    never a run's model refused for it. A release refused after the publish has the
    version taken back (:func:`_unpublish`) and the error ends saying so, or naming the
    version left published where it could not be.

    Before publishing, inside the audit log's write lock, every earlier version and
    release of ``name`` left with no entry (a run stopped between the registry's commit and
    the audit log's) is recorded, marked ``late`` (:func:`_record_late`).

    Returns
    -------
    dict
        ``name``, ``version``, ``release``, ``target``, ``sha256``, ``size``, ``key_id``,
        ``data_dir``: where to find it and how to verify it; ``late``: the earlier versions
        and releases (``{"versions": [...], "releases": [...]}``) recorded late.
    """
    check_target(data_dir, target)  # before anything is published: nothing to leave behind
    buf = io.BytesIO()
    arrays = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
              for k, v in state_dict.items()}
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    meta = {**dict(metadata), "source": "federated"}
    reg = Registry(data_dir)
    sec = _audit_log(data_dir)
    failed: BaseException | None = None
    try:
        # the audit log's write lock next (after the publish lock, as the CLI's publish
        # takes it before the registry): the version and its release are made only where
        # their entries can be written, and the entries commit with them
        with _publish_lock(reg), (sec.transaction() if sec is not None else nullcontext()):
            if target.startswith("group:"):  # the release's rule, before publishing
                _refuse_held_rollbacks(reg, name, target)
            late = _record_late(sec, reg, name)
            version, mv = _publish_next(reg, name, payload, meta)
            published = {"version": version, "sha256": mv.sha256, "size": mv.size,
                         "format": mv.format}
            try:
                signed = reg.rollout(name, version, target, has_device=_has_device(data_dir))
            except Exception as exc:  # refused after all (changed meanwhile): no version
                left = not _unpublish(reg, name, version)  # published without a release
                if left:
                    _audit(sec, "model.publish", name, published)
                note = (f" Version {version!r} of {name!r} is left published without a "
                        "release (the registry could not take it back)." if left else
                        f" Nothing of this run is left in the registry (version {version!r} "
                        f"of {name!r}, published before the release was refused, was taken "
                        "back).")
                if exc.args and isinstance(exc.args[0], str):
                    exc.args = (exc.args[0] + note, *exc.args[1:])
                failed = exc  # raised once the entry of a version left is committed
            else:
                _audit(sec, "model.publish", name, published)
                _audit(sec, "model.rollout", target, {
                    "name": name, "version": version, "release": signed.manifest.release,
                    "kind": signed.manifest.kind})
        if failed is not None:
            raise failed
        return {"name": name, "version": version, "release": signed.manifest.release,
                "target": target, "sha256": mv.sha256, "size": mv.size, "key_id": reg.key_id,
                "data_dir": str(data_dir), "late": late}
    finally:
        if sec is not None:
            sec.close()
        reg.close()


def _record_late(sec: Any, reg: Registry, name: str) -> dict[str, list[Any]]:
    """Record in the audit log ``sec`` (``None``: none, nothing recorded), marked ``late``,
    each version of ``name`` in ``reg`` with no ``model.publish`` entry and each release of
    it (to any target) with no ``model.rollout`` entry: left so by a run (or a CLI publish
    or rollout) stopped between the registry's commit and its entry's. Runs inside
    ``sec.transaction()`` (no other writer can add them meanwhile), before this run
    publishes. Returns the versions and release numbers recorded."""
    if sec is None:
        return {"versions": [], "releases": []}
    versions = unaudited_versions(sec, reg, name)
    for v in versions:
        _audit(sec, "model.publish", name, {
            "version": v.version, "sha256": v.sha256, "size": v.size, "format": v.format,
            "late": True, "note": LATE_PUBLISH_NOTE})
    releases = unaudited_releases(sec, reg, name, None, before=2**63)
    for r in releases:
        _audit(sec, "model.rollout", r.target, {
            "name": name, "version": r.version, "release": r.release, "kind": r.kind,
            "late": True, "note": LATE_ROLLOUT_NOTE})
    return {"versions": [v.version for v in versions],
            "releases": [r.release for r in releases]}


def _trained_on(meta: Mapping[str, Any]) -> str:
    """``meta`` as the JSON that ``trained_on`` holds, within the registry's
    :data:`~edgewise.registry.MAX_TRAINED_ON_BYTES`: where it is longer, the per-round
    ``evaluate_metrics`` keep their last rounds only (as many as fit; a long run's is what
    grows), and ``evaluate_rounds_dropped`` says how many were left out. What does not fit
    even so is left to the registry to refuse, naming the limit.

    >>> meta = {"rounds": 20000, "evaluate_metrics": {r: {"eval-loss": 0.5} for r in range(20000)}}
    >>> doc = json.loads(_trained_on(meta))
    >>> len(doc["evaluate_metrics"]) + doc["evaluate_rounds_dropped"], "19999" in doc["evaluate_metrics"]
    (20000, True)
    """  # noqa: E501
    text = json.dumps(meta, sort_keys=True, default=str)
    rounds = meta.get("evaluate_metrics")
    if len(text.encode("utf-8")) <= MAX_TRAINED_ON_BYTES or not isinstance(rounds, Mapping):
        return text
    def order(k: Any) -> tuple[int, int]:  # by round number; a key of no round first
        try:
            return 1, int(k)
        except (TypeError, ValueError):
            return 0, 0

    keys = sorted(rounds, key=order)  # the last rounds last
    lo, hi = 0, len(keys)  # the most rounds kept that fit: bisected
    best = None
    while lo <= hi:
        keep = (lo + hi) // 2
        trimmed = {**meta, "evaluate_metrics": {k: rounds[k] for k in keys[len(keys) - keep:]}
                   if keep else {}, "evaluate_rounds_dropped": len(keys) - keep}
        candidate = json.dumps(trimmed, sort_keys=True, default=str)
        if len(candidate.encode("utf-8")) <= MAX_TRAINED_ON_BYTES:
            best, lo = candidate, keep + 1
        else:
            hi = keep - 1
    return text if best is None else best


def _unpublish(reg: Registry, name: str, version: str) -> bool:
    """Take back ``version`` of ``name``, just published by :func:`register_global_model`
    whose release was then refused (:meth:`~edgewise.registry.Registry.withdraw`)."""
    return reg.withdraw(name, version)


def _published(reg: Registry, name: str, version: str) -> bool:
    """Whether ``version`` of ``name`` is published in ``reg``."""
    try:
        reg.version(name, version)
    except KeyError:
        return False
    return True


def _publish_next(reg: Registry, name: str, payload: bytes,
                  meta: Mapping[str, Any]) -> tuple[str, ModelVersion]:
    """Publish ``payload`` as the next free numeric version of ``name``: a version another
    publisher took between :func:`next_version` and the insert (the registry refuses it:
    versions are immutable) is skipped for the one after, up to :data:`VERSION_TRIES`."""
    trained_on = _trained_on(meta)
    metrics = _numbers(meta)
    tried: list[str] = []
    version = next_version(reg, name)
    while True:
        try:
            return version, reg.publish(name, version, payload, format=FORMAT,
                                        trained_on=trained_on, metrics=metrics)
        except InvalidParameterError as exc:
            if exc.field != "version" or not _published(reg, name, version):
                raise
            tried.append(version)
            if len(tried) >= VERSION_TRIES:
                raise InvalidParameterError(
                    f"Model {name!r} versions {', '.join(tried)} were each published by "
                    "another publisher between this run's choice of the next version and its "
                    f"publish ({VERSION_TRIES} tries); nothing of this run was published. "
                    "Stop the other publishers of that name, then run again.",
                    field="version", value=version) from None
            # the next free number, and never one already tried (a stale read)
            version = str(max(int(next_version(reg, name)), int(version) + 1))


def _audit_log(data_dir: str | Path) -> Any:
    """The data directory's audit log (a :class:`~edgewise.security.Security`), or ``None``
    where it has no ``security.sqlite`` (a federated run's own output directory has none,
    and gets none).

    >>> import tempfile
    >>> _audit_log(tempfile.mkdtemp()) is None  # no audit log: nothing made
    True
    """
    if not (Path(data_dir) / "security.sqlite").is_file():
        return None
    from edgewise.security import Security

    return Security(Path(data_dir))


def _audit(sec: Any, action: str, target: str, detail: dict[str, object]) -> None:
    """Record a registry change in the audit log ``sec`` (:func:`_audit_log`; ``None``:
    none, nothing recorded) by :data:`ACTOR`, with the details ``edgewise registry
    publish``/``rollout`` record."""
    if sec is not None:
        sec.audit(ACTOR, action, target, detail)


def load_global_model(
    data_dir: str | Path, name: str, version: str | None = None, *, target: str = DEFAULT_TARGET,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a registered global model back, verified: (state_dict of torch tensors, metadata).

    The newest signed release of ``name`` (``version`` if given) for ``target`` is checked by
    :func:`edgewise.registry.verify` with the registry's public key; a bad signature, a wrong
    target, an expired release or a payload that differs from the manifest raises
    :class:`~edgewise.errors.SignatureError`.
    """
    import torch

    kind, _, who = target.partition(":")
    reg = Registry(data_dir)
    try:
        rels = [r for r in reg.releases(target) if r.name == name
                and (version is None or r.version == version)]
        if not rels:
            raise InvalidParameterError(
                f"Model {name!r}{'' if version is None else f' version {version!r}'} has no "
                f"signed release for {target!r} in the registry under {data_dir}.")
        rel = rels[-1]
        payload = reg.blob(rel.manifest.sha256)
        m = verify(rel.manifest_bytes, rel.signature, payload,
                   trusted_keys={reg.key_id: reg.public_key_bytes},
                   device_id=who if kind == "device" else "-",
                   groups=[who] if kind == "group" else [])
        if (m.release, m.name, m.version) != (rel.release, rel.name, rel.version):
            raise SignatureError(
                f"Release {rel.release} of {rel.name!r} version {rel.version!r} in the registry "
                f"carries a manifest signed for release {m.release} of {m.name!r} version "
                f"{m.version!r}: a replayed or moved release; the signed release number, name "
                "and version must equal the registry row's.")
    finally:
        reg.close()
    meta = json.loads(m.metadata["trained_on"])
    meta.update({"name": m.name, "version": m.version, "release": m.release,
                 "sha256": m.sha256, "key_id": m.key_id, "metrics": m.metadata["metrics"]})
    with np.load(io.BytesIO(payload)) as z:
        return {k: torch.as_tensor(z[k]) for k in z.files}, meta
