"""Dependencies of the API routes: the app's parts, and who is calling.

Two kinds of callers:

* **Devices** send ``Authorization: Bearer <device secret>`` with ``X-Device-Id`` (or
  the id in the path). A device secret can only send telemetry.
* **People and scripts** send ``Authorization: Bearer <API token>``; the token's role
  decides what they may do: ``viewer`` reads, ``operator`` also acknowledges and
  labels alerts, ``admin`` also manages devices and tokens.

Route signatures say it with a type, e.g. ``who: Operator``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from edgewise.config import Settings
from edgewise.errors import AuthError
from edgewise.gateway.pipeline import Pipeline
from edgewise.security.credentials import ROLE_RANK, Principal, Security
from edgewise.server.problems import Problem
from edgewise.store.base import Store

__all__ = [
    "Admin",
    "Operator",
    "PipelineDep",
    "SecurityDep",
    "SettingsDep",
    "StoreDep",
    "Viewer",
    "bearer_secret",
    "require_role",
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


def _principal(
    security: SecurityDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_device_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """Authenticate an API token (run in the threadpool: it hashes and reads SQLite)."""
    secret = bearer_secret(authorization)
    try:
        return security.authenticate_token(secret)
    except AuthError:
        if x_device_id and security.has_device(x_device_id):
            try:
                security.authenticate_device(x_device_id, secret)
            except AuthError:
                pass
            else:
                raise Problem(
                    403, "Device credentials cannot do this",
                    "A device secret can only send telemetry (POST /v1/telemetry); "
                    "reading or managing data needs an API token with a role.",
                    field="Authorization", allowed="an API token (edgewise token create)",
                    reason="device_credentials",
                ) from None
        raise unauthenticated("The API token is not valid (unknown or revoked).",
                              reason="bad_credentials") from None


def require_role(role: str):
    """A dependency that authenticates an API token and checks it has at least ``role``."""
    need = ROLE_RANK[role]

    def check(who: Annotated[Principal, Depends(_principal)]) -> Principal:
        if ROLE_RANK.get(who.role, 0) < need:
            raise Problem(
                403, "Role too low",
                f"Token {who.name!r} has role {who.role!r}; this needs {role!r} or higher.",
                field="role", value=who.role,
                allowed=" or ".join(r for r, rank in ROLE_RANK.items() if rank >= need),
                reason="forbidden",
            )
        return who

    check.__name__ = f"require_{role}"
    return check


Viewer = Annotated[Principal, Depends(require_role("viewer"))]
Operator = Annotated[Principal, Depends(require_role("operator"))]
Admin = Annotated[Principal, Depends(require_role("admin"))]
