"""Edge agent hunt fixes: a CSV row ahead of the device's clock is sent (the gateway decides,
and its refusal is kept), the outbox's length never scans the table, a model damaged on disk
is fetched again, a malformed model offer is refused once as bad_manifest, and a second
agent on one state dir is refused."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent, ModelSlot, Outbox, _source
from edgewise.errors import ConfigError
from edgewise.registry import Artifact, load_or_create_key, sign
from tests.conftest import free_port
from tests.edge.test_agent_outbox_disk import _damaged_outbox
from tests.server.conftest import Env, build_env

load_commands()
LOCK_NAME = "agent.lock"  # the state dir's lock file (edgewise.edge.agent.LOCK_NAME)


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    out = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgewise.agent"]
    return [e for e in out if e.get("event") == event]


# -- 1. a CSV row ahead of the device's clock ----------------------------------------------------
@pytest.fixture
def gw(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir)


def test_a_csv_row_ahead_of_the_device_clock_is_sent_and_a_refusal_kept(gw, tmp_path, caplog):
    """Check CSV rows whose times are ahead of this device's clock (booted with the clock of
    its shutdown, fake-hwclock, while the data logger kept the right time) are buffered, not
    skipped: the gateway stores those its clock takes and refuses one really too far ahead,
    which is counted and kept in the rejected table. They used to be skipped as bad_input
    with the source position saved past them: lost for good."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    now = int(time.time())
    # the device's clock is an hour behind: its 'now' is now - 3600, so the first three
    # rows (the logger's right time) are an hour ahead of it; the last is ahead of both
    times = [now - 30, now - 20, now - 10, now + 86400]
    csv = tmp_path / "log.csv"
    csv.write_text("time,temp_c\n" + "".join(f"{t},{20 + i}.5\n" for i, t in enumerate(times)))
    reg = gw.client.app.state.registry
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a",
                  trusted_keys={reg.key_id: reg.public_key_bytes})
    real = time.time_ns
    behind = lambda: real() - 3600 * 10**9  # noqa: E731
    pos, _ = agent.outbox.use_source(f"csv:{csv}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "time_ns", behind)
        for reading, ts in _source(f"csv:{csv}", pos, 0):
            pos += 1
            agent.handle(reading, source_pos=pos, ts_ns=ts)
    assert not _events(caplog, "bad_input")
    assert [m["ts"] for m in agent.outbox.pending()] == [t * 10**9 for t in times]
    assert agent.outbox.source_pos == 5
    assert agent.drain_once(gw.client) == 4 and len(agent.outbox) == 0
    stored = gw.store.query(gw.device, "temp_c")
    assert [ts for _, ts, _ in stored] == [t * 10**9 for t in times[:3]]
    assert agent.outbox.rejected == 1
    [(seq, reason)] = agent.outbox._db.execute("SELECT seq, reason FROM rejected").fetchall()
    assert (seq, reason) == (4, "future_ts")
    [ev] = _events(caplog, "readings_rejected")
    assert ev["reasons"] == {"future_ts": 1}


# -- 2. len(outbox) ------------------------------------------------------------------------------
def _count(box: Outbox) -> int:
    return int(box._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def test_outbox_length_stays_exact_on_every_path(tmp_path):
    """Check len(outbox) equals COUNT(*) after puts, drops (byte bound and full disk), a
    stand-in set aside, acks (a rejection, several chunks, past the last seq), a renumber, a
    reopen and a heal that salvages a damaged outbox."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_bytes=400_000, device_id="pump-1")
    box._db.execute("PRAGMA synchronous=OFF")  # fill faster
    seen: list[tuple[str, int, int]] = []

    def check(step: str) -> None:
        seen.append((step, len(box), _count(box)))

    assert len(box) == 0
    while box.put({"ts": 1700000000, "metrics": {"t": 1.0}}) is not None:
        pass
    check("filled, then one dropped for max_bytes")
    box._reserved, box._reserve_tried_at = False, time.monotonic()  # the disk is full
    assert box.put({"ts": 1, "metrics": {"t": 1.0}}) is None and box.disk_full
    check("dropped for a full disk")
    box._reserve_tried_at = -1e9
    assert box.set_aside(3, "too_large", "{}", {"ts": 1, "metrics": {"x": 1.0}})
    check("set aside")
    assert box.ack(5, [(5, "future_ts", "{}")]) == 5
    check("ack with a rejection")
    total = box.next_seq - 1
    assert box.ack(total - 10) == total - 15  # several chunks (_ACK_CHUNK_BYTES)
    check("ack in chunks")
    box.renumber(3)
    check("renumbered")
    assert box.put({"ts": 1, "metrics": {"t": 2.0}}) is not None
    check("put after renumber")
    box.close()
    box = Outbox(path, device_id="pump-1")
    check("reopened")
    box.close()
    # a full page of messages in the middle goes bad
    path = _damaged_outbox(tmp_path / "damaged", 3000, acked=10)
    box = Outbox(path, device_id="pump-1")
    box.pending(5000)  # the damage is found: moved aside, what reads is salvaged
    check("healed")
    assert box.ack(box.next_seq + 100) > 0  # an ack past the last seq
    check("acked past the last seq")
    assert box.put({"ts": 1, "metrics": {"t": 3.0}}) is not None
    check("put after that")
    assert [(s, n) for s, n, c in seen if n != c] == [], seen
    assert seen[-1][1] == 1 and 2800 < seen[-3][1] < 2990


def test_outbox_length_does_not_scan_the_table(tmp_path):
    """Check len(outbox) runs no statement whose plan scans a table (SQLite's own query
    plan): COUNT(*) read the whole outbox under its lock after every batch sent and every
    50 ms of the flush loop, 178 ms a time on a full default outbox (draining 9x slower)."""
    box = Outbox(tmp_path / "o.sqlite")
    box._db.execute("PRAGMA synchronous=OFF")
    for i in range(50):
        box.put({"ts": 1700000000 + i, "metrics": {"t": 1.0}})
    box.ack(7)
    sql: list[str] = []
    box._db.set_trace_callback(sql.append)
    try:
        n = len(box)
    finally:
        box._db.set_trace_callback(None)
    assert n == 43 == _count(box) and sql
    scans = [(s, detail) for s in sql
             for *_, detail in box._db.execute("EXPLAIN QUERY PLAN " + s).fetchall()
             if re.match(r"SCAN (?!CONSTANT ROW)", detail)]
    assert scans == []


# -- 3. a model damaged on disk ------------------------------------------------------------------
class _Gateway:
    """A gateway's update and telemetry routes, in process: serves one offer (a signed
    release, or any body), counts the model downloads, acknowledges every message."""

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.blobs: dict[str, bytes] = {}
        self.fetches = 0
        self.posted = threading.Event()
        self.client = httpx.Client(transport=httpx.MockTransport(self._handle))

    def offer(self, s: Any) -> None:
        self.body = json.dumps({"manifest": base64.b64encode(s.manifest_bytes).decode(),
                                "signature": base64.b64encode(s.signature).decode()}).encode()
        self.blobs[hashlib.sha256(s.payload).hexdigest()] = s.payload

    def _handle(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if path.endswith("/model"):
            return httpx.Response(204) if self.body is None else httpx.Response(
                200, content=self.body, headers={"Content-Type": "application/json"})
        if path.startswith("/v1/models/"):
            self.fetches += 1
            blob = self.blobs.get(path.rsplit("/", 1)[1])
            return httpx.Response(404) if blob is None else httpx.Response(200, content=blob)
        if path == "/v1/telemetry":
            msgs = json.loads(req.content)
            self.posted.set()
            return httpx.Response(200, json={"ack_seq": msgs[-1]["seq"], "rejected": []})
        return httpx.Response(404)


@pytest.fixture
def key(tmp_path: Path) -> Any:
    return load_or_create_key(tmp_path / "key")


def _release(key: Any, release: int, z0: float) -> Any:
    return sign(Artifact(pickle.dumps(EWZScore(z0=z0)), "ewz", f"1.0.{release}", release,
                         "device:pump-7", format="pickle"), key)


def _agent(key: Any, state: Path, **kw: Any) -> Agent:
    return Agent("http://gw", "pump-7", "s", state,
                 trusted_keys={key.key_id: key.public_key_bytes}, **kw)


def test_a_model_damaged_on_disk_is_fetched_again(tmp_path, key, caplog):
    """Check an installed model whose file fails its hash check (bit rot) makes the agent
    run the previous release, and the gateway's offer of that same signed release fetches,
    verifies and installs it again (the previous release's file kept, the history not
    doubled); then it is current. Another model under that release number is still a
    conflict, an older release still a rollback, an altered signature still refused. The
    offer used to be answered 'current' for ever, the damaged model never replaced."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    state = tmp_path / "a"
    agent = _agent(key, state)
    for release, z0 in ((4, 4.0), (5, 5.0)):
        gw.offer(_release(key, release, z0))
        assert agent.check_update(gw.client) == "installed"
    models = state / "models"
    [f5] = models.glob("model-5-*.bin")
    f5.write_bytes(f5.read_bytes()[:-1] + bytes([f5.read_bytes()[-1] ^ 1]))  # one bit rots
    agent = _agent(key, state)
    assert (agent.release, agent.template.z0) == (5, 4.0)
    assert "does not match its hash" in _events(caplog, "model_fallback")[-1]["reason"]

    conflict = _release(key, 5, 9.0)  # release 5 again, another model: not a repair
    gw.offer(conflict)
    assert agent.check_update(gw.client) == "conflict" and gw.fetches == 2
    gw.offer(_release(key, 4, 4.0))  # older than the floor: refused as before
    assert agent.check_update(gw.client) == "refused:rollback"
    good = _release(key, 5, 5.0)
    gw.offer(good)
    gw.body = gw.body.replace(base64.b64encode(good.signature),  # type: ignore[union-attr]
                              base64.b64encode(bytes(64)))
    assert agent.check_update(gw.client) == "refused:tampered" and gw.fetches == 2

    gw.offer(good)
    assert agent.check_update(gw.client) == "repaired" and gw.fetches == 3
    assert (agent.release, agent.running_release, agent.template.z0) == (5, 5, 5.0)
    assert _events(caplog, "model_repaired")[0]["release"] == 5
    assert [agent.check_update(gw.client) for _ in range(2)] == ["current"] * 2
    assert gw.fetches == 3
    slot = ModelSlot(models)
    assert slot.current().release == 5 and [m.release for m in slot.history()] == [4, 5]
    assert len(list(models.glob("model-4-*.bin"))) == 1  # the fallback stays
    again = _agent(key, state)
    assert (again.running_release, again.template.z0) == (5, 5.0)


# -- 4. a malformed model offer ------------------------------------------------------------------
def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


MALFORMED = {
    "not-json": (b"<html>", "body"),
    "a-list": (b"[]", "body"),
    "no-manifest": (b'{"signature": "AA=="}', "manifest"),
    "manifest-not-base64": (json.dumps({"manifest": "!!!", "signature": ""}).encode(),
                            "manifest"),
    "signature-a-number": (json.dumps({"manifest": _b64(b"{}"), "signature": 7}).encode(),
                           "signature"),
    "manifest-not-json": (json.dumps({"manifest": _b64(b"\xff\xfe"),
                                      "signature": _b64(b"x")}).encode(), "manifest"),
    "manifest-a-list": (json.dumps({"manifest": _b64(b"[1]"), "signature": _b64(b"x")}).encode(),
                        "manifest"),
    "release-null": (json.dumps({"manifest": _b64(b'{"release": null}'),
                                 "signature": _b64(b"x")}).encode(), "manifest.release"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_model_offer_is_refused_once_as_bad_manifest(tmp_path, key, caplog, case):
    """Check a model offer whose envelope or manifest cannot be read is refused as
    bad_manifest, logged once naming the field, reported once, on every check (it raised
    TypeError, KeyError, AttributeError or a JSON error out of check_update)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    gw.body, field = MALFORMED[case]
    agent = _agent(key, tmp_path / "a")
    assert [agent.check_update(gw.client) for _ in range(3)] == ["refused:bad_manifest"] * 3
    [ev] = _events(caplog, "update_refused")
    assert ev["reason"] == "bad_manifest" and ev["field"] == field
    assert [m["metrics"] for m in agent.outbox.pending()] == [{"agent.update_refused": -1.0}]
    assert gw.fetches == 0


def test_a_malformed_offer_does_not_stop_the_sender_draining(tmp_path, key, caplog,
                                                              monkeypatch):
    """Check the sender loop, offered a malformed model, drains the outbox and logs no
    gateway_unreachable nor sender_error (each update check raised: logged as the gateway
    being unreachable and that iteration's batch not sent)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    gw.body = MALFORMED["a-list"][0]
    agent = _agent(key, tmp_path / "a")
    agent._put({"ts": time.time(), "metrics": {"t": 1.0}})
    monkeypatch.setattr(httpx, "Client", lambda **kw: gw.client)
    sender = threading.Thread(target=agent.sender_loop, daemon=True)
    sender.start()
    try:
        assert gw.posted.wait(10)
    finally:
        agent.stop()
        sender.join(10)
    assert not _events(caplog, "gateway_unreachable") and not _events(caplog, "sender_error")
    assert [e["reason"] for e in _events(caplog, "update_refused")] == ["bad_manifest"]


# -- 5. one agent per state dir ------------------------------------------------------------------
_HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0); os.write(fd, f"{os.getpid()}\\n".encode())
print("held", flush=True)
sys.stdin.read()
"""

_PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    print("locked", os.pread(fd, 64, 0).decode().strip())
else:
    print("free")
"""


def test_a_second_agent_on_one_state_dir_is_refused(tmp_path):
    """Check an agent holds a lock on its state dir (another process cannot take it, and
    finds the agent's pid in it), and an agent started on a dir another process's agent
    holds is refused: ConfigError naming that pid and the dir, the CLI one line, exit 2;
    once that one ends, the dir opens. Two agents on one dir used to run side by side,
    sharing one outbox. Agents of one process share the lock."""
    state = tmp_path / "state"
    first = Agent("http://gw", "pump-7", "s", state)
    probe = subprocess.run([sys.executable, "-c", _PROBE, str(state / LOCK_NAME)],
                           capture_output=True, text=True, timeout=30, check=True)
    assert probe.stdout.split() == ["locked", str(os.getpid())]
    Agent("http://gw", "pump-7", "s", state).outbox.close()  # the same process: shared
    first.outbox.close()
    del first

    other = tmp_path / "other"
    other.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(other / LOCK_NAME)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ConfigError) as err:
            Agent("http://gw", "pump-7", "s", other)
        assert f"pid {holder.pid}" in str(err.value) and repr(str(other)) in str(err.value)
        assert not (other / "outbox.sqlite").exists()
        secret = tmp_path / "secret"
        secret.write_text("s" * 43)
        res = CliRunner(mix_stderr=False).invoke(app, [
            "agent", "--gateway", f"http://127.0.0.1:{free_port()}", "--device", "pump-7",
            "--secret-file", str(secret), "--flush-timeout", "0", "--state-dir", str(other),
            "--limit", "1"])
        assert res.exit_code == 2, res.stdout + res.stderr
        assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
        assert f"pid {holder.pid}" in res.stderr and "in use by another agent" in res.stderr
    finally:
        holder.stdin.close()
        holder.wait(10)
    Agent("http://gw", "pump-7", "s", other).outbox.close()  # its holder gone: it opens
