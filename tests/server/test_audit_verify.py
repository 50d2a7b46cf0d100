"""GET /v1/audit/verify (admin) and the hashes GET /v1/audit lists."""

from __future__ import annotations

import sqlite3

import pytest

from edgewise.security import AUDIT_GENESIS, audit_hash
from tests.server.conftest import Env, problem


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_verify_is_admin_only(env: Env, role: str) -> None:
    """Check viewer and operator get 403 naming their role; no token gets 401."""
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
