"""Session 47's registry hunt: a publish killed between the registry and the audit log, and
bad input to publish (odd metrics, trained_on, an empty model file).

The registry and the audit log are two SQLite files: a ``registry publish`` killed after
the version committed and before its ``model.publish`` entry did left the version published
with no entry, and publishing the same bytes again audited it only as ``again: true``, so
the log never said the version had been published. Real processes, really killed."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.registry import Registry
from edgewise.security import Security

load_commands()

#: ``edgewise registry publish`` in a process that SIGKILLs itself the moment the registry
#: has committed the version, before the audit log's transaction commits (the real window)
_KILLED_AFTER_PUBLISH = textwrap.dedent("""
    import os, signal, sys
    from edgewise.registry import Registry
    stored = Registry.publish
    def publish_then_killed(self, *args, **kwargs):
        stored(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    Registry.publish = publish_then_killed
    from edgewise.cli import main
    sys.argv = ["edgewise", "registry", "publish", *sys.argv[1:]]
    main()
""")


#: the same for ``registry rollout``: killed once the release is signed and committed
_KILLED_AFTER_ROLLOUT = _KILLED_AFTER_PUBLISH.replace("publish", "rollout")


def _publish_killed(data_dir: Path, *args: str) -> None:
    """Run ``registry publish ARGS`` in a child killed (SIGKILL) right after the version
    committed; check it died so and left the version published."""
    _killed(_KILLED_AFTER_PUBLISH, data_dir, *args)
    reg = Registry(data_dir)
    try:
        reg.version(args[0], args[1])  # published: the registry committed first
    finally:
        reg.close()


def _killed(script: str, data_dir: Path, *args: str) -> None:
    """Run ``script`` with ``ARGS --data-dir DATA_DIR``; check it died of SIGKILL."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2] / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script, *args, "--data-dir", str(data_dir)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)


def _publishes(data_dir: Path) -> list[dict]:
    """The ``model.publish`` entries' details, oldest first."""
    sec = Security(data_dir)
    try:
        return [e.detail for e in reversed(sec.audit_log(1000)) if e.action == "model.publish"]
    finally:
        sec.close()


def test_a_publish_killed_before_its_audit_entry_is_recorded_late_by_the_next(
        data_dir: Path, tmp_path: Path) -> None:
    """Check a version left unaudited by a publish killed (SIGKILL) between the two
    databases gets its model.publish entry, marked late, when the same command is run again,
    and a third run is 'again' (the late run wrote only an 'again: true' entry)."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model bytes " * 100)
    _publish_killed(data_dir, "ewz", "1.0.0", str(model))
    assert _publishes(data_dir) == []  # the window: published, not audited
    run = CliRunner(mix_stderr=False)
    res = run.invoke(app, ["registry", "publish", "ewz", "1.0.0", str(model),
                           "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stderr
    (late,) = _publishes(data_dir)
    assert late["version"] == "1.0.0" and late["size"] == 1200 and late["late"] is True
    assert "again" not in late and "recorded late" in late["note"]
    assert "recorded now" in res.stdout
    res = run.invoke(app, ["registry", "publish", "ewz", "1.0.0", str(model),
                           "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stderr
    assert "already published" in res.stdout and "recorded now" not in res.stdout
    assert [("late" in d, d.get("again")) for d in _publishes(data_dir)] == [
        (True, None), (False, True)]


def test_concurrent_republishes_after_a_kill_record_the_version_once(
        data_dir: Path, tmp_path: Path) -> None:
    """Check three processes publishing the killed version's bytes again at once write one
    late model.publish entry between them (the audit log's lock is held from the check to
    the entry), the others 'again'."""
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(256 * 1024))
    _publish_killed(data_dir, "ewz", "2.0.0", str(model))
    procs = [subprocess.Popen([sys.executable, "-m", "edgewise", "registry", "publish", "ewz",
                               "2.0.0", str(model), "--data-dir", str(data_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    got = _publishes(data_dir)
    assert sorted(("late" in d, bool(d.get("again"))) for d in got) == [
        (False, True), (False, True), (True, False)], got
    assert sum("recorded now" in out for out, _ in outs) == 1


def test_odd_metrics_are_refused_by_name_before_anything_is_stored(data_dir: Path) -> None:
    """Check a metric past float's range (10**400: OverflowError, a traceback), metrics given
    as a list of pairs (AttributeError) and a metric name UTF-8 cannot encode (published) are
    each refused as an InvalidParameterError naming them, and nothing is published."""
    reg = Registry(data_dir)
    try:
        with pytest.raises(InvalidParameterError, match=r"Metric 'n' must be a finite number"):
            reg.publish("m", "1.0.0", b"model", format="bin", metrics={"n": 10**400})
        with pytest.raises(InvalidParameterError, match="must be a mapping of metric names"):
            reg.publish("m", "1.0.0", b"model", format="bin",
                        metrics=[("auc", 0.8)])  # type: ignore[arg-type]
        with pytest.raises(InvalidParameterError, match="UTF-8 can encode"):
            reg.publish("m", "1.0.0", b"model", format="bin", metrics={"auc\udcff": 0.8})
        assert reg.versions() == []
        assert reg.publish("m", "1.0.0", b"model", format="bin",
                           metrics={"n": 10**20}).metrics == {"n": 1e20}
    finally:
        reg.close()


def test_trained_on_utf8_cannot_encode_is_refused_before_its_blob_is_written(
        data_dir: Path) -> None:
    """Check a trained_on with a lone surrogate is an InvalidParameterError naming it, before
    the blob is written (it failed at the insert as a UnicodeEncodeError, its blob left)."""
    reg = Registry(data_dir)
    try:
        with pytest.raises(InvalidParameterError, match="'trained_on' parameter"):
            reg.publish("m", "1.0.0", b"model", format="bin", trained_on="NAB\udcff")
        assert reg.versions() == []
        assert os.listdir(data_dir / "registry" / "blobs") == []
    finally:
        reg.close()


def test_an_empty_model_file_is_refused_and_nothing_is_published(
        data_dir: Path, tmp_path: Path) -> None:
    """Check an empty model file (an export that failed, a 'touch'ed file) is refused by
    'registry publish' in one line naming the file, and by Registry.publish: it was
    published, and a rollout signed it for every device, none of which could load it."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"")
    res = CliRunner(mix_stderr=False).invoke(app, ["registry", "publish", "ewz", "1.0.0",
                                                   str(model), "--data-dir", str(data_dir)])
    assert res.exit_code != 0
    assert "is empty (0 bytes)" in res.stderr and str(model) in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    reg = Registry(data_dir)
    try:
        with pytest.raises(InvalidParameterError, match="Got 0 bytes instead"):
            reg.publish("ewz", "1.0.0", b"", format="pickle")
        assert reg.versions() == []
    finally:
        reg.close()
    assert _publishes(data_dir) == []


def test_a_metric_given_twice_with_two_values_is_refused(data_dir: Path,
                                                          tmp_path: Path) -> None:
    """Check '--metric auc=0.7 --metric auc=0.9' is refused in one line naming both values
    (the last was published, the first dropped without a word); the same value twice is the
    one metric."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    run = CliRunner(mix_stderr=False)
    res = run.invoke(app, ["registry", "publish", "ewz", "1.0.0", str(model), "--metric",
                           "auc=0.7", "--metric", "auc=0.9", "--data-dir", str(data_dir)])
    assert res.exit_code != 0
    assert "--metric 'auc' is given more than once (0.7 and 0.9)" in res.stderr
    assert not (data_dir / "registry").exists()  # refused before anything was made
    res = run.invoke(app, ["registry", "publish", "ewz", "1.0.0", str(model), "--metric",
                           "auc=0.7", "--metric", "auc=0.70", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stderr
    reg = Registry(data_dir)
    assert reg.version("ewz", "1.0.0").metrics == {"auc": 0.7}
    reg.close()


def test_a_model_path_that_is_a_pipe_is_refused_as_no_regular_file(data_dir: Path,
                                                                    tmp_path: Path) -> None:
    """Check a named pipe given as the model file is refused as not a regular file (it was
    said not to exist, which it does)."""
    fifo = tmp_path / "model.pipe"
    os.mkfifo(fifo)
    res = CliRunner(mix_stderr=False).invoke(app, ["registry", "publish", "ewz", "1.0.0",
                                                   str(fifo), "--data-dir", str(data_dir)])
    assert res.exit_code != 0
    assert "is not a regular file" in res.stderr and "does not exist" not in res.stderr


def test_trained_on_with_a_newline_is_refused_and_an_older_one_lists_on_one_line(
        data_dir: Path, tmp_path: Path) -> None:
    """Check '--trained-on' with a newline is refused (it was published, and 'registry list'
    printed a version line of its making: 'ewz 9.9.9 ...'), and one an older Edgewise stored
    is listed escaped on its version's one line, and the version still publishes again."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    fake = "NAB  {}\newz 9.9.9  pickle  5 B  sha256 0000000000000000  trained on NAB"
    run = CliRunner(mix_stderr=False)
    res = run.invoke(app, ["registry", "publish", "ewz", "1.0.0", str(model), "--trained-on",
                           fake, "--data-dir", str(data_dir)])
    assert res.exit_code != 0 and "'trained_on' parameter" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = run.invoke(app, ["registry", "publish", "ewz", "1.0.0", str(model), "--trained-on",
                           "NAB", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stderr
    db = sqlite3.connect(data_dir / "registry" / "registry.sqlite")  # as an older one stored
    with db:
        db.execute("UPDATE versions SET trained_on = ?", (fake,))
    db.close()
    res = run.invoke(app, ["registry", "list", "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stderr
    assert [ln for ln in res.stdout.splitlines() if ln.startswith("ewz ")] == [
        f"ewz 1.0.0  pickle  5 B  sha256 {hashlib.sha256(b'model').hexdigest()[:16]}  "
        "trained on " + fake.replace("\n", "\\n") + "  {}"]
    reg = Registry(data_dir)  # its repair: the same bytes and options again
    try:
        assert reg.publish("ewz", "1.0.0", b"model", format="pickle",
                           trained_on=fake).trained_on == fake
    finally:
        reg.close()


def test_a_rollout_killed_before_its_audit_entry_is_recorded_late_by_the_next(
        data_dir: Path, tmp_path: Path) -> None:
    """Check a release signed by a rollout killed (SIGKILL) before its model.rollout entry
    committed (devices may fetch it: it is in the registry) is recorded, marked late, by
    the next rollout of the model to that target (it got only the new release's entry)."""
    model = tmp_path / "m.pkl"
    model.write_bytes(b"model")
    run = CliRunner(mix_stderr=False)
    res = run.invoke(app, ["registry", "publish", "ewz", "1.0.0", str(model), "--data-dir",
                           str(data_dir)])
    assert res.exit_code == 0, res.stderr
    _killed(_KILLED_AFTER_ROLLOUT, data_dir, "ewz", "1.0.0", "group:line-a")
    reg = Registry(data_dir)
    assert [r.release for r in reg.releases()] == [1]  # signed, and not audited
    reg.close()
    res = run.invoke(app, ["registry", "rollout", "ewz", "1.0.0", "group:line-a",
                           "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.stderr
    sec = Security(data_dir)
    got = [e.detail for e in reversed(sec.audit_log()) if e.action == "model.rollout"]
    sec.close()
    assert sorted((d["release"], d.get("late", False)) for d in got) == [(1, True), (2, False)]
    assert "release 1 (ewz 1.0.0 -> group:line-a, release) had no audit entry" in res.stdout
    res = run.invoke(app, ["registry", "rollout", "ewz", "1.0.0", "group:line-a",
                           "--data-dir", str(data_dir)])
    assert res.exit_code == 0 and "had no audit entry" not in res.stdout
