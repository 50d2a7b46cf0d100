"""A device's readings over a time range, optionally averaged per step."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from edgewise.server.deps import SecurityDep, StoreDep, Viewer
from edgewise.server.problems import Problem
from edgewise.server.query import format_ns, parse_duration, parse_instant
from edgewise.server.routes.devices import known_device, not_found

__all__ = ["router"]

router = APIRouter(tags=["readings"])

MAX_POINTS = 200_000


@router.get(
    "/v1/devices/{device_id}/readings",
    summary="A device's readings over a time range (viewer)",
    description="Times are RFC 3339 with an offset or epoch seconds; the range is "
    "[start, end). With `step` ('500ms', '60s', '5m', '1h', or seconds) values are averaged "
    "per bucket and each point's time is its bucket's start. Series come as parallel arrays "
    "`t` (epoch seconds) and `v`.",
)
async def readings(
    who: Viewer,
    store: StoreDep,
    security: SecurityDep,
    device_id: Annotated[str, Path(description="The device id.")],
    metric: Annotated[str | None, Query(description="Only this metric (empty: all).")] = None,
    start: Annotated[str | None, Query(description="Range start, inclusive.")] = None,
    end: Annotated[str | None, Query(description="Range end, exclusive.")] = None,
    step: Annotated[str | None, Query(description="Downsampling bucket.")] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_POINTS, description="At most this many points in all.")
    ] = MAX_POINTS,
) -> dict[str, Any]:
    start_ns = parse_instant(start, "start")
    end_ns = parse_instant(end, "end")
    step_ns = parse_duration(step, "step")
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise Problem(
            422, "Invalid query parameter",
            f"Query parameter 'end' must be after 'start' ({start!r}). Got {end!r} instead.",
            field="end", value=end, allowed=f"a time after {start}", reason="bad_range",
        )
    if not await run_in_threadpool(known_device, security, store, device_id):
        raise not_found(device_id)
    # one row past the limit tells 'truncated' without reading the rest of the history
    rows = await run_in_threadpool(store.query, device_id, metric or None, start_ns, end_ns,
                                   step_ns, limit + 1)
    truncated = len(rows) > limit
    series: dict[str, dict[str, list[float]]] = {}
    for name, ts_ns, value in rows[:limit]:
        s = series.setdefault(name, {"t": [], "v": []})
        s["t"].append(ts_ns / 1e9)
        s["v"].append(value)
    return {
        "device": device_id,
        "start": format_ns(start_ns),
        "end": format_ns(end_ns),
        "step_s": None if step_ns is None else step_ns / 1e9,
        "points": min(len(rows), limit),
        "truncated": truncated,
        "series": series,
    }
