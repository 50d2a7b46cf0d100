"""Session 47's registry hunt, second part: a federated publish killed between the registry
and the audit log, ``releases("")`` and ``versions(5)``, model formats agents refuse, and
no limit on a model's size or on ``trained_on``.

A federated run publishes a fresh version each time, so the CLI's "the same command again
records it late" never reached a killed run's version or release: the next federated
publish of the model records them. Real processes, really killed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.edge import agent as agent_module
from edgewise.errors import InvalidParameterError
from edgewise.federated.publish import load_global_model, register_global_model
from edgewise.registry import MAX_MODEL_BYTES, MAX_TRAINED_ON_BYTES, Registry
from edgewise.security import Security

load_commands()

#: ``register_global_model`` in a process that SIGKILLs itself the moment the registry has
#: committed (METHOD: ``publish``, the version; ``rollout``, its release too), before the
#: audit log's transaction commits its entries (the real window)
_FEDERATED_KILLED = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from edgewise.registry import Registry
    method = sys.argv[1]
    stored = getattr(Registry, method)
    def then_killed(self, *args, **kwargs):
        stored(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    setattr(Registry, method, then_killed)
    from edgewise.federated.publish import register_global_model
    register_global_model({"w": np.ones(2)}, sys.argv[2], "fed-ae", {"rounds": 1})
""")

#: ``register_global_model`` of another model in a process of its own (no kill)
_FEDERATED = textwrap.dedent("""
    import sys
    import numpy as np
    from edgewise.federated.publish import register_global_model
    e = register_global_model({"w": np.zeros(2)}, sys.argv[1], "fed-ae", {"rounds": 2})
    print(e["version"])
""")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}


def _federated_killed(data_dir: Path, method: str) -> None:
    """Run a federated publish killed (SIGKILL) right after ``Registry.<method>``."""
    proc = subprocess.run([sys.executable, "-c", _FEDERATED_KILLED, method, str(data_dir)],
                          capture_output=True, text=True, env=_env(), timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)


def _entries(data_dir: Path, action: str) -> list[tuple[str, str, dict]]:
    """The ``action`` entries (actor, target, detail), oldest first; the chain checked."""
    sec = Security(data_dir)
    try:
        assert sec.verify_audit().ok
        return [(e.actor, e.target, e.detail) for e in reversed(sec.audit_log(1000))
                if e.action == action]
    finally:
        sec.close()


def test_a_federated_run_killed_before_its_audit_entries_is_recorded_late_by_the_next(
        data_dir: Path) -> None:
    """Check a federated run killed after its version and release committed, before their
    entries did, has both recorded (late, by 'federated') by the next federated publish of
    the model, which publishes version 2 (a fresh number: the CLI's same-command repair
    never reached version 1); a third run records nothing late."""
    Security(data_dir).close()  # a gateway's data directory: it has an audit log
    _federated_killed(data_dir, "rollout")
    reg = Registry(data_dir)
    try:
        assert [v.version for v in reg.versions("fed-ae")] == ["1"]
        assert [r.release for r in reg.releases("group:federated")] == [1]
    finally:
        reg.close()
    assert _entries(data_dir, "model.publish") == []  # the window: nothing audited
    e = register_global_model({"w": np.zeros(2)}, data_dir, "fed-ae", {"rounds": 2})
    assert (e["version"], e["release"]) == ("2", 2)
    pubs = _entries(data_dir, "model.publish")
    assert [(a, t, d["version"], d.get("late")) for a, t, d in pubs] == [
        ("federated", "fed-ae", "1", True), ("federated", "fed-ae", "2", None)]
    assert "recorded late" in pubs[0][2]["note"] and pubs[0][2]["format"] == "npz-state-dict"
    rolls = _entries(data_dir, "model.rollout")
    assert [(t, d["release"], d["version"], d.get("late")) for _, t, d in rolls] == [
        ("group:federated", 1, "1", True), ("group:federated", 2, "2", None)]
    assert e["late"] == {"versions": ["1"], "releases": [1]}
    again = register_global_model({"w": np.ones(3)}, data_dir, "fed-ae", {})
    assert again["late"] == {"versions": [], "releases": []}
    assert [d.get("late") for _, _, d in _entries(data_dir, "model.publish")] == [
        True, None, None]


def test_concurrent_federated_publishes_after_a_kill_record_its_version_once(
        data_dir: Path) -> None:
    """Check a run killed after its publish (before its release: a version with no release
    and no entry) is recorded late once when two federated publishes of the model run at
    once in processes of their own (the publish lock and the audit log's are held from the
    check to the entries)."""
    Security(data_dir).close()
    _federated_killed(data_dir, "publish")
    procs = [subprocess.Popen([sys.executable, "-c", _FEDERATED, str(data_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env()) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(out.strip() for out, _ in outs) == ["2", "3"]
    late = [d for _, _, d in _entries(data_dir, "model.publish") if d.get("late")]
    assert [d["version"] for d in late] == ["1"]
    assert [d["version"] for _, _, d in _entries(data_dir, "model.rollout")] == ["2", "3"]


def test_releases_of_the_empty_target_are_none_and_odd_arguments_are_refused(
        data_dir: Path) -> None:
    """Check releases("") lists no release (it listed every one, as if unfiltered:
    versions("") lists none), and versions(5), releases(5) are InvalidParameterErrors
    naming the parameter (versions(5) was an AttributeError)."""
    reg = Registry(data_dir)
    try:
        reg.publish("m", "1.0.0", b"model", format="pickle")
        reg.rollout("m", "1.0.0", "group:a")
        assert len(reg.releases()) == len(reg.releases(None)) == 1
        assert reg.releases("") == [] and reg.versions("") == []
        with pytest.raises(InvalidParameterError, match=r"'name' parameter of Registry\.versions"):
            reg.versions(5)  # type: ignore[arg-type]
        with pytest.raises(InvalidParameterError,
                           match=r"'target' parameter of Registry\.releases"):
            reg.releases(5)  # type: ignore[arg-type]
    finally:
        reg.close()


def test_a_format_agents_refuse_for_its_case_or_alias_is_recorded_as_theirs(
        data_dir: Path) -> None:
    """Check publish(format="PICKLE") and format="pkl" record 'pickle', the format the edge
    agent runs (it was recorded as given, never offered to an agent that asks for pickle, and
    refused by one that got it), a format no agent or CLI knows is refused naming the
    formats, and a version an older registry recorded as 'PICKLE' is published again as it
    was (its repair)."""
    reg = Registry(data_dir)
    try:
        assert reg.publish("m", "1.0.0", b"a", format="PICKLE").format == "pickle"
        assert reg.publish("m", "1.0.1", b"b", format="pkl").format == "pickle"
        reg.rollout("m", "1.0.1", "device:pump-1")
        offered = reg.current("pump-1", formats=agent_module.AGENT_FORMATS)
        assert offered is not None and offered.version == "1.0.1"
        with pytest.raises(InvalidParameterError, match=r"one of bin, c, .*pickle.*'tflite'"):
            reg.publish("m", "1.0.2", b"c", format="tflite")
        assert [v.version for v in reg.versions("m")] == ["1.0.0", "1.0.1"]
    finally:
        reg.close()
    db = sqlite3.connect(data_dir / "registry" / "registry.sqlite")
    with db:
        db.execute("UPDATE versions SET format = 'PICKLE' WHERE version = '1.0.0'")
    db.close()
    reg = Registry(data_dir)
    try:
        assert reg.publish("m", "1.0.0", b"a", format="PICKLE").format == "PICKLE"
    finally:
        reg.close()


def test_a_model_larger_than_agents_take_is_refused_at_publish(data_dir: Path,
                                                                tmp_path: Path) -> None:
    """Check a model of MAX_MODEL_BYTES + 1 bytes (the agent's limit, now the registry's:
    one constant) is refused naming its size and the limit, by Registry.publish (nothing
    stored) and by 'registry publish' before reading the file (a sparse file here); it was
    published and signed, and every agent refused it as too_large."""
    reg = Registry(data_dir)
    try:
        with pytest.raises(InvalidParameterError) as err:
            reg.publish("big", "1.0.0", bytes(MAX_MODEL_BYTES + 1), format="pickle")
        assert f"{MAX_MODEL_BYTES + 1} bytes" in str(err.value)
        assert f"at most {MAX_MODEL_BYTES} bytes" in str(err.value)
        assert reg.versions() == [] and list((reg.root / "blobs").glob("*")) == []
    finally:
        reg.close()
    model = tmp_path / "big.pkl"
    with model.open("wb") as f:
        f.truncate(MAX_MODEL_BYTES + 1)
    res = CliRunner(mix_stderr=False).invoke(app, ["registry", "publish", "big", "1.0.0",
                                                   str(model), "--data-dir", str(data_dir)])
    assert res.exit_code == 2, res.stdout
    assert f"{MAX_MODEL_BYTES + 1} bytes" in res.stderr and "256 MiB" in res.stderr
    reg = Registry(data_dir)
    try:
        assert reg.versions() == []
    finally:
        reg.close()
    assert agent_module.MAX_MODEL_BYTES is MAX_MODEL_BYTES  # one constant, not two


def test_trained_on_over_its_limit_is_refused_and_an_older_one_still_loads(
        data_dir: Path) -> None:
    """Check a 5 MB trained_on (signed into every release manifest) is refused naming its
    size and MAX_TRAINED_ON_BYTES, one of the limit's length is published, and a version an
    older registry stored with a longer one still lists, releases and is published again."""
    reg = Registry(data_dir)
    big = "x" * (5 * 1024 * 1024)
    try:
        with pytest.raises(InvalidParameterError, match=rf"at most {MAX_TRAINED_ON_BYTES} "
                           rf"bytes .*Got {len(big)} bytes"):
            reg.publish("m", "1.0.0", b"model", format="pickle", trained_on=big)
        with pytest.raises(InvalidParameterError, match="MAX_TRAINED_ON_BYTES"):  # UTF-8 bytes
            reg.publish("m", "1.0.0", b"model", format="pickle",
                        trained_on="é" * (MAX_TRAINED_ON_BYTES // 2 + 1))
        assert reg.versions() == []
        fits = "y" * MAX_TRAINED_ON_BYTES
        assert reg.publish("m", "1.0.0", b"model", format="pickle",
                           trained_on=fits).trained_on == fits
        reg.publish("m", "2.0.0", b"model 2", format="pickle")
    finally:
        reg.close()
    db = sqlite3.connect(data_dir / "registry" / "registry.sqlite")
    with db:
        db.execute("UPDATE versions SET trained_on = ? WHERE version = '2.0.0'", (big,))
    db.close()
    reg = Registry(data_dir)
    try:
        assert reg.version("m", "2.0.0").trained_on == big
        assert reg.publish("m", "2.0.0", b"model 2", format="pickle",
                           trained_on=big).trained_on == big
        assert reg.rollout("m", "2.0.0", "group:a").manifest.metadata["trained_on"] == big
    finally:
        reg.close()


def test_a_long_federated_run_keeps_its_last_rounds_within_the_limit(tmp_path: Path) -> None:
    """Check a federated run whose per-round evaluation would pass MAX_TRAINED_ON_BYTES
    (20,000 rounds) is published with its last rounds' evaluation and how many were left
    out, not refused after training, and reads back."""
    rounds = {r: {"eval-loss": 0.5, "num-examples": 10} for r in range(1, 20001)}
    e = register_global_model({"w": np.zeros(2)}, tmp_path, "fed-long",
                              {"rounds": 20000, "evaluate_metrics": rounds})
    _, meta = load_global_model(tmp_path, "fed-long", e["version"])
    kept = meta["evaluate_metrics"]
    assert "20000" in kept and "1" not in kept
    assert len(kept) + meta["evaluate_rounds_dropped"] == 20000
    assert len(json.dumps(kept)) < MAX_TRAINED_ON_BYTES
    assert meta["metrics"]["evaluate_round"] == 20000.0
