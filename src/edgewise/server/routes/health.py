"""Liveness and Prometheus metrics; both answer without a token (no data in them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from edgewise.server.deps import PipelineDep, StoreDep

__all__ = ["router"]

router = APIRouter(tags=["health"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


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
    if failing:
        return JSONResponse({"status": "unhealthy", "store": kind,
                             "ingest": f"telemetry commits fail: {failing}"}, 503)
    return {"status": "ok", "store": kind}


@router.get(
    "/metrics", response_class=PlainTextResponse,
    summary="Prometheus metrics: ingested, rejected by reason, dead-lettered, stored, alerts",
)
def metrics(pipeline: PipelineDep) -> PlainTextResponse:
    return PlainTextResponse(pipeline.metrics.render(), media_type=PROMETHEUS_TEXT)
