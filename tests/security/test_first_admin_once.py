"""The first admin token is made at a data dir's first start only (Security.ensure_admin_token).

The hunt's case: ``token create --role admin --name ops``, ``token revoke ops`` (the last
admin), then a restart made and printed a new ``first-admin`` token, undoing the revocation.
Data dirs an older version made count as issued when they hold a token or an audit entry of
one made or revoked.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edgewise.security import Security


def _first_start_entries(sec: Security) -> list[str]:
    return [e.action for e in sec.audit_log(1000) if e.actor == "first-start"]


def _as_older_version_left_it(data_dir: Path) -> None:
    """Drop the 'tokens issued' flag, as a data dir an older version wrote has none."""
    with sqlite3.connect(data_dir / "security.sqlite") as db:
        db.execute("DELETE FROM audit_meta WHERE key = 'tokens_issued'")
    db.close()


def test_revoking_the_last_admin_is_not_undone_by_a_restart(data_dir: Path) -> None:
    """Check the hunt's steps leave no admin token after a restart, and no new secret."""
    sec = Security(data_dir)
    sec.create_token("admin", "ops", actor="cli")
    sec.revoke_token("ops", actor="cli")
    sec.close()
    again = Security(data_dir)  # the restart: a new process opens the file
    assert again.ensure_admin_token() is None
    assert again.list_tokens() == [] and not again.has_admin_token()
    assert _first_start_entries(again) == []
    again.close()


def test_first_start_makes_one_admin_token_and_never_another(data_dir: Path) -> None:
    """Check a new data dir gets one admin token, seen by every connection, and none after it
    is revoked, from this connection or another."""
    sec, other = Security(data_dir), Security(data_dir)
    token = sec.ensure_admin_token()
    assert token is not None and sec.authenticate_token(token).name == "first-admin"
    assert other.ensure_admin_token() is None and other.has_admin_token()
    sec.revoke_token("first-admin")
    assert sec.ensure_admin_token() is None and other.ensure_admin_token() is None
    assert not other.has_admin_token()
    assert _first_start_entries(sec) == ["token.create"]
    sec.close()
    other.close()


def test_a_token_made_before_the_first_start_counts_as_issued(data_dir: Path) -> None:
    """Check a token made on the CLI before the first serve means no token is made at start
    (the start says how to make an admin one instead)."""
    sec = Security(data_dir)
    sec.create_token("viewer", "grafana")
    assert sec.ensure_admin_token() is None and not sec.has_admin_token()
    sec.close()


def test_older_data_dirs_count_as_issued_by_their_tokens_or_audit(tmp_path: Path) -> None:
    """Check the migration: a data dir with a token left, or with none left but an audit
    entry of one made, gets no token at start; one with neither (only devices) does."""
    revoked, kept, devices_only = (tmp_path / n for n in ("revoked", "kept", "devices"))
    sec = Security(revoked)
    sec.create_token("admin", "ops")
    sec.revoke_token("ops")
    sec.close()
    sec = Security(kept)
    sec.create_token("viewer", "grafana")
    sec.close()
    sec = Security(devices_only)
    sec.add_device("pump-1")
    sec.close()
    for d in (revoked, kept, devices_only):
        _as_older_version_left_it(d)
    for d in (revoked, kept):
        sec = Security(d)
        assert sec.ensure_admin_token() is None, d.name
        assert _first_start_entries(sec) == [], d.name
        sec.close()
    sec = Security(devices_only)
    token = sec.ensure_admin_token()
    assert token is not None and sec.authenticate_token(token).role == "admin"
    sec.close()
