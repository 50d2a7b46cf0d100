"""Audited actions on other databases than the audit log (security hunt, /tmp/hunt-security
e1): a model rollout, an alert's acknowledgement or verdict, a device's releases withdrawn,
a device's data deleted, retention's expiry, and ``edgewise registry publish``/``rollout``/
``new-key`` were done and committed first and audited after, in a transaction of their own:
another writer holding ``security.sqlite`` past the busy timeout (a CLI in another process)
left the action standing with no audit entry, and the 500 said "nothing of this request was
acknowledged". Now the short ones take the audit log's write transaction first
(``Security.transaction``), so either both are written or neither; the long ones (a
device's data, retention) write a ``.requested`` entry before anything is deleted.

The busy timeout of the Security under test is cut to 100 ms (``PRAGMA busy_timeout``), so
a held lock fails it at once instead of after 10 s.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.config import Settings
from edgewise.gateway.runtime import Gateway
from edgewise.registry import Registry
from edgewise.security import Security
from edgewise.store import open_store
from edgewise.store.base import Alert
from edgewise.telemetry import Reading
from tests.server.conftest import Env, build_env

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

load_commands()

BUSY_MS = 100


@pytest.fixture
def env(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir)


def _fast(sec: Security) -> Security:
    """``sec`` with a busy timeout of :data:`BUSY_MS` (a lock held fails it at once)."""
    sec._db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
    return sec


class Holder:
    """Another writer of ``security.sqlite`` (a CLI in another process): takes its write
    lock when asked, if it can at once, and keeps it until released."""

    def __init__(self, data_dir: Path) -> None:
        self.db = sqlite3.connect(data_dir / "security.sqlite", isolation_level=None,
                                  timeout=0, check_same_thread=False)
        self.held = False

    def grab(self) -> bool:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # the action under test holds it
            return False
        self.held = True
        return True

    def release(self) -> None:
        if self.held:
            self.db.execute("ROLLBACK")
            self.held = False
        self.db.close()


def _actions(sec: Security, action: str) -> list[Any]:
    return [e for e in sec.audit_log(1000) if e.action == action]


def _client(env: Env) -> TestClient:
    return TestClient(env.client.app, raise_server_exceptions=False)


# -- HTTP: rollout, ack, verdict ---------------------------------------------------------
def test_a_rollout_with_the_audit_log_held_signs_nothing(env: Env) -> None:
    """Check a rollout while another writer holds the audit log is refused with nothing
    signed (it was signed and served, and not audited), and goes through, audited, once
    the lock is free."""
    reg = env.client.app.state.registry
    reg.publish("m", "1.0", b"model-bytes", format="pickle")
    _fast(env.security)
    holder = Holder(env.settings.data_dir)
    assert holder.grab()
    try:
        t0 = time.monotonic()
        r = _client(env).post("/v1/registry/rollouts", headers=env.auth("operator"),
                              json={"name": "m", "version": "1.0", "target": "device:pump-1"})
        took = time.monotonic() - t0
    finally:
        holder.release()
    assert reg.releases() == [], "a release was signed that the audit log does not have"
    assert r.status_code == 500, r.text
    assert env.client.get("/v1/devices/pump-1/model",
                          headers=env.device_headers()).status_code == 204
    assert took < 5
    r = env.client.post("/v1/registry/rollouts", headers=env.auth("operator"),
                        json={"name": "m", "version": "1.0", "target": "device:pump-1"})
    assert r.status_code == 200, r.text
    (entry,) = _actions(env.security, "model.rollout")
    assert (entry.target, entry.detail) == ("device:pump-1", {
        "name": "m", "version": "1.0", "release": r.json()["release"], "kind": "release"})


def test_an_ack_with_the_audit_log_held_acknowledges_nothing(env: Env) -> None:
    """Check an acknowledgement while another writer holds the audit log leaves the alert
    open (it was acknowledged, unaudited)."""
    alert = env.store.add_alert(Alert("pump-1", 1, 2, 0.95, message="test"))
    _fast(env.security)
    holder = Holder(env.settings.data_dir)
    assert holder.grab()
    try:
        r = _client(env).post(f"/v1/alerts/{alert.id}/ack", headers=env.auth("operator"))
    finally:
        holder.release()
    assert r.status_code == 500, r.text
    stored = env.store.get_alert(alert.id)
    assert (stored.status, stored.acked_by) == ("open", None)
    assert _actions(env.security, "alert.ack") == []
    r = env.client.post(f"/v1/alerts/{alert.id}/ack", headers=env.auth("operator"))
    assert r.status_code == 200, r.text
    assert [e.target for e in _actions(env.security, "alert.ack")] == [alert.id]


def test_a_verdict_with_the_audit_log_held_stores_nothing(env: Env) -> None:
    """Check a verdict on an anomaly alert while another writer holds the audit log stores
    neither the verdict nor its window label (the verdict stood, unaudited)."""
    alert = env.store.add_alert(Alert("pump-1", 1, 2, 0.95, message="test"))
    _fast(env.security)
    holder = Holder(env.settings.data_dir)
    assert holder.grab()
    try:
        r = _client(env).post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                              json={"label": "true_alarm"})
    finally:
        holder.release()
    assert r.status_code == 500, r.text
    stored = env.store.get_alert(alert.id)
    assert (stored.label, stored.status) == (None, "open")
    assert _actions(env.security, "alert.label") == []
    r = env.client.get("/v1/labels", headers=env.auth("viewer"))
    assert r.status_code == 200 and r.json() == [], r.text
    r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                        json={"label": "true_alarm"})
    assert r.status_code == 200 and r.json()["window_label"] is not None, r.text
    assert [e.detail["label"] for e in _actions(env.security, "alert.label")] == ["true_alarm"]


# -- HTTP: a device's deletion -----------------------------------------------------------
def test_releases_withdrawn_are_audited_though_another_writer_comes_right_after(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a device's deletion never withdraws its releases unaudited: another writer
    that tries to take the audit log just after the withdrawal (in the old window between
    the two commits) finds it held, and the withdrawal's entry is written."""
    reg = env.client.app.state.registry
    reg.publish("m", "1.0", b"model-bytes", format="pickle")
    own = reg.rollout("m", "1.0", "device:pump-1").manifest.release
    _fast(env.security)
    holder = Holder(env.settings.data_dir)
    real = reg.withdraw_device

    def withdraw_then_race(device_id: str) -> Any:
        out = real(device_id)
        holder.grab()  # another process, right after the registry committed
        return out

    monkeypatch.setattr(reg, "withdraw_device", withdraw_then_race)
    try:
        r = _client(env).delete("/v1/devices/pump-1", headers=env.auth("admin"))
    finally:
        holder.release()
    withdrawn = not reg.releases()
    entries = [e.detail for e in _actions(env.security, "model.withdraw")]
    assert withdrawn, r.text
    assert entries == [{"releases": [own]}], (r.status_code, r.text)


def test_a_deletion_whose_last_entry_fails_is_in_the_log_before(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a device's data is never deleted with no trace in the audit log: its
    ``device.delete_data.requested`` entry is written before anything is deleted, so
    another writer holding the log when the deletion ends (its ``device.delete_data``
    entry cannot be written: a 500 that does not say nothing was done) leaves it there."""
    assert env.send({"ts": int(time.time()), "metrics": {"t": 1.0}, "seq": 1}
                    ).status_code == 200
    _fast(env.security)
    holder = Holder(env.settings.data_dir)
    real = env.store.delete_device

    def delete_then_race(device_id: str, **kw: Any) -> int:
        n = real(device_id, **kw)
        holder.grab()  # another process, once the rows are gone
        return n

    monkeypatch.setattr(env.store, "delete_device", delete_then_race)
    try:
        r = _client(env).delete("/v1/devices/pump-1", headers=env.auth("admin"))
    finally:
        holder.release()
    assert env.store.device("pump-1") is None  # the readings went
    audited = {e.action for e in env.security.audit_log(1000) if e.target == "pump-1"}
    assert audited & {"device.delete_data.requested", "device.delete_data"}, audited
    assert r.status_code == 500, r.text
    assert "nothing of this request was acknowledged" not in r.json()["detail"]


def test_a_deletion_with_the_audit_log_held_does_nothing(env: Env) -> None:
    """Check a device's deletion while another writer holds the audit log does nothing at
    all: the credentials stay, the readings stay, the id is not marked kept."""
    assert env.send({"ts": int(time.time()), "metrics": {"t": 1.0}, "seq": 1}
                    ).status_code == 200
    _fast(env.security)
    holder = Holder(env.settings.data_dir)
    assert holder.grab()
    try:
        r = _client(env).delete("/v1/devices/pump-1", headers=env.auth("admin"))
    finally:
        holder.release()
    assert r.status_code == 500, r.text
    assert env.security.has_device("pump-1") and not env.security.data_kept("pump-1")
    assert env.store.device("pump-1") is not None
    r = env.client.delete("/v1/devices/pump-1", headers=env.auth("admin"))
    assert r.status_code == 200, r.text
    actions = [e.action for e in reversed(env.security.audit_log(1000))
               if e.target == "pump-1"]
    assert actions == ["device.add", "device.delete_data.requested", "device.delete",
                       "label.delete_device", "device.delete_data"], actions


# -- retention ---------------------------------------------------------------------------
DAY = 86_400 * 10**9


def test_retention_never_expires_readings_unaudited(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a retention pass writes ``readings.expire.requested`` before it deletes: with
    the audit log held it deletes nothing (it deleted, then failed to audit), and when the
    log is taken only once the readings are gone, the entry is there already."""
    now = time.time_ns()
    store = open_store(f"duckdb:///{tmp_path / 'edgewise.duckdb'}")
    store.append([Reading("pump-1", "temp", now - d * DAY, float(d)) for d in (30, 10, 0)],
                 {"pump-1": range(1, 4)})
    store.close()
    gw = Gateway(dataclasses.replace(Settings.load(env={}, data_dir=tmp_path),
                                     retention_days=7))
    try:
        _fast(gw.security)
        holder = Holder(tmp_path)
        assert holder.grab()
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                gw.apply_retention(now)
        finally:
            holder.release()
        assert gw.store.device("pump-1").readings == 3  # nothing deleted unaudited
        holder = Holder(tmp_path)
        real = gw.store.delete_before

        def delete_then_race(*a: Any, **kw: Any) -> int:
            n = real(*a, **kw)
            holder.grab()
            return n

        monkeypatch.setattr(gw.store, "delete_before", delete_then_race)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                gw.apply_retention(now)
        finally:
            holder.release()
        assert gw.store.device("pump-1").readings == 1
        (entry,) = _actions(gw.security, "readings.expire.requested")
        assert (entry.actor, entry.detail["older_than_days"]) == ("retention", 7)
        monkeypatch.setattr(gw.store, "delete_before", real)
        assert gw.apply_retention(now) == 0  # nothing more to expire: no entry
        assert len(_actions(gw.security, "readings.expire.requested")) == 1
    finally:
        gw.pipeline.close()
        gw.store.close()
        gw.security.close()
        gw.registry.close()


# -- the CLI -----------------------------------------------------------------------------
@pytest.fixture
def armed(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> list[Holder]:
    """Every Security opened gets the short busy timeout; a :class:`Holder` put in the
    list this yields takes the audit log's write lock just after the next one is opened
    (another process, right then), and is kept there to be released."""
    real = Security._open
    holders: list[Holder] = []

    def open_then_race(self: Security) -> sqlite3.Connection:
        db = real(self)
        db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        for h in holders:
            if not h.held:
                assert h.grab()
        return db

    monkeypatch.setattr(Security, "_open", open_then_race)
    return holders


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_cli_publish_rollout_new_key_with_the_audit_log_held_do_nothing(
        data_dir: Path, tmp_path: Path, armed: list[Holder]) -> None:
    """Check ``edgewise registry publish``, ``rollout`` and ``new-key`` with another writer
    holding the audit log from just after they opened it exit non-zero with nothing
    published, signed or made (each was done, then its audit failed), and do it, audited,
    once the lock is free."""
    sec = Security(data_dir)
    sec.add_device("pump-1")
    sec.close()
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model-bytes")
    d = str(data_dir)

    def held(*args: str) -> Any:
        armed.append(Holder(data_dir))
        try:
            return _cli(*args, "--data-dir", d)
        finally:
            armed.pop().release()

    publish = held("registry", "publish", "m", "1.0", str(model))
    assert publish.exit_code != 0, publish.output
    reg = Registry(data_dir)
    try:
        assert reg.versions("m") == [], "published, and not audited"
    finally:
        reg.close()
    ok = _cli("registry", "publish", "m", "1.0", str(model), "--data-dir", d)
    assert ok.exit_code == 0, ok.output

    rollout = held("registry", "rollout", "m", "1.0", "device:pump-1")
    assert rollout.exit_code != 0, rollout.output
    reg = Registry(data_dir)
    try:
        assert reg.releases() == [], "signed, and not audited"
    finally:
        reg.close()
    ok = _cli("registry", "rollout", "m", "1.0", "device:pump-1", "--data-dir", d)
    assert ok.exit_code == 0, ok.output

    key = data_dir / "registry" / "signing_key.pem"
    key.unlink()  # lost: new-key replaces it on purpose
    new_key = held("registry", "new-key")
    assert new_key.exit_code != 0, new_key.output
    assert not key.exists(), "a new key was made, and not audited"
    ok = _cli("registry", "new-key", "--data-dir", d)
    assert ok.exit_code == 0, ok.output

    sec = Security(data_dir)
    try:
        assert [e.action for e in reversed(sec.audit_log(100)) if e.actor == "cli"
                and e.action.startswith(("model.", "registry."))] == [
            "model.publish", "model.rollout", "registry.new_key"]
    finally:
        sec.close()


def test_opening_the_audit_log_does_not_wait_for_a_writer(data_dir: Path) -> None:
    """Check opening an up-to-date ``security.sqlite`` while another writer holds it is
    at once (each open wrote, and waited the 10 s busy timeout, then again 49 times)."""
    Security(data_dir).close()
    holder = Holder(data_dir)
    assert holder.grab()
    opened: list[Security] = []
    try:
        t = threading.Thread(target=lambda: opened.append(Security(data_dir)), daemon=True)
        t.start()
        t.join(2.0)
        assert opened, "opening waited for the writer"
        assert opened[0].has_device("pump-1") is False
    finally:
        holder.release()
        for sec in opened:
            sec.close()


def test_a_failed_action_takes_its_entry_back(data_dir: Path) -> None:
    """Check ``Security.transaction``: an entry written in it is rolled back with an action
    that fails after it, a nested audit commits with the outermost block only, and the
    audit listeners hear of entries only once they are committed."""
    sec = Security(data_dir)
    heard: list[str] = []
    sec.audit_listeners.append(lambda e: heard.append(e.target))
    try:
        with pytest.raises(RuntimeError), sec.transaction():
            sec.audit("cli", "example.action", "gone")
            raise RuntimeError("the action failed after its entry")
        with sec.transaction():
            sec.audit("cli", "example.action", "a")
            with pytest.raises(KeyError), sec.transaction():
                sec.audit("cli", "example.action", "b")
                raise KeyError("inner")
            assert heard == []
            sec.audit("cli", "example.action", "c")
            assert sec.has_device("x") is False  # re-entrant: no deadlock
        assert heard == ["a", "c"]
        assert [e.target for e in reversed(sec.audit_log())] == ["a", "c"]
        assert sec.verify_audit().ok
    finally:
        sec.close()
