"""A device's data-quality report: the offline checks over its stored readings plus what the
gateway's streaming cleaner did to its readings since start.

The report's ``plots`` lists each metric with readings in the range and, among them, flagged
readings (invalid, spike, stuck) or gaps, with the URL of its PNG:
``GET /v1/devices/{id}/quality/plots/{metric}.png?start=…&end=…`` draws the series with
the flagged readings marked and the gaps shaded (:func:`~edgewise.quality.plot.plot_issues`);
a metric the device does not send, one with nothing flagged in the range, or one with no
reading in the range (a sensor silent throughout: there is no series to draw; its entry in
``metrics`` says so, 0 readings and the range one gap), is a 404.
``tz`` (an IANA zone, e.g. ``Europe/Berlin``) draws its time axis in that zone, each
reading at its own offset (across a daylight saving change too), and names it on the axis;
the dashboard passes the browser's, as its charts are local. It passed one offset taken
now, ``tz_offset_min`` (minutes east of UTC, still taken, default 0): readings on the other
side of a DST change were drawn an hour off the charts beside it.

Both read at most :data:`MAX_READINGS` readings (the JSON readings route's cap): where the
range holds more, the newest part of it that holds at most that many is read
(:func:`~edgewise.store.newest.newest_rows`), and the report says so (``truncated:
true``, ``reported_start`` the start of the span it covers; its plot URLs are of that
span). A report over a year of a fast device read every reading at once (4 metrics of 1M
readings each: 102 s of CPU and 1.5 GB).

Completeness, timeliness and gaps are judged over the range (:func:`_span`), not between a
metric's first and last reading there: a sensor that sent ten one-minute readings and went
silent for the rest of the hour is 1/6 complete, with that silence a gap (it read as whole),
and a metric the device sends that is silent over the whole range is listed with
completeness 0 and the range one gap (it was left out, so a dead sensor raised the
device's mean completeness).

Each metric is judged with its history too: the times of its newest :data:`HISTORY`
readings before the range (:func:`_history`). A metric with fewer than two readings in the
range is judged by the spacing they and its history give (a sensor read hourly had one
reading in any hour, the default range and the dashboard's, and was always 0 % complete
with a gap; silent for an hour between two hourly readings it is no gap), and the silence
before its first reading in the range is counted from its last reading before it (a dead
hourly sensor silent for 3 hours is a gap). A metric with no reading before the range (a
sensor added to a device that reported before) is judged from its first reading, as a
device is from its first (:func:`_span`): the time before it is no gap and nothing missing
(it read 50 % complete with a 30-minute gap when first sent at half past). Where no spacing
can be known (one reading ever), ``completeness`` and ``timeliness`` are ``null`` and
nothing is a gap. A metric's ``drift`` is ``null`` where it is unknown (fewer than 20 valid
readings in the range) or has no meaning (a counter, a two-state series).
"""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from edgewise import config
from edgewise.server.deps import PipelineDep, SecurityDep, StoreDep, Viewer
from edgewise.server.problems import Problem, shorten, storable
from edgewise.server.query import format_ns, parse_instant
from edgewise.server.routes.devices import known_device, not_found

__all__ = ["MAX_READINGS", "router"]

router = APIRouter(tags=["quality"])

#: Window the report covers when no ``start`` is given.
DEFAULT_WINDOW_NS = 3600 * 10**9
#: Readings of a metric before the range that a report reads as its history (:func:`_history`).
HISTORY = 5
#: The most readings a report (or a plot) reads: the JSON readings route's cap
#: (:data:`edgewise.config.MAX_READINGS`).
MAX_READINGS = config.MAX_READINGS


def _summary(store: Any, device_id: str) -> Any:
    """The store's summary of the device (its first reading, its metrics), or ``None``:
    that device's alone (:meth:`~edgewise.store.base.Store.device`)."""
    return store.device(device_id)


def _span(summary: Any, start_ns: int, end_ns: int | None,
          now_ns: int | None = None) -> tuple[int, int] | None:
    """The range ``[start, end)`` a report judges the device's readings over: the query's,
    from the device's first reading (its ``summary``'s) where it came later (no reading
    was missing before it sent one), to ``now_ns`` (default: now) where ``end_ns`` is
    later or none (no reading can have come after now: a live window ends now). ``None``
    where that leaves nothing (a range in the future)."""
    if summary is not None and summary.first_ns is not None:
        start_ns = max(start_ns, summary.first_ns)
    now_ns = time.time_ns() if now_ns is None else now_ns
    end = now_ns if end_ns is None else min(end_ns, now_ns)
    return (start_ns, end) if end > start_ns else None


def _history(store: Any, device_id: str, metrics: Any,
             span: tuple[int, int] | None) -> dict[str, list[int]] | None:
    """Each of ``metrics`` (names) mapped to the times of its newest :data:`HISTORY`
    readings before ``span``'s start (``metric_issues``' ``before``); ``None`` without a
    span (nothing is judged over one)."""
    if span is None:
        return None
    return {m: store.times_before(device_id, m, span[0], HISTORY) for m in sorted(set(metrics))}


def _issues(rows: list[tuple[str, int, float]],
            span: tuple[int, int] | None = None,
            before: dict[str, list[int]] | None = None) -> dict[str, dict[str, Any]]:
    """Per metric with readings in ``rows``: the flagged times of the checks
    (``metric_issues`` over ``span``, with its history in ``before``), for plots. A metric
    with none (silent over the whole range) has no entry: no series to draw."""
    import numpy as np

    from edgewise.quality.report import metric_issues

    by: dict[str, tuple[list[int], list[float]]] = {}
    for m, t, v in rows:
        ts, vs = by.setdefault(m, ([], []))
        ts.append(t)
        vs.append(v)
    # the times as int64 apart from the values: through float64 readings 100 ns apart
    # at today's epochs fell on one time (conflicts) and the plot was of other figures
    return {m: metric_issues(np.array(ts, dtype=np.int64), np.array(vs, dtype=float),
                             span=span,
                             before=None if before is None else before.get(m, []))
            for m, (ts, vs) in by.items()}


def url_instant(ts_ns: int) -> str:
    """``ts_ns`` as RFC 3339 UTC text to the nanosecond, which :func:`parse_instant` reads
    back exactly, for the plot URLs of the report: ``f"{ns / 1e9:.9f}"`` was rounded by
    float64 (the plot drawn over another range, its flagged reading left out: a 404), and
    integer epoch ns are read as seconds, ms or us below 1e17 (before 1973). A time before
    1970 (a default start an hour before an early ``end``) is 1970, which parse_instant
    takes and no stored reading precedes.

    >>> url_instant(1_700_000_000_999_999_999)
    '2023-11-14T22:13:20.999999999Z'
    >>> parse_instant(url_instant(1_000_000_007), "start")
    1000000007
    """
    from datetime import UTC, datetime

    s, frac = divmod(max(ts_ns, 0), 10**9)
    return datetime.fromtimestamp(s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _flagged(issues: dict[str, Any]) -> dict[str, int]:
    """Counts of what is flagged in one metric's issues (empty when nothing is)."""
    counts = {k: int(v.sum()) for k, v in issues["flags"].items() if v.any()}
    if issues["gaps"]:
        counts["gaps"] = len(issues["gaps"])
    return counts


def _report(store: Any, device_id: str, start_ns: int, end_ns: int | None,
            limit: int | None = None, now_ns: int | None = None) -> dict[str, Any]:
    """The quality report of the device's readings in ``[start_ns, end_ns)``, of at most
    ``limit`` (default :data:`MAX_READINGS`) of them, the newest, judged over that range
    (:func:`_span`, ``now_ns`` its now)."""
    from edgewise.quality.report import device_report
    from edgewise.store.newest import newest_rows
    from edgewise.telemetry import Reading

    limit = MAX_READINGS if limit is None else limit
    rows, start_ns, truncated = newest_rows(store, device_id, None, start_ns, end_ns, limit)
    summary = _summary(store, device_id)
    span = _span(summary, start_ns, end_ns, now_ns)
    metrics = summary.metrics if summary is not None else ()
    before = _history(store, device_id, [*metrics, *(m for m, _, _ in rows)], span)
    rep = device_report([Reading(device_id, m, t, v) for m, t, v in rows], span=span,
                        metrics=metrics, before=before)
    rep["device_id"] = device_id
    rep["truncated"] = truncated
    rep["reported_start"] = format_ns(start_ns)
    rng = f"start={url_instant(start_ns)}" + (
        f"&end={url_instant(end_ns)}" if end_ns is not None else "")
    rep["plots"] = [
        {"metric": m, "flagged": counts,
         "url": f"/v1/devices/{quote(device_id, safe='')}/quality/plots/"
                f"{quote(m, safe='')}.png?{rng}"}
        for m, issues in sorted(_issues(rows, span, before).items())
        if (counts := _flagged(issues))
    ]
    return rep


def _range(start: str | None, end: str | None) -> tuple[int, int | None]:
    end_ns = parse_instant(end, "end")
    start_ns = parse_instant(start, "start")
    if start_ns is None:
        start_ns = (end_ns if end_ns is not None else time.time_ns()) - DEFAULT_WINDOW_NS
    if end_ns is not None and end_ns <= start_ns:
        raise Problem(
            422, "Invalid query parameter",
            f"Query parameter 'end' must be after 'start' ({shorten(start)!r}). Got "
            f"{shorten(end)!r} instead.",
            field="end", value=end, allowed="a time after start", reason="bad_range",
        )
    return start_ns, end_ns


#: The largest UTC offset a plot takes, in minutes either way (real ones are -12 h to +14 h).
MAX_TZ_OFFSET_MIN = 18 * 60


def _plot(store: Any, device_id: str, metric: str, start_ns: int, end_ns: int | None,
          tz_offset_min: int = 0, tz: str | None = None) -> bytes:
    import tempfile
    from pathlib import Path as FilePath

    from edgewise.quality.plot import plot_issues
    from edgewise.store.newest import newest_rows

    if storable(metric):  # a NUL character is no metric's: its 404, not the store's 503
        rows, start_ns, _ = newest_rows(store, device_id, metric, start_ns, end_ns,
                                        MAX_READINGS)
        span = _span(_summary(store, device_id), start_ns, end_ns)
        before = _history(store, device_id, [metric] if rows else [], span)
        issues = _issues(rows, span, before).get(metric)
    else:
        issues = None
    if issues is None or not _flagged(issues):
        raise Problem(
            404, "No quality plot",
            f"Device {device_id!r} has no flagged readings or gaps of metric "
            f"{shorten(metric)!r} in the range"
            + ("" if issues is not None else " (it sent no such metric there)") + ".",
            field="metric", value=metric, allowed="a metric listed under 'plots' by "
            f"GET /v1/devices/{device_id}/quality for the same range", reason="no_plot",
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = plot_issues(device_id, metric, issues, FilePath(tmp) / "plot.png",
                               tz_offset_min=tz_offset_min, tz=tz)
        except Exception as exc:  # matplotlib's errors are of many kinds: a problem, no 500
            raise Problem(
                422, "Quality plot not drawn",
                f"The plot of device {device_id!r} metric {shorten(metric)!r} in the range "
                f"could not be drawn ({type(exc).__name__}: {exc}); its figures are in "
                f"GET /v1/devices/{device_id}/quality.",
                field="metric", value=metric, allowed="a metric and range whose readings "
                "can be drawn", reason="plot_failed",
            ) from None
        return path.read_bytes()


@router.get(
    "/v1/devices/{device_id}/quality",
    summary="A device's data-quality report (viewer)",
    description="Completeness, timeliness, validity and duplicate, conflict, out-of-order, "
    "spike, stuck and gap counts per metric over the stored readings in [start, end) "
    "(default: the last hour; RFC 3339 or epoch seconds), and under `ingest` what the "
    "gateway's streaming cleaner removed or flagged, by reason, since it started. At most "
    f"{MAX_READINGS:,} readings are read: where the range holds more, the report covers "
    "the newest part of it that holds at most that many, `truncated` is true and "
    "`reported_start` is where that part starts (else `start`); `plots` are of that part: "
    "one per metric with readings there and something flagged (a metric silent over the "
    "whole range has its gap in `metrics` but no plot, as there is no series to draw). "
    "A metric with fewer than two readings in the range is judged by the spacing of its "
    "newest readings before it, and the silence before its first reading there is counted "
    "from its last one before (a metric with none before the range is judged from its "
    "first reading, as a device is from its first); where no spacing is known (one reading "
    "ever), its `completeness` and `timeliness` are null and the summary's means leave it "
    "out. `drift` is null where too few valid readings (under 20) measure it, and for a "
    "counter or a two-state series. `unchanged` is true for a metric whose valid readings "
    "(two or more) are all one value, a frozen sensor or a setpoint that held (from 20 "
    "readings on, every one of them is counted `stuck`); the summary's `unchanged` counts "
    "such metrics.",
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
    start_ns, end_ns = _range(start, end)
    if not await run_in_threadpool(known_device, security, store, device_id):
        raise not_found(device_id)
    rep = await run_in_threadpool(_report, store, device_id, start_ns, end_ns)
    rep["start"] = format_ns(start_ns)
    rep["end"] = format_ns(end_ns)
    rep["ingest"] = await run_in_threadpool(pipeline.quality_counts, device_id)
    return rep


@router.get(
    # :path, because a metric name may hold '/' (METRIC_NAME_RE): the URL's %2F is decoded
    # before routing, and a plain segment left 'a/b.png' with no route (404)
    "/v1/devices/{device_id}/quality/plots/{metric:path}.png",
    summary="PNG of one metric's flagged quality issues (viewer)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
    description="The metric's series over [start, end) (default: the last hour) with its "
    "invalid, spike and stuck readings marked and its gaps shaded, its time axis in the IANA "
    "zone `tz` (each reading at its own offset, across DST changes too), else in UTC or "
    "`tz_offset_min` minutes east of it (named on the axis). 404 when the metric has "
    "nothing flagged there, or no reading there (silent over the whole range: the report "
    "lists it under `metrics` with 0 readings and one gap, but no series can be drawn); the "
    "quality report's `plots` lists the metrics that have a plot. At "
    f"most {MAX_READINGS:,} readings are drawn: the newest part of the range that holds "
    "at most that many.",
)
async def quality_plot(
    who: Viewer,
    store: StoreDep,
    security: SecurityDep,
    device_id: Annotated[str, Path(description="The device id.")],
    metric: Annotated[str, Path(description="The metric name.")],
    start: Annotated[str | None, Query(description="Range start, inclusive.")] = None,
    end: Annotated[str | None, Query(description="Range end, exclusive.")] = None,
    tz_offset_min: Annotated[int | None, Query(
        ge=-MAX_TZ_OFFSET_MIN, le=MAX_TZ_OFFSET_MIN,
        description="The time axis' offset from UTC in minutes east (330 for UTC+05:30, "
        "-300 for UTC-05:00); 0, UTC, by default.")] = None,
    tz: Annotated[str | None, Query(
        description="The time axis' IANA time zone (Europe/Berlin), each reading at its own "
        "offset; instead of tz_offset_min, which is one offset for the whole axis.")] = None,
) -> Response:
    start_ns, end_ns = _range(start, end)
    if tz is not None:
        if tz_offset_min is not None:
            raise Problem(
                422, "Invalid query parameter",
                f"Give tz ({shorten(tz)!r}) or tz_offset_min ({tz_offset_min}), not both: "
                "the zone has its own offsets.", field="tz_offset_min", value=tz_offset_min,
                allowed="absent when tz is given", reason="invalid")
        from edgewise.quality.plot import time_zone

        try:
            time_zone(tz)
        except ValueError as exc:
            raise Problem(
                422, "Invalid query parameter", f"Query parameter 'tz': {exc}.", field="tz",
                value=shorten(tz), allowed="an IANA time zone name such as Europe/Berlin, "
                "America/New_York or UTC", reason="invalid") from None
    if not await run_in_threadpool(known_device, security, store, device_id):
        raise not_found(device_id)
    png = await run_in_threadpool(_plot, store, device_id, metric, start_ns, end_ns,
                                  tz_offset_min or 0, tz)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
