"""Federated server-side bugs from hunt s41 that show across processes.

Hunted: a second ``federate server`` on the same ``--data-dir`` deleted the first's
SuperLink database (and its checkpoint) under its running SuperLink; a restarted server
(``--resume``) no longer knew the devices that had joined, whose SuperNode then ended
with status 0, so ``federate client`` exited 0 and a service manager restarting it on
failure never brought it back; a SuperLink that failed to start was reported by a line cut
from the middle of its traceback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from tests.federated.test_rollout_target_and_version_race import _invoke


def _fake(folder: Path, name: str, body: str) -> Path:
    """An executable ``folder/name`` running the Python ``body``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return path


# -- 1: one server per --data-dir --------------------------------------------------------------

def test_a_second_server_on_the_same_data_dir_is_refused(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While another process holds the server folder's lock, `federate server` refuses in
    one line naming the folder and the holder, before it removes anything there (it used
    to delete the running server's checkpoint and, at start, its SuperLink database)."""
    work = data_dir / "federated" / "server"
    (work / "out").mkdir(parents=True)
    checkpoint = work / "out" / "checkpoint.npz"
    checkpoint.write_bytes(b"the first server's checkpoint")
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys, time
            fd = os.open({str(work / 'fleet.lock')!r}, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, b"pid %d, devices' port 19301, since now" % os.getpid())
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        r, started = _invoke(monkeypatch, "server", "--data-dir", str(data_dir),
                             "--port", "19302", "--dp-epsilon", "0")
    finally:
        holder.kill()
        holder.wait()
    assert (r.exit_code, started) == (2, []), r.output
    line = r.output.strip()
    assert "\n" not in line and line.startswith(f"error: {work} is in use by another "
                                                "federated server")
    assert f"pid {holder.pid}, devices' port 19301" in line and "--data-dir" in line
    assert checkpoint.read_bytes() == b"the first server's checkpoint"
    # the holder gone, the folder is free again, and a server there releases it at its end
    r, started = _invoke(monkeypatch, "server", "--data-dir", str(data_dir), "--dp-epsilon",
                         "0")
    assert r.exit_code == 0 and len(started) == 1, r.output
    r, started = _invoke(monkeypatch, "server", "--data-dir", str(data_dir), "--dp-epsilon",
                         "0")
    assert r.exit_code == 0 and len(started) == 1, r.output


def test_a_fleet_locks_its_work_folder(tmp_path: Path) -> None:
    """Two fleets on one folder, in one process too: the second is refused while the first
    holds it, naming the holder; released, it can be taken again."""
    from edgewise.federated.deploy import FleetBusyError, LocalFleet

    first = LocalFleet(1, workdir=tmp_path, spawn_nodes=False, port=19303).lock()
    with pytest.raises(FleetBusyError, match=f"pid {os.getpid()}, devices' port 19303"):
        LocalFleet(1, workdir=tmp_path, spawn_nodes=False, port=19304).start()
    first.stop()  # stopping releases it
    second = LocalFleet(1, workdir=tmp_path, spawn_nodes=False, port=19304).lock()
    second.release()


# -- 8: a SuperLink that fails to start --------------------------------------------------------

BROKEN_SUPERLINK = """
    import sys
    print("INFO : Starting Flower SuperLink", flush=True)
    print("Traceback (most recent call last):\\n  File 'sql_linkstate.py', line 98, in __init__")
    print("    self.engine = create_engine(database)")
    print("sqlite3.OperationalError: unable to open database file")
    print("INFO : shutting down")
    sys.exit(3)
"""


def test_a_superlink_that_fails_to_start_is_told_in_a_first_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error's first line (what the CLI prints) says the SuperLink exited, its last
    error line and where its log is; the log's tail follows."""
    from edgewise.federated.deploy import LocalFleet, free_port

    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "flower-superlink", BROKEN_SUPERLINK)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    work = tmp_path / "fleet"
    fleet = LocalFleet(1, workdir=work, spawn_nodes=False, port=free_port())
    with pytest.raises(RuntimeError) as failed:
        fleet.start()
    first = str(failed.value).splitlines()[0]
    assert first == ("The SuperLink exited (status 3) before it served: sqlite3.OperationalError"
                     f": unable to open database file; log: {work / 'superlink.log'}")
    assert "shutting down" in str(failed.value)  # the tail, after the first line


def test_the_server_cli_prints_why_the_superlink_did_not_start(
        data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgewise.cli import app
    from edgewise.federated.deploy import free_port

    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "flower-superlink", BROKEN_SUPERLINK)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    r = CliRunner().invoke(app, ["federate", "server", "--data-dir", str(data_dir), "--json",
                                 "--port", str(free_port()), "--dp-epsilon", "0"])
    assert r.exit_code == 1, r.output
    assert r.output.count("\n") == 1, r.output
    assert r.output.startswith(
        "error: federated run failed, no model registered: The SuperLink exited (status 3) "
        "before it served: sqlite3.OperationalError: unable to open database file; log: ")


# -- 2: a device its restarted server no longer knows ------------------------------------------

FORGOTTEN_SUPERNODE = """
    import os, signal, sys, time
    count = os.path.join(os.environ["FAKE_SUPERNODE_DIR"], "starts")
    with open(count, "a") as f:
        f.write("x")
    starts = len(open(count).read())
    print("INFO : Starting Flower SuperNode", flush=True)
    print(f"INFO : SuperNode ID: {starts}", flush=True)
    if starts > int(os.environ["FAKE_SUPERNODE_FORGETS"]):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("INFO : waiting for messages", flush=True)
        time.sleep(60)
        sys.exit(0)
    print("INFO : SuperNode terminated gracefully.", flush=True)
    print("httpx.HTTPStatusError: Client error '401 Unauthorized' for url "
          "'http://127.0.0.1:19311/v1/fleet/send-node-heartbeat'", flush=True)
    sys.exit(0)
"""


def _client(tmp_path: Path, forgets: int) -> tuple[subprocess.Popen[str], Path]:
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "flower-supernode", FORGOTTEN_SUPERNODE)
    env = {"PYTHONPATH": str(REPO / "src"), "HOME": str(tmp_path),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_SUPERNODE_DIR": str(tmp_path), "FAKE_SUPERNODE_FORGETS": str(forgets)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgewise", "federate", "client", "--superlink",
         "127.0.0.1:19311", "--partition-id", "0", "--num-partitions", "1", "--data-dir",
         str(tmp_path / "dev"), "--max-epsilon", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    return proc, tmp_path / "starts"


def _starts(count: Path) -> int:
    return len(count.read_text()) if count.exists() else 0


def test_a_device_its_server_forgets_joins_again(tmp_path: Path) -> None:
    """The SuperNode its restarted SuperLink refuses (401) used to end `federate client`
    with status 0: now it is started again and joins afresh, with a warning line, and
    SIGTERM still stops it with status 0."""
    proc, count = _client(tmp_path, forgets=1)
    deadline = time.monotonic() + 60
    while _starts(count) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert _starts(count) == 2, err
    assert proc.returncode == 0, err
    assert ("warning: the SuperLink at 127.0.0.1:19311 no longer knows this device (HTTP 401 "
            "for its node id") in err
    assert "starting its SuperNode again to join afresh" in err


def test_a_device_forgotten_at_every_join_ends_non_zero(tmp_path: Path) -> None:
    """Forgotten at once, again and again: it gives up with status 1 and one error line,
    which a service manager restarting on failure acts on (status 0 it took for a stop)."""
    proc, count = _client(tmp_path, forgets=99)
    _out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, err
    assert _starts(count) == 4  # the first join and three more
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the SuperLink at 127.0.0.1:19311 no longer knows this "
                           "device") and "giving up" in last
