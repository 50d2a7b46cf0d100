"""GET /v1/fleet/groups: the bucket a fleet's window is averaged to."""

from __future__ import annotations

import time

from edgewise.server.routes import groups as route
from tests.server.conftest import Env
from tests.server.test_groups_route import STEP, _get, _members, two_kinds


def test_one_stray_old_reading_does_not_coarsen_the_fleets_bucket(env: Env) -> None:
    """Check a fleet of 3 hours at 1 minute is read in 15 s buckets (every reading) when
    one pump also sent one reading 6 days before: its first reading alone set the step,
    10-minute buckets for every device (18 points each, not 180)."""
    two_kinds(env)
    end = (int(time.time()) // STEP - 5) * STEP
    r = env.send([{"ts": end - 6 * 86400, "seq": 1000,
                   "metrics": {"temp_c": 40.0, "load_kw": 10.0}}])
    assert r.status_code == 200, r.text
    body = _get(env).json()
    assert body["window"]["bucket_s"] == 15, body["window"]
    assert _members(body) == [{"pump-1", "cool-2", "cool-3"}, {"hot-1", "hot-2", "hot-3"}]


def test_a_device_with_more_readings_than_max_points_still_sets_a_coarser_bucket(
        env: Env, monkeypatch) -> None:
    """Check a device holding more readings than MAX_POINTS over a longer span than the
    fleet's typical one still gets buckets that cut its span into at most MAX_POINTS."""
    monkeypatch.setattr(route, "MAX_POINTS", 400)
    two_kinds(env)  # 360 readings each (2 metrics x 180 minutes)
    end = (int(time.time()) // STEP - 5) * STEP
    batch = [{"ts": end - 6 * 86400 + 600 * i, "seq": 1000 + i,
              "metrics": {"temp_c": 40.0, "load_kw": 10.0}} for i in range(60)]
    assert env.send(batch).status_code == 200  # pump-1: 480 readings over 6 days
    body = _get(env).json()
    six_days = 6 * 86400 + 3 * 3600
    assert six_days / body["window"]["bucket_s"] <= 400, body["window"]
