"""The app as a whole: OpenAPI, health, metrics, the dashboard files, TLS settings, 404s."""

from __future__ import annotations

import importlib
import pkgutil
import re
import time
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

import edgewise.server.routes as routes_pkg
from edgewise.config import Settings
from edgewise.errors import ConfigError
from edgewise.server.app import WEB_DIR, uvicorn_ssl_kwargs
from tests.conftest import self_signed_cert
from tests.server.conftest import Env, problem, serve_in_thread

EXPECTED_ROUTES = {
    ("POST", "/v1/telemetry"),
    ("POST", "/v1/devices/{device_id}/telemetry"),
    ("GET", "/v1/devices"),
    ("POST", "/v1/devices"),
    ("DELETE", "/v1/devices/{device_id}"),
    ("POST", "/v1/devices/{device_id}/secret"),
    ("GET", "/v1/devices/{device_id}/readings"),
    ("GET", "/v1/devices/{device_id}/readings.csv"),
    ("GET", "/v1/fleet"),
    ("GET", "/v1/fleet/groups"),
    ("GET", "/v1/alerts"),
    ("GET", "/v1/alerts/{alert_id}"),
    ("POST", "/v1/alerts/{alert_id}/ack"),
    ("POST", "/v1/alerts/{alert_id}/label"),
    ("POST", "/v1/labels"),
    ("GET", "/v1/labels"),
    ("GET", "/v1/label-queue"),
    ("POST", "/v1/tokens"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit/verify"),
    ("GET", "/v1/me"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/devices/{device_id}/model"),
    ("GET", "/v1/models/{sha256}"),
    ("GET", "/v1/registry"),
    ("GET", "/v1/devices/{device_id}/quality"),
    ("GET", "/v1/devices/{device_id}/quality/plots/{metric}.png"),
    ("GET", "/v1/devices/{device_id}/rul"),
    ("GET", "/v1/devices/{device_id}/forecast"),
    ("POST", "/v1/registry/rollouts"),
}


def test_openapi_lists_every_route_with_a_summary(module_env: Env) -> None:
    """Check /openapi.json documents every API route of the app, each with a summary."""
    env = module_env
    spec = env.client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Edgewise"
    assert "problem+json" in spec["info"]["description"]
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    routed = set()  # every route of every router module, so a module left out is caught
    for mod in pkgutil.iter_modules(routes_pkg.__path__):
        module = importlib.import_module(f"{routes_pkg.__name__}.{mod.name}")
        router = (module.router if hasattr(module, "router")  # a factory needs its parts
                  else module.make_router(env.client.app.state.registry, env.security))
        routed |= {(m, r.path.replace(":path}", "}")) for r in router.routes  # as documented
                   if isinstance(r, APIRoute) and r.include_in_schema for m in r.methods}
    assert documented == routed == EXPECTED_ROUTES
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("summary"), (method, path)
            assert op.get("tags"), (method, path)
            if path not in ("/healthz", "/metrics"):
                assert op["security"], (method, path)
    body = spec["paths"]["/v1/telemetry"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {"compact", "batch", "senml"}


def test_healthz_and_metrics(env: Env) -> None:
    """Check /healthz answers ok and /metrics is Prometheus text that counts ingest."""
    assert env.client.get("/healthz").json() == {"status": "ok", "store": "duckdb"}
    env.send({"ts": int(time.time()) - 1, "metrics": {"a": 1.0, "b": "x"}, "seq": 1})
    resp = env.client.get("/metrics")
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = resp.text
    for name in ("edgewise_readings_ingested_total", "edgewise_readings_stored_total",
                 "edgewise_readings_rejected_total", "edgewise_alerts_total"):
        assert name in text, name
    assert re.search(r'edgewise_readings_rejected_total\{reason="bad_type"\} 1(\.0)?\b', text)


def test_unknown_route_is_a_problem(module_env: Env) -> None:
    """Check a 404 for an unknown path has the problem body too."""
    env = module_env
    body = problem(env.client.get("/v1/nothing", headers=env.auth("viewer")), 404)
    assert "/v1/nothing" in body["detail"]
    problem(env.client.put("/v1/devices", headers=env.auth("admin")), 405)


def test_dashboard_is_served_with_no_outside_sources(module_env: Env) -> None:
    """Check / serves the page, its assets come from the package, and nothing from a CDN."""
    env = module_env
    page = env.client.get("/")
    assert page.status_code == 200 and "<canvas" not in page.text and "app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("app.js", "style.css", "favicon.svg"):
        assert env.client.get(f"/static/{name}").status_code == 200, name
    for f in WEB_DIR.iterdir():
        text = f.read_text()
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), f.name
        assert "cdn" not in text.lower(), f.name


def test_uvicorn_ssl_kwargs(tmp_path: Path) -> None:
    """Check TLS settings: none, both, one missing, a missing file."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    assert uvicorn_ssl_kwargs(Settings()) == {}
    both = uvicorn_ssl_kwargs(Settings(tls_cert=str(cert), tls_key=str(key)))
    assert both == {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    with pytest.raises(ConfigError, match="'--tls-key' is missing"):
        uvicorn_ssl_kwargs(Settings(tls_cert=str(cert)))
    with pytest.raises(ConfigError, match=r"Setting '--tls-cert' has value '.*nope.pem'\. No such"):
        uvicorn_ssl_kwargs(Settings(tls_cert=str(tmp_path / "nope.pem"), tls_key=str(key)))


def test_https_with_a_throwaway_certificate(env: Env, tmp_path: Path) -> None:
    """Check the app serves HTTPS with uvicorn_ssl_kwargs, and a device can send over it."""
    import ssl

    import httpx

    cert, key = self_signed_cert(tmp_path)
    settings = Settings(tls_cert=str(cert), tls_key=str(key))
    ctx = ssl.create_default_context(cafile=str(cert))
    with serve_in_thread(env.client.app, **uvicorn_ssl_kwargs(settings)) as port:
        base = f"https://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", verify=ctx).json()["status"] == "ok"
        resp = httpx.post(f"{base}/v1/telemetry", verify=ctx, headers=env.device_headers(),
                          json={"ts": int(time.time()) - 1, "metrics": {"a": 1.0}, "seq": 1})
        assert resp.json()["ack_seq"] == 1
        with pytest.raises(httpx.ConnectError):  # a client without the cert refuses it
            httpx.get(f"{base}/healthz")


def test_store_and_unexpected_failures_are_problems(env: Env) -> None:
    """Check a failing store is a 503 and a crash a 500, both problem+json, no internals."""
    from fastapi.testclient import TestClient

    client = TestClient(env.client.app, raise_server_exceptions=False)
    env.store.close()
    body = problem(client.get("/v1/devices", headers=env.auth("viewer")), 503)
    assert body["reason"] == "store_error" and body["detail"].endswith("acknowledged.")
    env.security.close()  # sqlite3 now fails in a way no route expects
    body = problem(client.get("/v1/devices", headers=env.auth("viewer")), 500)
    assert body["reason"] == "internal" and "GET /v1/devices" in body["detail"]
    assert "sqlite" not in body["detail"].lower()


def test_api_docs_are_served_from_the_package(module_env: Env) -> None:
    """Check /docs loads Swagger UI from the gateway itself: FastAPI's default page takes it
    from cdn.jsdelivr.net, a blank page on a site with no internet."""
    env = module_env
    page = env.client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text
    scripts = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert scripts and not any(s.startswith(("/", "http:", "https:")) for s in scripts), scripts
    for url in scripts:  # relative to /docs: works under a proxy's path prefix too
        assert env.client.get("/" + url).status_code == 200, url
