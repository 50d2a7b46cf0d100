"""Alerts: list and filter (viewer), acknowledge and label (operator).

Labels (``true_alarm`` / ``false_alarm``) record a person's verdict: every label keeps who
gave it and an optional note (relabelling without a note keeps the note given before).
Labelling an anomaly alert also writes a window label into the label store
(:class:`~edgewise.label.store.LabelStore`, audited, source ``alert:<id>``): ``anomaly``
for a true alarm, ``normal`` for a false alarm, over the alert's span ``[start, end]`` as
stored when it is labelled. As the alert grows later, or takes over a merged alert's
verdict, the running gateway writes a new version over its span then
(:mod:`edgewise.gateway.label_sync`, by ``gateway``). Relabelling an alert adds a new
version over its span then that supersedes the alert's earlier window label (and those of
alerts merged into it), so only the newest verdict counts. Seq-gap alerts (missing
messages, not sensor behaviour) get no window label.

Offline, ``edgewise label suggest`` uses labels to pick the next windows to ask about,
and ``edgewise train --with-labels`` fits a label-aware model file from them. Live, with
``EDGEWISE_ALERT_FEEDBACK=1``, a verdict given here reaches the running gateway's alert
manager at once (:meth:`~edgewise.alerts.AlertManager.note_verdict`): a false alarm
raises the bar for the next anomaly of its device led by the same metric to the alert's
peak score (decaying over a week), a true alarm removes that bar; after a restart the
manager takes the verdicts still in effect up again from the store.

``GET /v1/alerts`` lists live alerts only. When a late reading showed two alerts of a device
to be one fault, they were merged: the alert that covers both stays listed, and the other
is no longer listed but ``GET /v1/alerts/{id}`` still answers for it, with ``merged_into``
naming the alert that covers it now (``merged_into`` is ``null`` for a live alert). Its
acknowledgement and label were carried over to that alert when it had none; its window
label stays as written, over its own span (a merge writes no window label), until the
alert that covers it is labelled, whose window label then supersedes it; acknowledging
or labelling a merged alert is refused (409, reason ``merged_alert``), naming the alert to
act on instead, also when the merge lands while the request runs (nothing is written then).

Acknowledging is one conditional write (``Store.acknowledge_alert``): of operators
acknowledging one alert at once, or acknowledging and labelling it, the first keeps the
acknowledgement, all are answered with its ``acked_by``, and only it is audited
(``alert.ack``, or, where a verdict acknowledged the alert, its ``alert.label`` entry with
``acknowledged`` true). Each verdict's ``alert.label`` entry says what it changed: the
``label`` given, the ``previous_label`` it replaced (``null`` for the first),
``acknowledged`` and, where a note was given, ``note_chars`` (its length, not its text).

``GET /v1/alerts`` lists newest first (by start, then creation, then id) and pages by keyset:
when more alerts follow a page, the answer has a ``Link: <alerts?...&cursor=...>;
rel="next"`` header, a reference relative to the request's URL (RFC 3986: ``/v1/alerts``
resolves it to ``/v1/alerts?…``, and behind a proxy that adds a path prefix to
``/prefix/v1/alerts?…``), whose URL keeps the request's filters
and adds ``cursor``, an opaque token of the page's last alert; following it until no
``Link`` comes lists every matching alert once (an alert whose start a late reading moved
earlier meanwhile may come again; none is skipped). The body stays a JSON array. A cursor
that is not one the API gave is a 422 (``field`` ``cursor``, reason ``bad_cursor``).
With ``explain=true`` a page is at most :data:`EXPLAIN_MAX_LIMIT` (100) alerts: each is
explained in turn (a read of the history around it), so a larger ``limit`` is a 422
(``field`` ``limit``, reason ``explain_limit``) rather than minutes of work per request.

``GET /v1/alerts/{id}`` (and ``GET /v1/alerts?explain=true``) adds ``explanation``: for an
anomaly alert of a device with two or more metrics, the signed, exact contribution of each
metric to the T² of the alert's most anomalous reading against the device's readings of
the hour before the alert, or of the day, or the week, before it when the hour is too
little history or a metric has no reading in it (one reported every 2 h)
(:func:`~edgewise.explain.alerts.alert_explanation`; the terms sum to ``value``, ``base``
is 0). It is ``null`` with ``explanation_detail`` saying why otherwise (seq-gap alert, one
metric, too little history). Every number in it is finite: a metric constant before the
alert that moved in it gets a large, finite term and is named in ``constant_before``; a
metric with no reading in the week before the alert is left out, named in ``left_out``
and in ``explanation_detail``; one not read at the peak for over three of its usual
intervals (a sensor that dropped out) is left out of the peak's T², named in ``stale``
and in ``explanation_detail``, as the live detector scores a reading on the metrics it
holds. An explanation is kept and answered again only while the
device's readings it was made from are unchanged: a reading that arrives late inside the
alert's span or its reference makes it anew (and one that could not be made is not kept).
One explanation reads at most :data:`MAX_EXPLAIN_ROWS` readings: a reference and span
holding more, of a device at a high rate, are both averaged per bucket of one length to fit
(the span's buckets whole, as the reference's), which ``explanation_detail`` says. A
reference is widened past the hour for a metric left out only where that metric has a
reading in the week before the alert (not for one new in the alert).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from edgewise.alerts import KINDS
from edgewise.server.deps import Operator, SecurityDep, SettingsDep, StoreDep, Viewer
from edgewise.server.problems import Problem, storable
from edgewise.server.query import (
    _shown,
    bad_cursor,
    cursor_key,
    format_ns,
    make_cursor,
    parse_instant,
)
from edgewise.server.routes.labels import labels_writable
from edgewise.store._batch import _text_problem

__all__ = [
    "WINDOW_LABEL", "alert_json", "decode_cursor", "encode_cursor", "explain_alert", "router",
]

#: The window label an alert's verdict writes into the label store.
WINDOW_LABEL = {"true_alarm": "anomaly", "false_alarm": "normal"}

router = APIRouter(tags=["alerts"])
log = logging.getLogger(__name__)

STATUSES = ("open", "acknowledged")
AlertId = Annotated[str, Path(description="The alert id.")]


class LabelBody(BaseModel):
    """A person's verdict on an alert. A field it does not know is refused (422 naming it):
    ``"notes"``, a typo of ``note``, lost the note."""

    model_config = ConfigDict(extra="forbid")

    label: Literal["true_alarm", "false_alarm"] = Field(
        description="'true_alarm' (a real problem) or 'false_alarm'."
    )
    note: str | None = Field(default=None, max_length=2000, description="Free text "
                             "(no NUL character: PostgreSQL cannot store one).")


def alert_json(alert: Any) -> dict[str, Any]:
    """An alert as JSON, with RFC 3339 times beside the nanoseconds."""
    d = alert.to_dict()
    d["start"] = format_ns(alert.start_ns)
    d["end"] = format_ns(alert.end_ns)
    d["created"] = format_ns(alert.created_ns) if alert.created_ns else None
    return d


#: Reference history before an alert that its explanation compares against.
REFERENCE_NS = 3600 * 10**9
#: the most history before an alert read to explain it, when an hour is not enough
MAX_REFERENCE_NS = 7 * 24 * REFERENCE_NS
#: the references tried in turn, each when the one before is too little history or
#: leaves out a metric that has a reading in the week before the alert (one that reports
#: every 2 h has no reading in the hour before)
REFERENCES = ((REFERENCE_NS, "hour"), (24 * REFERENCE_NS, "day"), (MAX_REFERENCE_NS, "week"))
#: the most readings one explanation reads out of the store: a reference and span with
#: more are averaged per bucket, to at most this many rows in all (:func:`_readings`)
MAX_EXPLAIN_ROWS = 200_000
#: (device id, alert id, start_ns, end_ns) -> (reference start, fingerprint of its
#: readings, answer)
_explained: dict[tuple[str, str, int, int], tuple[int, tuple[Any, ...], dict[str, Any]]] = {}


def forget_device(device_id: str) -> int:
    """Drop the cached explanations of ``device_id``'s alerts (its deletion: what they were
    made of is gone from the store, so nothing of it stays in memory); how many.

    >>> _explained[("pump-9", "a1", 0, 1)] = (0, (), {})
    >>> forget_device("pump-9"), forget_device("pump-9")
    (1, 0)
    """
    gone = [k for k in list(_explained) if k[0] == device_id]
    for k in gone:
        _explained.pop(k, None)
    return len(gone)


def _fingerprint(store: Any, alert: Any, since: int) -> tuple[Any, ...]:
    """What the store holds of the device in ``[since, end]``, in a few numbers: each
    metric's mean per 64th of the range, computed by the store (no reading is read
    out). A reading that arrived in the range since changes them (unless it equals its
    bucket's mean to the last bit), so a cached explanation made before it is not used."""
    step = max(1, (alert.end_ns + 1 - since) // 64)
    return tuple(store.query(alert.device_id, None, since, alert.end_ns + 1, step))


def explain_alert(store: Any, alert: Any) -> dict[str, Any]:
    """``{"explanation": …, "explanation_detail": …}`` for one alert (an explanation is
    cached per span, and used again only while the readings it was made from are the
    same: a reading arriving late inside the span or its reference makes it anew)."""
    if alert.kind != "anomaly":
        return {"explanation": None,
                "explanation_detail": f"A {alert.kind!r} alert has no sensor explanation."}
    key = (alert.device_id, alert.id, alert.start_ns, alert.end_ns)
    hit = _explained.get(key)
    if hit is not None and _fingerprint(store, alert, hit[0]) == hit[1]:
        return hit[2]
    since, fingerprint, answer = _explain(store, alert)
    if answer["explanation"] is not None:  # a failure is not cached: more history may come
        if len(_explained) > 10_000:
            _explained.clear()
        _explained[key] = (since, fingerprint, answer)
    return answer


def _explain(store: Any, alert: Any) -> tuple[int, tuple[Any, ...], dict[str, Any]]:
    """The answer of :func:`explain_alert` made anew, with the start of the reference it
    used and the :func:`_fingerprint` of that range, taken before its readings were read
    (a reading arriving in between makes the next call explain anew, never the reverse)."""
    from edgewise.errors import InvalidParameterError
    from edgewise.explain.alerts import STALE_GAPS, alert_explanation

    answer: dict[str, Any] = {"explanation": None, "explanation_detail": None}
    used, used_fp = alert.start_ns, ()
    reach = 0  # how far back a reference must go to hold a metric left out
    # an hour of reference; if that is too little or leaves out a metric read in the week
    # before, a day, then a week (never the whole history: one device of 3 M readings took
    # 1.9 s and 1 GB per alert, a list of 200 never ended)
    for reference, named in REFERENCES:
        if reference < reach:
            continue  # would leave the metric out again
        since = alert.start_ns - reference
        fingerprint = _fingerprint(store, alert, since)
        rows, averaged = _readings(store, alert, since, fingerprint, named)
        try:
            ex = alert_explanation(rows, alert.start_ns, alert.end_ns)
        except InvalidParameterError as exc:
            if answer["explanation"] is not None:
                break  # a shorter reference explained it (leaving a metric out): kept
            answer["explanation_detail"] = str(exc)
            if len({m for m, _, _ in rows}) == 1:
                break  # one metric: more history cannot make it two
            continue
        if not all(map(math.isfinite, [ex.value, *ex.contributions.values()])):
            # alert_explanation keeps every term finite; JSON has no inf, so never pass one
            if answer["explanation"] is None:
                answer["explanation_detail"] = "The alert's T² is not a finite number."
            break
        widen, said = False, named
        if ex.left_out:
            # widen only for a metric read in the week before the alert: one new in the
            # alert is left out of every reference, and the hour's answer (of readings as
            # stored) is kept rather than a week's averaged per bucket
            newest = [t for m in ex.left_out
                      for t in store.times_before(alert.device_id, m, alert.start_ns, 1)]
            widen = bool(newest) and alert.start_ns - max(newest) <= MAX_REFERENCE_NS
            reach = alert.start_ns - max(newest) if widen else reach
            said = named if widen else REFERENCES[-1][1]  # none in the week: said so
        used, used_fp, answer = since, fingerprint, {"explanation": {
            "method": "t2_exact", "value": round(ex.value, 6), "base": ex.base,
            "contributions": {k: round(v, 6) for k, v in ex.contributions.items()},
            # each metric's share of the blame: how far its reading misses what the others
            # predict for it (the order of `top`; the signed terms above sum to T²)
            "shares": {k: round(v, 6) for k, v in ex.shares.items()},
            "top": [{"name": n, "value": round(c, 6)} for n, c in ex.top(8)],
            "peak": format_ns(ex.peak_ns), "reference_rows": ex.reference_rows,
            "constant_before": ex.constant_before, "left_out": ex.left_out,
            "stale": ex.stale,
        }, "explanation_detail": " ".join(filter(None, (
            f"{', '.join(ex.left_out)} {'has' if len(ex.left_out) == 1 else 'have'} no "
            f"reading in the {said} before the alert; left out." if ex.left_out else None,
            f"{', '.join(ex.stale)} {'was' if len(ex.stale) == 1 else 'were'} not read at "
            f"the peak (no reading for over {STALE_GAPS:g} of its usual intervals); left "
            f"out of it." if ex.stale else None,
            averaged))) or None}
        if not widen:
            break
    return used, used_fp, answer


def _readings(store: Any, alert: Any, since: int, fingerprint: tuple[Any, ...],
              named: str) -> tuple[list[tuple[str, int, float]], str | None]:
    """The device's readings in ``[since, end]`` to explain ``alert`` with, and ``None``;
    or, when they are more than :data:`MAX_EXPLAIN_ROWS` (a device at a high rate: a week
    of one was millions of rows, all in memory for one answer), at most that many rows,
    the reference and the span averaged alike, per bucket of one length, with a sentence
    saying so. ``fingerprint`` (:func:`_fingerprint` of the range) names the metrics the
    buckets are shared among, and where the history in the range begins.

    The span's buckets are whole, as the reference's: from the one the alert starts in to
    the one it ends in, with whatever readings of theirs lie just outside it, each stamped
    at the alert's start where it begins before it. (Averaging shrinks each sensor's own
    noise by the readings in a bucket: a span read as stored, or in part buckets, against
    an averaged reference made a noisy innocent sensor look more anomalous than the
    culprit.) The reference ends where the alert's first bucket begins."""
    dev, start, stop = alert.device_id, alert.start_ns, alert.end_ns + 1
    rows = store.query(dev, None, since, stop, None, MAX_EXPLAIN_ROWS + 1)
    if len(rows) <= MAX_EXPLAIN_ROWS:
        return rows, None  # as stored, every reading
    del rows  # over the cap: nothing of it is kept while the buckets are read
    metrics = max(1, len({row[0] for row in fingerprint}))
    # a bucket a metric fewer than fits: the span's whole buckets may reach one past stop
    step = _reference_bucket(fingerprint, since, stop, stop, MAX_EXPLAIN_ROWS // metrics - 1)
    first, last = start // step * step, -(-stop // step) * step  # the span's whole buckets
    span = [(m, max(t, start), v)
            for m, t, v in store.query(dev, None, first, last, step, MAX_EXPLAIN_ROWS)]
    ref = store.query(dev, None, -(-since // step) * step, first, step,
                      MAX_EXPLAIN_ROWS - len(span))
    return ref + span, (
        f"The {named} before the alert and the alert hold more than {MAX_EXPLAIN_ROWS:,} "
        f"readings, more than an explanation reads: the {named} was averaged to "
        f"{_seconds(step)} buckets, and the alert's span to the same buckets (whole, with "
        "the readings of its first and last bucket outside it), so each reading's noise "
        "is averaged alike in both.")


def _reference_bucket(fingerprint: tuple[Any, ...], since: int, stop: int, start: int,
                      per_metric: int) -> int:
    """The bucket (ns) that puts the readings in ``[since, start)`` in at most
    ``per_metric`` buckets a metric, spent where the history is (3 h of readings in a
    week's reference are not given 1/56 of them): over what lies from the fingerprint's
    first bucket on, or over its buckets that hold readings of a metric (each of those
    ``k`` buckets meets at most two buckets more than it holds whole), whichever is finer.

    >>> fp = (("a", 0, 1.0), ("a", 100, 1.0), ("b", 100, 2.0))  # 64 buckets of 100 ns
    >>> _reference_bucket(fp, 0, 6400, 6400, 14), _reference_bucket(fp, 0, 6400, 200, 14)
    (20, 16)
    """
    first = max(since, min((row[1] for row in fingerprint), default=since))
    step = _bucket(max(1, start - first), per_metric - 1)
    held: dict[str, int] = {}
    for row in fingerprint:
        held[row[0]] = held.get(row[0], 0) + 1
    k = max(held.values(), default=0)
    if k and per_metric > 2 * k:
        width = max(1, (stop - since) // 64)  # the fingerprint's bucket
        step = min(step, _bucket(k * width, per_metric - 2 * k))
    return step


def _bucket(range_ns: int, buckets: int) -> int:
    """The bucket (ns) that splits ``range_ns`` into at most ``buckets`` buckets.

    >>> _bucket(7 * 24 * 3600 * 10**9, 40_000) / 1e9
    15.12
    """
    return max(1, -(-range_ns // max(1, buckets)))


def _seconds(step_ns: int) -> str:
    """A bucket's length as the detail says it.

    >>> _seconds(15_120_000_000), _seconds(250_000)
    ('15.12-s', '0.00025-s')
    """
    return f"{step_ns / 1e9:g}-s"


def _unknown(alert_id: str) -> Problem:
    """The 404 for an alert id no alert has."""
    shown = _shown(alert_id)  # a 20,000-character id is not echoed back in full
    return Problem(
        404, "Unknown alert", f"No alert with id {shown!r}.", field="alert_id",
        value=shown, allowed="an id listed by GET /v1/alerts", reason="unknown_alert",
    )


def _get(store: Any, alert_id: str) -> Any:
    if not storable(alert_id):
        raise _unknown(alert_id)
    try:
        return store.get_alert(alert_id)
    except KeyError:
        raise _unknown(alert_id) from None


def _get_live(store: Any, alert_id: str) -> Any:
    """The alert to acknowledge or label: 404 if unknown, 409 if it was merged into
    another (the verdict belongs on the alert that covers it now)."""
    alert = _get(store, alert_id)
    if alert.merged_into is not None:
        raise Problem(
            409, "Merged alert",
            f"Alert {alert_id!r} was merged into alert {alert.merged_into!r}, which covers "
            f"its span now; acknowledge or label {alert.merged_into!r} instead.",
            field="alert_id", value=alert_id, allowed="an id listed by GET /v1/alerts",
            reason="merged_alert", extra={"merged_into": alert.merged_into},
        )
    return alert


#: What a ``cursor`` must be, as a problem says it.
CURSOR_ALLOWED = ("the cursor of the Link rel=\"next\" header of an earlier GET /v1/alerts "
                  "answer, unchanged (or no cursor, for the first page)")
_INT64 = range(-(2**63), 2**63)


def encode_cursor(alert: Any) -> str:
    """The cursor that pages on after ``alert``: its listing key ``(start_ns, created_ns,
    id)`` as base64url JSON (opaque to clients; :func:`decode_cursor` reads it back).

    >>> from edgewise.store.base import Alert
    >>> c = encode_cursor(Alert("pump-1", 10, 20, 0.9, id="a1", created_ns=30))
    >>> c, decode_cursor(c)
    ('WzEwLDMwLCJhMSJd', (10, 30, 'a1'))
    """
    return make_cursor([alert.start_ns, alert.created_ns, alert.id])


def decode_cursor(cursor: str) -> tuple[int, int, str]:
    """The listing key ``(start_ns, created_ns, id)`` in a cursor of :func:`encode_cursor`;
    a 422 :class:`~edgewise.server.problems.Problem` naming ``cursor`` for anything else.

    >>> decode_cursor("not a cursor")
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: Query parameter 'cursor' must be the cursor of ...
    """
    key = cursor_key(cursor)
    if (isinstance(key, list) and len(key) == 3
            and all(type(x) is int and x in _INT64 for x in key[:2])
            and isinstance(key[2], str) and key[2] and storable(key[2])):
        # an id with a NUL or a lone surrogate is no alert's: it went to the store, a 503
        return key[0], key[1], key[2]
    raise bad_cursor(cursor, CURSOR_ALLOWED)


#: The largest ``limit`` of ``GET /v1/alerts?explain=true``: each alert of the page is
#: explained in turn (up to about 0.25 s each), so a page of 10,000 was ~40 min of CPU.
EXPLAIN_MAX_LIMIT = 100

_LINK_DOC = {200: {"description": "The alerts of this page, newest first.", "headers": {
    "Link": {"schema": {"type": "string"}, "description":
             "'<URL>; rel=\"next\"' when more alerts follow: the URL of the next page "
             "('alerts?…&cursor=…', relative to the request's URL: resolve it against the "
             "URL asked, so it holds behind a proxy's path prefix), the same filters with "
             "a 'cursor'. Absent on the last page."}}},
    422: {"description": "A bad filter or cursor, or with explain=true a limit over "
                         f"{EXPLAIN_MAX_LIMIT} (field 'limit', reason 'explain_limit')."}}


@router.get("/v1/alerts", summary="List alerts, newest first (viewer)", responses=_LINK_DOC)
async def list_alerts(
    who: Viewer,
    store: StoreDep,
    request: Request,
    response: Response,
    device: Annotated[str | None, Query(description="Only this device's alerts.")] = None,
    status: Annotated[str | None, Query(description="'open' or 'acknowledged'.")] = None,
    kind: Annotated[str | None, Query(description="'anomaly' or 'seq_gap'.")] = None,
    since: Annotated[
        str | None, Query(description="Only alerts whose span ends at or after this time "
                          "(RFC 3339 or epoch seconds).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many "
                                "(a page; the Link header leads to the next); at most "
                                f"{EXPLAIN_MAX_LIMIT} with explain=true.")] = 100,
    cursor: Annotated[
        str | None, Query(description="Where the page starts: the cursor in the Link "
                          "rel=\"next\" header of the page before. Absent: the newest.")
    ] = None,
    explain: Annotated[bool, Query(description="Add each alert's signed sensor "
                                   "contributions (reads the history around each alert; "
                                   f"limit at most {EXPLAIN_MAX_LIMIT}).")] = False,
) -> list[dict[str, Any]]:
    """Live alerts, newest first, a page of at most ``limit``; when more follow, the
    ``Link: <alerts?…&cursor=…>; rel="next"`` header names the next page (same filters),
    relative to the request's URL. An empty
    filter (``device=``, ``status=``, ``kind=``, ``since=``, ``cursor=``) is no filter.
    A ``status`` or ``kind`` that is none of those allowed is a 422 (``bad_status``,
    ``bad_kind``); a ``device`` no store could hold (a NUL character) matches nothing.
    With ``explain=true`` a ``limit`` over :data:`EXPLAIN_MAX_LIMIT` is a 422
    (``explain_limit``)."""
    if explain and limit > EXPLAIN_MAX_LIMIT:
        raise Problem(
            422, "Invalid query parameter",
            f"Query parameter 'limit' must be 1 to {EXPLAIN_MAX_LIMIT} with explain=true "
            f"(each alert is explained in turn). Got {limit} instead; page with the Link "
            "header, or list without explain and ask GET /v1/alerts/{id} for one.",
            field="limit", value=limit, allowed=f"1 to {EXPLAIN_MAX_LIMIT} with explain=true",
            reason="explain_limit",
        )
    # an empty device, status or kind is no filter, as an empty 'since' or 'cursor' is
    # (device= matched nothing: no device is named '')
    device, status, kind = device or None, status or None, kind or None
    _check_choice("status", status, STATUSES)
    _check_choice("kind", kind, KINDS)
    since_ns = parse_instant(since, "since")
    # only a paging call passes `after`, so a store of a user's own that lists without it
    # still answers the first page; an empty cursor is none, as an empty 'since' is
    paging = {"after": decode_cursor(cursor)} if cursor else {}
    if device is not None and not storable(device):
        return []  # no device has this id (and PostgreSQL would refuse to look it up)
    # one more than the page: whether a next page exists, without a last empty one
    alerts = await run_in_threadpool(
        store.list_alerts, device, status, kind, since_ns, limit + 1, **paging)
    if len(alerts) > limit:
        alerts = alerts[:limit]
        url = request.url.include_query_params(cursor=encode_cursor(alerts[-1]))
        # relative to the request's URL (/v1/alerts): an absolute path lost the path
        # prefix of a proxy in front, and page 2 was a 404 there
        response.headers["Link"] = f'<alerts?{url.query}>; rel="next"'
    if not explain:
        return [alert_json(a) for a in alerts]
    return [{**alert_json(a), **await run_in_threadpool(explain_alert, store, a)} for a in alerts]


def _check_choice(name: str, value: str | None, allowed: tuple[str, ...]) -> None:
    """A 422 (reason ``bad_<name>``) naming query parameter ``name`` and the values it
    allows, when ``value`` is none of them (``None`` is no filter); a long value is echoed
    cut short.

    >>> _check_choice("kind", "anomaly", ("anomaly", "seq_gap"))
    >>> _check_choice("kind", "seqgap", ("anomaly", "seq_gap"))
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: Query parameter 'kind' must be one of anomaly, seq_gap. ...
    """
    if value is None or value in allowed:
        return
    shown = _shown(value)  # a 60,000-character value is not echoed back in full
    raise Problem(
        422, "Invalid query parameter",
        f"Query parameter {name!r} must be one of {', '.join(allowed)}. "
        f"Got {shown!r} instead.",
        field=name, value=shown, allowed=" or ".join(allowed), reason=f"bad_{name}",
    )


@router.get("/v1/alerts/{alert_id}", summary="One alert with its explanation (viewer)")
def get_alert(alert_id: AlertId, who: Viewer, store: StoreDep) -> dict[str, Any]:
    alert = _get(store, alert_id)
    return {**alert_json(alert), **explain_alert(store, alert)}


_ACT_DOC = {
    404: {"description": "No alert has this id (reason 'unknown_alert')."},
    409: {"description": "The alert was merged into another one, also when the merge came "
                         "while this request ran (reason 'merged_alert'; 'merged_into' names "
                         "the alert to act on instead). Nothing was written."},
}


@router.post("/v1/alerts/{alert_id}/ack", summary="Acknowledge an alert (operator)",
             responses=_ACT_DOC)
def ack_alert(
    alert_id: AlertId, who: Operator, store: StoreDep, security: SecurityDep, request: Request,
) -> dict[str, Any]:
    """Mark the alert acknowledged by the caller; acknowledging twice keeps the first (of
    operators acknowledging at once, one is audited and all are answered with its
    ``acked_by``)."""
    _audit_writable(security)
    alert, applied = _acknowledge(store, alert_id, who.name)
    if applied:
        security.audit(who.actor, "alert.ack", alert_id, {"device": alert.device_id})
    _tell_pipeline(request, "note_written", alert)
    return alert_json(alert)


def _tell_pipeline(request: Request, what: str, alert: Any) -> None:
    """Hand ``alert`` as stored now to the running gateway's alert manager method ``what``
    (``note_written``: its held copy takes up the acknowledgement; ``note_verdict``: the
    verdict acts on the live alerting too), where the app runs one; a failure is logged,
    not answered (the write is stored already)."""
    pipeline = getattr(request.app.state, "pipeline", None)
    if pipeline is None:
        return
    try:
        getattr(pipeline.alerts, what)(alert)
    except Exception:  # stored already: the next start takes it up from the store
        log.exception("could not hand alert %s to the live alerting", alert.id)


def _audit_writable(security: Any) -> None:
    """Fail (nothing done) while another writer holds the audit log past its busy timeout,
    before an acknowledgement or verdict is written: its entry, written right after it,
    then finds the log free. The store write is not done inside the log's transaction
    (:meth:`~edgewise.security.Security.transaction`): that would hold every device's
    authentication in this process for as long as the write waits for the store (a
    purge, retention), so a writer taking the log in between can still leave one
    unaudited (logged by the 500)."""
    with security.transaction():
        pass


def _acknowledge(store: Any, alert_id: str, by: str, **changes: Any) -> tuple[Any, bool]:
    """:meth:`~edgewise.store.base.Store.acknowledge_alert`, one conditional write (a check
    and then a write let two operators each be told they acknowledged, and let a merge in
    between swallow the verdict); 404 for an unknown id, 409 for a merged alert."""
    if not storable(alert_id):
        raise _unknown(alert_id)  # never asked of the store: PostgreSQL refuses a NUL
    try:
        alert, applied = store.acknowledge_alert(alert_id, by, **changes)
    except KeyError:
        _get(store, alert_id)  # the 404
        raise
    if not applied:
        _get_live(store, alert_id)  # the 409 when a merge took it (as the answer says now)
    return alert, applied


@router.post("/v1/alerts/{alert_id}/label", summary="Label an alert true/false alarm (operator)",
             responses=_ACT_DOC)
def label_alert(
    alert_id: AlertId, body: LabelBody, who: Operator, store: StoreDep, security: SecurityDep,
    settings: SettingsDep, request: Request,
) -> dict[str, Any]:
    """Record the verdict (and the note, when one is given: without one the alert keeps its
    note); labelling also acknowledges an open alert and, for an anomaly alert, labels its
    span as stored now ``anomaly`` (true alarm) or ``normal`` (false alarm) in the label
    store, in place of the window label of any earlier verdict on the alert or on alerts
    merged into it (a span that grows later is relabelled by the gateway). The
    answer's ``window_label`` is that label (``null`` for other kinds)."""
    _check_note(body.note)
    with _LABELLING:  # the alert's verdict and its window label change together
        return _label_alert(alert_id, body, who, store, security, settings, request)


#: What a label's ``note`` may be, as a problem says it.
NOTE_ALLOWED = "text of at most 2000 characters without a NUL character ('\\x00')"


def _check_note(note: str | None) -> None:
    r"""A 422 naming body field ``note`` (reason ``bad_note``) for a note a store cannot
    keep as it is: one with a NUL character (PostgreSQL refuses it in text, DuckDB kept
    it), refused alike on both before anything is written.

    >>> _check_note("sensor cleaned")
    >>> _check_note("a\x00b")
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: note must not hold a NUL character ('\x00'). ...
    """
    problem = None if note is None else _text_problem("note", note)
    if problem:
        raise Problem(422, "Invalid input", problem, field="note", value=_shown(note or ""),
                      allowed=NOTE_ALLOWED, reason="bad_note")


def _last_event(store: Any) -> int | None:
    """The store's newest alert event id (``None`` where it cannot say)."""
    try:
        return int(store.last_alert_event_id())
    except Exception:
        return None


def _acknowledged_here(store: Any, alert_id: str, mark: int | None, before: Any) -> bool:
    """Whether the verdict just written on ``alert_id`` also acknowledged it: its
    ``alert.acknowledged`` event (an alert has one, written by the write that acknowledged
    it) is the one right before the verdict's ``alert.labelled`` event, of one transaction
    (events after ``mark``). An ack that landed between the verdict's read and its write
    wrote its own event (and its ``alert.ack`` entry), so it is never counted twice.
    Where the store's events cannot be read: whether it was open before.

    Only this alert's events after ``mark`` are read (:meth:`Store.alert_events_for`):
    listing every alert's events after it, to keep this one's, cost a read of each event
    written meanwhile by other requests and the gateway (200,000 of them: 1.4 s on DuckDB,
    0.7 s on PostgreSQL; now 2 ms and 36 ms)."""
    if mark is None:
        return before.status == "open"
    events: list[Any] = []
    try:
        after = mark
        while True:
            page = store.alert_events_for(alert_id, after, 1000)
            events += page
            if len(page) < 1000:
                break
            after = page[-1].id
    except Exception:
        return before.status == "open"
    acked = {(e.id, e.at_ns) for e in events if e.event == "alert.acknowledged"}
    labelled = [(e.id, e.at_ns) for e in events if e.event == "alert.labelled"]
    # one transaction's events: consecutive ids (the counter's row is locked until its
    # commit) and one at_ns (an ack committed right before the verdict has its own)
    return bool(labelled) and (labelled[-1][0] - 1, labelled[-1][1]) in acked


#: One verdict at a time: two operators labelling one alert at once could leave the alert
#: saying false_alarm and its window label anomaly (2 of 30 rounds of 4 racing requests).
_LABELLING = threading.Lock()


def _label_alert(
    alert_id: str, body: LabelBody, who: Any, store: Any, security: Any, settings: Any,
    request: Request,
) -> dict[str, Any]:
    changes: dict[str, Any] = {"label": body.label, "labelled_by": who.name}
    if body.note is not None:
        changes["note"] = body.note
    window = None
    # an anomaly alert's verdict writes a window label too: the label file's write lock
    # is taken first, so a writer holding it (an 'edgewise label import') fails the request
    # (503 labels_busy) before anything is written. The verdict committed first, then the
    # label failed: a 500, the alert said false_alarm (its webhook sent) and training never
    # saw the label. The label commits when the block ends; a verdict refused (404, 409)
    # rolls it back.
    labelled = _get(store, alert_id).kind == "anomaly"
    with contextlib.ExitStack() as stack:
        held = None
        if labelled:  # the label file held by another writer: 503, nothing stored
            with labels_writable(request, security, settings) as labels:
                held = stack.enter_context(labels.hold())
        # the verdict, and the acknowledgement of an open alert, in one write that a merge
        # racing it cannot land between (that lost the verdict: 200 for an unlisted alert)
        _audit_writable(security)
        # what the verdict replaces, read under _LABELLING (verdicts are written one at a
        # time), and where the store's outbox begins: the audit entry says what changed
        before, mark = _get(store, alert_id), _last_event(store)
        alert, _ = _acknowledge(store, alert_id, who.name, **changes)
        detail: dict[str, Any] = {"device": alert.device_id, "label": body.label,
                                  "previous_label": before.label,
                                  "acknowledged": _acknowledged_here(store, alert_id, mark,
                                                                     before)}
        if body.note is not None:
            detail["note_chars"] = len(body.note)  # as label.add says it: not the text
        security.audit(who.actor, "alert.label", alert_id, detail)
        if held is not None:
            note = f"alert {alert_id} labelled {body.label}"
            if alert.note:  # the note given now, or the one kept from an earlier verdict
                note += f": {alert.note}"
            lab = held.add(
                alert.device_id, alert.start_ns, alert.end_ns + 1, WINDOW_LABEL[body.label],
                who=who.actor, note=note, source=f"alert:{alert_id}",
                # verdicts on alerts merged into this one: this verdict covers their spans
                supersedes=[f"alert:{a}" for a in store.absorbed(alert_id)],
            )
            window = {"id": lab.id, "label": lab.label, "version": lab.version,
                      "start_ns": lab.start_ns, "end_ns": lab.end_ns}
    _tell_pipeline(request, "note_verdict", alert)  # acts on the live alerting (when on)
    return {**alert_json(alert), "window_label": window}
