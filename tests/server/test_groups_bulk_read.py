"""GET /v1/fleet/groups reads the fleet's window in one bulk store query, and answers the
groups that one query per device gave."""

from __future__ import annotations

from typing import Any

import pytest

from edgewise.models.cluster import BehaviourGroups
from edgewise.models.profile import device_history
from edgewise.server.fitting import bucket_s
from edgewise.server.routes import groups as route
from tests.server.conftest import Env
from tests.server.test_groups_route import COOL, HOT, _get, two_kinds


def _reads_of_readings(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every read of the readings table the real store runs from now on."""
    seen: list[str] = []
    real = env.store._read  # type: ignore[attr-defined]

    def counted(sql: str, params: Any = None) -> Any:
        if "FROM readings" in sql:
            seen.append(sql)
        return real(sql, params) if params is not None else real(sql)

    monkeypatch.setattr(env.store, "_read", counted)
    return seen


def test_route_reads_the_fleet_in_one_query(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a grouping of six devices reads the readings table once (one bulk query for
    the fleet), not once per device, and a cached answer reads it not at all."""
    two_kinds(env)
    seen = _reads_of_readings(env, monkeypatch)
    r = _get(env)
    assert r.status_code == 200, r.text
    assert r.json()["n_devices"] == 6
    assert len(seen) == 1, seen
    assert _get(env).json()["cached"] is True and len(seen) == 1


def test_route_answers_the_groups_a_per_device_read_gives(env: Env) -> None:
    """Check the route's groups, odd ones out and traits are those of BehaviourGroups
    fitted on each device's window read with one query() per device (the old read)."""
    two_kinds(env)
    env.security.add_device("quiet-1")
    body = _get(env).json()
    seen = [s for s in env.store.devices() if s.last_ns is not None]
    end = max(s.last_ns for s in seen)
    start = end - route.WINDOW_DAYS * route._NS_PER_DAY
    first = min(max(s.first_ns, start) for s in seen)
    step = bucket_s((end - first) / 1e9, route.MAX_POINTS)
    hist = {s.device_id: device_history(env.store.query(
        s.device_id, None, start, end + 1, step * 10**9,
        (route.MAX_POINTS + 1) * len(s.metrics))) for s in seen}
    model = BehaviourGroups(max_groups=route.MAX_GROUPS, min_group_size=route.MIN_GROUP_SIZE,
                            random_state=0).fit(hist)
    want = model.summary()
    assert body["n_groups"] == want["n_groups"] == 2 and body["window"]["bucket_s"] == step
    assert [(g["members"], g["traits"]) for g in body["groups"]] == [
        (g["members"], g["traits"]) for g in want["groups"]]
    assert sorted(set(g["members"]) for g in body["groups"]) == sorted([set(COOL), set(HOT)])
    assert body["odd_ones_out"] == [] == want["odd_ones_out"]
    assert body["left_out"]["devices"] == [{"device": "quiet-1", "reason": "no readings yet"}]
