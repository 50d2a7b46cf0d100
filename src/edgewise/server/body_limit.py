"""A size limit on request bodies, enforced before they are read.

FastAPI reads and parses a route's JSON body before the route's dependencies run, so
without this an unauthenticated client could make the server read and parse a body of any
size before it answered 401. :class:`BodyLimit` is a pure ASGI middleware (no
``BaseHTTPMiddleware``, which would buffer) in front of every route but telemetry, which
reads its own body against ``max_payload_bytes``
(:func:`edgewise.server.routes.telemetry.read_limited_body`):

* a ``Content-Length`` over the limit is a 413 before a byte of the body is read;
* a chunked (or mis-declared) body is counted as it is read, and refused with 413 as soon as
  it passes the limit; what the route would have answered is dropped;
* a request to a route that takes a body and needs an API token, sent without
  ``Authorization: Bearer …``, is the route's own 401 (:func:`~edgewise.server.deps.bearer_secret`)
  before the body is read. Whether the token is valid is still the route's business;
* a request to a route that takes no body (``GET /v1/me``, ``POST /v1/alerts/{id}/ack``…)
  is passed on whatever body it declares: the route never reads a byte of it, so there is
  nothing to limit, and it answers as it does without one (its own 401 first, for a
  request without a valid credential). Its OpenAPI operation documents no 413, and it
  answers none.

Every refusal is problem+json (:class:`~edgewise.server.problems.Problem`), with one
exception that is not ours: a ``Content-Length`` that is not a whole number (``abc``,
``+5``, ``5.0``, ``-1``) is refused by uvicorn itself, h11 and httptools alike, with a
plain-text ``400 Invalid HTTP request received.`` before the app is called. The
``bad_header`` check in :func:`_declared_length` is therefore never reached under
``edgewise serve``; it stays for ASGI servers and in-process clients that pass such a
header through, which would otherwise get a 500 from ``int()``.

>>> check_limit(65536)
65536
>>> check_limit(0)
Traceback (most recent call last):
...
edgewise.errors.ConfigError: Setting 'max_body_bytes' (EDGEWISE_MAX_BODY_BYTES) has value 0. ...
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Collection, Sequence
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgewise.errors import ConfigError
from edgewise.server.deps import bearer_secret
from edgewise.server.problems import Problem, not_utf8_body

__all__ = ["SETTING", "BodyLimit", "check_limit", "too_large"]

#: The setting that holds the limit, as the errors name it.
SETTING = "max_body_bytes"
_ENV = f"EDGEWISE_{SETTING.upper()}"


def check_limit(limit: Any) -> int:
    """``limit`` if it is a usable body limit in bytes; a :class:`ConfigError` naming the
    setting otherwise."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(
            f"Setting {SETTING!r} ({_ENV}) has value {limit!r}. It must be a whole number "
            "of bytes above 0, e.g. 65536."
        )
    return limit


def too_large(limit: int, got: str) -> Problem:
    """The 413 for a body of ``got`` (e.g. ``'80000000 bytes'``) over ``limit`` bytes."""
    return Problem(
        413, "Payload too large",
        f"The request body must be at most {limit} bytes (setting {SETTING!r}, {_ENV}). "
        f"Got {got} instead.",
        field="body", value=got, allowed=f"at most {limit} bytes", reason="too_large",
    )


def _declared_length(value: str | None) -> int | None:
    """The body length a ``Content-Length`` header declares (``None``: none declared).

    Under uvicorn ``value`` is always digits (with blanks around them at most): its HTTP
    parsers answer any other value with their own plain-text 400 before the app is called.
    The problem+json 400 (reason ``bad_header``) is for other ASGI servers and in-process
    clients (the test client) that hand such a value through.

    >>> _declared_length(" 42 "), _declared_length(None)
    (42, None)
    >>> _declared_length("abc")
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: Header 'Content-Length' must be a whole number of bytes. Got 'abc' instead.
    """  # noqa: E501
    if value is None:
        return None
    if not value.strip().isdigit():
        raise Problem(
            400, detail=f"Header 'Content-Length' must be a whole number of bytes. Got "
            f"{value!r} instead.", field="Content-Length", value=value,
            allowed="a whole number of bytes", reason="bad_header",
        )
    return int(value)


def _route_path(scope: Scope) -> str:
    """The path the app's routes match against (without the ``root_path`` it is mounted at)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root):len(root) + 1] in ("", "/"):
        return path[len(root):]
    return path


class _TooLarge(Exception):
    """Raised into the app from ``receive`` once the body passes the limit, or (a JSON
    route's) is found not to be UTF-8; ``problem``: the answer."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


class _Utf8Check:
    """Checks a JSON body chunk by chunk: UTF-8 with no NUL byte (JSON text has none in
    UTF-8; UTF-16 and UTF-32 are full of them, and also decode as UTF-8 when ASCII)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._seen = 0

    def feed(self, chunk: bytes, final: bool) -> Problem | None:
        """``None`` while the body so far can be UTF-8 JSON; else the 422 saying why."""
        nul = chunk.find(b"\x00")
        if nul >= 0:
            return not_utf8_body(f"a NUL byte at byte {self._seen + nul}")
        try:
            self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            return not_utf8_body(f"bytes that are not UTF-8 at byte {self._seen + exc.start}")
        self._seen += len(chunk)
        return None


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes, before or while they are read.

    Parameters
    ----------
    app
        The ASGI app behind it.
    limit
        The most bytes a request body may have.
    exempt
        Route path patterns (``APIRoute.path_regex``) left alone: they enforce their own
        limit (telemetry).
    bearer_routes
        ``(path pattern, methods)`` of routes that take a body and need an API token: a
        request to one without ``Authorization: Bearer …`` is refused with 401 before its
        body is read.
    routes
        ``(path pattern, methods, takes a body)`` of the app's routes, in the order the app
        matches them: a request whose route (the first that matches its path and method)
        takes no body is passed on untouched, as that route never reads one. A request
        that matches none (a 404 or 405) is limited.
    json_routes
        ``(path pattern, methods)`` of routes whose body FastAPI decodes as JSON: a body of
        theirs that is not UTF-8 (UTF-16 or UTF-32, which Python's JSON decoder takes too)
        is refused with 422 ``bad_json`` naming ``body``, as the README says and telemetry
        does.
    """

    def __init__(
        self, app: ASGIApp, *, limit: int,
        exempt: Sequence[re.Pattern[str]] = (),
        bearer_routes: Sequence[tuple[re.Pattern[str], Collection[str]]] = (),
        routes: Sequence[tuple[re.Pattern[str], Collection[str], bool]] = (),
        json_routes: Sequence[tuple[re.Pattern[str], Collection[str]]] = (),
    ) -> None:
        self.app = app
        self.limit = check_limit(limit)
        self.exempt = tuple(exempt)
        self.bearer_routes = tuple(bearer_routes)
        self.routes = tuple(routes)
        self.json_routes = tuple(json_routes)

    def _needs_bearer(self, method: str, path: str) -> bool:
        return any(method in methods and pattern.match(path)
                   for pattern, methods in self.bearer_routes)

    def _reads_no_body(self, method: str, path: str) -> bool:
        for pattern, methods, takes_body in self.routes:
            if method in methods and pattern.match(path):
                return not takes_body
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if any(pattern.match(path) for pattern in self.exempt) or self._reads_no_body(
                scope["method"], path):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            if self._needs_bearer(scope["method"], path):
                bearer_secret(headers.get("authorization"))  # the route's own 401
            declared = _declared_length(headers.get("content-length"))
            if declared is not None and declared > self.limit:
                raise too_large(self.limit, f"{declared} bytes")
        except Problem as exc:  # answered without reading a byte of the body
            await exc.response()(scope, receive, send)
            return
        # (a compressed body is the app's 415 to answer, naming Content-Encoding)
        json_body = not any(k == b"content-encoding" for k, _ in scope.get("headers", ())) and any(
            scope["method"] in methods and pattern.match(path)
            for pattern, methods in self.json_routes)
        await self._counted(scope, receive, send, json_body=json_body)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, *,
                       json_body: bool = False) -> None:
        """Run the app, counting the body as it reads it; past the limit, answer 413 (and
        a ``json_body`` that is not UTF-8, 422)."""
        limit = self.limit
        received = 0
        exceeded = started = answered = False
        refusal = too_large(limit, f"more than {limit} bytes")
        utf8 = _Utf8Check() if json_body else None

        async def limited_receive() -> Message:
            nonlocal received, exceeded, refusal
            if exceeded:  # the app asks again after its read failed: nothing more comes
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge(refusal)
                if utf8 is not None:
                    bad = utf8.feed(message.get("body", b""), not message.get("more_body"))
                    if bad is not None:
                        refusal = bad
                        exceeded = True
                        raise _TooLarge(bad)
            return message

        async def answer() -> None:
            nonlocal answered
            answered = True
            await refusal.response()(scope, receive, send)

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:  # the rest of the app's own answer to a refused body
                return
            if message["type"] == "http.response.start":
                if exceeded:  # the app answers its failed read (400): answer 413 instead
                    await answer()
                    return
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if started:  # the app answered before reading its body; nothing to replace
                raise
            if not answered:
                await answer()
