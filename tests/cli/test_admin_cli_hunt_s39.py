"""Hunt fixes (session 39, operator CLI): a deeply nested JSON line in a collector's file
no longer crashes ``audit verify --against``; a data dir this user may not write (a backup
made read-only with ``chmod -R a-w``) is listed (``device list``, ``registry list``); Ctrl-C
during a DuckDB query is one line, exit 130; ``device delete TYPO`` beside a running
gateway refuses without keeping the id from ``device add``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import edgewise.cli as cli
from edgewise.cli import app, load_commands
from edgewise.gateway.presence import GatewayPresence
from edgewise.registry import Registry
from edgewise.security import Security
from edgewise.security.audit_syslog import parse_forwarded

load_commands()


def test_a_deeply_nested_line_is_not_a_forwarded_entry() -> None:
    """raw_decode's RecursionError escaped: 'audit verify --against' was a traceback."""
    hostile = "Jan  1 00:00:00 gw edgewise[4]: " + '{"a":' * 1000 + "1" + "}" * 1000
    assert parse_forwarded(hostile) is None


def test_audit_verify_against_a_file_with_a_deeply_nested_line(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with contextlib.closing(Security(d)) as sec:
        sec.add_device("pump-a")
    bad = tmp_path / "audit.log"
    bad.write_text("Jan  1 00:00:00 gw edgewise[4]: " + '{"a":' * 1000 + "1" + "}" * 1000
                   + "\n")
    res = CliRunner(mix_stderr=False).invoke(
        app, ["audit", "verify", "--data-dir", str(d), "--against", str(bad)])
    assert not isinstance(res.exception, RecursionError), res.exception
    assert res.exit_code in (0, 1, 2), (res.exit_code, res.stderr)


def _as_user(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``edgewise ARGS`` as an ordinary user would run it (root without DAC override)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: cannot drop DAC override")
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--"]
    return subprocess.run([*prefix, sys.executable, "-m", "edgewise", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_a_write_protected_data_dir_is_listed(tmp_path: Path) -> None:
    """SQLite 3.40 says 'attempt to write a readonly database' (it cannot make -shm), not
    'unable to open', so the immutable fallback was skipped: every listing failed."""
    d = tmp_path / "snap"
    with contextlib.closing(Security(d)) as sec:
        sec.add_device("pump-a")
    reg = Registry(d)
    reg.publish("m", "1", b"model", format="bin")
    reg.close()
    files = [d, *d.rglob("*")]
    modes = {p: p.stat().st_mode for p in files}
    for p in files:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        res = _as_user("device", "list", "--data-dir", str(d), "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert [x["id"] for x in json.loads(res.stdout)] == ["pump-a"]
        res = _as_user("token", "list", "--data-dir", str(d), cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        res = _as_user("audit", "verify", "--data-dir", str(d), cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        res = _as_user("registry", "list", "--data-dir", str(d), "--json", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert [v["version"] for v in json.loads(res.stdout)["versions"]] == ["1"]
    finally:
        for p, m in modes.items():
            p.chmod(m)
    assert sorted(p.name for p in (d / "registry").iterdir()) == sorted(
        p.name for p in files if p.parent == d / "registry")  # nothing made


def test_registry_list_on_an_empty_registry_folder_makes_nothing(tmp_path: Path) -> None:
    (tmp_path / "registry").mkdir()
    res = CliRunner(mix_stderr=False).invoke(
        app, ["registry", "list", "--data-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, (res.stderr, res.exception)
    assert json.loads(res.stdout)["versions"] == []
    assert list((tmp_path / "registry").iterdir()) == []


@pytest.mark.parametrize("exc", [RuntimeError("Query interrupted"), KeyboardInterrupt()])
def test_ctrl_c_is_one_line_and_exit_130(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str],
                                         exc: BaseException) -> None:
    """DuckDB turns SIGINT into RuntimeError('Query interrupted'): a 50-line traceback."""
    def interrupted() -> None:
        raise exc

    monkeypatch.setattr(cli, "load_commands", interrupted)
    monkeypatch.setattr(sys, "argv", ["edgewise", "store", "purge"])
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == 130
    err = capsys.readouterr().err
    assert err == ("error: interrupted; the store is left consistent (the next open "
                   "finishes a pending purge), run it again\n"), err


def test_delete_of_a_typo_beside_a_gateway_keeps_nothing(tmp_path: Path) -> None:
    """It recorded keep_data, and 'device add TYPO' was then refused."""
    d = tmp_path / "gw"
    with contextlib.closing(Security(d)) as sec:
        sec.add_device("pump-a")
        before = sec.verify_audit().head
    gw = GatewayPresence(d)
    try:
        res = CliRunner(mix_stderr=False).invoke(
            app, ["device", "delete", "pump-77", "--data-dir", str(d)])
    finally:
        gw.release()
    assert res.exit_code == 1, (res.exit_code, res.stdout, res.stderr, res.exception)
    want = ("not registered; while the gateway runs, delete stored data with DELETE "
            "/v1/devices/pump-77")
    assert want in res.stderr, res.stderr
    with contextlib.closing(Security(d)) as sec:
        assert not sec.data_kept("pump-77")
        assert sec.verify_audit().head == before  # nothing audited
        sec.add_device("pump-77")  # not refused
