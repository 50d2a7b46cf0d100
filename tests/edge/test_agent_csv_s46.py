"""The ``csv:PATH`` source read by the real agent loop (:meth:`Agent.run`, its outbox on
disk): a quoted cell holding a newline (RFC 4180; Excel's Alt+Enter note) is read as one
row, resumed exactly, bounded when its quote never closes; rows written to a file after it
was last read but before logrotate moved it away are read from the rotated file."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from edgewise.edge import agent as agent_module
from edgewise.edge.agent import Agent, Outbox
from tests.conftest import free_port

SECRET = "s" * 43
T0 = 1_700_000_000


def _run(state: Path, csv: Path, limit: int | None = None) -> list[dict]:
    """Run the agent over ``csv`` (no gateway answers: everything stays in the outbox),
    ``limit`` readings at most (``None``: all); return the readings buffered so far, in
    order."""
    agent = Agent(f"http://127.0.0.1:{free_port()}", "pump-7", SECRET, state)
    try:
        agent.run(f"csv:{csv}", rate_hz=0, limit=limit, flush_timeout_s=0)
    finally:
        agent.outbox.close()
    box = Outbox(state / "outbox.sqlite")
    try:
        return [{"ts": m["ts"], **m["metrics"]} for m in box.pending(1000)]
    finally:
        box.close()


def _events(caplog: pytest.LogCaptureFixture, event: str) -> list[dict]:
    out = [json.loads(r.getMessage()) for r in caplog.records if r.name == "edgewise.agent"]
    return [e for e in out if e.get("event") == event]


def test_a_quoted_cell_with_a_newline_keeps_its_row_whole(tmp_path, caplog):
    """Check a quoted note cell holding newlines (as Excel writes Alt+Enter) is one row:
    the cells after it are kept and its second line is no row of its own (the row was cut at
    the newline, 'rpm' after the note lost, and ' line 2",7' read as a row of garbage)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    csv = tmp_path / "notes.csv"
    csv.write_bytes(b'time,temp_c,note,rpm\r\n'
                    b'2024-01-31T12:00:00Z,21.5,"pump ok",1500\r\n'
                    b'2024-01-31T12:00:01Z,21.6,"seal leaking\r\nline 2, ""quoted""\r\n'
                    b'2024-01-31T12:00:09Z",1510\r\n'
                    b'2024-01-31T12:00:02Z,21.7,,1520\r\n')
    got = _run(tmp_path / "a", csv)
    assert got == [{"ts": 1706702400 * 10**9, "temp_c": 21.5, "rpm": 1500.0},
                   {"ts": 1706702401 * 10**9, "temp_c": 21.6, "rpm": 1510.0},
                   {"ts": 1706702402 * 10**9, "temp_c": 21.7, "rpm": 1520.0}]
    assert [e["field"] for e in _events(caplog, "bad_input")] == ["note"]  # no number


def test_a_restart_resumes_at_the_next_row_after_a_multiline_cell(tmp_path, caplog):
    """Check the position counts rows, not lines: a run that ends in a row whose quoted cell
    is still open (a logger mid-write) leaves it whole for the next run, and a restart
    after multi-line rows reads each later row once, none from inside a cell."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_text(f'time,temp_c,note\n{T0},20.0,"a\nb\nc"\n{T0 + 1},21.0,"d\n')
    assert [r["temp_c"] for r in _run(state, csv)] == [20.0]
    (partial,) = _events(caplog, "source_partial_row")
    assert partial["line"] == 5
    with csv.open("a") as f:  # the logger ends the note, and adds a row
        f.write(f'e"\n{T0 + 2},22.0,"f\n{T0 + 99},99.0"\n')
    got = _run(state, csv)
    assert [(r["ts"], r["temp_c"]) for r in got] == [
        (T0 * 10**9, 20.0), ((T0 + 1) * 10**9, 21.0), ((T0 + 2) * 10**9, 22.0)]
    assert _events(caplog, "source_start")[-1]["how"] == "resume"
    with csv.open("a") as f:
        f.write(f"{T0 + 3},23.0,\n")
    assert [r["temp_c"] for r in _run(state, csv)[3:]] == [23.0]


def test_a_quote_that_never_closes_is_bounded(tmp_path, caplog, monkeypatch):
    """Check a stray quote that is never closed stalls nothing and eats no rows past its
    bound: its line is logged and read alone, and the rows after it are read (each later
    line was read as its own row, or with the fix unbounded, the rest of the file would be
    one cell)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    monkeypatch.setattr(agent_module, "_CSV_RECORD_MAX_LINES", 5, raising=False)
    csv = tmp_path / "stray.csv"
    rows = "".join(f"{T0 + i},{20 + i}.0,x\n" for i in range(1, 12))
    csv.write_text(f'time,temp_c,note\n{T0},19.0,"oops\n{rows}')
    got = _run(tmp_path / "a", csv)
    assert [r["temp_c"] for r in got] == [19.0] + [20.0 + i for i in range(1, 12)]
    (bad,) = [e for e in _events(caplog, "bad_input") if "not closed" in e["detail"]]
    assert bad["line"] == 2
    assert _events(caplog, "source_partial_row") == []


def test_rows_written_before_logrotate_moved_the_file_are_read(tmp_path, caplog):
    """Check rows a logger appended after the agent's last read, before logrotate moved
    the file to PATH.1, are read from PATH.1 before the new file (they were never read:
    the new file was read from its first row and the old one's last rows lost)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_text("time,temp_c\n" + "".join(f"{T0 + i},{20 + i}.0\n" for i in range(3)))
    assert [r["temp_c"] for r in _run(state, csv)] == [20.0, 21.0, 22.0]
    with csv.open("a") as f:  # the logger goes on
        f.write(f"{T0 + 3},23.0\n{T0 + 4},24.0\n")
    os.replace(csv, tmp_path / "pump.csv.1")  # logrotate (create)
    csv.write_text(f"time,temp_c\n{T0 + 5},25.0\n")
    assert [r["temp_c"] for r in _run(state, csv)] == [20.0, 21.0, 22.0, 23.0, 24.0, 25.0]
    with csv.open("a") as f:  # and the new file resumes as itself
        f.write(f"{T0 + 6},26.0\n")
    assert [r["temp_c"] for r in _run(state, csv)[6:]] == [26.0]
    assert _events(caplog, "source_start")[-1]["how"] == "resume"


def test_rows_lost_with_a_rotated_file_that_is_gone_are_logged(tmp_path, caplog):
    """Check a rotated file that cannot be found (compressed, deleted) is said, naming the
    rows read of it and its size then, before the new file is read from its first row."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_text("time,temp_c\n" + "".join(f"{T0 + i},{20 + i}.0\n" for i in range(3)))
    _run(state, csv)
    size = csv.stat().st_size
    csv.unlink()
    csv.write_text(f"time,temp_c\n{T0 + 5},25.0\n")
    assert [r["temp_c"] for r in _run(state, csv)] == [20.0, 21.0, 22.0, 25.0]
    (lost,) = _events(caplog, "source_rotated_away")
    assert (lost["rows_read"], lost["size_when_read"]) == (3, size)
    assert _events(caplog, "source_start")[-1]["how"] == "rotated"


def test_a_copytruncated_file_is_finished_across_a_restart(tmp_path, caplog):
    """Check the rows left in copytruncate's copy (PATH.1, another inode) are read, and a
    run stopped in the middle of them goes on in the copy on restart, each row once."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_text("time,temp_c\n" + "".join(f"{T0 + i},{20 + i}.0\n" for i in range(2)))
    _run(state, csv)
    with csv.open("a") as f:
        f.write("".join(f"{T0 + i},{20 + i}.0\n" for i in range(2, 5)))
    (tmp_path / "pump.csv.1").write_bytes(csv.read_bytes())  # copytruncate: a copy ...
    with csv.open("r+") as f:  # ... and the file emptied in place, written again
        f.truncate(0)
        f.write(f"time,temp_c\n{T0 + 5},25.0\n")
    agent = Agent(f"http://127.0.0.1:{free_port()}", "pump-7", SECRET, state)
    try:  # stopped after one row of the copy
        agent.run(f"csv:{csv}", rate_hz=0, limit=1, flush_timeout_s=0)
    finally:
        agent.outbox.close()
    got = _run(state, csv)
    assert [r["temp_c"] for r in got] == [20.0, 21.0, 22.0, 23.0, 24.0, 25.0]
    assert _events(caplog, "source_rotated_read")[-1]["rows"] == 2
