"""GET /v1/fleet/groups: BehaviourGroups fitted on the fleet's stored recent history, cached."""

from __future__ import annotations

import time
import zlib
from typing import Any

import numpy as np
import pytest

from edgewise.server.routes import groups as route
from tests.server.conftest import Env, ask_while_held, problem

STEP = 60  # s between readings
N = 180  # readings per device and metric: 3 hours
COOL = ("pump-1", "cool-2", "cool-3")
HOT = ("hot-1", "hot-2", "hot-3")


def send_kind(env: Env, device: str, temp: float, end_s: int | None = None,
              n: int = N, secret: str | None = None) -> str:
    """Register ``device`` (pump-1 is already) and send ``n`` readings a minute apart of a
    pump running at ``temp`` °C (noise 0.5) with the same load; return its secret."""
    if secret is None:
        secret = env.secret if device == env.device else env.security.add_device(device)[1]
    end = end_s if end_s is not None else (int(time.time()) // STEP - 5) * STEP
    ts = end - STEP * np.arange(n)[::-1]
    rng = np.random.default_rng(zlib.crc32(device.encode()))  # hash() differs per process
    batch = [{"ts": int(t), "seq": i + 1,
              "metrics": {"temp_c": round(temp + rng.normal(0, 0.5), 3),
                          "load_kw": round(10 + rng.normal(0, 0.5), 3)}}
             for i, t in enumerate(ts)]
    r = env.send(batch, device=device, secret=secret)
    assert r.status_code == 200 and r.json()["accepted"] == 2 * n, r.text
    return secret


def two_kinds(env: Env, cool: tuple[str, ...] = COOL, hot: tuple[str, ...] = HOT) -> None:
    for d in cool:
        send_kind(env, d, 40.0)
    for d in hot:
        send_kind(env, d, 60.0)


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The n_groups of every BehaviourGroups.fit the route makes (the real model, wrapped
    where the route imports it to count its fits)."""
    calls: list[Any] = []

    class Counted(route.BehaviourGroups):
        def fit(self, X: Any, y: None = None) -> Any:
            calls.append(self.n_groups)
            return super().fit(X, y)

    monkeypatch.setattr(route, "BehaviourGroups", Counted)
    return calls


def _get(env: Env, role: str = "viewer", **params: Any) -> Any:
    return env.client.get("/v1/fleet/groups", params=params, headers=env.auth(role))


def _members(body: dict[str, Any]) -> list[set[str]]:
    return [set(g["members"]) | set(g["odd_ones_out"]) for g in body["groups"]]


def test_two_kinds_of_pumps_make_two_groups_named_then_cached(env: Env,
                                                              fits: list[Any]) -> None:
    """Check three pumps at 40 °C and three at 60 °C are two groups, the hot one "runs
    hotter" in words and numbers, nothing is left out, the window is said, and a second
    request is answered from the cache while another number of groups is fitted anew."""
    two_kinds(env)
    r = _get(env)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_groups"] == 2 and body["chosen"] is True and body["cached"] is False
    assert sorted(_members(body), key=sorted) == [set(COOL), set(HOT)]
    hot = next(g for g in body["groups"] if set(g["members"]) | set(g["odd_ones_out"])
               == set(HOT))
    trait = hot["traits"][0]
    assert trait["feature"] == "level:temp_c" and trait["text"].startswith("runs hotter: temp_c")
    assert abs(trait["group"] - 60) < 1 and abs(trait["fleet"] - 50) < 11 and trait["effect"] > 1
    assert body["metrics"] == ["load_kw", "temp_c"] and body["n_devices"] == 6
    assert body["left_out"] == {"devices": [], "metrics": []} and body["odd_ones_out"] == []
    win = body["window"]
    # 179 minutes in at most MAX_POINTS buckets: 15 s, finer than the readings (as sent)
    assert (win["days"], win["bucket_s"], win["max_points"]) == (7, 15, route.MAX_POINTS)
    assert win["start"] < win["end"] and body["fitted_at"] and body["ttl_s"] == route.TTL_S
    assert fits == [None]

    again = _get(env).json()
    assert again["cached"] is True and again["groups"] == body["groups"] and fits == [None]
    fixed = _get(env, groups=2).json()  # asked for: another key, fitted anew
    assert fixed["n_groups"] == 2 and fixed["chosen"] is False and fixed["cached"] is False
    assert sorted(_members(fixed), key=sorted) == [set(COOL), set(HOT)] and fits == [None, 2]
    assert _get(env, groups=2).json()["cached"] is True and fits == [None, 2]
    assert sorted(route.cache_of(env.client.app).keys(), key=str) == [(2, None), (None, None)]


def test_refitted_when_a_device_is_added_or_deleted_or_after_the_ttl(
        env: Env, fits: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a new device with readings, a registered one without any, and a deleted one
    each make the next request fit anew (the deletion drops the cache at once), and so
    does the TTL's passing."""
    two_kinds(env, COOL[:2], HOT[:2])
    assert _get(env).json()["n_devices"] == 4 and fits == [None]
    send_kind(env, "hot-3", 60.0)
    body = _get(env).json()
    assert body["cached"] is False and {"hot-3", "hot-1"} <= max(_members(body), key=len)
    assert fits == [None, None]

    env.security.add_device("quiet-1")  # registered, never sent: left out, named
    body = _get(env).json()
    assert body["cached"] is False and body["left_out"]["devices"] == [
        {"device": "quiet-1", "reason": "no readings yet"}]
    assert _get(env).json()["cached"] is True and len(fits) == 3

    cache = route.cache_of(env.client.app)
    assert env.client.delete("/v1/devices/hot-3", headers=env.auth("admin")).status_code == 200
    assert cache.keys() == []  # dropped by the deletion, not only at the next request
    body = _get(env).json()
    assert body["cached"] is False and body["n_devices"] == 4
    assert "hot-3" not in set().union(*_members(body)) and len(fits) == 4

    monkeypatch.setattr(route, "TTL_S", 0.0)
    assert _get(env).json()["cached"] is False and len(fits) == 5


def test_errors_name_the_field_the_value_and_what_is_allowed(env: Env,
                                                             fits: list[Any]) -> None:
    """Check one device with data, an unknown reference metric, a reference too few
    devices send, and groups out of range or above the devices are 422 problems naming the
    field, the value and what is allowed; failures are not cached."""
    send_kind(env, env.device, 40.0)
    body = problem(_get(env), 422)
    assert (body["reason"], body["field"], body["value"]) == ("too_few_devices", "devices", 1)
    assert "at least 2 devices" in body["allowed"] and "pump-1" in body["detail"]
    assert fits == []  # nothing to fit: refused before

    send_kind(env, "cool-2", 40.0)
    send_kind(env, "hot-1", 60.0)
    body = problem(_get(env, reference="rpm"), 422)
    assert (body["reason"], body["field"], body["value"]) == ("unknown_metric", "reference",
                                                              "rpm")
    assert "'load_kw'" in body["allowed"] and "'temp_c'" in body["allowed"]
    secret = env.security.add_device("odd-1")[1]
    r = env.send({"ts": int(time.time()) - 120, "seq": 1, "metrics": {"rpm": 1450.0}},
                 device="odd-1", secret=secret)
    assert r.json()["accepted"] == 1
    body = problem(_get(env, reference="rpm"), 422)  # sent by 1 of 4 devices
    assert (body["reason"], body["field"], body["value"]) == ("reference_not_shared",
                                                              "reference", "rpm")
    assert "'load_kw', 'temp_c'" in body["detail"]

    for bad in (0, route.MAX_GROUPS + 1, "two"):
        body = problem(_get(env, groups=bad), 422)
        assert (body["field"], str(body["value"])) == ("groups", str(bad)), body
    assert str(route.MAX_GROUPS) in problem(_get(env, groups=99), 422)["allowed"]
    # 4 devices with readings, at least 2 per group: at most 2 groups (before: 1 to 4, and
    # 3 or 4 groups kept one-device groups and flagged their twins odd)
    for bad in (3, 5):
        body = problem(_get(env, groups=bad), 422)
        assert (body["reason"], body["field"], body["value"]) == ("too_many_groups", "groups",
                                                                  bad)
        assert "from 1 to 2 (the 4 devices with readings, at least 2 per group)" in body[
            "allowed"] and "at most 2 can be made" in body["detail"], body
    assert route.cache_of(env.client.app).keys() == []
    assert 3 not in fits and 5 not in fits  # refused before a fit
    assert _get(env, reference="temp_c").status_code == 200


def test_window_left_out_devices_and_caps(env: Env, fits: list[Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a device silent for more than the window is left out with its last reading,
    devices over MAX_DEVICES are left out (the least recently seen), and a window of more
    than MAX_POINTS points is read as bucket means of a longer common step."""
    now = (int(time.time()) // STEP - 5) * STEP
    two_kinds(env)
    send_kind(env, "old-1", 40.0, end_s=now - 8 * 86400)
    send_kind(env, "late-1", 60.0, end_s=now - 3600)
    monkeypatch.setattr(route, "MAX_DEVICES", 6)
    monkeypatch.setattr(route, "MAX_POINTS", 50)  # 180 minutes in 50 points: 5-minute buckets
    body = _get(env).json()
    left = {d["device"]: d["reason"] for d in body["left_out"]["devices"]}
    assert set(left) == {"old-1", "late-1"} and body["n_devices"] == 6
    assert left["old-1"].startswith("no readings in the 7 days up to the fleet's newest")
    assert "over the cap of 6 devices" in left["late-1"]
    assert body["window"]["bucket_s"] == 300 and body["window"]["max_devices"] == 6
    assert body["n_groups"] == 2


def test_groups_need_an_api_token(env: Env, fits: list[Any]) -> None:
    """Check no token and a bad one are 401, a device secret 403, as on /v1/fleet; any
    role reads."""
    two_kinds(env, COOL[:2], HOT[:2])
    url = "/v1/fleet/groups"
    assert problem(env.client.get(url), 401)["reason"] == "missing_credentials"
    assert problem(env.client.get(url, headers={"Authorization": "Bearer nope"}),
                   401)["reason"] == "bad_credentials"
    assert problem(env.client.get(url, headers=env.device_headers()),
                   403)["reason"] == "device_credentials"
    assert fits == []
    for role in ("viewer", "operator", "admin"):
        assert env.client.get(url, headers=env.auth(role)).status_code == 200


def test_a_request_behind_its_keys_fit_is_429_after_fit_wait_s(
        env: Env, fits: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a request for a grouping whose fit runs long (its key's lock held) is a 429
    ``groups_busy`` after FIT_WAIT_S: the wait for the key had no limit, so such requests
    held threadpool threads for as long as the fit took."""
    two_kinds(env, COOL[:2], HOT[:2])
    cache = route.cache_of(env.client.app)
    monkeypatch.setattr(route, "FIT_WAIT_S", 0.3)
    waited, got = ask_while_held(cache.key_lock((2, None)), lambda: _get(env, groups=2))
    assert waited < 5 and problem(got[0], 429)["reason"] == "groups_busy", got
    assert fits == []
    assert _get(env, groups=2).json()["cached"] is False and fits == [2]


def test_a_busy_fit_slot_is_429_and_a_cached_answer_needs_none(
        env: Env, fits: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a request that finds the fit slot taken for FIT_WAIT_S is a 429 with
    Retry-After (nothing cached), and the cached answer is still served."""
    two_kinds(env, COOL[:2], HOT[:2])
    assert _get(env).status_code == 200
    cache = route.cache_of(env.client.app)
    monkeypatch.setattr(route, "FIT_WAIT_S", 0.2)
    for _ in range(route.MAX_FITS):
        assert cache.fits.acquire(timeout=1)
    try:
        assert _get(env).json()["cached"] is True
        r = _get(env, groups=2)
        assert problem(r, 429)["reason"] == "groups_busy" and r.headers["Retry-After"] == "5"
        assert (2, None) not in cache.keys()
    finally:
        for _ in range(route.MAX_FITS):
            cache.fits.release()
    assert _get(env, groups=2).json()["cached"] is False and fits == [None, 2]


def test_openapi_documents_the_groups_route(env: Env) -> None:
    """Check /openapi.json lists the route with its parameters, its API token, and its 401,
    403, 422 and 429 answers as Problem bodies."""
    op = env.client.get("/openapi.json").json()["paths"]["/v1/fleet/groups"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"groups", "reference"}
    assert not params["groups"]["required"] and not params["reference"]["required"]
    groups_schema = params["groups"]["schema"]["anyOf"][0]
    assert (groups_schema["minimum"], groups_schema["maximum"]) == (1, route.MAX_GROUPS)
    assert op["security"] == [{"apiToken": []}]
    for code in ("401", "403", "422", "429", "503"):
        assert op["responses"][code]["content"]["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"}, code
    assert "too_few_devices" in op["responses"]["422"]["description"]
    assert "7 days" in op["description"] and f"{int(route.TTL_S)} s" in op["description"]


def test_the_window_starts_at_the_first_reading_when_a_metric_starts_later(
        env: Env, fits: list[Any]) -> None:
    """Check window.start is the first reading's bucket even when the metric that sorts
    first (a) starts days after the other (b): the store's histories are sorted by time
    (before: index[0] was a's first time, day 5 of 6)."""
    from edgewise.server.query import format_ns
    from edgewise.telemetry import Reading

    t0 = (int(time.time()) - 6 * 86400) // 3600 * 3600 * 10**9
    rng = np.random.default_rng(0)
    rows = []
    for i in range(4):
        for h in range(6 * 24 + 1):  # 6 days hourly, inside the 7-day window
            t = t0 + h * 3600 * 10**9
            rows.append(Reading(f"d{i}", "b", t, float(10 + i % 2 * 5 + rng.normal(0, 1))))
            if h >= 5 * 24:
                rows.append(Reading(f"d{i}", "a", t, float(5 + rng.normal(0, 1))))
    env.store.append(rows)
    body = _get(env).json()
    win = body["window"]
    assert win["start"] <= format_ns(t0), win
    assert win["start"] >= format_ns(t0 - win["bucket_s"] * 10**9), win
    assert body["n_devices"] == 4 and fits == [None]
