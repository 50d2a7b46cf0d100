"""Devices: list, register (admin), replace a device's secret (admin), delete with all
their data (admin), fleet health.

A device known to the store but no longer registered (its credentials were revoked
while its data stayed) is still listed, with ``registered: false``, so its data can
be read and deleted.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from edgewise.errors import InvalidParameterError, StoreError
from edgewise.label.store import LabelsBusyError
from edgewise.security.credentials import check_device_name
from edgewise.server.deps import (
    Admin,
    PipelineDep,
    SecurityDep,
    SettingsDep,
    StoreDep,
    Viewer,
)
from edgewise.server.problems import Problem, shorten, storable
from edgewise.server.query import format_ns, parse_duration, unknown_metric
from edgewise.server.routes.labels import label_store

__all__ = ["LAST_SEEN_DOC", "NewDevice", "device_rows", "last_seen", "router",
           "withdraw_releases"]

router = APIRouter(tags=["devices"])

#: How long a device may go unheard before ``GET /v1/fleet`` calls it stale, by default.
STALE_AFTER = "5m"

DeviceId = Annotated[str, Path(description="A device id, as printed by 'edgewise device add'.")]


class NewDevice(BaseModel):
    """A device to register. A field it does not know is refused (422 naming it):
    ``"group"``, a typo of ``groups``, registered the device in no group."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="A human name, e.g. 'pump-7'.")
    groups: list[str] = Field(default_factory=list, max_length=64, description=(
        "Groups the device is in: it gets the model releases rolled out to 'group:<name>'."))


class DeviceCreated(BaseModel):
    """A registered device and its secret; the secret is shown only this once."""

    id: str
    name: str
    groups: list[str] = Field(default_factory=list)
    secret: str = Field(description="Send as 'Authorization: Bearer <secret>'. Not stored.")


class DeviceRow(BaseModel):
    """A device as ``GET /v1/devices`` lists it (the OpenAPI schema; see :func:`device_rows`)."""

    id: str
    name: str = Field(description="Its name; the id for a device no longer registered.")
    registered: bool = Field(description="False: credentials revoked, stored data kept.")
    created: str | None = Field(description="When it was registered (RFC 3339); null if not.")
    auth_failures: int | None = Field(description=(
        "Wrong secrets sent in its name since it was registered; null if not registered."))
    groups: list[str]
    readings: int = Field(description="Readings stored.")
    metrics: list[str] = Field(description="The metrics of its stored readings, sorted.")
    first_seen: str | None = Field(description="The oldest stored reading's time.")
    last_reading: str | None = Field(description="The newest stored reading's own time.")
    last_reading_ns: int | None
    last_seen: str | None = Field(description="When the gateway last heard from it.")
    last_seen_ns: int | None
    last_seen_from: Literal["arrival", "reading"] | None = Field(description=(
        "'arrival': its last message's arrival; 'reading': its newest reading's time, "
        "capped at now (no message since the gateway started); null: never heard from."))


class FleetDevice(DeviceRow):
    """A device's row in ``GET /v1/fleet``: its :class:`DeviceRow` and its health."""

    open_alerts: int
    health: Literal["alerting", "stale", "silent", "ok"]
    last_seen_age_s: float | None = Field(description="Seconds since last_seen, >= 0.")


class Fleet(BaseModel):
    """The answer of ``GET /v1/fleet``."""

    now: str = Field(description="The gateway's time the ages are measured from.")
    devices: list[FleetDevice]
    counts: dict[str, int] = Field(description="Devices per health, e.g. {'ok': 3}.")
    open_alerts: int


class DeviceDeleted(BaseModel):
    """The answer of ``DELETE /v1/devices/{device_id}``: what was deleted."""

    id: str
    credentials_deleted: bool = Field(description="False: it was not registered.")
    rows_deleted: int = Field(description="Store rows: readings, seqs, conflicts, alerts.")
    labels_deleted: int
    label_models_deleted: int = Field(description=(
        "Model files its data trained, under `<data dir>/models`: label and transfer models, "
        "and those named in trained_models_deleted."))
    trained_models_deleted: list[str] = Field(description=(
        "The model files `edgewise train rul` / `train forecast` wrote under `<data "
        "dir>/models` from its stored data (the `.<name>.trained-by.json` beside each named "
        "it), by name, deleted with it. A model written elsewhere (`--out` outside the data "
        "dir) is not known to the gateway and is kept: `train` said so when it wrote it."))
    releases_withdrawn: list[int] = Field(description="Release counters aimed at it.")
    purge_pending: bool | None = Field(description=(
        "True: the deleted rows' bytes remain in the store's files until a purge (DuckDB "
        "retries at its next open; PostgreSQL needs `edgewise store purge`, VACUUM FULL, run "
        "by the tables' owner); null for a store that does not tell."))
    broken_logs: list[str] = Field(description=(
        "Files beside the store that still hold what it logged before a crash, this "
        "device's readings among it (DuckDB write-ahead logs `edgewise repair` moved aside, "
        "`<file>.wal.broken-<time>`): neither a deletion nor a purge touches them; remove "
        "them once no longer needed. Empty when there are none."))


def _documented(model: Any) -> dict[int | str, dict[str, Any]]:
    """``responses`` that describe the 200 answer as ``model`` in the OpenAPI schema while
    the route returns its JSON as built (no response model re-validates or filters it)."""
    return {200: {"model": model}}


#: What the device rows say about when a device was last heard from (the OpenAPI text).
LAST_SEEN_DOC = (
    "``last_seen`` (``last_seen_ns``) is when the gateway last heard from the device, by "
    "the gateway's clock: when a message of it carrying readings was last accepted, over "
    "HTTP or MQTT (``last_seen_from``: ``arrival``), however old or new the readings' "
    "times were. "
    "Until a device sends again after a gateway restart, it is the newest reading's time "
    "capped at the gateway's current time (``last_seen_from``: ``reading``), so it is never "
    "in the future. ``last_reading`` (``last_reading_ns``) is the newest reading's own time, "
    "as the device stamped it (a device whose clock is off, or an agent uploading a "
    "backlog, makes it differ from ``last_seen``); ``first_seen`` is the oldest reading's.")


def last_seen(arrived_ns: int | None, reading_ns: int | None,
              now_ns: int) -> tuple[int | None, str | None]:
    """When a device was last heard from, and from what: its last arrival, else (no
    message since the gateway started) its newest reading time; either capped at
    ``now_ns``, so never in the future. ``(None, None)`` for a device never heard from.

    >>> last_seen(None, 5_000, 3_000)  # a reading stamped by a clock running fast
    (3000, 'reading')
    >>> last_seen(2_000, 5_000, 3_000)
    (2000, 'arrival')
    """
    if arrived_ns is not None:
        return min(arrived_ns, now_ns), "arrival"
    if reading_ns is not None:
        return min(reading_ns, now_ns), "reading"
    return None, None


def device_rows(security: Any, store: Any, arrivals: dict[str, int] | None = None,
                now_ns: int | None = None) -> list[dict[str, Any]]:
    """Registered devices and devices with stored data, merged, sorted by id; ``arrivals``
    (:meth:`~edgewise.gateway.pipeline.Pipeline.arrivals`) and ``now_ns`` (default: now)
    give ``last_seen`` (see :data:`LAST_SEEN_DOC`)."""
    now = time.time_ns() if now_ns is None else now_ns
    arrived = arrivals or {}
    rows: dict[str, dict[str, Any]] = {}
    for rec in security.list_devices():
        rows[rec.id] = {
            "id": rec.id, "name": rec.name, "registered": True,
            "created": format_ns(rec.created_ns), "auth_failures": rec.failures,
            "groups": list(rec.groups), "readings": 0, "metrics": [], "first_seen": None,
            "last_reading": None, "last_reading_ns": None,
        }
    for s in store.devices():
        rows.setdefault(s.device_id, _unregistered_row(s.device_id)).update({
            "readings": s.readings, "metrics": sorted(s.metrics),
            "first_seen": format_ns(s.first_ns), "last_reading": format_ns(s.last_ns),
            "last_reading_ns": s.last_ns,
        })
    for device_id in store.held_device_ids() - rows.keys():  # no readings left: seqs, alerts
        rows[device_id] = _unregistered_row(device_id)
    for row in rows.values():
        seen_ns, seen_from = last_seen(arrived.get(row["id"]), row["last_reading_ns"], now)
        row.update({"last_seen": format_ns(seen_ns), "last_seen_ns": seen_ns,
                    "last_seen_from": seen_from})
    return [rows[k] for k in sorted(rows)]


def _unregistered_row(device_id: str) -> dict[str, Any]:
    """The row of a device with stored data but no credentials (revoked, data kept)."""
    return {"id": device_id, "name": device_id, "registered": False, "created": None,
            "auth_failures": None, "groups": [],  # no credentials: nothing counted
            "readings": 0, "metrics": [], "first_seen": None, "last_reading": None,
            "last_reading_ns": None}


def device_summary(security: Any, store: Any, device_id: str,
                   metric: str | None = None) -> Any:
    """The store's summary of ``device_id`` (:meth:`~edgewise.store.base.Store.device`:
    that device's alone; ``None`` for a known device with no readings), read once; a 404
    problem for an unknown device (:func:`known_device`), or for a ``metric`` (when given)
    it has never had, listing the metrics it has. Text no store can hold (a NUL
    character) is no device's nor metric's: its 404, not the store's refusal
    (:func:`~edgewise.server.problems.storable`)."""
    if not storable(device_id):
        raise not_found(device_id)
    summary = store.device(device_id)
    if summary is None and not known_device(security, store, device_id):
        raise not_found(device_id)
    if metric and (summary is None or metric not in summary.metrics):
        raise unknown_metric(device_id, metric, sorted(summary.metrics) if summary else [])
    return summary


def known_device(security: Any, store: Any, device_id: str) -> bool:
    """Whether the device is registered or has stored data: readings, or what outlives
    them under retention (seqs, alerts), or data kept at a deletion (:meth:`~edgewise.
    security.credentials.Security.keep_data`). False for text no store can hold (a NUL
    character: PostgreSQL refuses it, a 503 for what is only an unknown id)."""
    if not storable(device_id):
        return False
    if security.has_device(device_id) or store.device(device_id) is not None:
        return True
    return store.has_device_data(device_id) or security.data_kept(device_id)


def withdraw_releases(registry: Any, security: Any, device_id: str, actor: str) -> list[int]:
    """Withdraw the model releases aimed at ``device:<device_id>`` (:meth:`Registry.
    withdraw_device`), audit it as ``model.withdraw``, and return their release counters.

    Both ways of deleting a device call this (``DELETE /v1/devices/{id}`` and ``edgewise
    device delete``), so a device registered again under the same id is not served the old
    device's signed releases. Releases to its groups stay.

    In the audit log's write transaction, taken first (:meth:`Security.transaction`): the
    releases are withdrawn only where the entry can be written, and it commits with them."""
    with security.transaction():
        gone = [r.release for r in registry.withdraw_device(device_id)]
        if gone:
            security.audit(actor, "model.withdraw", f"device:{device_id}", {"releases": gone})
    return gone


def not_found(device_id: str) -> Problem:
    """The 404 problem for an unknown device."""
    return Problem(
        404, "Unknown device", f"No device {shorten(device_id)!r} is registered or has data.",
        field="device_id", value=device_id, allowed="an id listed by GET /v1/devices",
        reason="unknown_device",
    )


@router.get("/v1/devices", summary="List devices (viewer)", response_model=None,
            responses=_documented(list[DeviceRow]), description=(
    "Every registered device and every device with stored data, with totals. "
    + LAST_SEEN_DOC))
def list_devices(who: Viewer, security: SecurityDep, store: StoreDep,
                 pipeline: PipelineDep) -> list[dict[str, Any]]:
    """Every registered device and every device with stored data, with totals."""
    return device_rows(security, store, pipeline.arrivals())


@router.post(
    "/v1/devices", status_code=201, response_model=DeviceCreated,
    summary="Register a device (admin); answers its secret once",
)
def add_device(
    body: NewDevice, who: Admin, security: SecurityDep, store: StoreDep,
) -> dict[str, str]:
    """Register a device. The secret is in this answer only; only its hash is kept."""
    try:  # before the store is asked about it: a name with a NUL was its 503
        check_device_name(body.name)
    except InvalidParameterError as exc:
        raise _bad_name(body.name, exc) from None
    if security.has_device(body.name):
        raise _exists(body.name)
    stored = store.has_device_data(body.name)
    if stored or security.data_kept(body.name):
        # a new device under the id would be acked the old one's seq watermark, and
        # would forget messages that were never stored
        held = ("the store still holds data of a device of that id (readings, seqs or "
                "alerts)" if stored else
                "a deletion of a device of that id is unfinished ('edgewise device delete' "
                "beside this gateway revokes the credentials only; this gateway may still "
                "hold its seq watermark, and its labels and models may be kept)")
        raise Problem(
            409, "Device has stored data", f"Device {body.name!r} is not registered, but "
            f"{held}; delete it first with DELETE /v1/devices/{body.name}, or pick another "
            "name.",
            field="name", value=body.name, allowed="a name without stored data",
            reason="has_data",
        )
    try:
        device_id, secret = security.add_device(body.name, groups=body.groups,
                                                actor=who.actor)
    except InvalidParameterError as exc:
        if exc.field != "groups" and security.has_device(body.name):
            # another admin registered the same name meanwhile: the 409 it would have had
            raise _exists(body.name) from None
        bad_group = exc.field == "groups"  # else 'name': not a valid name
        raise Problem(
            422, "Invalid group name" if bad_group else "Invalid device name", str(exc),
            field="groups" if bad_group else "name",
            value=body.groups if bad_group else body.name,
            allowed="1-64 letters, digits, '_', '.', '-', starting with a letter or digit",
            reason="bad_group" if bad_group else "bad_device",
        ) from None
    return {"id": device_id, "name": body.name, "secret": secret,
            "groups": security.device_groups(device_id)}


def _bad_name(name: str, exc: InvalidParameterError) -> Problem:
    """The 422 for a device name that is no valid device id (``exc`` says why)."""
    return Problem(
        422, "Invalid device name", str(exc), field="name", value=name,
        allowed="1-64 letters, digits, '_', '.', '-', starting with a letter or digit",
        reason="bad_device",
    )


def _exists(name: str) -> Problem:
    """The 409 for registering a name a device is registered under (also when another
    admin registered it between the check and the registration)."""
    return Problem(
        409, "Device exists", f"Device {shorten(name)!r} already exists; delete it first or "
        "pick another name.", field="name", value=name,
        allowed="a name not yet registered", reason="exists",
    )


class DeviceSecret(BaseModel):
    """A device's new secret, from ``POST /v1/devices/{device_id}/secret``; shown only once."""

    id: str
    secret: str = Field(description=(
        "Send as 'Authorization: Bearer <secret>' (HTTP) or as the MQTT password. Not "
        "stored; the old secret is refused from now on."))


@router.post(
    "/v1/devices/{device_id}/secret", response_model=DeviceSecret,
    summary="Replace a device's secret (admin); answers the new one once",
    responses={404: {"description": "No device of that id is registered (never was, or "
                     "was deleted: a deleted device gets a secret by being added again)."}},
)
def rotate_device_secret(device_id: DeviceId, who: Admin,
                         security: SecurityDep) -> dict[str, str]:
    """Give a registered device a new secret (a leaked one stops working): the old secret
    is refused at once, over HTTP and MQTT (a connection made with it is closed); the
    device keeps its id, groups and stored data. The new secret is in this answer only.
    Audited as ``device.rotate_secret``. ``edgewise device rotate-secret --device ID`` does
    the same on the gateway's machine."""
    try:
        secret = security.rotate_device_secret(device_id, actor=who.actor)
    except KeyError:
        shown = shorten(device_id)
        why = (f"it was deleted (its stored data is kept until DELETE /v1/devices/{shown} "
               f"succeeds); a deleted device gets a secret by being registered again "
               f"(POST /v1/devices)" if security.data_kept(device_id)
               else "register it with POST /v1/devices")
        raise Problem(
            404, "Unknown device", f"Device {shown!r} is not registered, so it has no secret "
            f"to replace: {why}.", field="device_id", value=device_id,
            allowed="a registered device's id, as GET /v1/devices lists it "
            "(registered: true)", reason="unknown_device",
        ) from None
    return {"id": device_id, "secret": secret}


@router.delete("/v1/devices/{device_id}", summary="Delete a device and all its data (admin)",
               response_model=None, responses=_documented(DeviceDeleted))
def delete_device(
    device_id: DeviceId, who: Admin, security: SecurityDep, store: StoreDep,
    pipeline: PipelineDep, settings: SettingsDep, request: Request,
) -> dict[str, Any]:
    """Revoke the device's credentials, withdraw the model releases aimed at it (its groups'
    stay), make the pipeline forget the device (detectors, seqs, open alert), then delete its
    readings, seqs, conflicts, alerts, labels and the model files its data trained
    (``models/label-<id>-vN.pkl`` from ``edgewise train --with-labels``, every
    ``models/transfer-*.pkl`` whose fleet or device it was, and every model file under
    ``models/`` that ``edgewise train rul`` or ``train forecast`` trained on its stored data,
    named in ``trained_models_deleted``), and clear its
    retained ack on an external MQTT broker (a device registered again under the same id
    starts from no ack, not the old watermark, and is served none of the old device's
    releases). The deletion stands when the store's purge of the deleted rows fails (e.g.
    no free disk for the copy): ``purge_pending`` is then true, and the store purges them
    at its next open (or ``edgewise store purge``); on PostgreSQL it is true after any
    deletion, whose bytes stay as dead tuples until ``edgewise store purge``; null for a
    store that does not tell. ``broken_logs`` names the write-ahead logs ``edgewise
    repair`` moved aside, which still hold the device's readings logged before a crash.
    When the store's deletion fails, the answer is 503 (reason ``store_error``) saying what
    was done already (credentials revoked, releases withdrawn), with
    ``credentials_deleted`` and ``releases_withdrawn``: the data is kept and the id refused
    by ``POST /v1/devices`` and ``edgewise device add`` until a later deletion succeeds.

    Audited before anything is done as ``device.delete_data.requested`` (an audit log
    that cannot be written fails the request with nothing done), then as it goes:
    ``device.delete`` (the credentials), ``model.withdraw`` (the releases), and
    ``device.delete_data`` with what was deleted once the data is gone.

    Deletions of one id run one at a time: of several at once, the first deletes (200,
    audited once) and the others find the device gone (404), or, when the first's store
    deletion failed, try it again."""
    with _deleting(device_id):
        return _delete_device(device_id, who, security, store, pipeline, settings, request)


#: device id -> [its deletion lock, how many requests hold or wait for it]; an id's entry
#: goes when the last of them is done, so ids deleted once take no memory for ever
_DELETIONS: dict[str, list[Any]] = {}
_DELETIONS_GUARD = threading.Lock()


@contextlib.contextmanager
def _deleting(device_id: str) -> Iterator[None]:
    """Hold ``device_id``'s deletion lock (other ids' deletions go on meanwhile): two
    deletions of one id at once were both answered 200 and both audited
    ``device.delete_data``, while only one deleted anything."""
    with _DELETIONS_GUARD:
        entry = _DELETIONS.setdefault(device_id, [threading.Lock(), 0])
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _DELETIONS_GUARD:
            entry[1] -= 1
            if entry[1] == 0:
                del _DELETIONS[device_id]


def _delete_device(
    device_id: str, who: Any, security: Any, store: Any, pipeline: Any, settings: Any,
    request: Request,
) -> dict[str, Any]:
    """:func:`delete_device`, under the id's deletion lock (:func:`_deleting`): whether
    the device is known is checked under it, so a deletion that finished meanwhile makes
    this one a 404."""
    registered = security.has_device(device_id)
    if not known_device(security, store, device_id):
        raise not_found(device_id)
    actor = who.actor
    # first, before anything is done: the deletion takes long (it must not hold the audit
    # log's write lock throughout), so its entries cannot commit with it; this one says it
    # was asked for (nothing is done when it cannot be written), 'device.delete_data' at
    # the end what was deleted. The steps between are audited as they go.
    security.audit(actor, "device.delete_data.requested", device_id,
                   {"registered": registered})
    # before anything is revoked, as 'edgewise device delete' does: until the store's
    # deletion below succeeds (data_deleted), the id is refused by every way of adding a
    # device (a new device under it would be acked the old one's seqs)
    security.keep_data(device_id)
    if registered:
        try:
            security.delete_device(device_id, actor=actor)
        except KeyError:  # deleted by someone else meanwhile
            registered = False
    releases = withdraw_releases(request.app.state.registry, security, device_id, actor)
    pipeline.forget_device(device_id)
    try:
        with pipeline.commit_lock:  # a commit under way for the device lands before, not after
            rows = store.delete_device(device_id)
    except StoreError as exc:
        raise _data_not_deleted(device_id, registered, releases, exc) from None
    # DuckDB: True when its purge failed (the deletion stands; it logged why)
    pending = getattr(store, "purge_pending", None) if rows else False
    try:
        labels = label_store(request, security, settings).delete_device(device_id, who=actor)
    except LabelsBusyError as exc:  # label import in another process holds the file
        security.audit(actor, "device.delete_data", device_id,
                       {"rows": rows, "labels_pending": True})
        raise _labels_not_deleted(device_id, registered, releases, rows, exc) from None
    from edgewise.label import workflow

    # the store-trained models first, to name them; delete_models then counts the label and
    # transfer ones (it would delete these too, as 'edgewise device delete' has it do)
    trained = workflow.delete_trained_models(settings.data_dir, device_id)
    models = workflow.delete_models(settings.data_dir, device_id) + len(trained)
    security.data_deleted(device_id)  # the id may be registered again
    forget = getattr(request.app.state, "forget_device", None)
    if forget is not None:  # the transport's state: an external broker's retained ack
        forget(device_id)
    kept = [str(p) for p in store.set_aside_logs()]
    security.audit(actor, "device.delete_data", device_id,
                   {"rows": rows, "labels": labels, "label_models": models,
                    **({"trained_models": trained} if trained else {}),
                    **({"purge_pending": True} if pending else {}),
                    **({"broken_logs": len(kept)} if kept else {})})
    return {"id": device_id, "credentials_deleted": registered, "rows_deleted": rows,
            "labels_deleted": labels, "label_models_deleted": models,
            "trained_models_deleted": trained,
            "releases_withdrawn": releases, "purge_pending": pending,
            "broken_logs": kept}


def _labels_not_deleted(device_id: str, registered: bool, releases: list[int], rows: int,
                        exc: LabelsBusyError) -> Problem:
    """The 503 of a deletion whose readings went but whose labels did not: another writer
    held the label file past its busy timeout. The id stays refused (its labels are kept)
    until a later DELETE deletes them."""
    return Problem(
        503, "Labels busy",
        f"Device {shorten(device_id)!r}: {'credentials revoked; ' if registered else ''}"
        f"{rows} stored readings deleted; but its labels were NOT deleted: "
        f"{str(exc).rstrip('.')}. The id cannot be registered again until they are: send "
        f"DELETE /v1/devices/{shorten(device_id)} again after Retry-After seconds.",
        reason="labels_busy",
        headers={"Retry-After": "10"},
        extra={"credentials_deleted": registered, "releases_withdrawn": releases,
               "rows_deleted": rows, "data_kept": True},
    )


def _data_not_deleted(device_id: str, registered: bool, releases: list[int],
                      exc: StoreError) -> Problem:
    """The 503 of a deletion whose store deletion failed: what was done already (credentials
    revoked, releases withdrawn, the pipeline's state of the device forgotten), that the
    data is kept and the id refused until it is deleted, and how to finish."""
    done = ["credentials revoked" if registered else "the device was not registered"]
    if releases:
        done.append(f"model releases {', '.join(map(str, releases))} withdrawn")
    done.append("the gateway's state of the device (seqs, detectors, open alert) forgotten")
    return Problem(
        503, "Store unavailable",
        f"Device {shorten(device_id)!r}: {'; '.join(done)}; but its stored data was NOT "
        f"deleted: {str(exc).rstrip('.')}. The data is kept, and the id cannot be registered "
        f"again until it is deleted: send DELETE /v1/devices/{shorten(device_id)} again once "
        f"the store answers.",
        reason="store_error",
        extra={"credentials_deleted": registered, "releases_withdrawn": releases,
               "data_kept": True},
    )


@router.get(
    "/v1/fleet", summary="Each device's health, last-seen and open alerts (viewer)",
    response_model=None, responses=_documented(Fleet),
    description=(
        "Health is ``alerting`` (open alerts), ``stale`` (nothing heard from it for "
        "``stale_after``: ``last_seen_age_s``, the seconds since ``last_seen``, is over it), "
        "``silent`` (never sent) or ``ok``. " + LAST_SEEN_DOC
        + " ``last_seen_age_s`` is never negative."),
)
async def fleet(
    who: Viewer,
    security: SecurityDep,
    store: StoreDep,
    pipeline: PipelineDep,
    stale_after: Annotated[
        str, Query(description="A device the gateway has not heard from for this long "
                   "(by when its messages arrived, not its readings' times) is 'stale' "
                   "(duration: '300s', '5m', seconds; empty: the default).")
    ] = STALE_AFTER,
) -> dict[str, Any]:
    """Each device's health (``alerting``, ``stale``, ``silent`` or ``ok``), last-seen and
    open alerts; see the route's description."""
    # empty means the default, as an empty filter does elsewhere (not "stale at once")
    stale_ns = parse_duration(stale_after or STALE_AFTER, "stale_after") or 0  # not None
    now = time.time_ns()  # before the arrivals: a later one is capped at it (age 0)
    arrivals = await run_in_threadpool(pipeline.arrivals)  # its lock: not on the event loop
    rows = await run_in_threadpool(device_rows, security, store, arrivals, now)
    # counted in the store, all of them (a listing capped at its newest left older open
    # alerts out of the counts and health) and without loading one alert per poll
    open_by = await run_in_threadpool(store.open_alert_counts)
    for row in rows:
        row["open_alerts"] = open_by.get(row["id"], 0)
        last = row["last_seen_ns"]
        if row["open_alerts"]:
            row["health"] = "alerting"
        elif last is None:
            row["health"] = "silent"
        elif now - last > stale_ns:
            row["health"] = "stale"
        else:
            row["health"] = "ok"
        row["last_seen_age_s"] = None if last is None else round((now - last) / 1e9, 3)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["health"]] = counts.get(row["health"], 0) + 1
    return {"now": format_ns(now), "devices": rows, "counts": counts,
            "open_alerts": sum(open_by.values())}
