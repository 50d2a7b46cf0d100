"""GET /v1/fleet/groups?groups=N on a fleet that makes fewer groups: the answer says why."""

from __future__ import annotations

import time

from tests.server.conftest import Env
from tests.server.test_groups_route import STEP, _get


def test_fewer_groups_than_asked_are_said_with_why(env: Env) -> None:
    """Check four pumps sending the same readings, asked for two groups, are answered one
    group and ``fewer_groups`` saying why (before: one group, and nothing said why); as
    many groups as asked: ``fewer_groups`` null."""
    end = (int(time.time()) // STEP - 5) * STEP
    batch = [{"ts": end - STEP * (60 - i), "seq": i + 1,
              "metrics": {"temp_c": 40.0 + (i % 3), "load_kw": 10.0}} for i in range(60)]
    for d in ("pump-1", "cool-2", "cool-3", "cool-4"):
        secret = env.secret if d == env.device else env.security.add_device(d)[1]
        r = env.send(batch, device=d, secret=secret)
        assert r.status_code == 200, r.text
    r = _get(env, groups=2)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_groups"] == 1 and body["odd_ones_out"] == [], body
    assert body["fewer_groups"].startswith(
        "2 groups were asked for; 1 could be made: the 4 devices have only 1 distinct "), body
    assert _get(env, groups=1).json()["fewer_groups"] is None
