"""The agent's state dir is one device's, and it outlives damage: another device's dir is
refused, a full disk drops and counts readings, a source keeps its own resume position, a
damaged model pointer keeps the anti-rollback floor, and a release that fails to download or
install is said for what it is and not fetched again at once."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import logging
import os
import pickle
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import edgewise.edge.agent as agent_module
from edgewise.cli import app, load_commands
from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent, ModelSlot, Outbox
from edgewise.errors import ConfigError
from edgewise.registry import Artifact, load_or_create_key, sign
from tests.conftest import free_port

load_commands()


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    out = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgewise.agent"]
    return [e for e in out if e.get("event") == event]


class _Gateway:
    """A gateway's update and telemetry routes, in process: serves one release, counts the
    model downloads, acknowledges every message."""

    def __init__(self) -> None:
        self.envelope: dict[str, str] | None = None
        self.blobs: dict[str, bytes] = {}
        self.fetches = 0
        self.client = httpx.Client(transport=httpx.MockTransport(self._handle))

    def offer(self, s: Any, *, keep_payload: bool = True) -> None:
        self.envelope = {"manifest": base64.b64encode(s.manifest_bytes).decode(),
                         "signature": base64.b64encode(s.signature).decode()}
        if keep_payload:
            self.blobs[hashlib.sha256(s.payload).hexdigest()] = s.payload

    def _handle(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if path.endswith("/model"):
            return httpx.Response(204 if self.envelope is None else 200, json=self.envelope)
        if path.startswith("/v1/models/"):
            self.fetches += 1
            blob = self.blobs.get(path.rsplit("/", 1)[1])
            return httpx.Response(404) if blob is None else httpx.Response(200, content=blob)
        if path == "/v1/telemetry":
            msgs = json.loads(req.content)
            return httpx.Response(200, json={"ack_seq": msgs[-1]["seq"], "rejected": []})
        return httpx.Response(404)


@pytest.fixture
def key(tmp_path: Path) -> Any:
    return load_or_create_key(tmp_path / "key")


def _release(key: Any, release: int, target: str = "group:line-a", z0: float = 3.0,
             **kw: Any) -> Any:
    return sign(Artifact(pickle.dumps(EWZScore(z0=z0)), "ewz", f"1.0.{release}", release, target,
                         format="pickle", **kw), key)


def _agent(key: Any, state: Path, device: str = "pump-7", **kw: Any) -> Agent:
    return Agent("http://gw", device, "s", state, trusted_keys={key.key_id: key.public_key_bytes},
                 groups=("line-a",), **kw)


def _cli(tmp_path: Path, device: str, *args: str) -> Any:
    secret = tmp_path / "secret"
    secret.write_text("s" * 43)
    return CliRunner(mix_stderr=False).invoke(app, [
        "agent", "--gateway", f"http://127.0.0.1:{free_port()}", "--device", device,
        "--secret-file", str(secret), "--flush-timeout", "0", "--rate", "1000", *args])


# -- 1. a state dir is one device's -----------------------------------------------------------
def test_a_state_dir_of_another_device_is_refused(tmp_path):
    """Check an outbox holding pump-7's readings is refused to pump-8 (ConfigError naming
    both; the CLI: exit 2 and one line) and left as it was, while pump-7 still opens it (pump-8
    used to renumber and upload pump-7's readings as its own)."""
    state = tmp_path / "amix"
    first = Agent("http://gw", "pump-7", "s", state)
    for i in range(5):
        first._put({"ts": 1700000000 + i, "metrics": {"t": float(i)}})
    first.outbox.close()
    with pytest.raises(ConfigError, match="belongs to device 'pump-7', not 'pump-8'"):
        Agent("http://gw", "pump-8", "s", state)
    box = Outbox(state / "outbox.sqlite")
    assert len(box) == 5 and box.device_id == "pump-7" and box.next_seq == 6
    box.close()
    res = _cli(tmp_path, "pump-8", "--state-dir", str(state), "--limit", "1")
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "'pump-7', not 'pump-8'" in res.stderr and "--state-dir" in res.stderr
    assert len(Outbox(state / "outbox.sqlite")) == 5
    again = Agent("http://gw", "pump-7", "s", state)  # its own device: fine
    assert len(again.outbox) == 5


def test_a_model_installed_for_another_device_is_refused(tmp_path, key):
    """Check a model slot filled for pump-7 is refused to pump-8 (its release and its
    anti-rollback floor were taken over), also one filled by an older agent that recorded no
    device when its manifests target device:pump-7; a group release names no device."""
    slot = ModelSlot(tmp_path / "m", device_id="pump-7")
    s = _release(key, 4)
    slot.install(s.manifest_bytes, s.payload)
    assert ModelSlot(tmp_path / "m", device_id="pump-7").owner() == "pump-7"
    with pytest.raises(ConfigError, match="installed for device 'pump-7', not 'pump-8'"):
        ModelSlot(tmp_path / "m", device_id="pump-8")
    state = tmp_path / "state"        # the outbox gone, the models left: still pump-7's
    ModelSlot(state / "models", device_id="pump-7").install(s.manifest_bytes, s.payload)
    with pytest.raises(ConfigError, match="'pump-7', not 'pump-8'"):
        _agent(key, state, "pump-8")
    assert not (state / "outbox.sqlite").exists()

    legacy = ModelSlot(tmp_path / "legacy")  # no device recorded
    d = _release(key, 5, target="device:pump-7")
    legacy.install(d.manifest_bytes, d.payload)
    assert "device" not in json.loads(legacy.pointer.read_bytes())
    with pytest.raises(ConfigError, match="'pump-7', not 'pump-8'"):
        ModelSlot(tmp_path / "legacy", device_id="pump-8")
    group = ModelSlot(tmp_path / "group")
    group.install(s.manifest_bytes, s.payload)
    assert ModelSlot(tmp_path / "group", device_id="pump-8").owner() is None


# -- 2. a full disk ----------------------------------------------------------------------------
def _fill(box: Outbox) -> None:
    """Make the outbox's database full from here on (SQLite's real 'database or disk is
    full', by its page limit on this connection)."""
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages + 1}")


def test_a_full_disk_drops_and_counts_readings_instead_of_crashing(tmp_path, caplog):
    """Check a full disk drops and counts new readings, logged once as outbox_full with
    reason disk_full, and puts work again once acks free room (put raised 'cannot rollback -
    no transaction is active', masking the full disk, and the agent died on every start)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    agent = Agent("http://gw", "pump-7", "s", tmp_path / "a")
    _fill(agent.outbox)
    seqs = [agent._put({"ts": 1700000000 + i, "metrics": {"t": float(i)}}, source_pos=i + 2)
            for i in range(300)]
    stored = [s for s in seqs if s is not None]
    assert stored == list(range(1, len(stored) + 1)) and 0 < len(stored) < 300
    assert agent.outbox.dropped == 300 - len(stored) and agent.outbox.disk_full
    assert len(agent.outbox) == len(stored) and agent.outbox.source_pos == 301
    [ev] = _events(caplog, "outbox_full")
    assert ev["reason"] == "disk_full" and ev["dropped"] == 1 and "disk" in ev["detail"]
    assert agent.outbox.ack(len(stored)) == len(stored)          # acks free pages
    assert agent._put({"ts": 1700001000, "metrics": {"t": 1.0}}) == len(stored) + 1
    assert not agent.outbox.disk_full


def test_a_full_disk_in_ack_raises_sqlites_own_error(tmp_path):
    """Check an ack the full disk refuses raises 'database or disk is full' and leaves the
    outbox as it was (the failed ROLLBACK raised 'cannot rollback' instead)."""
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(60):
        box.put({"ts": 1700000000 + i, "metrics": {"t": float(i)}, "note": "x" * 200})
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        box.ack(60, [(i, "future_ts", "{}") for i in range(1, 61)])
    assert len(box) == 60 and box.rejected == 0 and box.acked == 0


class _FullDisk:
    """A connection whose disk takes no write at all: every statement that writes fails
    as SQLite's SQLITE_FULL does (SQLite has then rolled the transaction back)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.full = db, True

    @property
    def in_transaction(self) -> bool:
        return self.db.in_transaction

    def execute(self, sql: str, *args: Any) -> Any:
        if self.full and sql.startswith(("INSERT", "UPDATE")):
            self.db.execute("ROLLBACK")
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)


def test_drops_a_full_disk_cannot_count_are_kept_until_it_can(tmp_path):
    """Check drops are counted exactly even when the disk cannot take the counter either:
    in memory first, then written with the next message that fits."""
    box = Outbox(tmp_path / "o.sqlite")
    assert box.put({"ts": 1700000000, "metrics": {"t": 1.0}}) == 1
    wrapped = box._db = _FullDisk(box._db)  # type: ignore[assignment]
    assert [box.put({"ts": 1700000001, "metrics": {"t": 2.0}}) for _ in range(3)] == [None] * 3
    assert box.dropped == 3 and box.disk_full
    wrapped.full = False
    assert box.put({"ts": 1700000002, "metrics": {"t": 3.0}}) == 2
    assert box.dropped == 3 and not box.disk_full
    box._db = wrapped.db
    box.close()
    assert Outbox(tmp_path / "o.sqlite").dropped == 3


# -- 3. an expired refusal from a wrong clock --------------------------------------------------
def test_an_expired_refusal_is_not_kept_once_the_clock_is_right(tmp_path, key, monkeypatch):
    """Check a release refused as expired because the device's clock ran a year ahead is
    installed once the clock is right (the refusal was cached and stuck until restart)."""
    gw = _Gateway()
    gw.offer(_release(key, 5))
    agent = _agent(key, tmp_path / "a")
    real = time.time_ns
    with monkeypatch.context() as m:
        m.setattr(time, "time_ns", lambda: real() + 365 * 86400 * 10**9)
        assert agent.check_update(gw.client) == "refused:expired"
        assert agent.check_update(gw.client) == "refused:expired"
    assert gw.fetches == 0
    assert agent.check_update(gw.client) == "installed" and agent.release == 5


# -- 4. a resume position per source -----------------------------------------------------------
def _csv(path: Path, rows: int, t0: int, value: float) -> str:
    path.write_text("time,temp_c\n" + "".join(f"{t0 + i},{value + i}\n" for i in range(rows)))
    return f"csv:{path}"


def test_each_source_resumes_at_its_own_position(tmp_path, caplog):
    """Check csv:B, read after csv:A stopped at row 50 in the same state dir, is read from its
    first row (it started at A's position and, shorter, read nothing and exited silently),
    that this is logged, and that csv:A then resumes where it stopped."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    a = _csv(tmp_path / "A.csv", 80, 1700000000, 0.0)
    b = _csv(tmp_path / "B.csv", 30, 1700100000, 1000.0)
    url = f"http://127.0.0.1:{free_port()}"
    agent = Agent(url, "pump-7", "s", tmp_path / "s")
    agent.run(a, rate_hz=0, limit=50, flush_timeout_s=0)
    agent.outbox.close()

    def temps(box: Outbox) -> list[float]:
        return [m["metrics"]["temp_c"] for m in box.pending(1000) if "temp_c" in m["metrics"]]

    agent = Agent(url, "pump-7", "s", tmp_path / "s")
    agent.run(b, rate_hz=0, flush_timeout_s=0)
    assert temps(agent.outbox)[50:] == [1000.0 + i for i in range(30)]
    starts = _events(caplog, "source_start")
    assert [(e["source"], e["position"], e["how"]) for e in starts] == [(a, 1, "new"),
                                                                       (b, 1, "new")]
    agent.outbox.close()
    agent = Agent(url, "pump-7", "s", tmp_path / "s")
    agent.run(a, rate_hz=0, flush_timeout_s=0)
    assert temps(agent.outbox)[80:] == [float(i) for i in range(50, 80)]
    assert _events(caplog, "source_start")[-1]["how"] == "resume"
    agent.outbox.close()
    agent = Agent(url, "pump-7", "s", tmp_path / "s")
    agent.run(b, rate_hz=0, flush_timeout_s=0)  # read to its end before: nothing, said so
    assert len(temps(agent.outbox)) == 110
    [done] = _events(caplog, "source_done")
    assert done["source"] == b and done["position"] == 31


def test_an_older_agents_unnamed_position_is_taken_by_the_first_source(tmp_path):
    """Check the one position an older agent kept (no source named) resumes the first source
    this agent reads, and only that one."""
    box = Outbox(tmp_path / "o.sqlite")
    box.put({"ts": 1700000000, "metrics": {"t": 1.0}}, source_pos=41)  # as an older agent did
    assert box.use_source("csv:/x/a.csv") == (41, "adopted") and box.source_pos == 41
    box.put({"ts": 1700000001, "metrics": {"t": 1.0}}, source_pos=42)
    assert box.use_source("csv:/x/b.csv") == (1, "new") and box.source_pos == 1
    assert box.use_source("csv:/x/a.csv") == (42, "resume")


# -- 5. a damaged model pointer ----------------------------------------------------------------
@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_a_damaged_pointer_keeps_the_floor_and_installs_go_on(tmp_path, key, caplog, damage):
    """Check that with current.json damaged (or gone) the floor stays the newest installed
    release (from history.json), that release runs again and the pointer is repaired, an
    older release is refused as a rollback and a newer one installs (the floor fell to 0, and
    every install raised JSONDecodeError)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    agent = _agent(key, tmp_path / "a")
    for rel in (4, 5):
        gw.offer(_release(key, rel, z0=float(rel)))
        assert agent.check_update(gw.client) == "installed"
    agent.outbox.close()
    pointer = tmp_path / "a" / "models" / "current.json"
    if damage == "garbage":
        pointer.write_text("{garbage")
    else:
        pointer.unlink()
    agent = _agent(key, tmp_path / "a")
    assert agent.release == 5 and agent.template.z0 == 5.0
    assert ModelSlot(tmp_path / "a" / "models").current().release == 5  # repaired
    [ev] = _events(caplog, "model_pointer_repaired")
    assert ev["release"] == 5
    gw.offer(_release(key, 3))
    assert agent.check_update(gw.client) == "refused:rollback"
    pointer.write_text("{garbage")             # damaged again: an install still goes through
    gw.offer(_release(key, 7, z0=7.0))
    assert agent.check_update(gw.client) == "installed" and agent.template.z0 == 7.0
    assert ModelSlot(tmp_path / "a" / "models").current().release == 7


def test_the_floor_is_the_newest_release_of_the_history(tmp_path, key):
    """Check installed_release is the newest of the pointer and history.json, so a pointer
    that is damaged or names an older release does not lower it."""
    slot = ModelSlot(tmp_path / "m")
    for rel in (2, 6):
        s = _release(key, rel)
        slot.install(s.manifest_bytes, s.payload)
    slot.pointer.write_text("[]")
    assert slot.installed_release() == 6


# -- 6. a release that fails to download or install --------------------------------------------
def test_a_failed_install_is_logged_as_such_and_not_fetched_again_at_once(tmp_path, key,
                                                                         caplog, monkeypatch):
    """Check an install that fails (read-only models/: OSError) is logged update_install_failed,
    not gateway_unreachable, the running model kept, and not downloaded again before its
    retry time, which doubles (it was downloaded again on every update check)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    gw.offer(_release(key, 5))
    agent = _agent(key, tmp_path / "a", update_interval_s=0.05)

    def read_only(path: Path, data: bytes, **_: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    with monkeypatch.context() as m:
        m.setattr(agent_module, "replace_atomically", read_only)
        assert agent.check_update(gw.client) == "install_failed"
        assert agent.check_update(gw.client) == "install_failed:retry_later"
        assert gw.fetches == 1 and agent.release == 0
        time.sleep(0.15)
        assert agent.check_update(gw.client) == "install_failed"
        assert gw.fetches == 2
    first, second = _events(caplog, "update_install_failed")
    assert first["release"] == 5 and "Read-only file system" in first["detail"]
    assert (first["failures"], second["failures"]) == (1, 2)
    assert second["retry_in_s"] == 2 * first["retry_in_s"]
    time.sleep(0.25)
    assert agent.check_update(gw.client) == "installed" and agent.release == 5


def test_a_missing_model_is_logged_as_a_failed_fetch_from_the_sender(tmp_path, key, caplog,
                                                                     monkeypatch):
    """Check a model download answered 404, in the sender loop, is logged update_fetch_failed
    with the status and backs off, never as gateway_unreachable, while readings are still
    sent (each update check downloaded it again and called the gateway unreachable)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    gw.offer(_release(key, 5), keep_payload=False)
    agent = _agent(key, tmp_path / "a", update_interval_s=0.05)
    agent._put({"ts": time.time(), "metrics": {"t": 1.0}})
    monkeypatch.setattr(httpx, "Client", lambda **kw: gw.client)
    sender = threading.Thread(target=agent.sender_loop, daemon=True)
    sender.start()
    time.sleep(0.6)
    agent.stop()
    sender.join(10)
    assert not _events(caplog, "gateway_unreachable")
    events = _events(caplog, "update_fetch_failed")
    assert events and "HTTP 404" in events[0]["detail"] and events[0]["release"] == 5
    assert gw.fetches == len(events) <= 4  # 0.1 s, 0.2 s, 0.4 s apart: not every 0.05 s
    assert len(agent.outbox) == 0


# -- 8. the installed release offered again ----------------------------------------------------
def test_the_installed_release_offered_again_is_logged_once(tmp_path, key, caplog):
    """Check the installed release offered again is logged (update_current), once per offer
    and not on every poll, and is not downloaded again (README: 'a logged no-op'; it was not
    logged)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    gw.offer(_release(key, 5))
    agent = _agent(key, tmp_path / "a")
    assert agent.check_update(gw.client) == "installed"
    assert [agent.check_update(gw.client) for _ in range(3)] == ["current"] * 3
    [ev] = _events(caplog, "update_current")
    assert ev["release"] == 5 and gw.fetches == 1
    gw.offer(_release(key, 5))  # signed again (a new expiry): a new offer, said again
    assert agent.check_update(gw.client) == "current"
    assert len(_events(caplog, "update_current")) == 2


# -- 7. a state dir the agent cannot use -------------------------------------------------------
@pytest.mark.parametrize("blocker", ["outbox.sqlite", "models"])
def test_a_state_dir_the_agent_cannot_use_fails_with_one_line(tmp_path, blocker):
    """Check a state dir whose outbox cannot be opened, or whose models/ cannot be made,
    exits 2 with one line naming the state dir (it was a sqlite3.OperationalError
    traceback: 'unable to open database file')."""
    state = tmp_path / "state"
    state.mkdir()
    if blocker == "outbox.sqlite":
        (state / blocker).mkdir()   # what SQLite cannot open, even as root
    else:
        (state / blocker).write_text("a file where the models folder goes")
    res = _cli(tmp_path, "pump-7", "--state-dir", str(state), "--limit", "1")
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert f"--state-dir {str(state)!r} cannot be used" in res.stderr


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes into a read-only folder anyway")
def test_a_read_only_state_dir_fails_with_one_line(tmp_path):
    """Check a read-only state dir exits 2 with one line (it was a traceback)."""
    state = tmp_path / "state"
    Agent("http://gw", "pump-7", "s", state).outbox.close()
    for p in (state, state / "models"):
        p.chmod(0o555)
    try:
        res = _cli(tmp_path, "pump-7", "--state-dir", str(state), "--limit", "1")
    finally:
        for p in (state, state / "models"):
            p.chmod(0o755)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "--state-dir" in res.stderr


# -- 9. the installed models checked again at each start ---------------------------------------
def _restart(agent: Agent, key: Any, *keys: Any, groups: tuple[str, ...] = ("line-a",)) -> Agent:
    """The agent of the same state dir started again, trusting ``key`` and ``keys`` only."""
    agent.outbox.close()
    trusted = {k.key_id: k.public_key_bytes for k in (key, *keys)}
    return Agent("http://gw", "pump-7", "s", agent.dir, trusted_keys=trusted, groups=groups)


def test_a_release_of_a_key_no_longer_trusted_neither_runs_nor_holds_the_floor(tmp_path, key,
                                                                              caplog):
    """Check a release signed by a key the operator removed from --trust-key (a leaked key
    signing release 10**15) is logged installed_model_untrusted at the next start, does not
    run (the previous trusted release does, else the built-in) and is no anti-rollback
    floor: the next release the trusted key signs installs (it kept running, and refused
    every real release as a rollback, for ever)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    leaked = load_or_create_key(tmp_path / "leaked")
    gw = _Gateway()
    agent = _restart(_agent(key, tmp_path / "a"), key, leaked)  # both trusted at first
    gw.offer(_release(key, 3, z0=3.5))
    assert agent.check_update(gw.client) == "installed"
    gw.offer(_release(leaked, 10**15, z0=99.0))
    assert agent.check_update(gw.client) == "installed" and agent.template.z0 == 99.0

    agent = _restart(agent, key)  # the leaked key removed
    assert (agent.running_release, agent.template.z0, agent.release) == (3, 3.5, 3)
    (ev,) = _events(caplog, "installed_model_untrusted")
    assert (ev["release"], ev["key_id"], ev["reason"]) == (10**15, leaked.key_id, "unknown_key")
    assert ev["where"] == "current" and ev["counted"] is False
    assert _events(caplog, "model_fallback")[-1]["using"] == "release 3 (1.0.3)"
    gw.offer(_release(key, 6, z0=6.0))
    assert agent.check_update(gw.client) == "installed" and agent.template.z0 == 6.0
    agent = _restart(agent, key)  # the leaked release, kept in the history, holds nothing
    assert (agent.running_release, agent.release) == (6, 6)

    alone = _agent(leaked, tmp_path / "b")  # the leaked release the only one: the built-in
    gw.offer(_release(leaked, 10**15, z0=99.0))
    assert alone.check_update(gw.client) == "installed"
    alone = _restart(alone, key)
    assert (alone.running_release, alone.release, alone.template.z0) == (0, 0, EWZScore().z0)
    assert _events(caplog, "model_fallback")[-1]["using"] == "built-in EWZScore"


def test_a_kept_signature_that_does_not_verify_is_not_run(tmp_path, key, caplog):
    """Check an installed manifest edited on disk (its release raised to 10**15, the
    signature kept) is refused at start as tampered: not run, no floor."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    agent = _agent(key, tmp_path / "a")
    gw.offer(_release(key, 4))
    assert agent.check_update(gw.client) == "installed"
    pointer = agent.slot.pointer
    ptr = json.loads(pointer.read_bytes())
    head = json.loads(base64.b64decode(ptr["manifest"]))
    forged = json.dumps({**head, "release": 10**15}, sort_keys=True,
                        separators=(",", ":")).encode()
    pointer.write_text(json.dumps({**ptr, "release": 10**15,
                                   "manifest": base64.b64encode(forged).decode()}))
    agent = _restart(agent, key)
    assert (agent.running_release, agent.release) == (4, 4)  # the history's release 4
    (ev,) = _events(caplog, "installed_model_untrusted")
    assert ev["reason"] == "tampered" and ev["release"] == 10**15


def test_a_release_for_a_group_the_device_left_holds_the_floor_but_does_not_run(tmp_path,
                                                                                key, caplog):
    """Check a group:line-a release does not run once the agent is started without
    --group line-a (it ran), while it still holds the anti-rollback floor (README: a device
    that leaves a group keeps that version as its floor)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    agent = _agent(key, tmp_path / "a")
    for rel, target in ((2, "device:pump-7"), (5, "group:line-a")):
        gw.offer(_release(key, rel, target=target, z0=float(rel)))
        assert agent.check_update(gw.client) == "installed"
    agent = _restart(agent, key, groups=())
    assert (agent.running_release, agent.template.z0, agent.release) == (2, 2.0, 5)
    (ev,) = _events(caplog, "installed_model_untrusted")
    assert ev["reason"] == "wrong_device" and ev["counted"] is True


def _as_an_older_agent_kept_it(models: Path) -> None:
    """Rewrite the slot's current.json and history.json as an agent from before signatures
    were kept wrote them: no signature, the history a list of base64 manifests."""
    ptr = json.loads((models / "current.json").read_bytes())
    ptr.pop("signature", None)
    (models / "current.json").write_text(json.dumps(ptr))
    hist = json.loads((models / "history.json").read_bytes())
    (models / "history.json").write_text(json.dumps([e["manifest"] if isinstance(e, dict)
                                                     else e for e in hist]))


def test_an_older_agents_unsigned_install_runs_again_once_its_offer_verifies(tmp_path, key,
                                                                             caplog):
    """Check a slot an older agent filled (no signatures kept) is not run at start (its
    signature cannot be checked: the built-in runs) but holds the floor where its key is
    trusted, and that the gateway's offer of the same release, verified, is kept and runs
    it again without a download; the next start runs it at once. An unsigned release of a
    key no longer trusted holds no floor."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    agent = _agent(key, tmp_path / "a")
    s = _release(key, 5, z0=5.0)
    gw.offer(s)
    assert agent.check_update(gw.client) == "installed" and gw.fetches == 1
    _as_an_older_agent_kept_it(agent.slot.root)

    agent = _restart(agent, key)
    assert (agent.running_release, agent.release) == (0, 5)
    (ev,) = _events(caplog, "installed_model_untrusted")
    assert ev["reason"] == "unsigned" and ev["counted"] is True and ev["release"] == 5
    gw.offer(_release(key, 4))
    assert agent.check_update(gw.client) == "refused:rollback"
    gw.offer(s)
    assert agent.check_update(gw.client) == "verified"
    assert (agent.running_release, agent.template.z0, gw.fetches) == (5, 5.0, 1)
    (ok,) = _events(caplog, "installed_model_verified")
    assert ok["release"] == 5 and ok["key_id"] == key.key_id
    assert agent.check_update(gw.client) == "current"
    agent = _restart(agent, key)
    assert (agent.running_release, agent.release) == (5, 5)

    _as_an_older_agent_kept_it(agent.slot.root)
    other = load_or_create_key(tmp_path / "other")
    agent = _restart(agent, other)  # its key no longer trusted: no floor either
    assert (agent.running_release, agent.release) == (0, 0)
    assert _events(caplog, "installed_model_untrusted")[-1]["reason"] == "unknown_key"
