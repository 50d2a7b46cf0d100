"""RBAC hunt of session 38: HTTP telemetry authenticated with a secret replaced before its
commit stored nothing then (it was stored and acked); an action and its audit entry are one
transaction (an audit write that failed left a rotated secret, a token, a device change
unaudited); the gateway audits a seq_gap acknowledgement only when it made it (a token
named ``gateway`` made it audit one it never made), and such names are refused for
tokens."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.errors import AuthError, InvalidParameterError, PayloadError
from edgewise.gateway.pipeline import Pipeline
from edgewise.security import Security
from edgewise.security.credentials import RESERVED_TOKEN_NAMES
from edgewise.store import open_store
from tests.server.conftest import Env, build_env, make_settings


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from build_env(tmp_path)


# -- 1: a secret replaced while an HTTP request is on its way --------------------------
def _rotate_after_check(env: Env, monkeypatch: pytest.MonkeyPatch, delete: bool = False
                        ) -> None:
    """Make the device's secret change (or the device go) just after the request's
    secret was checked: where a slow body, or a wait for the commit, leaves it."""
    real = env.security.authenticate_device

    def then_rotate(device_id: str, secret: str, **kw: Any) -> Any:
        tag = real(device_id, secret, **kw)
        if delete:
            env.security.delete_device(device_id, actor="test")
        else:
            env.security.rotate_device_secret(device_id, actor="test")
        return tag

    monkeypatch.setattr(env.security, "authenticate_device", then_rotate)


def test_http_telemetry_whose_secret_is_replaced_before_the_commit_stores_nothing(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a request authenticated with the old secret, which is replaced before its body
    is committed, is a 401 (as a new request with that secret is) and stores nothing
    (old code: 200, stored and acked)."""
    _rotate_after_check(env, monkeypatch)
    resp = env.send({"ts": time.time(), "metrics": {"t": 42.0}, "seq": 1})
    assert resp.status_code == 401, resp.text
    assert resp.json()["field"] == "Authorization"
    assert env.store.query(env.device, "t") == []
    assert env.pipeline.metrics.get("edgewise_readings_rejected_total",
                                    reason="unknown_device") == 1


def test_http_telemetry_of_a_device_deleted_before_the_commit_is_a_401(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a device deleted between the check of its secret and the commit gets the
    401 of an unknown device, nothing stored (was a 422 ``unknown_device``)."""
    _rotate_after_check(env, monkeypatch, delete=True)
    resp = env.send({"ts": time.time(), "metrics": {"t": 42.0}, "seq": 1})
    assert resp.status_code == 401, resp.text
    assert env.store.query(env.device, "t") == []


def test_http_telemetry_with_the_current_secret_is_stored(env: Env) -> None:
    """Check the tag check lets the device's current secret through, after a rotation."""
    new = env.security.rotate_device_secret(env.device)
    resp = env.send({"ts": time.time(), "metrics": {"t": 1.0}, "seq": 1}, secret=new)
    assert resp.status_code == 200, resp.text
    assert resp.json()["ack_seq"] == 1
    assert len(env.store.query(env.device, "t")) == 1


def test_pipeline_ingest_refuses_a_stale_credential_tag(tmp_path: Path) -> None:
    """Check ``Pipeline.ingest(credential=...)`` compares the tag under the commit lock:
    the tag of the old secret is ``unknown_device``, the new one's is stored."""
    sec = Security(tmp_path)
    settings = make_settings(tmp_path)
    store = open_store(settings.store_url)
    pipe = Pipeline(store, settings, sec, detect_async=False)
    try:
        _, old = sec.add_device("pump-1")
        stale = sec.authenticate_device("pump-1", old)
        new = sec.rotate_device_secret("pump-1")
        body = b'{"ts": %d, "metrics": {"t": 1.0}, "seq": 1}' % int(time.time())
        with pytest.raises(PayloadError) as err:
            pipe.ingest("pump-1", body, credential=stale)
        assert err.value.reason == "unknown_device"
        assert "replaced" in str(err.value.allowed)
        assert store.query("pump-1", "t") == []
        res = pipe.ingest("pump-1", body, credential=sec.authenticate_device("pump-1", new))
        assert (res.accepted, res.ack_seq) == (1, 1)
    finally:
        pipe.close()
        store.close()
        sec.close()


# -- 2: an action and its audit entry commit together ---------------------------------
def test_a_rotation_whose_audit_entry_fails_is_undone(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a failed ``device.rotate_secret`` entry leaves the old secret in force (old
    code: the device was locked out with a new secret never shown, and unaudited)."""
    sec = Security(tmp_path)
    _, old = sec.add_device("pump-1")
    before = len(sec.audit_log(100))
    monkeypatch.setattr(Security, "_append_audit", _locked)
    with pytest.raises(sqlite3.OperationalError):
        sec.rotate_device_secret("pump-1")
    monkeypatch.undo()
    sec.authenticate_device("pump-1", old)  # still the device's secret
    assert len(sec.audit_log(100)) == before
    sec.close()


def _locked(self: Security, *a: Any, **k: Any) -> Any:
    raise sqlite3.OperationalError("database is locked")


def test_token_and_device_changes_whose_audit_entry_fails_are_undone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check create/revoke token, add/delete device and set groups leave nothing changed
    when their audit entry cannot be written (old code: each stood, unaudited; a new
    admin token existed that no one was shown)."""
    sec = Security(tmp_path)
    sec.create_token("admin", "keep")
    sec.add_device("pump-1", groups=["a"])
    before = len(sec.audit_log(100))
    monkeypatch.setattr(Security, "_append_audit", _locked)
    for act in (lambda: sec.create_token("admin", "ghost"),
                lambda: sec.revoke_token("keep"),
                lambda: sec.add_device("pump-2"),
                lambda: sec.delete_device("pump-1"),
                lambda: sec.set_device_groups("pump-1", ["b"])):
        with pytest.raises(sqlite3.OperationalError):
            act()
    monkeypatch.undo()
    assert [t.name for t in sec.list_tokens()] == ["keep"]
    assert [(d.id, d.groups) for d in sec.list_devices()] == [("pump-1", ("a",))]
    assert len(sec.audit_log(100)) == before
    assert sec.verify_audit().ok
    sec.close()


def test_audited_actions_chain_and_reach_listeners_after_commit(tmp_path: Path) -> None:
    """Check every action's entry is in the hash chain and handed to the audit listeners
    (the syslog forwarder) once committed: a reader of the file sees it already."""
    sec = Security(tmp_path)
    seen: list[tuple[str, bool]] = []

    def listener(entry: Any) -> None:
        db = sqlite3.connect(sec.read_uri, uri=True)
        try:  # another connection: only committed rows show
            there = db.execute("SELECT 1 FROM audit WHERE id = ?", (entry.id,)).fetchone()
        finally:
            db.close()
        seen.append((entry.action, there is not None))

    sec.audit_listeners.append(listener)
    assert sec.ensure_admin_token() is not None
    sec.add_device("pump-1")
    sec.set_device_groups("pump-1", ["a"])
    sec.rotate_device_secret("pump-1")
    sec.create_token("viewer", "grafana")
    sec.revoke_token("grafana")
    sec.delete_device("pump-1")
    sec.audit("cli", "example.action")
    assert seen == [(a, True) for a in (
        "token.create", "device.add", "device.groups", "device.rotate_secret",
        "token.create", "token.revoke", "device.delete", "example.action")]
    result = sec.verify_audit()
    assert result.ok and result.checked == 8, result
    assert [e.actor for e in sec.audit_log(2)] == ["cli", "cli"]
    sec.close()


def test_refused_actions_write_no_audit_entry(tmp_path: Path) -> None:
    """Check a rotation, revocation or deletion that is refused (nothing to act on)
    leaves the audit log as it was."""
    sec = Security(tmp_path)
    with pytest.raises(KeyError):
        sec.rotate_device_secret("ghost")
    with pytest.raises(KeyError):
        sec.delete_device("ghost")
    with pytest.raises(InvalidParameterError):
        sec.revoke_token("ghost")
    assert sec.audit_log(10) == []
    sec.close()


def test_http_rotation_whose_audit_fails_keeps_the_old_secret(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ``POST /v1/devices/{id}/secret`` failing (a 500: the audit write failed;
    the test client raises it) left the device its old secret: it is not locked out by a
    secret never shown (old code: locked out)."""
    monkeypatch.setattr(Security, "_append_audit", _locked)
    with pytest.raises(sqlite3.OperationalError):
        env.client.post(f"/v1/devices/{env.device}/secret", headers=env.auth("admin"))
    monkeypatch.undo()
    ok = env.send({"ts": time.time(), "metrics": {"t": 1.0}, "seq": 1})
    assert ok.status_code == 200, ok.text


# -- 3: the gateway's own acknowledgements, and reserved token names ------------------
def _gap_env(tmp_path: Path) -> tuple[Security, Any, Pipeline]:
    settings = make_settings(tmp_path, seq_gap_grace_s=0.0)
    sec = Security(tmp_path)
    store = open_store(settings.store_url)
    return sec, store, Pipeline(store, settings, sec, detect_async=False, gap_grace_s=0.0)


def _gap_alert(pipe: Pipeline, now: float) -> str:
    for seq in (1, 5):
        pipe.ingest("pump-1", b'{"ts": %f, "metrics": {"t": 1.0}, "seq": %d}'
                    % (now + seq, seq))
    (alert,) = pipe.check_gaps(time.monotonic() + 100)
    return alert.id


def _fill_gap(pipe: Pipeline, now: float) -> None:
    for seq in (2, 3, 4):
        pipe.ingest("pump-1", b'{"ts": %f, "metrics": {"t": 1.0}, "seq": %d}'
                    % (now + seq, seq))
    pipe.check_gaps(time.monotonic() + 200)


def test_an_ack_by_someone_named_gateway_is_not_audited_as_the_gateways(
        tmp_path: Path) -> None:
    """Check a seq_gap alert acknowledged before its gap filled, by anyone named
    ``gateway`` (a token of that name made before such names were refused), gets no
    ``alert.ack`` entry by ``gateway`` when it fills (old code: a false entry)."""
    sec, store, pipe = _gap_env(tmp_path)
    try:
        sec.add_device("pump-1")
        now = time.time()
        aid = _gap_alert(pipe, now)
        pipe.alerts.acknowledge(aid, by="gateway")  # what a token named gateway stored
        _fill_gap(pipe, now)
        assert [e for e in sec.audit_log(50) if e.action == "alert.ack"] == []
    finally:
        pipe.close()
        store.close()
        sec.close()


def test_the_gateways_own_ack_of_a_filled_gap_is_audited(tmp_path: Path) -> None:
    """Check the gateway still audits the acknowledgement it makes when a gap fills."""
    sec, store, pipe = _gap_env(tmp_path)
    try:
        sec.add_device("pump-1")
        now = time.time()
        aid = _gap_alert(pipe, now)
        _fill_gap(pipe, now)
        acks = [e for e in sec.audit_log(50) if e.action == "alert.ack"]
        assert [(e.actor, e.target) for e in acks] == [("gateway", aid)]
        assert store.get_alert(aid).acked_by == "gateway"
    finally:
        pipe.close()
        store.close()
        sec.close()


@pytest.mark.parametrize("name", [*RESERVED_TOKEN_NAMES, "Gateway", " CLI "])
def test_a_token_may_not_take_a_name_the_gateway_acts_under(tmp_path: Path,
                                                             name: str) -> None:
    """Check ``create_token`` refuses the gateway's own actor names, in any case, saying
    which names are reserved (old code: made the token)."""
    sec = Security(tmp_path)
    with pytest.raises(InvalidParameterError) as err:
        sec.create_token("operator", name)
    assert err.value.field == "name" and "gateway" in str(err.value)
    assert sec.list_tokens() == []
    sec.close()


def test_http_token_named_gateway_is_a_422(env: Env) -> None:
    """Check ``POST /v1/tokens`` answers a reserved name with a 422 naming ``name`` and
    the reserved names; a name merely holding one (``gateway-ops``) is fine."""
    resp = env.client.post("/v1/tokens", json={"role": "operator", "name": "gateway"},
                           headers=env.auth("admin"))
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["field"] == "name" and "retention" in body["allowed"]
    ok = env.client.post("/v1/tokens", json={"role": "operator", "name": "gateway-ops"},
                         headers=env.auth("admin"))
    assert ok.status_code == 201, ok.text


def test_a_stale_tag_with_the_device_deleted_is_refused_too(tmp_path: Path) -> None:
    """Check a credential tag of a device deleted since is ``unknown_device`` (deleted)."""
    sec = Security(tmp_path)
    settings = make_settings(tmp_path)
    store = open_store(settings.store_url)
    pipe = Pipeline(store, settings, sec, detect_async=False)
    try:
        _, secret = sec.add_device("pump-1")
        tag = sec.authenticate_device("pump-1", secret)
        sec.delete_device("pump-1")
        with pytest.raises(PayloadError) as err:
            pipe.ingest("pump-1", b'{"metrics": {"t": 1.0}}', credential=tag)
        assert "deleted" in str(err.value.allowed)
        with pytest.raises(AuthError):
            sec.authenticate_device("pump-1", secret)
    finally:
        pipe.close()
        store.close()
        sec.close()
