"""A device's remaining useful life, from the newest RUL model in ``<data dir>/models``.

``edgewise train rul --data … --out <data dir>/models/rul-v1.ewm`` (any file whose name
starts with ``rul`` and that is an Edgewise RUL model file) makes this route answer: the
device's stored history is turned into the table the model was trained on (one row per
reading time, one column per metric, the device as the unit and the row number as the
time column) and the model predicts the RUL at the last row with its interval;
``explanation`` says which sensors pushed it up or down (signed TreeSHAP contributions
summed per sensor, plus the largest per-feature ones; they sum to ``value - base``).
Without a model file, without readings, when the device lacks a metric the model needs
(``metrics_missing``), has a metric named like the model's unit or time column
(``metric_name_clash``), has a metric the model needs with no usable value
(``unscorable``), has had its old readings deleted (``history_trimmed``: retention,
``EDGEWISE_RETENTION_DAYS``, or the store's ``delete_before`` took its readings before a
time, which the store records per device, ``Store.trimmed_before``; the rows kept would be
numbered from 1 and scored as a younger unit's, as the model reads a unit's age and
whole-history trends from its rows), or when no model file loads (``bad_model``:
damaged, truncated, another format version, not a RUL model), it answers
``{"rul": null, "reason": …, "detail": …}`` (RUL is unavailable, not an error: the
dashboard asks for every device); an unknown device is a 404 problem; at most
:data:`MAX_FITS` devices are scored at once, and a request that finds no free slot within
:data:`FIT_WAIT_S` is a 429 (reason ``rul_busy``) with ``Retry-After``.
A newer model file that does not load is passed over for the newest that does
(``model`` names the one used, ``skipped`` those passed over and why), so one damaged file
never takes RUL away from the fleet; write model files whole (:meth:`RULModel.save` writes a
temporary file and renames it).

The RUL, ``low`` and ``high`` count readings (``rul_unit`` says so; ``time_column`` names
the model's time column, ``step_s`` the mean seconds between the device's readings, so
``rul * step_s`` is about the seconds left). A metric the model does not use (a sensor
constant in training, which it dropped) need not be sent.

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
from edgewise.server.fitting import FitCache, busy, fit_slot
from edgewise.server.routes.devices import known_device, not_found

__all__ = ["find_model", "forget_device", "router"]

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
#: Seconds a request waits for a scoring slot before it is answered 429 with Retry-After.
FIT_WAIT_S = 10.0
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
    """The RUL model files under ``data_dir/models`` (name ``rul*``, with an Edgewise RUL
    model header), newest first. Whether each loads is :func:`_load`'s to find out."""
    from edgewise.errors import EdgewiseError
    from edgewise.models.rul import read_header

    found = []
    for p in (Path(data_dir) / "models").glob("rul*"):
        try:
            if not p.is_file():
                continue
            read_header(p)
            found.append((p.stat().st_mtime_ns, p.name, p))
        except (EdgewiseError, OSError):
            continue
    return [p for _, _, p in sorted(found, reverse=True)]


def find_model(data_dir: Path) -> Path | None:
    """The newest RUL model file under ``data_dir/models`` (name ``rul*``), if any."""
    found = model_files(data_dir)
    return found[0] if found else None


def _file_key(path: Path) -> str:
    return f"{path}:{path.stat().st_mtime_ns}"


def _load(path: Path) -> Any:
    """The model in ``path`` (kept while the file is unchanged); raises
    :class:`~edgewise.models.rul.ModelFileError` saying why when it does not load (once per
    version of the file: a damaged file is not read again on every poll)."""
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
            skipped.append({"model": path.name, "detail": str(exc)})
    return None, None, skipped


def _none(device_id: str, reason: str, detail: str, model: str | None = None) -> dict[str, Any]:
    return {"device_id": device_id, "model": model, "rul": None, "low": None, "high": None,
            "reason": reason, "detail": detail}


def _predict(store: Any, data_dir: Path, device_id: str) -> dict[str, Any]:
    paths = model_files(data_dir)
    if not paths:
        return _none(device_id, "no_model",
                     f"No RUL model file (rul*) in {str(Path(data_dir) / 'models')!r}; make "
                     "one with 'edgewise train rul --out <data dir>/models/rul-v1.ewm'.")
    try:
        key = (device_id, "|".join(_file_key(p) for p in paths))
    except OSError:  # a file removed meanwhile: answer without the cache
        key = (device_id, "")
    # one computation per key at a time: requests arriving while it runs (the dashboard's
    # polls, several viewers) wait for it and answer from the cache it fills
    with _answers.key_lock(key):
        generation = _answers.generation
        hit = _answers.get(key)
        if hit is not None and time.monotonic() - hit[0] < TTL_S:
            return hit[1]
        with fit_slot(_answers.fits, FIT_WAIT_S, _busy):
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
    answer = _none(device_id, "bad_model",
                   f"No RUL model file loads: {whys}. Write a new one with 'edgewise train rul "
                   "--out <data dir>/models/rul-v1.ewm', or remove the damaged file.",
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
    rows = store.query(device_id, None, None, None, None)
    if not rows:  # said without loading a model: a damaged one changes nothing here
        return _none(device_id, "no_history", f"Device {device_id!r} has no stored readings.",
                     paths[0].name)
    model, path, skipped = _newest_loading(paths)
    if model is None or path is None:
        return _bad_model(device_id, skipped)
    answer = _fit(model, path, rows, device_id)
    if skipped:  # say which newer files were passed over, and why
        answer["skipped"] = skipped
    return answer


def _fit(model: Any, path: Path, rows: Any, device_id: str) -> dict[str, Any]:
    """The RUL of ``model`` (loaded from ``path``) on the device's stored ``rows``."""
    from edgewise.errors import InvalidParameterError
    from edgewise.explain.rul import by_sensor, rul_explanations
    from edgewise.models.history import device_frame, reading_step_s

    # only what the prediction rests on: a sensor constant in training (dropped by the
    # model) need not be sent
    needed = model.required_columns()[2:]
    try:
        wide = device_frame(rows, device_id, model.unit_column, model.time_column)
    except InvalidParameterError as exc:
        return _none(device_id, "metric_name_clash", f"The RUL model {path.name!r} cannot "
                     f"read this device's history: {exc}", path.name)
    missing = [c for c in needed if c not in wide.columns]
    if missing:
        return _none(device_id, "metrics_missing", f"The RUL model {path.name!r} needs "
                     f"metric(s) {missing} that device {device_id!r} does not send.", path.name)
    wide = wide[[model.unit_column, model.time_column, *needed]]
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
              "step_s": reading_step_s(rows)}
    if "gbm" in model.core_:
        ex = rul_explanations(model, wide)[device_id]
        answer["explanation"] = _explanation_json(ex, by_sensor(ex), float(point[0]))
    return answer


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
            responses={429: {"description": f"{MAX_FITS} devices were being scored for "
                             f"{FIT_WAIT_S:g} s (reason 'rul_busy'); retry after "
                             "Retry-After."}})
async def rul(
    who: Viewer, store: StoreDep, security: SecurityDep, settings: SettingsDep,
    device_id: Annotated[str, PathParam(description="The device id.")],
) -> dict[str, Any]:
    """RUL at the device's last reading, in the model's time steps (readings here), with the
    model's interval (``interval`` percent)."""
    if not await run_in_threadpool(known_device, security, store, device_id):
        raise not_found(device_id)
    return await run_in_threadpool(_predict, store, settings.data_dir, device_id)
