"""GET /v1/fleet/groups names a device the fit left out (it sends none of the used
metrics) among the left-out devices, with why, instead of flagging it odd."""

from __future__ import annotations

import time
from typing import Any

from tests.server.conftest import Env
from tests.server.test_groups_route import STEP, _get, fits, two_kinds  # noqa: F401


def test_a_device_sending_no_used_metric_is_listed_left_out(env: Env,
                                                           fits: list[Any]) -> None:  # noqa: F811
    two_kinds(env)
    secret = env.security.add_device("vib-only")[1]
    end = (int(time.time()) // STEP - 5) * STEP
    batch = [{"ts": end - STEP * i, "seq": i + 1, "metrics": {"vib_mms": 2.0 + 0.01 * i}}
             for i in range(180)]
    r = env.send(batch, device="vib-only", secret=secret)
    assert r.status_code == 200, r.text
    body = _get(env).json()
    left = {d["device"]: d["reason"] for d in body["left_out"]["devices"]}
    assert left == {"vib-only": "sends none of the metrics used (load_kw, temp_c); it sends "
                                "vib_mms"}
    assert [o["device"] for o in body["odd_ones_out"]] == []
    assert body["n_groups"] == 2 and body["n_devices"] == 6
    assert all("vib-only" not in g["members"] for g in body["groups"])
