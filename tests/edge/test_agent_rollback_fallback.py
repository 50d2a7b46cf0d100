"""The agent's fallback never runs a release a later signed rollback order replaced.

After a rollback order (release 3: back to 1.0.0, away from 2.0.0 = release 2), the model
kept as "previous" is the one rolled back from; when the rolled-back-to model then fails on a
reading or cannot load, the agent used to run release 2 (2.0.0) again, at once and at every
start. It runs an acceptable older release if one is kept, else the built-in detector.
"""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import pytest

from edgewise.detect.zscore import EWZScore
from edgewise.edge.agent import Agent, ModelSlot
from edgewise.registry import Artifact, Registry, load_or_create_key, sign


class Brittle:
    """A detector that passes the install probe (readings of 0.0) and raises on a large one."""

    def clone(self) -> Brittle:
        return Brittle()

    def learn_one(self, x: dict[str, float]) -> None:
        pass

    def score_one(self, x: dict[str, float]) -> float:
        (v,) = x.values()
        if v > 50:
            raise OverflowError(f"cannot score {v}")
        return 0.0


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict[str, Any]]:
    out = []
    for r in caplog.records:
        try:
            obj = json.loads(r.getMessage())
        except ValueError:
            continue
        if obj.get("event") == event:
            out.append(obj)
    return out


def _agent(state: Path, key: Any) -> Agent:
    """An agent trusting ``key`` (a signing key or a registry): the installed models it
    signed run."""
    return Agent("http://127.0.0.1:9", "pump-7", "s", state,
                 trusted_keys={key.key_id: key.public_key_bytes})


def _install(slot: ModelSlot, key: Any, release: int, version: str, model: Any,
             kind: str = "release") -> Any:
    s = sign(Artifact(pickle.dumps(model), "ewz", version, release, "device:pump-7",
                      "pickle", kind=kind), key)
    slot.install(s.manifest_bytes, s.payload, signature=s.signature)
    return s


def test_a_failed_rollback_target_does_not_fall_back_to_the_version_rolled_back_from(
        tmp_path, caplog):
    """Check the hunter's scenario (registry rollouts 1.0.0, 2.0.0, rollback to 1.0.0; the
    rollback's model recorded as failed on a reading): every start runs the built-in
    detector, naming release 2 as replaced by rollback order 3, never release 2 (2.0.0)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    reg = Registry(tmp_path / "gw")
    reg.publish("ewz", "1.0.0", pickle.dumps(EWZScore(z0=3.0)), format="pickle")
    reg.publish("ewz", "2.0.0", pickle.dumps(EWZScore(z0=4.0)), format="pickle")
    r1 = reg.rollout("ewz", "1.0.0", "device:pump-7")
    r2 = reg.rollout("ewz", "2.0.0", "device:pump-7")
    r3 = reg.rollout("ewz", "1.0.0", "device:pump-7", kind="rollback")
    slot = ModelSlot(tmp_path / "a" / "models")
    for r in (r1, r2, r3):
        slot.install(r.manifest_bytes, r.payload, signature=r.signature)
    slot.mark_failed(3, r3.manifest.sha256, "KeyError: raised on a reading")
    for start in (1, 2):
        agent = _agent(tmp_path / "a", reg)
        assert agent.release == 3 and agent.running_release == 0, start
        assert agent.template.z0 == EWZScore().z0
        fb = _events(caplog, "model_fallback")[-1]
        assert fb["using"] == "built-in EWZScore" and fb["release"] == 3
        assert "Release 2 is not run either: rollback order release 3" in fb["reason"]
    assert {r: o.release for r, o in slot.superseded().items()} == {2: 3}


def test_a_rollback_target_that_raises_on_a_reading_falls_back_to_the_built_in(tmp_path,
                                                                               caplog):
    """Check a rolled-back-to model that raises while it runs is replaced at once by the
    built-in detector (the reading still scored), not by release 2 (2.0.0), and at the next
    start too."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    key = load_or_create_key(tmp_path / "key")
    slot = ModelSlot(tmp_path / "a" / "models")
    _install(slot, key, 1, "1.0.0", Brittle())
    _install(slot, key, 2, "2.0.0", EWZScore(z0=4.0))
    _install(slot, key, 3, "1.0.0", Brittle(), kind="rollback")
    agent = _agent(tmp_path / "a", key)
    assert agent.running_release == 3 and type(agent.template) is Brittle
    assert agent.handle({"temp_c": 99.0}) is not None
    assert agent.running_release == 0 and type(agent.template) is EWZScore
    assert agent.template.z0 == EWZScore().z0 and agent.release == 3
    assert _events(caplog, "model_fallback")[-1]["using"] == "built-in EWZScore"
    restart = _agent(tmp_path / "a", key)
    assert restart.running_release == 0 and restart.release == 3


def test_a_damaged_rollback_model_file_does_not_run_the_version_rolled_back_from(tmp_path,
                                                                                caplog):
    """Check a rollback order whose model file fails its hash check runs the built-in (and
    is fetched again), not the version rolled back from."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    key = load_or_create_key(tmp_path / "key")
    slot = ModelSlot(tmp_path / "a" / "models")
    _install(slot, key, 1, "1.0.0", EWZScore(z0=3.0))
    _install(slot, key, 2, "2.0.0", EWZScore(z0=4.0))
    _install(slot, key, 3, "1.0.0", EWZScore(z0=3.0), kind="rollback")
    (f3,) = slot.root.glob("model-3-*.bin")
    f3.write_bytes(f3.read_bytes() + b"rot")
    agent = _agent(tmp_path / "a", key)
    assert agent.running_release == 0 and agent.template.z0 == EWZScore().z0
    assert agent.release == 3 and agent._damaged_release == 3


def test_fallbacks_the_rollback_order_did_not_replace_still_run(tmp_path, caplog):
    """Check what a rollback order does not replace stays a fallback: the order itself under
    a newer release, and the same version's earlier order (a rollback signed again)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    key = load_or_create_key(tmp_path / "key")
    slot = ModelSlot(tmp_path / "a" / "models")  # moved on after the rollback: 3.0.0 is bad
    _install(slot, key, 1, "1.0.0", EWZScore(z0=3.0))
    _install(slot, key, 2, "2.0.0", EWZScore(z0=4.0))
    _install(slot, key, 3, "1.0.0", EWZScore(z0=3.0), kind="rollback")
    s4 = _install(slot, key, 4, "3.0.0", Brittle())
    slot.mark_failed(4, s4.manifest.sha256, "OverflowError: cannot score 99.0")
    agent = _agent(tmp_path / "a", key)
    assert agent.running_release == 3 and agent.template.z0 == 3.0
    assert _events(caplog, "model_fallback")[-1]["using"] == "release 3 (1.0.0)"

    slot = ModelSlot(tmp_path / "b" / "models")  # the rollback signed again: its file damaged
    _install(slot, key, 1, "1.0.0", EWZScore(z0=3.0))
    _install(slot, key, 2, "2.0.0", EWZScore(z0=4.0))
    _install(slot, key, 3, "1.0.0", EWZScore(z0=3.0), kind="rollback")
    _install(slot, key, 4, "1.0.0", EWZScore(z0=3.0), kind="rollback")
    (f4,) = slot.root.glob("model-4-*.bin")
    f4.write_bytes(b"rot")
    agent = _agent(tmp_path / "b", key)
    assert agent.running_release == 3 and agent.template.z0 == 3.0 and agent.release == 4
