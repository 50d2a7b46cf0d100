"""``/docs`` keeps the security headers but the CSP: the exemption for its Swagger UI (whose
page runs inline script) skipped them all, so the docs page went out without
``X-Frame-Options: DENY``, ``nosniff`` and ``Referrer-Policy`` (the dashboard test in
test_dashboard_hunt_s39_browser checks Swagger UI still comes up with them)."""

from __future__ import annotations

import pytest

from tests.server.conftest import Env


@pytest.mark.parametrize("path", ["/docs", "/docs/oauth2-redirect"])
def test_docs_keep_every_security_header_but_the_csp(env: Env, path: str) -> None:
    """Check /docs (and what lies under it) answers with X-Frame-Options DENY, nosniff,
    no-referrer and no-store, and without the CSP that would block its inline script;
    every other page keeps the CSP."""
    r = env.client.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["Referrer-Policy"] == "no-referrer"
    assert r.headers["Cache-Control"] == "no-store"
    assert "Content-Security-Policy" not in r.headers
    other = env.client.get("/openapi.json")
    assert "frame-ancestors 'none'" in other.headers["Content-Security-Policy"]
    assert other.headers["X-Frame-Options"] == "DENY"
