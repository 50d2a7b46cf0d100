"""Query-string values of the API: instants and durations, with problem errors.

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
import json
import math
import re
from datetime import UTC, datetime
from typing import Any

from edgewise.errors import PayloadError
from edgewise.server.problems import Problem
from edgewise.telemetry import parse_time_text

__all__ = ["bad_cursor", "cursor_key", "format_ns", "make_cursor", "parse_duration",
           "parse_instant", "unknown_metric"]

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
