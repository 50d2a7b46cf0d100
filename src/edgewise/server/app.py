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

import logging
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from edgewise.config import Settings
from edgewise.errors import ConfigError, SignatureError
from edgewise.gateway.pipeline import Pipeline
from edgewise.registry import Registry
from edgewise.security.credentials import Security
from edgewise.server.problems import install_problem_handlers
from edgewise.server.routes import (
    alerts,
    devices,
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

__all__ = ["WEB_DIR", "create_app", "uvicorn_ssl_kwargs"]

WEB_DIR = Path(str(files("edgewise.server") / "web"))

_DESCRIPTION = """\
Telemetry in, alerts out.

**Devices** send telemetry with `Authorization: Bearer <device secret>` and `X-Device-Id`;
a device secret can do nothing else. **People and scripts** use API tokens
(`edgewise token create --role viewer|operator|admin`): *viewer* reads, *operator* also
acknowledges and labels alerts, *admin* also manages devices and tokens; every admin
action is audited.

Every error is `application/problem+json` with the keys
`type, title, status, detail, field, value, allowed, reason`.
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
        Limits such as ``max_payload_bytes``.
    registry
        The model registry whose signed releases agents fetch (``GET /v1/devices/{id}/model``,
        ``GET /v1/models/{sha256}``) and operators roll out (``POST /v1/registry/rollouts``).
        By default the one in ``settings.data_dir`` (its signing key is made there at first
        start, never remade once issued); the caller that passes one closes it.
    forget_device
        Called with a device id once ``DELETE /v1/devices/{id}`` has deleted the device, for
        what the gateway keeps outside the store: the running transport's state, such as the
        external MQTT broker's retained ack (``Gateway.forget_device``).

    Returns
    -------
    FastAPI
        Serve it with uvicorn, e.g.
        ``uvicorn.run(app, host=s.host, port=s.http_port, **uvicorn_ssl_kwargs(s))``.
    """
    from edgewise import __version__

    app = FastAPI(
        title="Edgewise",
        version=__version__,
        summary="Machine learning on IoT sensor fleets: telemetry in, alerts out.",
        description=_DESCRIPTION,
        openapi_tags=_TAGS,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.store = store
    app.state.security = security
    app.state.pipeline = pipeline
    app.state.settings = settings
    app.state.forget_device = forget_device
    install_problem_handlers(app)
    for module in (telemetry, devices, readings, quality, rul, alerts, labels, tokens, health):
        app.include_router(module.router)
    if registry is None:  # the gateway's first start makes the signing key (never remade)
        registry = Registry(settings.data_dir)
        try:
            registry.signing_key()
        except SignatureError as exc:
            logging.getLogger(__name__).warning("registry: %s", exc)
    app.state.registry = registry
    app.include_router(models.make_router(registry, security), tags=["registry"])

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        if not request.url.path.startswith("/docs"):
            for key, value in _SECURITY_HEADERS.items():
                response.headers.setdefault(key, value)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.openapi = lambda: _openapi_with_bearer(app)  # type: ignore[method-assign]

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> RedirectResponse:
        return RedirectResponse("/static/favicon.svg")

    return app


_DEVICE_PATHS = ("/v1/devices/{device_id}/model", "/v1/models/")


def _openapi_with_bearer(app: FastAPI) -> dict[str, Any]:
    """The generated spec, plus the bearer scheme on every operation outside ``health``."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    spec = get_openapi(title=app.title, version=app.version, summary=app.summary,
                       description=app.description, routes=app.routes, tags=app.openapi_tags)
    spec.setdefault("components", {})["securitySchemes"] = {
        "apiToken": {"type": "http", "scheme": "bearer",
                     "description": "An API token (viewer, operator or admin)."},
        "deviceSecret": {"type": "http", "scheme": "bearer",
                         "description": "A device secret, with the X-Device-Id header."},
    }
    for path, ops in spec["paths"].items():
        for op in ops.values():
            tags = op.get("tags", [])
            if "telemetry" in tags or ("registry" in tags and path.startswith(_DEVICE_PATHS)):
                op["security"] = [{"deviceSecret": []}]
            elif "health" not in tags:
                op["security"] = [{"apiToken": []}]
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
