"""Readings the gateway accepts at the edge of the float range (a 'no value' sentinel
1.7e308, +-1e308 swings, 1e300 steps) as the consumers of stored readings see them: the
real app over a real DuckDB store (``build_env``)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np

from tests.server.conftest import Env

HOUR = 3600
N = 24 * 6  # six days, hourly


def _fleet(env: Env, huge: dict[str, Any]) -> dict[str, float]:
    """Six devices, three at level 20 and three at 50 (a daily cycle and noise), sending
    ``m`` and ``q`` hourly; ``huge`` maps a device to how it spoils its ``m`` (a list of
    reading indexes set to 1.7e308, or 'all'). Returns each device's level."""
    end = (int(time.time()) // HOUR - 2) * HOUR
    ts = end - HOUR * np.arange(N)[::-1]
    levels = {}
    for k in range(6):
        name = f"x{k}"
        dev, sec = env.security.add_device(name)
        levels[dev] = 20.0 if k < 3 else 50.0
        rng = np.random.default_rng(k)
        v = levels[dev] + 5 * np.sin(2 * np.pi * (ts // HOUR % 24) / 24) + rng.normal(0, .3, N)
        spoil = huge.get(name)
        if spoil == "all":
            v[:] = 1.7e308
        elif spoil is not None:
            v[spoil] = 1.7e308
        batch = [{"ts": int(t), "seq": i + 1, "metrics": {"m": float(x), "q": float(1 + i % 5)}}
                 for i, (t, x) in enumerate(zip(ts, v, strict=True))]
        r = env.send(batch, device=dev, secret=sec)
        assert r.status_code == 200 and r.json()["accepted"] == 2 * N, r.text
    return levels


def _groups(env: Env) -> dict[str, Any]:
    r = env.client.get("/v1/fleet/groups", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    # JSON cannot carry NaN or inf: parse strictly
    body = json.loads(r.text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    return body  # type: ignore[no-any-return]


def test_groups_set_aside_a_no_value_sentinel_and_group_by_the_rest(env: Env) -> None:
    """Two devices (one per level) send the sentinel 1.7e308 three times among 144
    readings. Before, their medians and trends overflowed: the fleet was split by a
    'trend' of -7e305/day (the sentinel devices against the rest, not 20 against 50).
    Now the sentinels are set aside and counted, and the groups are the two levels."""
    levels = _fleet(env, {"x0": [10, 60, 100], "x3": [10, 60, 100]})
    body = _groups(env)
    members = sorted(sorted(g["members"]) for g in body["groups"])
    assert members == [["x0", "x1", "x2"], ["x3", "x4", "x5"]], body["groups"]
    assert body["set_aside"] == {"max_magnitude": 1e160,
                                 "readings": {"x0": {"m": 3}, "x3": {"m": 3}}}
    for g in body["groups"]:
        for t in g["traits"]:
            assert math.isfinite(t["group"]) and abs(t["group"]) < 100, t
    assert levels["x0"] == 20.0


def test_groups_name_a_metric_that_only_ever_read_the_sentinel(env: Env) -> None:
    """A device whose ``m`` is 1.7e308 at every reading: before, its level overflowed to
    inf, read as a feature it lacks, and it was grouped with the fleet with nothing said.
    Now its ``m`` is set aside (144 readings) and listed as missing."""
    _fleet(env, {"x5": "all"})
    body = _groups(env)
    assert body["set_aside"]["readings"] == {"x5": {"m": N}}
    assert body["missing"] == {"x5": ["m"]}
    grouped = {d for g in body["groups"] for d in g["members"]}
    assert grouped == {f"x{k}" for k in range(6)}


def test_a_device_of_sentinels_only_is_left_out_with_why() -> None:
    """BehaviourGroups itself (what `edgewise groups` fits): a device whose every reading
    is past +-1e160 (1.7e308 and -1e300) was grouped as if like the fleet (its features
    overflowed to inf and NaN, read as features it lacks); now it is left out, and why."""
    import pandas as pd

    from edgewise.models.cluster import BehaviourGroups

    idx = pd.date_range("2026-11-01", periods=N, freq="h", tz="UTC")
    hist = {}
    for k in range(6):
        rng = np.random.default_rng(k)
        m = 20 + (k % 2) * 30 + 5 * np.sin(2 * np.pi * np.arange(N) / 24) + rng.normal(0, .3, N)
        q = 1.0 + np.arange(N) % 5
        if k == 5:
            m, q = np.full(N, 1.7e308), np.full(N, -1e300)
        hist[f"n{k}"] = pd.DataFrame({"m": m, "q": q}, index=idx)
    s = BehaviourGroups().fit(hist).summary()
    assert s["left_out_devices"] == {
        "n5": "sends none of the metrics used (m, q) but readings past +-1e+160 (set aside: "
              "m 144, q 144); it sends nothing else"}
    assert s["set_aside"] == {"n5": {"m": N, "q": N}}
    assert "n5" not in {d for g in s["groups"] for d in g["members"]}
