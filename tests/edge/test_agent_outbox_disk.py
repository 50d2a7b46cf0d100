"""The outbox on a real disk: its files stay within the byte bound plus a fixed margin, an ack
goes through on a full disk, and damage SQLite notices after open is healed, not fatal.

Real SQLite files throughout; the full-disk test mounts a real 3 MB tmpfs (root only, else
skipped, saying why).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from edgewise.edge.agent import OUTBOX_MARGIN, Agent, Outbox
from tests.edge.test_agent import SECRET, Receiver

MARGIN = 640 * 1024  # WAL (256 KB + one transaction) and shm beyond max_bytes
NOTE = "x" * 300  # wider messages: fewer fill the bound


def _on_disk(path: Path) -> dict[str, int]:
    return {s or "db": os.path.getsize(f"{path}{s}") for s in ("", "-wal", "-shm")
            if os.path.exists(f"{path}{s}")}


def _fast(box: Outbox) -> Outbox:
    """Fill faster: this connection skips fsync (the WAL grows the same)."""
    box._db.execute("PRAGMA synchronous=OFF")
    return box


def test_outbox_files_stay_within_max_bytes_plus_a_fixed_margin(tmp_path):
    """Check database + WAL + shm stay within max_bytes plus a fixed margin while filling
    and churning (the WAL was checkpointed only at 1000 pages: 512 KB gave ~4 MB on disk)."""
    path = tmp_path / "o.sqlite"
    box = _fast(Outbox(path, max_bytes=512 * 1024))
    n = 0
    while box.put({"ts": 1700000000 + n, "metrics": {"t": 1.0}, "note": NOTE}) is not None:
        n += 1
    worst = sum(_on_disk(path).values())
    for _ in range(3):  # ack half, fill again
        box.ack(box.next_seq - 1 - n // 2)
        while box.put({"ts": 1700000000, "metrics": {"t": 1.0}, "note": NOTE}) is not None:
            pass
        worst = max(worst, sum(_on_disk(path).values()))
    assert n > 1000
    assert worst <= box.max_bytes + MARGIN, (worst, _on_disk(path))


def test_acking_a_whole_full_outbox_needs_little_more_disk(tmp_path):
    """Check an ack of every message of a full outbox leaves the files within the bound
    (one DELETE of all rows rewrote them all into the WAL: as much disk again)."""
    path = tmp_path / "o.sqlite"
    box = _fast(Outbox(path, max_bytes=1024 * 1024))
    while box.put({"ts": 1700000000, "metrics": {"t": 1.0}, "note": NOTE}) is not None:
        pass
    assert box.ack(box.next_seq - 1) > 2500 and len(box) == 0
    assert sum(_on_disk(path).values()) <= box.max_bytes + MARGIN, _on_disk(path)


def test_rejected_messages_stay_within_the_margin(tmp_path):
    """Check what the gateway rejects for good (1,200 spectra of 300 bins, ~6 KB each) keeps
    the files within max_bytes plus OUTBOX_MARGIN (1 MB bound: 7.08 MB on disk, the rejected
    table kept 1,000 whole bodies outside both), its newest rows kept, each body cut to a
    few KB with its size recorded; a 512 KB message set aside as too large keeps 4 KB of it."""
    path = tmp_path / "o.sqlite"
    box = _fast(Outbox(path, max_bytes=1024 * 1024))
    spectrum = {f"vib.bin{i:03d}": float(i) for i in range(300)}
    worst = 0
    for _ in range(24):
        first = box.next_seq
        for i in range(50):
            box.put({"ts": 1700000000 + i, "metrics": spectrum})
        box.ack(box.next_seq - 1, [(seq, "future_ts", '{"field": "ts"}')
                                   for seq in range(first, box.next_seq)])
        worst = max(worst, box.bytes_on_disk())
    assert box.rejected == 1200 and len(box) == 0
    assert worst <= box.max_bytes + OUTBOX_MARGIN, worst
    rows = box._db.execute("SELECT seq, length(body), body_bytes FROM rejected "
                           "ORDER BY id").fetchall()
    assert rows[-1][0] == 1200 and [s for s, _, _ in rows] == list(range(1201 - len(rows), 1201))
    size = len(json.dumps({"ts": 1700000000, "metrics": spectrum, "seq": 1200},
                          separators=(",", ":")))
    assert {(n, b) for _, n, b in rows} == {(4096, size)}
    seq = box.put({"ts": 1700000000, "metrics": {"big": 1.0}, "note": "x" * (512 << 10)})
    assert box.set_aside(seq, "too_large", "{}", {"ts": 1700000000, "metrics": {}})
    assert box._db.execute("SELECT length(body), body_bytes > 512 << 10 FROM rejected WHERE "
                           "seq = ?", (seq,)).fetchone() == (4096, 1)
    box.close()


def test_an_older_outbox_rejected_table_is_brought_within_the_margin(tmp_path):
    """Check an outbox an older agent wrote (no body_bytes column, whole bodies kept: here
    one of 1 MB) opens, and its oldest rejected rows past the table's room are dropped at
    the next rejection, the new one kept."""
    path = tmp_path / "o.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE rejected (id INTEGER PRIMARY KEY, seq INTEGER, reason TEXT "
                   "NOT NULL, detail TEXT NOT NULL, body BLOB, at_ns INTEGER NOT NULL)")
        db.execute("INSERT INTO rejected VALUES (1, 1, 'too_large', '{}', ?, 0)",
                   (b"x" * (1 << 20),))
    box = Outbox(path)
    seq = box.put({"ts": 1700000000, "metrics": {"t": 1.0}})
    box.ack(seq, [(seq, "future_ts", "{}")])
    assert box._db.execute("SELECT id, seq, body_bytes FROM rejected").fetchall() == [
        (2, seq, len(box._db.execute("SELECT body FROM rejected").fetchone()[0]))]
    box.close()


@pytest.mark.parametrize("max_mb", [2, 8])
def test_a_real_full_disk_does_not_wedge_the_outbox(small_disk, max_mb):
    """Check an outbox on a 3 MB disk (bound 2 MB: below the disk; 8 MB: the disk fills
    first) acks all it holds and takes new readings after (the WAL filled the disk after
    182 readings and every ack failed with 'database or disk is full', for good)."""
    path = small_disk / "o.sqlite"
    box = _fast(Outbox(path, max_bytes=max_mb * 1024 * 1024))
    n = 0
    while box.put({"ts": 1700000000 + n, "metrics": {"t": 1.0}, "note": NOTE}) is not None:
        n += 1
    assert n > (5000 if max_mb == 2 else 3000)
    assert box.disk_full == (max_mb == 8)
    assert box.ack(n) == n and len(box) == 0 and box.acked == n
    assert box.put({"ts": 1700009999, "metrics": {"t": 2.0}}) == n + 1 and not box.disk_full
    box.close()
    again = Outbox(path, max_bytes=max_mb * 1024 * 1024)
    assert len(again) == 1 and again.put({"ts": 1700010000, "metrics": {"t": 2.0}}) == n + 2
    again.close()


def _damaged_outbox(state: Path, n: int, acked: int = 0) -> Path:
    """An outbox of ``n`` messages for device pump-1, ``acked`` of them acked, whose middle
    page is overwritten."""
    state.mkdir()
    path = state / "outbox.sqlite"
    box = _fast(Outbox(path, device_id="pump-1"))
    box.use_source("sim")
    for i in range(n):
        box.put({"ts": 1700000000 + i, "metrics": {"t": float(i % 7)}}, source_pos=i + 2)
    box.ack(acked)
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    pages = os.path.getsize(path) // 4096
    with open(path, "r+b") as f:
        f.seek(4096 * (pages // 2))
        f.write(b"\xff" * 4096)
    return path


def test_damage_found_after_open_is_moved_aside_and_salvaged(tmp_path, caplog):
    """Check a page damaged in the middle (the file still opens) is healed on first use:
    moved aside, the readable messages kept and numbered on from the ack without a gap,
    counters, owner and source position kept, logged (pending, ack raised 'malformed'; len
    reads only the table's two ends, so it finds damage there alone)."""
    caplog.set_level(logging.ERROR, "edgewise.agent")
    path = _damaged_outbox(tmp_path / "state", 3000, acked=10)
    box = Outbox(path, device_id="pump-1")
    seqs = [m["seq"] for m in box.pending(5000)]
    n = len(box)
    assert 2800 < n < 2990
    assert seqs == list(range(11, 11 + n)) and box.acked == 10 and box.next_seq == 11 + n
    assert box.use_source("sim") == (3001, "resume") and box.device_id == "pump-1"
    assert box.ack(100) == 90 and box.put({"ts": 1, "metrics": {"t": 1.0}}) == 11 + n
    [aside] = [p for p in os.listdir(path.parent) if ".corrupt-" in p and "-wal" not in p
               and "-shm" not in p]
    [ev] = [json.loads(r.getMessage()) for r in caplog.records
            if '"outbox_corrupt"' in r.getMessage()]
    assert ev["salvaged"] == n and ev["lost"] == 2990 - n and ev["moved_to"].endswith(aside)


def test_an_outbox_damaged_twice_in_a_second_keeps_both_files_aside(tmp_path):
    """Check a second damaged outbox moved aside within the same second (a failing SD card)
    gets a name of its own, the first kept (os.replace overwrote the first evidence)."""
    path = tmp_path / "outbox.sqlite"
    for fill in (b"A", b"B", b"C"):
        path.write_bytes(fill * 8192)
        Outbox(path).close()
    aside = sorted(p for p in os.listdir(tmp_path) if ".corrupt-" in p)
    assert sorted((tmp_path / p).read_bytes()[:1] for p in aside) == [b"A", b"B", b"C"]


def test_the_sender_forwards_a_damaged_outbox_instead_of_dying(tmp_path):
    """Check an agent started on an outbox with a damaged middle page forwards what can be
    read to a real gateway stand-in (len() raised in the sender's error handler: the thread
    died and nothing was ever sent)."""
    _damaged_outbox(tmp_path / "state", 1500)
    gw = Receiver(tmp_path)
    gw.start()
    try:
        agent = Agent(gw.url, "pump-1", SECRET, tmp_path / "state", batch=200)
        run = threading.Thread(target=agent.run, kwargs={"source": "sim", "rate_hz": 0,
                                                         "limit": 5, "flush_timeout_s": 30})
        run.start()
        run.join(60)
        assert not run.is_alive()
        pending, next_seq = len(agent.outbox), agent.outbox.next_seq
        [(count, top)] = gw.rows("SELECT COUNT(*), MAX(seq) FROM seqs")
    finally:
        gw.stop()
    assert 1300 < next_seq - 1 < 1500
    assert pending == 0 and top == next_seq - 1 and count == next_seq - 1
