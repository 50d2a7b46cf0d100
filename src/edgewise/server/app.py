"""The HTTP face of a running Edgewise: REST API under ``/v1``, the dashboard at ``/``.

:func:`create_app` builds a FastAPI app around parts made elsewhere (the store, the
credentials, the ingest pipeline), so ``serve``, ``demo`` and the tests all run the same
app. Routes live one resource per module in :mod:`edgewise.server.routes`; errors answer
with problem+json bodies (:mod:`edgewise.server.problems`).

TLS is uvicorn's: pass :func:`uvicorn_ssl_kwargs` to ``uvicorn.run``/``uvicorn.Config``.

>>> uvicorn_ssl_kwargs(Settings(tls_cert="", tls_key=""))
{}
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.docs import get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgewise.config import Settings
from edgewise.errors import ConfigError
from edgewise.gateway.pipeline import Pipeline
from edgewise.registry import Registry
from edgewise.security.credentials import Security
from edgewise.server.body_limit import BodyLimit, check_limit
from edgewise.server.deps import get_store
from edgewise.server.problems import (
    HEAD_SCOPE_KEY,
    PROBLEM_JSON,
    SECURITY_ONLY_WRITES,
    install_problem_handlers,
    internal_error,
)
from edgewise.server.routes import (
    alerts,
    devices,
    forecast,
    groups,
    health,
    labels,
    models,
    quality,
    readings,
    rul,
    telemetry,
    tokens,
)
from edgewise.store.base import Store

__all__ = ["WEB_DIR", "api_routes", "create_app", "uvicorn_ssl_kwargs"]

WEB_DIR = Path(str(files("edgewise.server") / "web"))

_DESCRIPTION = """\
Telemetry in, alerts out.

**Devices** send telemetry with `Authorization: Bearer <device secret>` and `X-Device-Id`;
a device secret can do nothing else. **People and scripts** use API tokens
(`edgewise token create --role viewer|operator|admin`): *viewer* reads, *operator* also
acknowledges and labels alerts and rolls model releases out or back (chooses which
published, signed version a device or group runs), *admin* also manages devices and
tokens; every admin action is audited.

Every error is `application/problem+json` with the keys
`type, title, status, detail, field, value, allowed, reason` (the `Problem` schema); each
operation lists the errors it answers. A request body over the limit is 413 before it is
read (telemetry: `EDGEWISE_MAX_PAYLOAD_BYTES`; any other operation that takes a body:
`EDGEWISE_MAX_BODY_BYTES`); an operation that takes none never reads one. A body field an
operation does not take is 422 naming it; so is, on an operation that takes an API token,
a query parameter it does not take (reason `unknown_parameter`: `allowed` lists those it
takes), or one it takes once given twice (reason `repeated_parameter`). The device
operations (telemetry, model offers) read an unknown query parameter as absent: an agent
newer than its gateway may send one. Every value a problem echoes is shortened (over
200 characters: cut, with its length).
"""

_TAGS = [
    {"name": "telemetry", "description": "Devices send readings (device secret)."},
    {"name": "devices", "description": "Register, list and delete devices; fleet health."},
    {"name": "readings", "description": "Stored readings over time, optionally downsampled."},
    {"name": "quality", "description": "Data quality of a device's readings."},
    {"name": "alerts", "description": "Alerts from detectors and seq gaps; ack and label."},
    {"name": "labels", "description": "Labels on windows of history; the labelling queue."},
    {"name": "registry", "description": "Signed model releases: agents fetch them (device "
     "secret), operators roll them out."},
    {"name": "tokens", "description": "API tokens, the audit log, and who you are."},
    {"name": "health", "description": "Liveness and Prometheus metrics."},
]

_SECURITY_HEADERS = {
    # Everything the dashboard needs is served from here: no CDN, no inline script.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeaders:
    """Pure ASGI middleware: ``_SECURITY_HEADERS`` (on ``/docs`` all but the
    ``Content-Security-Policy``, which Swagger UI is not checked under; it went out with
    none of them, so the docs page could be framed and sniffed) and
    ``Cache-Control: no-store`` on every answer that does not set
    them, the 500 of an unexpected exception included: raised before the answer began, it
    is answered here (:func:`~edgewise.server.problems.internal_error`), inside these
    headers, then raised on for the server to log. (Starlette answers it from its outermost
    layer, ``ServerErrorMiddleware``, outside every middleware added, which then sends
    nothing more; a 500 went out without these headers, cacheable.)

    Pure ASGI, not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` ends a
    streamed body cleanly when the app fails in the middle of it (then re-raises), so a
    client took a cut-off ``readings.csv`` for a whole one; passed through, the server
    closes the connection without the last chunk and the client sees the break.

    A client that went away in the middle of its request (``ClientDisconnect``) ends the
    request quietly: no answer, no traceback in the log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = str(scope.get("path", "")).startswith("/docs")

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for key, value in _SECURITY_HEADERS.items():
                    if not (docs and key == "Content-Security-Policy"):
                        headers.setdefault(key, value)
                headers.setdefault("Cache-Control", "no-store")
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            # the client went away in the middle of its request (a dropped upload on a
            # flaky link): nobody is left to answer, and it is no fault of the server's;
            # raised on, the server logged a 60-line "Exception in ASGI application" per drop
            return
        except Exception as exc:
            if not started:  # else the client sees the break (a cut-off stream)
                problem = internal_error(scope.get("method", ""), scope.get("path", ""), exc)
                await problem.response()(scope, receive, send_with_headers)
            raise  # logged by the server; Starlette's own handler sends nothing more


class _HeadAnswered(Exception):
    """Raised into the app by :class:`HeadAsGet` once a HEAD's answer is whole (its headers
    and the empty body sent): what the GET would stream after them is never made."""


#: the ASGI messages that carry a response's body: its bytes, or a file the server sends
#: (the ``pathsend`` and ``zerocopysend`` extensions)
_BODY_MESSAGES = frozenset({"http.response.body", "http.response.pathsend",
                            "http.response.zerocopysend"})


def _has_length(message: Message) -> bool:
    return any(k.lower() == b"content-length" for k, _ in message.get("headers", ()))


class HeadAsGet:
    """Pure ASGI middleware: a ``HEAD`` request is served as the ``GET`` of its path (same
    status and headers, ``Content-Length`` included) with no body, as RFC 9110 (9.3.2) asks
    of every server that answers GET; load balancers probe ``/healthz`` so. FastAPI routes
    only the methods each route names, so it was a 405 on every route. A path that has no
    ``GET`` answers 405 naming what it allows. The request's own method is kept in its scope
    under :data:`~edgewise.server.problems.HEAD_SCOPE_KEY` (errors name ``HEAD``).

    A streamed answer (no ``Content-Length``: ``readings.csv``) ends with its headers: the
    app is stopped there (:class:`_HeadAnswered`, raised from its ``send``), before its body
    iterator yields a chunk, so a HEAD no longer reads and formats the whole history to
    drop it (400,000 readings: 101 chunks, 1.6 to 2.3 s, now none). One sent in several
    chunks with a ``Content-Length`` (a large static file) ends at its first chunk. The app
    learns nothing of it: to it, the client stopped listening (a background task of the
    response would not run; the app has none).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "HEAD":
            await self.app(scope, receive, send)
            return
        ended = False

        async def end() -> None:
            nonlocal ended
            ended = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def send_head(message: Message) -> None:
            if ended:  # the app sends on after the end (it caught _HeadAnswered): dropped
                return
            if message["type"] == "http.response.start":
                await send(message)
                if not _has_length(message):  # a stream: its headers are all HEAD answers
                    await end()
                    raise _HeadAnswered
            elif message["type"] in _BODY_MESSAGES:
                await end()
                if message.get("more_body", False):  # more to come: stop the app making it
                    raise _HeadAnswered
            else:
                await send(message)

        try:
            await self.app({**scope, "method": "GET", HEAD_SCOPE_KEY: "HEAD"}, receive,
                           send_head)
        except _HeadAnswered:  # raised by send_head alone, once the answer has ended
            return


def create_app(
    *, store: Store, security: Security, pipeline: Pipeline, settings: Settings,
    registry: Registry | None = None,
    forget_device: Callable[[str], Any] | None = None,
) -> FastAPI:
    """Build the Edgewise HTTP app around running parts.

    Parameters
    ----------
    store
        Where readings and alerts live; the app never closes it.
    security
        Device credentials, API tokens and the audit log.
    pipeline
        Decodes, validates, rate-limits, stores and scores telemetry; its metrics are
        served at ``/metrics``.
    settings
        Limits such as ``max_payload_bytes`` (telemetry) and ``max_body_bytes`` (every other
        request body: over it is 413 before the body is read, see
        :mod:`edgewise.server.body_limit`).
    registry
        The model registry whose signed releases agents fetch (``GET /v1/devices/{id}/model``,
        ``GET /v1/models/{sha256}``) and operators roll out (``POST /v1/registry/rollouts``).
        By default the one in ``settings.data_dir`` (its signing key is made there at first
        start, never remade once issued); the caller that passes one closes it.
    forget_device
        Called with a device id once ``DELETE /v1/devices/{id}`` has deleted the device, for
        what the gateway keeps outside the store: the running transport's state, such as the
        external MQTT broker's retained ack (``Gateway.forget_device``). The app drops the
        device's cached forecasts (:mod:`edgewise.server.routes.forecast`) and the cached
        fleet groupings (:mod:`edgewise.server.routes.groups`) before calling it.

    Returns
    -------
    FastAPI
        Serve it with uvicorn, e.g.
        ``uvicorn.run(app, host=s.host, port=s.http_port, **uvicorn_ssl_kwargs(s))``.
    """
    from edgewise import __version__

    # FastAPI's own /docs loads Swagger UI from a CDN: a blank page on an air-gapped site.
    # fastapi-offline serves the same Swagger UI from the package (/static-offline-docs);
    # its /docs page is replaced below (_docs_page: URLs relative to the page).
    app = FastAPIOffline(
        title="Edgewise",
        version=__version__,
        summary="Machine learning on IoT sensor fleets: telemetry in, alerts out.",
        description=_DESCRIPTION,
        openapi_tags=_TAGS,
        docs_url=None,
        redoc_url=None,
    )
    _docs_page(app)
    app.state.store = store
    app.state.security = security
    app.state.pipeline = pipeline
    app.state.settings = settings
    app.state.forget_device = _forgetting_fits(app, forget_device)
    install_problem_handlers(app)
    for module in (telemetry, devices, groups, readings, forecast, quality, rul, alerts, labels,
                   tokens, health):
        app.include_router(module.router)
    if registry is None:  # the gateway's first start makes the signing key (never remade)
        registry = Registry(settings.data_dir)
        registry.ensure_key()
    app.state.registry = registry
    app.include_router(models.make_router(registry, security, metrics=pipeline.metrics),
                       tags=["registry"])
    # added before the security headers below, so it runs inside them: its refusals get them
    routes = api_routes(app)
    app.add_middleware(
        BodyLimit, limit=check_limit(settings.max_body_bytes),
        exempt=[r.path_regex for r in routes if "telemetry" in r.tags],  # its own limit
        bearer_routes=[(r.path_regex, frozenset(r.methods)) for r in routes
                       if r.body_field is not None and _token_role(r.dependant) is not None],
        # a route that reads no body answers as without one: no 413 (none is documented)
        routes=[(r.path_regex, frozenset(r.methods), _takes_body(r)) for r in routes],
        # a JSON body FastAPI decodes must be UTF-8 (its decoder takes UTF-16 and -32 too)
        json_routes=[(r.path_regex, frozenset(r.methods)) for r in routes
                     if r.body_field is not None],
    )

    # what a path takes, all its routes together, for a 405's Allow (Starlette names the
    # first matching route's methods only: GET for /v1/devices, which takes POST too)
    app.state.route_methods = [(r.path_regex, frozenset(r.methods)) for r in routes]
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HeadAsGet)  # outermost: every layer inside serves it as the GET

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.openapi = lambda: _openapi_with_bearer(app)  # type: ignore[method-assign]

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> RedirectResponse:
        return RedirectResponse("/static/favicon.svg")

    return app


#: Where fastapi-offline serves Swagger UI's files (its default, mounted by FastAPIOffline).
_DOCS_STATIC = "static-offline-docs"


def _docs_page(app: FastAPI) -> None:
    """``GET /docs``: Swagger UI, its files, the spec and "Try it out" all asked relative to
    the page, so it works at ``/docs`` and behind a proxy's path prefix
    (``https://host/edgewise/docs``). fastapi-offline's page named them from the server's
    root (``/static-offline-docs/...``, ``/openapi.json``: the proxy's 404s, a blank page),
    unless uvicorn was told the prefix (``--root-path``); the dashboard needs no such setting.

    The spec is fetched by the page itself and handed to Swagger UI with ``servers`` set to
    the page's folder: with none, "Try it out" sent ``/v1/...`` to the server's root too.
    That script is served as a file (``/docs/init.js``, :data:`_DOCS_INIT`), not inline.
    """
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{app.title} - Swagger UI</title>
<link rel="stylesheet" href="{_DOCS_STATIC}/swagger-ui.css">
<link rel="icon" href="{_DOCS_STATIC}/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{_DOCS_STATIC}/swagger-ui-bundle.js"></script>
<script src="docs/init.js"></script>
</body>
</html>
"""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/docs/init.js", include_in_schema=False)
    def docs_init() -> Response:
        return Response(_DOCS_INIT, media_type="text/javascript")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    def docs_oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


#: Starts Swagger UI on /docs (:func:`_docs_page`): the spec from ``openapi.json`` beside the
#: page, its operations sent under the page's folder (the proxy's prefix, if any).
_DOCS_INIT = """"use strict";
(async () => {
  const root = new URL(".", location.href).href.replace(/\\/$/, "");
  const opts = { dom_id: "#swagger-ui", layout: "BaseLayout", deepLinking: true,
    showExtensions: true, showCommonExtensions: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset] };
  try {
    const resp = await fetch("openapi.json", { headers: { Accept: "application/json" } });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const spec = await resp.json();
    spec.servers = [{ url: root }];
    window.ui = SwaggerUIBundle({ ...opts, spec });
  } catch (e) {  // Swagger UI says what went wrong with the spec's URL
    window.ui = SwaggerUIBundle({ ...opts, url: "openapi.json" });
  }
})();
"""


def _forgetting_fits(app: FastAPI, forget_device: Callable[[str], Any] | None,
                     ) -> Callable[[str], Any]:
    """What ``DELETE /v1/devices/{id}`` calls once the device is deleted: drop its cached
    forecasts (:func:`edgewise.server.routes.forecast.forget_device`), the cached fleet
    groupings (:func:`edgewise.server.routes.groups.forget_device`), the cached RUL
    answers (:func:`edgewise.server.routes.rul.forget_device`) and alert explanations
    (:func:`edgewise.server.routes.alerts.forget_device`), then the caller's
    ``forget_device`` (the transport's state)."""
    def forget(device_id: str) -> Any:
        forecast.forget_device(app, device_id)
        groups.forget_device(app, device_id)
        rul.forget_device(device_id)
        alerts.forget_device(device_id)
        return None if forget_device is None else forget_device(device_id)

    return forget


_DEVICE_PATHS = ("/v1/devices/{device_id}/model", "/v1/models/")

#: The problem+json body every error of the API has (:class:`~edgewise.server.problems.Problem`).
_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "Problem details (RFC 9457), the body of every error of the API: what was "
    "wrong (field), with what value, what is allowed, and a machine-readable reason.",
    "required": ["type", "title", "status", "detail", "field", "value", "allowed", "reason"],
    "properties": {
        "type": {"type": "string", "description": "'urn:edgewise:problem:' + reason.",
                 "examples": ["urn:edgewise:problem:missing_credentials"]},
        "title": {"type": "string", "description": "A summary that does not change."},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong this time."},
        "field": {"anyOf": [{"type": "string"}, {"type": "null"}],
                  "description": "The field, parameter or header at fault."},
        "value": {"description": "Its value, shortened (never a secret: null for "
                  "credentials)."},
        "allowed": {"anyOf": [{"type": "string"}, {"type": "null"}],
                    "description": "What would have been accepted."},
        "reason": {"type": "string", "description": "A short machine-readable word, e.g. "
                   "'missing_credentials', 'forbidden', 'too_large', 'invalid'."},
        "index": {"type": "integer", "description": "Telemetry only: the record at fault."},
    },
}
_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_STRING = {"schema": {"type": "string"}}

#: What each error status means when no route says more.
_ERROR_TEXT = {
    400: "Bad request: a header is malformed.",
    401: "No credentials, a scheme other than Bearer, or an unknown or revoked credential "
    "(with WWW-Authenticate: Bearer).",
    403: "The credential is valid but may not do this: a role too low, or a device secret "
    "where an API token is needed.",
    404: "Not found.",
    409: "Conflict.",
    413: "The request body is over the size limit; refused before it is read.",
    415: "Unsupported media type or content encoding.",
    422: "A parameter or the body is invalid; 'field' names it.",
    429: "Too many requests; retry after the Retry-After header.",
    503: "The store is unavailable; nothing of the request was acknowledged.",
}

_THROTTLED = ("Too many wrong device secrets from this address (a credential that is no "
              "API token, sent with X-Device-Id, is checked as that device's secret; reason "
              "'throttled'): retry after the Retry-After header.")

#: A 503 of the routes that write labels.sqlite, after the store's.
_LABELS_BUSY = ("another writer (an 'edgewise label import') held labels.sqlite past the "
                "busy timeout; nothing was written: retry after the Retry-After header.")

#: A 503 of the routes whose only write is one transaction of security.sqlite.
_SECURITY_BUSY = ("(reason 'security_busy') another writer (an 'edgewise token create' or "
                  "'device add', a backup tool) held security.sqlite past the busy timeout; "
                  "nothing was done: retry after the Retry-After header.")

_MERGED_ALERT = ("The alert was merged into another (reason 'merged_alert', its id in "
                 "'merged_into'): acknowledge or label that one instead.")

#: The 422 every operation that takes an API token answers: its query string is checked
#: against what it declares (:func:`edgewise.server.query.check_query`).
_QUERY_422 = ("A query parameter the operation does not take (reason 'unknown_parameter', "
              "naming it and its value; 'allowed' lists those it takes), or one it takes "
              "once given more than once (reason 'repeated_parameter').")

#: Errors that only some routes answer, and what they mean there. The rest follow from the
#: route: 401/403 from its credentials, 413 from a body, 422 from any input (and, with a
#: token, from any query parameter it does not take), 503 from the store, and the 503
#: ``security_busy`` of the routes whose only write is one of security.sqlite
#: (:data:`~edgewise.server.problems.SECURITY_ONLY_WRITES`).
_ROUTE_ERRORS: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/v1/telemetry"): {
        400: "The body is not gzip as its Content-Encoding says.", 415: _ERROR_TEXT[415],
        503: _ERROR_TEXT[503]},
    ("post", "/v1/devices/{device_id}/telemetry"): {
        400: "The body is not gzip as its Content-Encoding says.",
        403: "X-Device-Id names another device than the path.", 415: _ERROR_TEXT[415],
        503: _ERROR_TEXT[503]},
    ("post", "/v1/devices"): {409: "A device with that name exists (reason 'exists'), or the "
                              "store still holds data of a device of that id (reason "
                              "'has_data'): delete it first, or pick another name."},
    ("delete", "/v1/devices/{device_id}"): {404: "No device with that id is registered or has "
                                            "data."},
    ("get", "/v1/devices/{device_id}/readings"): {404: "No device with that id."},
    ("get", "/v1/devices/{device_id}/readings.csv"): {404: "No device with that id."},
    ("get", "/v1/devices/{device_id}/quality"): {404: "No device with that id."},
    ("get", "/v1/devices/{device_id}/quality/plots/{metric}.png"): {
        404: "No device with that id, or (reason 'no_plot') no flagged readings or gaps of "
        "that metric in the range: plot a metric listed under 'plots' of its quality."},
    ("get", "/v1/devices/{device_id}/rul"): {404: "No device with that id."},
    ("get", "/v1/alerts/{alert_id}"): {404: "No alert with that id."},
    ("post", "/v1/alerts/{alert_id}/ack"): {404: "No alert with that id.",
                                            409: _MERGED_ALERT},
    ("post", "/v1/alerts/{alert_id}/label"): {404: "No alert with that id.",
                                              409: _MERGED_ALERT,
                                              503: f"{_ERROR_TEXT[503]} Or (reason "
                                              f"'labels_busy') {_LABELS_BUSY}"},
    ("post", "/v1/labels"): {404: "The device is neither registered nor has data.",
                             503: f"{_ERROR_TEXT[503]} Or (reason 'labels_busy') "
                             f"{_LABELS_BUSY}"},
    ("get", "/v1/label-queue"): {404: "The device has no history to label.",
                                 503: f"{_ERROR_TEXT[503]} Or (reason 'labels_busy': an "
                                 "operator's request, which records what it offers, or the "
                                 "gateway's first open of the label file, which another "
                                 f"writer holds) {_LABELS_BUSY}"},
    ("get", "/v1/labels"): {503: f"{_ERROR_TEXT[503]} Or (reason 'labels_busy': the gateway's "
                            "first open of the label file, which another writer holds) "
                            f"{_LABELS_BUSY}"},
}


def api_routes(app: FastAPI) -> list[Any]:
    """Every API route of ``app`` as it is served: its path, methods, tags, dependencies and
    body with those of the router it was included from (``path_regex``, ``path_format``,
    ``methods``, ``tags``, ``dependant``, ``body_field``). FastAPI 0.138 includes routers
    lazily, so ``app.routes`` holds the included routers, not their routes."""
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)
    if iter_contexts is None:  # FastAPI before 0.138: the routes are copied into the app
        return [r for r in app.routes if isinstance(r, APIRoute)]
    return [c for c in iter_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def _token_role(dependant: Dependant) -> str | None:
    """The role an API token needs for a route (``None``: none is needed), from the
    dependencies that check it (they carry ``api_token_role``)."""
    for dep in dependant.dependencies:
        role = getattr(dep.call, "api_token_role", None) or _token_role(dep)
        if role:
            return role
    return None


def _takes_body(route: Any) -> bool:
    """Whether ``route`` reads a request body: a JSON one FastAPI decodes, or one it reads
    itself and documents (``openapi_extra`` with a ``requestBody``: telemetry)."""
    extra = getattr(route, "openapi_extra", None) or {}
    return route.body_field is not None or "requestBody" in extra


def _uses(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(dep.call is call or _uses(dep, call) for dep in dependant.dependencies)


def _route_errors(route: Any, method: str, op: dict[str, Any]) -> dict[int, str]:
    """The error statuses ``route`` answers for ``method``, each with what it means."""
    tags = op.get("tags", [])
    if "health" in tags:  # no credentials, no body; /healthz says its own 503
        return {}
    errors: dict[int, str] = {}
    if "security" in op:  # set just before: every operation outside health needs one
        errors[401] = _ERROR_TEXT[401]
    token = _token_role(route.dependant) is not None
    if token:
        errors[403] = _ERROR_TEXT[403]
        # a credential that is no token, sent with X-Device-Id, is checked as that device's
        # secret, and a source with too many wrong ones is paused (deps.authenticate_token)
        errors[429] = _THROTTLED
    if route.body_field is not None or "requestBody" in op:
        errors[413] = _ERROR_TEXT[413]
        if route.body_field is not None:  # a JSON body FastAPI decodes: only identity
            errors[415] = ("The body carries a Content-Encoding (gzip, br...) this route "
                           "does not take: send it as it is.")
    takes_input = op.get("parameters") or "requestBody" in op or "422" in op.get(
        "responses", {})
    if token:  # its query string is checked too
        errors[422] = f"{_ERROR_TEXT[422]} Or: {_QUERY_422}" if takes_input else _QUERY_422
    elif takes_input:
        errors[422] = _ERROR_TEXT[422]
    if _uses(route.dependant, get_store):
        errors[503] = _ERROR_TEXT[503]
    if (method.upper(), route.path_format) in SECURITY_ONLY_WRITES:  # problems.security_busy
        errors[503] = (f"{errors[503]} Or {_SECURITY_BUSY}" if 503 in errors
                       else f"Security store busy: {_SECURITY_BUSY}")
    errors.update(_ROUTE_ERRORS.get((method, route.path_format), {}))
    return errors


def _problem_response(description: str, status: int) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}}}
    if status == 401:
        out["headers"] = {"WWW-Authenticate": {**_STRING, "description": "'Bearer'."}}
    elif status == 429 or (status == 503 and "Retry-After" in description):
        out["headers"] = {"Retry-After": {**_STRING, "description": "Seconds to wait."}}
    return out


def _openapi_with_bearer(app: FastAPI) -> dict[str, Any]:
    """The generated spec, plus the bearer scheme on every operation outside ``health``, and
    every error an operation answers documented as the problem+json it is.

    FastAPI documents a 422 ``HTTPValidationError`` (``{"detail": [...]}``) on each operation
    with inputs; the API never answers that shape, so it is replaced by ``Problem`` and the
    other statuses each operation answers (401, 403, 404, 409, 413, 429, 503) are added.
    """
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                       description=app.description, routes=app.routes, tags=app.openapi_tags)
    components = spec.setdefault("components", {})
    components["securitySchemes"] = {
        "apiToken": {"type": "http", "scheme": "bearer",
                     "description": "An API token (viewer, operator or admin)."},
        "deviceSecret": {"type": "http", "scheme": "bearer",
                         "description": "A device secret, with the X-Device-Id header."},
    }
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["Problem"] = _PROBLEM_SCHEMA
    routes = {(m.lower(), r.path_format): r for r in api_routes(app) for m in r.methods}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            tags = op.get("tags", [])
            if "telemetry" in tags or ("registry" in tags and path.startswith(_DEVICE_PATHS)):
                op["security"] = [{"deviceSecret": []}]
            elif "health" not in tags:
                op["security"] = [{"apiToken": []}]
            responses = op.setdefault("responses", {})
            route = routes.get((method, path))
            errors = _route_errors(route, method, op) if route is not None else {}
            for code, text in sorted(errors.items()):
                own = responses.get(str(code), {}).get("description")
                if own in (None, "Validation Error"):
                    responses[str(code)] = {"description": text}  # FastAPI's words: replaced
                elif code == 429 and text == _THROTTLED:  # the route's own 429, and this one
                    responses[str(code)] = {**responses[str(code)],
                                            "description": f"{own} Or: {text}"}
                elif code == 422 and _QUERY_422 in text:  # its own 422, and the query's
                    responses[str(code)] = {**responses[str(code)],
                                            "description": f"{own} Or: {_QUERY_422}"}
            for code, resp in responses.items():
                if code.isdigit() and int(code) >= 400:  # the route's words, the Problem body
                    described = resp.get("description") or _ERROR_TEXT.get(int(code), "Error.")
                    responses[code] = _problem_response(described, int(code))
            op["responses"] = dict(sorted(responses.items()))
    health = spec["paths"].get("/healthz", {}).get("get")
    if health is not None:
        health["responses"]["503"] = {
            "description": "The store does not respond.",
            "content": {"application/json": {"schema": {
                "type": "object", "properties": {"status": {"const": "unhealthy"},
                                                 "store": {"type": "string"}}}}},
        }
    app.openapi_schema = spec
    return spec


def uvicorn_ssl_kwargs(settings: Settings) -> dict[str, str]:
    """uvicorn keyword arguments for HTTPS from ``--tls-cert``/``--tls-key`` (empty for HTTP).

    Raises :class:`~edgewise.errors.ConfigError` when only one of the two is given or a
    file does not exist, naming the setting.
    """
    cert, key = settings.tls_cert, settings.tls_key
    if not cert and not key:
        return {}
    if not cert or not key:
        missing = "tls_cert" if not cert else "tls_key"
        raise ConfigError(
            f"Setting '--{missing.replace('_', '-')}' is missing: HTTPS needs both "
            "--tls-cert and --tls-key (or EDGEWISE_TLS_CERT and EDGEWISE_TLS_KEY)."
        )
    for name, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not Path(path).is_file():
            raise ConfigError(f"Setting {name!r} has value {path!r}. No such file.")
    return {"ssl_certfile": cert, "ssl_keyfile": key}
