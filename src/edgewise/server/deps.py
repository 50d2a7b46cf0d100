"""Dependencies of the API routes: the app's parts, and who is calling.

Two kinds of callers:

* **Devices** send ``Authorization: Bearer <device secret>`` with ``X-Device-Id`` (or
  the id in the path). A device secret can only send telemetry.
* **People and scripts** send ``Authorization: Bearer <API token>``; the token's role
  decides what they may do (:data:`edgewise.security.credentials.ROLES_DOC`): ``viewer``
  reads, ``operator`` also acknowledges and labels alerts and rolls model releases out or
  back, ``admin`` also manages devices and tokens.

Route signatures say it with a type, e.g. ``who: Operator``. Routes built around parts of
their own (the registry's :func:`~edgewise.server.routes.models.make_router`) pass their
:class:`Security` to :func:`require_role` and call :func:`authenticate_device` with it, so
every route answers the same problems: 401 with ``WWW-Authenticate: Bearer`` and
``field: Authorization``, the scheme read case-insensitively (RFC 7235), and an unknown
device worded as a wrong secret. A device secret sent to a token route with its
``X-Device-Id`` is checked, counted and throttled as telemetry checks it (a 403 when right,
401 when wrong, 429 for a source paused after too many wrong ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from edgewise.config import Settings
from edgewise.errors import AuthError, ThrottledError
from edgewise.gateway.pipeline import Pipeline
from edgewise.security.credentials import ROLE_RANK, Principal, Security
from edgewise.server.problems import Problem, shorten
from edgewise.server.query import check_query
from edgewise.store.base import Store

__all__ = [
    "DEVICE_ALLOWED",
    "Admin",
    "DeviceAuth",
    "Operator",
    "PipelineDep",
    "SecurityDep",
    "SettingsDep",
    "StoreDep",
    "Viewer",
    "authenticate_device",
    "authenticate_token",
    "bearer_secret",
    "check_role",
    "require_role",
    "wrong_device_credentials",
]


def get_store(request: Request) -> Store:
    """The app's store."""
    return request.app.state.store  # type: ignore[no-any-return]


def get_security(request: Request) -> Security:
    """The app's credentials and audit log."""
    return request.app.state.security  # type: ignore[no-any-return]


def get_pipeline(request: Request) -> Pipeline:
    """The app's ingest pipeline."""
    return request.app.state.pipeline  # type: ignore[no-any-return]


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(get_store)]
SecurityDep = Annotated[Security, Depends(get_security)]
PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
#: ``Authorization: Bearer <device secret>``, for the routes a device calls (telemetry,
#: its model). Left out of the operation's parameters, as OpenAPI ignores an Authorization
#: header parameter (Swagger UI showed a dead field): the operation's ``deviceSecret``
#: security scheme documents it.
DeviceAuth = Annotated[str | None, Header(include_in_schema=False)]


def unauthenticated(detail: str, reason: str = "unauthenticated") -> Problem:
    """A 401 problem asking for a bearer credential; never echoes what was sent."""
    return Problem(
        401, "Authentication required", detail, field="Authorization", value=None,
        allowed="'Bearer <token>'", reason=reason, headers={"WWW-Authenticate": "Bearer"},
    )


def bearer_secret(authorization: str | None) -> str:
    """The credential of an ``Authorization: Bearer …`` header, or a 401 problem.

    >>> bearer_secret("Bearer abc")
    'abc'
    >>> bearer_secret("Basic abc")
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: Header 'Authorization' must be 'Bearer <token>'.
    """
    if not authorization:
        raise unauthenticated("Header 'Authorization' is missing; send 'Bearer <token>'.",
                              reason="missing_credentials")
    scheme, _, secret = authorization.strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        raise unauthenticated("Header 'Authorization' must be 'Bearer <token>'.",
                              reason="bad_credentials")
    return secret


#: What a device sends, for the ``allowed`` of its 401 problems.
DEVICE_ALLOWED = "'Bearer <device secret>' with 'X-Device-Id'"


def wrong_device_credentials(device_id: str) -> Problem:
    """The 401 for a device id and secret that do not match: the same whether the device
    exists or not, so the answer never tells which ids are registered."""
    return Problem(
        401, "Authentication required",
        f"Device {shorten(device_id)!r} is unknown or the secret is wrong.",
        field="Authorization", allowed=DEVICE_ALLOWED, reason="bad_credentials",
        headers={"WWW-Authenticate": "Bearer"},
    )


def authenticate_device(security: Security, device_id: str, authorization: str | None,
                        source: str | None = None,
                        count: Callable[..., object] | None = None) -> str:
    """Check ``Authorization: Bearer <device secret>`` is ``device_id``'s; return the id.

    A missing or non-Bearer header, an unknown device and a wrong secret are all 401
    problems with ``WWW-Authenticate: Bearer``; the last two are worded the same (and
    :meth:`Security.authenticate_device` costs the same), so nothing tells whether the
    device exists. Wrong secrets are counted per ``source`` (the peer address: pass
    ``request.client.host``; without one, every caller shares one count); a source
    paused after too many in a row gets :class:`~edgewise.errors.ThrottledError` (429
    with ``Retry-After``) for its wrong secrets, as for telemetry; a right secret passes.
    Each failure is also counted with ``count`` (``Metrics.inc``) as
    ``edgewise_auth_failures_total`` by reason (``empty_password``, ``bad_secret``,
    ``throttled``), as telemetry counts its own.
    Blocking (it hashes and reads SQLite): call it from a sync route or the threadpool.
    """
    def failed(reason: str) -> None:
        if count is not None:
            count("edgewise_auth_failures_total", reason=reason)

    try:
        secret = bearer_secret(authorization)
    except Problem:
        failed("empty_password")
        raise
    try:
        security.authenticate_device(device_id, secret, source=source)
    except ThrottledError:
        failed("throttled")
        raise
    except AuthError:
        failed("bad_secret")
        raise wrong_device_credentials(device_id) from None
    return device_id


def authenticate_token(
    security: Security, authorization: str | None, x_device_id: str | None = None,
    source: str | None = None, count: Callable[..., object] | None = None,
) -> Principal:
    """The principal of ``Authorization: Bearer <API token>``, or a 401 problem.

    A credential that is no token, sent with an ``X-Device-Id``, is checked as that
    device's secret the way telemetry checks it (:func:`authenticate_device`: counted per
    ``source``, the peer address, and with ``count``; a source with too many wrong secrets
    in a row gets 429), so these routes are no uncounted, unthrottled oracle for device
    secrets: the right secret is a 403 (it can only send telemetry), a wrong one the 401
    of a bad token. Blocking (it hashes and reads SQLite): call it from a sync route or the
    threadpool.
    """
    secret = bearer_secret(authorization)
    try:
        return security.authenticate_token(secret)
    except AuthError:
        pass
    if x_device_id:
        try:
            authenticate_device(security, x_device_id, authorization, source=source,
                                count=count)
        except Problem as exc:
            if exc.status != 401:
                raise
        else:
            raise Problem(
                403, "Device credentials cannot do this",
                "A device secret can only send telemetry (POST /v1/telemetry); "
                "reading or managing data needs an API token with a role.",
                field="Authorization", allowed="an API token (edgewise token create)",
                reason="device_credentials",
            )
    raise unauthenticated("The API token is not valid (unknown or revoked).",
                          reason="bad_credentials")


def check_role(who: Principal, role: str) -> Principal:
    """``who``, if its role is at least ``role``; a 403 problem naming both otherwise."""
    need = ROLE_RANK[role]
    if ROLE_RANK.get(who.role, 0) < need:
        raise Problem(
            403, "Role too low",
            f"Token {who.name!r} has role {who.role!r}; this needs {role!r} or higher.",
            field="role", value=who.role,
            allowed=" or ".join(r for r, rank in ROLE_RANK.items() if rank >= need),
            reason="forbidden",
        )
    return who


def require_role(role: str, security: Security | None = None) -> Callable[..., Principal]:
    """A dependency that authenticates an API token and checks it has at least ``role``.

    Tokens are looked up in the app's :class:`Security`, or in ``security`` when given: a
    router built around parts of its own (:func:`~edgewise.server.routes.models.make_router`)
    passes its own and answers the same problems as every other route.

    It carries ``api_token_role``: the app tells the routes that need a token by it (their
    OpenAPI 401/403, and the 401 before reading their body, :mod:`edgewise.server.body_limit`).

    Once the token passes, it checks the query string against the route's parameters
    (:func:`~edgewise.server.query.check_query`): a caller without a valid token gets its
    401 or 403 first, as it does for a parameter of a bad value (FastAPI checks those after
    every dependency). Routes without a token (the device protocol) are not checked.

    >>> require_role("operator").api_token_role
    'operator'
    """
    if role not in ROLE_RANK:  # caught when the route is declared, not on a request
        raise ValueError(f"Role {role!r} is not one of {', '.join(ROLE_RANK)}.")

    def check(
        request: Request,
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
        x_device_id: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> Principal:
        # sync: FastAPI runs it in the threadpool (it hashes and reads SQLite)
        tokens = get_security(request) if security is None else security
        # a device secret sent here is counted as telemetry counts it: per peer address,
        # in the gateway's edgewise_auth_failures_total
        pipeline = getattr(request.app.state, "pipeline", None)
        who = check_role(authenticate_token(
            tokens, authorization, x_device_id,
            source=request.client.host if request.client else None,
            count=pipeline.metrics.inc if pipeline is not None else None), role)
        check_query(request)
        return who

    check.__name__ = f"require_{role}"
    check.api_token_role = role  # type: ignore[attr-defined]  # how the app finds token routes
    return check


Viewer = Annotated[Principal, Depends(require_role("viewer"))]
Operator = Annotated[Principal, Depends(require_role("operator"))]
Admin = Annotated[Principal, Depends(require_role("admin"))]
