"""Liveness and Prometheus metrics; both answer without a token (no data in them)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from edgewise.server.deps import PipelineDep, StoreDep

__all__ = ["router"]

router = APIRouter(tags=["health"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
#: Where a driver's error goes past its first line (PostgreSQL's DETAIL, HINT, CONTEXT and
#: the quoted statement, on lines of their own or joined with "; ")
_DETAIL = re.compile(r"\n|;?\s*\b(?:DETAIL|HINT|CONTEXT|LINE \d+):")


@router.get("/healthz",
            summary="Health: the server answers, the store responds and takes telemetry")
async def healthz(store: StoreDep, pipeline: PipelineDep) -> Any:
    """200 ``{"status": "ok"}``; 503 ``{"status": "unhealthy"}`` where the store cannot be
    read (``store``: the error's kind), or where the last telemetry commit failed and none
    has succeeded since (``ingest``: why; a full disk, a store that refuses writes): it said
    ok while every append failed, so monitoring saw nothing."""
    try:
        await run_in_threadpool(store.list_alerts, None, None, None, None, 1)
    except Exception as exc:
        return JSONResponse({"status": "unhealthy", "store": type(exc).__name__}, 503)
    kind = store.url.split(":", 1)[0]
    failing = pipeline.commit_failing if pipeline is not None else None
    if failing:  # the driver's first line: its DETAIL held the failing row, a device's
        # id and reading, in an answer given without a token (the log keeps it whole)
        why = _DETAIL.split(failing, maxsplit=1)[0]
        return JSONResponse({"status": "unhealthy", "store": kind,
                             "ingest": f"telemetry commits fail: {why}"}, 503)
    return {"status": "ok", "store": kind}


@router.get(
    "/metrics", response_class=PlainTextResponse,
    summary="Prometheus metrics: ingested, rejected by reason, dead-lettered, stored, alerts",
)
def metrics(pipeline: PipelineDep) -> PlainTextResponse:
    return PlainTextResponse(pipeline.metrics.render(), media_type=PROMETHEUS_TEXT)
