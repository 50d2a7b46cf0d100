"""The ``csv:PATH`` source read by the real agent loop (:meth:`Agent.run`, its outbox on
disk): a rotated file is read from its first row, a byte that is not UTF-8 skips its row (a
Latin-1 header is read as such), and quoted cells (RFC 4180) are read. Each used to lose
rows or crash the agent on every start."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgewise.edge.agent import Agent, Outbox
from tests.conftest import REPO, free_port
from tests.edge.test_agent_csv_s46 import _run as _buffered

SECRET = "s" * 43
T0 = 1_700_000_000


def _run(state: Path, csv: Path) -> list[dict]:
    """Run the agent over ``csv`` (no gateway answers: everything stays in the outbox);
    return the readings of ``temp_c`` buffered so far, in order."""
    return [r for r in _buffered(state, csv) if "temp_c" in r]


def _rows(first: int, n: int, base: float) -> str:
    return "time,temp_c\n" + "".join(f"{T0 + first + i},{base + i}\n" for i in range(n))


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    out = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgewise.agent"]
    return [e for e in out if e.get("event") == event]


def test_a_rotated_or_truncated_file_is_read_from_its_first_row(tmp_path, caplog):
    """Check a file replaced at the same path (logrotate: moved away, a new one made) or
    truncated in place (copytruncate) is read from its first row, while the same file grown
    resumes after the rows read (the position was kept by path alone, so the new file's
    first rows were skipped as 'read before')."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_text(_rows(0, 5, 20.0))
    assert [r["temp_c"] for r in _run(state, csv)] == [20.0, 21.0, 22.0, 23.0, 24.0]
    os.replace(csv, tmp_path / "pump.csv.1")  # logrotate (create)
    csv.write_text(_rows(100, 3, 30.0))
    got = _run(state, csv)
    assert [r["temp_c"] for r in got[5:]] == [30.0, 31.0, 32.0]
    assert got[5]["ts"] == (T0 + 100) * 10**9
    assert _events(caplog, "source_start")[-1]["how"] == "rotated"
    with csv.open("a") as f:  # the same file grown: only the new row
        f.write(f"{T0 + 103},33.0\n")
    assert [r["temp_c"] for r in _run(state, csv)[8:]] == [33.0]
    assert _events(caplog, "source_start")[-1]["how"] == "resume"
    with csv.open("r+") as f:  # copytruncate: same inode, emptied, written again
        f.truncate(0)
        f.write(_rows(200, 2, 40.0))
    assert [r["temp_c"] for r in _run(state, csv)[9:]] == [40.0, 41.0]
    assert _events(caplog, "source_start")[-1]["how"] == "rotated"


def test_bytes_that_are_not_utf8_skip_their_row_and_a_latin1_header_is_read(tmp_path,
                                                                          caplog):
    """Check a row with a byte that is not UTF-8 is logged and skipped, the rows around it
    kept, and a restart goes on after it; a Latin-1 header (a Windows logger's 'temp_°C')
    is read, its column that no metric name can be left out and logged (both raised
    UnicodeDecodeError on every start, so nothing of the file was ever sent)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    csv = tmp_path / "log.csv"
    csv.write_bytes(b"time,temp_c\n" + f"{T0},21.5\n".encode() + f"{T0 + 1},2".encode()
                    + b"\xb01.6\n" + f"{T0 + 2},21.7\n".encode())
    assert [r["temp_c"] for r in _run(tmp_path / "a", csv)] == [21.5, 21.7]
    (bad,) = _events(caplog, "bad_input")
    assert bad["line"] == 3 and bad["allowed"] == "UTF-8 text" and "\\xb0" in bad["value"]
    assert [r["temp_c"] for r in _run(tmp_path / "a", csv)] == [21.5, 21.7]  # restarts

    latin = tmp_path / "latin1.csv"
    latin.write_bytes(b"time,temp_\xb0C,temp_c\n" + f"{T0},99.0,21.5\n".encode())
    assert _run(tmp_path / "b", latin) == [{"ts": T0 * 10**9, "temp_c": 21.5}]
    said = [(e.get("field"), e["detail"]) for e in _events(caplog, "bad_input")[1:]]
    assert said == [(None, "header read as Latin-1"), ("temp_\u00b0C", "column left out")]


def test_quoted_cells_are_read(tmp_path):
    """Check RFC 4180 quoting (every cell quoted, as pandas or Excel may write it; a quoted
    comma) is read (every row was skipped: its time cell kept its quotes)."""
    csv = tmp_path / "quoted.csv"
    csv.write_text('"time","temp_c","note"\r\n'
                   '"2024-01-31T12:00:00Z","21.5","ok, fine"\r\n'
                   '"2024-01-31T12:00:01Z","21.6",""\r\n')
    got = _run(tmp_path / "a", csv)
    assert got == [{"ts": 1706702400 * 10**9, "temp_c": 21.5},
                   {"ts": 1706702401 * 10**9, "temp_c": 21.6}]


def test_a_row_still_being_written_is_read_once_it_is_whole(tmp_path, caplog):
    """Check a last row without its newline (a logger mid-write: '23.5' cut after '2') is
    left for the next run and then read whole (it was read as 2.0, and the position moved
    past it, so the real 23.5 was lost)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_text(_rows(0, 2, 21.5) + f"{T0 + 2},2")
    assert [r["temp_c"] for r in _run(state, csv)] == [21.5, 22.5]
    (partial,) = _events(caplog, "source_partial_row")
    assert partial["line"] == 4
    with csv.open("a") as f:  # the logger ends the row and adds one
        f.write(f"3.5\n{T0 + 3},24.5\n")
    got = _run(state, csv)
    assert [(r["ts"], r["temp_c"]) for r in got] == [
        ((T0 + i) * 10**9, 21.5 + i) for i in range(4)]
    assert _events(caplog, "source_start")[-1]["how"] == "resume"


def test_a_cell_that_is_no_number_is_logged_once_per_column(tmp_path, caplog):
    """Check cells that are no number (decimal commas, '21,0', quoted) are left out and
    logged once for their column, naming column, line and value, not once a row, while
    the rest of each row is kept and an empty cell is left out silently (each was dropped
    silently on every row: a whole column never sent, and nothing said why)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    csv = tmp_path / "comma.csv"
    csv.write_text("time,temp_c,flow,rpm\n" + "".join(
        f'{T0 + i},"21,{i}",3.{i},{"" if i == 1 else 1450}\n' for i in range(3)))
    agent = Agent(f"http://127.0.0.1:{free_port()}", "pump-7", SECRET, tmp_path / "a")
    try:
        agent.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=0)
        got = [m["metrics"] for m in agent.outbox.pending(10)]
    finally:
        agent.outbox.close()
    assert got == [{"flow": 3.0, "rpm": 1450.0}, {"flow": 3.1},
                   {"flow": 3.2, "rpm": 1450.0}]
    (bad,) = _events(caplog, "bad_input")
    assert (bad["field"], bad["column"], bad["line"], bad["value"]) == ("temp_c", 2, 2, "21,0")
    assert "decimal comma" in bad["detail"]


def test_stdin_bytes_that_are_not_utf8_skip_their_line(tmp_path):
    """Check the stdin source skips (and logs) a line that is not UTF-8 even where Python
    decodes stdin strictly (a UTF-8 locale other than C.UTF-8: it raised
    UnicodeDecodeError and the agent died)."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), PYTHONIOENCODING="utf-8:strict")
    done = subprocess.run(
        [sys.executable, "-m", "edgewise", "agent", "--gateway", f"http://127.0.0.1:{free_port()}",
         "--device", "dev-9", "--secret-file", str(secret), "--source", "stdin",
         "--state-dir", str(tmp_path / "a"), "--flush-timeout", "0"],
        input=b"20.5\n\xb0\n21.5\n", capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b'"event": "bad_input", "line": 2' in done.stderr
    box = Outbox(tmp_path / "a" / "outbox.sqlite")
    assert [m["metrics"]["value"] for m in box.pending(10)] == [20.5, 21.5]
