"""GET /v1/audit and /v1/audit/verify over an entry whose bytes are not UTF-8 (s45)."""

from __future__ import annotations

import sqlite3

import pytest

from tests.server.conftest import Env


@pytest.mark.parametrize("edit", [
    "UPDATE audit SET actor = CAST(x'ff41' AS TEXT) WHERE id = 2",
    "UPDATE audit SET target = x'ff41' WHERE id = 2",
])
def test_an_entry_that_is_not_utf8_lists_and_verify_names_it(env: Env, edit: str) -> None:
    """Check an entry edited in the file to bytes that are not UTF-8 (text or a blob) is
    listed (U+FFFD for the bytes) and verify answers ok false at its id: both answered 500
    (SQLite's "Could not decode to UTF-8" for every page holding the row; a blob failed
    the JSON encoding), so the admin could neither read the log nor learn where it broke."""
    db = sqlite3.connect(env.settings.data_dir / "security.sqlite", isolation_level=None)
    db.execute(edit)
    db.close()
    r = env.client.get("/v1/audit", params={"limit": 10_000}, headers=env.auth("admin"))
    assert r.status_code == 200, r.text
    shown = {e["id"]: e for e in r.json()}
    assert 2 in shown and "\ufffdA" in (shown[2]["actor"], shown[2]["target"]), shown.get(2)
    r = env.client.get("/v1/audit/verify", headers=env.auth("admin"))
    assert r.status_code == 200, r.text
    assert (r.json()["ok"], r.json()["bad_id"]) == (False, 2), r.json()
