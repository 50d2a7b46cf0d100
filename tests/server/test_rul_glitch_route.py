"""GET /v1/devices/{id}/rul passes over a lone glitch reading (a store's history cannot be
edited, so one wild reading made the device unscorable for good) and says so."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

import edgewise.server.routes.rul as rul
from tests.server.conftest import Env
from tests.server.test_rul_api import SENSORS, _small_model, _unit


def test_a_lone_glitch_is_passed_over_and_listed(env: Env) -> None:
    """Check that a device with one 1e6 vibration reading in 80 gets a RUL equal to the
    model's on its history with the previous value in that place, and ``passed_over``
    naming the metric, time, row and value (before: ``unscorable`` as long as the reading
    was stored); a second wild reading within 100 rows makes it unscorable again."""
    model = _small_model(env)
    x = _unit(np.random.default_rng(5), 120)[:80]
    t0 = int(time.time()) - 100
    sent = x.copy()
    sent[30, 1] = 1e6
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {s: float(sent[i, j]) for j, s in enumerate(SENSORS)}}
             for i in range(80)]
    assert env.send(batch).status_code == 200
    body = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer")).json()
    assert body["reason"] is None, body
    (g,) = body["passed_over"]
    assert (g["metric"], g["row"], g["value"]) == ("vib_mm_s", 31, 1e6) and g["z"] > 20
    assert g["ts"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + 30)))
    carried = x.copy()
    carried[30, 1] = x[29, 1]
    direct = pd.DataFrame({"unit": env.device, "cycle": np.arange(1, 81),
                           **{s: carried[:, j] for j, s in enumerate(SENSORS)}})
    assert body["rul"] == round(float(model.predict(direct).iloc[0]), 2)

    env.send({"ts": t0 + 80, "seq": 81, "metrics": {"temp_c": 50.0, "vib_mm_s": -1e6,
                                                     "current_a": 11.0}})
    env.send({"ts": t0 + 81, "seq": 82, "metrics": {s: float(x[79, j])
                                                     for j, s in enumerate(SENSORS)}})
    rul._answers.drop(lambda key: key[0] == env.device)
    body = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer")).json()
    assert (body["rul"], body["reason"]) == (None, "unscorable"), body
    assert "sensor 'vib_mm_s' is " in body["detail"], body
