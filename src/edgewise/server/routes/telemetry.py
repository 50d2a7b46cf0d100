"""Telemetry ingest over HTTP: the device's door into the pipeline.

The answer is 200 only after the store has committed the readings: ``ack_seq`` is the
device's seq watermark (every seq up to it is durably stored), so a device may drop
its copies up to there. Records that failed validation are listed in ``rejected`` (the
first :data:`~edgewise.telemetry.MAX_LISTED_REJECTIONS`; ``rejected_total`` and
``rejected_by_reason`` count them all); the others are kept. Whole-payload problems answer
4xx and store nothing.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from edgewise.errors import AuthError, PayloadError
from edgewise.server.deps import (
    DeviceAuth,
    PipelineDep,
    SecurityDep,
    SettingsDep,
    bearer_secret,
    wrong_device_credentials,
)
from edgewise.server.problems import Problem, payload_problem, shorten
from edgewise.telemetry import GZIP_MAGIC, MAX_LISTED_REJECTIONS

__all__ = ["IngestResponse", "check_encoding", "read_limited_body", "router"]

router = APIRouter(tags=["telemetry"])

_JSON_TYPES = ("application/json", "application/senml+json", "text/plain")
_JSON_ALLOWED = "application/json, application/senml+json or text/plain (a JSON body)"


class IngestResponse(BaseModel):
    """What one telemetry request did; answered only after the store committed."""

    accepted: int = Field(description="Readings newly stored.")
    duplicates: int = Field(description="Readings already stored (re-delivery); kept once.")
    conflicts: int = Field(
        description="Readings with a different value for a stored (device, metric, time); "
        "kept aside as conflicts, never overwriting."
    )
    rejected: list[dict[str, Any]] = Field(
        description="One problem object per rejected record or metric (field, value, "
        f"allowed, reason, index), in order: the first {MAX_LISTED_REJECTIONS} at most."
    )
    rejected_total: int = Field(
        description="Every rejected record or metric, listed in 'rejected' or not."
    )
    rejected_by_reason: dict[str, int] = Field(
        description="Every rejected record or metric counted by reason (listed or not)."
    )
    ack_seq: int = Field(
        description="The device's seq watermark: every message seq in 1..ack_seq is stored."
    )


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The request body, refusing with 413 as soon as it is known to exceed ``limit`` bytes.

    ``Content-Length`` is checked before anything is read; a chunked body is read only
    until it passes the limit.
    """
    def too_large(size: str) -> Problem:
        return Problem(
            413, "Payload too large",
            f"Field 'payload' must be at most {limit} bytes. Got {size} instead.",
            field="payload", value=size, allowed=f"at most {limit} bytes", reason="too_large",
        )

    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:  # not under uvicorn, whose parsers answer this with their own
            # plain-text 400 before the app; for other ASGI servers and in-process clients
            raise Problem(400, detail="Header 'Content-Length' is not an integer: "
                          f"{shorten(declared)!r}.",
                          field="Content-Length", value=declared, allowed="an integer",
                          reason="bad_header") from None
        if n > limit:
            raise too_large(f"{n} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_encoding(body: bytes, encoding: str | None) -> None:
    """Refuse a ``Content-Encoding`` other than ``identity`` or ``gzip`` (415), and a body
    said to be gzip that is not (400). The gzip itself is inflated by
    :func:`edgewise.telemetry.decode`, within the payload limit, as for MQTT.

    >>> check_encoding(b"\\x1f\\x8b...", "gzip") is None
    True
    """
    coding = (encoding or "identity").strip().lower()
    if coding == "identity":
        return
    if coding not in ("gzip", "x-gzip"):
        raise Problem(
            415, detail="Header 'Content-Encoding' must be gzip or identity. Got "
            f"{shorten(encoding)!r}"
            " instead.", field="Content-Encoding", value=encoding,
            allowed="gzip or identity", reason="bad_encoding",
        )
    if not body.startswith(GZIP_MAGIC):
        raise Problem(
            400, detail="The body is not gzip, as its 'Content-Encoding' says.",
            field="Content-Encoding", value=encoding, allowed="a gzip stream",
            reason="bad_encoding",
        )


async def _ingest(
    request: Request, device_id: str, authorization: str | None,
    security: Any, pipeline: Any, settings: Any,
) -> dict[str, Any]:
    # when the request came: the "now" of SenML with no or relative times, whatever the
    # wait for authentication and for the commit (see Pipeline.ingest_many)
    received_ns = time.time_ns()
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type and content_type.lower() not in _JSON_TYPES:
        hint = (" (curl -d sends that unless given -H 'Content-Type: application/json')"
                if content_type.lower() == "application/x-www-form-urlencoded" else "")
        raise Problem(
            415, detail=f"Header 'Content-Type' must be {_JSON_ALLOWED}. Got "
            f"{shorten(content_type)!r} "
            f"instead{hint}.",
            field="Content-Type", value=content_type, allowed=_JSON_ALLOWED,
        )
    count = pipeline.metrics.inc
    try:
        secret = bearer_secret(authorization)
    except Problem:
        count("edgewise_auth_failures_total", reason="empty_password")
        raise
    try:
        source = request.client.host if request.client else None
        # the credential tag: checked again under the commit lock (Pipeline.ingest), so a
        # secret replaced while the body was on its way stores nothing
        credential = await run_in_threadpool(partial(
            security.authenticate_device, device_id, secret, source=source))
    except AuthError as exc:
        if type(exc) is not AuthError:
            count("edgewise_auth_failures_total", reason="throttled")
            raise  # ThrottledError: 429 with Retry-After from the handler
        count("edgewise_auth_failures_total", reason="bad_secret")
        raise wrong_device_credentials(device_id) from None
    try:
        body = await read_limited_body(request, settings.max_payload_bytes)
        check_encoding(body, request.headers.get("content-encoding"))
    except Problem as exc:
        count("edgewise_readings_rejected_total", reason=exc.reason)
        raise
    try:
        result = await run_in_threadpool(partial(pipeline.ingest, device_id, body, via="http",
                                                 received_ns=received_ns,
                                                 credential=credential))
    except PayloadError as exc:
        if exc.reason == "unknown_device":
            # the secret was replaced (or the device deleted) after it was checked: the
            # answer a new request with that secret gets; nothing was stored
            raise wrong_device_credentials(device_id) from None
        if exc.reason != "bad_encoding":
            raise
        encoding = request.headers.get("content-encoding")
        if (encoding or "identity").strip().lower() not in ("gzip", "x-gzip"):
            # gzip told by its magic bytes alone: no header said gzip
            raise Problem(
                400, detail="The body starts as gzip (its magic bytes) but is not gzip "
                f"throughout: {exc.value}.", field="payload", value=exc.value,
                allowed="gzip members only, nothing after the last one (a body that "
                "starts with gzip's magic bytes is inflated)", reason="bad_encoding",
            ) from None
        raise Problem(
            400, detail=f"The body is not gzip throughout, as its 'Content-Encoding' "
            f"({shorten(encoding)!r}) says: {exc.value}.", field="Content-Encoding",
            value=encoding,
            allowed=exc.allowed, reason="bad_encoding",
        ) from None
    rejected = [{**payload_problem(err, status=422).body(), "index": err.index}
                for err in result.rejected]  # the first MAX_LISTED_REJECTIONS: Decoded.reject
    by_reason = result.rejected_counts
    return {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "conflicts": result.conflicts,
        "rejected": rejected,
        "rejected_total": sum(by_reason.values()),
        "rejected_by_reason": by_reason,
        "ack_seq": result.ack_seq,
    }


_DOC = (
    "Body: compact JSON `{\"ts\", \"metrics\": {name: number or boolean}, \"seq\"}` (one or "
    "an array) or SenML (RFC 8428; `v` or `vb`); a boolean is stored as 1 or 0. "
    "Answers 200 only after the readings are committed; `rejected` names "
    f"each record or metric left out, the first {MAX_LISTED_REJECTIONS} in order at most "
    "(`rejected_total` and `rejected_by_reason` count them all). A rejected record or "
    "metric counts against the device's rate limit as a reading does. The body may be "
    "gzipped (`Content-Encoding: gzip`, one member or several; the limit holds once "
    "decompressed). 400 not gzip (or bytes after the gzip stream), 401 unknown device or "
    "wrong secret (also a secret replaced, or a device deleted, while the request was on "
    "its way: nothing of it is stored), 413 too large, 415 not JSON or another "
    "encoding, 422 nothing usable, 429 rate limit or throttled (see Retry-After)."
)


_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"oneOf": [{"type": "object"}, {"type": "array"}]},
                "examples": {
                    "compact": {"summary": "Compact, one message", "value": {
                        "ts": "2026-01-31T12:00:00Z", "seq": 1,
                        "metrics": {"temp_c": 21.5, "rpm": 1450, "running": True}}},
                    "batch": {"summary": "Compact, a batch", "value": [
                        {"ts": 1769860800, "seq": 1, "metrics": {"temp_c": 21.5}},
                        {"ts": 1769860801, "seq": 2, "metrics": {"temp_c": 21.6}}]},
                    "senml": {"summary": "SenML (RFC 8428)", "value": [
                        {"bn": "pump-7/", "bt": 1769860800, "n": "temp_c", "u": "Cel",
                         "v": 21.5},
                        {"n": "rpm", "v": 1450}, {"n": "running", "vb": True}]},
                },
            },
            "application/senml+json": {"schema": {"type": "array"}},
        },
    },
    "responses": {
        "401": {"description": "Unknown device or wrong secret, also one replaced while "
                "the request was on its way (problem+json; nothing stored)."},
        "413": {"description": "Body over the size limit (problem+json)."},
        "422": {"description": "Nothing in the payload is usable (problem+json)."},
        "429": {"description": "Rate limit or throttled; see Retry-After (problem+json)."},
    },
}


@router.post(
    "/v1/telemetry",
    summary="Send telemetry (device id in X-Device-Id)",
    description=_DOC,
    response_model=IngestResponse,
    openapi_extra=_BODY,
)
async def post_telemetry(
    request: Request,
    security: SecurityDep,
    pipeline: PipelineDep,
    settings: SettingsDep,
    x_device_id: Annotated[str | None, Header(description="The sending device's id.")] = None,
    authorization: DeviceAuth = None,
) -> dict[str, Any]:
    if not x_device_id:
        raise Problem(
            401, "Authentication required", "Header 'X-Device-Id' is missing.",
            field="X-Device-Id", allowed="the device id printed by 'edgewise device add'",
            reason="missing_credentials", headers={"WWW-Authenticate": "Bearer"},
        )
    return await _ingest(request, x_device_id, authorization, security, pipeline, settings)


@router.post(
    "/v1/devices/{device_id}/telemetry",
    summary="Send telemetry (device id in the path)",
    description=_DOC,
    response_model=IngestResponse,
    openapi_extra=_BODY,
)
async def post_device_telemetry(
    request: Request,
    security: SecurityDep,
    pipeline: PipelineDep,
    settings: SettingsDep,
    device_id: Annotated[str, Path(description="The sending device's id.")],
    x_device_id: Annotated[str | None, Header(description="Optional; must match.")] = None,
    authorization: DeviceAuth = None,
) -> dict[str, Any]:
    if x_device_id and x_device_id != device_id:
        raise Problem(
            403, "Device may send only its own telemetry",
            f"Header 'X-Device-Id' is {shorten(x_device_id)!r} but the path names "
            f"{shorten(device_id)!r}.", field="X-Device-Id", value=x_device_id,
            allowed=shorten(device_id), reason="wrong_device",
        )
    return await _ingest(request, device_id, authorization, security, pipeline, settings)
