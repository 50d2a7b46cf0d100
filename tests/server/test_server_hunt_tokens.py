"""Server hunt, defect 4: ``POST /v1/tokens`` answers the name the token is stored under (the
role when none is given) and its id, and a token name with control characters (which let
``edgewise token list`` print a fake row) is refused, over HTTP and by the CLI alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.security import Security
from tests.server.conftest import Env, problem

FAKE_ROW = "ops\n1f2e3d4c\tfake\tadmin"


def test_the_answer_names_the_token_as_stored(env: Env) -> None:
    """Check a token made without a name is answered with the role as its name (as listed
    and as /v1/me says), and every answer carries the token's id."""
    r = env.client.post("/v1/tokens", json={"role": "operator"}, headers=env.auth("admin"))
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["role"], made["name"]) == ("operator", "operator")
    who = env.security.authenticate_token(made["token"])
    assert made["id"] == who.token_id and made["name"] == who.name
    assert [t.name for t in env.security.list_tokens() if t.id == made["id"]] == ["operator"]
    me = env.client.get("/v1/me", headers={"Authorization": f"Bearer {made['token']}"}).json()
    assert me["name"] == made["name"]
    # names people use pass as given, spaces and letters of any script included
    for name in ("grafana", "CI runner #2", "Zoë's laptop", "ops-東京"):
        r = env.client.post("/v1/tokens", json={"role": "viewer", "name": name},
                            headers=env.auth("admin"))
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name and len(r.json()["id"]) == 8, r.text


@pytest.mark.parametrize("name", [FAKE_ROW, "ops\tadmin", "a\x1b[2Jb", "x\u202eevil",
                                  "line\u2028two", "del\x7f"])
def test_a_name_with_control_characters_is_422(module_env: Env, name: str) -> None:
    env = module_env
    before = {t.id for t in env.security.list_tokens()}
    body = problem(env.client.post("/v1/tokens", json={"role": "admin", "name": name},
                                   headers=env.auth("admin")), 422)
    assert (body["field"], body["value"]) == ("name", name)
    assert "control" in body["detail"] and "control characters" in body["allowed"]
    assert {t.id for t in env.security.list_tokens()} == before


def test_the_cli_refuses_the_same_name_in_one_line(data_dir: Path) -> None:
    """Check 'edgewise token create --name' with a newline and tabs exits non-zero with one
    readable line, and makes no token, so 'token list' shows no fake row."""
    load_commands()
    runner = CliRunner(mix_stderr=False)
    res = runner.invoke(app, ["token", "create", "--role", "admin", "--name", FAKE_ROW,
                              "--data-dir", str(data_dir)])
    assert res.exit_code != 0, res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "control" in lines[0], res.stderr
    assert res.stdout == ""
    sec = Security(data_dir)
    try:
        assert sec.list_tokens() == []
    finally:
        sec.close()
