"""Paged lists behind a path-prefix proxy, and the cost of ``GET /v1/alerts?explain=true``.

A bug hunt found:

* the ``Link: rel="next"`` of ``GET /v1/alerts``, ``/v1/labels`` and ``/v1/audit`` was an
  absolute path (``</v1/alerts?…>``): behind a proxy that serves the API under a path
  prefix (``http://host/edgewise/v1/…``, the prefix stripped before the gateway), page 2
  resolved to ``http://host/v1/alerts?…``, a 404 (``edgewise alerts list --gateway
  http://host/edgewise`` stopped there). The link is now relative to the request's URL
  (``alerts?…``), which resolves to the same list directly and behind any prefix.
* ``GET /v1/alerts?explain=true&limit=10000`` explained each alert in turn (~0.25 s each:
  about 40 min of CPU for one request any viewer may send). With ``explain=true`` a
  ``limit`` over 100 is now a 422 naming ``limit`` and the range allowed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from edgewise.server.routes import alerts as alert_routes
from edgewise.store.base import Alert
from tests.server.conftest import Env, problem, serve_in_thread

S = 10**9
PREFIX = "/edgewise"


class StripPrefix:
    """An ASGI proxy in front of ``app`` that serves it under ``PREFIX`` and strips the
    prefix before passing a request on (as nginx ``location /edgewise/ { proxy_pass
    http://gw/; }`` does, telling the app nothing); a path outside the prefix is a 404."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if not path.startswith(PREFIX + "/"):
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"not under " + PREFIX.encode()})
            return
        inner = path[len(PREFIX):]
        await self.app({**scope, "path": inner, "raw_path": inner.encode()}, receive, send)


@pytest.fixture
def proxied(env: Env) -> Iterator[TestClient]:
    """A client of ``env``'s app behind :class:`StripPrefix`."""
    with TestClient(StripPrefix(env.client.app)) as client:
        yield client


def _alerts(env: Env, n: int) -> list[str]:
    """``n`` alerts of pump-1 a second apart; their ids newest first."""
    t0 = time.time_ns() - 3600 * S
    made = [env.store.add_alert(Alert("pump-1", t0 + i * S, t0 + i * S + S, 0.9))
            for i in range(n)]
    return [a.id for a in reversed(made)]


def _labels(env: Env, n: int) -> None:
    t0 = time.time() - 3600
    for i in range(n):
        r = env.client.post("/v1/labels", headers=env.auth("operator"), json={
            "device_id": "pump-1", "start": t0 + 10 * i, "end": t0 + 10 * i + 5,
            "label": "normal"})
        assert r.status_code in (200, 201), r.text


def _audit(env: Env, n: int) -> None:
    for i in range(n):
        r = env.client.post("/v1/tokens", headers=env.auth("admin"),
                            json={"role": "viewer", "name": f"paging-{i}"})
        assert r.status_code in (200, 201), r.text


def _walk(client: TestClient, url: str, headers: dict[str, str]) -> tuple[list[Any], list[str]]:
    """Every item of the list at ``url``, following each page's Link rel="next" resolved
    against the URL that page was asked at (RFC 8288 and 3986), and the raw links."""
    items: list[Any] = []
    links: list[str] = []
    while url:
        resp = client.get(url, headers=headers)
        assert resp.status_code == 200, (url, resp.status_code, resp.text)
        items += resp.json()
        link = resp.links.get("next", {}).get("url")
        if not link:
            return items, links
        links.append(link)
        url = str(resp.request.url.join(link))
        assert len(links) < 50, "paging did not end"
    return items, links


LISTS = {
    # list path, the role that may read it, what fills it, page size
    "alerts": ("/v1/alerts", "viewer", lambda env: _alerts(env, 5), 2),
    "labels": ("/v1/labels", "viewer", lambda env: _labels(env, 5), 2),
    "audit": ("/v1/audit", "admin", lambda env: _audit(env, 5), 2),
}


@pytest.mark.parametrize("name", LISTS)
def test_next_links_are_relative_and_lead_on_directly_and_behind_a_prefix(
        env: Env, proxied: TestClient, name: str) -> None:
    """Check each paged list's Link is relative to the request's URL (``alerts?…``, not
    ``/v1/alerts?…``) and that, resolved against the URL asked, it lists the same items
    directly and through a prefix-stripping proxy (page 2 was a 404 there)."""
    path, role, fill, limit = LISTS[name]
    fill(env)
    headers = env.auth(role)
    whole = env.client.get(f"{path}?limit=10000", headers=headers).json()

    direct, links = _walk(env.client, f"{path}?limit={limit}", headers)
    behind, plinks = _walk(proxied, f"{PREFIX}{path}?limit={limit}", headers)

    assert len(links) >= 2 and all(link.startswith(f"{name}?") for link in links), links
    assert direct == whole and behind == whole
    assert plinks == links  # the proxy changed nothing of the answer
    # resolution as any RFC 3986 client does it, with or without the prefix
    assert httpx.URL(f"http://gw{path}?limit=2").join(links[0]).path == path
    assert httpx.URL(f"http://gw{PREFIX}{path}?limit=2").join(links[0]).path == PREFIX + path


def test_alerts_list_cli_pages_through_a_path_prefix(env: Env,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ``edgewise alerts list --gateway http://host/edgewise`` lists every alert when
    the API pages (it stopped with a 404 on page 2: the link dropped the prefix)."""
    from edgewise.cli import alerts as cli_alerts
    from edgewise.cli import app, load_commands

    load_commands()
    monkeypatch.setattr(cli_alerts, "PAGE", 2)  # pages of 2 alerts, not 500
    ids = _alerts(env, 5)
    with serve_in_thread(StripPrefix(env.client.app)) as port:
        res = CliRunner(mix_stderr=False).invoke(
            app, ["alerts", "list", "--json", "--limit", "10"],
            env={"EDGEWISE_GATEWAY_URL": f"http://127.0.0.1:{port}{PREFIX}",
                 "EDGEWISE_CA_FILE": None, "EDGEWISE_TOKEN": env.tokens["viewer"]})
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert [a["id"] for a in json.loads(res.stdout)] == ids


def test_explain_caps_the_page_at_100(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ``explain=true`` with a ``limit`` over 100 is a 422 naming ``limit``, its value
    and the range allowed, before any alert is explained; 100 and fewer are explained, and
    without ``explain`` the limit stays up to 10,000."""
    ids = _alerts(env, 3)
    explained: list[str] = []
    real = alert_routes.explain_alert

    def counting(store: Any, alert: Any) -> dict[str, Any]:
        explained.append(alert.id)
        return real(store, alert)

    monkeypatch.setattr(alert_routes, "explain_alert", counting)
    viewer = env.auth("viewer")

    for limit in (101, 10_000):
        body = problem(env.client.get("/v1/alerts", params={"explain": "true", "limit": limit},
                                      headers=viewer), 422)
        assert body["field"] == "limit" and body["value"] == limit
        assert body["reason"] == "explain_limit"
        assert "1 to 100" in body["allowed"] and "explain" in body["allowed"]
        assert str(limit) in body["detail"]
    assert explained == []

    ok = env.client.get("/v1/alerts", params={"explain": "true", "limit": 100}, headers=viewer)
    assert ok.status_code == 200, ok.text
    assert [a["id"] for a in ok.json()] == ids and all("explanation" in a for a in ok.json())
    assert explained == ids
    plain = env.client.get("/v1/alerts", params={"limit": 10_000}, headers=viewer)
    assert plain.status_code == 200 and [a["id"] for a in plain.json()] == ids
    # the cap is in the API's description
    spec = env.client.get("/openapi.json").json()["paths"]["/v1/alerts"]["get"]
    limit_doc = next(p for p in spec["parameters"] if p["name"] == "limit")
    assert "100 with explain=true" in limit_doc["description"]
