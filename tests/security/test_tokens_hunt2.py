"""API token names after API bug hunt 2: a name never passes for another token's id (bug 3),
and the name limit is one, Security.create_token's, for the CLI and HTTP alike (bug 4)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import AuthError, InvalidParameterError
from edgewise.security.credentials import MAX_TOKEN_NAME, Security

load_commands()


@pytest.fixture
def sec(tmp_path: Path) -> Iterator[Security]:
    s = Security(tmp_path)
    yield s
    s.close()


def _cli(data_dir: Path, *args: str):
    return CliRunner(mix_stderr=False).invoke(app, [*args, "--data-dir", str(data_dir)])


def _rename(data_dir: Path, token_id: str, name: str) -> None:
    """Give a token a name as a database made before the rule could hold it."""
    with sqlite3.connect(data_dir / "security.sqlite") as db:
        db.execute("UPDATE tokens SET name = ? WHERE id = ?", (name, token_id))


@pytest.mark.parametrize("name", ["5b0205fc", "DEADBEEF", "12345678"])
def test_a_name_of_a_token_ids_form_is_refused(sec: Security, name: str) -> None:
    """Check an admin token cannot be named with (what may be) another token's id."""
    with pytest.raises(InvalidParameterError, match="must not look like a token id") as e:
        sec.create_token("admin", name)
    assert (e.value.field, e.value.value) == ("name", name)
    assert sec.list_tokens() == []


@pytest.mark.parametrize("name", ["5b0205f", "5b0205fc0", "ci-5b0205fc", "grafana"])
def test_other_names_are_fine(sec: Security, name: str) -> None:
    sec.create_token("viewer", name)
    assert [t.name for t in sec.list_tokens()] == [name]


def test_the_name_of_an_existing_id_of_another_form_is_refused(sec: Security,
                                                               tmp_path: Path) -> None:
    sec.create_token("viewer", "grafana")
    with sqlite3.connect(tmp_path / "security.sqlite") as db:
        db.execute("UPDATE tokens SET id = 'legacy-1'")
    with pytest.raises(InvalidParameterError, match="another token's id"):
        sec.create_token("admin", "legacy-1")


def test_no_id_is_issued_equal_to_a_name(sec: Security, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a new id never equals an (old) token's name: the first draw is skipped."""
    sec.create_token("viewer", "grafana")
    _rename(tmp_path, sec.list_tokens()[0].id, "0000aaaa")
    draws = iter(["0000aaaa", "1111bbbb"])
    monkeypatch.setattr("edgewise.security.credentials.secrets.token_hex",
                        lambda n: next(draws))
    sec.create_token("admin", "ops")
    assert {t.name: t.id for t in sec.list_tokens()}["ops"] == "1111bbbb"


def test_revoke_refuses_an_argument_that_is_an_id_and_a_name(sec: Security,
                                                            tmp_path: Path) -> None:
    """The hunt's case: an admin token named with a viewer token's id (possible in a
    database made before such names were refused). Revoke took the viewer and left the
    admin token working; now it revokes nothing and asks for the id."""
    viewer = sec.create_token("viewer", "grafana")
    admin = sec.create_token("admin", "x")
    viewer_id, admin_id = (t.id for t in sec.list_tokens())
    _rename(tmp_path, admin_id, viewer_id)
    with pytest.raises(InvalidParameterError) as e:
        sec.revoke_token(viewer_id)
    msg = str(e.value)
    assert "\n" not in msg and viewer_id in msg and admin_id in msg
    assert "both the id of token" in msg and "--id" in msg and "nothing was revoked" in msg
    assert sec.authenticate_token(viewer).role == "viewer"
    assert sec.authenticate_token(admin).role == "admin"
    assert sec.revoke_token(admin_id).role == "admin"  # its own id is unambiguous
    with pytest.raises(AuthError):
        sec.authenticate_token(admin)
    assert sec.revoke_token(viewer_id).role == "viewer"  # now only an id


def test_revoke_by_id_never_matches_names(sec: Security, tmp_path: Path) -> None:
    viewer = sec.create_token("viewer", "grafana")
    admin = sec.create_token("admin", "x")
    viewer_id, admin_id = (t.id for t in sec.list_tokens())
    _rename(tmp_path, admin_id, viewer_id)
    assert sec.revoke_token(viewer_id, by_id=True).id == viewer_id
    with pytest.raises(AuthError):
        sec.authenticate_token(viewer)
    assert sec.authenticate_token(admin).role == "admin"
    with pytest.raises(InvalidParameterError, match="No API token has the id 'grafana'"):
        sec.revoke_token("grafana", by_id=True)


def test_the_cli_refuses_the_ambiguous_revoke_and_takes_id(tmp_path: Path) -> None:
    sec = Security(tmp_path)
    viewer = sec.create_token("viewer", "grafana")
    admin = sec.create_token("admin", "x")
    viewer_id, admin_id = (t.id for t in sec.list_tokens())
    sec.close()
    _rename(tmp_path, admin_id, viewer_id)
    res = _cli(tmp_path, "token", "revoke", viewer_id)
    assert res.exit_code == 2, res.stdout
    line = res.stderr.strip()
    assert line.count("\n") == 0 and viewer_id in line and admin_id in line
    res = _cli(tmp_path, "token", "revoke", "--id", viewer_id)
    assert res.exit_code == 0, res.stderr
    assert f"token {viewer_id} (grafana, role viewer) revoked" in res.stdout
    sec = Security(tmp_path)
    try:
        with pytest.raises(AuthError):
            sec.authenticate_token(viewer)
        assert sec.authenticate_token(admin).role == "admin"
    finally:
        sec.close()


def test_the_cli_refuses_a_name_of_an_ids_form(tmp_path: Path) -> None:
    res = _cli(tmp_path, "token", "create", "--role", "admin", "--name", "5b0205fc")
    assert res.exit_code == 2 and "must not look like a token id" in res.stderr


def test_the_name_limit_is_create_tokens(sec: Security) -> None:
    """Check the CLI's 300-character names (HTTP allowed 64) are refused in one place."""
    sec.create_token("viewer", "n" * MAX_TOKEN_NAME)
    with pytest.raises(InvalidParameterError) as e:
        sec.create_token("viewer", "n" * (MAX_TOKEN_NAME + 1))
    assert e.value.field == "name"
    assert f"at most {MAX_TOKEN_NAME} characters. Got {MAX_TOKEN_NAME + 1} characters" in str(
        e.value)
    assert MAX_TOKEN_NAME == 64  # as the HTTP route always allowed


def test_the_cli_refuses_a_300_character_name(tmp_path: Path) -> None:
    res = _cli(tmp_path, "token", "create", "--role", "viewer", "--name", "n" * 300)
    assert res.exit_code == 2
    assert res.stderr.strip().startswith("error: The 'name' of an API token must be at most 64 "
                                         "characters. Got 300 characters")
    sec = Security(tmp_path)
    try:
        assert sec.list_tokens() == []
    finally:
        sec.close()
