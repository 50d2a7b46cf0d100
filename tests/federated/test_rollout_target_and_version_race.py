"""``federate --rollout-to`` held to the registry's own target rules before training, and
federated runs that end together each registering their model.

Hunted: ``--rollout-to 'group:line a'`` (or ``device:pump-7:x``, ``group:-x``) passed the
CLI's check, every round was trained (the devices' DP budget spent), the version was
published and the signing then refused the target: "no model registered" although the
version was published, never released, and ``--resume`` claimed the model registered.
``--rollout-to device:ghost`` (no such device) got a signed release that ``registry
rollout`` and REST refuse. Two runs finishing together both chose version N: the second
publish was refused and that run's trained model lost.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.errors import InvalidParameterError
from edgewise.registry import Registry

BAD_TARGETS = ["group:line a", "group:pump fleet", "device:pump-7:x", "group:-x"]


def _invoke(monkeypatch, *args: str):
    """``edgewise federate ...`` in process, with the fleet replaced by a recorder."""
    import edgewise.cli.federate as federate
    from edgewise.cli import app

    started: list[dict] = []

    def fleet(_fleet, run_config, timeout):
        started.append(run_config)
        return {"model": {}}

    monkeypatch.setattr(federate, "_run_fleet", fleet)
    monkeypatch.setattr(federate, "_print_result", lambda result, as_json: None)
    return CliRunner().invoke(app, ["federate", *args]), started


@pytest.mark.parametrize("command", ["server", "demo"])
@pytest.mark.parametrize("target", BAD_TARGETS)
def test_a_target_no_device_can_have_is_refused_before_training(data_dir, monkeypatch,
                                                                 command, target):
    """Refused in one line (exit 2) with the registry's reason, nothing started or made."""
    r, started = _invoke(monkeypatch, command, "--rollout-to", target,
                         "--data-dir", str(data_dir))
    assert (r.exit_code, started) == (2, []), r.output
    assert f"--rollout-to {target}: Target {target!r} names" in r.output
    assert not (data_dir / "federated").exists() and not (data_dir / "registry").exists()


def test_an_unregistered_device_is_refused_before_training(data_dir, monkeypatch):
    """``device:ghost`` with no such device registered: refused as ``registry rollout``
    refuses it; a registered device is let through."""
    from edgewise.security import Security

    r, started = _invoke(monkeypatch, "server", "--rollout-to", "device:ghost",
                         "--data-dir", str(data_dir))
    assert (r.exit_code, started) == (2, []), r.output
    assert "names device 'ghost', which is not registered" in r.output
    sec = Security(data_dir)
    sec.add_device("pump-7")
    sec.close()
    r, started = _invoke(monkeypatch, "server", "--rollout-to", "device:ghost",
                         "--data-dir", str(data_dir))
    assert r.exit_code == 2 and not started
    r, started = _invoke(monkeypatch, "server", "--rollout-to", "device:pump-7",
                         "--data-dir", str(data_dir))
    assert r.exit_code == 0, r.output
    assert started[0]["rollout-target"] == "device:pump-7"


@pytest.mark.parametrize("target", [*BAD_TARGETS, "device:ghost"])
def test_register_refuses_the_target_before_publishing(tmp_path, target):
    """The end of a run holds the same rule: refused before anything is published (no
    version left published and never released)."""
    from edgewise.federated.publish import register_global_model

    with pytest.raises(InvalidParameterError, match="names"):
        register_global_model({"w": np.ones(2)}, tmp_path, "federated-pump", {},
                              target=target)
    reg = Registry(tmp_path)
    try:
        assert reg.versions() == [] and reg.releases() == []
    finally:
        reg.close()


def test_the_release_itself_checks_the_device_is_registered(tmp_path, monkeypatch):
    """A device deleted between the check and the signing: ``has_device`` is passed to
    the registry's rollout, which refuses it inside the transaction that signs."""
    import edgewise.federated.publish as publish

    monkeypatch.setattr(publish, "check_target", lambda data_dir, target: None, raising=False)
    with pytest.raises(InvalidParameterError, match="'ghost', which is not registered"):
        publish.register_global_model({"w": np.ones(2)}, tmp_path, "federated-pump", {},
                                      target="device:ghost")
    reg = Registry(tmp_path)
    try:
        assert reg.releases() == []
    finally:
        reg.close()


def test_resume_says_when_the_last_run_registered_no_model(data_dir, monkeypatch):
    """A run that failed after its last round (at publishing): ``--resume`` no longer says
    its model is registered, but why none is."""
    out = data_dir / "federated" / "server" / "out"
    out.mkdir(parents=True)
    np.savez(out / "checkpoint.npz", __round__=np.array(1), __norm_mean__=np.zeros((1, 6)),
             __norm_std__=np.ones((1, 6)))
    (out / "error.json").write_text(json.dumps({"error": "the registry refused it",
                                                "type": "InvalidParameterError"}))
    r, started = _invoke(monkeypatch, "server", "--rounds", "1", "--resume",
                         "--dp-epsilon", "0", "--data-dir", str(data_dir))
    assert (r.exit_code, started) == (2, []), r.output
    assert "already registered" not in r.output
    assert "that run registered no model: the registry refused it" in r.output


# -- two runs ending together ----------------------------------------------------------------

def test_a_version_taken_meanwhile_is_skipped_not_lost(tmp_path, monkeypatch):
    """Another publisher takes the version this run chose between its choice and its
    insert: the run publishes and releases the next one instead of being refused."""
    import edgewise.federated.publish as publish

    real = publish.next_version
    calls = []

    def stale(reg, name):
        v = real(reg, name)
        if not calls:  # another process publishes v between this read and the insert
            other = Registry(tmp_path)
            other.publish(name, v, b"the other run's model", format=publish.FORMAT)
            other.close()
        calls.append(v)
        return v

    monkeypatch.setattr(publish, "next_version", stale)
    entry = publish.register_global_model({"w": np.ones(2)}, tmp_path, "federated-pump", {})
    assert entry["version"] == "2" and entry["release"] == 1
    state, meta = publish.load_global_model(tmp_path, "federated-pump", "2")
    assert state["w"].tolist() == [1.0, 1.0] and meta["source"] == "federated"


def test_two_runs_ending_together_both_register(tmp_path, monkeypatch):
    """Run B ends while run A is between its publish and its release (deterministic
    interleaving): both models are published and released, under distinct versions, the
    later one newest (A's release came after B's newer one and was refused as a
    downgrade, or both chose one version)."""
    import edgewise.federated.publish as publish

    real_publish = Registry.publish
    b_result: dict = {}

    def run_b():
        try:
            b_result["entry"] = publish.register_global_model(
                {"w": np.full(2, 2.0)}, tmp_path, "federated-pump", {"run": "B"})
        except Exception as exc:  # reported by the assertion below
            b_result["error"] = exc

    def publish_then_let_b_run(self, *args, **kw):
        mv = real_publish(self, *args, **kw)
        if threading.current_thread() is threading.main_thread() and "thread" not in b_result:
            b_result["thread"] = t = threading.Thread(target=run_b)
            t.start()
            t.join(timeout=3)  # B runs to its end here unless it waits for A
        return mv

    monkeypatch.setattr(Registry, "publish", publish_then_let_b_run)
    a = publish.register_global_model({"w": np.ones(2)}, tmp_path, "federated-pump",
                                      {"run": "A"})
    b_result["thread"].join(timeout=60)
    assert "error" not in b_result, b_result.get("error")
    b = b_result["entry"]
    assert {a["version"], b["version"]} == {"1", "2"}
    reg = Registry(tmp_path)
    try:
        rels = reg.releases("group:federated")
        assert sorted(r.version for r in rels) == ["1", "2"]
        assert rels[-1].version == "2"  # the newest version is the one devices get
    finally:
        reg.close()
    for entry, w in ((a, 1.0), (b, 2.0)):
        state, _ = publish.load_global_model(tmp_path, "federated-pump", entry["version"])
        assert state["w"].tolist() == [w, w]
