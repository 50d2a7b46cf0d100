"""GET /v1/audit/verify (admin) and the hashes GET /v1/audit lists."""

from __future__ import annotations

import sqlite3

import pytest

from edgewise.security import AUDIT_GENESIS, audit_hash
from tests.server.conftest import Env, problem


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_verify_is_admin_only(module_env: Env, role: str) -> None:
    """Check viewer and operator get 403 naming their role; no token gets 401."""
    env = module_env
    body = problem(env.client.get("/v1/audit/verify", headers=env.auth(role)), 403)
    assert (body["field"], body["value"]) == ("role", role)
    assert "admin" in body["allowed"]
    problem(env.client.get("/v1/audit/verify"), 401)


def test_verify_returns_the_result_and_finds_an_edit(env: Env) -> None:
    """Check admin gets ok/checked/head; after a detail is edited in the file, ok is false
    with the entry's id; a recorded head is checked; a malformed one is a 422."""
    resp = env.client.get("/v1/audit/verify", headers=env.auth("admin"))
    assert resp.status_code == 200, resp.text
    good = resp.json()
    n = len(env.security.audit_log(1000))
    assert (good["ok"], good["checked"], good["head_id"], good["bad_id"]) == (True, n, n, None)
    assert good["head"] == f"{n}:{good['head_hash']}"
    again = env.client.get("/v1/audit/verify", params={"expect": good["head"]},
                           headers=env.auth("admin")).json()
    assert again["ok"] is True

    db = sqlite3.connect(env.settings.data_dir / "security.sqlite", isolation_level=None)
    db.execute("UPDATE audit SET detail = '{\"role\": \"admin\"}' WHERE id = 2")
    db.close()
    bad = env.client.get("/v1/audit/verify", headers=env.auth("admin")).json()
    assert (bad["ok"], bad["bad_id"], bad["problem"]) == (False, 2, "edited")
    assert "Entry 2" in bad["reason"]

    body = problem(env.client.get("/v1/audit/verify", params={"expect": "12"},
                                  headers=env.auth("admin")), 422)
    assert "'12'" in body["detail"]


def test_audit_entries_carry_their_hashes(env: Env) -> None:
    """Check GET /v1/audit lists prev_hash and hash, recomputable from the entry itself."""
    entries = env.client.get("/v1/audit", headers=env.auth("admin")).json()
    assert entries, entries
    oldest_first = list(reversed(entries))
    assert oldest_first[0]["prev_hash"] == AUDIT_GENESIS
    for before, e in zip([None, *oldest_first], oldest_first, strict=False):
        assert e["prev_hash"] == (before["hash"] if before else AUDIT_GENESIS)
        assert e["hash"] == audit_hash(e["prev_hash"], e["id"], e["ts_ns"], e["actor"],
                                       e["action"], e["target"], e["detail"])


def test_a_malformed_expect_names_the_parameter_and_its_value(env: Env) -> None:
    """Check the 422 for a malformed head says field 'expect' and the value sent, a long
    one cut, as InvalidParameterError carries them (they used to be null)."""
    body = problem(env.client.get("/v1/audit/verify", params={"expect": "garbage"},
                                  headers=env.auth("admin")), 422)
    assert (body["field"], body["value"], body["reason"]) == ("expect", "garbage", "invalid")
    long = "7:" + "z" * 500
    body = problem(env.client.get("/v1/audit/verify", params={"expect": long},
                                  headers=env.auth("admin")), 422)
    assert body["value"] == f"{long[:200]}... (502 characters)"


def test_the_audit_log_pages_by_id_to_its_first_entry(env: Env) -> None:
    """Check GET /v1/audit pages newest first by before_id: following the Link rel="next"
    header lists every entry once, down to entry 1, and the last page has no Link; an
    explicit before_id starts below that id; a before_id below 1 is a 422 naming it. Entries
    older than the newest 10,000 (the largest limit) used to be out of reach: before_id was
    ignored."""
    for i in range(5):
        env.security.audit("cli", "test.page", f"t{i}")
    n = env.security.audit_log(1)[0].id
    seen: list[int] = []
    url: str | None = "/v1/audit?limit=2"
    while url is not None:
        r = env.client.get(url, headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        page = [e["id"] for e in r.json()]
        assert 1 <= len(page) <= 2 and page == sorted(page, reverse=True)
        seen += page
        link = r.headers.get("link")
        url = link[1:link.index(">")] if link else None
        assert url is None or url.startswith("audit?"), url  # relative to the request's
        url = url and str(r.request.url.join(url))
        assert url is None or url.endswith(f"before_id={page[-1]}"), url
    assert seen == list(range(n, 0, -1))
    r = env.client.get("/v1/audit", params={"before_id": 3}, headers=env.auth("admin"))
    assert [e["id"] for e in r.json()] == [2, 1] and "link" not in r.headers
    body = problem(env.client.get("/v1/audit", params={"before_id": 0},
                                  headers=env.auth("admin")), 422)
    assert body["field"] == "before_id"
