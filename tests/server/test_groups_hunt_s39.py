"""GET /v1/fleet/groups, hunt of session 39: the 422 for too many groups counted the devices
read, not those the fit groups; a pump that joined 20 minutes ago was an odd one out."""

from __future__ import annotations

import time

from tests.server.conftest import Env, problem
from tests.server.test_groups_route import STEP, _get, send_kind


def test_too_many_groups_counts_the_devices_the_fit_groups(env: Env) -> None:
    """Check 3 pumps and a device sending only vibration, asked for 2 groups, are refused
    naming the 3 devices grouped, the one left out and at most 1 group, allowed 1 to 1
    (before: "of the 4 devices ... at most 2", allowed 1 to 2, though 2 is refused)."""
    for d, t in (("pump-1", 40.0), ("cool-2", 40.0), ("hot-1", 60.0)):
        send_kind(env, d, t)
    secret = env.security.add_device("vib-only")[1]
    end = (int(time.time()) // STEP - 5) * STEP
    r = env.send([{"ts": end - STEP * i, "seq": i + 1, "metrics": {"vib_mms": 2.0 + 0.01 * i}}
                  for i in range(180)], device="vib-only", secret=secret)
    assert r.status_code == 200, r.text
    body = problem(_get(env, groups=2), 422)
    assert (body["reason"], body["field"], body["value"]) == ("too_many_groups", "groups", 2)
    assert "of the 3 devices grouped (1 more" in body["detail"], body
    assert "vib-only" in body["detail"] and "at most 1 can be made" in body["detail"], body
    assert body["allowed"].startswith("a whole number from 1 to 1 (the 3 devices grouped"), body
    assert _get(env, groups=1).status_code == 200


def test_a_pump_that_joined_20_minutes_ago_is_not_odd(env: Env) -> None:
    """Check a pump behaving as six others do, with only its last 20 minutes of readings, is
    no odd one out (before: odd, "temp_c falls over time: -28.1/day", from a slope over 20
    minutes read over the fleet's 3 hours)."""
    for d in ("pump-1", "pump-2", "pump-3", "pump-4", "pump-5", "pump-6"):
        send_kind(env, d, 40.0)
    send_kind(env, "pump-new", 40.0, n=20)
    body = _get(env).json()
    assert body["n_devices"] == 7 and body["odd_ones_out"] == [], body["odd_ones_out"]
