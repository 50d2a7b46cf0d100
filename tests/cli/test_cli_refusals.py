"""Bad options across the CLI get one `error:` line and exit 2: Click's own checks (they
printed usage lines and a box), serve's host, ports and TLS files (they listened on every
interface, or ended in a 76-120 line traceback), the agent's numbers (a rate of 0 or NaN
buffered 529,000 readings a minute), detect '' and bench nab --out FILE.

``serve`` runs as a real process (a regression would listen, and hold its port and signal
handlers, until killed); the others through the real entry point in the test's process
(:func:`tests.in_process.edgewise_here`), the agent with its ``Agent`` replaced by one
that fails the test if a refused option still reached it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port
from tests.in_process import edgewise_here

ENV = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": "/tmp/nbc"}


def one_line(*args: str, cwd: Path | None = None, process: bool = False) -> str:
    """The one ``error:`` line of ``edgewise ARGS`` (exit 2): run in this process, or with
    ``process`` as ``python -m edgewise``."""
    p = subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                       text=True, env=ENV, check=False, timeout=120, cwd=cwd) if process \
        else edgewise_here(*args, cwd=cwd)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, (p.returncode, p.stderr)
    assert lines[0].startswith("error: ") and "Traceback" not in p.stderr
    return lines[0]


@pytest.mark.parametrize(("args", "needle"), [
    (["agent", "--rate", "abc"], "Invalid value for '--rate': 'abc' is not a valid float"),
    (["token", "create", "--data-dir", "/tmp/unused"], "Missing option '--role'"),
    (["label", "suggest", "--device", "d", "-k", "0"], "Invalid value for '-k'"),
    (["nosuch"], "No such command 'nosuch'"),
])
def test_clicks_own_checks_are_one_line(args: list[str], needle: str) -> None:
    assert needle in one_line(*args)


def test_serve_refuses_what_would_listen_wrongly_or_crash(tmp_path: Path) -> None:
    http, mqtt = free_port(), free_port()
    base = ["serve", "--data-dir", str(tmp_path / "d"), "--port", str(http)]
    assert "every network interface" in one_line(*base, "--mqtt-port", str(mqtt), "--host", "",
                                                 process=True)
    assert "need a port each" in one_line(*base, "--mqtt-port", str(http), process=True)
    junk = tmp_path / "cert.pem"
    junk.write_text("not a certificate\n")
    assert "cannot be loaded as a PEM certificate" in one_line(
        *base, "--mqtt-port", str(mqtt), "--tls-cert", str(junk), "--tls-key", str(junk),
        process=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line("serve", "--data-dir", str(tmp_path / "d"), "--port", str(port),
                        "--mqtt-port", str(mqtt), process=True)
    assert f"--port {port} on 127.0.0.1 cannot be listened on" in line


@pytest.mark.parametrize(("option", "value"), [
    ("--rate", "nan"), ("--rate", "0"), ("--limit", "-1"), ("--update-interval", "0"),
    ("--flush-timeout", "-1"), ("--device", ""), ("--gateway", "bogus"),
])
def test_agent_refuses_numbers_that_run_wild(tmp_path: Path, option: str, value: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import edgewise.edge.agent

    def started(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the agent was started with {option} {value!r}")

    monkeypatch.setattr(edgewise.edge.agent, "Agent", started)
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    args = {"--gateway": "http://127.0.0.1:1", "--device": "d", "--secret-file": str(secret),
            "--state-dir": str(tmp_path / "agent"), option: value}
    assert option in one_line("agent", *(x for kv in args.items() for x in kv))
    assert not (tmp_path / "agent" / "outbox").exists()


def test_detect_of_an_empty_name_and_nab_out_a_file(tmp_path: Path) -> None:
    assert "is a directory" in one_line("detect", "", cwd=tmp_path)
    f = tmp_path / "results.csv"
    f.write_text("x\n")
    assert "is a file" in one_line("bench", "nab", "--data", str(REPO.parent / "shared" /
                                                                 "data" / "nab"), "--out", str(f))
