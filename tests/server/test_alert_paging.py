"""Keyset paging of GET /v1/alerts: a Link rel="next" header with a cursor leads past any
``limit``, on DuckDB and on PostgreSQL; filters hold on every page, merged alerts stay
unlisted, and a malformed cursor is a 422 problem naming it.

Before paging, ``limit`` (at most 10,000) was the only control: alerts past the newest
10,000 could not be listed over the API, and an unknown ``cursor`` was silently ignored.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.server.routes.alerts import CURSOR_ALLOWED, encode_cursor
from edgewise.store.base import Alert
from tests.server.conftest import Env, build_env, build_postgres_env, problem

S = 10**9
CREATED = 1_700_000_000 * S  # one creation time for all: ties left to the id


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def api(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[Env]:
    """The app on DuckDB, then on a PostgreSQL schema of its own (dropped afterwards)."""
    if request.param == "duckdb":
        yield from build_env(data_dir)
        return
    yield from build_postgres_env(data_dir, request.getfixturevalue("postgres_url"), "ew_page_")


def _add(env: Env, start_ns: int, device: str = "pump-1", **kw: Any) -> Alert:
    return env.store.add_alert(Alert(device, start_ns, start_ns + 5 * S, 0.9,
                                     created_ns=kw.pop("created_ns", CREATED), **kw))


def _newest_first(alerts: list[Alert]) -> list[str]:
    return [a.id for a in sorted(alerts, key=lambda a: (a.start_ns, a.created_ns, a.id),
                                 reverse=True)]


def _walk(env: Env, params: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """Follow the Link rel="next" headers from the first page: (ids per page, next URLs)."""
    resp = env.client.get("/v1/alerts", params=params, headers=env.auth("viewer"))
    pages, urls = [], []
    while True:
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert isinstance(body, list)
        pages.append([a["id"] for a in body])
        if "next" not in resp.links:
            assert "link" not in resp.headers
            return pages, urls
        link = resp.headers["link"]
        # relative to the request's URL (a proxy's path prefix is kept): resolved as
        # RFC 3986 says, against the URL asked
        assert link.startswith("<alerts?") and link.endswith('>; rel="next"'), link
        urls.append(str(resp.request.url.join(resp.links["next"]["url"])))
        assert len(pages) < 50, "paging did not end"
        resp = env.client.get(urls[-1], headers=env.auth("viewer"))


def test_paging_lists_each_alert_once_in_order(api: Env) -> None:
    """Check 25 alerts (ties in start and creation time at the page edges) come 10, 10, 5
    by following Link rel="next", each once, newest first; a merged one never."""
    t0 = time.time_ns() - 3600 * S
    alerts = [_add(api, t0 + (i // 3) * S) for i in range(25)]  # threes share start_ns
    gone = _add(api, t0 + 4 * S)
    api.store.merge_alert(gone.id, alerts[0].id)

    pages, urls = _walk(api, {"limit": 10})

    assert [len(p) for p in pages] == [10, 10, 5]
    assert [i for p in pages for i in p] == _newest_first(alerts)
    assert all("limit=10" in u and "cursor=" in u for u in urls)
    one = api.client.get("/v1/alerts", params={"limit": 100}, headers=api.auth("viewer"))
    assert [a["id"] for a in one.json()] == _newest_first(alerts) and "link" not in one.headers


def test_filters_hold_on_every_page(api: Env) -> None:
    """Check device, status, kind and since filter each page the Link leads to, alike
    created alerts of other devices, kinds and states in between are never listed."""
    t0 = time.time_ns() - 3600 * S
    wanted = []
    for i in range(12):
        wanted.append(_add(api, t0 + i * S, created_ns=CREATED + i % 2))
        _add(api, t0 + i * S, device="pump-2")
        _add(api, t0 + i * S, kind="seq_gap")
        acked = _add(api, t0 + i * S)
        api.store.update_alert(acked.id, status="acknowledged", acked_by="ops")
    _add(api, t0 - 100 * S)  # ends before `since`
    params = {"device": "pump-1", "status": "open", "kind": "anomaly",
              "since": (t0 - 50 * S) / S, "limit": 5}

    pages, urls = _walk(api, params)

    assert [len(p) for p in pages] == [5, 5, 2]
    assert [i for p in pages for i in p] == _newest_first(wanted)
    for url in urls:
        for key in ("device=pump-1", "status=open", "kind=anomaly", "since=", "limit=5"):
            assert key in url, (key, url)


def test_paging_goes_on_past_a_merge_meanwhile(api: Env) -> None:
    """Check the next page starts right after the page's last alert even when that alert,
    and one not listed yet, were merged away in between: nothing repeats or is lost."""
    t0 = time.time_ns() - 3600 * S
    order = _newest_first([_add(api, t0 + i * S) for i in range(10)])
    first = api.client.get("/v1/alerts", params={"limit": 4}, headers=api.auth("viewer"))
    assert [a["id"] for a in first.json()] == order[:4]
    api.store.merge_alert(order[3], order[0])  # the cursor's own alert
    api.store.merge_alert(order[5], order[6])  # one the next page would have listed

    rest = api.client.get(first.request.url.join(first.links["next"]["url"]),
                          headers=api.auth("viewer"))

    assert [a["id"] for a in rest.json()] == [order[4], *order[6:9]]
    last = api.client.get(rest.request.url.join(rest.links["next"]["url"]),
                          headers=api.auth("viewer"))
    assert [a["id"] for a in last.json()] == [order[9]] and "link" not in last.headers


def test_the_store_pages_by_the_key_of_the_last_alert(api: Env) -> None:
    """Check Store.list_alerts(after=(start_ns, created_ns, id)) lists what follows that
    alert in the listing order, ties in both times broken by id."""
    t0 = time.time_ns()
    for i in range(6):
        _add(api, t0, id=f"a{i:02d}")
    page = api.store.list_alerts(limit=3)
    assert [a.id for a in page] == ["a05", "a04", "a03"]
    last = page[-1]
    after = api.store.list_alerts(limit=10, after=(last.start_ns, last.created_ns, last.id))
    assert [a.id for a in after] == ["a02", "a01", "a00"]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def one_alert(module_env: Env) -> Env:
    """The module's app (shared by the tests that only read) with one alert to list."""
    _add(module_env, time.time_ns())
    return module_env


@pytest.mark.parametrize("cursor", [
    "not a cursor!",
    "abc",                                   # base64 alphabet, not JSON
    "%%%",
    _b64('{"start": 1}'),
    _b64("[1, 2]"),
    _b64('[1.5, 2, "a"]'),
    _b64('[true, 2, "a"]'),
    _b64('[1, 2, ""]'),
    _b64(f'[{2**63}, 2, "a"]'),             # past int64 nanoseconds
    _b64("[" * 3000),                        # nesting deeper than the JSON parser goes
    "A" * 5000,
], ids=lambda c: c[:12])
def test_a_malformed_cursor_is_a_422_naming_it(one_alert: Env, cursor: str) -> None:
    """Check a cursor the API did not give answers 422 with field 'cursor', its value
    (shortened) and what a cursor must be; nothing else is listed."""
    env = one_alert
    resp = env.client.get("/v1/alerts", params={"cursor": cursor}, headers=env.auth("viewer"))
    body = problem(resp, 422)
    assert (body["field"], body["reason"], body["allowed"]) == ("cursor", "bad_cursor",
                                                                 CURSOR_ALLOWED)
    assert body["value"] == (cursor if len(cursor) <= 40 else
                             f"{cursor[:40]}... ({len(cursor)} characters)")
    assert "'cursor'" in body["detail"] and "Link" in body["detail"]


def test_first_page_answers_as_before(env: Env) -> None:
    """Check a listing that fits its limit is the same JSON array of alerts, with no Link,
    and an empty cursor is the first page, as an empty 'since' is no bound."""
    a = _add(env, time.time_ns())
    for params in ({}, {"cursor": ""}, {"limit": 1}):
        resp = env.client.get("/v1/alerts", params=params, headers=env.auth("viewer"))
        assert resp.status_code == 200 and "link" not in resp.headers
        assert [x["id"] for x in resp.json()] == [a.id]
        assert {"id", "device_id", "start", "end", "created", "merged_into"} <= set(
            resp.json()[0])


def test_the_cursor_is_the_listing_key() -> None:
    """Check a cursor is base64url JSON of (start_ns, created_ns, id), without padding."""
    c = encode_cursor(Alert("pump-1", 5, 9, 0.5, id="x/y", created_ns=7))
    assert "=" not in c
    assert json.loads(base64.urlsafe_b64decode(c + "=" * (-len(c) % 4))) == [5, 7, "x/y"]


def test_openapi_documents_cursor_and_link(module_env: Env) -> None:
    """Check /openapi.json names the cursor parameter and the Link header of the listing."""
    env = module_env
    op = env.client.get("/openapi.json").json()["paths"]["/v1/alerts"]["get"]
    assert "cursor" in {p["name"] for p in op["parameters"]}
    assert "Link" in op["responses"]["200"]["headers"]
