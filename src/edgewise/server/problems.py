"""Problem details (RFC 9457): every HTTP error of the API is one JSON object.

The body always has the same keys, so clients can rely on them::

    {"type", "title", "status", "detail", "field", "value", "allowed", "reason"}

``field``/``value``/``allowed`` name what was wrong, with what value and what would
have been accepted; ``reason`` is a short machine-readable word (the same labels as the
``edgewise_readings_rejected_total{reason=…}`` counter for payload errors). Secrets are
never echoed: for authentication errors ``value`` is ``None``. ``value`` is shortened
(:func:`_jsonable`): text over 200 characters is cut, with its length said, whichever
part of the app made the problem (a route, or FastAPI's validation of a parameter or the
body). Text that UTF-8 cannot encode (a lone UTF-16 surrogate such as ``"\\ud800"``, which
JSON may carry) is echoed escaped, ``\\ud800``, so the answer can always be sent.

>>> p = Problem(422, "Invalid query parameter", "bad step", field="step", value="5x",
...             allowed="a duration such as '60s', '5m' or seconds", reason="bad_step")
>>> body = p.body()
>>> body["status"], body["field"], body["type"]
(422, 'step', 'urn:edgewise:problem:bad_step')
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgewise.config import MAX_WAIT_S
from edgewise.errors import (
    AuthError,
    InvalidParameterError,
    PayloadError,
    RateLimitError,
    StoreError,
    ThrottledError,
)
from edgewise.security.credentials import SECURITY_RETRY_S, SecurityBusyError

__all__ = ["PROBLEM_JSON", "Problem", "install_problem_handlers", "internal_error",
           "not_utf8_body", "payload_problem", "safe_text", "security_busy", "shorten", "storable"]

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


class Problem(Exception):
    """An HTTP error with a problem+json body; raise it from any route or dependency.

    Parameters
    ----------
    status
        The HTTP status code.
    title
        A short summary that does not change between occurrences.
    detail
        The human-readable explanation of this occurrence.
    field, value, allowed, reason
        What was wrong, its value, what is allowed, and a machine-readable reason.
    headers
        Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str = "",
        *,
        field: str | None = None,
        value: Any = None,
        allowed: str | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title or str(status))
        self.status = status
        self.title = safe_text(title or _TITLES.get(status, "Error"))
        self.detail = safe_text(detail) or self.title
        self.field = safe_text(field)
        self.value = _jsonable(value)
        self.allowed = safe_text(allowed)
        self.reason = safe_text(reason or _default_reason(status))
        self.headers = headers or {}
        self.extra = _safe(extra or {})

    def body(self) -> dict[str, Any]:
        """The problem+json object."""
        out = {
            "type": f"urn:edgewise:problem:{self.reason}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "field": self.field,
            "value": self.value,
            "allowed": self.allowed,
            "reason": self.reason,
        }
        out.update(self.extra)
        return out

    def response(self) -> JSONResponse:
        """The response carrying this problem."""
        return JSONResponse(  # every field was made safe to encode when it was set
            self.body(), status_code=self.status, headers=self.headers,
            media_type=PROBLEM_JSON,
        )


def _default_reason(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthenticated",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        413: "too_large",
        415: "unsupported_media_type",
        422: "invalid",
        429: "rate_limited",
        500: "internal",
        503: "unavailable",
    }.get(status, "error")


def safe_text(text: Any) -> Any:
    """``text`` with what UTF-8 cannot encode (lone surrogates) escaped as ``\\udXXX``;
    anything that is not a string is returned as it is.

    >>> safe_text("ok\\ud800")
    'ok\\\\ud800'
    >>> safe_text(None) is None
    True
    """
    if not isinstance(text, str):
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _safe(value: Any) -> Any:
    """``value`` (a JSON-like tree) with every string made encodable by :func:`safe_text`."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(k): _safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    """``value`` as a problem echoes it: JSON, and shortened: text cut by :func:`shorten`, a
    huge integer to its first digits and its length, anything else to its ``repr``'s first
    200 characters.

    >>> _jsonable("x" * 60000)[195:]
    'xxxxx... (60000 characters)'
    >>> _jsonable(float("nan")), _jsonable(["a"])
    ('nan', "['a']")
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        try:  # echo a huge integer shortened (and str() refuses one of 4300+ digits)
            text = str(value)
        except ValueError:
            return "an integer of more than 4300 digits"
        return f"{text[:21]}... ({len(text.lstrip('-'))} digits)"
    if value is None or isinstance(value, str | int | float | bool):
        return safe_text(shorten(value))
    return safe_text(repr(value)[:_VALUE_CHARS])


#: the longest text a problem echoes as ``value`` before it is cut
_VALUE_CHARS = 200


def shorten(value: Any) -> Any:
    """``value`` as a problem echoes it: text over :data:`_VALUE_CHARS` characters cut, with
    its length said. :class:`Problem` cuts its ``value`` so itself (:func:`_jsonable`);
    call this for text of the sender's put in a ``detail`` or ``field`` (a route quoting a
    60 KB device id in its ``detail`` sent it back whole).

    >>> shorten("x" * 300)[195:]
    'xxxxx... (300 characters)'
    >>> shorten("ok"), shorten(7)
    ('ok', 7)
    """
    if isinstance(value, str) and len(value) > _VALUE_CHARS:
        return f"{value[:_VALUE_CHARS]}... ({len(value)} characters)"
    return value


def storable(text: str) -> bool:
    r"""Whether ``text`` (an id, a metric or a filter from the URL) is text a store can
    hold (:func:`edgewise.store._batch._text_problem`): one with a NUL character, or one
    UTF-8 cannot encode, is no device's, metric's nor alert's, and is never sent to the
    store (PostgreSQL refuses it: a 503 "Store unavailable" naming the database, for what
    is only an unknown id). Routes answer their 404 for it instead.

    >>> storable("pump-1"), storable("a\x00b"), storable("\ud800")
    (True, False, False)
    """
    from edgewise.store._batch import _text_problem

    return _text_problem("text", text) is None


def payload_problem(exc: PayloadError, status: int | None = None) -> Problem:
    """Turn a :class:`PayloadError` into a problem (413 for size, otherwise 422).

    >>> e = PayloadError(field="ts", value="soon", allowed="epoch seconds", reason="bad_ts")
    >>> payload_problem(e).body()["field"]
    'ts'
    """
    fields = exc.to_problem()
    if status is None:
        status = 413 if exc.reason == "too_large" else 422
    extra = {"index": fields["index"]} if fields.get("index") is not None else {}
    return Problem(
        status,
        "Payload too large" if status == 413 else "Invalid telemetry",
        fields["detail"],
        field=fields["field"],
        value=fields["value"],
        allowed=fields["allowed"],
        reason=fields["reason"],
        extra=extra,
    )


def _retry_after(seconds: float) -> dict[str, str]:
    """The ``Retry-After`` header of a wait of ``seconds``: whole seconds, at least 1 and at
    most a day (:data:`~edgewise.config.MAX_WAIT_S`), a client asked to wait longer asking
    again then; a wait that is no finite number (a rate limit so small the wait overflowed
    to inf: ``math.ceil`` raised, the 429 a 500) is the day.

    >>> _retry_after(0.2), _retry_after(2.5), _retry_after(math.inf), _retry_after(math.nan)
    ({'Retry-After': '1'}, {'Retry-After': '3'}, {'Retry-After': '86400'}, {'Retry-After': '86400'})
    """
    if not math.isfinite(seconds):
        seconds = MAX_WAIT_S
    return {"Retry-After": str(max(1, math.ceil(min(seconds, MAX_WAIT_S))))}


#: What a JSON value is, as a problem about a body that is not an object says it.
_JSON_KINDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (list, "an array"), (bool, "a boolean"), ((int, float), "a number"), (str, "a string"))
_BODY_ALLOWED = "a JSON object"
_BODY_HOW = ("send a JSON object with the fields this operation documents (GET /docs), "
             "with 'Content-Type: application/json'")


def _json_kind(value: object) -> str:
    """How a problem names the kind of a JSON value that is no object.

    >>> _json_kind([1, 2]), _json_kind(5), _json_kind(True), _json_kind(None)
    ('an array', 'a number', 'a boolean', 'null')
    """
    for kinds, name in _JSON_KINDS:
        if isinstance(value, kinds):
            return name
    return "null" if value is None else type(value).__name__


def _body_problem(request: Request, err: dict[str, Any]) -> Problem:
    """The 422 for a request body that is missing, or JSON but not an object (an array, a
    number, a string, ``null``): ``field`` ``"body"``, ``allowed`` ``"a JSON object"``."""
    value = err.get("input")
    if err.get("type") == "missing":  # no body at all, or the JSON null
        sent = request.headers.get("content-length", "0") not in ("", "0") or \
            "transfer-encoding" in request.headers
        if not sent:
            return Problem(422, "Invalid input", f"The request body is missing; {_BODY_HOW}.",
                           field="body", value=None, allowed=_BODY_ALLOWED,
                           reason="missing_field")
        value = None
    return Problem(422, "Invalid input", f"The request body must be a JSON object; got "
                   f"{_json_kind(value)}. {_BODY_HOW[0].upper()}{_BODY_HOW[1:]}.",
                   field="body", value=value, allowed=_BODY_ALLOWED, reason="invalid")


#: What FastAPI raises (a 400) for a JSON body it cannot read: bytes that are not UTF-8
#: (or UTF-16/32), such as a gzipped body.
_FASTAPI_BODY_ERROR = "There was an error parsing the body"
_JSON_ALLOWED = "a JSON object, sent with 'Content-Type: application/json'"


def _bad_json(value: Any) -> Problem:
    """The 422 ``bad_json`` for a body that is no JSON (``value``: its text, cut)."""
    return Problem(422, "Invalid input", f"The request body must be {_JSON_ALLOWED}.",
                   field="body", value=value, allowed=_JSON_ALLOWED, reason="bad_json")


def not_utf8_body(why: str) -> Problem:
    """The 422 ``bad_json`` of a JSON body that is not UTF-8 (RFC 8259 8.1: UTF-16 or
    UTF-32, which Python's JSON decoder would otherwise take); ``why`` says what was found.

    >>> not_utf8_body("a NUL byte at byte 1").body()["reason"]
    'bad_json'
    """
    return Problem(
        422, "Invalid input", f"The request body must be {_JSON_ALLOWED}, in UTF-8; got "
        f"{why} (UTF-16 or UTF-32?). Send it encoded as UTF-8.",
        field="body", allowed=f"{_JSON_ALLOWED}, in UTF-8", reason="bad_json")


def _unparsable_body(request: Request) -> Problem:
    """The problem for a JSON body FastAPI could not decode: 415 for a ``Content-Encoding``
    other than ``identity`` (only the telemetry routes take gzip, and check it
    themselves), else the 422 ``bad_json`` of any body that is no JSON."""
    encoding = request.headers.get("content-encoding")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        return Problem(
            415, "Unsupported content encoding", f"Header 'Content-Encoding' must be "
            f"identity (or left out) on {request.method} {request.url.path}; got "
            f"{shorten(encoding)!r}. Send the JSON body uncompressed.",
            field="Content-Encoding", value=encoding, allowed="identity",
            reason="bad_encoding")
    return _bad_json(None)


def _body_fields(request: Request) -> str:
    """The fields the JSON body of ``request``'s route takes (``'name, groups'``), for the
    422 of a field it does not know; ``''`` when that cannot be told."""
    route = request.scope.get("route")
    field = getattr(route, "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    fields = getattr(model, "model_fields", None)
    if not isinstance(fields, dict):
        return ""
    return ", ".join(f.alias or name for name, f in fields.items())


#: the methods that change nothing: their 500 can say nothing was done
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def internal_error(method: str, path: str, exc: BaseException) -> Problem:
    """The 500 problem of a request that failed unexpectedly (``exc``): which request, and
    the exception's type only (no internals: the server logs the traceback).

    A request that changes things may have done some of them before it failed (a device's
    deletion runs in several steps, each audited as it is done): the answer says so rather
    than that nothing was done.

    >>> internal_error("GET", "/v1/x", KeyError("k")).body()["detail"]
    'The server failed on GET /v1/x (KeyError); nothing of this request was acknowledged.'
    >>> internal_error("DELETE", "/v1/devices/p", OSError()).body()["detail"]  # doctest: +ELLIPSIS
    'The server failed on DELETE /v1/devices/p (OSError) before it finished; what it had done ...'
    """
    failed = f"The server failed on {method} {path} ({type(exc).__name__})"
    if method in _SAFE_METHODS or path.startswith("/v1/telemetry"):  # a device resends
        detail = f"{failed}; nothing of this request was acknowledged."
    else:
        detail = (f"{failed} before it finished; what it had done by then stands: check "
                  f"(GET, and the audit log, GET /v1/audit) before repeating the request.")
    return Problem(500, "Internal error", detail, reason="internal")



#: the scope key under which :class:`~edgewise.server.app.HeadAsGet` keeps a HEAD request's
#: own method (it serves it as the GET): a 405 names ``HEAD``
HEAD_SCOPE_KEY = "edgewise.method"

#: the routes whose only write is one transaction of ``security.sqlite`` (method, path
#: format): refused at its start (:class:`SecurityBusyError`), nothing of them was done.
#: The one list of them: the OpenAPI documents their 503 ``security_busy`` from it
#: (:func:`edgewise.server.app._route_errors`)
SECURITY_ONLY_WRITES = frozenset({
    ("POST", "/v1/devices"), ("POST", "/v1/devices/{device_id}/secret"),
    ("POST", "/v1/tokens"),
})


def security_busy(method: str, path: str, route: Any, exc: SecurityBusyError) -> Problem:
    """The answer to a request whose write of ``security.sqlite`` could not begin (another
    writer held it past the busy timeout): on a route whose only write that is
    (:data:`SECURITY_ONLY_WRITES`), a 503 ``security_busy`` with ``Retry-After``, saying
    nothing was done; on any other (which may have written elsewhere before: an alert
    acknowledged, then audited), the 500 of :func:`internal_error`, which says what was done
    stands.

    >>> from pathlib import Path
    >>> from types import SimpleNamespace as NS
    >>> busy = SecurityBusyError("held", path=Path("security.sqlite"))
    >>> p = security_busy("POST", "/v1/tokens", NS(path_format="/v1/tokens"), busy)
    >>> p.status, p.reason, p.headers["Retry-After"]
    (503, 'security_busy', '10')
    >>> security_busy("POST", "/v1/alerts/a/ack", None, busy).status
    500
    """
    if (method, getattr(route, "path_format", None)) not in SECURITY_ONLY_WRITES:
        return internal_error(method, path, exc)
    return Problem(
        503, "Security store busy",
        f"{str(exc).rstrip('.')}. Nothing of {method} {path} was done; send it again after "
        f"the Retry-After header ({SECURITY_RETRY_S} s).",
        field="security", value=exc.path.name, allowed="a retry once the other writer is done",
        reason="security_busy", headers={"Retry-After": str(SECURITY_RETRY_S)},
    )


def _allowed_methods(request: Request, allow: str | None) -> str | None:
    """The methods ``request``'s path takes, all its routes together (``app.state``'s
    ``route_methods``, set by :func:`~edgewise.server.app.create_app`), ``HEAD`` with
    ``GET`` (:class:`~edgewise.server.app.HeadAsGet`); else ``allow``, Starlette's, which
    names the first matching route's only."""
    routes = getattr(request.app.state, "route_methods", None)
    methods: set[str] = set()
    for pattern, route_methods in routes or ():
        if pattern.match(request.scope.get("path", "")):
            methods |= set(route_methods)
    if not methods:
        return allow
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` answer with a problem+json body."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return exc.response()

    @app.exception_handler(PayloadError)
    async def _payload(request: Request, exc: PayloadError) -> JSONResponse:
        return payload_problem(exc).response()

    @app.exception_handler(RateLimitError)
    async def _rate(request: Request, exc: RateLimitError) -> JSONResponse:
        return Problem(
            429, "Rate limit exceeded", str(exc), reason="rate_limited",
            allowed="fewer readings per second; retry after the Retry-After header",
            headers=_retry_after(exc.retry_after_s),
        ).response()

    @app.exception_handler(ThrottledError)
    async def _throttled(request: Request, exc: ThrottledError) -> JSONResponse:
        return Problem(
            429, "Too many failed attempts", str(exc), field="Authorization",
            reason="throttled", headers=_retry_after(exc.retry_after_s),
        ).response()

    @app.exception_handler(AuthError)
    async def _auth(request: Request, exc: AuthError) -> JSONResponse:
        return Problem(
            401, detail=str(exc), field="Authorization", reason="unauthenticated",
            allowed="'Bearer <token>'", headers={"WWW-Authenticate": "Bearer"},
        ).response()

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        return Problem(
            503, "Store unavailable",
            f"{str(exc).rstrip('.')}. Nothing of this request was acknowledged.",
            reason="store_error",
        ).response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {}
        value = err.get("input")
        if err.get("type") == "json_invalid" or isinstance(value, bytes | bytearray):
            # not JSON, or JSON sent as another type (curl -d without -H): the position or
            # the raw bytes are no field; name the body, and what it must be
            text = value.decode("utf-8", "replace")[:200] if isinstance(
                value, bytes | bytearray) else None
            return _bad_json(text).response()
        if tuple(err.get("loc", ())) == ("body",):  # the body itself: missing, or no object
            return _body_problem(request, err).response()
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = shorten(".".join(loc)) or None  # a body's unknown key is the sender's text
        if isinstance(value, dict | list):
            value = None if err.get("type") == "missing" else value
        msg = err.get("msg", "invalid input")
        allowed = msg
        if err.get("type") == "extra_forbidden":  # a typo'd key: say which ones it takes
            known = _body_fields(request)
            if known:
                msg = f"not a field of this body; it takes {known}"
                allowed = f"one of {known}"
        return Problem(
            422, "Invalid input", f"Field {field!r}: {msg}.", field=field, value=value,
            allowed=allowed,
            reason="missing_field" if err.get("type") == "missing" else "invalid",
        ).response()

    @app.exception_handler(SecurityBusyError)
    async def _security_busy(request: Request, exc: SecurityBusyError) -> JSONResponse:
        return security_busy(request.method, request.url.path, request.scope.get("route"),
                             exc).response()

    @app.exception_handler(InvalidParameterError)
    async def _param(request: Request, exc: InvalidParameterError) -> JSONResponse:
        # field and value are how callers tell these errors apart (edgewise.errors)
        return Problem(422, "Invalid input", str(exc), field=exc.field,
                       value=exc.value, reason="invalid").response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # Starlette logs the traceback; the client gets the shape it expects, no internals.
        # (The app's SecurityHeaders layer answers this first, inside its headers.)
        return internal_error(request.method, request.url.path, exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
            return _unparsable_body(request).response()
        detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route {request.method} {request.url.path}."
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # name the method, the path, and what it takes (Allow)
            method = request.scope.get(HEAD_SCOPE_KEY, request.method)
            allow = next((v for k, v in headers.items() if k.lower() == "allow"), None)
            allow = _allowed_methods(request, allow)
            headers = {k: v for k, v in headers.items() if k.lower() != "allow"}
            if allow:
                headers["Allow"] = allow
            detail = (f"Method {method} is not allowed on {shorten(request.url.path)}; "
                      f"{f'it takes {allow}' if allow else 'it takes no method'}.")
            return Problem(405, detail=detail, field="method", value=method, allowed=allow,
                           reason="method_not_allowed", headers=headers).response()
        return Problem(exc.status_code, detail=detail, headers=headers).response()
