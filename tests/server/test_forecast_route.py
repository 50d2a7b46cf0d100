"""GET /v1/devices/{id}/forecast: a Forecaster fitted on a metric's stored history, cached."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from edgewise.server.routes import forecast as route
from tests.server.conftest import Env, ask_while_held, problem

HOUR = 3600
DAYS = 10  # hourly: 240 readings, enough for horizon 48 with a daily season


def _send_hourly(env: Env, metric: str, days: int, seq0: int = 1,
                 end_s: int | None = None, secret: str | None = None) -> int:
    """``days`` of hourly readings of a daily cycle, the last one at ``end_s`` (by default
    the last whole hour before now, a day ago); returns the last reading's time (s)."""
    end = end_s if end_s is not None else (int(time.time()) // HOUR - 24) * HOUR
    n = days * 24
    ts = end - HOUR * np.arange(n)[::-1]
    rng = np.random.default_rng(len(metric))
    vals = 20 + 5 * np.sin(2 * np.pi * (ts // HOUR % 24) / 24) + rng.normal(0, 0.2, n)
    batch = [{"ts": int(t), "seq": seq0 + i, "metrics": {metric: float(v)}}
             for i, (t, v) in enumerate(zip(ts, vals, strict=True))]
    r = env.send(batch, secret=secret)
    assert r.status_code == 200 and r.json()["accepted"] == n, r.text
    return end


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The horizon of every Forecaster.fit the route makes (wrapped where the route imports
    it: the model itself is the real one)."""
    calls: list[int] = []

    class Counted(route.Forecaster):
        def fit(self, X: Any, y: Any) -> Any:
            calls.append(self.horizon)
            return super().fit(X, y)

    monkeypatch.setattr(route, "Forecaster", Counted)
    return calls


def _get(env: Env, device: str | None = None, role: str = "viewer", **params: Any) -> Any:
    return env.client.get(f"/v1/devices/{device or env.device}/forecast", params=params,
                          headers=env.auth(role))


def test_forecast_of_a_daily_cycle_then_cached_until_a_step_later(env: Env,
                                                                   fits: list[int]) -> None:
    """Check the answer's shape and times (the steps after the last reading, hourly, the
    daily season found, the interval around the forecast, near the cycle), that a second
    call does not refit, another horizon does, a reading less than a step later does not,
    and one a step later does (the forecast then starts a step later)."""
    end = _send_hourly(env, "load_kw", DAYS)
    r = _get(env, metric="load_kw", horizon=12)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["device_id"], body["metric"], body["horizon"]) == (env.device, "load_kw", 12)
    assert (body["step_s"], body["season"], body["season_s"]) == (3600.0, 24, 86400.0)
    assert body["interval"] == 90 and body["cached"] is False
    hist = body["history"]
    assert (hist["readings"], hist["steps"], hist["window_days"], hist["bucket_s"]) == (
        240, 240, 28, None)
    assert hist["end"].startswith(time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(end)))
    fc = body["forecast"]
    assert fc["t"] == [float(end + HOUR * k) for k in range(1, 13)]
    assert fc["time"][0].startswith(time.strftime("%Y-%m-%dT%H:00:00", time.gmtime(end + HOUR)))
    lo, mid, hi = (np.array(fc[k]) for k in ("low", "forecast", "high"))
    assert np.all(lo <= mid) and np.all(mid <= hi) and np.all(hi - lo > 0)
    truth = 20 + 5 * np.sin(2 * np.pi * (np.array(fc["t"]) // HOUR % 24) / 24)
    assert np.abs(mid - truth).max() < 1.0, (mid, truth)  # noise sd 0.2
    assert fits == [12]

    again = _get(env, metric="load_kw", horizon=12).json()
    assert again["cached"] is True and again["forecast"] == fc and fits == [12]
    assert _get(env, metric="load_kw").json()["horizon"] == 48 and fits == [12, 48]

    # a third of a step later: the same grid step (half a step either side of its time),
    # the forecast still holds
    r = env.send({"ts": end + HOUR // 3, "seq": 1000, "metrics": {"load_kw": 21.0}})
    assert r.json()["accepted"] == 1
    assert _get(env, metric="load_kw", horizon=12).json()["cached"] is True
    assert fits == [12, 48]
    # a step later: refitted, and the forecast starts after the new reading
    env.send({"ts": end + HOUR, "seq": 1001, "metrics": {"load_kw": 20.5}})
    moved = _get(env, metric="load_kw", horizon=12).json()
    assert moved["cached"] is False and fits == [12, 48, 12]
    assert moved["forecast"]["t"][0] == end + 2 * HOUR
    assert moved["history"]["readings"] == 242


def test_readings_off_the_hour_are_forecast_at_their_own_times(env: Env,
                                                               fits: list[int]) -> None:
    """Hourly readings at hh:30 (a device that booted at half past): the forecast's times
    are the next readings' times (before: hh:00, half an hour before the next reading), and
    a reading 40 min after the last one (the next hour's, sent early) refits, so the cached
    answer never starts before the newest reading."""
    end = (int(time.time()) // HOUR - 24) * HOUR + HOUR // 2
    _send_hourly(env, "load_kw", DAYS, end_s=end)
    body = _get(env, metric="load_kw", horizon=6).json()
    assert body["forecast"]["t"] == [float(end + HOUR * k) for k in range(1, 7)]
    assert env.send({"ts": end + 2400, "seq": 10_000, "metrics": {"load_kw": 20.0}}
                    ).status_code == 200
    again = _get(env, metric="load_kw", horizon=6).json()
    assert again["cached"] is False and fits == [6, 6]
    assert again["forecast"]["t"][0] == end + 2 * HOUR


def test_forecast_is_refitted_after_the_ttl(env: Env, fits: list[int],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a cached forecast older than TTL_S is fitted again with no newer reading."""
    _send_hourly(env, "load_kw", DAYS)
    assert _get(env, metric="load_kw", horizon=6).json()["cached"] is False
    monkeypatch.setattr(route, "TTL_S", 0.0)
    assert _get(env, metric="load_kw", horizon=6).json()["cached"] is False
    assert fits == [6, 6]


def test_forecast_errors_name_the_field_and_are_not_cached(env: Env, fits: list[int]) -> None:
    """Check an unknown device and metric are 404s, a short history and a horizon out of
    range 422s naming the field, the value and what is allowed; failures are not cached."""
    _send_hourly(env, "load_kw", DAYS)
    _send_hourly(env, "short_kw", 4, seq0=5000)  # 96 steps

    body = problem(_get(env, device="nope-9", metric="load_kw"), 404)
    assert (body["reason"], body["field"], body["value"]) == ("unknown_device", "device_id",
                                                              "nope-9")
    body = problem(_get(env, metric="rpm"), 404)
    assert (body["reason"], body["field"], body["value"]) == ("unknown_metric", "metric", "rpm")
    assert "'load_kw'" in body["allowed"] and "'short_kw'" in body["allowed"]

    body = problem(_get(env, metric="short_kw"), 422)
    assert (body["reason"], body["field"], body["value"]) == ("too_little_history", "metric",
                                                              "short_kw")
    assert "at least 212 steps of 1h" in body["detail"], body["detail"]
    assert "got 96 steps" in body["detail"] and body["history_steps"] == 96
    assert "shorter horizon" in body["allowed"]
    # the same history with a horizon it can hold
    assert _get(env, metric="short_kw", horizon=6).status_code == 200

    for bad in (0, route.MAX_HORIZON + 1, "soon"):
        body = problem(_get(env, metric="load_kw", horizon=bad), 422)
        assert (body["field"], str(body["value"])) == ("horizon", str(bad)), body
    assert str(route.MAX_HORIZON) in problem(_get(env, metric="load_kw", horizon=10**6),
                                             422)["allowed"]
    assert problem(env.client.get(f"/v1/devices/{env.device}/forecast",
                                  headers=env.auth("viewer")), 422)["field"] == "metric"

    cache = route.cache_of(env.client.app)
    assert cache.keys() == [(env.device, "short_kw", 6)]
    problem(_get(env, metric="short_kw"), 422)  # fitted again: the failure was not kept
    assert fits == [48, 6, 48]


def test_forecast_needs_an_api_token(env: Env, fits: list[int]) -> None:
    """Check no token and a bad one are 401, a device secret 403 (or 401 without its id),
    as on the other read routes; any role reads."""
    _send_hourly(env, "load_kw", DAYS)
    url = f"/v1/devices/{env.device}/forecast?metric=load_kw&horizon=6"
    assert problem(env.client.get(url), 401)["reason"] == "missing_credentials"
    assert problem(env.client.get(url, headers={"Authorization": "Bearer nope"}),
                   401)["reason"] == "bad_credentials"
    assert problem(env.client.get(url, headers=env.device_headers()),
                   403)["reason"] == "device_credentials"
    assert problem(env.client.get(url, headers={"Authorization": f"Bearer {env.secret}"}),
                   401)["field"] == "Authorization"
    assert fits == []
    for role in ("viewer", "operator", "admin"):
        assert env.client.get(url, headers=env.auth(role)).status_code == 200


def test_deleting_the_device_drops_its_cached_forecasts(env: Env, fits: list[int]) -> None:
    """Check DELETE /v1/devices/{id} drops the device's fitted models (another device's
    stay), and a device registered again under the id is fitted on its own data."""
    _send_hourly(env, "load_kw", DAYS)
    other, secret = env.security.add_device("pump-2")
    r = env.send([{"ts": int(time.time()) - 86400 * DAYS + HOUR * i, "seq": i + 1,
                   "metrics": {"load_kw": float(np.sin(i / 3.8))}} for i in range(24 * DAYS)],
                 device=other, secret=secret)
    assert r.json()["accepted"] == 24 * DAYS, r.text
    assert _get(env, metric="load_kw", horizon=6).status_code == 200
    assert _get(env, device=other, metric="load_kw", horizon=6).status_code == 200
    cache = route.cache_of(env.client.app)
    assert sorted(cache.keys()) == [(env.device, "load_kw", 6), (other, "load_kw", 6)]

    assert env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin")).status_code \
        == 200
    assert cache.keys() == [(other, "load_kw", 6)]
    assert problem(_get(env, metric="load_kw", horizon=6), 404)["reason"] == "unknown_device"

    _, secret = env.security.add_device(env.device)
    end = _send_hourly(env, "load_kw", DAYS, end_s=(int(time.time()) // HOUR - 2) * HOUR,
                       secret=secret)
    fits.clear()
    again = _get(env, metric="load_kw", horizon=6).json()
    assert again["cached"] is False and fits == [6]
    assert again["forecast"]["t"][0] == end + HOUR


def test_openapi_documents_the_forecast_route(env: Env) -> None:
    """Check /openapi.json lists the route with its parameters, its API token, and its 401,
    403, 404 and 422 answers as Problem bodies."""
    spec = env.client.get("/openapi.json").json()
    op = spec["paths"]["/v1/devices/{device_id}/forecast"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"device_id", "metric", "horizon"}
    assert params["metric"]["required"] is True
    assert params["horizon"]["schema"]["maximum"] == route.MAX_HORIZON
    assert params["horizon"]["schema"]["default"] == 48
    assert op["security"] == [{"apiToken": []}]
    for code in ("401", "403", "404", "422", "429", "503"):
        content = op["responses"][code]["content"]
        assert content["application/problem+json"]["schema"] == {
            "$ref": "#/components/schemas/Problem"}, code
    assert "unknown_metric" in op["responses"]["404"]["description"]
    assert "too_little_history" in op["responses"]["422"]["description"]
    assert "Retry-After" in op["responses"]["429"]["headers"]
    assert "28 days" in op["description"]


@pytest.mark.parametrize("shift_h", [0, 1, 2])
def test_a_dense_window_is_averaged_per_bucket(env: Env, fits: list[int], shift_h: int,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a window of more than MAX_READINGS readings is fitted on the store's bucket
    means, of the smallest common step that keeps it within them (here 3 h), wherever the
    last reading falls in its bucket."""
    end = _send_hourly(env, "load_kw", DAYS,
                       end_s=(int(time.time()) // 10800 - 8) * 10800 + shift_h * HOUR)
    monkeypatch.setattr(route, "MAX_READINGS", 100)  # 240 readings over 239 h: 3 h buckets
    body = _get(env, metric="load_kw", horizon=4).json()
    assert (body["step_s"], body["history"]["bucket_s"]) == (10800.0, 10800.0), body
    start = end - (24 * DAYS - 1) * HOUR
    buckets = end // 10800 - start // 10800 + 1  # 80 or 81, by where the hours fall
    assert body["history"]["readings"] == buckets and body["season"] == 8
    assert body["forecast"]["t"][0] == (end // 10800 + 1) * 10800


def test_a_request_behind_its_keys_fit_is_429_after_fit_wait_s(
        env: Env, fits: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a request for a (device, metric, horizon) whose fit runs long (its key's lock
    held) is a 429 ``forecasts_busy`` after FIT_WAIT_S: the wait for the key had no limit,
    so such requests held threadpool threads for as long as the fit took."""
    _send_hourly(env, "load_kw", DAYS)
    cache = route.cache_of(env.client.app)
    monkeypatch.setattr(route, "FIT_WAIT_S", 0.3)
    waited, got = ask_while_held(cache.key_lock((env.device, "load_kw", 6)),
                                 lambda: _get(env, metric="load_kw", horizon=6))
    assert waited < 5 and problem(got[0], 429)["reason"] == "forecasts_busy", got
    assert fits == []
    assert _get(env, metric="load_kw", horizon=6).json()["cached"] is False


def test_fits_beyond_the_limit_wait_then_are_429(env: Env, fits: list[int],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a request that finds every fit slot taken for FIT_WAIT_S is a 429 with
    Retry-After (nothing cached), and is answered once a slot is free; a cached forecast
    needs no slot."""
    _send_hourly(env, "load_kw", DAYS)
    assert _get(env, metric="load_kw", horizon=6).status_code == 200
    cache = route.cache_of(env.client.app)
    monkeypatch.setattr(route, "FIT_WAIT_S", 0.2)
    for _ in range(route.MAX_FITS):  # as if MAX_FITS other fits were running
        assert cache.fits.acquire(timeout=1)
    try:
        assert _get(env, metric="load_kw", horizon=6).json()["cached"] is True
        r = _get(env, metric="load_kw", horizon=12)
        body = problem(r, 429)
        assert body["reason"] == "forecasts_busy" and r.headers["Retry-After"] == "2"
        assert (env.device, "load_kw", 12) not in cache.keys()
    finally:
        for _ in range(route.MAX_FITS):
            cache.fits.release()
    assert _get(env, metric="load_kw", horizon=12).json()["cached"] is False
    assert fits == [6, 12]
