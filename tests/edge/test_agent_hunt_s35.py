"""Edge agent hunt fixes (session 35): a damaged outbox page keeps what can be read (and a
truncated outbox its counters, with an honest count of what was lost), a model that fails on
real readings is refused and falls back instead of killing the agent, a download whose
bytes are wrong backs off, a model download no longer holds up telemetry, a release's
trained state is kept, and a 401's detail reaches the command's last line."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer

from edgewise.cli.agent import _say_undelivered, _SendWatch
from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent, ModelSlot, Outbox
from edgewise.registry import Artifact, load_or_create_key, sign
from tests.edge.test_agent_outbox_disk import _fast


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    out = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgewise.agent"]
    return [e for e in out if e.get("event") == event]


# -- 1. a damaged or truncated outbox ------------------------------------------------------------
def _outbox(state: Path, n: int = 3000, acked: int = 100) -> Path:
    """An outbox of ``n`` messages for pump-1 (source ``sim`` read to n + 1), ``acked`` of
    them acked, checkpointed into the database file and closed."""
    state.mkdir()
    path = state / "outbox.sqlite"
    box = _fast(Outbox(path, device_id="pump-1"))
    box.use_source("sim")
    for i in range(n):
        box.put({"ts": 1700000000 + i, "metrics": {"t": float(i)}}, source_pos=i + 2)
    box.ack(acked)
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    return path


def _corrupt_event(caplog: pytest.LogCaptureFixture) -> dict:
    [ev] = [json.loads(r.getMessage()) for r in caplog.records
            if '"outbox_corrupt"' in r.getMessage()]
    return ev


def test_a_zeroed_outbox_page_keeps_the_readable_messages(tmp_path, caplog):
    """Check an outbox with a run of zeroed bytes (a bad SD-card sector run) is healed on
    first use: the rows that read with NULL columns are left out, every readable message is
    kept and numbered on from the ack, owner, ack and source position are kept, and it is
    logged. The heal raised TypeError (bytes(None)) after moving the file aside: the
    whole buffer, owner, ack and positions were lost and outbox_corrupt never logged."""
    caplog.set_level(logging.ERROR, "edgewise.agent")
    path = _outbox(tmp_path / "s")
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 3)
        f.write(b"\0" * 8192)
    box = Outbox(path, device_id="pump-1")
    msgs = box.pending(5000)
    n = len(msgs)
    assert 2000 < n < 2900
    assert [m["seq"] for m in msgs] == list(range(101, 101 + n))
    assert all(isinstance(m["metrics"]["t"], float) for m in msgs)
    assert (box.acked, box.next_seq, box.device_id) == (100, 101 + n, "pump-1")
    assert box.use_source("sim") == (3001, "resume")
    ev = _corrupt_event(caplog)
    assert ev["salvaged"] == n and ev["lost"] == 2900 - n
    assert box.ack(150) == 50 and len(box) == n - 50


def test_a_truncated_outbox_keeps_its_counters_and_says_what_was_lost(tmp_path, caplog):
    """Check an outbox truncated to half (a file system that lost its tail) keeps its owner,
    ack, source position and the messages of the pages that are still there, and logs how
    many were lost (it was read as nothing at all, logged as 'lost 0' while 2,900 pending
    readings were gone, and the outbox's owner and positions were forgotten)."""
    caplog.set_level(logging.ERROR, "edgewise.agent")
    path = _outbox(tmp_path / "s")
    os.truncate(path, path.stat().st_size // 2)
    box = Outbox(path, device_id="pump-1")
    n = len(box.pending(5000))
    assert 0 < n < 2900
    assert (box.acked, box.device_id, box.use_source("sim")) == (100, "pump-1", (3001, "resume"))
    ev = _corrupt_event(caplog)
    assert ev["salvaged"] == n and ev["lost"] == 2900 - n and "truncated" in ev["detail"]
    assert not [p for p in os.listdir(path.parent) if "-readable" in p]  # the copy is gone


def test_a_truncated_outbox_whose_counters_are_gone_says_the_loss_is_unknown(tmp_path,
                                                                            caplog):
    """Check an outbox cut so short its counters cannot be read logs the number lost as
    unknown (null), not 0 (it said 'lost 0' with 2,900 readings gone)."""
    caplog.set_level(logging.ERROR, "edgewise.agent")
    path = _outbox(tmp_path / "s")
    os.truncate(path, 5 * 4096)
    box = Outbox(path, device_id="pump-1")
    assert len(box) == 0 and box.device_id == "pump-1"
    ev = _corrupt_event(caplog)
    assert ev["salvaged"] == 0 and ev["lost"] is None and "unknown number" in ev["detail"]


# -- 2. a model that fails on real readings ------------------------------------------------------
class Brittle:
    """A detector that works on the probe's readings (0.0) and raises on a large one."""

    def clone(self) -> Brittle:
        return Brittle()

    def learn_one(self, x: dict[str, float]) -> None:
        pass

    def score_one(self, x: dict[str, float]) -> float:
        (v,) = x.values()
        if v > 50:
            raise OverflowError(f"cannot score {v}")
        return 0.0


class Picky:
    """A detector written against the probe's reading shape only ({"value": v})."""

    def clone(self) -> Picky:
        return Picky()

    def learn_one(self, x: dict[str, float]) -> None:
        pass

    def score_one(self, x: dict[str, float]) -> float:
        return min(abs(x["value"]) / 100.0, 1.0)


class _Gateway:
    """A gateway's update and telemetry routes, in process: serves one offer, counts the
    model downloads (``delay_s`` a chunk, 8 chunks), acknowledges every message."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.body: bytes | None = None
        self.blobs: dict[str, bytes] = {}
        self.fetches = 0
        self.delay_s = delay_s
        self.posts: list[float] = []
        self.client = httpx.Client(transport=httpx.MockTransport(self._handle))

    def offer(self, s: Any, payload: bytes | None = None) -> None:
        import base64

        self.body = json.dumps({"manifest": base64.b64encode(s.manifest_bytes).decode(),
                                "signature": base64.b64encode(s.signature).decode()}).encode()
        self.blobs[hashlib.sha256(s.payload).hexdigest()] = (
            s.payload if payload is None else payload)

    def _slow(self, blob: bytes) -> Iterator[bytes]:
        for i in range(8):
            time.sleep(self.delay_s)
            yield blob[i * len(blob) // 8:(i + 1) * len(blob) // 8]

    def _handle(self, req: httpx.Request) -> httpx.Response:
        path = req.url.path
        if path.endswith("/model"):
            return httpx.Response(204) if self.body is None else httpx.Response(
                200, content=self.body, headers={"Content-Type": "application/json"})
        if path.startswith("/v1/models/"):
            self.fetches += 1
            blob = self.blobs.get(path.rsplit("/", 1)[1])
            if blob is None:
                return httpx.Response(404)
            return httpx.Response(200, content=self._slow(blob) if self.delay_s else blob)
        if path == "/v1/telemetry":
            msgs = json.loads(req.content)
            self.posts.append(time.monotonic())
            return httpx.Response(200, json={"ack_seq": msgs[-1]["seq"], "rejected": []})
        return httpx.Response(404)


@pytest.fixture
def key(tmp_path: Path) -> Any:
    return load_or_create_key(tmp_path / "key")


def _release(key: Any, release: int, model: Any, trained_on: str = "") -> Any:
    meta = {"trained_on": trained_on, "metrics": {}}
    return sign(Artifact(pickle.dumps(model), "ewz", f"1.0.{release}", release,
                         "device:pump-7", format="pickle", metadata=meta), key)


def _agent(key: Any, state: Path, **kw: Any) -> Agent:
    return Agent("http://gw", "pump-7", "s", state,
                 trusted_keys={key.key_id: key.public_key_bytes}, **kw)


def test_a_model_that_fails_on_a_reading_is_refused_and_falls_back(tmp_path, key, caplog):
    """Check a signed model that passes the install probe but raises on a real reading is
    logged (model_failed), refused as bad_model and replaced by the previous release, the
    reading still buffered (scored by that release); the next start runs the previous
    release too, and the failed release offered again is not run. handle() raised, which
    ended the agent, and it did so again after every restart."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    agent = _agent(key, tmp_path / "a")
    gw.offer(_release(key, 1, EWZScore(z0=4.0)))
    assert agent.check_update(gw.client) == "installed"
    brittle = _release(key, 2, Brittle())
    gw.offer(brittle)
    assert agent.check_update(gw.client) == "installed" and agent.running_release == 2
    assert agent.handle({"temp_c": 20.0}) is not None
    seq = agent.handle({"temp_c": 99.0, "flow": 3.0})
    assert seq is not None
    assert agent.outbox.pending(100)[-1]["metrics"] == {"temp_c": 99.0, "flow": 3.0}
    assert (agent.release, agent.running_release, agent.template.z0) == (2, 1, 4.0)
    [failed] = _events(caplog, "model_failed")
    assert failed["release"] == 2 and failed["metric"] == "temp_c"
    assert "OverflowError" in failed["detail"]
    assert (2, "bad_model") in agent.refused
    assert _events(caplog, "model_fallback")[-1]["using"].startswith("release 1")
    assert agent.check_update(gw.client) == "current" and gw.fetches == 2
    agent.outbox.close()

    again = _agent(key, tmp_path / "a")
    assert (again.release, again.running_release) == (2, 1)
    assert "failed on this device's readings" in _events(caplog, "model_fallback")[-1]["reason"]
    assert again.handle({"temp_c": 99.0}) is not None


def test_the_only_release_failing_falls_back_to_the_built_in(tmp_path, key, caplog):
    """Check a failing release with no previous one leaves the built-in detector running
    (now and at the next start), the reading buffered."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    agent = _agent(key, tmp_path / "a")
    gw.offer(_release(key, 1, Brittle()))
    assert agent.check_update(gw.client) == "installed"
    assert agent.handle({"t": 60.0}) is not None
    assert agent.running_release == 0 and type(agent.template) is EWZScore
    agent.outbox.close()
    again = _agent(key, tmp_path / "a")
    assert (again.release, again.running_release) == (1, 0)
    assert again.handle({"t": 60.0}) is not None
    assert ModelSlot(tmp_path / "a" / "models").failed()


def test_a_model_that_reads_only_metric_value_is_refused_at_install(tmp_path, key):
    """Check the install probe reads a metric not named 'value' too: a detector that
    indexes x['value'] is refused (bad_model), not installed to raise on every reading."""
    gw = _Gateway()
    agent = _agent(key, tmp_path / "a")
    gw.offer(_release(key, 1, Picky()))
    assert agent.check_update(gw.client) == "refused:bad_model"
    assert agent.release == 0 and agent.handle({"temp_c": 21.0}) is not None


# -- 3. a download whose bytes are wrong ---------------------------------------------------------
def test_a_download_with_the_wrong_bytes_backs_off(tmp_path, key, caplog):
    """Check a release whose downloaded bytes are not the signed ones (a proxy that cuts or
    alters them) is refused as tampered and not downloaded again before its retry time,
    which doubles; once the bytes are right it installs (it was downloaded again on every
    update check)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    good = _release(key, 1, EWZScore(z0=4.0))
    gw.offer(good, payload=good.payload[:-1] + b"\0")
    agent = _agent(key, tmp_path / "a", update_interval_s=30.0)

    def retry_time_passes() -> None:
        agent._retry = {k: (0.0, n, o) for k, (_, n, o) in agent._retry.items()}

    outcomes = [agent.check_update(gw.client) for _ in range(6)]
    assert outcomes == ["refused:tampered"] + ["refused:tampered:retry_later"] * 5
    assert gw.fetches == 1
    retry_time_passes()
    assert agent.check_update(gw.client) == "refused:tampered" and gw.fetches == 2
    first, second = _events(caplog, "update_backoff")
    assert (first["failures"], second["failures"], first["retry_in_s"]) == (1, 2, 60.0)
    assert second["retry_in_s"] == 2 * first["retry_in_s"]
    assert len(_events(caplog, "update_refused")) == 1  # refused once, then backed off
    gw.offer(good)
    assert agent.check_update(gw.client) == "refused:tampered:retry_later"
    retry_time_passes()
    assert agent.check_update(gw.client) == "installed" and agent.release == 1


# -- 4. a model download and telemetry -----------------------------------------------------------
def test_a_model_download_does_not_hold_up_telemetry(tmp_path, key, monkeypatch):
    """Check readings are sent while a slow model download runs (3.2 s), and readings
    handled meanwhile are scored and buffered while the model is swapped: the update check
    ran in the sender's thread, so nothing was sent until the download finished."""
    gw = _Gateway(delay_s=0.4)
    gw.offer(_release(key, 1, EWZScore(z0=4.0)))
    agent = _agent(key, tmp_path / "a", update_interval_s=0.05)
    assert agent.handle({"t": 1.0}) is not None
    monkeypatch.setattr(httpx, "Client", lambda **kw: gw.client)
    sender = threading.Thread(target=agent.sender_loop, daemon=True)
    t0 = time.monotonic()
    sender.start()
    try:
        deadline = t0 + 15.0
        while agent.release != 1 and time.monotonic() < deadline:
            assert agent.handle({"t": 1.0 + random.random()}) is not None
            time.sleep(0.01)
    finally:
        agent.stop()
        sender.join(15)
    assert agent.release == 1 and agent.template.z0 == 4.0
    assert gw.posts and gw.posts[0] - t0 < 2.0, [p - t0 for p in gw.posts[:3]]
    assert not sender.is_alive()


# -- 5. a release's trained state ----------------------------------------------------------------
def _trained() -> EWZScore:
    rng = random.Random(0)
    det = EWZScore()
    for _ in range(2000):
        det.learn_one({"temp_c": 20 + rng.gauss(0, 0.2)})
    return det


def test_the_metric_a_release_was_trained_on_keeps_its_training(tmp_path, key, caplog):
    """Check the metric a release names (--trained-on 'metric=temp_c ...') starts from the
    published model's learned state (35.0 is an alert at once), another metric starts fresh,
    and so after a restart; the agent ran template.clone(), an untrained detector, for every
    metric, so the published training was thrown away."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    gw.offer(_release(key, 1, _trained(), trained_on="metric=temp_c plant history"))
    agent = _agent(key, tmp_path / "a")
    assert agent.check_update(gw.client) == "installed"
    agent.handle({"temp_c": 35.0, "flow": 5.0})
    assert agent.detectors["temp_c"].n_ == 2001 and agent.detectors["flow"].n_ == 1
    assert agent.local_alerts == 1
    assert agent.template.n_ == 2000  # the template itself never learns
    assert _events(caplog, "model_loaded")[-1]["trained_for"] == ["temp_c"]
    assert not _events(caplog, "model_trained_state_shared")
    agent.outbox.close()
    again = _agent(key, tmp_path / "a")
    again.handle({"temp_c": 20.1})
    assert again.detectors["temp_c"].n_ == 2001


def test_a_release_naming_no_metric_gives_every_metric_its_training(tmp_path, key, caplog):
    """Check a trained release whose trained_on names no metric starts every metric from its
    learned state, and warns once when a second metric gets it; an untrained release (the
    README's fresh EWZScore) starts every metric fresh, as before, and warns nothing."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    gw = _Gateway()
    gw.offer(_release(key, 1, _trained(), trained_on="plant history"))
    agent = _agent(key, tmp_path / "a")
    assert agent.check_update(gw.client) == "installed"
    agent.handle({"temp_c": 20.0, "flow": 20.0, "rpm": 20.0})
    assert {m: d.n_ for m, d in agent.detectors.items()} == dict.fromkeys(
        ("temp_c", "flow", "rpm"), 2001)
    [ev] = _events(caplog, "model_trained_state_shared")
    assert ev["release"] == 1 and "metric=NAME" in ev["detail"]

    gw.offer(_release(key, 2, EWZScore(z0=5.0)))
    assert agent.check_update(gw.client) == "installed"
    agent.handle({"temp_c": 20.0, "flow": 20.0})
    assert {d.n_ for d in agent.detectors.values()} == {1}
    assert len(_events(caplog, "model_trained_state_shared")) == 1


# -- 6. the gateway's detail of a refusal --------------------------------------------------------
def test_a_401_says_the_gateways_detail(tmp_path, capsys):
    """Check a 401 answered with the gateway's problem JSON is logged with its detail and
    the command's last line says it (the body was clipped at 200 characters, no JSON any
    more, so the detail after the problem's type, title and status never showed)."""
    problem = {"type": "urn:edgewise:problem:bad_credentials",
               "title": "Authentication required", "status": 401,
               "detail": "Device 'pump-8' is unknown or the secret is wrong.",
               "field": "Authorization", "value": None,
               "allowed": "'Bearer <device secret>' with 'X-Device-Id'",
               "reason": "bad_credentials"}
    assert len(json.dumps(problem)) > 200
    client = httpx.Client(transport=httpx.MockTransport(
        lambda req: httpx.Response(401, json=problem)))
    agent = Agent("http://gw", "pump-8", "wrong", tmp_path / "a")
    agent.handle({"t": 1.0})
    watch = _SendWatch()
    logging.getLogger("edgewise.agent").addHandler(watch)
    try:
        agent._stop.set()  # no pause after the failed post
        assert agent.drain_once(client) == -1
    finally:
        logging.getLogger("edgewise.agent").removeHandler(watch)
    assert watch.last is not None and watch.last["detail"] == problem["detail"]
    with pytest.raises(typer.Exit):
        _say_undelivered(agent, watch, 1.0)
    err = capsys.readouterr().err
    assert "HTTP 401: Device 'pump-8' is unknown or the secret is wrong.)" in err


def test_a_401_to_the_update_check_is_no_unreachable_gateway_and_the_command_fails(
        tmp_path, capsys, caplog, monkeypatch):
    """Check the update check answered 401 (a wrong secret, the agent run with --trust-key)
    is logged update_check_failed with the status, once while it lasts, never
    gateway_unreachable, and that the command still ends with the sender's 401: exit 1 (the
    update thread's 401, logged as the gateway being unreachable, was the watch's last event:
    a warning and exit 0)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    problem = {"title": "Authentication required", "status": 401,
               "detail": "Device 'pump-8' is unknown or the secret is wrong."}
    client = httpx.Client(transport=httpx.MockTransport(
        lambda req: httpx.Response(401, json=problem)))
    key = load_or_create_key(tmp_path / "key")
    agent = Agent("http://gw", "pump-8", "wrong", tmp_path / "a", update_interval_s=0.01,
                  trusted_keys={key.key_id: key.public_key_bytes})
    assert [agent.check_update(client) for _ in range(3)] == ["check_failed:401"] * 3
    (ev,) = _events(caplog, "update_check_failed")
    assert ev["status"] == 401 and ev["detail"] == problem["detail"]
    agent.handle({"t": 1.0})
    monkeypatch.setattr(httpx, "Client", lambda **kw: client)
    watch = _SendWatch()
    logging.getLogger("edgewise.agent").addHandler(watch)
    try:
        agent._stop.set()  # no pause after the failed post
        assert agent.drain_once(client) == -1
        agent._stop.clear()
        updates = threading.Thread(target=agent.update_loop)
        updates.start()  # the update thread's answers come after the sender's
        time.sleep(0.2)
        agent.stop()
        updates.join(10)
        agent._log_loop_error(httpx.ConnectError("refused"), "updates")  # and its outage
    finally:
        logging.getLogger("edgewise.agent").removeHandler(watch)
    assert len(_events(caplog, "update_check_failed")) == 1  # said once while it lasts
    assert [e["loop"] for e in _events(caplog, "gateway_unreachable")] == ["updates"]
    assert watch.last is not None and watch.last["event"] == "send_failed"
    with pytest.raises(typer.Exit) as info:
        _say_undelivered(agent, watch, 1.0)
    assert info.value.exit_code == 1
    assert "refused this device's credentials (HTTP 401" in capsys.readouterr().err


def test_stopping_the_agent_ends_a_slow_model_download_at_once(tmp_path, key, monkeypatch):
    """Check an agent asked to stop during a slow model download (8 chunks of 0.4 s) ends
    its update thread within a chunk and installs nothing: the download went on to its end
    (3.2 s) while the sender waited up to 10 s for the update thread, and then installed."""
    gw = _Gateway(delay_s=0.4)
    gw.offer(_release(key, 1, EWZScore(z0=4.0)))
    agent = _agent(key, tmp_path / "a", update_interval_s=0.05)
    monkeypatch.setattr(httpx, "Client", lambda **kw: gw.client)
    sender = threading.Thread(target=agent.sender_loop, daemon=True)
    sender.start()
    deadline = time.monotonic() + 10.0
    while gw.fetches == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gw.fetches == 1
    time.sleep(0.5)  # a chunk or two in
    t0 = time.monotonic()
    agent.stop()
    sender.join(15)
    took = time.monotonic() - t0
    assert not sender.is_alive()
    assert not any(t.name == "edgewise-updates" for t in threading.enumerate())
    assert took < 1.5, f"stop took {took:.2f} s: the download ran on"
    assert agent.release != 1 and gw.fetches == 1
