"""Which models the agent installs and runs, against the real gateway app (in-process): a
release in another format or one that does not load is refused once, logged and reported once,
and never installed; an installed model that cannot load falls back instead of crashing."""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent, ModelSlot
from edgewise.registry import Artifact, load_or_create_key, sign
from tests.server.conftest import Env, build_env


@pytest.fixture
def gw(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir)


def _agent(gw: Env, state: Path) -> Agent:
    reg = gw.client.app.state.registry
    return Agent("http://testserver", gw.device, gw.secret, state,
                 trusted_keys={reg.key_id: reg.public_key_bytes})


def _roll(gw: Env, version: str, payload: bytes, fmt: str = "pickle") -> None:
    reg = gw.client.app.state.registry
    reg.publish("ewz", version, payload, format=fmt)
    reg.rollout("ewz", version, f"device:{gw.device}")


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    out = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgewise.agent"]
    return [e for e in out if e.get("event") == event]


def _reports(agent: Agent, metric: str) -> list[float]:
    return [m["metrics"][metric] for m in agent.outbox.pending(1000) if metric in m["metrics"]]


class _OlderGateway:
    """The real app asked as a gateway from before the agent's ``formats``/``groups`` query
    (it offers the newest release whatever its format): the query is left off."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, url: str, **kw: Any) -> Any:
        return self.client.get(url.split("?")[0], **kw)

    def stream(self, *args: Any, **kw: Any) -> Any:
        return self.client.stream(*args, **kw)


def test_unsupported_format_is_refused_once_not_on_every_check(gw, tmp_path, caplog):
    """Check an ONNX release offered by a gateway that does not filter by format is refused
    as unsupported_format, logged and reported once over several update checks (it was
    re-logged and re-reported on every check); this gateway does not offer it at all."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    _roll(gw, "1.0.0", b"onnx graph", fmt="onnx")
    agent = _agent(gw, tmp_path / "a")
    assert agent.check_update(gw.client) == "none"
    older = _OlderGateway(gw.client)
    assert [agent.check_update(older) for _ in range(3)] == ["refused:unsupported_format"] * 3
    assert len(_events(caplog, "update_refused")) == 1
    assert _reports(agent, "agent.update_refused") == [1.0]
    assert ModelSlot(tmp_path / "a" / "models").current() is None


@pytest.mark.parametrize("payload", [b"not a pickle at all", pickle.dumps({"z0": 4.0})],
                         ids=["not-a-pickle", "not-a-detector"])
def test_a_release_that_does_not_load_is_refused_and_the_old_model_kept(gw, tmp_path, caplog,
                                                                        payload):
    """Check a validly signed release whose payload does not load as a detector is refused as
    bad_model before it is installed (it used to be installed, then crash the sender thread
    and every later start), the running model is kept, and the refusal is said once."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    _roll(gw, "1.0.0", pickle.dumps(EWZScore(z0=4.0)))
    agent = _agent(gw, tmp_path / "a")
    assert agent.check_update(gw.client) == "installed"
    _roll(gw, "2.0.0", payload)
    assert [agent.check_update(gw.client) for _ in range(3)] == ["refused:bad_model"] * 3
    assert agent.release == 1 and agent.template.z0 == 4.0
    assert ModelSlot(tmp_path / "a" / "models").current().release == 1
    (refused,) = _events(caplog, "update_refused")
    assert refused["release"] == 2 and refused["reason"] == "bad_model"
    assert _reports(agent, "agent.update_refused") == [2.0]
    assert agent.handle({"temp_c": 20.0}) is not None          # still scoring
    again = _agent(gw, tmp_path / "a")                          # and it starts again
    assert again.release == 1 and again.template.z0 == 4.0


def _install(slot: ModelSlot, key, release: int, payload: bytes) -> None:
    s = sign(Artifact(payload, "ewz", f"{release}.0.0", release, "device:d", "pickle"), key)
    slot.install(s.manifest_bytes, payload, signature=s.signature)


def test_start_falls_back_when_the_installed_model_cannot_load(tmp_path, caplog):
    """Check an installed model that cannot load (state left by an older agent) makes the agent
    start on the previous release, or the built-in detector, with a logged reason; the broken
    release stays the anti-rollback floor. It used to raise in the constructor on every start."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    key = load_or_create_key(tmp_path / "key")
    slot = ModelSlot(tmp_path / "a" / "models")
    _install(slot, key, 1, pickle.dumps(EWZScore(z0=4.0)))
    _install(slot, key, 2, b"garbage")
    trusted = {key.key_id: key.public_key_bytes}
    agent = Agent("http://127.0.0.1:9", "d", "s", tmp_path / "a", trusted_keys=trusted)
    assert agent.template.z0 == 4.0 and agent.release == 2
    (fb,) = _events(caplog, "model_fallback")
    assert fb["release"] == 2 and fb["using"] == "release 1 (1.0.0)"
    assert "does not unpickle" in fb["reason"]
    assert _reports(agent, "agent.model_fallback") == [2.0]

    only_bad = ModelSlot(tmp_path / "b" / "models")
    _install(only_bad, key, 3, pickle.dumps([1, 2]))
    agent = Agent("http://127.0.0.1:9", "d", "s", tmp_path / "b", trusted_keys=trusted)
    assert type(agent.template) is EWZScore and agent.template.z0 == EWZScore().z0
    assert agent.release == 3 and _events(caplog, "model_fallback")[-1]["using"] == (
        "built-in EWZScore")


def test_csv_source_sends_each_row_at_its_own_time(gw, tmp_path, caplog):
    """Check a csv:PATH source stamps readings with the first column's time (RFC 3339 or epoch
    s/ms, history included), the gateway stores them at those times, and a row whose time is
    before 2000 or not a time is logged and skipped, not sent, while one ahead of this
    device's clock is sent and the gateway's refusal counted and kept (every reading used to
    be stamped with the time it was read)."""
    import time

    from edgewise.edge.agent import _source

    caplog.set_level(logging.INFO, "edgewise.agent")
    future = int(time.time()) + 3600
    rows = ["2003-05-01T10:00:00Z,1.5", "1999-12-31T23:59:59Z,2.5", "1600000000,3.5",
            "yesterday,4.5", f"{future},5.5", "1600000060500,6.5", "", "1600000120.25,7.5"]
    csv = tmp_path / "pump.csv"
    csv.write_text("time,temp_c\n" + "\n".join(rows) + "\n")
    agent = _agent(gw, tmp_path / "a")
    pos = agent.outbox.source_pos
    for reading, ts in _source(f"csv:{csv}", pos, 0):
        pos += 1
        agent.handle(reading, source_pos=pos, ts_ns=ts)
    assert agent.outbox.source_pos == len(rows) + 1
    sent = [(m["ts"], m["metrics"]["temp_c"]) for m in agent.outbox.pending()]
    want = [(1051783200 * 10**9, 1.5), (1600000000 * 10**9, 3.5),
            (1600000060500 * 10**6, 6.5), (1600000120250 * 10**6, 7.5)]
    assert sent == [*want[:2], (future * 10**9, 5.5), *want[2:]]
    assert [(e["line"], e["value"]) for e in _events(caplog, "bad_input")] == [
        (3, "1999-12-31T23:59:59Z"), (5, "yesterday")]
    assert agent.drain_once(gw.client) == 5
    stored = gw.store.query(gw.device, "temp_c")
    assert [(ts, v) for _, ts, v in stored] == want
    assert agent.outbox.rejected == 1  # the row an hour ahead: the gateway's to refuse


@pytest.mark.parametrize("damage", ["not-json", "a-bad-entry"])
def test_a_damaged_install_history_does_not_block_updates(gw, tmp_path, caplog, damage):
    """Check a models/history.json that is not JSON, or holds one entry that is no manifest,
    is logged (model_history_damaged) and the next release installs, the history written
    again with its readable entries (it raised on every check, logged as
    gateway_unreachable, or refused the valid release as 'tampered' for good)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    _roll(gw, "1.0.0", pickle.dumps(EWZScore(z0=4.0)))
    agent = _agent(gw, tmp_path / "a")
    assert agent.check_update(gw.client) == "installed"
    hist = tmp_path / "a" / "models" / "history.json"
    old = hist.read_text()
    hist.write_text("[" + old[:40] if damage == "not-json"
                    else json.dumps(["bm90IGEgbWFuaWZlc3Q=", *json.loads(old)]))
    _roll(gw, "2.0.0", pickle.dumps(EWZScore(z0=5.0)))
    agent = _agent(gw, tmp_path / "a")
    assert agent.check_update(gw.client) == "installed"
    assert agent.release == 2 and agent.template.z0 == 5.0
    assert _events(caplog, "model_history_damaged")
    slot = ModelSlot(tmp_path / "a" / "models")
    kept = [1, 2]  # release 1, named by the old pointer and kept as the fallback
    assert [m.release for m in slot.history()] == kept
    assert agent.check_update(gw.client) == "current"


def test_a_reused_release_number_with_another_model_is_a_logged_conflict(data_dir, tmp_path,
                                                                        caplog):
    """Check a gateway whose registry was restored from an older backup, and so offers
    release 1 again with another model, gets a warning naming the conflict, once per offer,
    and nothing installed (it was taken as the installed release, silently)."""
    import shutil

    caplog.set_level(logging.INFO, "edgewise.agent")
    env = build_env(data_dir)
    gw = next(env)
    try:
        reg = gw.client.app.state.registry
        reg.publish("ewz", "1.0.0", pickle.dumps(EWZScore(z0=4.0)), format="pickle")
        shutil.copytree(data_dir / "registry", tmp_path / "backup")
        reg.rollout("ewz", "1.0.0", f"device:{gw.device}")
        agent = _agent(gw, tmp_path / "a")
        assert agent.check_update(gw.client) == "installed"
        installed = ModelSlot(tmp_path / "a" / "models").current().sha256
    finally:
        env.close()
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copytree(tmp_path / "backup", restored / "registry")
    env = build_env(restored)
    gw = next(env)
    try:
        reg = gw.client.app.state.registry
        reg.publish("ewz", "1.1.0", pickle.dumps(EWZScore(z0=6.0)), format="pickle")
        assert reg.rollout("ewz", "1.1.0", f"device:{gw.device}").manifest.release == 1
        agent = _agent(gw, tmp_path / "a")
        assert [agent.check_update(gw.client) for _ in range(3)] == ["conflict"] * 3
        (said,) = _events(caplog, "update_conflict")
        assert said["release"] == 1 and said["installed_sha256"] == installed
        assert "roll out a new release" in said["detail"]
        assert agent.template.z0 == 4.0
        reg.rollout("ewz", "1.1.0", f"device:{gw.device}")  # the fix the warning names
        assert agent.check_update(gw.client) == "installed" and agent.template.z0 == 6.0
    finally:
        env.close()
