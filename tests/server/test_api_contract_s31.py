"""The REST API answers what its OpenAPI spec says, and the spec says what the API answers.

An API contract hunt found: body fields the API did not know dropped in silence (a typo'd
``group`` registered a device in no group, ``nmae`` named a token after its role, ``notes``
lost the note); 429 answered by every API-token route but documented by none; a body sent
to a route that takes none refused with an undocumented 413 before the route's own 401;
FastAPI's validation problems echoing a 60,000-character value in full (the ``Problem``
schema says "shortened"); a ``readings.csv`` example whose columns were not in the order
the CSV writes them; reasons of 404/409 the spec did not name; and an ``Authorization``
header parameter, which OpenAPI ignores (Swagger UI showed a dead field), on the device
routes.

The tests whose requests are refused (or only read) share one app (``module_env``); those
that create, label or send have one of their own.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.store.base import Alert
from tests.server.conftest import Env, build_env, problem


@pytest.fixture(scope="module")
def spec(module_env: Env) -> dict[str, Any]:
    """The app's OpenAPI spec (the same for every app: the module's own serves it)."""
    return module_env.client.get("/openapi.json").json()


def _operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            yield method, path, op


def _url(path: str) -> str:
    """``path`` with every path parameter filled in (ids no one has)."""
    for name in ("device_id", "alert_id", "sha256", "metric"):
        path = path.replace("{" + name + "}", "0")
    return path


# -- 1. a body field the route does not know is refused, naming it -----------------------

def _alert(env: Env) -> str:
    t0 = (int(time.time()) - 600) * 10**9
    return env.store.add_alert(Alert(env.device, t0, t0 + 3 * 10**9, 0.99)).id


@pytest.mark.parametrize("path, body, field, role", [
    ("/v1/devices", {"name": "pump-7", "group": ["line-a"]}, "group", "admin"),
    ("/v1/tokens", {"role": "viewer", "nmae": "ci-bot"}, "nmae", "admin"),
    ("/v1/alerts/{alert}/label", {"label": "false_alarm", "notes": "cleaned"}, "notes",
     "operator"),
    ("/v1/labels", {"device_id": "pump-1", "start": "2024-01-01T00:00:00Z",
                    "end": "2024-01-01T00:10:00Z", "label": "normal", "notes": "cleaned"},
     "notes", "operator"),
])
def test_a_typod_body_field_is_a_422_naming_it_and_nothing_is_done(
        env: Env, path: str, body: dict[str, Any], field: str, role: str) -> None:
    """Check a body field the route does not know is refused with a 422 naming it, its
    value, and the fields the body takes (as POST /v1/registry/rollouts refuses one), and
    nothing is created or changed: before, the field was dropped and the rest done."""
    alert = _alert(env)
    tokens_before = len(env.security.list_tokens())
    r = env.client.post(path.replace("{alert}", alert), json=body, headers=env.auth(role))
    got = problem(r, 422)
    assert (got["field"], got["reason"]) == (field, "invalid"), got
    assert got["value"] in (body[field], repr(body[field])), got
    right = {"group": "groups", "nmae": "name", "notes": "note"}[field]
    assert right in got["allowed"] and right in got["detail"], got
    viewer = env.auth("viewer")
    assert [d["name"] for d in env.client.get("/v1/devices", headers=viewer).json()] == [
        "pump-1"]
    assert len(env.security.list_tokens()) == tokens_before
    assert env.client.get(f"/v1/alerts/{alert}", headers=viewer).json()["status"] == "open"
    assert env.client.get("/v1/labels", headers=viewer).json() == []


def test_the_fields_a_body_takes_still_work(env: Env) -> None:
    """Check each body with every field it documents is still taken (the dashboard sends
    {label} to an alert and {device_id, start_ns, end_ns, label} to /v1/labels)."""
    c, admin, op = env.client, env.auth("admin"), env.auth("operator")
    r = c.post("/v1/devices", json={"name": "pump-7", "groups": ["line-a"]}, headers=admin)
    assert r.status_code == 201 and r.json()["groups"] == ["line-a"], r.text
    r = c.post("/v1/tokens", json={"role": "viewer", "name": "ci-bot"}, headers=admin)
    assert r.status_code == 201 and r.json()["name"] == "ci-bot", r.text
    r = c.post(f"/v1/alerts/{_alert(env)}/label", json={"label": "false_alarm"}, headers=op)
    assert r.status_code == 200, r.text
    r = c.post(f"/v1/alerts/{_alert(env)}/label", headers=op,
               json={"label": "true_alarm", "note": "bearing"})
    assert r.status_code == 200 and r.json()["note"] == "bearing", r.text
    t0 = 1_704_067_200 * 10**9
    r = c.post("/v1/labels", headers=op, json={
        "device_id": "pump-1", "start_ns": t0, "end_ns": t0 + 60 * 10**9, "label": "normal"})
    assert r.status_code == 201, r.text
    r = c.post("/v1/labels", headers=op, json={
        "device_id": "pump-1", "start": "2024-01-01T00:00:00Z", "end": 1_704_067_800,
        "label": "anomaly", "note": "noisy"})
    assert r.status_code == 201 and r.json()["note"] == "noisy", r.text


# -- 2. every API-token route documents its 429 --------------------------------------------

def test_every_token_route_documents_the_429_it_answers(data_dir: Path) -> None:
    """Check a wrong Bearer sent with X-Device-Id to a token route is, once the source is
    paused, a 429 with Retry-After, and every API-token operation documents that 429 (with
    its Retry-After header) as a Problem."""
    gen = build_env(data_dir, throttle_after_failures=2)
    env = next(gen)
    try:
        wrong = {"Authorization": "Bearer wrong", "X-Device-Id": env.device}
        for _ in range(2):
            problem(env.client.get("/v1/devices", headers=wrong), 401)
        got = problem(env.client.get("/v1/me", headers=wrong), 429)
        assert got["reason"] == "throttled"
        spec = env.client.get("/openapi.json").json()
        token_ops = [(m, p, op) for m, p, op in _operations(spec)
                     if op.get("security") == [{"apiToken": []}]]
        assert len(token_ops) > 20
        for method, path, op in token_ops:
            resp = op["responses"].get("429")
            assert resp is not None, (method, path, sorted(op["responses"]))
            assert "Retry-After" in resp["headers"], (method, path)
            assert resp["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"}
            assert "X-Device-Id" in resp["description"], (method, path)
    finally:
        gen.close()


# -- 3. a body sent to a route that takes none --------------------------------------------

def test_a_body_sent_to_a_route_that_takes_none_gets_a_documented_answer(
        module_env: Env, spec: dict[str, Any]) -> None:
    """Check each operation without a request body, sent a body over max_body_bytes, answers
    as without one: its own 401 without credentials (not 413, which it does not document),
    and with a token of its role a status it documents. Before, all 23 answered 413."""
    env = module_env
    big = b"x" * (env.settings.max_body_bytes + 1)
    bodiless = [(m, p, op) for m, p, op in _operations(spec) if "requestBody" not in op]
    assert len(bodiless) >= 23
    for method, path, op in bodiless:
        documented = {int(code) for code in op["responses"]}
        assert 413 not in documented, (method, path)
        r = env.client.request(method.upper(), _url(path), content=big)
        want = 200 if path in ("/healthz", "/metrics") else 401
        assert r.status_code == want, (method, path, r.status_code, r.text[:300])
        headers = env.auth("admin") if op.get("security") == [{"apiToken": []}] else \
            env.device_headers()
        r = env.client.request(method.upper(), _url(path), content=big, headers=headers)
        assert r.status_code != 413 and r.status_code in documented, (
            method, path, r.status_code, r.text[:300])


def test_a_body_over_the_limit_is_still_413_where_a_body_is_read(module_env: Env) -> None:
    """Check the limit still holds where a route reads a body: POST /v1/devices (GET on the
    same path takes none), and a path no route serves."""
    env = module_env
    big = b"x" * (env.settings.max_body_bytes + 1)
    admin = env.auth("admin")
    assert env.client.request("GET", "/v1/devices", content=big, headers=admin
                              ).status_code == 200
    problem(env.client.post("/v1/devices", content=big, headers=admin), 413)
    problem(env.client.post("/v1/no-such-route", content=big, headers=admin), 413)


# -- 4. validation problems echo a value shortened ----------------------------------------

def test_a_long_value_fastapi_refuses_is_echoed_shortened(module_env: Env) -> None:
    """Check a 422 made by FastAPI's validation (a body field, a query parameter, an unknown
    field's name) echoes the value cut as route-made problems cut it: 200 characters and
    the length; before, a 60,000-character name came back whole (a 60 KB answer)."""
    env = module_env
    name = "x" * 60_000
    r = env.client.post("/v1/devices", json={"name": name}, headers=env.auth("admin"))
    got = problem(r, 422)
    assert got["field"] == "name"
    assert got["value"] == "x" * 200 + "... (60000 characters)"
    assert len(r.content) < 2_000
    r = env.client.get("/v1/audit", params={"limit": "9x" * 5_000}, headers=env.auth("admin"))
    got = problem(r, 422)
    assert (got["field"], got["value"]) == ("limit", ("9x" * 100) + "... (10000 characters)")
    assert len(r.content) < 2_000
    r = env.client.post("/v1/tokens", json={"role": "viewer", "k" * 5_000: 1},
                        headers=env.auth("admin"))
    got = problem(r, 422)
    assert got["field"] == "k" * 200 + "... (5000 characters)"
    assert len(r.content) < 2_000


_LONG = "x" * 60_000


@pytest.mark.parametrize("method, path, params, body, who, status", [
    ("GET", "/v1/label-queue", {"device": _LONG}, None, "viewer", 422),
    ("GET", "/v1/label-queue", {"device": "pump-1", "strategy": _LONG}, None, "viewer", 422),
    ("GET", "/v1/labels", {"device": _LONG}, None, "viewer", 422),
    ("POST", "/v1/labels", None, {"device_id": _LONG, "start": 0, "end": 10,
                                  "label": "normal"}, "operator", 422),
    ("POST", "/v1/labels", None, {"device_id": "pump-1", "start": 0, "end": 10,
                                  "label": _LONG}, "operator", 422),
    ("GET", f"/v1/devices/{_LONG}/readings", None, None, "viewer", 404),
    ("GET", f"/v1/devices/{_LONG}/readings.csv", None, None, "viewer", 404),
    ("GET", f"/v1/devices/{_LONG}/quality", None, None, "viewer", 404),
    ("GET", f"/v1/devices/pump-1/quality/plots/{_LONG}.png", {"start": "0"}, None, "viewer",
     404),
    ("DELETE", f"/v1/devices/{_LONG}", None, None, "admin", 404),
    ("POST", f"/v1/devices/{_LONG}/telemetry", None, {"temp": 1}, "device", 401),
    ("POST", "/v1/devices/pump-1/telemetry", None, {"temp": 1}, "device-other", 403),
    ("GET", "/v1/devices/pump-1/model", None, None, "device-other", 403),
    ("GET", f"/v1/devices/{_LONG}/model", None, None, "device", 401),
], ids=lambda v: v[:40] if isinstance(v, str) else None)
def test_a_long_id_is_not_repeated_whole_in_the_detail(
        module_env: Env, method: str, path: str, params: dict[str, str] | None,
        body: dict[str, Any] | None, who: str, status: int) -> None:
    """Check a problem about a 60,000-character device id (metric, strategy, label, header)
    quotes it in its ``detail`` cut as its ``value`` is (200 characters and the length):
    the detail repeated it whole, a 60 KB answer, after the value was cut."""
    env = module_env
    headers = {"device": {"Authorization": "Bearer wrong"},
               "device-other": env.device_headers(device=_LONG)}.get(who) or env.auth(who)
    r = env.client.request(method, path, params=params, json=body, headers=headers)
    got = problem(r, status)
    assert "... (60000 characters)" in got["detail"], got["detail"][:300]
    assert len(r.content) < 2_000, (len(r.content), got["detail"][:300])


# -- 4b. a route that takes no body ignores one: what the README says --------------------

def test_ack_ignores_a_body_and_the_readme_says_which_routes_refuse_a_field(
        env: Env) -> None:
    """Check ``POST /v1/alerts/{id}/ack`` sent ``{"note": ...}`` acknowledges and keeps no
    note (the route takes no body: the dashboard and CLI send none), and the README's
    claim that a body field an operation does not take is 422 is said of the routes that
    take a JSON body, naming ack as one that ignores what is sent (it said every route)."""
    alert = _alert(env)
    r = env.client.post(f"/v1/alerts/{alert}/ack", json={"note": "replaced bearing"},
                        headers=env.auth("operator"))
    assert r.status_code == 200 and r.json()["status"] == "acknowledged", r.text
    assert not r.json().get("note"), r.json()
    readme = " ".join((Path(__file__).parents[2] / "README.md").read_text().split())
    assert "Of a route that takes a JSON body, a field it does not take" in readme
    assert "a route that takes none ignores what is sent (`POST /v1/alerts/{id}/ack`" in readme


def test_the_device_secret_header_is_declared_once() -> None:
    """Check the telemetry and model routes use one ``DeviceAuth``, from ``deps`` (it was
    defined twice, with the same comment)."""
    from edgewise.server import deps
    from edgewise.server.routes import models, telemetry

    assert telemetry.DeviceAuth is deps.DeviceAuth and models.DeviceAuth is deps.DeviceAuth
    for module in (telemetry, models):
        assert "\nDeviceAuth = " not in inspect.getsource(module), module.__name__


# -- 5. the readings.csv example is what the CSV is ---------------------------------------

def test_the_readings_csv_example_is_the_csv_the_route_writes(env: Env,
                                                              spec: dict[str, Any]) -> None:
    """Check the documented example of GET /v1/devices/{id}/readings.csv is what the route
    writes for its readings: the metrics sorted (time,rpm,temp_c), not time,temp_c,rpm."""
    example = spec["paths"]["/v1/devices/{device_id}/readings.csv"]["get"]["responses"][
        "200"]["content"]["text/csv"]["example"]
    t0 = 1_706_702_400  # 2024-01-31T12:00:00Z, the example's first row
    r = env.send([{"ts": t0, "seq": 1, "metrics": {"temp_c": 21.5, "rpm": 1480}},
                  {"ts": t0 + 1, "seq": 2, "metrics": {"rpm": 1482}}])
    assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
    r = env.client.get(f"/v1/devices/{env.device}/readings.csv", headers=env.auth("viewer"),
                       params={"start": "2024-01-31T12:00:00Z", "end": "2024-01-31T12:00:02Z"})
    assert r.status_code == 200, r.text
    assert r.text == example


# -- smaller: the reasons of 404/409, and Authorization as no parameter -------------------

def test_the_documented_404_and_409_name_the_reasons_answered(env: Env,
                                                              spec: dict[str, Any]) -> None:
    """Check a quality plot of a metric with nothing flagged (404 'no_plot') and a device
    name whose data the store still holds (409 'has_data') are answered, and their
    operations' 404 and 409 name those reasons."""
    r = env.client.get(f"/v1/devices/{env.device}/quality/plots/temp_c.png",
                       headers=env.auth("viewer"))
    assert problem(r, 404)["reason"] == "no_plot"
    plots = spec["paths"]["/v1/devices/{device_id}/quality/plots/{metric}.png"]["get"]
    assert "'no_plot'" in plots["responses"]["404"]["description"]
    t0 = (int(time.time()) - 600) * 10**9
    env.store.add_alert(Alert("pump-9", t0, t0 + 10**9, 0.99))
    r = env.client.post("/v1/devices", json={"name": "pump-9"}, headers=env.auth("admin"))
    assert problem(r, 409)["reason"] == "has_data"
    r = env.client.post("/v1/devices", json={"name": "pump-1"}, headers=env.auth("admin"))
    assert problem(r, 409)["reason"] == "exists"
    add = spec["paths"]["/v1/devices"]["post"]["responses"]["409"]["description"]
    assert "'has_data'" in add and "'exists'" in add, add


def test_no_operation_declares_authorization_as_a_parameter(env: Env,
                                                            spec: dict[str, Any]) -> None:
    """Check no operation lists an Authorization header parameter (OpenAPI ignores one; Swagger
    UI showed a field that sent nothing), the device routes keep the deviceSecret scheme and
    X-Device-Id, and a device secret still works there."""
    for method, path, op in _operations(spec):
        names = [p["name"].lower() for p in op.get("parameters", []) if p["in"] == "header"]
        assert "authorization" not in names, (method, path, names)
    for path, method in (("/v1/telemetry", "post"), ("/v1/devices/{device_id}/telemetry", "post"),
                         ("/v1/devices/{device_id}/model", "get"),
                         ("/v1/models/{sha256}", "get")):
        op = spec["paths"][path][method]
        assert op["security"] == [{"deviceSecret": []}], path
        assert "x-device-id" in [p["name"] for p in op["parameters"]], path
    assert env.send({"ts": time.time(), "seq": 1, "metrics": {"t": 1.0}}).status_code == 200
    r = env.client.post(f"/v1/devices/{env.device}/telemetry", headers=env.device_headers(),
                        json={"ts": time.time(), "seq": 2, "metrics": {"t": 2.0}})
    assert r.status_code == 200, r.text
    r = env.client.get(f"/v1/devices/{env.device}/model", headers=env.device_headers())
    assert r.status_code in (200, 204), r.text


def test_the_spec_is_valid_openapi(spec: dict[str, Any]) -> None:
    """Check the spec validates as OpenAPI (openapi-spec-validator, where installed)."""
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(spec)
