"""The RUL route scores what the model uses: a sensor the model dropped (constant in
training) need not be sent; the answer names its units; the store's table keeps a sensor
empty before its first reading (the model's "never back" rule), as the edge does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.models.rul import RULModel
from edgewise.server.routes.rul import _fit


@pytest.fixture(scope="module")
def model() -> RULModel:
    """A small model over ``temp``, ``vib`` (wear) and ``flat`` (constant: dropped)."""
    rng = np.random.default_rng(0)
    frames = []
    for u in range(8):
        life = int(rng.integers(60, 90))
        wear = (np.arange(life) / life) ** 2
        frames.append(pd.DataFrame({
            "unit": u, "cycle": np.arange(1, life + 1),
            "temp": 40 + 15 * wear + rng.normal(0, 0.3, life),
            "vib": 2 + 6 * wear + rng.normal(0, 0.1, life), "flat": 7.0}))
    return RULModel(window=10, n_estimators=30, learning_rate=0.1, calibration_folds=2,
                    cap=60.0).fit(pd.concat(frames, ignore_index=True))


def _rows(n: int, skip: dict[str, int] | None = None,
          flat: bool = False) -> list[tuple[str, int, float]]:
    """``n`` readings of temp and vib (and ``flat``) a second apart (``skip``: metric ->
    readings left out at the start)."""
    skip = skip or {}
    out = []
    for i in range(n):
        wear = (i / 80) ** 2
        sent = [("temp", 40 + 15 * wear), ("vib", 2 + 6 * wear)] + [("flat", 7.0)] * flat
        for name, v in sent:
            if i >= skip.get(name, 0):
                out.append((name, (1_700_000_000 + i) * 10**9, float(v)))
    return out


def test_a_device_sending_only_the_used_sensors_is_scored(model: RULModel) -> None:
    """Check that the route scores a device that does not send ``flat`` (constant in
    training, dropped by the model): it answered ``metrics_missing`` naming 'flat'."""
    assert model.required_columns() == ["unit", "cycle", "temp", "vib"]
    ans = _fit(model, Path("rul-v1.ewm"), _rows(50), "pump-1")
    assert ans["reason"] is None, ans
    direct = pd.DataFrame({"unit": "pump-1", "cycle": np.arange(1, 51),
                           "temp": [v for m, _, v in _rows(50) if m == "temp"],
                           "vib": [v for m, _, v in _rows(50) if m == "vib"]})
    assert ans["rul"] == round(float(model.predict(direct).iloc[0]), 2)


def test_the_route_answer_says_its_units(model: RULModel) -> None:
    """Check that the answer names the RUL's unit (readings), the time column and the
    seconds between readings (1 s here)."""
    ans = _fit(model, Path("rul-v1.ewm"), _rows(50, flat=True), "pump-1")
    assert (ans["rul_unit"], ans["time_column"], ans["step_s"]) == ("readings", "cycle", 1.0)


def test_a_sensor_first_reported_late_is_not_carried_back(model: RULModel) -> None:
    """Check that the route predicts what the model predicts on the same readings with the
    sensor empty before its first value (z-score 0 there); the store table carried the
    first value back over those rows, so server and edge disagreed."""
    rows = _rows(60, skip={"vib": 25}, flat=True)
    ans = _fit(model, Path("rul-v1.ewm"), rows, "pump-1")
    temp = [v for m, _, v in rows if m == "temp"]
    vib = [np.nan] * 25 + [v for m, _, v in rows if m == "vib"]
    direct = pd.DataFrame({"unit": "pump-1", "cycle": np.arange(1, 61), "temp": temp,
                           "vib": vib})
    carried = direct.assign(vib=direct["vib"].bfill())
    assert round(float(model.predict(direct).iloc[0]), 2) != round(
        float(model.predict(carried).iloc[0]), 2)  # the two rules differ here
    assert ans["rul"] == round(float(model.predict(direct).iloc[0]), 2), ans


def test_readings_of_a_metric_the_model_does_not_use_add_no_rows(model: RULModel) -> None:
    """Check that another metric's readings (a link quality stamped 0.5 s after each
    sample) leave the RUL as it is: rows were every metric's reading times, so the unit
    looked twice as old (61.32 vs 77.98 in the hunt), and ``step_s`` halved."""
    rows = _rows(50)
    rssi = [("rssi", t + 500_000_000, -60.0) for m, t, _ in rows if m == "temp"]
    plain, mixed = (_fit(model, Path("rul-v1.ewm"), r, "pump-1") for r in (rows, rows + rssi))
    assert mixed["reason"] is None and mixed["rows"] == 50, mixed
    assert {k: mixed[k] for k in ("rul", "low", "high", "rows", "step_s")} == {
        k: plain[k] for k in ("rul", "low", "high", "rows", "step_s")}


def test_a_metric_named_like_the_time_column_is_refused_though_the_model_uses_none(
        model: RULModel) -> None:
    """Check that the name check still reads every metric the device sends: a 'cycle'
    metric the model does not use is still ``metric_name_clash``."""
    rows = _rows(20) + [("cycle", (1_700_000_000 + i) * 10**9, float(i)) for i in range(20)]
    ans = _fit(model, Path("rul-v1.ewm"), rows, "pump-1")
    assert ans["reason"] == "metric_name_clash" and "metric named 'cycle'" in ans["detail"]
