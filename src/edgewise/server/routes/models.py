"""REST routes of the model registry: agents fetch signed releases, operators roll out.

* ``GET /v1/devices/{device_id}/model`` (device secret): the newest release for the device
  or its groups, as ``{"manifest", "signature"}`` (base64); 204 when none. The groups are
  those an admin put the device in (``edgewise device add ID --group NAME``, stored with its
  credentials), never ones the device claims; by default ``security.device_groups``. The
  query may narrow the answer to what the device can install: ``formats=pickle`` (the
  formats it runs) and ``groups=a,b`` (the groups whose releases it accepts, its agent's
  ``--group``; only those it was put in count, so it never widens them). The edge agent
  sends both, so a newer release in another format, or to a group its agent does not take,
  no longer hides the newest one it can install; without them any release counts, as for
  older agents. The agent still refuses a release older than the one it runs.
* ``GET /v1/models/{sha256}`` (device secret): the model bytes, of a release aimed at the
  device or one of its groups (any other answers 404, as an unknown one). Bytes are served
  only as published: a stored model that is missing or damaged (truncated or corrupted on
  disk) answers 503 (reason ``blob_damaged``, logged as a warning) until it is published
  again, which rewrites it; the agent tries again at its next update check.
* ``GET /v1/registry`` (viewer token): the signing key's id and state (``ok``, ``none``,
  ``lost``, ``mismatch``; the issued key's id even when both key files are gone), versions
  (in publish order, ``seq``) and releases, each with ``expires`` (RFC 3339 UTC) and
  ``expired``: an expired release is still offered (a device is never handed an older one
  instead) and every agent refuses it until the same rollout is run again (the gateway logs
  a warning for each at start).
* ``POST /v1/registry/rollouts`` (operator token): ``{"name", "version", "target",
  "rollback": false, "expires_days": 30, "keep_rollbacks": false}`` signs a release;
  audited. A ``group:`` release that would move a member device off its own rollback order
  (a ``device:`` rollback to an older version) is refused, 422 naming ``keep_rollbacks``,
  unless ``"keep_rollbacks": true``, which signs each such order again with it (``kept``
  lists them, each audited ``model.rollout`` with ``kept_with``). Rolling out and back
  is an operator's work: it chooses which published (signed) version a device or group
  runs, among those published; publishing a version takes no token at all (``edgewise
  registry publish``, on the gateway's machine), and a viewer's rollout is 403.
  ``expires_days`` must be at least one hour (1/24,
  :data:`~edgewise.registry.MIN_EXPIRY_DAYS`: a release that expires before its devices
  can fetch it is refused by every one) and at most 3650; else 422.
  ``target`` must be ``device:<id>`` of a registered device or ``group:<name>``, the id or
  name as ``edgewise device add`` takes it (not blank, no ``:``); else 422 naming ``target``
  (reason ``unknown_device`` for an id no device is registered with: its release would wait
  for whichever device is registered under that id later). 409 (reason
  ``key_lost``) if the registry's signing key was issued but ``signing_key.pem`` is gone: no new
  key is made, since devices trust only the old one; 409 (reason ``key_mismatch``) if
  ``signing_key.pem`` holds another key than the one issued; 409 (reason ``blob_damaged``,
  field ``version``) if the version's stored model is missing or damaged: publish it again;
  409 (reason ``bad_key``) if ``signing_key.pem`` is damaged.
  422 for an empty name or version, a name over 128 or a version over 64 bytes of UTF-8
  (unless published before there were limits), a downgrade without ``"rollback": true``,
  or a rollback that is no downgrade (:meth:`Registry.rollout`). Nothing refused spends a
  release counter.
  A body field other than these is refused (422 naming it: a typo such as ``expire_days``
  signed a 30-day manifest).
  Audited as ``model.rollout`` by
  ``token:<id>:<name>``, like every HTTP action (``edgewise registry rollout`` by ``cli``).

Credentials are checked as everywhere in the API (:mod:`edgewise.server.deps`): a device id
with a wrong secret and an unknown device id are the same 401 ("unknown or the secret is
wrong"), the ``Bearer`` scheme is case-insensitive, every 401 carries ``WWW-Authenticate:
Bearer`` and ``field: Authorization``, wrong secrets are counted per peer address (as for
telemetry, and in ``edgewise_auth_failures_total``) and an address paused after too many gets
429, and an ``X-Device-Id`` naming another device than the path is 403.

The gateway mounts :func:`make_router` in :func:`edgewise.server.app.create_app`, with the
registry in the data directory.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from edgewise.errors import InvalidParameterError, SignatureError
from edgewise.gateway.metrics import Metrics
from edgewise.registry import (
    KEY_FILE,
    MAX_EXPIRY_DAYS,
    MAX_NAME_BYTES,
    MAX_VERSION_BYTES,
    MIN_EXPIRY_DAYS,
    TARGET_ALLOWED,
    Registry,
    check_expires_days,
)
from edgewise.security.credentials import Principal, Security
from edgewise.server.deps import DeviceAuth, authenticate_device, require_role
from edgewise.server.problems import Problem, shorten
from edgewise.telemetry import DEVICE_ID_RE

__all__ = ["Envelope", "RolloutDone", "RolloutRequest", "make_router"]

log = logging.getLogger(__name__)

#: what a rollout's ``target`` looks like, as the OpenAPI schema documents it
_TARGET_PATTERN = "^(device|group):" + DEVICE_ID_RE.pattern.removeprefix("^")


class RolloutRequest(BaseModel):
    """Body of ``POST /v1/registry/rollouts``. A field it does not know is refused (422
    naming it): ``"expire_days"``, a typo, signed a 30-day manifest.

    >>> RolloutRequest(name="m", version="1", target="group:a", expire_days=0.05)
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for RolloutRequest
    expire_days
      Extra inputs are not permitted ...
    """

    # the schema's description: not the docstring, whose doctest is no API documentation
    model_config = ConfigDict(extra="forbid", json_schema_extra={"description": (
        "A release to sign: a published version of a model, to one device or group. A "
        "field not listed here is refused (422 naming it).")})

    name: str = Field(description="The published model's name (GET /v1/registry lists "
                      f"them): at most {MAX_NAME_BYTES} bytes of UTF-8, as publish takes it.")
    version: str = Field(description="A published version of the model: at most "
                         f"{MAX_VERSION_BYTES} bytes of UTF-8, as publish takes it.")
    # the limits are checked by the registry (422 naming the field); here they are documented
    target: str = Field(
        description=f"Who gets it: {TARGET_ALLOWED}; a device must be registered.",
        json_schema_extra={"pattern": _TARGET_PATTERN})
    rollback: bool = Field(default=False, description=(
        "Sign an explicit rollback order: required to go back to a version published before "
        "the one the target's devices can receive, refused otherwise."))
    expires_days: float = Field(
        default=30.0, description="Manifest lifetime in days: at least one hour (1/24, so "
        "devices can fetch it before it expires) and at most 3650.",
        json_schema_extra={"minimum": MIN_EXPIRY_DAYS, "maximum": MAX_EXPIRY_DAYS})
    #: sign again each device rollback order this group release would move a member off
    #: (else such a release is refused, 422 field ``keep_rollbacks``)
    keep_rollbacks: bool = Field(default=False, description=(
        "For a group: sign again, in the same step, each member's own rollback order "
        "(to device:<id>) this release would move it off; without it such a release is "
        "refused (422 naming keep_rollbacks and the devices)."))


class Envelope(BaseModel):
    """A signed release as served to agents (the 200 of ``GET
    /v1/devices/{device_id}/model``)."""

    manifest: str = Field(description="The manifest's canonical JSON, base64: name, version, "
                          "release counter, sha256, size, format, target, expires_ns, key_id, "
                          "kind, metadata.")
    signature: str = Field(description="The Ed25519 signature of the manifest bytes, base64, "
                           "by the key key_id names.")


class KeptOrder(BaseModel):
    """A device's rollback order signed again with a group release (``keep_rollbacks``)."""

    release: int
    version: str
    target: str


class RolloutDone(BaseModel):
    """The 200 of ``POST /v1/registry/rollouts``: the release signed."""

    release: int = Field(description="Its release counter.")
    kind: str = Field(description="'release', or 'rollback' for a rollback order.")
    key_id: str = Field(description="Id of the key that signed it.")
    manifest: str = Field(description="The manifest's canonical JSON, base64.")
    signature: str = Field(description="The Ed25519 signature of the manifest, base64.")
    kept: list[KeptOrder] = Field(description="The rollback orders signed again with it "
                                  "(keep_rollbacks), oldest first; empty if none.")


_TITLES = {"not_found": "Not found", "invalid": "Invalid rollout", "key_lost": "Signing key lost",
           "key_mismatch": "Signing key is not the issued key",
           "unknown_device": "Target device is not registered",
           "blob_damaged": "Stored model is damaged",
           "bad_key": "Signing key file is damaged"}


_TARGET_ALLOWED = "'device:<id>' or 'group:<name>'"
_REGISTERED_ALLOWED = ("'device:<id>' of a registered device (GET /v1/devices lists them; "
                       "edgewise device add ID registers one) or 'group:<name>'")
_REPUBLISH = ("a version whose stored model is intact: publish the same model file again "
              "(edgewise registry publish NAME VERSION FILE) to rewrite it")


def _problem(status: int, detail: str, reason: str, *, field: str | None, value: Any,
             allowed: str | None) -> Problem:
    """The problem+json answer of a refused rollout, naming the body field at fault, its
    value and what would be accepted (``None`` only where no one field is at fault).

    >>> _problem(422, "Bad target.", "invalid", field="target", value="everyone",
    ...          allowed=_TARGET_ALLOWED).body()["field"]
    'target'
    """
    return Problem(status, _TITLES.get(reason, reason), detail, field=field, value=value,
                   allowed=allowed, reason=reason)


def _invalid_rollout(exc: InvalidParameterError, body: RolloutRequest,
                     registered: Callable[[str], bool] = lambda _: True) -> Problem:
    """The 422 for a rollout the registry refused: the body field it names (the registry's
    ``kind`` is the body's ``rollback``), its value and what is allowed; a well-formed
    ``device:<id>`` target refused is one ``registered`` does not know (reason
    ``unknown_device``).

    >>> req = RolloutRequest(name="m", version="1", target="device:p", rollback=True)
    >>> p = _invalid_rollout(InvalidParameterError("x", field="kind", value="rollback"), req)
    >>> (p.field, p.value)
    ('rollback', True)
    >>> p = _invalid_rollout(InvalidParameterError("x", field="target", value="device:p"), req,
    ...                      lambda _: False)
    >>> (p.field, p.reason)
    ('target', 'unknown_device')
    """
    if exc.field == "name":
        return _problem(422, str(exc), "invalid", field="name", value=body.name,
                        allowed="non-empty text, not only blanks, at most "
                        f"{MAX_NAME_BYTES} bytes of UTF-8: a published model's name")
    if exc.field == "version":
        return _problem(422, str(exc), "invalid", field="version", value=body.version,
                        allowed="a published version of the model: non-empty text, at "
                        f"most {MAX_VERSION_BYTES} bytes of UTF-8, with finite metrics")
    if exc.field == "target":
        kind, _, ident = body.target.partition(":")
        if kind not in ("device", "group") or not ident:  # not even of the form
            return _problem(422, str(exc), "invalid", field="target", value=body.target,
                            allowed=_TARGET_ALLOWED)
        if not DEVICE_ID_RE.fullmatch(ident):  # a blank group, 'device:pump-7:x'
            return _problem(422, str(exc), "invalid", field="target", value=body.target,
                            allowed=TARGET_ALLOWED)
        if kind == "device" and not registered(ident):
            return _problem(422, str(exc), "unknown_device", field="target", value=body.target,
                            allowed=_REGISTERED_ALLOWED)
        return _problem(422, str(exc), "invalid", field="target", value=body.target,
                        allowed=_TARGET_ALLOWED)
    if exc.field == "keep_rollbacks":
        return _problem(422, str(exc), "invalid", field="keep_rollbacks",
                        value=body.keep_rollbacks,
                        allowed="true to sign each named device's rollback order again with "
                        "this release (the device stays back), or first a rollout of the newer "
                        "version to each such device")
    if exc.field == "kind":
        return _problem(422, str(exc), "invalid", field="rollback", value=body.rollback,
                        allowed="true to go back to a version older than the one the "
                        "target's devices can receive, false for anything else")
    return _problem(422, str(exc), "invalid", field=exc.field, value=exc.value, allowed=None)


def _audit_rollout(security: Security, actor: str, name: str, s: Any) -> None:
    """Audit the signed release ``s`` of model ``name`` (:meth:`Registry.rollout`) as
    ``model.rollout``, and each rollback order it signed again (``keep_rollbacks``) as one
    more, ``kept_with`` the release (the caller holds :meth:`Security.transaction`)."""
    m = s.manifest
    security.audit(actor, "model.rollout", m.target,
                   {"name": name, "version": m.version, "release": m.release, "kind": m.kind})
    for k in (x.manifest for x in s.kept):
        security.audit(actor, "model.rollout", k.target,
                       {"name": name, "version": k.version, "release": k.release,
                        "kind": k.kind, "kept_with": m.release})


def _unpublished(registry: Registry, exc: KeyError, body: RolloutRequest) -> Problem:
    """The 404 for a name and version that were never published: the version, among the
    name's published ones, or the name, when it has none.

    >>> import tempfile
    >>> reg = Registry(tempfile.mkdtemp())
    >>> _ = reg.publish("m", "1.0.0", b"x", format="bin")
    >>> req = RolloutRequest(name="m", version="9", target="device:p")
    >>> _unpublished(reg, KeyError("gone"), req).allowed
    "a published version of 'm': '1.0.0'"
    """
    versions = [v.version for v in registry.versions(body.name)]
    if versions:
        shown = ", ".join(map(repr, versions[-10:])) + (" …" if len(versions) > 10 else "")
        return _problem(404, str(exc.args[0]), "not_found", field="version",
                        value=body.version, allowed=f"a published version of {body.name!r}: "
                        f"{shown}")
    return _problem(404, str(exc.args[0]), "not_found", field="name", value=body.name,
                    allowed="the name of a published model (GET /v1/registry lists them)")


def _listed(text: str) -> list[str]:
    """The names of a comma-separated query value, blanks left out.

    >>> _listed("pickle, onnx,,"), _listed("")
    (['pickle', 'onnx'], [])
    """
    return [x.strip() for x in text.split(",") if x.strip()]


def make_router(registry: Registry, security: Security,
                groups_of: Callable[[str], list[str]] | None = None, *,
                metrics: Metrics | None = None) -> APIRouter:
    """Routes serving ``registry``; devices and tokens are checked with ``security``.

    ``groups_of(device_id)`` names the groups whose releases a device gets; by default the
    groups it was registered in (:meth:`Security.device_groups`). A device's wrong secrets
    are counted per peer address, as for telemetry, and in ``metrics`` (the gateway's
    ``edgewise_auth_failures_total``) when given.
    """
    r = APIRouter()
    lookup_groups: Callable[[str], list[str]] = groups_of or security.device_groups
    count = metrics.inc if metrics is not None else None

    def check_secret(request: Request, device_id: str, authorization: str | None) -> str:
        # per peer address, as telemetry: without a source every caller shares one count
        # and one address's wrong secrets would throttle every other
        source = request.client.host if request.client else None
        return authenticate_device(security, device_id, authorization, source=source,
                                   count=count)

    def device(request: Request, device_id: str, x_device_id: str | None,
               authorization: str | None) -> str:
        # the same checks and answers as telemetry: a wrong secret and an unknown device
        # are one 401, so the answer never tells which device ids exist
        if x_device_id and x_device_id != device_id:
            raise Problem(
                403, "Device may fetch only its own model",
                f"Header 'X-Device-Id' is {shorten(x_device_id)!r} but the path names "
                f"{shorten(device_id)!r}.", field="X-Device-Id", value=x_device_id,
                allowed=shorten(device_id),
                reason="wrong_device",
            )
        return check_secret(request, device_id, authorization)

    # in the defaults, not in Annotated: under `from __future__ import annotations` FastAPI
    # resolves annotations in the module's globals, where this router's checks are not
    viewer = Depends(require_role("viewer", security))
    operator = Depends(require_role("operator", security))

    @r.get("/v1/devices/{device_id}/model",
           summary="The newest signed release for a device (device secret)",
           response_model=None,
           responses={200: {"model": Envelope, "description": "The newest release the device "
                            "may install, signed: the agent verifies it before fetching the "
                            "model (GET /v1/models/{sha256})."},
                      204: {"description": "No release for the device or its groups."},
                      403: {"description": "X-Device-Id names another device."},
                      429: {"description": "Too many wrong secrets; see Retry-After."}})
    def current_model(
        request: Request,
        device_id: str,
        x_device_id: Annotated[str | None, Header(description="Optional; must match.")] = None,
        authorization: DeviceAuth = None,
        formats: Annotated[str | None, Query(
            description="Comma-separated model formats the device runs "
            "(the agent sends 'pickle'): the newest release in one of them is the answer. "
            "Absent or empty: any format.")] = None,
        groups: Annotated[str | None, Query(
            description="Comma-separated groups whose releases the device "
            "accepts (the agent's --group): only those of the groups it was put in count. "
            "Absent: all of its groups; empty: none.")] = None,
    ) -> Any:
        device(request, device_id, x_device_id, authorization)
        mine = lookup_groups(device_id)
        if groups is not None:  # the device narrows, never widens, what it is offered
            accepted = set(_listed(groups))
            mine = [g for g in mine if g in accepted]
        wanted = _listed(formats or "")
        rel = registry.current(device_id, mine, formats=wanted or None)
        if rel is None:
            return Response(status_code=204)
        return rel.envelope()

    @r.get("/v1/models/{sha256}", summary="A model's bytes by sha256 (device secret)",
           response_class=Response,
           responses={200: {"content": {"application/octet-stream": {
                          "schema": {"type": "string", "format": "binary"}}},
                          "description": "The model's bytes."},
                      404: {"description": "No model with that sha256."},
                      429: {"description": "Too many wrong secrets; see Retry-After."},
                      503: {"description": "The stored model is missing or damaged (reason "
                            "'blob_damaged'); it is served again once it is published again."}})
    def model_blob(
        request: Request,
        sha256: str,
        x_device_id: Annotated[str | None, Header(description="The fetching device's id.")]
        = None,
        authorization: DeviceAuth = None,
    ) -> Response:
        if not x_device_id:
            raise Problem(
                401, "Authentication required", "Header 'X-Device-Id' is missing.",
                field="X-Device-Id", allowed="the device id printed by 'edgewise device add'",
                reason="missing_credentials", headers={"WWW-Authenticate": "Bearer"},
            )
        check_secret(request, x_device_id, authorization)
        try:
            # only a model released to this device or one of its groups: another group's
            # release is not this device's to read (answered as absent, not as forbidden)
            if not registry.serves(sha256, x_device_id, lookup_groups(x_device_id)):
                raise KeyError(sha256)
            return Response(registry.blob(sha256), media_type="application/octet-stream")
        except KeyError:
            raise Problem(
                404, "Not found", f"No model with sha256 {shorten(sha256)!r}.", field="sha256",
                value=sha256, allowed="the sha256 of a release's manifest",
                reason="not_found") from None
        except SignatureError as exc:  # never serve bytes other than those published
            log.warning("registry: device %r asked for model %s: %s", x_device_id, sha256[:16],
                        exc)
            raise Problem(
                503, _TITLES["blob_damaged"], str(exc), field="sha256", value=sha256,
                allowed="the sha256 of a release's manifest, whose stored model is intact "
                "(the operator publishes it again to repair it)", reason=exc.reason,
                headers={"Retry-After": "60"}) from None

    @r.get("/v1/registry", summary="Model versions and releases (viewer)")
    def listing(who: Principal = viewer) -> dict[str, Any]:
        state = registry.key_state  # reading never makes a key
        now = time.time_ns()
        return {
            # the issued key's id even when both key files are gone (from its releases)
            "key_id": registry.listed_key_id,
            "key_state": state,
            "versions": [v.__dict__ for v in registry.versions()],
            "releases": [x.listing(now) for x in registry.releases()],
        }

    @r.post("/v1/registry/rollouts", summary="Sign a release to a device or group (operator)",
            response_model=None,
            responses={200: {"model": RolloutDone, "description": "The release signed."},
                       404: {"description": "No such model name and version."},
                       409: {"description": "The signing key is lost (reason 'key_lost') or "
                             "not the issued key ('key_mismatch'), or the version's stored "
                             "model is damaged ('blob_damaged'), or the signing key file is "
                             "damaged ('bad_key')."}})
    def rollout(body: RolloutRequest, p: Principal = operator) -> dict[str, Any]:
        """Sign a release of a published version to ``device:<id>`` or ``group:<name>``
        (operator or admin token; a viewer's is 403): an operator chooses which published,
        signed version a device or group runs, a rollback included. Publishing a version
        is not done over HTTP: ``edgewise registry publish`` on the gateway's machine."""
        try:
            check_expires_days(body.expires_days, "Field 'expires_days'")
        except InvalidParameterError as exc:
            v = body.expires_days
            raise Problem(422, _TITLES["invalid"], str(exc), field="expires_days",
                          value=v if math.isfinite(v) else repr(v),
                          allowed=f"a number of days from {MIN_EXPIRY_DAYS:.4g} (one hour) to "
                          f"{MAX_EXPIRY_DAYS}", reason="invalid") from None
        try:
            # the audit log's write lock first: a release is signed only where its entries
            # can be written, and they commit with it (a rollout that fails writes none)
            with security.transaction():
                s = registry.rollout(body.name, body.version, body.target,
                                     expires_in_s=body.expires_days * 86400,
                                     kind="rollback" if body.rollback else "release",
                                     has_device=security.has_device,
                                     keep_rollbacks=body.keep_rollbacks)
                _audit_rollout(security, p.actor, body.name, s)
        except InvalidParameterError as exc:
            raise _invalid_rollout(exc, body, security.has_device) from None
        except SignatureError as exc:
            if exc.reason == "blob_damaged":
                raise _problem(409, str(exc), exc.reason, field="version", value=body.version,
                               allowed=_REPUBLISH) from None
            # the key is lost or not the issued one: never remake
            raise Problem(409, _TITLES.get(exc.reason, exc.reason), str(exc),
                          field="signing_key", value=str(registry.root / KEY_FILE),
                          allowed="the registry's issued signing key file (restore it from a "
                          "backup, or run 'edgewise registry new-key')",
                          reason=exc.reason) from None
        except KeyError as exc:
            raise _unpublished(registry, exc, body) from None
        m = s.manifest
        kept = [x.manifest for x in s.kept]  # keep_rollbacks: each order signed again
        return {"release": m.release, "kind": m.kind, "key_id": m.key_id, **s.envelope(),
                "kept": [{"release": k.release, "version": k.version, "target": k.target}
                         for k in kept]}

    return r
