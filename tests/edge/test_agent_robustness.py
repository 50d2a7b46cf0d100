"""The edge agent against a hostile or forgetful gateway and a damaged device: no payload is
fetched before its manifest verifies, rejected readings are counted and logged, a gateway
that forgot the device is caught up with, temp files never write through a planted link, and
a corrupt outbox is moved aside instead of stopping the agent."""

from __future__ import annotations

import json
import logging
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import edgewise.edge.agent as agent_module
from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent, ModelSlot, Outbox
from edgewise.registry import Artifact, load_or_create_key, sign
from tests.conftest import wait_until
from tests.server.conftest import Env, build_env, serve_in_thread

DEVICE = "pump-1"


@pytest.fixture
def gw(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir)


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    out = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgewise.agent"]
    return [e for e in out if e.get("event") == event]


# -- 1. nothing of a payload before its manifest verifies --------------------------------------
class _Answer:
    def __init__(self, status: int, body: Any = None, chunks: int = 0) -> None:
        self.status_code, self._body, self._chunks = status, body, chunks
        self.headers: dict[str, str] = {}
        self.text = ""

    def json(self) -> Any:
        return self._body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise httpx.HTTPStatusError("bad", request=None, response=None)  # type: ignore[arg-type]

    def iter_bytes(self) -> Iterator[bytes]:
        for _ in range(self._chunks):
            yield bytes(1 << 20)


class _HostileGateway:
    """Serves one manifest and, for any model, a stream of zeros (8 MiB, so the old agent
    ends); counts the streams opened."""

    def __init__(self, manifest: bytes, signature: bytes) -> None:
        import base64

        self.envelope = {"manifest": base64.b64encode(manifest).decode(),
                         "signature": base64.b64encode(signature).decode()}
        self.streams = 0

    def get(self, url: str, headers: Any = None) -> _Answer:
        return _Answer(200, self.envelope)

    def stream(self, method: str, url: str, headers: Any = None) -> Any:
        import contextlib

        self.streams += 1
        return contextlib.nullcontext(_Answer(200, chunks=8))


def _release(key: Any, target: str, payload: bytes = b"", release: int = 9) -> Any:
    payload = payload or pickle.dumps(EWZScore())
    return sign(Artifact(payload, "ewz", f"1.0.{release}", release, target, format="pickle"), key)


def test_a_manifest_that_does_not_verify_fetches_no_payload(tmp_path):
    """Check a manifest with a junk signature and size 10**12 is refused as unknown_key on
    every check without opening the model stream (the agent used to download the stream
    first, capped only by the unverified size, and again on every check)."""
    key = load_or_create_key(tmp_path / "k")
    manifest = json.dumps({"release": 99, "size": 10**12, "sha256": "ab" * 32,
                           "key_id": "0000000000000000"}).encode()
    hostile = _HostileGateway(manifest, b"x" * 64)
    agent = Agent("http://gw", DEVICE, "s", tmp_path / "a",
                  trusted_keys={key.key_id: key.public_key_bytes})
    assert [agent.check_update(hostile) for _ in range(3)] == ["refused:unknown_key"] * 3
    assert hostile.streams == 0


@pytest.mark.parametrize("case", ["wrong_device", "too_large"])
def test_a_release_refused_on_its_signed_manifest_is_never_downloaded(tmp_path, monkeypatch,
                                                                      case):
    """Check a correctly signed release for another device, or one larger than the agent's
    MAX_MODEL_BYTES, is refused with that reason and its payload never fetched, on this
    check or later ones (a wrong_device release was downloaded again on every check, and no
    agent-side size cap existed)."""
    monkeypatch.setattr(agent_module, "MAX_MODEL_BYTES", 100, raising=False)
    key = load_or_create_key(tmp_path / "k")
    s = _release(key, "device:other" if case == "wrong_device" else f"device:{DEVICE}")
    hostile = _HostileGateway(s.manifest_bytes, s.signature)
    agent = Agent("http://gw", DEVICE, "s", tmp_path / "a",
                  trusted_keys={key.key_id: key.public_key_bytes})
    assert [agent.check_update(hostile) for _ in range(3)] == [f"refused:{case}"] * 3
    assert hostile.streams == 0 and agent.release == 0
    assert ModelSlot(tmp_path / "a" / "models").current() is None


def test_a_verified_release_is_streamed_once_and_installed(gw, tmp_path):
    """Check the lazy download still installs a good release from the real gateway app."""
    reg = gw.client.app.state.registry
    reg.publish("ewz", "1.0.0", pickle.dumps(EWZScore(z0=5.0)), format="pickle")
    reg.rollout("ewz", "1.0.0", f"device:{gw.device}")
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a",
                  trusted_keys={reg.key_id: reg.public_key_bytes})
    assert agent.check_update(gw.client) == "installed"
    assert agent.check_update(gw.client) == "current"
    assert agent.template.z0 == 5.0


class _Blob:
    """A gateway serving one signed release, its payload in 64 KiB chunks (``served``: the
    bytes it sends instead, if given)."""

    def __init__(self, s: Any, served: bytes | None = None) -> None:
        import base64

        self.envelope = {"manifest": base64.b64encode(s.manifest_bytes).decode(),
                         "signature": base64.b64encode(s.signature).decode()}
        self.body = s.payload if served is None else served

    def get(self, url: str, headers: Any = None) -> _Answer:
        return _Answer(200, self.envelope)

    def stream(self, method: str, url: str, headers: Any = None) -> Any:
        import contextlib

        answer = _Answer(200)
        answer.iter_bytes = lambda: (self.body[i:i + 65536]  # type: ignore[method-assign]
                                     for i in range(0, len(self.body), 65536))
        return contextlib.nullcontext(answer)


def test_a_model_download_holds_about_two_copies_of_it_in_memory(tmp_path):
    """Check fetching, verifying, loading and installing a model of 8 MiB takes at most
    2.5 times its size in memory at its peak (its bytes, and the detector made of them):
    the download's chunks, their join, verify's copy and the probes' copies took 5 times."""
    import tracemalloc

    key = load_or_create_key(tmp_path / "k")
    det = EWZScore()
    det.blob = b"x" * (8 << 20)  # a detector carrying 8 MiB of learned state
    s = _release(key, f"device:{DEVICE}", pickle.dumps(det))
    gw = _Blob(s)
    agent = Agent("http://gw", DEVICE, "s", tmp_path / "a",
                  trusted_keys={key.key_id: key.public_key_bytes})
    size = len(s.payload)
    tracemalloc.start()
    try:
        assert agent.check_update(gw) == "installed"
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 2.5 * size, f"peak {peak / size:.2f}x the model"
    assert agent.template.blob == det.blob
    assert sorted(p.name for p in agent.slot.root.iterdir()) == [
        "current.json", "history.json", f"model-9-{s.manifest.sha256[:16]}.bin"]


@pytest.mark.parametrize("where", ["served", "on_disk"])
def test_only_the_bytes_verified_are_loaded_and_installed(tmp_path, monkeypatch, where):
    """Check a download whose bytes are not the signed ones (sent wrong, or changed on the
    way to disk after they were hashed) is refused as tampered, nothing of it installed nor
    left in the slot: the model is loaded from its file read back and hash-checked again."""
    key = load_or_create_key(tmp_path / "k")
    s = _release(key, f"device:{DEVICE}", pickle.dumps(EWZScore(z0=7.0)))
    flipped = bytes([s.payload[0] ^ 1]) + s.payload[1:]
    gw = _Blob(s, served=flipped if where == "served" else None)
    if where == "on_disk":
        write = agent_module._Staged.write
        monkeypatch.setattr(agent_module._Staged, "write",
                            lambda self, chunk: write(self, chunk.replace(b"\x80", b"\x81", 1)))
    agent = Agent("http://gw", DEVICE, "s", tmp_path / "a",
                  trusted_keys={key.key_id: key.public_key_bytes})
    assert agent.check_update(gw) == "refused:tampered"
    assert agent.release == agent.running_release == 0
    assert list(agent.slot.root.iterdir()) == []


# -- 2. readings the gateway rejects -----------------------------------------------------------
def test_rejected_readings_are_logged_counted_and_kept(gw, tmp_path, caplog):
    """Check readings the gateway rejects (an hour ahead: a skewed clock) leave the outbox
    counted in outbox.rejected, kept in its rejected table and logged with seq, reason and
    count, with a hint about the clock; good ones are stored (they used to vanish silently)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a")
    now = time.time()
    for i in range(6):
        agent._put({"ts": now - 10 + i + 3600 * (i % 3 != 0), "metrics": {"temp_c": 20.0 + i}})
    assert agent.drain_once(gw.client) == 6
    assert len(agent.outbox) == 0 and agent.outbox.rejected == 4
    [ev] = _events(caplog, "readings_rejected")
    assert ev["count"] == 4 and ev["reasons"] == {"future_ts": 4}
    assert [(r["seq"], r["reason"]) for r in ev["rejections"]] == [
        (2, "future_ts"), (3, "future_ts"), (5, "future_ts"), (6, "future_ts")]
    assert "clock" in ev["detail"]
    with sqlite3.connect(agent.outbox.path) as db:
        rows = db.execute("SELECT seq, reason, body FROM rejected ORDER BY seq").fetchall()
    assert [(s, r) for s, r, _ in rows] == [(2, "future_ts"), (3, "future_ts"),
                                            (5, "future_ts"), (6, "future_ts")]
    assert json.loads(rows[0][2])["metrics"] == {"temp_c": 21.0}
    assert [v for _, _, v in gw.store.query(gw.device, "temp_c")] == [20.0, 23.0]
    agent.outbox.close()
    assert Outbox(agent.outbox.path).rejected == 4  # persisted


# -- 3. a gateway that forgot the device; no hot loop ------------------------------------------
def test_a_gateway_that_forgot_the_device_gets_every_pending_reading(gw, tmp_path, caplog):
    """Check that after the device is deleted and added again at the gateway (which then
    answers ack_seq 0), the agent's pending readings are renumbered once and all stored, in a
    few requests (it used to re-post the same batch hundreds of times a second, never
    draining)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    admin = gw.auth("admin")
    with serve_in_thread(gw.client.app) as port:
        agent = Agent(f"http://127.0.0.1:{port}", gw.device, gw.secret, tmp_path / "a")
        t0 = time.time() - 100
        for i in range(50):
            agent._put({"ts": t0 + i, "metrics": {"temp_c": float(i)}})
        assert agent.drain_once(gw.client) == 50 and agent.outbox.acked == 50
        assert gw.client.delete(f"/v1/devices/{gw.device}", headers=admin).status_code == 200
        r = gw.client.post("/v1/devices", json={"name": gw.device}, headers=admin)
        assert r.status_code == 201, r.text
        agent.secret = r.json()["secret"]
        for i in range(50, 80):
            agent._put({"ts": t0 + i, "metrics": {"temp_c": float(i)}})
        posts = []
        real = gw.pipeline.ingest

        def counting(*args: Any, **kw: Any) -> Any:
            posts.append(1)
            return real(*args, **kw)

        gw.pipeline.ingest = counting  # type: ignore[method-assign]
        sender = threading.Thread(target=agent.sender_loop, daemon=True)
        sender.start()
        try:
            assert wait_until(lambda: len(agent.outbox) == 0, 10.0), len(posts)
            time.sleep(0.5)
        finally:
            agent.stop()
            sender.join(10)
    stored = [v for _, _, v in gw.store.query(gw.device, "temp_c")]
    assert stored == [float(i) for i in range(50, 80)]
    assert len(posts) <= 4, len(posts)
    assert agent.outbox.acked == 30 and agent.outbox.next_seq == 31
    [ev] = _events(caplog, "gateway_forgot_device")
    assert ev["ack_seq"] == 0 and ev["acked"] == 50 and ev["renumbered_from"] == 1


class _Stuck:
    """A gateway that answers 200 but never acknowledges anything."""

    def __init__(self) -> None:
        self.posts = 0

    def post(self, url: str, **kw: Any) -> _Answer:
        self.posts += 1
        return _Answer(200, {"accepted": 0, "duplicates": 0, "conflicts": 0, "rejected": [],
                             "ack_seq": 0})


def test_a_200_that_does_not_advance_the_ack_backs_off(tmp_path):
    """Check the agent pauses 1 s, 2 s, 4 s ... (capped) after each 200 answer that does not
    advance the ack, instead of posting the same batch again at once."""
    agent = Agent("http://gw", DEVICE, "s", tmp_path / "a")
    waits: list[float] = []
    agent._stop = type("Stop", (), {"wait": lambda self, s: waits.append(s),  # type: ignore[assignment]
                                    "is_set": lambda self: False, "set": lambda self: None})()
    agent._put({"ts": time.time(), "metrics": {"t": 1.0}})
    stuck = _Stuck()
    for _ in range(7):
        agent.drain_once(stuck)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert len(agent.outbox) == 1


# -- 4. a link planted at a temp path ----------------------------------------------------------
def test_install_does_not_write_through_a_planted_symlink(tmp_path):
    """Check a symlink planted at the model's, history's and pointer's temp paths is not
    written through: the victim is unchanged and the installed files are regular files (the
    temp write followed the link and the model file became that link)."""
    key = load_or_create_key(tmp_path / "k")
    s = _release(key, f"device:{DEVICE}")
    slot = ModelSlot(tmp_path / "models")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    sha16 = json.loads(s.manifest_bytes)["sha256"][:16]
    names = [f"model-9-{sha16}.bin", "history.json", "current.json"]
    for name in names:
        os.symlink(victim, slot.root / f"{name}.tmp")
    slot.install(s.manifest_bytes, s.payload)
    assert victim.read_text() == "precious"
    for name in names:
        path = slot.root / name
        assert path.is_file() and not path.is_symlink(), name
        # temp names are the writer's own (pid, thread, random): the planted one is unused
        assert (slot.root / f"{name}.tmp").is_symlink(), name
    assert not [p for p in slot.root.iterdir() if p.name.startswith(".")]  # no temp left
    assert slot.current().payload == s.payload


def test_opening_a_slot_removes_the_temps_a_cut_short_install_left(tmp_path, caplog):
    """Check a payload-sized temp file of an install that never finished (a power loss:
    replace_atomically's ``.<name>.<pid>.<tid>.<hex>.tmp``, which nothing removed) is removed
    when the slot is opened, logged, while a file or link of another name, a link of that
    name (never followed) and a temp of a live writer are kept."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    root = tmp_path / "models"
    root.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    dead = 999_999_999  # above any pid_max: no such process
    stale = [f".model-9-{'ab' * 8}.bin.{dead}.140.0badcafe.tmp",
             f".current.json.{os.getpid()}.7.00c0ffee.tmp",  # a pid reused after the reboot
             f".history.json.{dead}.1.deadbeef.tmp"]
    for name in stale:
        (root / name).write_bytes(b"\0" * 4096)
    kept = [".notes.tmp", f".model-9-{'ab' * 8}.bin.{os.getppid()}.1.12345678.tmp",
            f"model-9-{'ab' * 8}.bin.{dead}.1.12345678.tmp", "other.json.1.1.12345678.tmp"]
    for name in kept:
        (root / name).write_bytes(b"keep")
    link = f".history.json.{dead}.2.feedface.tmp"
    os.symlink(victim, root / link)
    ModelSlot(root)
    assert sorted(p.name for p in root.iterdir()) == sorted([*kept, link])
    assert (root / link).is_symlink() and victim.read_text() == "precious"
    assert sorted(e["path"] for e in _events(caplog, "model_temp_removed")) == sorted(
        str(root / name) for name in stale)


# -- 5. a corrupt outbox -----------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["random", "header_zeroed"])
def test_a_corrupt_outbox_is_moved_aside_and_a_fresh_one_used(tmp_path, caplog, damage):
    """Check an outbox.sqlite of random bytes, or with its header zeroed, is renamed to
    outbox.sqlite.corrupt-<UTC time>, logged naming both paths, and the agent starts with a
    fresh outbox (it exited with sqlite3.DatabaseError)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    state = tmp_path / "a"
    state.mkdir()
    path = state / "outbox.sqlite"
    if damage == "random":
        path.write_bytes(os.urandom(8192))
    else:
        box = Outbox(path)
        for i in range(100):
            box.put({"ts": 1700000000 + i, "metrics": {"t": float(i)}})
        box.close()
        raw = bytearray(path.read_bytes())
        raw[:100] = bytes(100)
        path.write_bytes(bytes(raw))
    before = path.read_bytes()
    agent = Agent("http://gw", DEVICE, "s", state)
    assert agent.outbox.put({"ts": 1700000000, "metrics": {"t": 1.0}}) == 1
    [aside] = list(state.glob("outbox.sqlite.corrupt-*"))
    assert aside.read_bytes() == before
    [ev] = _events(caplog, "outbox_corrupt")
    assert ev["path"] == str(path) and ev["moved_to"] == str(aside)
