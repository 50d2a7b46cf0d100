"""Edge agent hunt fixes: an install the disk cut short leaves no model-sized file behind, a
power loss between an install's two writes no longer drops a release from the history, a
model download cut mid-body backs off, a device moved to a group running the same version
runs it, the local detectors are bounded in number and keep what they learned across a
restart, and a killed agent's download temp goes whatever pid its name holds."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import logging
import os
import pickle
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent, ModelSlot
from edgewise.gateway.metric_cap import DEFAULT_MAX_METRICS
from edgewise.registry import Artifact, load_or_create_key, sign
from tests.edge.test_agent_outbox_disk import _fast
from tests.server.conftest import Env, build_env

DEVICE = "pump-7"
NOWHERE = "http://127.0.0.1:9"  # no gateway: the agent works offline
DETECTORS_FILE = "detectors.pickle"  # in the state dir (README: the edge agent)


@pytest.fixture
def key(tmp_path: Path) -> Any:
    return load_or_create_key(tmp_path / "key")


@pytest.fixture
def gw(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir)


def _release(key: Any, release: int, model: Any = None, version: str | None = None) -> Any:
    payload = pickle.dumps(EWZScore(z0=3.0 + release) if model is None else model)
    return sign(Artifact(payload, "ewz", version or f"1.0.{release}", release,
                         f"device:{DEVICE}", format="pickle"), key)


def _agent(state: Path, key: Any = None, gateway: str = NOWHERE, **kw: Any) -> Agent:
    keys = None if key is None else {key.key_id: key.public_key_bytes}
    agent = Agent(gateway, DEVICE, "s3cret", state, trusted_keys=keys, **kw)
    _fast(agent.outbox)  # no fsync per reading: the tests' readings come fast
    return agent


def _closed(agent: Agent) -> None:
    """The agent gone as a kill leaves it (nothing saved): its outbox and lock let go."""
    agent.outbox.close()
    agent._dir_lock.release()


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    out = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgewise.agent"]
    return [e for e in out if e.get("event") == event]


def _models(state: Path) -> list[str]:
    return sorted(p.name for p in (state / "models").glob("model-*.bin"))


# -- 1. an install cut short after its model was put in place ------------------------------------
def test_an_install_whose_history_write_fails_leaves_no_model_file(tmp_path, key):
    """Check an install the disk refuses after the model was renamed into place (here the
    history's write: history.json is a folder) puts the old pointer back and removes the
    new model file (it stayed, model-sized, and the pointer named the new release though
    the install failed)."""
    slot = ModelSlot(tmp_path / "models", DEVICE)
    first, second = _release(key, 1), _release(key, 2)
    slot.install(first.manifest_bytes, first.payload, signature=first.signature)
    pointer = slot.pointer.read_bytes()
    (slot.root / "history.json").unlink()
    (slot.root / "history.json").mkdir()
    with pytest.raises(OSError):
        slot.install(second.manifest_bytes, second.payload, signature=second.signature)
    assert _models(tmp_path) == [f"model-1-{first.manifest.sha256[:16]}.bin"]
    assert slot.pointer.read_bytes() == pointer and slot.current().release == 1


def test_an_orphan_model_file_is_removed_when_the_agent_opens_its_state_dir(tmp_path, key,
                                                                            caplog):
    """Check a model file neither the pointer nor the history names (a kill between the
    model's rename and the pointer's write) is removed, logged, when an agent opens the
    state dir; the installed one is kept (the orphan stayed for good)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    slot = ModelSlot(tmp_path / "a" / "models", DEVICE)
    first, second = _release(key, 1), _release(key, 2)
    slot.install(first.manifest_bytes, first.payload, signature=first.signature)
    orphan = slot.root / f"model-2-{second.manifest.sha256[:16]}.bin"
    orphan.write_bytes(second.payload)
    agent = _agent(tmp_path / "a", key)
    assert _models(tmp_path / "a") == [f"model-1-{first.manifest.sha256[:16]}.bin"]
    assert agent.running_release == 1
    [ev] = _events(caplog, "model_orphan_removed")
    assert ev["path"] == str(orphan) and ev["bytes"] == len(second.payload)
    agent.close()


def test_a_full_disk_install_can_be_retried_once_a_little_room_is_freed(small_disk, gw):
    """Check an install that a full disk refuses at the pointer's write (the download fit,
    one page more did not) leaves no model file, so once 64 KB are freed the retry installs
    (the renamed model stayed: the retry needed room for a second copy, and failed)."""
    reg = gw.client.app.state.registry
    det = EWZScore(z0=3.5)
    det.pad = os.urandom(600_000)  # type: ignore[attr-defined]  # a model of ~600 KB
    payload = pickle.dumps(det)
    reg.publish("ewz", "1.0.0", payload, format="pickle")
    reg.rollout("ewz", "1.0.0", f"device:{gw.device}")
    state = small_disk / "agent"
    agent = Agent("http://testserver", gw.device, gw.secret, state,
                  trusted_keys={reg.key_id: reg.public_key_bytes})

    def free() -> int:
        st = os.statvfs(small_disk)
        return st.f_bavail * st.f_frsize

    filler = small_disk / "logs.bin"
    filler.write_bytes(b"\0" * (free() - -(-len(payload) // 4096) * 4096))
    assert agent.check_update(gw.client) == "install_failed"
    assert _models(state) == [] and free() >= len(payload)
    with open(filler, "r+b") as f:  # a log rotated: 64 KB freed
        f.truncate(filler.stat().st_size - 65536)
    agent._retry.clear()  # the back-off's wait passed
    assert agent.check_update(gw.client) == "installed"
    assert agent.running_release == 1 and len(_models(state)) == 1
    agent.close()


# -- 2. a power loss between the pointer's and the history's write -------------------------------
def test_a_release_the_history_missed_is_added_back(tmp_path, key, caplog):
    """Check a pointer naming release 2 with a history of release 1 only (a kill between an
    install's two writes) gets release 2 into the history when the agent opens the state
    dir, and an install adds the old pointer's release too, so it stays the fallback (it
    was dropped for good: release 3 failing fell back to the built-in detector)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    root = tmp_path / "a" / "models"
    slot = ModelSlot(root, DEVICE)
    for rel in (1, 2):
        s = _release(key, rel)
        slot.install(s.manifest_bytes, s.payload, signature=s.signature)
    history = (root / "history.json").read_text()
    cut = json.dumps(json.loads(history)[:1])  # what the kill left: release 1 only
    (root / "history.json").write_text(cut)
    agent = _agent(tmp_path / "a", key)
    assert [m.release for m in agent.slot.history()] == [1, 2]
    assert _events(caplog, "model_history_mended")[0]["release"] == 2
    agent.close()
    # an install over such a slot, not opened by an agent, adds it too
    (root / "history.json").write_text(cut)
    third = _release(key, 3)
    ModelSlot(root, DEVICE).install(third.manifest_bytes, third.payload,
                                    signature=third.signature, running=(2, _release(
                                        key, 2).manifest.sha256))
    slot = ModelSlot(root, DEVICE, trusted_keys={key.key_id: key.public_key_bytes})
    assert [m.release for m in slot.history()] == [1, 2, 3]
    assert slot.previous().release == 2


# -- 3. a model download cut mid-body ------------------------------------------------------------
class _CuttingGateway(http.server.BaseHTTPRequestHandler):
    """A real HTTP server's answers: the offer whole, the model's body cut halfway (the
    connection closed, or stalled past the client's timeout)."""

    offer: bytes = b""
    blob: bytes = b""
    how = "close"
    downloads = 0

    def do_GET(self) -> None:
        if self.path.startswith("/v1/devices/"):
            body = self.offer
        elif self.path.startswith("/v1/models/"):
            type(self).downloads += 1
            body = self.blob
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body is self.blob:
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            if self.how == "stall":
                time.sleep(1.0)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("how", ["close", "stall"])
def test_a_download_cut_mid_body_backs_off(tmp_path, key, caplog, how):
    """Check a model download the connection cuts halfway (closed: RemoteProtocolError;
    stalled: ReadTimeout) is logged update_fetch_failed and not downloaded again before
    its back-off, which doubles (it escaped as gateway_unreachable and was downloaded
    again on every check)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    s = _release(key, 1, EWZScore(z0=4.0))
    handler = type("Cut", (_CuttingGateway,), {
        "how": how, "blob": s.payload, "downloads": 0,
        "offer": json.dumps({"manifest": base64.b64encode(s.manifest_bytes).decode(),
                             "signature": base64.b64encode(s.signature).decode()}).encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    agent = _agent(tmp_path / "a", key, f"http://127.0.0.1:{server.server_port}",
                   update_interval_s=30.0)
    try:
        with httpx.Client(timeout=0.3) as client:
            outcomes = [agent.check_update(client) for _ in range(4)]
            agent._retry = {k: (0.0, n, o) for k, (_, n, o) in agent._retry.items()}
            outcomes.append(agent.check_update(client))
    finally:
        server.shutdown()
        server.server_close()
    assert outcomes == ["fetch_failed"] + ["fetch_failed:retry_later"] * 3 + ["fetch_failed"]
    assert handler.downloads == 2
    first, second = _events(caplog, "update_fetch_failed")
    assert (first["failures"], first["retry_in_s"], second["retry_in_s"]) == (1, 60.0, 120.0)
    assert "cut after" in first["detail"] and not _events(caplog, "gateway_unreachable")
    assert _models(tmp_path / "a") == [] and agent.running_release == 0
    agent.close()


# -- 4. a device moved to a group that runs the same version -------------------------------------
def _grouped(gw: Env, group: str) -> tuple[str, str]:
    return gw.security.add_device("pump-7", groups=[group])


def test_a_device_moved_to_a_group_running_the_same_version_runs_it(gw, tmp_path):
    """Check a device moved from line-a to line-b, both running ewz 2.0.0 (line-b's
    release signed first, so numbered lower), runs line-b's release, the floor kept at
    line-a's, and after a restart too, with no download (it refused it as a rollback and
    ran the built-in detector until a new release was signed)."""
    reg = gw.client.app.state.registry
    dev, secret = _grouped(gw, "line-a")
    keys = {reg.key_id: reg.public_key_bytes}
    reg.publish("ewz", "2.0.0", pickle.dumps(EWZScore(z0=4.0)), format="pickle")
    reg.rollout("ewz", "2.0.0", "group:line-b")  # release 1
    reg.rollout("ewz", "2.0.0", "group:line-a")  # release 2
    agent = Agent("http://testserver", dev, secret, tmp_path / "a", trusted_keys=keys,
                  groups=("line-a",))
    assert agent.check_update(gw.client) == "installed" and agent.running_release == 2
    _closed(agent)
    gw.security.set_device_groups(dev, ["line-b"])
    agent = Agent("http://testserver", dev, secret, tmp_path / "a", trusted_keys=keys,
                  groups=("line-b",))
    assert agent.running_release == 0
    assert agent.check_update(gw.client) == "installed"
    assert (agent.running_release, agent.release, agent.template.z0) == (1, 2, 4.0)
    assert agent.check_update(gw.client) == "current"
    _closed(agent)
    agent = Agent("http://testserver", dev, secret, tmp_path / "a", trusted_keys=keys,
                  groups=("line-b",))
    assert (agent.running_release, agent.release) == (1, 2)
    assert agent.check_update(gw.client) == "current"
    assert agent.slot.installed_release() == 2
    _closed(agent)


@pytest.mark.parametrize("other", ["same-bytes-other-version", "other-model"])
def test_a_lower_release_of_another_version_is_still_a_rollback(gw, tmp_path, other):
    """Check the group move takes only the very same model: a lower-numbered release of
    another version (even of the same bytes) or of another model is refused as a
    rollback, and the built-in detector runs."""
    reg = gw.client.app.state.registry
    dev, secret = _grouped(gw, "line-a")
    keys = {reg.key_id: reg.public_key_bytes}
    model = pickle.dumps(EWZScore(z0=4.0))
    reg.publish("ewz", "2.0.0", model, format="pickle")
    older = model if other == "same-bytes-other-version" else pickle.dumps(EWZScore(z0=9.0))
    reg.publish("ewz", "1.9.0", older, format="pickle")
    reg.rollout("ewz", "1.9.0", "group:line-b")  # release 1
    reg.rollout("ewz", "2.0.0", "group:line-a")  # release 2
    agent = Agent("http://testserver", dev, secret, tmp_path / "a", trusted_keys=keys,
                  groups=("line-a",))
    assert agent.check_update(gw.client) == "installed"
    _closed(agent)
    gw.security.set_device_groups(dev, ["line-b"])
    agent = Agent("http://testserver", dev, secret, tmp_path / "a", trusted_keys=keys,
                  groups=("line-b",))
    assert agent.check_update(gw.client) == "refused:rollback"
    assert (agent.running_release, agent.release) == (0, 2)
    _closed(agent)


# -- 5. one detector per metric name, without bound ----------------------------------------------
def test_local_detectors_are_capped_at_the_gateways_metric_cap(tmp_path, caplog):
    """Check the agent keeps a detector for at most the gateway's default number of metric
    names (max_metrics_per_device), a reading of a later name forwarded unscored and said
    once (one detector per name ever seen, without bound: 2,000 names took 224 MB)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    agent = _agent(tmp_path / "a")
    n = DEFAULT_MAX_METRICS + 50
    for i in range(n):
        assert agent.handle({"temp": 21.5, f"evt_{i}": 1.0}) is not None
    assert len(agent.detectors) == DEFAULT_MAX_METRICS
    assert "temp" in agent.detectors and f"evt_{n - 1}" not in agent.detectors
    [ev] = _events(caplog, "metric_unscored")
    assert ev["max_metrics"] == DEFAULT_MAX_METRICS
    assert f"evt_{n - 1}" in agent.outbox.pending(1000)[-1]["metrics"]  # still forwarded
    agent.close()


# -- 6. the local detectors' state across a restart ----------------------------------------------
def _learn_normal(agent: Agent, n: int = 100) -> None:
    for i in range(n):
        agent.handle({"temp_c": 20.0 + 0.2 * ((i * 7) % 5 - 2)})


def _saved_then_killed(agent: Agent) -> None:
    """The save interval passes, a reading comes (saving the state), then a kill."""
    agent.save_every_s = 0.0
    _learn_normal(agent, 1)
    _closed(agent)


def _alerts_on_fault(agent: Agent) -> int:
    before = agent.local_alerts
    agent.handle({"temp_c": 27.0})
    return agent.local_alerts - before


def test_a_restart_keeps_what_the_local_detectors_learned(tmp_path):
    """Check the local detectors' state is saved when run() ends and restored at start, so
    a fault present at the restart is alerted at once (it was learned as normal during the
    warm-up of fresh detectors)."""
    csv = tmp_path / "pump.csv"
    csv.write_text("time,temp_c\n" + "".join(
        f"{1700000000 + i},{20.0 + 0.2 * ((i * 7) % 5 - 2)}\n" for i in range(100)))
    agent = _agent(tmp_path / "a")
    agent.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=0)
    _closed(agent)
    again = _agent(tmp_path / "a")
    assert "temp_c" in again.detectors
    assert _alerts_on_fault(again) == 1
    again.close()


def test_the_state_is_saved_periodically_and_survives_a_kill(tmp_path, caplog):
    """Check the state is saved as readings come (every save_every_s), so an agent killed
    (nothing saved at its stop) restarts with it."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    agent = _agent(tmp_path / "a")
    agent.save_every_s = 3600.0
    _learn_normal(agent)
    assert not (tmp_path / "a" / DETECTORS_FILE).exists()
    _saved_then_killed(agent)
    again = _agent(tmp_path / "a")
    assert _events(caplog, "detector_state_restored")[0]["metrics"] == 1
    assert _alerts_on_fault(again) == 1
    again.close()


def test_close_saves_the_state_once(tmp_path, caplog):
    """Check close() (an embedder's stop) saves the state, closes the outbox and lets the
    state dir go; a second call does nothing."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    agent = _agent(tmp_path / "a")
    _learn_normal(agent)
    agent.close()
    agent.close()
    again = _agent(tmp_path / "a")
    assert _events(caplog, "detector_state_restored")[0]["metrics"] == 1
    assert again._dir_lock.users == 1  # the first agent's hold was let go, once
    again.close()


def test_state_saved_under_another_release_starts_fresh(tmp_path, key, caplog):
    """Check a state saved while the built-in detector ran is not given to the release
    installed since (its detectors are another model's): they start fresh, logged."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    agent = _agent(tmp_path / "a", key)
    _learn_normal(agent)
    _saved_then_killed(agent)
    s = _release(key, 1, EWZScore(z0=4.0))
    ModelSlot(tmp_path / "a" / "models", DEVICE).install(s.manifest_bytes, s.payload,
                                                         signature=s.signature)
    again = _agent(tmp_path / "a", key)
    assert again.running_release == 1 and again.detectors == {}
    [ev] = _events(caplog, "detector_state_stale")
    assert (ev["saved_release"], ev["release"]) == (0, 1)
    again.close()


class _Planted:
    """A pickle that makes a file when it is loaded."""

    def __init__(self, where: Path) -> None:
        self.where = where

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.where),))


@pytest.mark.parametrize("damage", ["garbage", "truncated", "planted"])
def test_a_damaged_or_planted_state_file_is_logged_and_ignored(tmp_path, caplog, damage):
    """Check a detectors.pickle that is no saved state, cut short, or a pickle planted
    without this device's secret (its HMAC does not match) is logged and the detectors
    start fresh; the planted pickle is never loaded."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    agent = _agent(tmp_path / "a")
    _learn_normal(agent, 50)
    _saved_then_killed(agent)
    path = tmp_path / "a" / DETECTORS_FILE
    raw = path.read_bytes()
    planted = tmp_path / "pwned"
    if damage == "garbage":
        path.write_bytes(os.urandom(500))
    elif damage == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
    else:
        body = pickle.dumps({"sha256": None, "detectors": {"t": _Planted(planted)}})
        head = raw[:raw.index(b"\n") + 1]
        path.write_bytes(head + hashlib.sha256(body).digest() + body)
    again = _agent(tmp_path / "a")
    assert again.detectors == {} and not planted.exists()
    [ev] = _events(caplog, "detector_state_unreadable")
    assert ev["path"] == str(path)
    assert again.handle({"temp_c": 20.0}) is not None
    again.close()


# -- 7. a killed agent's download temp, its pid now another process's ----------------------------
def test_a_stale_temp_goes_whatever_process_its_pid_now_is(tmp_path, caplog):
    """Check an agent, which holds the state dir's lock, removes a download temp a killed
    agent left even when the pid in its name is a live process now (pid reuse after a
    reboot): no other agent can be writing it (it was kept for as long as that process
    lived)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    root = tmp_path / "a" / "models"
    root.mkdir(parents=True)
    temp = root / f".model-7-{'ab' * 8}.bin.{os.getppid()}.140.0badcafe.tmp"  # alive
    temp.write_bytes(b"\0" * 65536)
    agent = _agent(tmp_path / "a")
    assert not temp.exists()
    assert [e["path"] for e in _events(caplog, "model_temp_removed")] == [str(temp)]
    agent.close()


def test_a_sigterm_stops_the_agent_command_with_its_detectors_saved(tmp_path: Path) -> None:
    """A service manager's stop (SIGTERM) ends `edgewise agent` as Ctrl-C does: exit 0, the
    local detectors' state saved (SIGTERM killed it where it stood, saving nothing)."""
    import signal
    import subprocess
    import sys

    from tests.edge.test_agent import ENV, REPO

    secret, state = tmp_path / "secret", tmp_path / "state"
    secret.write_text("s" * 32)
    log = tmp_path / "agent.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgewise", "agent", "--gateway", NOWHERE, "--device",
             DEVICE, "--secret-file", str(secret), "--state-dir", str(state), "--rate", "200",
             "--update-interval", "3600"],
            cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 60
            while b"gateway_unreachable" not in log.read_bytes():  # running, offline
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert (state / DETECTORS_FILE).exists(), log.read_text()
