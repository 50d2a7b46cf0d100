"""Server hunt s44: query strings checked, HEAD on a stream, one list of security-only writes.

* A query parameter a route does not declare was dropped without a word:
  ``GET /v1/devices/{id}/readings?from=…`` (for ``start``) answered the whole history, and
  ``GET /v1/alerts?device_id=pump-1`` (for ``device``) every device's alerts. It is now 422
  ``unknown_parameter`` naming it, its value, what the route takes and the closest of those.
* ``start=A&start=B`` read B alone (only ``metric`` was refused twice): every parameter
  taken once is now 422 ``repeated_parameter`` naming both values; a list stays repeatable.
* ``HEAD`` on ``readings.csv`` read and formatted the whole history, then dropped it: it now
  ends with the headers, before the CSV's first chunk is made.
* The 503 ``security_busy`` of the OpenAPI was listed apart from ``SECURITY_ONLY_WRITES``,
  the routes that answer it: it is now derived from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI, Query
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

import edgewise.server.readings_csv as readings_csv
from edgewise.server import app as app_module
from edgewise.server.app import HeadAsGet
from edgewise.server.problems import install_problem_handlers
from edgewise.server.query import check_query
from edgewise.telemetry import Reading
from tests.server.conftest import Env, problem, serve_in_thread

T0 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z
S = 10**9


def test_a_mistyped_range_parameter_is_refused_not_the_whole_history(device_env: Env) -> None:
    env = device_env
    env.store.append([Reading(env.device, "a", T0 + i * S, float(i)) for i in range(10)])
    url = f"/v1/devices/{env.device}/readings"
    body = problem(env.client.get(url, params={"from": "2026-01-01T00:00:05Z"},
                                  headers=env.auth("viewer")), 422)
    assert (body["reason"], body["field"], body["value"]) == (
        "unknown_parameter", "from", "2026-01-01T00:00:05Z")
    assert body["type"] == "urn:edgewise:problem:unknown_parameter"
    assert body["allowed"] == "one of metric, start, end, step, limit"
    assert "did you mean 'start'?" in body["detail"]
    assert "GET /v1/devices/{device_id}/readings" in body["detail"]
    # the parameter meant answers the range asked for
    got = env.client.get(url, params={"start": "2026-01-01T00:00:05Z"},
                         headers=env.auth("viewer"))
    assert got.status_code == 200 and got.json()["points"] == 5, got.text


def test_an_undeclared_alert_filter_is_refused_naming_the_one_meant(module_env: Env) -> None:
    body = problem(module_env.client.get("/v1/alerts", params={"device_id": "pump-1"},
                                         headers=module_env.auth("viewer")), 422)
    assert (body["reason"], body["field"], body["value"]) == (
        "unknown_parameter", "device_id", "pump-1")
    assert "did you mean 'device'?" in body["detail"]
    assert body["allowed"] == "one of device, status, kind, since, limit, cursor, explain"
    # a key far from every parameter gets no guess; a route that takes none says so
    body = problem(module_env.client.get("/v1/me?zzz=1", headers=module_env.auth("viewer")),
                   422)
    assert "did you mean" not in body["detail"]
    assert body["allowed"].startswith("none: GET /v1/me takes no query parameters")
    # HEAD names itself
    head = module_env.client.head("/v1/me?zzz=1", headers=module_env.auth("viewer"))
    assert head.status_code == 422 and head.content == b""


def test_a_parameter_given_twice_names_both_values(module_env: Env) -> None:
    url = f"/v1/devices/{module_env.device}/readings?start=1767225600&start=1767225700"
    body = problem(module_env.client.get(url, headers=module_env.auth("viewer")), 422)
    assert (body["reason"], body["field"], body["value"]) == (
        "repeated_parameter", "start", "'1767225600', '1767225700'")
    assert "got 2" in body["detail"]
    body = problem(module_env.client.get("/v1/alerts?limit=5&limit=6",
                                         headers=module_env.auth("viewer")), 422)
    assert (body["field"], body["value"]) == ("limit", "'5', '6'")


def test_credentials_are_checked_before_the_query_string(module_env: Env) -> None:
    """A caller without a valid token gets its 401 (or 403) first, as for a parameter of a
    bad value: the query check of a token route runs once the token passes."""
    c = module_env.client
    assert problem(c.get("/v1/alerts?device_id=x"), 401)["reason"] == "missing_credentials"
    assert problem(c.get("/v1/alerts?device_id=x", headers={"Authorization": "Bearer no"}),
                   401)["reason"] == "bad_credentials"
    assert problem(c.post("/v1/tokens?x=1", json={"role": "viewer", "name": "t"},
                          headers=module_env.auth("viewer")), 403)["reason"] == "forbidden"


def _call(env: Env, method: str, path: str, op: dict[str, Any], query: str) -> httpx.Response:
    url = path.replace("{device_id}", env.device).replace("{alert_id}", "0").replace(
        "{sha256}", "0").replace("{metric}", "0") + query
    headers = (env.device_headers() if op["security"] == [{"deviceSecret": []}]
               else env.auth("admin"))
    kwargs = {"json": {}} if "requestBody" in op else {}
    return env.client.request(method.upper(), url, headers=headers, **kwargs)


def test_every_operation_refuses_an_unknown_parameter_and_does_nothing(env: Env) -> None:
    """Every operation that takes an API token (its OpenAPI lists the 422) refuses a key
    it does not take, before it does anything (the device is still there after its DELETE);
    health and the device protocol read it as absent."""
    spec = env.client.get("/openapi.json").json()
    seen = lenient = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if "health" in op.get("tags", []):
                assert env.client.get(f"{path}?nocache=1").status_code == 200
                continue
            if op["security"] == [{"deviceSecret": []}]:
                r = _call(env, method, path, op, "?nocache=1")
                assert r.status_code != 422 or "unknown_parameter" not in r.text, (path, r.text)
                assert "unknown_parameter" not in op["responses"].get("422", {}).get(
                    "description", ""), (method, path)
                lenient += 1
                continue
            body = problem(_call(env, method, path, op, "?nocache=1"), 422)
            assert (body["reason"], body["field"], body["value"]) == (
                "unknown_parameter", "nocache", "1"), (method, path, body)
            assert "unknown_parameter" in op["responses"]["422"]["description"], (method, path)
            seen += 1
    assert seen >= 25 and lenient >= 2
    assert any(d["id"] == env.device for d in env.client.get(
        "/v1/devices", headers=env.auth("viewer")).json())


def test_every_declared_parameter_passes_the_check(module_env: Env) -> None:
    """What the agent, the CLI and the dashboard send: each key declared where it is sent."""
    env, v = module_env, module_env.auth("viewer")
    dev, rng = env.device, "start=1767225600&end=1767225700"
    ok = [
        (f"/v1/devices/{dev}/readings?metric=&{rng}&step=60s&limit=10", v),
        (f"/v1/devices/{dev}/readings.csv?{rng}&format=long&time_format=epoch_s", v),
        (f"/v1/devices/{dev}/quality?{rng}", v),
        ("/v1/alerts?device=&status=open&kind=anomaly&limit=5&explain=false", v),
        ("/v1/fleet?stale_after=5m", v),
        ("/v1/labels?device=&history=false&limit=5", v),
        ("/v1/audit?limit=5", env.auth("admin")),
        (f"/v1/devices/{dev}/model?formats=pickle&groups=", env.device_headers()),
    ]
    for url, headers in ok:
        r = env.client.get(url, headers=headers)
        assert r.status_code in (200, 204), (url, r.text)


def test_a_newer_agent_s_parameter_is_read_as_absent_by_the_model_offer(module_env: Env
                                                                          ) -> None:
    """The device protocol stays lenient: an agent newer than its gateway may send a
    parameter this gateway does not know, and it must get the offer it would without it
    (the agent's update check relies on that)."""
    env = module_env
    url = f"/v1/devices/{env.device}/model?formats=pickle&groups="
    plain = env.client.get(url, headers=env.device_headers())
    newer = env.client.get(url + "&arch=armv7&arch=x", headers=env.device_headers())
    assert plain.status_code in (200, 204)
    assert (newer.status_code, newer.content) == (plain.status_code, plain.content)


def test_a_parameter_declared_as_a_list_stays_repeatable() -> None:
    app = FastAPI(dependencies=[Depends(check_query)])
    install_problem_handlers(app)

    @app.get("/things")
    def things(tag: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI's way
               one: str | None = None) -> dict[str, Any]:
        return {"tag": tag, "one": one}

    client = TestClient(app)
    assert client.get("/things?tag=a&tag=b&one=x").json() == {"tag": ["a", "b"], "one": "x"}
    assert problem(client.get("/things?one=x&one=y"), 422)["reason"] == "repeated_parameter"
    body = problem(client.get("/things?tags=a"), 422)
    assert (body["reason"], body["allowed"]) == ("unknown_parameter", "one of tag, one")
    assert "did you mean 'tag'?" in body["detail"]


def test_head_of_the_csv_export_makes_none_of_its_body(device_env: Env,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    """HEAD answers the GET's status and headers without reading a chunk of the CSV: it
    used to read and format the whole history (400,000 readings: 101 chunks, ~2 s)."""
    env = device_env
    env.store.append([Reading(env.device, "a", T0 + i * S, float(i)) for i in range(5000)])
    pulled: list[str] = []
    made = readings_csv.csv_chunks

    def counted(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        for chunk in made(*args, **kwargs):
            pulled.append("chunk")
            yield chunk

    monkeypatch.setattr(readings_csv, "CHUNK_ROWS", 100)
    monkeypatch.setattr(readings_csv, "csv_chunks", counted)
    url = f"/v1/devices/{env.device}/readings.csv"
    got = env.client.get(url, headers=env.auth("viewer"))
    assert got.status_code == 200 and len(pulled) > 10
    pulled.clear()
    head = env.client.head(url, headers=env.auth("viewer"))
    assert head.status_code == 200 and head.content == b""
    assert pulled == []
    for key in ("content-type", "content-disposition", "cache-control", "content-length"):
        assert head.headers.get(key) == got.headers.get(key), key


def _streams(log: list[str]) -> FastAPI:
    app = FastAPI()

    def chunks(n: int) -> Iterator[bytes]:
        try:
            for i in range(n):
                log.append(f"chunk {i}")
                yield b"x" * 10
        finally:
            log.append("closed")

    @app.get("/stream")
    def stream() -> StreamingResponse:
        return StreamingResponse(chunks(100), media_type="text/plain")

    @app.get("/sized")
    def sized() -> StreamingResponse:  # a body sent in chunks, with its length
        return StreamingResponse(chunks(100), media_type="text/plain",
                                 headers={"Content-Length": "1000"})

    @app.get("/ping")
    def ping() -> str:  # answered on the same connection once the request before is done
        log.append("ping")
        return "pong"

    app.add_middleware(HeadAsGet)
    return app


def test_head_stops_a_stream_before_its_first_chunk_under_uvicorn() -> None:
    """Under uvicorn (both HTTP parsers), HEAD on a stream makes no chunk, a body sent in
    chunks with a Content-Length stops after its first, and the connection serves the next
    request."""
    log: list[str] = []
    for http in ("h11", "httptools"):
        with serve_in_thread(_streams(log), http=http) as port, \
                httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(2):
                log.clear()
                head = client.head("/stream")
                assert head.status_code == 200 and head.content == b""
                client.get("/ping")
                made = [e for e in log if e != "closed"]  # (closed when collected)
                assert made[:1] == ["ping"], (http, made[:5])
                log.clear()
                assert client.head("/sized").headers["content-length"] == "1000"
                client.get("/ping")
                made = [e for e in log if e != "closed"]
                assert made[:2] == ["chunk 0", "ping"], (http, made[:5])
                got = client.get("/stream")
                assert got.status_code == 200 and len(got.content) == 1000, http


def test_the_security_busy_503_follows_security_only_writes(env: Env,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The OpenAPI's 503 ``security_busy`` is documented for the routes of
    ``SECURITY_ONLY_WRITES`` (which ``security_busy`` answers 503 for), and for those only:
    one list, not two that could drift."""
    writes = app_module.SECURITY_ONLY_WRITES - {("POST", "/v1/tokens")} | {
        ("POST", "/v1/alerts/{alert_id}/ack")}
    monkeypatch.setattr(app_module, "SECURITY_ONLY_WRITES", writes)
    paths = env.client.get("/openapi.json").json()["paths"]

    def busy(method: str, path: str) -> bool:
        resp = paths[path][method.lower()]["responses"].get("503", {})
        return "security_busy" in resp.get("description", "")

    assert busy("POST", "/v1/alerts/{alert_id}/ack") and not busy("POST", "/v1/tokens")
    documented = {(m.upper(), p) for p, ops in paths.items() for m in ops if busy(m, p)}
    assert documented == writes
    # the store's own 503 stays beside it where the route also asks the store
    devices = paths["/v1/devices"]["post"]["responses"]["503"]["description"]
    assert devices.startswith("The store is unavailable") and "Retry-After" in devices
