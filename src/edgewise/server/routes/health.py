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


@router.get("/healthz", summary="Liveness: the server answers and the store responds")
async def healthz(store: StoreDep) -> Any:
    try:
        await run_in_threadpool(store.list_alerts, None, None, None, None, 1)
    except Exception as exc:
        return JSONResponse({"status": "unhealthy", "store": type(exc).__name__}, 503)
    return {"status": "ok", "store": store.url.split(":", 1)[0]}


@router.get(
    "/metrics", response_class=PlainTextResponse,
    summary="Prometheus metrics: ingested, rejected by reason, dead-lettered, stored, alerts",
)
def metrics(pipeline: PipelineDep) -> PlainTextResponse:
    return PlainTextResponse(pipeline.metrics.render(), media_type=PROMETHEUS_TEXT)
