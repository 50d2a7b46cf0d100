"""API tokens (admin), the audit log (admin), and who the caller is (any role).

``POST /v1/tokens`` refuses a name over :data:`~edgewise.security.credentials.MAX_TOKEN_NAME`
characters, with control characters (tab, newline, …), blank or only dashes (``" "``,
``"--"``), of a token id's form (8 hex digits)
or one the gateway acts under itself
(:data:`~edgewise.security.credentials.RESERVED_TOKEN_NAMES`: ``gateway``, ``cli``, …)
with a 422 naming ``name``: the rule is :meth:`Security.create_token`'s, the same for
``edgewise token create``. It answers the token with its ``id`` (what ``edgewise token
revoke --id`` takes) and the name it was stored under (the role when none was given).

``GET /v1/audit`` lists newest first and pages by id (keyset): ``before_id`` starts a page
below an entry, and when older entries follow a page the answer has a ``Link:
<audit?limit=…&before_id=…>; rel="next"`` header (relative to the request's URL), so
every entry can be read however
long the log, a page (``limit``, at most 10,000) at a time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from edgewise.errors import InvalidParameterError
from edgewise.security.credentials import (
    MAX_TOKEN_NAME,
    RESERVED_TOKEN_NAMES,
    ROLES_DOC,
    parse_audit_head,
)
from edgewise.server.deps import Admin, SecurityDep, Viewer
from edgewise.server.problems import Problem

__all__ = ["router"]

router = APIRouter(tags=["tokens"])


class NewToken(BaseModel):
    """A token to create. A field it does not know is refused (422 naming it): ``"nmae"``,
    a typo of ``name``, made a token named after its role."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["admin", "operator", "viewer"] = Field(description=ROLES_DOC)
    # the limit is checked by Security.create_token, as for the CLI; here it is documented
    name: str = Field(default="", json_schema_extra={"maxLength": MAX_TOKEN_NAME},
                      description="Who or what will use it (default: the role); no control "
                      "characters (tab, newline, …); not blank or only dashes; not 8 hex "
                      "digits, a token id's form; "
                      f"not one the gateway acts under ({', '.join(RESERVED_TOKEN_NAMES)}, "
                      "in any case).")


class TokenCreated(BaseModel):
    """A new token; shown only this once (only its hash is kept)."""

    token: str
    role: str
    name: str = Field(description="The name it is stored under: the role when none was given.")
    id: str = Field(description="Its id, as 'edgewise token list' shows it and "
                    "'edgewise token revoke --id' takes it.")


@router.post("/v1/tokens", status_code=201, response_model=TokenCreated,
             summary="Create an API token (admin)")
def create_token(body: NewToken, who: Admin, security: SecurityDep) -> dict[str, str]:
    try:
        token = security.create_token(body.role, body.name, actor=who.actor)
    except InvalidParameterError as exc:
        raise Problem(422, "Invalid input", str(exc), field=exc.field, value=exc.value,
                      allowed=f"at most {MAX_TOKEN_NAME} characters, no control characters "
                      "(tab, newline, …), not blank or only dashes, not 8 hex digits (a "
                      "token id's form), not "
                      f"{', '.join(RESERVED_TOKEN_NAMES)} (in any case)"
                      if exc.field == "name" else None,
                      reason="invalid") from None
    made = security.authenticate_token(token)  # as stored: the name defaults to the role
    return {"token": token, "role": made.role, "name": made.name, "id": made.token_id}


#: the largest id SQLite holds (a larger ``before_id`` is refused, not overflowed)
_MAX_ID = 2**63 - 1

_AUDIT_LINK_DOC = {200: {"description": "The entries of this page, newest first.", "headers": {
    "Link": {"schema": {"type": "string"}, "description":
             "'<URL>; rel=\"next\"' when older entries follow: the URL of the next page "
             "('audit?…&before_id=…', relative to the request's URL: resolve it against the "
             "URL asked), the same limit with 'before_id' the page's last id. "
             "Absent on the last page."}}}}


@router.get("/v1/audit", summary="The audit log, newest first (admin)",
            responses=_AUDIT_LINK_DOC)
def audit_log(
    who: Admin,
    security: SecurityDep,
    request: Request,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many (a page; "
                                "the Link header leads to the next).")] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=_MAX_ID, description=(
        "Only entries with a smaller id: where the page starts, the last id of the page "
        "before (its Link rel=\"next\" header gives it). Absent: the newest."))] = None,
) -> list[dict[str, Any]]:
    """Audit entries, newest first, a page of at most ``limit``; each carries ``prev_hash``
    and ``hash``, its links in the audit hash chain. Pages go by id (keyset): when older
    entries follow, the ``Link: <audit?limit=…&before_id=…>; rel="next"`` header names
    the next page; following it until no ``Link`` comes lists every entry once, however
    long the log (entries written meanwhile are on the first page, not later ones)."""
    # one more than the page: whether a next page exists, without a last empty one
    entries = security.audit_log(limit + 1, before_id)
    if len(entries) > limit:
        entries = entries[:limit]
        url = request.url.include_query_params(before_id=entries[-1].id)
        # relative to the request's URL (/v1/audit), so it holds behind a proxy's prefix
        response.headers["Link"] = f'<audit?{url.query}>; rel="next"'
    return [_entry(e) for e in entries]


@router.get("/v1/audit/verify", summary="Check the audit log's hash chain (admin)")
def audit_verify(
    who: Admin,
    security: SecurityDep,
    expect: Annotated[str | None, Query(
        description="A head recorded earlier, 'ID:HASH': that entry must still have that "
        "hash (catches a rewritten chain and deleted newest entries).")] = None,
) -> dict[str, Any]:
    """Walk the whole chain: ``ok``, entries ``checked``, the ``head`` (``ID:HASH``, record
    it elsewhere), and for a break the first ``bad_id``, the ``problem`` (``edited``,
    ``deleted``, ``inserted``, ``rewritten``) and a ``reason``. A broken chain is still a
    200 answer: the check ran; ``ok`` says how it came out."""
    if expect is not None:
        try:  # the store's own check, answered with what a head looks like
            parse_audit_head(expect)
        except InvalidParameterError as exc:
            raise Problem(422, "Invalid query parameter", str(exc), field="expect",
                          value=expect, allowed=_EXPECT_ALLOWED,
                          reason="invalid") from None
    result = security.verify_audit(expect)
    return {**_entry(result), "head": result.head}


_EXPECT_ALLOWED = ("'ID:HASH' as GET /v1/audit/verify answers it in 'head': an entry id of "
                   f"0 to {2**63 - 1}, a colon, 64 lowercase hex characters")


def _entry(e: Any) -> dict[str, Any]:
    if hasattr(e, "__dataclass_fields__"):
        return {k: getattr(e, k) for k in e.__dataclass_fields__}
    return dict(e._asdict()) if hasattr(e, "_asdict") else dict(vars(e))


@router.get("/v1/me", summary="The caller's token name and role (viewer)")
def me(who: Viewer) -> dict[str, str]:
    return {"name": who.name, "role": who.role}
