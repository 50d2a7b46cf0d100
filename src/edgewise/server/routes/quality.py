"""A device's data-quality report: the offline checks over its stored readings plus what the
gateway's streaming cleaner did to its readings since start."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from edgewise.server.deps import PipelineDep, SecurityDep, StoreDep, Viewer
from edgewise.server.problems import Problem
from edgewise.server.query import format_ns, parse_instant
from edgewise.server.routes.devices import known_device, not_found

__all__ = ["router"]

router = APIRouter(tags=["quality"])

#: Window the report covers when no ``start`` is given.
DEFAULT_WINDOW_NS = 3600 * 10**9


def _report(store: Any, device_id: str, start_ns: int, end_ns: int | None) -> dict[str, Any]:
    from edgewise.quality.report import device_report
    from edgewise.telemetry import Reading

    rows = store.query(device_id, None, start_ns, end_ns, None)
    rep = device_report([Reading(device_id, m, t, v) for m, t, v in rows])
    rep["device_id"] = device_id
    return rep


@router.get(
    "/v1/devices/{device_id}/quality",
    summary="A device's data-quality report (viewer)",
    description="Completeness, timeliness, validity and duplicate, conflict, out-of-order, "
    "spike, stuck and gap counts per metric over the stored readings in [start, end) "
    "(default: the last hour; RFC 3339 or epoch seconds), and under `ingest` what the "
    "gateway's streaming cleaner removed or flagged, by reason, since it started.",
)
async def quality(
    who: Viewer,
    store: StoreDep,
    security: SecurityDep,
    pipeline: PipelineDep,
    device_id: Annotated[str, Path(description="The device id.")],
    start: Annotated[str | None, Query(description="Range start, inclusive.")] = None,
    end: Annotated[str | None, Query(description="Range end, exclusive.")] = None,
) -> dict[str, Any]:
    end_ns = parse_instant(end, "end")
    start_ns = parse_instant(start, "start")
    if start_ns is None:
        start_ns = (end_ns if end_ns is not None else time.time_ns()) - DEFAULT_WINDOW_NS
    if end_ns is not None and end_ns <= start_ns:
        raise Problem(
            422, "Invalid query parameter",
            f"Query parameter 'end' must be after 'start' ({start!r}). Got {end!r} instead.",
            field="end", value=end, allowed="a time after start", reason="bad_range",
        )
    if not await run_in_threadpool(known_device, security, store, device_id):
        raise not_found(device_id)
    rep = await run_in_threadpool(_report, store, device_id, start_ns, end_ns)
    rep["start"] = format_ns(start_ns)
    rep["end"] = format_ns(end_ns)
    rep["ingest"] = await run_in_threadpool(pipeline.quality_counts, device_id)
    return rep
