"""Labels on windows of a device's history, and the labelling queue.

* ``POST /v1/labels`` (operator): label a window ``normal``, ``anomaly`` or a fault class;
  relabelling a window adds a version; every write is audit-logged. A window must end by
  now plus the allowed clock skew (``EDGEWISE_MAX_FUTURE_S``, as for telemetry): a label
  on time not yet recorded would apply to readings that arrive later.
* ``GET /v1/labels`` (viewer): the current labels (``history=true``: every version; an
  empty ``device=`` is no filter, as on ``GET /v1/alerts``), a page of at most ``limit``
  (default and most 10,000); when more follow, a ``Link: <labels?...&cursor=...>;
  rel="next"`` header (relative to the request's URL) names the next page, with the same
  filters (as ``GET /v1/alerts`` pages). The body stays a JSON array.
* A write that finds ``labels.sqlite`` held by another writer for longer than the busy
  timeout (an ``edgewise label import`` of many rows) is a 503 (reason ``labels_busy``)
  naming the file, with ``Retry-After``; nothing of the request was written.
* ``GET /v1/label-queue?device=`` (viewer): the next windows worth a person's time,
  chosen by the default query strategy, each with the readings around it for a chart
  (only those stored: a metric's gaps are null) and its times also as exact text
  (``start_ns_text``, ``end_ns_text``: a browser rounds JSON numbers above 2**53). Only
  an operator's request records its windows as the query mix's open questions
  (``label-mix.json``) and the label set's ``snapshot_id`` (a 503 ``labels_busy`` when the
  file is held, as for a write); a viewer's writes nothing (its ``snapshot_id`` is the
  same hash of the set, not recorded).

The labels live in ``<data dir>/labels.sqlite`` (:class:`~edgewise.label.store.LabelStore`).
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool

from edgewise.errors import InvalidParameterError, PayloadError
from edgewise.label.store import DeviceDeletion, LabelsBusyError, LabelStore, deleted_devices
from edgewise.label.strategies import STRATEGIES
from edgewise.server.deps import Operator, SecurityDep, SettingsDep, StoreDep, Viewer
from edgewise.server.problems import Problem, shorten, storable
from edgewise.server.query import (
    bad_cursor,
    cursor_key,
    format_ns,
    make_cursor,
    parse_instant,
)
from edgewise.telemetry import parse_time, validate_device_id

__all__ = ["label_store", "labels_writable", "router"]

router = APIRouter(tags=["labels"])

_CONTEXT_POINTS = 240
#: What a window's start or end may be (as :func:`~edgewise.server.query.parse_instant`).
_INSTANT_ALLOWED = ("RFC 3339 with a UTC offset (e.g. '2024-01-31T12:00:00Z') or an epoch time "
                    "(s, ms, us or ns; a number or text), from 1970 to 2262")


def _time_type(value: Any) -> Any:
    """Let text, numbers and null through, as they are; refuse anything else (true/false,
    which pydantic would take as 1 and 0; arrays, objects) naming the field itself rather
    than each type it tried."""
    if value is None or (isinstance(value, str | int | float) and not isinstance(value, bool)):
        return value
    raise PydanticCustomError(
        "time_type", "Input should be RFC 3339 text or an epoch time (s, ms, us or ns) as a "
        "number or text")


_Instant = Annotated[StrictStr | StrictInt | StrictFloat | None, BeforeValidator(_time_type)]


class LabelIn(BaseModel):
    """A person's label on the window ``[start, end)`` of a device. A field it does not know
    is refused (422 naming it): ``"notes"``, a typo of ``note``, lost the note."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(description="The device.")
    # a number is an epoch time, as telemetry's "ts"; JSON true/false are no times
    start: _Instant = Field(
        default=None, description="Window start: RFC 3339, or an epoch time (s, ms, us or ns, "
        "told apart by size) as a number or text.")
    end: _Instant = Field(
        default=None, description="Window end (exclusive: the single reading at t is "
        "[t, t + 1 ns)): RFC 3339, or an epoch time as a number or text.")
    # strict: JSON true/false are no times (pydantic's lax int took them as 1 and 0)
    start_ns: StrictInt | None = Field(default=None,
                                       description="Or the start in UTC nanoseconds.")
    end_ns: StrictInt | None = Field(default=None, description="Or the end in UTC nanoseconds.")
    label: str = Field(description="'normal', 'anomaly' or a fault class, e.g. 'cavitation'.")
    note: str = Field(default="", max_length=2000, description="Free text.")


def _body_instant(value: str | int | float | None, field: str) -> int | None:
    """UTC nanoseconds of a body field's time: RFC 3339 or epoch text as
    :func:`~edgewise.server.query.parse_instant` reads it, or an epoch number (s, ms, us or
    ns, told apart by size) as telemetry's ``ts``; ``None`` stays ``None``. A bad one is a
    422 naming the field, the value and what is allowed.

    >>> _body_instant(1704067200, "start") == _body_instant("2024-01-01T00:00:00Z", "start")
    True
    >>> _body_instant(1704067200.5, "end")
    1704067200500000000
    """
    if value is None or isinstance(value, str):
        return parse_instant(value, field, where="Body field")
    try:
        return parse_time(value, field_name=field, earliest_ns=0, max_future_s=math.inf)
    except PayloadError as exc:
        raise Problem(422, "Invalid body field",
                      f"Body field {field!r} must be {_INSTANT_ALLOWED}. Got {exc.value!r} "
                      "instead.", field=field, value=exc.value, allowed=_INSTANT_ALLOWED,
                      reason="bad_time") from None


def label_store(request: Request, security: Any, settings: Any) -> LabelStore:
    """The app's label store (``<data dir>/labels.sqlite``, audited), opened on first use.

    Opening may have to write the file (its WAL mode, the schema of an older version's
    file); another writer holding it past the busy timeout then (an ``edgewise label
    import``) is a :class:`~edgewise.label.store.LabelsBusyError`, as for a write (a 503
    ``labels_busy`` where the routes answer one; it was a 500), and the next request opens
    it again."""
    store = getattr(request.app.state, "labels", None)
    if store is None:
        try:
            store = LabelStore(settings.data_dir, security=security)
        except sqlite3.OperationalError as exc:
            name = getattr(exc, "sqlite_errorname", "") or ""
            if not (name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED"))
                    or "database is locked" in str(exc).lower()):
                raise
            path = Path(settings.data_dir) / "labels.sqlite"
            raise LabelsBusyError(
                f"The label file {str(path)!r} is held by another writer (an 'edgewise label "
                f"import' of many rows?) for longer than the busy timeout while the gateway "
                f"opened it ({exc}); retry once it is done.", path=path) from exc
        request.app.state.labels = store
    return store  # type: ignore[no-any-return]


#: Seconds a client is told to wait (``Retry-After``) when the label file is held.
LABELS_RETRY_S = 10


@contextlib.contextmanager
def labels_writable(request: Request, security: Any, settings: Any) -> Iterator[LabelStore]:
    """The app's label store, for a write in the ``with`` block: a write that waited
    past the busy timeout for another writer of ``labels.sqlite`` (``edgewise label
    import`` in another process; :class:`~edgewise.label.store.LabelsBusyError`) is
    answered 503 ``labels_busy`` naming the file, with ``Retry-After``, not a 500; so is
    the file's first opening (:func:`label_store`) held so.

    >>> from types import SimpleNamespace as NS
    >>> from pathlib import Path
    >>> import tempfile
    >>> req = NS(app=NS(state=NS(labels=None)))
    >>> with labels_writable(req, None, NS(data_dir=tempfile.mkdtemp())) as labels:
    ...     raise LabelsBusyError("held", path=Path("labels.sqlite"))
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: held Nothing of this request was stored; ...
    """
    try:
        yield label_store(request, security, settings)
    except LabelsBusyError as exc:
        raise Problem(
            503, "Labels busy",
            f"{exc} Nothing of this request was stored; retry after the Retry-After "
            f"header ({LABELS_RETRY_S} s).",
            field="labels", value=str(exc.path), allowed="a retry once the other writer is "
            "done", reason="labels_busy", headers={"Retry-After": str(LABELS_RETRY_S)},
        ) from None


def _label_json(lab: Any) -> dict[str, Any]:
    d = lab.to_dict()
    d["start"] = format_ns(lab.start_ns)
    d["end"] = format_ns(lab.end_ns)
    d["created"] = format_ns(lab.created_ns)
    return d


def _deleted(device_id: str, entry: DeviceDeletion) -> Problem:
    """The 404 problem for a label on a device deleted with its data (``entry``: the audit
    log's ``device.delete_data`` of it): its readings and labels are gone, so the label
    would label nothing, and a device registered again under the id starts with none."""
    when = format_ns(entry.ts_ns)
    return Problem(
        404, "Deleted device",
        f"Device {shorten(device_id)!r} was deleted at {when} by {shorten(entry.actor)!r}, "
        f"and its readings and labels with it: a label on its history would label "
        f"nothing (a device registered again under the id starts with no readings).",
        field="device_id", value=device_id, allowed="an id listed by GET /v1/devices",
        reason="deleted_device", extra={"deleted": when},
    )


def live_device(security: Any, store: Any, device_id: str) -> bool:
    """Whether ``device_id`` is registered or the store holds data of it: what
    :func:`~edgewise.server.routes.devices.known_device` asks, less a deletion's note that
    the data was kept (:meth:`~edgewise.security.credentials.Security.data_kept`), which
    stands until the deletion is done, after the labels went. Asked holding the label
    file's write lock (``LabelStore.add(check=…)``): a deletion that deleted the device's
    labels deleted its credentials and readings before, so this is False from then on.
    The deletion takes that lock holding no lock this takes (the store's and the
    credentials' locks are each released before), so neither waits on the other."""
    return bool(security.has_device(device_id) or store.has_device_data(device_id))


def _gone(security: Any, device_id: str) -> Problem:
    """The 404 of a label on a device that is not (or no longer) known: reason
    ``deleted_device`` when it was deleted with its data, else ``unknown_device``."""
    from edgewise.server.routes.devices import not_found  # devices imports us

    gone = deleted_devices(security, [device_id]).get(device_id)
    return _deleted(device_id, gone) if gone is not None else not_found(device_id)


@router.post("/v1/labels", status_code=201, summary="Label a window of a device (operator)")
def post_label(body: LabelIn, who: Operator, request: Request, security: SecurityDep,
               store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """Store the label (a new version if the window was labelled before) and audit it.

    404 when the device is neither registered nor has data (a label kept for an unknown
    id would be inherited by a device registered later under it): reason
    ``deleted_device`` when it was deleted with its data (``deleted``: when; its readings
    went with it), else ``unknown_device``; also when the device was deleted while this
    request ran (checked again holding the label file's write lock, which the deletion
    takes to delete its labels). 422 when the window ends later than now plus
    the allowed clock skew (``max_future_s``). 503 ``labels_busy`` (with ``Retry-After``)
    when another writer held the label file past the busy timeout: nothing was stored."""
    for name, text, ns in (("start", body.start, body.start_ns), ("end", body.end, body.end_ns)):
        if text is not None and ns is not None:
            raise Problem(422, "Invalid label", f"Give {name!r} or {name + '_ns'!r}, not both "
                          f"(they may disagree). Got {shorten(text)!r} and {ns!r}.", field=name,
                          value=text, allowed=f"one of {name!r} or {name + '_ns'!r}",
                          reason="conflict")
    start = body.start_ns if body.start_ns is not None else _body_instant(body.start, "start")
    end = body.end_ns if body.end_ns is not None else _body_instant(body.end, "end")
    for name, v in (("start", start), ("end", end)):
        if v is None:
            raise Problem(422, "Invalid label", f"Field {name!r} (or {name}_ns) is required.",
                          field=name, value=None, allowed=_INSTANT_ALLOWED, reason="missing")
    assert start is not None and end is not None
    # inf (EDGEWISE_MAX_FUTURE_S=inf) is no bound, as for telemetry (int(inf) raised: a 500)
    finite = math.isfinite(settings.max_future_s)
    latest = time.time_ns() + int(settings.max_future_s * 1e9) if finite else 2**63
    if latest < end < 2**63:  # from 2**63 on, the label store names the range (1970-2262)
        given = body.end if body.end is not None else body.end_ns
        raise Problem(
            422, "Invalid label",
            f"Body field 'end' must be no later than now plus the allowed clock skew of "
            f"{settings.max_future_s:g} s (EDGEWISE_MAX_FUTURE_S), {format_ns(latest)}: a "
            f"label on time not yet recorded would apply to readings that arrive later. "
            f"Got {format_ns(end)} ({shorten(given)!r}) instead.", field="end", value=given,
            allowed=f"a time no later than {format_ns(latest)}", reason="future_label",
        )
    try:
        validate_device_id(body.device_id)
    except PayloadError:
        checked = False  # a malformed id: the label store names it (422) below
    else:
        from edgewise.server.routes.devices import known_device  # devices imports us

        checked = True
        if not known_device(security, store, body.device_id):
            raise _gone(security, body.device_id)
    try:
        # checked again under the label file's write lock, which a device's deletion takes
        # to delete its labels (after its credentials and readings, holding no other lock
        # then): a deletion landing between the check above and the write deleted the
        # device and its labels, then this label was written (201) and inherited by a
        # device registered again under the id
        def still_there() -> None:
            if not live_device(security, store, body.device_id):
                raise _gone(security, body.device_id)

        with labels_writable(request, security, settings) as labels:
            lab = labels.add(body.device_id, start, end, body.label, who=who.actor,
                             note=body.note, check=still_there if checked else None)
    except ValueError as exc:
        # the store names the argument at fault (exc.field); the problem names its body field
        at_fault = exc.field if isinstance(exc, InvalidParameterError) else None
        field, value, allowed = "label", body.label, "'normal', 'anomaly' or a fault class"
        if at_fault == "device_id":
            field, value, allowed = "device_id", body.device_id, "a registered device id"
        elif at_fault == "start_ns":
            field, value, allowed = "start", start, "a time from 1970 to 2262"
        elif at_fault == "end_ns":  # out of range, or not after start_ns
            # the detail (the store's) names the rule: a single reading at t is [t, t + 1)
            field, value, allowed = "end", end, "a time from 1970 to 2262, after 'start'"
        detail = str(exc)
        if isinstance(value, str):  # the store quotes the value whole: quote it cut
            detail = detail.replace(repr(value), repr(shorten(value)))
        raise Problem(422, "Invalid label", detail, field=field, value=value, allowed=allowed,
                      reason="bad_label") from None
    return _label_json(lab)


def _check_device(device: str) -> None:
    """A 422 naming the query parameter ``device`` when no device could have that id
    (:func:`~edgewise.telemetry.validate_device_id`), for every labels route alike.

    >>> _check_device("pump-1")
    >>> _check_device("bad id!")
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: ...
    """
    try:
        validate_device_id(device)
    except PayloadError as exc:
        raise Problem(422, "Invalid query parameter",
                      f"Query parameter 'device' must be {exc.allowed}. Got {shorten(device)!r} "
                      "instead.", field="device", value=device, allowed=exc.allowed,
                      reason="bad_device") from None


#: What a labels ``cursor`` must be, as a problem says it.
CURSOR_ALLOWED = ("the cursor of the Link rel=\"next\" header of an earlier GET /v1/labels "
                  "answer with the same 'history', unchanged (or no cursor, for the first "
                  "page)")
_INT64 = range(0, 2**63)


def encode_cursor(lab: Any, history: bool) -> str:
    """The cursor that pages on after label ``lab``: its listing key (``history``: its id;
    else ``(device_id, start_ns, end_ns, id)``) as base64url JSON, opaque to clients.

    >>> from edgewise.label.store import Label
    >>> lab = Label(7, "p", 10, 20, "normal", "", "ana", 0, 1, True)
    >>> [decode_cursor(encode_cursor(lab, h), h) for h in (False, True)]
    [('p', 10, 20, 7), 7]
    """
    return make_cursor([lab.id] if history else [lab.device_id, lab.start_ns, lab.end_ns,
                                                 lab.id])


def _ints(xs: list[Any]) -> bool:
    """Whether every item of ``xs`` is an int of 0 to 2**63 - 1 (not a bool, a float)."""
    return all(type(x) is int and x in _INT64 for x in xs)


def decode_cursor(cursor: str, history: bool) -> Any:
    """The listing key in a cursor of :func:`encode_cursor` made with the same
    ``history``; a 422 naming ``cursor`` (reason ``bad_cursor``) for anything else.

    >>> decode_cursor("WzEwXQ", False)
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: Query parameter 'cursor' must be the cursor of ...
    """
    key = cursor_key(cursor)
    if history and isinstance(key, list) and len(key) == 1 and _ints(key):
        return key[0]
    if (not history and isinstance(key, list) and len(key) == 4 and isinstance(key[0], str)
            and key[0] and storable(key[0]) and _ints(key[1:])):
        # a device id with a lone surrogate failed in the label store (a 500), one with a
        # NUL is no device's
        return key[0], key[1], key[2], key[3]
    raise bad_cursor(cursor, CURSOR_ALLOWED)


_LINK_DOC = {200: {"description": "The labels of this page.", "headers": {
    "Link": {"schema": {"type": "string"}, "description":
             "'<URL>; rel=\"next\"' when more labels follow: the URL of the next page "
             "('labels?…&cursor=…', relative to the request's URL: resolve it against the "
             "URL asked), the same filters with a 'cursor'. Absent on the last page."}}}}


@router.get("/v1/labels", summary="List labels (viewer)", responses=_LINK_DOC)
def get_labels(
    who: Viewer, request: Request, response: Response, security: SecurityDep,
    settings: SettingsDep,
    device: Annotated[str | None, Query(
        description="Only this device (empty: every device, as no 'device'; an id no "
        "device can have is a 422 'bad_device').")] = None,
    history: Annotated[bool, Query(description="Every version, superseded too.")] = False,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many "
                                "(a page; the Link header leads to the next).")] = 10_000,
    cursor: Annotated[
        str | None, Query(description="Where the page starts: the cursor in the Link "
                          "rel=\"next\" header of the page before. Absent: the first.")
    ] = None,
) -> list[dict[str, Any]]:
    """The current labels by device then time (``history=true``: every version, oldest
    first), of one ``device`` or all, a page of at most ``limit``; when more follow, the
    ``Link: <…&cursor=…>; rel="next"`` header names the next page (same filters). An empty
    ``device=`` or ``cursor=`` is none (every device; the first page), as on
    ``GET /v1/alerts``.

    422 ``bad_device`` for a non-empty ``device`` no device could have, as the label queue
    answers (an empty list would say only that it has no labels); 422 ``bad_cursor`` for a
    cursor the API did not give (or gave with the other ``history``)."""
    device = device or None  # device= is no filter, as on GET /v1/alerts
    if device is not None:
        _check_device(device)  # 200 [] would hide that no device could have this id
    after = decode_cursor(cursor, history) if cursor else None
    with labels_writable(request, security, settings) as labels:  # a busy first open: 503
        pass
    # one more than the page: whether a next page exists, without a last empty one
    if history:
        found = labels.history(device, limit=limit + 1, after=after)
    else:
        found = labels.labels(device, limit=limit + 1, after=after)
    if len(found) > limit:
        found = found[:limit]
        url = request.url.include_query_params(cursor=encode_cursor(found[-1], history))
        # relative to the request's URL (/v1/labels), so it holds behind a proxy's prefix
        response.headers["Link"] = f'<labels?{url.query}>; rel="next"'
    return [_label_json(lab) for lab in found]


def _context_rows(store: Any, device: str, ts: np.ndarray, metrics: list[str],
                  spans: list[tuple[int, int]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per metric of the history, its stored times and finite values at the history times
    ``ts[a:b]`` of the spans ``(a, b)``: one read per metric and stretch of overlapping
    spans, so a reading is read once however many spans hold it.

    Only the history's metrics (the kept ones, at most
    :data:`~edgewise.label.workflow.MAX_METRICS`) and only within the history's span: so
    the charts read at most the readings the history holds, however many metrics the
    device has (each window's chart read every metric of the device around it, 1.4
    million readings for 9 windows of a device of 2,000 metrics, under a 200,000 cap).

    >>> from types import SimpleNamespace as NS
    >>> rows = [("flow", 10, 1.0), ("flow", 20, 2.0), ("junk", 20, 9.0), ("temp", 10, 40.0)]
    >>> st = NS(query=lambda dev, metric, start, end: [
    ...     r for r in rows if r[0] == metric and start <= r[1] < end])
    >>> got = _context_rows(st, "p", np.array([10, 20, 30]), ["flow"], [(1, 3)])
    >>> {m: (t.tolist(), v.tolist()) for m, (t, v) in got.items()}
    {'flow': ([20], [2.0])}
    """
    merged: list[list[int]] = []
    for a, b in sorted((a, b) for a, b in spans if b > a):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for m in metrics:
        rows = [r for a, b in merged  # each sorted by time, the stretches in time order
                for r in store.query(device, m, int(ts[a]), int(ts[b - 1]) + 1)]
        at = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        vals = np.fromiter((r[2] for r in rows), dtype=float, count=len(rows))
        real = np.isfinite(vals)
        out[m] = at[real], vals[real]
    return out


def _context(rows: dict[str, tuple[np.ndarray, np.ndarray]], ts: np.ndarray,
             metrics: list[str], a: int, b: int) -> dict[str, Any]:
    """The readings at the history times ``ts[a:b]`` for a chart: at most about
    ``_CONTEXT_POINTS`` times (every ``step``-th of them), and per metric the mean of its
    stored readings (``rows``, from :func:`_context_rows`) from that time to the next one
    shown, ``None`` where it has none.

    From the readings stored, not from the queue's history: that one carries a metric's
    last value forward over the times it did not report, and a sensor that stopped was
    drawn as a flat line of readings it never sent.

    >>> rows = {"flow": (np.array([10, 20, 30]), np.array([1.0, 2.0, 3.0])),
    ...         "temp": (np.array([10]), np.array([40.0]))}
    >>> _context(rows, np.array([10, 20, 30]), ["flow", "temp"], 0, 3)
    {'ts_ns': [10, 20, 30], 'values': {'flow': [1.0, 2.0, 3.0], 'temp': [40.0, None, None]}}
    """
    if b <= a:
        return {"ts_ns": [], "values": {m: [] for m in metrics}}
    step = max(1, (b - a) // _CONTEXT_POINTS)
    shown = ts[a:b:step]
    none = (np.zeros(0, dtype=np.int64), np.zeros(0))
    values: dict[str, list[float | None]] = {}
    for m in metrics:
        at, vals = rows.get(m, none)
        i, j = np.searchsorted(at, [int(ts[a]), int(ts[b - 1]) + 1])
        slot = np.searchsorted(shown, at[i:j], side="right") - 1  # the shown time at or before
        n = np.bincount(slot, minlength=len(shown))
        # summed in units of the metric's magnitude (a power of two: exact), so two
        # readings of 1e308 in one slot average to 1e308, not to inf (which no JSON holds:
        # the request failed)
        _, exp = np.frexp(np.abs(vals[i:j]).max(initial=0.0))
        total = np.bincount(slot, weights=np.ldexp(vals[i:j], -exp), minlength=len(shown))
        values[m] = [round(float(np.ldexp(total[k] / n[k], exp)), 6) if n[k] else None
                     for k in range(len(shown))]
    return {"ts_ns": [int(t) for t in shown], "values": values}


def _queue(store: Any, labels: LabelStore, device: str, k: int,
           strategy: str, record: bool) -> dict[str, Any]:
    """The label queue's answer; ``record`` (an operator's request) records the label
    set's snapshot and the windows offered as the mix's open questions, each through the
    label file's write lock (:class:`~edgewise.label.store.LabelsBusyError` when another
    writer held it past the busy timeout); without it, nothing is written. A deletion of
    the device landing once the history is being read records no mix state for it."""
    from edgewise.label.workflow import history_from_store, suggest

    since = labels.deletions()  # before the history is read: no state saved if deleted after
    hist = history_from_store(store, device)
    ts, _, metrics = hist
    # the set's id is a hash of it: a viewer's names the set as an operator's records it.
    # Recorded before the questions, so a busy file fails the request before they are.
    snapshot = labels.snapshot_id(device, record=record)
    items = suggest(hist, device, labels, k=k, strategy=strategy, record=record,
                    since=since)
    spans = []
    for it in items:
        span = it["end_ns"] - it["start_ns"]
        spans.append((int(np.searchsorted(ts, it["start_ns"] - 3 * span)),
                      int(np.searchsorted(ts, it["end_ns"] + 3 * span))))
    rows = _context_rows(store, device, ts, metrics, spans)
    for it, (a, b) in zip(items, spans, strict=True):
        it["start"] = format_ns(it["start_ns"])
        it["end"] = format_ns(it["end_ns"])
        # exact as text: a JSON number above 2**53 is rounded by a browser's JSON.parse
        it["start_ns_text"] = str(it["start_ns"])
        it["end_ns_text"] = str(it["end_ns"])
        it["context"] = _context(rows, ts, metrics, a, b)
    return {"device_id": device, "snapshot_id": snapshot, "items": items}


#: The ``strategy`` parameter's description: every strategy the route accepts.
_STRATEGY_DOC = ", ".join(STRATEGIES[:-1]) + f" or {STRATEGIES[-1]}."


@router.get("/v1/label-queue", summary="Windows worth labelling next (viewer)")
async def label_queue(
    who: Viewer, request: Request, store: StoreDep, security: SecurityDep,
    settings: SettingsDep,
    device: Annotated[str, Query(description="The device whose history to look at.")],
    k: Annotated[int, Query(ge=1, le=100, description="How many windows.")] = 10,
    strategy: Annotated[str, Query(description=_STRATEGY_DOC)] = "mix",
) -> dict[str, Any]:
    """The ``k`` windows of ``device``'s history whose labels would teach the detectors
    most, best first, as ``{"device_id", "snapshot_id", "items": [...]}``. Each item:

    * ``start_ns``, ``end_ns``: the window ``[start_ns, end_ns)`` in UTC nanoseconds, as
      JSON numbers (above 2**53 a browser's ``JSON.parse`` rounds them to a multiple of
      256 ns or so: read the ``_text`` fields there);
    * ``start_ns_text``, ``end_ns_text``: the same, exact, as decimal text, e.g.
      ``"1733391234123456789"``; ``POST /v1/labels`` takes them as ``start`` and ``end``;
    * ``start``, ``end``: the same in RFC 3339 (milliseconds), for people;
    * ``score``, ``margin``, ``alarm``: the detector's highest score in the window, its
      margin above the threshold (z units) and whether that is an alarm;
    * ``context``: the readings around the window for a chart, ``ts_ns`` (at most about
      240 times) and ``values`` (per metric, the mean of its stored readings from each time
      to the next; ``null`` where it has none: a sensor that stopped is not drawn on).

    ``snapshot_id`` names the device's current label set (a hash of it: equal sets, equal
    ids). An operator's (or admin's) request records it in ``labels.sqlite``, as
    ``edgewise label import`` and training do, and with the default ``strategy=mix``
    records the windows it offers as the mix's open questions (``label-mix.json``, as
    ``edgewise label suggest`` does), so their answers teach the mix; a viewer's request
    answers from the state as saved and writes nothing (the same request gives the same
    answer, and the id an operator's would record).

    404 ``no_history`` for a device without stored readings; 422 ``bad_strategy``,
    ``bad_device``; 503 ``labels_busy`` (with ``Retry-After``) when an operator's request
    found ``labels.sqlite`` held by another writer past the busy timeout (a viewer's,
    which writes nothing, does not wait for it)."""
    if strategy not in STRATEGIES:
        raise Problem(422, "Invalid query parameter",
                      f"Query parameter 'strategy' must be one of {', '.join(STRATEGIES)}. "
                      f"Got {shorten(strategy)!r} instead.", field="strategy", value=strategy,
                      allowed=" or ".join(STRATEGIES), reason="bad_strategy")
    _check_device(device)  # a 404 "no history" would hide that no id could have one
    try:
        # a viewer reads: only an operator's request records the questions it is asked
        # (and the label set's snapshot), through the label file's write lock: another
        # writer holding it past the busy timeout is a 503 labels_busy, as for a label
        with labels_writable(request, security, settings) as labels:
            return await run_in_threadpool(_queue, store, labels, device, k, strategy,
                                           who.can("operator"))
    except InvalidParameterError as exc:
        if exc.field is not None:  # not about the history (the mix's state file): say so
            raise
        # the library's own: no stored readings, or too few to cut windows from; any
        # other ValueError is a fault of the server's, not a device without history
        raise Problem(404, "No history", str(exc), field="device", value=device,
                      allowed="a device with stored readings", reason="no_history") from None
