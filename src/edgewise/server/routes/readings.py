"""A device's readings over a time range, optionally averaged per step: as JSON (at most
``MAX_POINTS``), or as CSV streamed whole (``/v1/devices/{id}/readings.csv``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from edgewise import config
from edgewise.errors import StoreError
from edgewise.server.deps import SecurityDep, StoreDep, Viewer
from edgewise.server.problems import Problem, shorten
from edgewise.server.query import format_ns, parse_duration, parse_instant
from edgewise.server.readings_csv import time_formatter
from edgewise.server.routes.devices import device_summary

__all__ = ["CsvResponse", "parse_range", "router"]

router = APIRouter(tags=["readings"])

#: The most points the JSON readings route answers (:data:`edgewise.config.MAX_READINGS`,
#: the cap of every route that reads readings).
MAX_POINTS = config.MAX_READINGS

Metric = Annotated[str | None, Query(description="Only this metric (empty: all); one the "
                                     "device has had, given at most once.")]
Start = Annotated[str | None, Query(description="Range start, inclusive.")]
End = Annotated[str | None, Query(description="Range end, exclusive.")]
Step = Annotated[str | None, Query(description="Downsampling bucket.")]


class CsvResponse(StreamingResponse):
    """A streamed ``text/csv`` answer (UTF-8)."""

    media_type = "text/csv"


def parse_range(start: str | None, end: str | None,
                step: str | None) -> tuple[int | None, int | None, int | None]:
    """``start``, ``end`` (ns) and ``step`` (ns) of a readings query, each ``None`` when not
    given; a 422 problem naming the parameter when one is bad or ``end`` is not after
    ``start``.

    >>> parse_range("1700000000", None, "1m")
    (1700000000000000000, None, 60000000000)
    >>> parse_range("1700000100", "1700000000", None)
    Traceback (most recent call last):
    ...
    edgewise.server.problems.Problem: Query parameter 'end' must be after 'start' ...
    """
    start_ns = parse_instant(start, "start")
    end_ns = parse_instant(end, "end")
    step_ns = parse_duration(step, "step")
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise Problem(
            422, "Invalid query parameter",
            f"Query parameter 'end' must be after 'start' ({shorten(start)!r}). Got "
            f"{shorten(end)!r} instead.",
            field="end", value=end, allowed=f"a time after {start}", reason="bad_range",
        )
    return start_ns, end_ns, step_ns


_REFUSALS = {404: {"description": "No device with that id (reason 'unknown_device'), or "
                     "a `metric` the device has never had (reason 'unknown_metric': the "
                     "detail lists its metrics); a metric it has, with no reading in the "
                     "range, is an empty answer."},
               422: {"description": "A bad parameter ('field' names it)."}}


@router.get(
    "/v1/devices/{device_id}/readings",
    summary="A device's readings over a time range (viewer)",
    description="Times are RFC 3339 with an offset or epoch seconds; the range is "
    "[start, end). With `step` ('500ms', '60s', '5m', '1h', or seconds) values are averaged "
    "per bucket and each point's time is its bucket's start. Series come as parallel arrays "
    "`t` (epoch seconds) and `v`. Points come metric after metric (sorted), each in time "
    "order: when `limit` cuts them (`truncated: true`), `next` says where the answer stopped "
    "— `metric`, the metric cut, and `start`, the time (RFC 3339 UTC, nanoseconds) of its "
    "first point left out (ask again with that `metric` and `start` for the rest of it) — "
    "and `metrics_not_read`, the device's other metrics, of which the answer has no point "
    "(those after the cut one, or with none in the range: ask for each with `metric`); "
    "`next` is null when nothing was cut.",
    responses=_REFUSALS,
)
async def readings(
    who: Viewer,
    store: StoreDep,
    security: SecurityDep,
    device_id: Annotated[str, Path(description="The device id.")],
    metric: Metric = None,
    start: Start = None,
    end: End = None,
    step: Step = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_POINTS, description="At most this many points in all.")
    ] = MAX_POINTS,
) -> dict[str, Any]:
    start_ns, end_ns, step_ns = parse_range(start, end, step)
    summary = None
    if metric:  # its 404 names the device's metrics; without one, whether it is known
        await run_in_threadpool(device_summary, security, store, device_id, metric)
    else:
        summary = await run_in_threadpool(device_summary, security, store, device_id)
    # one row past the limit tells 'truncated' without reading the rest of the history
    rows = await run_in_threadpool(store.query, device_id, metric or None, start_ns, end_ns,
                                   step_ns, limit + 1)
    truncated = len(rows) > limit
    # the rows come metric after metric: a cut page holds none of the metrics after the cut
    # one, and 'truncated' alone left a client to guess which (and where to go on)
    next_page = None
    if truncated:
        cut_metric, cut_ns = rows[limit][0], rows[limit][1]
        # the device's metrics with no point here, the cut one aside (those after it, and
        # any with none in the range): a set, not '> cut_metric', whatever the store's order
        after = sorted(set(summary.metrics if summary is not None else ())
                       - {r[0] for r in rows[:limit]} - {cut_metric})
        next_page = {"metric": cut_metric, "start": time_formatter("rfc3339")(cut_ns),
                     "metrics_not_read": after}
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
        "next": next_page,
        "series": series,
    }


def _still_there(store: Any, device_id: str, had_readings: bool) -> Callable[[], None]:
    """The ``check`` of an export (:func:`~edgewise.server.readings_csv.csv_chunks`): it
    raises :class:`StoreError` when the device had readings as the export began and has
    none now (deleted meanwhile: the rows read are a cut history, and the connection is
    to break, not end as if whole)."""
    def check() -> None:
        if had_readings and store.device(device_id) is None:
            raise StoreError(
                f"Device {device_id!r} was deleted while its readings were exported as CSV: "
                "the CSV sent is cut short (the connection is closed without its end); "
                "there is nothing left to export again.")
    return check


def _while_token_active(chunks: Iterator[bytes], security: Any,
                        who: Any) -> Iterator[bytes]:
    """``chunks``, each handed over only while ``who``'s token is still issued: a token
    revoked during a long export raises :class:`~edgewise.errors.AuthError` at the next
    chunk, which cuts the connection (as a deletion does) instead of streaming the rest
    of the history to it."""
    for chunk in chunks:
        security.check_token_active(who)
        yield chunk


def _file_name(device_id: str) -> str:
    """A safe download name for a device's CSV.

    >>> _file_name('pump 7/"a"')
    'pump_7__a_.csv'
    """
    return re.sub(r"[^A-Za-z0-9._-]", "_", device_id)[:100] + ".csv"


@router.get(
    "/v1/devices/{device_id}/readings.csv",
    summary="A device's whole history over a time range as CSV, streamed (viewer)",
    description="The same `metric`, `start`, `end` and `step` as "
    "`GET /v1/devices/{device_id}/readings`, validated alike, with no cap on the points: "
    "the store is read in bounded slices per metric and the CSV is streamed as it is read, "
    "so memory stays bounded whatever the history's length. `format=wide` (default): header "
    "`time,<metric>,...` (the metrics with a reading in the range, sorted; the one asked "
    "for with `metric`), one row per timestamp in time order, an empty cell where a metric "
    "has no reading then (the time column is always `time`: a metric named like a clock or "
    "a label in any case (`time`, `timestamp`, `date`, `label`, `target`...), or one that "
    "CSV readers take for an earlier column's name, spaces around it not counting, is "
    "written under its name with `_` appended until it is neither, e.g. `time_`). "
    "`format=long`: `time,metric,value`, metric after metric, each in "
    "time order. Times are RFC 3339 UTC with the store's nanoseconds "
    "(`2024-01-31T12:00:00.000000000Z`), or with `time_format` epoch nanoseconds or epoch "
    "seconds (exact decimals); with `step` a row's time is its bucket's start and its value "
    "the bucket's mean. Readings stored while the CSV is streamed may or may not be in it. "
    "A failure after the first bytes ends the connection without the last chunk, so a "
    "client can tell a cut-off CSV from a whole one; so does the device's deletion while "
    "its CSV is streamed, and the revocation of the token it was asked with (at the next "
    "chunk: a revoked token is sent no more of the history).",
    response_class=CsvResponse,
    responses={**_REFUSALS, 200: {"description": "The CSV (UTF-8), streamed in chunks.",
                     "content": {"text/csv": {"schema": {"type": "string"},
                                              "example": "time,rpm,temp_c\n"
                                              "2024-01-31T12:00:00.000000000Z,1480.0,21.5\n"
                                              "2024-01-31T12:00:01.000000000Z,1482.0,\n"}}}},
)
async def readings_csv(
    who: Viewer,
    store: StoreDep,
    security: SecurityDep,
    device_id: Annotated[str, Path(description="The device id.")],
    metric: Metric = None,
    start: Start = None,
    end: End = None,
    step: Step = None,
    form: Annotated[Literal["wide", "long"], Query(
        alias="format", description="`wide`: a column per metric; `long`: "
        "`time,metric,value`.")] = "wide",
    time_format: Annotated[Literal["rfc3339", "epoch_ns", "epoch_s"], Query(
        description="How times are written: RFC 3339 UTC with nanoseconds, epoch "
        "nanoseconds, or epoch seconds.")] = "rfc3339",
) -> CsvResponse:
    from edgewise.server.readings_csv import csv_chunks

    start_ns, end_ns, step_ns = parse_range(start, end, step)
    summary = await run_in_threadpool(device_summary, security, store, device_id, metric)
    metrics = sorted(summary.metrics) if summary is not None else []
    check = _still_there(store, device_id, bool(metrics))
    if metric:
        metrics = [metric]
    # a sync generator: Starlette takes each chunk in the threadpool, so the store's reads
    # and the formatting never block the event loop
    chunks = csv_chunks(store, device_id, metrics, start_ns=start_ns, end_ns=end_ns,
                        step_ns=step_ns, form=form, time_format=time_format,
                        keep_empty=bool(metric), check=check)
    return CsvResponse(_while_token_active(chunks, security, who), headers={
        "Content-Disposition": f'attachment; filename="{_file_name(device_id)}"',
        "Cache-Control": "no-store"})
