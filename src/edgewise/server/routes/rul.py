"""A device's remaining useful life, from the newest RUL model in ``<data dir>/models``.

``edgewise train rul --data … --out <data dir>/models/rul-v1.ewm`` (any file whose name
starts with ``rul`` and that is an Edgewise RUL model file) makes this route answer: the
device's stored history is turned into the table the model was trained on (one row per
reading time of the metrics the model uses, one column per metric, the device as the unit
and the row number as the time column; another metric's readings, such as a link quality
stamped between the samples, are not read and add no rows) and the model predicts the
RUL at the last row with its interval;
``explanation`` says which sensors pushed it up or down (signed TreeSHAP contributions
summed per sensor, plus the largest per-feature ones; they sum to ``value - base``).
Without a model file, without readings, when the device lacks a metric the model needs
(``metrics_missing``), has a metric named like the model's unit or time column
(``metric_name_clash``), has a metric the model needs with no usable value
(``unscorable``), has had its old readings deleted (``history_trimmed``: retention,
``EDGEWISE_RETENTION_DAYS``, or the store's ``delete_before`` took its readings before a
time, which the store records per device, ``Store.trimmed_before``; the rows kept would be
numbered from 1 and scored as a younger unit's, as the model reads a unit's age and
whole-history trends from its rows), has a history longer than :data:`MAX_ROWS` rows
(``history_too_long``, naming the count and the limit: those features read every row, so the
route reads the whole history of the metrics the model uses and no more than that), or
when no model file loads (``bad_model``: damaged, truncated even inside its header, another
format version, not a RUL model), it answers
``{"rul": null, "reason": …, "detail": …}`` (RUL is unavailable, not an error: the
dashboard asks for every device); an unknown device is a 404 problem; at most
:data:`MAX_FITS` devices are scored at once, one request per device (the others wait for its
answer), and a request that has not had its turn (the device's, then a free slot) within
:data:`FIT_WAIT_S` is a 429 (reason ``rul_busy``) with ``Retry-After``.
A newer model file that does not load is passed over for the newest that does
(``model`` names the one used, ``skipped`` those passed over and why), so one damaged file
never takes RUL away from the fleet; write model files whole (:meth:`RULModel.save` writes a
temporary file and renames it).

One wild reading (a used metric out of the model's domain for at most
:data:`~edgewise.models.rul.GLITCH_ROWS` rows, with readings in the domain before and after
it) would make a device unscorable for good, since the whole history is read and a store's
history cannot be edited: such lone glitches, at most one per 100 rows, are passed over
(:meth:`RULModel.pass_over_glitches <edgewise.models.rul.RULModel.pass_over_glitches>`: the
metric's previous value is carried over them) and listed in ``passed_over`` (metric, ``ts``,
``row``, ``value``, ``z``; empty when none). A device that starts or ends out of the domain,
stays there longer or glitches more often is ``unscorable``.

The RUL, ``low`` and ``high`` count readings (``rul_unit`` says so; ``time_column`` names
the model's time column, ``step_s`` the mean seconds between the device's readings, so
``rul * step_s`` is about the seconds left) from ``as_of``, the time of the last row scored:
the last reading of the metrics the model uses, which is before the device's last reading
where those metrics stopped and others are still sent. A metric the model does not use (a
sensor constant in training, which it dropped) need not be sent.

The model predicts the RUL capped at its ``cap`` (the answer says which): ``rul_open``
true means the RUL is at least ``rul`` (the prediction reached the cap), ``high_open``
true means the interval has no upper bound (``high`` is the cap; ``null`` for a model
without a cap whose calibration held too few residuals for a finite bound).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from edgewise.server.deps import SecurityDep, SettingsDep, StoreDep, Viewer
from edgewise.server.fitting import (
    FitCache,
    busy,
    deadline,
    fit_slot,
    thread_turn,
)
from edgewise.server.query import format_ns
from edgewise.server.routes.devices import known_device, not_found

__all__ = ["MAX_ROWS", "find_model", "forget_device", "router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["quality"])

_cache: dict[str, Any] = {}
#: Why a model file (by path and mtime) did not load, so it is not read again on every poll.
_failed: dict[str, str] = {}
_lock = threading.Lock()
#: A device's answer is reused this long (the dashboard polls every few seconds and the
#: prediction reads the device's whole history).
TTL_S = 15.0
#: Answers kept at most (the least recently asked dropped first): one per device asked.
MAX_ANSWERS = 10_000
#: Each device's answer with when it was computed (``time.monotonic()``), per device and
#: model files (:func:`_predict`). Its ``key_lock`` lets one request per key compute while
#: the others wait for its answer; :func:`forget_device` drops a device's answers and bumps
#: its ``generation``, so an answer computed while the device was deleted (it may read the
#: readings being purged) is not kept.
#: Devices scored at once (each reads a whole history and takes a CPU and a threadpool
#: thread, seconds for a long one): requests for other devices beyond these wait.
MAX_FITS = 2
#: Seconds a request waits for its turn (its key's, then a scoring slot) before it is answered
#: 429 with Retry-After.
FIT_WAIT_S = 10.0
#: Rows (reading times of the metrics the model uses) of the longest history scored: the
#: model's features read every row since the first (the unit's age and each sensor's
#: whole-history slope), so the whole history is read; a longer one is answered ``rul: null``,
#: reason ``history_too_long``, rather than taking seconds and a GB per request (3 metrics,
#: 1M readings each: 12 s and +1.5 GB before this cap; at the cap, 200,000 rows: 2 s, +230 MB).
MAX_ROWS = 200_000
_answers: FitCache[tuple[str, str], tuple[float, dict[str, Any]]] = FitCache(
    MAX_ANSWERS, max_fits=MAX_FITS)


def forget_device(device_id: str) -> int:
    """Drop the cached RUL answers of a deleted device (what ``DELETE /v1/devices/{id}``
    calls), so a device registered again under its id is answered from its own readings
    (``no_history`` until it has some), never the deleted one's prediction. How many
    answers were dropped.

    >>> _answers.put(("pump-9", ""), (0.0, {"rul": 1.0}))
    >>> forget_device("pump-9"), _answers.get(("pump-9", ""))
    (1, None)
    """
    return _answers.drop(lambda key: key[0] == device_id)


def model_files(data_dir: Path) -> list[Path]:
    """The RUL model files under ``data_dir/models`` (every file named ``rul*``), newest
    first. Whether each loads is :func:`_load`'s to find out: one that does not (cut short,
    even inside its header; damaged; not a RUL model) is passed over and named in
    ``skipped``, or answered ``bad_model`` when none loads, never left out unsaid.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> (d / "models").mkdir()
    >>> _ = (d / "models" / "rul-v1.ewm").write_bytes(b"EWM")  # cut inside its header
    >>> [p.name for p in model_files(d)]
    ['rul-v1.ewm']
    """
    found = []
    for p in (Path(data_dir) / "models").glob("rul*"):
        try:
            if p.is_file():
                found.append((p.stat().st_mtime_ns, p.name, p))
        except OSError:  # removed meanwhile
            continue
    return [p for _, _, p in sorted(found, reverse=True)]


def find_model(data_dir: Path) -> Path | None:
    """The newest RUL model file under ``data_dir/models`` (name ``rul*``), if any."""
    found = model_files(data_dir)
    return found[0] if found else None


def _file_key(path: Path) -> str:
    """Which version of the file ``path`` holds: its mtime alone named a file rewritten in
    place with the same mtime (``cp -p``, ``rsync -a``, ``tar`` keep the source's; FAT
    keeps 2 s, older kernels a clock tick) as the damaged copy it replaced, whose failure
    (:data:`_failed`) and answers were then kept for good; its size, inode and ctime (a
    ``chmod`` moves it) tell them apart."""
    st = path.stat()
    return f"{path}:{st.st_mtime_ns}:{st.st_size}:{st.st_ino}:{st.st_ctime_ns}"


#: Why a model file that could not be opened or read now is passed over (``path``, ``why``).
_UNREADABLE = ("Model file {path!r} cannot be read now ({why}): it is not known to be "
               "damaged; let the gateway read it (its permissions, the open files the "
               "gateway may hold), then ask again")


def _load(path: Path) -> Any:
    """The model in ``path`` (kept while the file is unchanged); raises
    :class:`~edgewise.models.rul.ModelFileError` saying why when it does not load (once per
    version of the file: a damaged file is not read again on every poll). A file that
    cannot be opened or read (:class:`OSError`: no open files left, no permission) is not
    damaged: said so, and read again on the next request, never kept as failed (it was
    answered "damaged or truncated, remove the damaged file" for good once the gateway ran
    out of open files for a moment)."""
    from edgewise.models.rul import ModelFileError, load_model

    key = _file_key(path)
    with _lock:
        if key in _failed:
            raise ModelFileError(_failed[key])
        if key not in _cache:
            try:
                model = load_model(path)
            except ModelFileError as exc:
                why = str(exc)
            except OSError as exc:  # the file's reading, not its content: not kept
                why = _UNREADABLE.format(path=str(path),
                                         why=f"{type(exc).__name__}: {exc.strerror or exc}")
                log.warning("RUL model passed over: %s", why)
                raise ModelFileError(why) from None
            except Exception as exc:  # unpickling can raise anything
                why = (f"Model file {str(path)!r} does not load ({type(exc).__name__}: "
                       f"{exc or 'no detail'}): it is damaged or truncated.")
            else:
                _cache.clear()
                _cache[key] = model
                return model
            if len(_failed) > 100:
                _failed.clear()
            _failed[key] = why
            log.warning("RUL model passed over: %s", why)
            raise ModelFileError(why)
        return _cache[key]


def _newest_loading(paths: list[Path]) -> tuple[Any, Path | None, list[dict[str, str]]]:
    """The first of ``paths`` (newest first) that loads, with it, and the name and reason of
    each newer one passed over; ``(None, None, skipped)`` when none loads."""
    from edgewise.models.rul import ModelFileError

    skipped: list[dict[str, str]] = []
    for path in paths:
        try:
            return _load(path), path, skipped
        except (ModelFileError, OSError) as exc:  # OSError: removed or unreadable meanwhile
            # the server's own path is for its log (where _load says it), not a viewer's answer
            skipped.append({"model": path.name, "detail": str(exc).replace(
                str(path), f"<data dir>/models/{path.name}")})
    return None, None, skipped


def _none(device_id: str, reason: str, detail: str, model: str | None = None) -> dict[str, Any]:
    return {"device_id": device_id, "model": model, "rul": None, "low": None, "high": None,
            "reason": reason, "detail": detail}


def _predict(store: Any, data_dir: Path, device_id: str,
             until: float | None = None) -> dict[str, Any]:
    """The device's answer, from the cache or scored; waiting for its turn until ``until``
    (a :func:`~edgewise.server.fitting.deadline`; default: ``FIT_WAIT_S`` from now)."""
    paths = model_files(data_dir)
    if not paths:
        return _none(device_id, "no_model",
                     "No RUL model file (rul*) in the gateway's '<data dir>/models'; make "
                     "one with 'edgewise train rul --out <data dir>/models/rul-v1.ewm'.")
    try:
        key = (device_id, "|".join(_file_key(p) for p in paths))
    except OSError:  # a file removed meanwhile: answer without the cache
        key = (device_id, "")
    # one computation per key at a time: requests arriving while it runs (the dashboard's
    # polls, several viewers) wait for it and answer from the cache it fills. The wait for
    # the key's turn and then a slot ends at one deadline: a 429 after FIT_WAIT_S, however
    # many requests for the device wait before this one
    until = deadline(FIT_WAIT_S) if until is None else until
    with _answers.key_turn(key, until, _busy):
        generation = _answers.generation
        hit = _answers.get(key)
        if hit is not None and time.monotonic() - hit[0] < TTL_S:
            return hit[1]
        with fit_slot(_answers.fits, until, _busy):
            answer = _score(store, paths, device_id)
        # kept unless a device was deleted while this was computed (FitCache.drop)
        _answers.put(key, (time.monotonic(), answer), generation)
    return answer


def _busy() -> Any:
    return busy("RUL busy", f"{MAX_FITS} devices' RUL are being scored", FIT_WAIT_S,
                "rul_busy", 5)


def _bad_model(device_id: str, skipped: list[dict[str, str]]) -> dict[str, Any]:
    """The answer when no model file loads: what is wrong with each (newest first)."""
    whys = "; ".join(s["detail"].rstrip(".") for s in skipped)
    # a file that is intact but needs a package not installed, or one that could not be
    # read now, is not to be removed
    fix = (" Install the package named, then ask again." if all(
        "pip install" in s["detail"] for s in skipped) else "" if all(
        "cannot be read now" in s["detail"] for s in skipped) else " Write a new one with "
        "'edgewise train rul --out <data dir>/models/rul-v1.ewm', or remove the damaged file.")
    answer = _none(device_id, "bad_model", f"No RUL model file loads: {whys}.{fix}",
                   skipped[0]["model"])
    answer["skipped"] = skipped
    return answer


def _score(store: Any, paths: list[Path], device_id: str) -> dict[str, Any]:
    """The answer for ``device_id`` from the newest of ``paths`` that loads."""
    from edgewise.models.history import trimmed_reason

    trimmed = store.trimmed_before(device_id)
    if trimmed is not None:  # said without reading the rows or loading a model
        return _none(device_id, "history_trimmed", "The RUL model cannot score device "
                     f"{device_id!r}: {trimmed_reason(trimmed)}.", paths[0].name)
    summary = store.device(device_id)
    if summary is None or not summary.readings:  # said without loading a model
        return _none(device_id, "no_history", f"Device {device_id!r} has no stored readings.",
                     paths[0].name)
    model, path, skipped = _newest_loading(paths)
    if model is None or path is None:
        return _bad_model(device_id, skipped)
    answer = _unreadable(model, path, summary.metrics, device_id)
    if answer is None:
        rows = _history(store, model, path, device_id)
        answer = rows if isinstance(rows, dict) else _fit(model, path, rows, device_id,
                                                          summary.metrics)
    if skipped:  # say which newer files were passed over, and why
        answer["skipped"] = skipped
    return answer


def _too_long(device_id: str, path: Path, rows: int, metric: str | None = None) -> dict[str, Any]:
    """The ``history_too_long`` answer: the history has ``rows`` rows, or more than
    :data:`MAX_ROWS` with ``metric`` (that metric's readings alone are more)."""
    count = f"{rows:,} rows" if metric is None else (
        f"over {MAX_ROWS:,} rows ({metric!r} alone has over {MAX_ROWS:,} readings)")
    return _none(device_id, "history_too_long", f"Device {device_id!r} has a history of "
                 f"{count}, above the limit of {MAX_ROWS:,} rows this route scores (a row is a "
                 f"reading time of the metrics the RUL model {path.name!r} uses; the model "
                 "reads every row since the first, so a longer history takes too long here). "
                 f"Score it with 'edgewise predict rul --data <data dir> --devices {device_id} "
                 f"--model <data dir>/models/{path.name}'.", path.name)


def _history(store: Any, model: Any, path: Path,
             device_id: str) -> list[tuple[str, int, float]] | dict[str, Any]:
    """The device's readings of the metrics ``model`` uses, every one (its features read the
    whole history), or the ``history_too_long`` answer as soon as one metric has more than
    :data:`MAX_ROWS` (each of those readings is a row); at most ``MAX_ROWS + 1`` readings of
    each metric are read."""
    rows: list[tuple[str, int, float]] = []
    for metric in model.required_columns()[2:]:
        got = store.query(device_id, metric, None, None, None, MAX_ROWS + 1)
        if len(got) > MAX_ROWS:
            return _too_long(device_id, path, len(got), metric)
        rows += got
    return rows


def _unreadable(model: Any, path: Path, metrics: Any, device_id: str) -> dict[str, Any] | None:
    """The answer when the device's ``metrics`` (every one it sends) cannot make the model's
    table: one named like its unit or time column (``metric_name_clash``), or one it uses
    missing (``metrics_missing``); ``None`` when they can."""
    from edgewise.errors import InvalidParameterError
    from edgewise.models.history import device_frame

    names = (model.unit_column, model.time_column)
    try:  # device_frame's check, on a stand-in row of each metric so named
        device_frame([(m, 0, 0.0) for m in metrics if m in names], device_id, *names)
    except InvalidParameterError as exc:
        return _none(device_id, "metric_name_clash", f"The RUL model {path.name!r} cannot "
                     f"read this device's history: {exc}", path.name)
    # only what the prediction rests on: a sensor constant in training (dropped by the
    # model) need not be sent
    missing = [c for c in model.required_columns()[2:] if c not in set(metrics)]
    if missing:
        return _none(device_id, "metrics_missing", f"The RUL model {path.name!r} needs "
                     f"metric(s) {missing} that device {device_id!r} does not send.", path.name)
    return None


def _fit(model: Any, path: Path, rows: Any, device_id: str,
         metrics: Any = None) -> dict[str, Any]:
    """The RUL of ``model`` (loaded from ``path``) on the device's stored ``rows``;
    ``metrics``: every metric the device sends (default: those in ``rows``).

    Only the rows of the metrics the model uses make its table: a row is a reading time,
    so another metric's readings (a link-quality value stamped between the samples) would
    add rows, making the unit look older and its trends flatter."""
    from edgewise.explain.rul import by_sensor, rul_explanations
    from edgewise.models.history import device_frame, reading_step_s

    if metrics is None:
        metrics = {r[0] for r in rows}
    unreadable = _unreadable(model, path, metrics, device_id)
    if unreadable is not None:
        return unreadable
    needed = model.required_columns()[2:]
    used = set(needed)
    rows = [r for r in rows if r[0] in used]
    wide = device_frame(rows, device_id, model.unit_column, model.time_column)
    if len(wide) > MAX_ROWS:
        return _too_long(device_id, path, len(wide))
    wide = wide[[model.unit_column, model.time_column, *needed]]
    wide, glitches = model.pass_over_glitches(wide)
    why = model.unscorable(wide).get(device_id)
    if why is not None:
        return _none(device_id, "unscorable", f"The RUL model {path.name!r} cannot score "
                     f"device {device_id!r}: {why}.", path.name)
    point, low, high = model.predict_interval(wide)
    answer = {"device_id": device_id, "model": path.name, "rul": round(float(point[0]), 2),
              "low": round(float(low[0]), 2),
              "high": round(float(high[0]), 2) if math.isfinite(high[0]) else None,
              "interval": round(100 * (1 - model.alpha)), "rows": len(wide), "reason": None,
              "cap": model.cap, "rul_open": bool(model.open_above(point)[0]),
              "high_open": bool(model.open_above(high)[0]), "explanation": None,
              "rul_unit": "readings", "time_column": model.time_column,
              # the last row scored: where the used metrics stopped while the device sends
              # others, the RUL is as of then, not of the device's last reading
              "as_of": format_ns(max(r[1] for r in rows)),
              "step_s": reading_step_s(rows), "passed_over": _passed_over(
                  glitches.get(device_id, []), rows, model.time_column)}
    if "gbm" in model.core_:
        ex = rul_explanations(model, wide)[device_id]
        answer["explanation"] = _explanation_json(ex, by_sensor(ex), float(point[0]))
    return answer


def _passed_over(glitches: list[dict[str, Any]], rows: Any,
                 time_column: str) -> list[dict[str, Any]]:
    """The glitch readings :meth:`RULModel.pass_over_glitches` blanked, each with its
    metric, reading time (the row numbers count the distinct reading times of ``rows``),
    value and z-score."""
    if not glitches:
        return []
    times = sorted({r[1] for r in rows})
    return [{"metric": g["sensor"], "ts": format_ns(times[int(g[time_column]) - 1]),
             "row": int(g[time_column]), "value": g["value"], "z": round(g["z"], 2)}
            for g in glitches]


def _explanation_json(ex: Any, sensors: Any, point: float) -> dict[str, Any]:
    """TreeSHAP of the boosted member: per sensor (folded) and per window feature, signed.

    ``base + sum(contributions) == value``; ``value`` is the boosted member's share of the
    prediction (the whole prediction for the default model), before clipping to [0, cap];
    ``clipped`` is ``rul - value`` (0 unless the prediction was clipped or it is an ensemble).
    """
    def top(e: Any, k: int) -> list[dict[str, float | str]]:
        return [{"name": n, "value": round(c, 4)} for n, c in e.top(k)]

    return {"method": "treeshap", "value": round(ex.value, 4), "base": round(ex.base, 4),
            "contributions": {n: round(c, 6) for n, c in sensors.contributions.items()},
            "top": top(sensors, 8), "features_top": top(ex, 10),
            "clipped": round(point - ex.value, 4)}


@router.get("/v1/devices/{device_id}/rul",
            summary="A device's remaining useful life with its interval (viewer)",
            description="RUL at the device's last reading of the metrics the model uses "
            "(`as_of`, UTC), in the model's time steps (readings here), with the model's "
            "interval (`interval` percent). `rul: null` "
            "with a `reason` and a `detail` where it cannot be scored: `no_model`, "
            "`bad_model` (no `rul*` file loads; `skipped` lists each with why), "
            "`no_history`, `history_trimmed`, `metric_name_clash`, `metrics_missing`, "
            f"`unscorable`, or `history_too_long` (more than {MAX_ROWS:,} rows, reading times "
            "of the metrics the model uses; the detail names the count and the limit). A "
            "newer `rul*` file that does not load is passed over and listed in `skipped`. "
            "`passed_over` lists lone glitch readings (out of the model's domain for at "
            "most 3 rows) that were left out, each with its metric, time, value and z.",
            responses={429: {"description": f"No turn within {FIT_WAIT_S:g} s: {MAX_FITS} "
                             "devices were being scored, or this device by another request "
                             "(reason 'rul_busy'); retry after Retry-After."}})
async def rul(
    who: Viewer, store: StoreDep, security: SecurityDep, settings: SettingsDep,
    device_id: Annotated[str, PathParam(description="The device id.")],
) -> dict[str, Any]:
    """The device's RUL from the newest RUL model file that loads (see the description)."""
    if not await run_in_threadpool(known_device, security, store, device_id):
        raise not_found(device_id)
    until = deadline(FIT_WAIT_S)  # the wait for a thread, the device's turn and a slot
    async with thread_turn(_answers.threads, until, _busy):
        return await run_in_threadpool(_predict, store, settings.data_dir, device_id, until)
