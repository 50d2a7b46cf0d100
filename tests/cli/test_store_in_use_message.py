"""What a command says when a running gateway holds the data dir's DuckDB store.

Hunt (concurrency): ``label suggest``, ``train --with-labels``, ``train transfer`` and
``repair`` answered "error: --store 'duckdb:////D/edgewise.duckdb': DuckDB store ... is in
use by another process (pid N); stop it or use --store postgresql://…": a --store never
given, with four slashes, no word of the gateway, and advice to switch to PostgreSQL (a
different, empty store). Now they say a gateway (its pid) runs on the data dir, and what
to do while it runs (``repair``: to stop it; reading through it and --csv, the other
commands' advice, repairs nothing and repair has no --csv).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

# a gateway as far as the store is concerned: the data dir's presence lock and its store
_HOLDER = """
import sys, pathlib
from edgewise.gateway.presence import GatewayPresence
from edgewise.store.duckdb import DuckDBStore
from edgewise.telemetry import Reading
d = pathlib.Path(sys.argv[1])
presence = GatewayPresence(d) if sys.argv[2] == "gateway" else None
s = DuckDBStore(d / "edgewise.duckdb")
s.append([Reading("pump-1", "t", 10**18 + i * 10**9, float(i), seq=i + 1) for i in range(50)],
         {"pump-1": list(range(1, 51))})
print("held", flush=True)
sys.stdin.read()
s.close()
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO / "src"))


def _hold(data: Path, what: str) -> Iterator[subprocess.Popen[str]]:
    data.mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(data), what],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=_env(), cwd=REPO)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.communicate("", timeout=60)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    yield from _hold(tmp_path / "ew", "gateway")


def _refusal(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                         text=True, env=_env(), timeout=120, cwd=REPO)
    assert out.returncode != 0, (args, out.stdout)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_commands_name_the_gateway_that_holds_the_store(
        gateway: subprocess.Popen[str], tmp_path: Path) -> None:
    """Check ``train --with-labels`` and ``train transfer`` on a data dir whose gateway
    holds the store say a gateway (pid) runs on the data dir, how to read through it and
    --csv; never a --store the user did not give (4 slashes), nor PostgreSQL."""
    data = tmp_path / "ew"
    store = data / "edgewise.duckdb"
    for args in (["train", "--with-labels", "--device", "pump-1"],
                 ["train", "transfer", "--device", "pump-1"]):
        line = _refusal(*args, "--data-dir", str(data))
        assert line.startswith(f"error: DuckDB store {str(store)!r} is in use: a gateway "
                               f"(pid {gateway.pid}) runs on data dir {str(data)!r}"), line
        assert "Stop the gateway" in line and "edgewise readings export" in line, line
        assert "--csv" in line, line
        assert "--store" not in line and "duckdb:////" not in line, line
        assert "postgresql" not in line, line


def test_repair_names_the_gateway_and_says_to_stop_it(
        gateway: subprocess.Popen[str], tmp_path: Path) -> None:
    """Check ``repair`` on a data dir whose gateway holds the store names the gateway (pid)
    and says to stop it, without the readings export and --csv the other commands are told
    of (repair has no --csv, and a CSV of the readings repairs nothing), a --store the user
    did not give, or PostgreSQL; the store's files are left as they were."""
    data = tmp_path / "ew"
    store = data / "edgewise.duckdb"
    before = sorted(p.name for p in data.iterdir())
    line = _refusal("repair", "--data-dir", str(data))
    assert line.startswith(f"error: DuckDB store {str(store)!r} is in use: a gateway "
                           f"(pid {gateway.pid}) runs on data dir {str(data)!r}"), line
    assert "Stop the gateway to repair the store" in line, line
    assert "--csv" not in line and "readings export" not in line, line
    assert "--store" not in line and "postgresql" not in line, line
    assert sorted(p.name for p in data.iterdir()) == before


def test_a_process_that_is_no_gateway_is_named_by_its_pid(tmp_path: Path) -> None:
    """Check that a store held by a process that is no gateway (another command) is
    refused naming that process's pid, without claiming a gateway runs."""
    data = tmp_path / "ew"
    for holder in _hold(data, "command"):
        line = _refusal("train", "--with-labels", "--device", "pump-1",
                        "--data-dir", str(data))
        assert (f"DuckDB store {str(data / 'edgewise.duckdb')!r} is in use by another process "
                f"(pid {holder.pid})") in line, line
        assert "gateway" not in line and "duckdb:////" not in line, line
