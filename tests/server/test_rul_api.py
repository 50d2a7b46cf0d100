"""GET /v1/devices/{id}/rul: the newest RUL model in the data dir scores a device's history."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from edgewise.explain.rul import by_sensor, rul_explanations
from edgewise.models.rul import RULModel
from tests.server.conftest import Env, problem

SENSORS = ["temp_c", "vib_mm_s", "current_a"]


def _unit(rng: np.random.Generator, life: int) -> np.ndarray:
    wear = (np.arange(life) / life) ** 2
    return np.column_stack([40 + 15 * wear, 2 + 6 * wear, 10 + 3 * wear]) + \
        rng.normal(0, [0.3, 0.1, 0.1], (life, 3))


def test_device_rul_with_interval_from_the_data_dir_model(env: Env) -> None:
    """Check 404 without a model; then the route's RUL and interval equal the model's own
    prediction on the device's history, and a device lacking a metric is named."""
    r = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer"))
    assert (r.status_code, r.json()["rul"], r.json()["reason"]) == (200, None, "no_model")
    rng = np.random.default_rng(0)
    model = _trained(rng, 16, window=10, n_estimators=60, learning_rate=0.1, random_state=0)
    (env.settings.data_dir / "models").mkdir(exist_ok=True)
    model.save(env.settings.data_dir / "models" / "rul-v1.ewm")

    life, upto = 120, 80  # 40 cycles left
    x = _unit(rng, life)[:upto]
    t0 = int(time.time()) - upto
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {s: float(x[i, j]) for j, s in enumerate(SENSORS)}} for i in range(upto)]
    assert env.send(batch).status_code == 200
    r = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "rul-v1.ewm" and body["rows"] == upto and body["interval"] == 90
    assert body["low"] <= body["rul"] <= body["high"]
    direct = pd.DataFrame({"unit": env.device, "cycle": np.arange(1, upto + 1),
                           **{s: x[:, j] for j, s in enumerate(SENSORS)}})
    p, lo, hi = model.predict_interval(direct)
    assert (body["rul"], body["low"], body["high"]) == (round(float(p[0]), 2),
                                                       round(float(lo[0]), 2),
                                                       round(float(hi[0]), 2))
    assert 5 < body["rul"] < 90  # 40 cycles left: neither new nor failed

    # signed explanation: per sensor, summing to the boosted prediction minus its base
    ex = body["explanation"]
    assert ex["method"] == "treeshap"
    assert set(ex["contributions"]) == {*SENSORS, "age"}
    assert abs(ex["base"] + sum(ex["contributions"].values()) - ex["value"]) < 1e-3
    assert abs(ex["value"] + ex["clipped"] - body["rul"]) < 0.01
    assert ex["value"] == round(float(p[0]), 4) and ex["clipped"] == 0.0  # gbm only, unclipped
    assert any(c < 0 for c in ex["contributions"].values())  # wear pushes the RUL *down*
    mags = sorted(ex["contributions"].values(), key=abs, reverse=True)
    assert [t["value"] for t in ex["top"]] == [round(m, 4) for m in mags]
    direct_ex = by_sensor(rul_explanations(model, direct)[env.device])
    for name, c in direct_ex.contributions.items():
        assert abs(ex["contributions"][name] - c) < 1e-5, name
    assert {t["name"] for t in ex["features_top"]} <= set(model.feature_names_)

    sec = env.client.post("/v1/devices", json={"name": "pump-2"},
                          headers=env.auth("admin")).json()["secret"]
    env.send({"ts": t0, "seq": 1, "metrics": {"temp_c": 40.0}}, device="pump-2", secret=sec)
    r = env.client.get("/v1/devices/pump-2/rul", headers=env.auth("viewer"))
    assert (r.json()["rul"], r.json()["reason"]) == (None, "metrics_missing")
    assert "vib_mm_s" in r.json()["detail"]
    problem(env.client.get("/v1/devices/nope/rul", headers=env.auth("viewer")), 404)


def _trained(rng: np.random.Generator, units: int, **params: Any) -> RULModel:
    """A RULModel fitted on ``units`` run-to-failure histories simulated with ``rng``."""
    frames = []
    for u in range(units):
        life = int(rng.integers(80, 140))
        x = _unit(rng, life)
        frames.append(pd.DataFrame({"unit": u, "cycle": np.arange(1, life + 1),
                                    **{s: x[:, j] for j, s in enumerate(SENSORS)}}))
    return RULModel(**params).fit(pd.concat(frames, ignore_index=True))


def _small_model(env: Env) -> RULModel:
    model = _trained(np.random.default_rng(0), 12, window=10, n_estimators=40,
                     learning_rate=0.1, cap=60.0, random_state=0)
    (env.settings.data_dir / "models").mkdir(exist_ok=True)
    model.save(env.settings.data_dir / "models" / "rul-v1.ewm")
    return model


def test_a_metric_named_like_the_time_column_is_a_reason_not_a_500(env: Env) -> None:
    """Check that a device sending a metric named like the model's time column ('cycle')
    gets ``rul: null`` with a reason naming the metric (pandas' 'cannot insert cycle,
    already exists' made the route answer 500), and that an answer says where it reached
    the cap (``rul_open``/``high_open``, with ``cap``)."""
    _small_model(env)
    t0 = int(time.time()) - 20
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {"temp_c": 40.0 + i, "vib_mm_s": 2.0, "current_a": 10.0,
                          "cycle": float(i)}} for i in range(20)]
    assert env.send(batch).status_code == 200
    r = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["rul"], body["reason"]) == (None, "metric_name_clash"), body
    assert "metric named 'cycle'" in body["detail"], body

    sec = env.client.post("/v1/devices", json={"name": "pump-2"},
                          headers=env.auth("admin")).json()["secret"]
    env.send({"ts": t0, "seq": 1, "metrics": {"temp_c": 40.0, "vib_mm_s": 2.0,
                                              "current_a": 10.0}}, device="pump-2", secret=sec)
    body = env.client.get("/v1/devices/pump-2/rul", headers=env.auth("viewer")).json()
    assert body["cap"] == 60.0 and body["high"] <= 60.0, body
    assert body["high_open"] == (body["high"] == 60.0) and body["rul_open"] == (body["rul"] == 60.0)


def test_a_deleted_device_registered_again_is_not_served_its_old_rul(env: Env) -> None:
    """Check that DELETE /v1/devices/{id} drops the route's cached answer: the id registered
    again, with no readings yet, is answered ``no_history``, not the deleted device's RUL
    computed from its purged readings (the 15 s answer cache kept that, with ``rows``
    counting readings no longer stored)."""
    _small_model(env)
    x = _unit(np.random.default_rng(1), 120)[:30]
    t0 = int(time.time()) - 30
    assert env.send([{"ts": t0 + i, "seq": i + 1,
                      "metrics": {s: float(x[i, j]) for j, s in enumerate(SENSORS)}}
                     for i in range(30)]).status_code == 200
    url = f"/v1/devices/{env.device}/rul"
    before = env.client.get(url, headers=env.auth("viewer")).json()
    assert before["rul"] is not None and before["rows"] == 30, before
    assert env.client.delete(f"/v1/devices/{env.device}",
                             headers=env.auth("admin")).status_code == 200
    assert env.client.post("/v1/devices", json={"name": env.device},
                           headers=env.auth("admin")).status_code == 201
    after = env.client.get(url, headers=env.auth("viewer")).json()
    assert (after["rul"], after["reason"]) == (None, "no_history"), after
