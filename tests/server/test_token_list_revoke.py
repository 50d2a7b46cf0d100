"""``edgewise token list`` and ``edgewise token revoke`` against a live app."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from tests.server.conftest import Env

load_commands()


def _run(data_dir: Path, *args: str):
    return CliRunner(mix_stderr=False).invoke(app, [*args, "--data-dir", str(data_dir)])


def test_revoked_token_gets_401_at_once_on_a_running_app(env: Env) -> None:
    """Check `token revoke NAME` makes a running gateway answer 401 on the very next request,
    with no restart, while other tokens still work."""
    data = env.settings.data_dir
    assert env.client.get("/v1/devices", headers=env.auth("admin")).status_code == 200
    res = _run(data, "token", "revoke", "test-admin")
    assert res.exit_code == 0, res.stderr
    assert "test-admin" in res.stdout and "revoked" in res.stdout
    resp = env.client.get("/v1/devices", headers=env.auth("admin"))
    assert resp.status_code == 401, resp.text
    assert "unknown or revoked" in resp.json()["detail"]
    assert env.client.get("/v1/devices", headers=env.auth("viewer")).status_code == 200


def test_list_shows_tokens_never_their_secrets(env: Env) -> None:
    """Check `token list` (text and --json) names every token's id, name and role, and holds
    no token secret."""
    data = env.settings.data_dir
    res = _run(data, "token", "list", "--json")
    assert res.exit_code == 0, res.stderr
    rows = json.loads(res.stdout)
    assert [(r["name"], r["role"]) for r in rows] == [
        ("test-viewer", "viewer"), ("test-operator", "operator"), ("test-admin", "admin")]
    assert all(set(r) == {"id", "name", "role", "created"} for r in rows)
    text = _run(data, "token", "list")
    assert text.exit_code == 0 and rows[0]["id"] in text.stdout
    for secret in env.tokens.values():
        assert secret[3:] not in res.stdout + text.stdout


def test_revoke_bad_input_is_one_line_naming_what_is_right(env: Env) -> None:
    """Check an unknown name lists the known names, a shared name asks for the id, each in one
    line with a non-zero exit, and that then revoking by id works."""
    data = env.settings.data_dir
    res = _run(data, "token", "revoke", "nope")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "'nope'" in res.stderr and "'test-admin', 'test-operator', 'test-viewer'" in res.stderr
    env.security.create_token("viewer", "test-viewer")
    res = _run(data, "token", "revoke", "test-viewer")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "revoke one by its id" in res.stderr
    first = json.loads(_run(data, "token", "list", "--json").stdout)[0]
    res = _run(data, "token", "revoke", first["id"], "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["id"] == first["id"], res.stderr
    resp = env.client.get("/v1/devices", headers=env.auth("viewer"))
    assert resp.status_code == 401, resp.text
