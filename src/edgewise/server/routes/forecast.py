"""A device metric's forecast: :class:`~edgewise.models.forecast.Forecaster` on its stored
history, fitted on demand and cached.

``GET /v1/devices/{id}/forecast?metric=M&horizon=H`` fits a Forecaster (``horizon`` steps,
1 to :data:`MAX_HORIZON`, default 48) on the metric's readings of the :data:`WINDOW_DAYS`
days up to the device's newest reading, and answers the ``horizon`` steps after the last
one with their 90% interval (a bound is ``null`` where it is unbounded: too few known
values in the history's tail to calibrate a finite one), the grid step, the season found
and the history used. A window of more than :data:`MAX_READINGS` readings is averaged by
the store into buckets of the smallest common step (1 s, 2 s, 5 s… 1 h…) that keeps it
within that many, so a fit costs about a second whatever the metric's rate.

Fitting costs about a second (one CPU thread), so fitted models are kept per (device,
metric, horizon) in :class:`ForecastCache` (one per app, at most :data:`MAX_ENTRIES`, the
least recently used dropped first): a request is answered from the cache until the metric
has a reading in a grid step after the cached history's last one, or one stored late into
the span it was fitted on (a backlog sent after newer readings), or :data:`TTL_S` has
passed; then the model is refitted. Two requests for one key fit once (the second waits
for the first); at most :data:`MAX_FITS` fits run at once per app, and a request that has
not had its turn (its key's, then a fit slot) within :data:`FIT_WAIT_S` is a 429 with
``Retry-After`` (many metrics, or one metric many times, asked at once must not take every
threadpool thread from the other routes). Failures are never
cached. ``DELETE /v1/devices/{id}`` drops the device's
models (:func:`forget_device`, wired by :func:`~edgewise.server.app.create_app`), and a fit
that was running then keeps nothing (:attr:`~edgewise.server.fitting.FitCache.generation`,
as the fleet groups do), even when the id is registered again before the fit ends.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from edgewise.errors import EdgewiseError
from edgewise.models.forecast import Forecaster, TooLittleHistoryError
from edgewise.server.deps import SecurityDep, StoreDep, Viewer
from edgewise.server.fitting import (
    FitCache,
    bucket_s,
    busy,
    deadline,
    fit_slot,
    thread_turn,
)
from edgewise.server.problems import Problem
from edgewise.server.query import format_ns, unknown_metric
from edgewise.server.routes.devices import device_summary, known_device

__all__ = ["FIT_WAIT_S", "MAX_ENTRIES", "MAX_FITS", "MAX_HORIZON", "MAX_READINGS", "RECOUNT_S",
           "TTL_S", "WINDOW_DAYS", "ForecastCache", "cache_of", "forget_device", "router"]

router = APIRouter(tags=["readings"])

#: Days of history a forecast is fitted on, up to the device's newest reading.
WINDOW_DAYS = 28
#: Readings a fit takes at most; a denser window is averaged per bucket by the store.
MAX_READINGS = 20_000
#: Steps ahead a request may ask for.
MAX_HORIZON = 336
DEFAULT_HORIZON = 48
#: Seconds a fitted model answers before it is refitted, even with no newer reading.
TTL_S = 900.0
#: Seconds between two counts of a bucketed (more than MAX_READINGS readings) forecast's
#: span for readings stored late into it, while the device gets readings (of any metric):
#: a count of a million readings takes PostgreSQL about 0.17 s, a cached answer 1 ms.
RECOUNT_S = 60.0
#: Fitted models kept per app (the least recently used goes first).
MAX_ENTRIES = 256
#: Fits one app runs at once (each takes a CPU and a threadpool thread for about a second).
MAX_FITS = 2
#: Seconds a request waits for a fit slot before it is answered 429 with Retry-After.
FIT_WAIT_S = 10.0
_NS_PER_DAY = 86_400 * 10**9


@dataclass
class _Entry:
    answer: dict[str, Any]
    grid_end_ns: int  # the fitted grid's last step (its readings' nominal time)
    step_ns: int
    fitted_at: float  # time.monotonic()
    #: A reading at or after this time is new (it falls in a step after the grid's last):
    #: half a step after the last step for readings as stored, the end of the last bucket
    #: (its start + the bucket) for bucketed ones.
    new_from_ns: int
    #: The span of times read, ``[start, end)``, and how many readings of the metric it held
    #: then: a reading stored late into it (a backlog sent after newer readings) is new too.
    span: tuple[int, int] = (0, 0)
    readings: int = 0
    #: The device's readings (all metrics) when the span last held ``readings``: while it
    #: holds as many, nothing came late and the span is not counted again.
    device_readings: int = -1
    counted_at: float = 0.0  # time.monotonic() of the last count (or the fit)


class ForecastCache(FitCache[tuple[str, str, int], _Entry]):
    """Fitted forecasts per (device, metric, horizon), at most ``max_entries``; thread-safe.

    >>> c = ForecastCache(max_entries=2)
    >>> for k in ("a", "b", "c"):
    ...     c.put(("d", k, 1), _Entry({}, 0, 1, 0.0, 1))
    >>> sorted(k[1] for k in c.keys()), c.forget("d"), c.keys()
    (['b', 'c'], 2, [])
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, max_fits: int = MAX_FITS) -> None:
        super().__init__(max_entries, max_fits)

    def forget(self, device_id: str) -> int:
        """Drop every model of ``device_id``; return how many."""
        return self.drop(lambda key: key[0] == device_id)


def cache_of(app: Any) -> ForecastCache:
    """The app's forecast cache (made on first use)."""
    cache = getattr(app.state, "forecasts", None)
    if cache is None:
        cache = app.state.forecasts = ForecastCache()
    return cache  # type: ignore[no-any-return]


def forget_device(app: Any, device_id: str) -> int:
    """Drop the cached forecasts of a deleted device; return how many."""
    return cache_of(app).forget(device_id)


def _history(store: Any, device_id: str, metric: str, last_ns: int
             ) -> tuple[list[tuple[str, int, float]], int | None, tuple[int, int], int]:
    """The metric's readings in the window ending at ``last_ns``, the bucket (ns) they
    were averaged to (``None``: as stored), the window ``[start, end)`` and how many
    readings of the metric it held (counted before the buckets are read: one stored
    meanwhile makes the next request look again, rather than be missed)."""
    start, end = last_ns - WINDOW_DAYS * _NS_PER_DAY, last_ns + 1
    rows = store.query(device_id, metric, start, end, None, MAX_READINGS + 1)
    if len(rows) <= MAX_READINGS:
        return rows, None, (start, end), len(rows)
    bucket = bucket_s((last_ns - rows[0][1]) / 1e9, MAX_READINGS) * 10**9
    count = store.count_metric(device_id, metric, start, end)
    return (store.query(device_id, metric, start, end, bucket, MAX_READINGS + 1), bucket,
            (start, end), count)


def _too_little(device_id: str, metric: str, horizon: int, detail: str,
                steps: Any) -> Problem:
    return Problem(
        422, "Too little history to forecast",
        f"Cannot forecast metric {metric!r} of device {device_id!r} {horizon} steps ahead "
        f"from its last {WINDOW_DAYS} days of readings: {detail}",
        field="metric", value=metric,
        allowed=f"a metric with a longer history in the last {WINDOW_DAYS} days, or a "
        "shorter horizon", reason="too_little_history",
        extra={"history_steps": steps if isinstance(steps, int) else None},
    )


def _unfit(device_id: str, metric: str, horizon: int, exc: Exception) -> Problem:
    return Problem(
        422, "History cannot be forecast",
        f"Cannot forecast metric {metric!r} of device {device_id!r} {horizon} steps ahead "
        f"from its last {WINDOW_DAYS} days of readings: the forecaster cannot be fitted on "
        f"them ({type(exc).__name__}: {exc}).",
        field="metric", value=metric,
        allowed="a metric whose history the forecaster can be fitted on (the detail says "
        "what stopped it)", reason="unfit_history",
    )


def _fit(device_id: str, metric: str, horizon: int,
         rows: list[tuple[str, int, float]], bucket: int | None) -> _Entry:
    """Fit a Forecaster on ``rows``; raise a 422 problem when they cannot make one."""
    import numpy as np

    ts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
    values = np.fromiter((r[2] for r in rows), dtype=float, count=len(rows))
    if len(rows) < 2:
        raise _too_little(device_id, metric, horizon, f"it has {len(rows)} reading(s) there.",
                          len(rows))
    model = Forecaster(horizon=horizon, n_threads=1)
    try:
        model.fit(ts, values)
        out = model.predict()
    except TooLittleHistoryError as exc:  # too few steps: the steps it has, on its grid
        raise _too_little(device_id, metric, horizon, str(exc), exc.steps) from None
    except (EdgewiseError, ValueError, ArithmeticError) as exc:
        # any other history the model cannot take (a grid too large, too few training rows
        # in a gappy one, a fit the trees refuse) is the metric's data, not a server fault:
        # a 422 naming it, never a 500 (nor 'too little history' with a time for its steps)
        raise _unfit(device_id, metric, horizon, exc) from None
    times = out["time"].astype("int64").to_numpy()  # ns UTC
    answer = {
        "device_id": device_id, "metric": metric, "horizon": horizon,
        "step_s": model.step_ns_ / 1e9,
        "season": model.season_, "season_s": model.season_ * model.step_ns_ / 1e9
        if model.season_ > 1 else None,
        "interval": round(100 * (1 - model.alpha)),
        "history": {
            "window_days": WINDOW_DAYS, "start": format_ns(int(ts[0])),
            "end": format_ns(int(ts[-1])), "readings": len(rows), "steps": model.n_steps_,
            "spikes_left_out": model.n_spikes_,
            "bucket_s": None if bucket is None else bucket / 1e9,
        },
        "fitted_at": format_ns(time.time_ns()),
        "forecast": {
            "t": [int(t) / 1e9 for t in times],
            "time": [format_ns(int(t)) for t in times],
            "forecast": [_number(v) for v in out["forecast"]],
            "low": [_bound(v) for v in out["low"]],
            "high": [_bound(v) for v in out["high"]],
        },
    }
    grid_end, step = int(model.history_[0][-1]), int(model.step_ns_)
    # a bucket's time is its start: its readings run to start + bucket; a stored reading's
    # step holds the readings to half a step after its time
    new_from = grid_end + bucket if bucket is not None else grid_end + step - step // 2
    return _Entry(answer, grid_end, step, time.monotonic(), new_from)


def _number(value: float) -> float:
    """A forecast number for JSON, shortened: to 9 significant digits, and to no fewer than 6
    decimals (a metric in metres of a few micrometres keeps its digits: 6 decimals alone
    made 5.47e-06 into 5e-06 and a band into one value; a counter near 1.7e9 keeps its
    units, as 9 digits alone would not).

    >>> _number(1.23456789012), _number(5.46944538e-06), _number(1_700_000_123.4567891)
    (1.23456789, 5.46944538e-06, 1700000123.456789)
    """
    v = float(value)
    return round(v, 6) if abs(v) >= 1e3 else float(f"{v:.9g}")


def _bound(value: float) -> float | None:
    """An interval bound for JSON (:func:`_number`): ``None`` (``null``) where it is
    unbounded (infinite: the calibration held too few residuals for a finite bound); JSON
    holds no infinity.

    >>> _bound(1.23456789012), _bound(float("inf")), _bound(float("-inf"))
    (1.23456789, None, None)
    """
    return _number(value) if math.isfinite(value) else None


def _busy() -> Problem:
    return busy("Forecasts busy", f"{MAX_FITS} forecasts are being fitted", FIT_WAIT_S,
                "forecasts_busy", 2)


def _fresh(store: Any, device_id: str, metric: str, entry: _Entry | None,
           device_readings: int) -> bool:
    """Whether a cached fit still answers: younger than the TTL, no reading of the metric
    in a step after its grid's last one (a step holds the readings from half a step before
    its time to half a step after; a bucket, those from its start to the next bucket's:
    :attr:`_Entry.new_from_ns`), and none stored late into the span it was fitted on (a
    store-and-forward agent's backlog, sent after newer readings: the forecast ignored
    hours the chart showed until the TTL passed). That span is counted (on the index) only
    when the device's readings (``device_readings``, all its metrics) changed since it
    last was, and a bucketed one's (a count of up to millions) once a :data:`RECOUNT_S`
    at most."""
    if entry is None or time.monotonic() - entry.fitted_at >= TTL_S:
        return False
    if store.query(device_id, metric, entry.new_from_ns, None, None, 1):
        return False
    if device_readings != entry.device_readings:
        now = time.monotonic()
        if entry.readings > MAX_READINGS and now - entry.counted_at < RECOUNT_S:
            return True  # counted a moment ago; a large span is counted once a RECOUNT_S
        if store.count_metric(device_id, metric, *entry.span) != entry.readings:
            return False
        # the span as fitted: not counted again until the device has another reading
        entry.device_readings, entry.counted_at = device_readings, now
    return True


def _forecast(request: Request, store: Any, security: Any, device_id: str, metric: str,
              horizon: int, until: float | None = None) -> dict[str, Any]:
    """The forecast, from the cache or fitted; waiting for the key's turn and a fit slot
    until ``until`` (a :func:`~edgewise.server.fitting.deadline`; default: ``FIT_WAIT_S``
    from now)."""
    cache = cache_of(request.app)
    # taken before the history is read: a DELETE of the device (forget_device) while the fit
    # runs moves it on, and the fit, possibly of the deleted device's readings, is not kept
    # (the id may be registered again before the fit ends: known_device alone passes then)
    generation = cache.generation
    summary = device_summary(security, store, device_id, metric)  # it has the metric
    if summary.last_ns is None:  # and yet no reading
        raise unknown_metric(device_id, metric, sorted(summary.metrics))
    key = (device_id, metric, horizon)
    entry = cache.get(key)
    if _fresh(store, device_id, metric, entry, summary.readings):
        return {**entry.answer, "cached": True}  # type: ignore[union-attr]
    # one fit per key at a time; the others use its result. The wait for the key's turn and
    # then a fit slot ends at one deadline: a 429 after FIT_WAIT_S, however many wait before
    until = deadline(FIT_WAIT_S) if until is None else until
    with cache.key_turn(key, until, _busy):
        entry = cache.get(key)
        if _fresh(store, device_id, metric, entry, summary.readings):
            return {**entry.answer, "cached": True}  # type: ignore[union-attr]
        rows, bucket, span, count = _history(store, device_id, metric, summary.last_ns)
        with fit_slot(cache.fits, until, _busy):
            entry = _fit(device_id, metric, horizon, rows, bucket)
        # the device's readings as read before the history: a later one makes the next
        # request count the span again
        entry.span, entry.readings, entry.device_readings = span, count, summary.readings
        entry.counted_at = entry.fitted_at
        if known_device(security, store, device_id):  # deleted meanwhile: nothing kept
            cache.put(key, entry, generation)
    return {**entry.answer, "cached": False}


_TOO_LITTLE = ("Too little history (reason 'too_little_history'): the detail says how many "
               "steps of what length the forecast needs and how many the metric has.")


@router.get(
    "/v1/devices/{device_id}/forecast",
    summary="A device metric's forecast with its interval (viewer)",
    description=f"Fits a forecaster (boosted trees on lags, conformal 90% interval) on the "
    f"metric's readings of the last {WINDOW_DAYS} days up to the device's newest reading "
    f"(over {MAX_READINGS:,} readings: averaged per bucket of a common step), and answers "
    "the `horizon` steps after its last reading: `forecast.t` (epoch seconds), "
    "`forecast.time`, `forecast.forecast`, `forecast.low`, `forecast.high` (`null`: "
    "unbounded on that side, when the history's tail held too few known values to "
    "calibrate a finite bound), with `step_s`, "
    "`season` (steps per cycle; 1: none found) and the `history` used (`history.spikes_left_out`: "
    "readings left out as isolated spikes, as the quality report calls them). Fitting takes about "
    "a second; the fit is kept per (device, metric, horizon) and reused (`cached: true`) "
    "until the metric has a reading in a step after the fitted history's last (or one "
    "stored late within it), or for "
    f"{int(TTL_S)} s at most.",
    responses={404: {"description": "No device with that id (reason 'unknown_device'), or "
                     "the device has no readings of that metric (reason 'unknown_metric')."},
               422: {"description": "A bad parameter ('field' names it: 'horizon' out of "
                     f"1..{MAX_HORIZON}, 'metric' missing), or " + _TOO_LITTLE[0].lower()
                     + _TOO_LITTLE[1:] + " Or a history the forecaster cannot be fitted on "
                     "(reason 'unfit_history'): the detail says why."},
               429: {"description": f"{MAX_FITS} forecasts were being fitted for "
                     f"{FIT_WAIT_S:g} s (reason 'forecasts_busy'); retry after Retry-After."}},
)
async def forecast(
    who: Viewer, store: StoreDep, security: SecurityDep, request: Request,
    device_id: Annotated[str, PathParam(description="The device id.")],
    metric: Annotated[str, Query(min_length=1, max_length=256,
                                 description="The metric to forecast.")],
    horizon: Annotated[int, Query(ge=1, le=MAX_HORIZON,
                                  description="Steps ahead to forecast.")] = DEFAULT_HORIZON,
) -> dict[str, Any]:
    """The work runs in the threadpool (a fit never blocks the event loop), once one of the
    route's thread places is free (:func:`~edgewise.server.fitting.thread_turn`)."""
    until = deadline(FIT_WAIT_S)  # the wait for a thread place, the key's turn and a slot
    async with thread_turn(cache_of(request.app).threads, until, _busy):
        return await run_in_threadpool(_forecast, request, store, security, device_id,
                                       metric, horizon, until)
