"""Hunt fixes: ``edgewise demo`` refuses a damaged ``demo-devices.json`` in one line before
the admin token is made; ``audit verify --against`` a ``.gz`` cut short names the file (it
was "error: aborted"); a data dir on a read-only file system (a mounted snapshot or backup)
can be inspected (``device list``, ``token list``, ``audit verify``) and a command that
writes it says so in one line (``device delete`` was an ``OSError`` traceback)."""

from __future__ import annotations

import contextlib
import gc
import gzip
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import ConfigError
from edgewise.gateway.presence import GatewayPresence, gateway_running
from edgewise.security import Security
from tests.conftest import free_port

load_commands()


@pytest.mark.parametrize(("content", "why"), [
    ('{"pump-00": "abc"', "cannot be read (Expecting ',' delimiter"),
    ('["pump-00"]', "is not the demo's device credentials (a JSON object of device id"),
    ('{"pump-00": 7}', "is not the demo's device credentials"),
])
def test_demo_refuses_damaged_device_credentials_before_the_admin_token(
        tmp_path: Path, content: str, why: str) -> None:
    """A truncated demo-devices.json was a JSONDecodeError traceback (a JSON list a
    TypeError) after the shown-once admin token was made, which no one then saw."""
    d = tmp_path / "d"
    d.mkdir()
    creds = d / "demo-devices.json"
    creds.write_text(content)
    res = CliRunner(mix_stderr=False).invoke(
        app, ["demo", "--data-dir", str(d), "--pumps", "1", "--port", str(free_port()),
              "--mqtt-port", str(free_port())])
    assert isinstance(res.exception, ConfigError), res.exception
    msg = str(res.exception)
    assert msg.startswith(f"{creds} "), msg
    assert why in msg and "move it away to start afresh" in msg, msg
    assert "\n" not in msg
    assert not (d / "security.sqlite").exists()  # no admin token made
    assert creds.read_text() == content  # left as it was


def test_audit_verify_against_a_truncated_gz_names_the_file(tmp_path: Path) -> None:
    """gzip's EOFError (no OSError) became Click's Abort: 'error: aborted'."""
    d = tmp_path / "d"
    with contextlib.closing(Security(d)) as sec:
        sec.add_device("pump-a")
    blob = gzip.compress(b'<86>1 2026-01-01T00:00:00Z gw edgewise - - - {"x": 1}\n' * 2000)
    cut = tmp_path / "audit.log.1.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    whole = tmp_path / "audit.log"
    whole.write_text("")
    res = CliRunner(mix_stderr=False).invoke(
        app, ["audit", "verify", "--data-dir", str(d), "--against", str(whole),
              "--against", str(cut)])
    assert res.exit_code == 2, (res.exit_code, res.stdout, res.stderr, res.exception)
    assert res.stderr.startswith(
        f"error: --against {str(cut)!r} cannot be read: Compressed file ended before the "
        f"end-of-stream marker was reached. Give a whole gzip file"), res.stderr
    assert "aborted" not in res.stderr


@contextlib.contextmanager
def _read_only(folder: Path) -> Iterator[None]:
    """``folder`` (filled) made read-only: remounted so when root (a tmpfs at ``folder``,
    EROFS), else its mode bits (EACCES); restored after."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, m in modes.items():
                p.chmod(m)
        return
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=True)


@pytest.fixture
def snapshot(tmp_path: Path) -> Iterator[Path]:
    """An empty data dir, on its own tmpfs when root (unmounted after)."""
    d = tmp_path / "data"
    d.mkdir()
    if os.geteuid() != 0:
        yield d
        return
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(d)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield d
    finally:
        gc.collect()  # a connection left to the collector keeps the mount busy
        if subprocess.run(["umount", str(d)]).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], check=True)
            raise AssertionError(f"{d} was still in use: a file left open on it")


def _cli(*args: str) -> tuple[int, str, str, BaseException | None]:
    res = CliRunner(mix_stderr=False).invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr, res.exception


def test_a_read_only_data_dir_is_inspected_and_writes_refused_in_one_line(
        snapshot: Path) -> None:
    """'device list', 'token list', 'audit verify' said 'unable to open database file' on a
    read-only copy; 'device delete' was an OSError traceback (O_CREAT on gateway.lock)."""
    with contextlib.closing(Security(snapshot)) as sec:
        sec.add_device("pump-a")
        token = sec.create_token("viewer", "grafana")
        head = sec.verify_audit().head
    GatewayPresence(snapshot).release()  # a gateway ran here: gateway.lock exists
    assert token and (snapshot / "gateway.lock").exists()
    assert not Path(f"{snapshot / 'security.sqlite'}-wal").exists()
    with _read_only(snapshot):
        assert not gateway_running(snapshot)
        code, out, err, _ = _cli("device", "list", "--data-dir", str(snapshot), "--json")
        assert code == 0, (out, err)
        assert [d["id"] for d in json.loads(out)] == ["pump-a"]
        code, out, err, _ = _cli("token", "list", "--data-dir", str(snapshot), "--json")
        assert code == 0, (out, err)
        assert [t["name"] for t in json.loads(out)] == ["grafana"]
        code, out, err, _ = _cli("audit", "verify", "--data-dir", str(snapshot),
                                 "--expect", head)
        assert code == 0, (out, err)
        assert out.startswith("audit chain ok: 2 entries"), out
        for args in (["device", "delete", "pump-a"], ["device", "add", "pump-b"],
                     ["token", "create", "--role", "viewer", "--name", "x"]):
            code, out, err, exc = _cli(*args, "--data-dir", str(snapshot))
            assert isinstance(exc, ConfigError), (args, exc, out, err)
            why = "[Errno 30] Read-only" if os.geteuid() == 0 else "[Errno 13] Permission"
            assert str(exc).startswith(
                f"{str(snapshot / 'security.sqlite')!r} cannot be written ({why}"), exc
    with contextlib.closing(Security(snapshot)) as sec:  # nothing changed
        assert [d.id for d in sec.list_devices()] == ["pump-a"]
        assert sec.verify_audit().head == head


def test_security_read_only_refuses_writes_and_leaves_a_writable_dir_alone(
        tmp_path: Path) -> None:
    """Security(read_only=True) reads a writable file too, and refuses every change."""
    d = tmp_path / "d"
    with contextlib.closing(Security(d)) as sec:
        sec.add_device("pump-a")
    with contextlib.closing(Security(d, read_only=True)) as ro:
        assert ro.read_uri.endswith("?mode=ro")
        assert [x.id for x in ro.list_devices()] == ["pump-a"]
        assert ro.verify_audit().ok
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.add_device("pump-b")
    with pytest.raises(ConfigError, match="does not exist"):
        Security(tmp_path / "none", read_only=True)
