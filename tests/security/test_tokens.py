"""Listing and revoking API tokens (Security.list_tokens, Security.revoke_token)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgewise.errors import AuthError, InvalidParameterError
from edgewise.security import Security


def test_list_shows_id_name_role_created_and_never_the_secret(data_dir: Path) -> None:
    """Check list_tokens gives each token's id, name, role and creation time, and nothing of
    the secret (the token itself, or any part of it past the fixed 'ew_')."""
    sec = Security(data_dir)
    first = sec.ensure_admin_token()
    grafana = sec.create_token("viewer", "grafana")
    rows = sec.list_tokens()
    assert [(t.name, t.role) for t in rows] == [("first-admin", "admin"), ("grafana", "viewer")]
    assert {f.name for f in dataclasses.fields(rows[0])} == {"id", "name", "role", "created_ns"}
    assert all(len(t.id) == 8 and t.created_ns > 0 for t in rows)
    text = repr(rows)
    assert first is not None
    for secret in (first, grafana):
        assert secret[3:11] not in text
    sec.close()


def test_revoke_by_name_or_id_takes_effect_at_once_everywhere(data_dir: Path) -> None:
    """Check a revoked token is refused at once, also by another connection (another process:
    a running gateway), and the revocation is audited."""
    sec, other = Security(data_dir), Security(data_dir)
    token = sec.create_token("admin", "ci")
    keep = sec.create_token("viewer", "grafana")
    assert other.authenticate_token(token).name == "ci"
    tok = sec.revoke_token("ci", actor="cli")
    assert (tok.name, tok.role) == ("ci", "admin")
    with pytest.raises(AuthError):
        other.authenticate_token(token)
    assert other.authenticate_token(keep).name == "grafana"
    entry = sec.audit_log(1)[0]
    assert (entry.actor, entry.action, entry.target, entry.detail) == (
        "cli", "token.revoke", tok.id, {"role": "admin", "name": "ci"})
    gid = sec.list_tokens()[0].id
    assert sec.revoke_token(gid).name == "grafana"
    with pytest.raises(AuthError):
        other.authenticate_token(keep)
    assert sec.list_tokens() == []
    sec.close()
    other.close()


def test_revoke_unknown_or_ambiguous_names_what_would_be_right(data_dir: Path) -> None:
    """Check an unknown name lists the known names, and a name two tokens share asks for an
    id (naming both) and revokes neither."""
    sec = Security(data_dir)
    sec.create_token("viewer", "grafana")
    a, b = sec.create_token("operator", "bot"), sec.create_token("operator", "bot")
    with pytest.raises(InvalidParameterError, match=r"'nope'.*Known names: 'bot', 'grafana'"):
        sec.revoke_token("nope")
    ids = [t.id for t in sec.list_tokens() if t.name == "bot"]
    with pytest.raises(InvalidParameterError, match=rf"ids {ids[0]}, {ids[1]}\); revoke one by"):
        sec.revoke_token("bot")
    assert sec.authenticate_token(a).name == sec.authenticate_token(b).name == "bot"
    assert sec.revoke_token(ids[1]).id == ids[1]
    assert sec.revoke_token("bot").id == ids[0]
    sec.close()
