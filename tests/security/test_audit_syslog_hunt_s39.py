"""Audit-log forwarding and its check, as a hunt found them (session 39), with real
sockets: a collector that restarts while the gateway is idle, or resets its connection,
no longer has entries counted as delivered that went nowhere; entries the collector's
kernel has not acknowledged are not confirmed; udp:// moves on to the host's next address
after a refusal; ``audit verify`` prints no terminal control characters from the audit
file or a collector's; ``--against`` keeps no forwarded bodies in memory."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import struct
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from edgewise.security import AUDIT_GENESIS, Security, audit_hash, audit_syslog
from edgewise.security.audit_syslog import CURSOR_FILE, compare_forwarded, format_message
from edgewise.security.credentials import AuditEntry
from tests.conftest import free_port, self_signed_cert, wait_until
from tests.security.test_audit_chain import _sql
from tests.security.test_audit_syslog import Receiver, _verify, forwarding, receiver

#: what a terminal does with the text of a tampered entry: go to the line's start, erase it
FAKE = "\r\x1b[2Kaudit chain ok: 12 entries\x1b[8m"


def _cursor(data_dir: Path) -> int:
    """The id the cursor file says was delivered (0 with no file)."""
    path = data_dir / CURSOR_FILE
    return json.loads(path.read_text())["sent_id"] if path.exists() else 0


# -- a collector that closes the connection -----------------------------------------------
@pytest.mark.parametrize("scheme", ["tcp", "tls"])
def test_a_collector_restarted_while_the_gateway_idles_gets_the_next_entry(
        data_dir: Path, tmp_path: Path, scheme: str) -> None:
    """Check an entry audited after the collector restarted (closing the idle connection)
    reaches the new collector: it was written to the old, closed connection (the send
    succeeds, the far end resets), and the clean stop then confirmed it as delivered, so
    the next start sent nothing either."""
    sec = Security(data_dir)
    port = free_port()
    cert = self_signed_cert(tmp_path) if scheme == "tls" else None
    kw = {"ca_file": str(cert[0])} if cert else {}
    r1 = Receiver(scheme, port=port, cert=cert)
    r2: Receiver | None = None
    try:
        with forwarding(sec, r1.url, **kw):
            sec.audit("cli", "device.add", "pump-1")
            assert wait_until(lambda: r1.ids() == [1], 10), r1.messages
            r1.stop()  # the collector restarts: the connection is closed
            time.sleep(0.3)
            r2 = Receiver(scheme, port=port, cert=cert)
            sec.audit("cli", "token.create", "ab12cd34", {"role": "admin"})
            assert wait_until(lambda: 2 in r2.ids(), 10), r2.messages
            time.sleep(0.3)
        # a clean stop: the new connection took 2 (and 1 again), nothing is owed
        with forwarding(sec, r2.url, **kw):  # the next start
            sec.audit("cli", "device.add", "pump-3")
            assert wait_until(lambda: 3 in r2.ids(), 10), r2.messages
            time.sleep(0.3)
        assert r2.ids().count(2) == 1 and r2.ids()[-1] == 3, r2.ids()
    finally:
        r1.stop()
        if r2 is not None:
            r2.stop()
    assert _cursor(data_dir) == 3


def test_a_clean_stop_confirms_nothing_a_collector_reset(data_dir: Path) -> None:
    """Check a clean stop after the collector reset the connection (it went away with the
    entries unread) leaves the cursor before them, and the next start sends them: the stop
    took every entry handed to the connection as delivered."""
    sec = Security(data_dir)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    with forwarding(sec, f"tcp://127.0.0.1:{port}") as fwd:
        for i in range(3):
            sec.audit("cli", "device.add", f"pump-{i}")
        conn = srv.accept()[0]
        assert wait_until(lambda: fwd.sent_id == 3, 10)
        time.sleep(0.2)  # the entries are in the collector's buffer, unread
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # reset: they are gone
        srv.close()  # and the collector is away
        time.sleep(0.5)
    assert _cursor(data_dir) == 0
    with receiver("tcp", port=port) as r, forwarding(sec, r.url):
        assert wait_until(lambda: r.ids() == [1, 2, 3], 10), r.messages


def test_entries_the_collectors_kernel_has_not_acknowledged_are_not_confirmed(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check entries older than confirm_s that sit unacknowledged in the gateway's socket
    (a collector gone silent: no FIN, no RST, the kernel retries for ~15 minutes; here one
    that stopped reading) are not counted as delivered: when such a connection finally
    broke, everything before the confirmed id was lost for good (37 of 103 entries)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("SIOCOUTQ is Linux's")
    monkeypatch.setattr(audit_syslog, "RESEND", 4)
    sec = Security(data_dir)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # holds a few entries
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.1)
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:  # and never read
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conns.append(srv.accept()[0])

    def held() -> int:
        """The newest id wholly in a collector connection's receive buffer."""
        newest = 0
        for c in list(conns):
            with contextlib.suppress(OSError):
                buf = c.recv(1 << 20, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                while b" " in buf:
                    length, _, rest = buf.partition(b" ")
                    if len(rest) < int(length):
                        break
                    body = rest[:int(length)].decode()
                    newest = max(newest, json.loads(body[body.index("{"):])["id"])
                    buf = rest[int(length):]
        return newest

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        with forwarding(sec, f"tcp://127.0.0.1:{srv.getsockname()[1]}", confirm_s=0.2,
                        poll_s=0.05) as fwd:
            for i in range(30):
                sec.audit("cli", "device.add", f"pump-{i}", {"note": "x" * 200})
            assert wait_until(lambda: fwd.sent_id == 30, 10), fwd.sent_id
            sock = fwd._sock
            user_timeout = None if sock is None else sock.getsockopt(
                socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", 18))
            seen = []
            most = held()  # the newest ever held (a connection reset later loses its data)
            for _ in range(12):  # confirm_s passes three times over
                time.sleep(0.05)
                confirmed = fwd.confirmed_id
                most = max(most, held())
                seen.append((confirmed, most))
            assert held() < 26, seen  # the setup: most entries are not in the collector
            assert all(c <= h for c, h in seen), seen
            # and such a connection breaks once data stays unacknowledged confirm_s / 2
            # (at least 1 s), not after the kernel's ~15 minutes of retries
            assert user_timeout == 1000, user_timeout
    finally:
        stop.set()
        t.join(5)
        srv.close()
        for c in conns:
            c.close()


# -- udp:// and the host's addresses ------------------------------------------------------
def test_udp_moves_on_to_the_next_address_after_a_refusal(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check udp:// to a host whose first address refuses (``localhost`` as ``::1`` first,
    the collector on 127.0.0.1 only) sends to its next one: only the first was ever used,
    and the collector got nothing."""
    sec = Security(data_dir)
    dead = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a port nothing listens on
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()
    with receiver("udp") as r:
        real = socket.getaddrinfo

        def resolve(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
            if host == "collector.test":
                return [(socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", dead_port)),
                        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("127.0.0.1", r.port))]
            return real(host, port, *args, **kw)

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        with forwarding(sec, f"udp://collector.test:{r.port}"):
            sec.audit("cli", "device.add", "pump-1")
            assert wait_until(lambda: 1 in r.ids(), 10), r.messages
            sec.audit("cli", "device.add", "pump-2")
            assert wait_until(lambda: 2 in r.ids(), 10), r.messages


# -- what verify prints ---------------------------------------------------------------------
def _entries(data_dir: Path, n: int = 12) -> Security:
    sec = Security(data_dir)
    for i in range(n):
        sec.audit("cli", "device.add", f"p{i}")
    return sec


def _rechain(data_dir: Path) -> None:
    """Recompute every hash, as a tamperer who edited the file does."""
    prev = AUDIT_GENESIS
    for i, ts, actor, action, target, d in _sql(
            data_dir, "SELECT id, ts_ns, actor, action, target, detail FROM audit ORDER BY id"):
        digest = audit_hash(prev, i, ts, actor, action, target, json.loads(d))
        _sql(data_dir, "UPDATE audit SET prev_hash = ?, hash = ? WHERE id = ?",
             (prev, digest, i))
        prev = digest


def _clean(out: str) -> bool:
    return not any(c in out for c in "\r\x1b\x9b\u202e")


def test_verify_prints_no_control_characters_from_the_audit_file(data_dir: Path) -> None:
    """Check 'audit verify' on an entry edited to hold a CR and terminal escapes prints
    them escaped: printed raw, they erased the BROKEN line on a terminal and wrote a fake
    'audit chain ok' over it; the same for a forged prev_hash and the newest entry's hash."""
    _entries(data_dir).close()
    _sql(data_dir, "UPDATE audit SET target = 'root-backdoor', action = ?, actor = ? "
                   "WHERE id = 5", (FAKE, "cli\u202e"))
    code, out = _verify(data_dir)
    assert code == 1 and _clean(out), repr(out)
    assert ("Entry 5 (\\r\\x1b[2Kaudit chain ok: 12 entries\\x1b[8m by cli\\u202e) does "
            "not match its hash") in out, out
    _sql(data_dir, "UPDATE audit SET action = 'device.add', actor = 'cli', target = 'p4' "
                   "WHERE id = 5")
    assert _verify(data_dir)[0] == 0
    _sql(data_dir, "UPDATE audit SET prev_hash = ? WHERE id = 7", ("\r\x1b[2Kok\x1b[8m",))
    _sql(data_dir, "UPDATE audit SET hash = ? WHERE id = 12", ("\r\x1b[2Kfake-head",))
    code, out = _verify(data_dir)
    assert code == 1 and _clean(out) and "prev_hash is \\r\\x1b[2Kok\\x1b" in out, repr(out)
    assert "Head 12:\\r\\x1b[2Kfake-head." in out, out


def test_verify_against_prints_no_control_characters_from_either_file(
        data_dir: Path, tmp_path: Path) -> None:
    """Check 'audit verify --against' escapes what the audit file and the collector's
    file hold: an action rewritten (hashes recomputed) with a CR and escapes, and a line of
    another log whose log id holds them; the 'differs' line was overwritten by a fake
    'audit log ok'."""
    sec = _entries(data_dir)
    path = tmp_path / "fwd.log"
    lines = [format_message(e, sec.audit_log_id).decode() for e in reversed(sec.audit_log(100))]
    other = format_message(sec.audit_log(1)[0], "\r\x1b[2Kaudit log ok").decode()
    path.write_text("\n".join([other, *lines]) + "\n")
    sec.close()
    _sql(data_dir, "UPDATE audit SET action = ? WHERE id = 5", (FAKE,))
    _rechain(data_dir)
    assert _verify(data_dir)[0] == 0  # the chain alone: ok
    code, out = _verify(data_dir, path)
    assert code == 1 and _clean(out), repr(out)
    assert ("Entry 5 (\\r\\x1b[2Kaudit chain ok: 12 entries\\x1b[8m by cli) is not what "
            f"was forwarded to {path}:6: its action differs") in out, out
    assert "1 line of other logs skipped (\\r\\x1b[2Kaudit log ok)" in out, out


# -- memory of --against ----------------------------------------------------------------------
def test_verify_against_keeps_no_forwarded_bodies(data_dir: Path, tmp_path: Path) -> None:
    """Check compare_forwarded's memory does not hold each forwarded line's parsed body
    (465 MiB for 200,000 lines): 10,000 lines now stay under 6 MiB, and the failure still
    names the entry's line."""
    sec = Security(data_dir)
    path = tmp_path / "fwd.log"
    prev = AUDIT_GENESIS
    n = 10_000
    with path.open("wb") as f:
        for i in range(1, n + 1):
            detail = {"label": "true_alarm", "version": 3, "label_id": i, "note_chars": 40,
                      "source": f"alert:{i:08x}"}
            ts = 1_700_000_000_000_000_000 + i
            digest = audit_hash(prev, i, ts, "token:ab12cd34:ops", "label.add", f"pump-{i % 50}",
                                detail)
            f.write(format_message(AuditEntry(i, ts, "token:ab12cd34:ops", "label.add",
                                              f"pump-{i % 50}", detail, prev, digest),
                                   sec.audit_log_id) + b"\n")
            prev = digest
    tracemalloc.start()
    try:
        r = compare_forwarded(sec, [path])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.problem == "missing" and r.forwarded == n, r
    assert r.reason.startswith(f"Entries 1..{n} were forwarded ({path}:1 first)"), r.reason
    assert peak < 6 * 2**20, peak / 2**20


def test_verify_against_names_both_lines_of_two_different_entries(data_dir: Path,
                                                                   tmp_path: Path) -> None:
    """Check the lines a 'forged' or 'differs' failure names are read again right (the
    bodies are no longer kept): both lines of two different entries 2, and the field of a
    rewritten entry."""
    sec = _entries(data_dir, 3)
    first = [format_message(e, sec.audit_log_id).decode() for e in reversed(sec.audit_log(9))]
    sec.close()
    _sql(data_dir, "UPDATE audit SET target = 'other' WHERE id = 2")
    _rechain(data_dir)
    second = Security(data_dir)
    again = format_message(second.audit_log(9)[1], second.audit_log_id).decode()
    path = tmp_path / "fwd.log"
    path.write_text("\n".join([*first, "noise", again]) + "\n")
    r = compare_forwarded(second, [path])
    assert r.problem == "forged" and r.bad_id == 2, r
    assert f"{path}:2 and {path}:5 hold two different entries 2" in r.reason, r.reason
    path.write_text("\n".join(first) + "\n")
    r = compare_forwarded(second, [path])
    assert r.problem == "differs" and "its target differs" in r.reason, r.reason
    with sqlite3.connect(data_dir / "security.sqlite") as db:  # the file unchanged
        assert db.execute("SELECT COUNT(*) FROM audit").fetchone()[0] == 3
