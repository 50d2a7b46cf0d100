"""A device's remaining useful life, from the newest RUL model in ``<data dir>/models``.

``edgewise train rul --data … --out <data dir>/models/rul-v1.ewm`` (any file whose name
starts with ``rul`` and that is an Edgewise RUL model file) makes this route answer: the
device's stored history is turned into the table the model was trained on (one row per
reading time, one column per metric, the device as the unit and the row number as the
time column) and the model predicts the RUL at the last row with its interval;
``explanation`` says which sensors pushed it up or down (signed TreeSHAP contributions
summed per sensor, plus the largest per-feature ones; they sum to ``value - base``).
Without a
model file, without readings, when the device lacks a metric the model needs
(``metrics_missing``), has a metric named like the model's unit or time column
(``metric_name_clash``), or has a metric the model needs with no usable value
(``unscorable``), it answers ``{"rul": null, "reason": …, "detail": …}`` (RUL is
unavailable, not an error: the dashboard asks for every device); an unknown device is a 404
problem.

The model predicts the RUL capped at its ``cap`` (the answer says which): ``rul_open``
true means the RUL is at least ``rul`` (the prediction reached the cap), ``high_open``
true means the interval has no upper bound (``high`` is the cap).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from edgewise.server.deps import SecurityDep, SettingsDep, StoreDep, Viewer
from edgewise.server.routes.devices import known_device, not_found

__all__ = ["find_model", "router"]

router = APIRouter(tags=["quality"])

_cache: dict[str, Any] = {}
_lock = threading.Lock()
#: A device's answer is reused this long (the dashboard polls every few seconds and the
#: prediction reads the device's whole history).
TTL_S = 15.0
_answers: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}


def find_model(data_dir: Path) -> Path | None:
    """The newest RUL model file under ``data_dir/models`` (name ``rul*``), if any."""
    from edgewise.errors import EdgewiseError
    from edgewise.models.rul import read_header

    found = []
    for p in (Path(data_dir) / "models").glob("rul*"):
        if not p.is_file():
            continue
        try:
            read_header(p)
        except (EdgewiseError, OSError):
            continue
        found.append((p.stat().st_mtime_ns, p.name, p))
    return max(found)[2] if found else None


def _load(path: Path) -> Any:
    from edgewise.models.rul import load_model

    key = f"{path}:{path.stat().st_mtime_ns}"
    with _lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = load_model(path)
        return _cache[key]


def _none(device_id: str, reason: str, detail: str, model: str | None = None) -> dict[str, Any]:
    return {"device_id": device_id, "model": model, "rul": None, "low": None, "high": None,
            "reason": reason, "detail": detail}


def _predict(store: Any, data_dir: Path, device_id: str) -> dict[str, Any]:
    path = find_model(data_dir)
    if path is None:
        return _none(device_id, "no_model",
                     f"No RUL model file (rul*) in {str(Path(data_dir) / 'models')!r}; make "
                     "one with 'edgewise train rul --out <data dir>/models/rul-v1.ewm'.")
    key = (device_id, f"{path}:{path.stat().st_mtime_ns}")
    hit = _answers.get(key)
    if hit is not None and time.monotonic() - hit[0] < TTL_S:
        return hit[1]
    answer = _score(store, path, device_id)
    if len(_answers) > 10_000:
        _answers.clear()
    _answers[key] = (time.monotonic(), answer)
    return answer


def _score(store: Any, path: Path, device_id: str) -> dict[str, Any]:
    from edgewise.errors import InvalidParameterError
    from edgewise.explain.rul import by_sensor, rul_explanations
    from edgewise.models.history import device_frame

    model = _load(path)
    needed = [*model.conditions_, *model.sensors_]
    rows = store.query(device_id, None, None, None, None)
    if not rows:
        return _none(device_id, "no_history", f"Device {device_id!r} has no stored readings.",
                     path.name)
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
              "low": round(float(low[0]), 2), "high": round(float(high[0]), 2),
              "interval": round(100 * (1 - model.alpha)), "rows": len(wide), "reason": None,
              "cap": model.cap, "rul_open": bool(model.open_above(point)[0]),
              "high_open": bool(model.open_above(high)[0]), "explanation": None}
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
            summary="A device's remaining useful life with its interval (viewer)")
async def rul(
    who: Viewer, store: StoreDep, security: SecurityDep, settings: SettingsDep,
    device_id: Annotated[str, PathParam(description="The device id.")],
) -> dict[str, Any]:
    """RUL at the device's last reading, in the model's time steps (readings here), with the
    model's interval (``interval`` percent)."""
    if not await run_in_threadpool(known_device, security, store, device_id):
        raise not_found(device_id)
    return await run_in_threadpool(_predict, store, settings.data_dir, device_id)
