"""Query-string values of the API: instants and durations, with problem errors; and the
query string itself, checked against what the route declares (:func:`check_query`).

Instants are RFC 3339 (with an offset, e.g. ``2024-01-31T12:00:00Z``) or epoch seconds;
durations are ``500ms``, ``60s``, ``5m``, ``2h``, ``1d`` or plain seconds.

>>> parse_instant("2024-01-31T12:00:00Z", "start")
1706702400000000000
>>> parse_instant("1706702400.5", "start")
1706702400500000000
>>> parse_duration("5m", "step"), parse_duration("90", "step")
(300000000000, 90000000000)
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import re
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import field_annotation_is_sequence, get_flat_dependant
from pydantic import BaseModel
from starlette.requests import Request

from edgewise.errors import PayloadError
from edgewise.server.problems import HEAD_SCOPE_KEY, Problem, shorten
from edgewise.telemetry import parse_time_text

__all__ = ["QuerySpec", "bad_cursor", "check_query", "closest_parameter", "cursor_key",
           "format_ns", "make_cursor", "parse_duration", "parse_instant", "query_spec",
           "repeated_parameter", "unknown_metric", "unknown_parameter"]

_INSTANT_ALLOWED = ("RFC 3339 with a UTC offset (e.g. '2024-01-31T12:00:00Z') or an epoch time "
                    "(s, ms, us or ns), from 1970 to 2262")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
#: Durations are int64 nanoseconds (they are added to times that are too).
_MAX_DURATION_NS = 2**63
_UNIT_NS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86400 * 10**9}


def parse_instant(text: str | None, field: str, *, where: str = "Query parameter") -> int | None:
    """UTC nanoseconds of an RFC 3339 string or an epoch time (s, ms, us or ns, as
    :func:`~edgewise.telemetry.epoch_ns`), 1970 to 2262 (int64 nanoseconds); ``None``
    stays ``None``. ``where`` names the field's place in the problem (``"Body field"``).

    >>> parse_instant("-99999999999", "start")
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: ...
    """
    if text is None or text == "":
        return None
    try:
        return parse_time_text(text, field_name=field, earliest_ns=0, max_future_s=math.inf)
    except (PayloadError, OverflowError, ValueError):
        # OverflowError/ValueError: a time no datetime or float holds; out of range too
        raise _bad_instant(text, field, where) from None


def _shown(text: str) -> str:
    """``text`` as a problem echoes it: cut to its first 40 characters when longer.

    >>> _shown("1" + "0" * 400)
    '1000000000000000000000000000000000000000... (401 characters)'
    """
    return text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"


#: a time whose '+hh:mm' offset arrived as ' hh:mm': a '+' left unencoded in a query string
_PLUS_AS_SPACE = re.compile(r"\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)? \d{2}:?\d{2}$")


def _bad_instant(text: str, field: str, where: str = "Query parameter") -> Problem:
    """The 422 ``bad_time`` of ``text``; a query time that ends in a space and ``hh:mm``
    (``...T00:05:00 05:30``: the sender's unencoded ``+`` read as a space) says to send the
    ``+`` as ``%2B``.

    >>> _bad_instant("2024-01-01T00:05:00 05:30", "start").body()["detail"]  # doctest: +ELLIPSIS
    "...(a '+' in a query string is read as a space: send the offset's '+' as %2B..."
    """
    shown = _shown(text)
    hint = ""
    if where == "Query parameter" and _PLUS_AS_SPACE.search(text.strip("\t\n\r")):
        hint = (f" (a '+' in a query string is read as a space: send the offset's '+' as "
                f"%2B, {text.replace(' ', '%2B')!r})")
    return Problem(
        422, f"Invalid {where.lower()}",
        f"{where} {field!r} must be {_INSTANT_ALLOWED}. Got {shown!r} instead{hint}.",
        field=field, value=shown, allowed=_INSTANT_ALLOWED, reason="bad_time",
    )


def parse_duration(text: str | None, field: str) -> int | None:
    """Nanoseconds of a duration such as ``60s``, ``5m`` or ``30`` (seconds); must be > 0
    and shorter than int64 nanoseconds (about 292 years).

    >>> parse_duration("1" + "0" * 400, "step")
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: Query parameter 'step' must be a positive duration ...
    """
    if text is None or text == "":
        return None
    m = _DURATION_RE.match(text)
    # float() of 400 digits is fine, or infinity past 1.8e308; round(inf) would overflow
    x = float(m.group(1)) * _UNIT_NS[m.group(2) or "s"] if m else 0.0
    ns = round(x) if math.isfinite(x) and x < _MAX_DURATION_NS else 0
    if ns <= 0:
        allowed = (f"a positive duration such as '500ms', '60s', '5m', '2h', '1d' or seconds, "
                   f"under {_MAX_DURATION_NS // _UNIT_NS['d']} days")
        shown = _shown(text)
        raise Problem(
            422, "Invalid query parameter",
            f"Query parameter {field!r} must be {allowed}. Got {shown!r} instead.",
            field=field, value=shown, allowed=allowed, reason="bad_duration",
        )
    return ns


def format_ns(ts_ns: int | None) -> str | None:
    """RFC 3339 UTC text of nanoseconds, millisecond precision.

    >>> format_ns(1706702400_500_000_000)
    '2024-01-31T12:00:00.500Z'
    """
    if ts_ns is None:
        return None
    dt = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=UTC)
    ms = (ts_ns % 1_000_000_000) // 1_000_000
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


def unknown_metric(device_id: str, metric: str, metrics: list[str]) -> Problem:
    """The 404 problem (reason ``unknown_metric``) for a ``metric`` that ``device_id`` has
    never had: it names the device's ``metrics`` (the first 50), or says it has none.

    >>> unknown_metric("pump-7", "nope", ["rpm", "temp_c"]).detail
    "Device 'pump-7' has no readings of metric 'nope'; its metrics: 'rpm', 'temp_c'."
    """
    shown = ", ".join(repr(m) for m in metrics[:50]) or "none: it has no readings"
    return Problem(404, "Unknown metric",
                   f"Device {device_id!r} has no readings of metric {_shown(metric)!r}; its "
                   f"metrics: {shown}.", field="metric", value=_shown(metric),
                   allowed=f"one of the device's metrics ({shown})", reason="unknown_metric")


_CURSOR_RE = re.compile(r"^[A-Za-z0-9_-]{1,4096}$")


def make_cursor(key: list[Any]) -> str:
    """A paging cursor holding the listing ``key`` of the last item of a page: base64url
    JSON without padding, opaque to clients (:func:`cursor_key` reads it back).

    >>> make_cursor([10, 30, "a1"]), cursor_key(make_cursor([10, 30, "a1"]))
    ('WzEwLDMwLCJhMSJd', [10, 30, 'a1'])
    """
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def cursor_key(cursor: str) -> Any:
    """The JSON value in a cursor of :func:`make_cursor`, or ``None`` where ``cursor`` is
    none (the caller checks its shape and answers :func:`bad_cursor`).

    >>> cursor_key("not a cursor") is None, cursor_key("W10") # '[]'
    (True, [])
    """
    if not _CURSOR_RE.match(cursor):
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        return None


def bad_cursor(cursor: str, allowed: str) -> Problem:
    """The 422 for a ``cursor`` query parameter that is not what ``allowed`` says."""
    shown = _shown(cursor)
    return Problem(
        422, "Invalid query parameter",
        f"Query parameter 'cursor' must be {allowed}. Got {shown!r} instead.",
        field="cursor", value=shown, allowed=allowed, reason="bad_cursor",
    )


@dataclass(frozen=True)
class QuerySpec:
    """The query parameters a route declares: ``names`` in the order it declares them,
    ``lists`` those it takes as a list (given once per value, so repeatable)."""

    names: tuple[str, ...]
    lists: frozenset[str]


#: each route's :class:`QuerySpec` (``None``: left unchecked), made at its first request
_SPECS: weakref.WeakKeyDictionary[Any, QuerySpec | None] = weakref.WeakKeyDictionary()


def _alias(field: Any) -> str:
    """The name a query field is read by: its validation alias, else its alias (FastAPI's
    own rule, kept here: the helper it has for it is not in every version we take)."""
    return getattr(field, "validation_alias", None) or field.alias


def query_spec(route: Any) -> QuerySpec | None:
    """The query parameters ``route`` (an ``APIRoute``) declares, from its dependencies and
    its own parameters as FastAPI reads them (a ``Query`` alias such as ``format`` by its
    alias); ``None`` for a route with none to check against (not an ``APIRoute``)."""
    if route is None:
        return None
    try:
        return _SPECS[route]
    except (KeyError, TypeError):
        pass
    dependant = getattr(route, "dependant", None)
    spec = None
    if isinstance(dependant, Dependant):
        fields = get_flat_dependant(dependant).query_params
        if len(fields) == 1 and isinstance(fields[0].field_info.annotation, type) and \
                issubclass(fields[0].field_info.annotation, BaseModel):  # a query model
            model = fields[0].field_info.annotation
            pairs = [(info.alias or name, info.annotation)
                     for name, info in model.model_fields.items()]
        else:
            pairs = [(_alias(f), f.field_info.annotation) for f in fields]
        spec = QuerySpec(names=tuple(dict.fromkeys(name for name, _ in pairs)),
                         lists=frozenset(name for name, annotation in pairs
                                         if field_annotation_is_sequence(annotation)))
    try:
        _SPECS[route] = spec
    except TypeError:  # a route that takes no weak reference: worked out at each request
        pass
    return spec


#: what a client may mean by a parameter the API names otherwise (tried in turn, before
#: the closest spelling)
_SYNONYMS = {
    "from": ("start", "since"), "begin": ("start", "since"), "after": ("since", "start"),
    "to": ("end",), "until": ("end",), "stop": ("end",), "before": ("end", "before_id"),
    "page": ("cursor",), "offset": ("cursor",), "next": ("cursor",),
    "size": ("limit",), "page_size": ("limit",), "per_page": ("limit",), "max": ("limit",),
}


def closest_parameter(key: str, names: tuple[str, ...]) -> str | None:
    """The parameter of ``names`` that ``key`` most likely meant: the same in another case,
    a synonym (``from`` for ``start``), or the closest spelling (``device_id`` for
    ``device``); ``None`` when none is close.

    >>> names = ("metric", "start", "end", "step", "limit")
    >>> closest_parameter("from", names), closest_parameter("metrics", names)
    ('start', 'metric')
    >>> closest_parameter("device_id", ("device", "status")), closest_parameter("x", names)
    ('device', None)
    """
    low = key.strip().lower()
    for name in names:
        if name.lower() == low:
            return name
    for name in _SYNONYMS.get(low, ()):
        if name in names:
            return name
    found = difflib.get_close_matches(low, names, n=1, cutoff=0.6)
    return found[0] if found else None


def _operation(request: Request) -> str:
    """``'GET /v1/alerts'``: the request's method (``HEAD`` as sent) and its route's path."""
    route = request.scope.get("route")
    path = getattr(route, "path_format", None) or shorten(request.url.path)
    return f"{request.scope.get(HEAD_SCOPE_KEY, request.method)} {path}"


def unknown_parameter(key: str, value: str, names: tuple[str, ...],
                      operation: str) -> Problem:
    """The 422 ``unknown_parameter`` of a query parameter ``key`` (given ``value``) that
    ``operation`` does not take: it lists the ``names`` it takes, and the closest one.

    >>> p = unknown_parameter("from", "2024-01-01T00:00:00Z", ("start", "end"), "GET /v1/x")
    >>> p.detail
    "Query parameter 'from' is not one GET /v1/x takes (did you mean 'start'?); it takes start, end. Got from='2024-01-01T00:00:00Z'."
    >>> p.field, p.value, p.allowed, p.reason
    ('from', '2024-01-01T00:00:00Z', 'one of start, end', 'unknown_parameter')
    >>> unknown_parameter("x", "1", (), "GET /v1/me").allowed
    'none: GET /v1/me takes no query parameters; leave the query string out'
    """  # noqa: E501
    best = closest_parameter(key, names)
    hint = f" (did you mean {best!r}?)" if best else ""
    takes = f"it takes {', '.join(names)}" if names else "it takes none"
    allowed = (f"one of {', '.join(names)}" if names else
               f"none: {operation} takes no query parameters; leave the query string out")
    return Problem(
        422, "Invalid query parameter",
        f"Query parameter {shorten(key)!r} is not one {operation} takes{hint}; {takes}. "
        f"Got {shorten(key)}={_shown(value)!r}.",
        field=shorten(key), value=value, allowed=allowed, reason="unknown_parameter",
    )


def repeated_parameter(key: str, values: list[str], operation: str) -> Problem:
    """The 422 ``repeated_parameter`` of a query parameter ``operation`` takes one value of,
    given more than once (``values``): only one would be read, the others dropped unsaid.

    >>> p = repeated_parameter("start", ["1", "2"], "GET /v1/x")
    >>> p.detail
    "Query parameter 'start' must be given at most once (GET /v1/x reads one value of it); got 2: '1', '2'. Send one."
    >>> p.field, p.value, p.reason
    ('start', "'1', '2'", 'repeated_parameter')
    """  # noqa: E501
    shown = ", ".join(repr(_shown(v)) for v in values[:10]) + (" ..." if len(values) > 10 else "")
    return Problem(
        422, "Invalid query parameter",
        f"Query parameter {key!r} must be given at most once ({operation} reads one value "
        f"of it); got {len(values)}: {shown}. Send one.",
        field=key, value=shown, allowed=f"one value of {key!r}, given once",
        reason="repeated_parameter",
    )


def check_query(request: Request) -> None:
    """Refuse a query string its route would read otherwise than it was meant: a key the
    route does not declare (:func:`unknown_parameter`: a typo such as ``from`` for ``start``
    was dropped without a word, and the answer was the whole history), or a parameter it
    takes one value of given twice (:func:`repeated_parameter`: FastAPI kept the last).
    A parameter declared as a list stays repeatable; a request outside any route passes.

    The routes of people and their tools (those that take an API token) call it, from
    :func:`~edgewise.server.deps.require_role` once the token passes. The device protocol
    (telemetry, model offers) does not: an agent newer than its gateway may send a
    parameter this gateway does not know yet, and it must be read as if absent
    (:meth:`edgewise.edge.agent.EdgeAgent.check_update` relies on it).
    """
    spec = query_spec(request.scope.get("route"))
    if spec is None:
        return
    given: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        if key not in spec.names:
            raise unknown_parameter(key, value, spec.names, _operation(request))
        given.setdefault(key, []).append(value)
    for key, values in given.items():
        if len(values) > 1 and key not in spec.lists:
            raise repeated_parameter(key, values, _operation(request))
