"""Session 47's agent hunt, on real files, a real SQLite outbox and the real agent loop:
two log rotations between two reads, positions an older agent counted in lines, an outbox
on a disk too small for its full reserve, and bad input on purpose."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.edge.agent import Agent, Outbox
from tests.conftest import free_port, tmpfs
from tests.edge.test_agent_csv_s46 import _events, _run

SECRET = "s" * 43
T0 = 1_700_000_000


def _agent(state: Path) -> Agent:
    return Agent(f"http://127.0.0.1:{free_port()}", "pump-7", SECRET, state)


def _rows(first: int, n: int) -> str:
    return "".join(f"{T0 + i},{20 + i}.0\n" for i in range(first, first + n))


def _rotate(csv: Path, keep: int) -> None:
    """logrotate (create, ``rotate keep``): PATH.N-1 -> PATH.N, ..., PATH -> PATH.1."""
    for i in range(keep - 1, 0, -1):
        if Path(f"{csv}.{i}").exists():
            os.replace(f"{csv}.{i}", f"{csv}.{i + 1}")
    os.replace(csv, f"{csv}.1")


def test_two_rotations_between_reads_lose_no_row(tmp_path, caplog):
    """Check a file rotated twice while the agent was not reading (PATH -> PATH.1 -> PATH.2,
    the middle file now PATH.1) is read whole: the old file's last rows from PATH.2, then
    every row of PATH.1, then the new file (the middle file's 3 rows were lost unsaid)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_text("time,temp_c\n" + _rows(0, 2))
    assert len(_run(state, csv)) == 2
    with csv.open("a") as f:
        f.write(_rows(2, 1))
    _rotate(csv, 4)
    csv.write_text("time,temp_c\n" + _rows(3, 3))  # the middle file
    _rotate(csv, 4)
    csv.write_text("time,temp_c\n" + _rows(6, 1))
    got = [r["temp_c"] for r in _run(state, csv)]
    assert got == [20.0 + i for i in range(7)]
    read = _events(caplog, "source_rotated_read")
    assert [(Path(e["file"]).name, e["rows"]) for e in read] == [
        ("pump.csv.2", 1), ("pump.csv.1", 3)]
    with csv.open("a") as f:  # the new file goes on as itself
        f.write(_rows(7, 1))
    assert [r["temp_c"] for r in _run(state, csv)][7:] == [27.0]


def test_a_run_stopped_in_the_middle_file_goes_on_there(tmp_path):
    """Check a run stopped inside the middle file of two rotations resumes in it on
    restart, each row once, then reads the new file."""
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_text("time,temp_c\n" + _rows(0, 2))
    _run(state, csv)
    _rotate(csv, 3)
    csv.write_text("time,temp_c\n" + _rows(2, 4))
    _rotate(csv, 3)
    csv.write_text("time,temp_c\n" + _rows(6, 1))
    assert len(_run(state, csv, limit=2)) == 4  # two of the middle file's four rows
    assert [r["temp_c"] for r in _run(state, csv)] == [20.0 + i for i in range(7)]


NOTES = (b"time,temp_c,note\n"
         + f'{T0},20.0,"ok"\n'.encode()
         + f'{T0 + 1},21.0,"seal leaking\nline 2\nline 3"\n'.encode()
         + f'{T0 + 2},22.0,\n'.encode())


def _as_older_agent_left_it(state: Path, lines: int) -> None:
    """Make the outbox what an agent before session 46 left: its csv position counted in
    lines after the header, and no word of what positions count (it had none)."""
    import sqlite3

    db = sqlite3.connect(state / "outbox.sqlite", isolation_level=None)
    try:
        db.execute("UPDATE sources SET pos = ? WHERE spec LIKE 'csv:%'", (lines,))
        db.execute("DELETE FROM info WHERE key = 'positions'")
    finally:
        db.close()


def test_an_older_agents_line_position_is_converted_to_rows(tmp_path, caplog):
    """Check a position an older agent counted in lines (6: the three rows took five lines)
    resumes at the row after them once, not two rows later: the rows appended after the
    upgrade were skipped (23.0 and 24.0 lost) while the position was read as rows."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_bytes(NOTES)
    assert len(_run(state, csv)) == 3
    _as_older_agent_left_it(state, 6)
    with csv.open("a") as f:
        f.write(f"{T0 + 3},23.0,\n{T0 + 4},24.0,\n{T0 + 5},25.0,\n")
    got = [r["temp_c"] for r in _run(state, csv)]
    assert got == [20.0, 21.0, 22.0, 23.0, 24.0, 25.0]
    (conv,) = _events(caplog, "source_position_converted")
    assert (conv["lines"], conv["rows"]) == (6, 4)
    with csv.open("a") as f:  # converted once: the next run resumes in rows
        f.write(f"{T0 + 6},26.0,\n")
    assert [r["temp_c"] for r in _run(state, csv)][6:] == [26.0]
    assert len(_events(caplog, "source_position_converted")) == 1


def test_an_older_agents_position_in_a_rotated_file_is_converted_by_that_file(tmp_path):
    """Check an older agent's line position is converted by the file it was kept for
    when logrotate moved it (PATH.1), and the rows left in it are read once each."""
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_bytes(NOTES)
    _run(state, csv)
    _as_older_agent_left_it(state, 6)
    with csv.open("a") as f:
        f.write(f"{T0 + 3},23.0,\n")
    _rotate(csv, 2)
    csv.write_text(f"time,temp_c\n{T0 + 4},24.0\n")
    assert [r["temp_c"] for r in _run(state, csv)] == [20.0, 21.0, 22.0, 23.0, 24.0]


def test_a_new_outbox_says_its_positions_count_rows(tmp_path):
    """Check an outbox written from now on says its positions count rows, so it is never
    converted as an older agent's (a row position taken as lines reads rows twice)."""
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_bytes(NOTES)
    _run(state, csv)
    with csv.open("a") as f:
        f.write(f"{T0 + 3},23.0,\n")
    assert [r["temp_c"] for r in _run(state, csv)] == [20.0, 21.0, 22.0, 23.0]


@pytest.fixture
def disk_600k(tmp_path: Path) -> Iterator[Path]:
    """A real 600 KB filesystem (tmpfs): less free than the 512 KB reserve and the outbox's
    own files; needs root to mount, else the test is skipped."""
    with tmpfs(tmp_path, "600k") as mnt:
        yield mnt


def test_a_small_outbox_on_a_small_disk_keeps_what_fits(disk_600k):
    """Check a 16 KB outbox on a 600 KB disk takes readings until its bound (none was kept:
    the fixed 512 KB reserve could not be made, so every put was dropped as if the disk
    were full), and an ack still goes through once another file has filled the disk."""
    box = Outbox(disk_600k / "o.sqlite", max_bytes=16_000)
    kept = 0
    while box.put({"ts": T0 + kept, "metrics": {"t": 1.0}, "note": "x" * 300}) is not None:
        kept += 1
    assert kept == 40 and not box.disk_full and box.dropped == 1
    with pytest.raises(OSError), open(disk_600k / "filler", "wb") as f:  # the disk fills
        while True:
            f.write(b"\0" * 4096)
            f.flush()
    assert box.ack(kept, [(1, "bad", "y" * 2000)]) == kept and len(box) == 0
    os.remove(disk_600k / "filler")
    assert box.put({"ts": T0, "metrics": {"t": 1.0}}) == kept + 1
    box.close()


def test_a_fifo_put_where_the_file_was_does_not_hang_the_agent(tmp_path):
    """Check a FIFO in the tailed file's place (no writer) ends the run with an error
    naming it instead of hanging it for good in open()."""
    import threading

    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_text("time,temp_c\n" + _rows(0, 2))
    _run(state, csv)
    csv.unlink()
    os.mkfifo(csv)
    errors: list[BaseException] = []
    agent = _agent(state)

    def run() -> None:
        try:
            agent.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=0)
        except OSError as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # let the old code's open() return, so the thread ends
        with open(csv, "wb"):
            pass
        t.join(10)
        pytest.fail("the agent hung on a FIFO in the file's place")
    agent.outbox.close()
    assert len(errors) == 1 and "no regular file" in str(errors[0])


def test_a_utf16_file_is_refused_before_any_row_is_skipped(tmp_path):
    """Check a UTF-16 CSV (Excel's "Unicode text") is refused by name, its position left
    at its first row, so the file converted to UTF-8 is read whole (every row was logged
    as bad input and skipped for good: the position moved past all of them)."""
    state, csv = tmp_path / "a", tmp_path / "pump.csv"
    csv.write_bytes(("time,temp_c\n" + _rows(0, 3)).encode("utf-16"))
    agent = _agent(state)
    try:
        with pytest.raises(ValueError, match="UTF-16"):
            agent.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=0)
    finally:
        agent.outbox.close()
    csv.write_text("time,temp_c\n" + _rows(0, 3))  # converted
    assert [r["temp_c"] for r in _run(state, csv)] == [20.0, 21.0, 22.0]


def test_the_agent_command_names_a_utf16_source_in_one_line(tmp_path: Path) -> None:
    """`edgewise agent --source csv:PATH` on a UTF-16 file: one error line naming the file
    and the conversion, exit 2 (it was a traceback after the agent had started)."""
    import subprocess
    import sys

    src = tmp_path / "u16.csv"
    src.write_text("time,temp\n1700000000,1\n1700000001,2\n", encoding="utf-16")
    secret = tmp_path / "secret"
    secret.write_text("s\n")
    p = subprocess.run(
        [sys.executable, "-m", "edgewise", "agent", "--gateway", "http://127.0.0.1:1",
         "--device", "d", "--secret-file", str(secret), "--state-dir", str(tmp_path / "ag"),
         "--source", f"csv:{src}", "--limit", "2", "--flush-timeout", "0"],
        capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "UTF-16" in p.stderr and "iconv" in p.stderr, p.stderr
