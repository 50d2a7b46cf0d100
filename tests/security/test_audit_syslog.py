"""The audit log forwarded off the box (``serve --audit-syslog``) and checked against the
collector's copy (``edgewise audit verify --against``), with real UDP, TCP and TLS syslog
receivers on free ports: RFC 5424 messages with the right fields, octet counting on TCP,
a certificate checked, a collector that is away slowing nothing and getting every entry
when it is back, restarts resending what was not sent, and the attacks a bare chain
cannot see (an entry edited with every hash recomputed, the newest entries deleted)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import sqlite3
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.config import Settings
from edgewise.errors import ConfigError
from edgewise.gateway.metrics import Metrics
from edgewise.security import AUDIT_GENESIS, Security, audit_hash
from edgewise.security.audit_syslog import (
    CURSOR_FILE,
    AuditForwarder,
    compare_forwarded,
    format_message,
)
from tests.cli.test_cli_refusals import one_line
from tests.conftest import free_port, self_signed_cert, wait_until
from tests.security.test_audit_chain import _sql

load_commands()

#: an RFC 5424 message as Edgewise sends it: PRI, version 1, timestamp, host, app, procid,
#: msgid, no structured data, the JSON body
RFC5424 = re.compile(r"<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S{1,255}) "
                     r"(\S{1,48}) (\S{1,128}) (\S{1,32}) - (\{.*\})")


class Receiver:
    """A syslog collector on 127.0.0.1: ``udp`` (one message a datagram) or ``tcp`` /
    ``tls`` (RFC 6587 octet counting, checked strictly); :attr:`messages` holds what
    arrived, in order. :meth:`stop` closes it (the port stays this test's)."""

    def __init__(self, scheme: str, port: int | None = None,
                 cert: tuple[Path, Path] | None = None) -> None:
        self.scheme = scheme
        self.messages: list[str] = []
        self.bad_frames: list[bytes] = []
        self._stop = threading.Event()
        kind = socket.SOCK_DGRAM if scheme == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)
        self._ctx: ssl.SSLContext | None = None
        if scheme == "tls":
            assert cert is not None
            self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ctx.load_cert_chain(*cert)
        if scheme != "udp":
            self.sock.listen()
        self._threads = [threading.Thread(target=self._serve, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                if self.scheme == "udp":
                    data, _ = self.sock.recvfrom(70_000)
                    self.messages.append(data.decode("ascii"))
                    continue
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            t = threading.Thread(target=self._read, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _read(self, conn: socket.socket) -> None:
        try:
            if self._ctx is not None:
                conn.settimeout(5)
                conn = self._ctx.wrap_socket(conn, server_side=True)
            conn.settimeout(0.1)
            buf = b""
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65536)
                except (TimeoutError, ssl.SSLWantReadError):
                    continue
                if not chunk:
                    return
                buf += chunk
                while b" " in buf:  # MSG-LEN SP SYSLOG-MSG
                    length, _, rest = buf.partition(b" ")
                    if not length.isdigit() or length.startswith(b"0"):
                        self.bad_frames.append(buf)
                        return
                    if len(rest) < int(length):
                        break
                    self.messages.append(rest[:int(length)].decode("ascii"))
                    buf = rest[int(length):]
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def ids(self) -> list[int]:
        return [json.loads(RFC5424.fullmatch(m).group(7))["id"] for m in self.messages]

    def write(self, path: Path, extra: list[str] = ()) -> Path:
        """What a collector writes (rsyslog's RFC 5424 file format): one message a line."""
        path.write_text("".join(f"{m}\n" for m in [*extra, *self.messages]))
        return path

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
        self.sock.close()


@contextmanager
def receiver(scheme: str, **kw: Any) -> Iterator[Receiver]:
    r = Receiver(scheme, **kw)
    try:
        yield r
    finally:
        r.stop()


@contextmanager
def forwarding(sec: Security, url: str, **kw: Any) -> Iterator[AuditForwarder]:
    kw = {"poll_s": 0.1, "retry_s": 0.05, "max_retry_s": 0.2, "timeout_s": 2.0, **kw}
    fwd = AuditForwarder(sec, url, **kw)
    fwd.start()
    try:
        yield fwd
    finally:
        fwd.close()


def _verify(data_dir: Path, *files: Path | str) -> tuple[int, str]:
    """``audit verify --against`` each of ``files`` (a string is passed as it is)."""
    args = ["audit", "verify", "--data-dir", str(data_dir)]
    for f in files:
        args += ["--against", str(f)] if isinstance(f, Path) else [f]
    r = CliRunner().invoke(app, args)
    return r.exit_code, r.output.strip()


def _dead_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on (connections are refused)."""
    return free_port()


# -- what arrives ---------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_entries_arrive_as_rfc5424_with_every_field(data_dir: Path, scheme: str) -> None:
    """Check each audited action reaches the collector as one RFC 5424 message: PRI 85
    (authpriv.notice), the entry's time, APP-NAME edgewise, our pid, MSGID the action, and
    a JSON body with the log id and the entry exactly as its hash covers it (on TCP framed
    by octet counting, which the receiver checks strictly)."""
    import os

    sec = Security(data_dir)
    with receiver(scheme) as r, forwarding(sec, r.url, hostname="gw-1"):
        sec.add_device("pump-1", groups=["line-a"])
        sec.create_token("viewer", "grafana")
        sec.audit("cli", "odd.detail", "x é", {"n": 1.5, "s": "line\nbreak"})
        assert wait_until(lambda: len(r.messages) >= 3, 10), r.messages
    assert r.bad_frames == []
    local = {e.id: e for e in sec.audit_log()}
    assert [json.loads(RFC5424.fullmatch(m).group(7))["id"] for m in r.messages] == [1, 2, 3]
    for message in r.messages:
        assert "\n" not in message and message.isascii()
        pri, ts, host, app_name, procid, msgid, body = RFC5424.fullmatch(message).groups()
        fields = json.loads(body)
        e = local[fields["id"]]
        assert (pri, host, app_name, procid, msgid) == ("85", "gw-1", "edgewise",
                                                         str(os.getpid()), e.action)
        assert ts == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(e.ts_ns // 10**9)) + \
            f".{e.ts_ns % 10**9 // 1000:06d}Z"
        assert fields == {"log": sec.audit_log_id, "id": e.id, "ts_ns": e.ts_ns,
                          "actor": e.actor, "action": e.action, "target": e.target,
                          "detail": e.detail, "prev_hash": e.prev_hash, "hash": e.hash}
        assert fields["hash"] == audit_hash(fields["prev_hash"], e.id, fields["ts_ns"],
                                            fields["actor"], fields["action"],
                                            fields["target"], fields["detail"])
    assert json.loads(RFC5424.fullmatch(r.messages[0]).group(7))["prev_hash"] == AUDIT_GENESIS


def test_the_facility_is_set_on_the_url(data_dir: Path) -> None:
    """Check ?facility=local0 sends PRI 16 * 8 + 5 = 133."""
    sec = Security(data_dir)
    with receiver("udp") as r, forwarding(sec, r.url + "?facility=local0"):
        sec.audit("cli", "x.y")
        assert wait_until(lambda: r.messages, 10)
    assert r.messages[0].startswith("<133>1 ")


def test_tls_collector_certificate_is_checked(data_dir: Path, tmp_path: Path) -> None:
    """Check tls:// delivers with the collector's CA given (--audit-syslog-ca-file), and
    that without it (the system's CAs, which did not sign it) nothing is sent in clear or
    otherwise: the handshake fails, is counted, and the entry waits."""
    cert = self_signed_cert(tmp_path)
    sec = Security(data_dir)
    with receiver("tls", cert=cert) as r:
        metrics = Metrics()
        with forwarding(sec, r.url, metrics=metrics):
            sec.audit("cli", "first.action")
            assert wait_until(lambda: metrics.get("edgewise_audit_syslog_errors_total") >= 2,
                              10)
        assert r.messages == []
        with forwarding(sec, r.url, ca_file=str(cert[0])):
            sec.audit("cli", "second.action")
            assert wait_until(lambda: len(r.messages) >= 2, 10), r.messages
    assert r.ids() == [1, 2]  # the first waited for a collector that could be trusted
    with pytest.raises(ConfigError, match=r"audit_syslog_ca_file.*key\.pem"):
        AuditForwarder(sec, r.url, ca_file=str(cert[1]))


def test_entries_of_other_processes_and_history_are_forwarded(data_dir: Path) -> None:
    """Check entries written before forwarding started, and by another Security on the
    same file (``edgewise device add`` beside the gateway), are sent too, in id order."""
    sec = Security(data_dir)
    sec.audit("cli", "before.start")
    with receiver("tcp") as r, forwarding(sec, r.url):
        other = Security(data_dir)  # another process's connection
        other.add_device("pump-9")
        sec.audit("cli", "in.process")
        assert wait_until(lambda: len(r.messages) >= 3, 10), r.messages
        other.close()
    assert r.ids() == [1, 2, 3]


# -- a collector that is away ------------------------------------------------------------
def test_a_hanging_collector_slows_no_audited_action_and_gets_everything_later(
        data_dir: Path) -> None:
    """Check a collector whose TCP port takes no connection (its accept queue is full:
    connects hang until the 2 s timeout) slows no audited action, and every entry arrives,
    in order, once a collector answers on that port."""
    sec = Security(data_dir)
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(0)
    port = hang.getsockname()[1]
    fillers = []
    for _ in range(3):  # fill the accept queue: further SYNs are dropped, connects hang
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    metrics = Metrics()
    fwd = AuditForwarder(sec, f"tcp://127.0.0.1:{port}", metrics=metrics, poll_s=0.1,
                         retry_s=0.05, max_retry_s=0.2, timeout_s=2.0)
    fwd.start()
    try:
        took = []
        for i in range(40):
            t0 = time.perf_counter()
            sec.audit("cli", "while.away", f"t{i}", {"i": i})
            took.append(time.perf_counter() - t0)
        # the sender sits in connect() for 2 s at a time meanwhile; no call waited for it
        assert max(took) < 0.5 and sum(took) < 4.0, (max(took), sum(took))
        time.sleep(0.5)
        assert fwd.sent == 0  # still in connect(): nothing could be sent
        for s in fillers:
            s.close()
        hang.close()
        with receiver("tcp", port=port) as r:
            assert wait_until(lambda: len(set(r.messages)) >= 40, 20), len(r.messages)
        assert sorted(set(r.ids())) == list(range(1, 41))
        assert r.ids() == sorted(r.ids())
        assert metrics.get("edgewise_audit_syslog_sent_total") >= 40
    finally:
        fwd.close()
        for s in fillers:
            s.close()
        hang.close()


def test_a_full_queue_is_counted_and_sent_from_the_file_when_the_collector_is_back(
        data_dir: Path) -> None:
    """Check entries past queue_max are counted as dropped (reason queue_full, in
    /metrics' text) and still reach the collector, read from the file."""
    sec = Security(data_dir)
    port = _dead_port()
    metrics = Metrics()
    with forwarding(sec, f"tcp://127.0.0.1:{port}", metrics=metrics, queue_max=3):
        for i in range(10):
            sec.audit("cli", "while.down", f"t{i}")
        assert metrics.get("edgewise_audit_syslog_dropped_total", reason="queue_full") == 7
        assert 'edgewise_audit_syslog_dropped_total{reason="queue_full"} 7' in \
            metrics.render()
        with receiver("tcp", port=port) as r:
            assert wait_until(lambda: len(set(r.messages)) >= 10, 20), r.messages
    assert sorted(set(r.ids())) == list(range(1, 11))


def test_a_restart_sends_what_was_committed_but_not_sent_and_nothing_twice(
        data_dir: Path) -> None:
    """Check the cursor file: entries made while the collector was down and the gateway
    then stopped go after the next start; a start with everything sent sends only new
    entries (UDP has no acknowledgement: the cursor is the last id handed to the socket)."""
    sec = Security(data_dir)
    port = _dead_port()
    with forwarding(sec, f"tcp://127.0.0.1:{port}") as fwd:
        for i in range(3):
            sec.audit("cli", "while.down", f"t{i}")
        assert fwd.sent_id == 0
    with receiver("tcp", port=port) as r:
        with forwarding(sec, r.url) as fwd:
            assert wait_until(lambda: len(r.messages) >= 3, 10)
        assert json.loads((data_dir / CURSOR_FILE).read_text())["sent_id"] == 3
        with forwarding(sec, r.url):
            sec.audit("cli", "after.restart")
            assert wait_until(lambda: len(r.messages) >= 4, 10)
            time.sleep(0.3)
    assert r.ids() == [1, 2, 3, 4]
    with receiver("udp") as u:  # another collector: it gets the whole log
        with forwarding(sec, u.url):
            assert wait_until(lambda: len(u.messages) >= 4, 10)
        with forwarding(sec, u.url):
            sec.audit("cli", "udp.after.restart")
            assert wait_until(lambda: len(u.messages) >= 5, 10)
            time.sleep(0.3)
    assert u.ids() == [1, 2, 3, 4, 5]


def test_a_gateway_forwards_its_own_and_the_clis_entries(data_dir: Path) -> None:
    """Check Gateway wires --audit-syslog: an entry of its own (in memory) and one another
    process writes (read from the file) reach the collector, and /metrics counts them."""
    from edgewise.gateway.runtime import Gateway

    with receiver("tcp") as r:
        settings = Settings(data_dir=data_dir, mqtt_port=free_port(), http_port=free_port(),
                            audit_syslog=r.url)
        loop = asyncio.new_event_loop()
        gw = Gateway(settings)
        try:
            loop.run_until_complete(gw.start(http=False))
            gw.security.add_device("pump-1")
            cli = Security(data_dir)
            cli.create_token("viewer", "grafana")
            cli.close()
            assert wait_until(lambda: len(r.messages) >= 2, 10), r.messages
            assert "edgewise_audit_syslog_sent_total 2" in gw.pipeline.metrics.render()
        finally:
            loop.run_until_complete(gw.stop())
            loop.close()
    assert [json.loads(RFC5424.fullmatch(m).group(7))["action"] for m in r.messages] == [
        "device.add", "token.create"]


# -- verify --against -------------------------------------------------------------------
def _forwarded_log(data_dir: Path, tmp_path: Path, n: int = 5) -> Path:
    """A log of ``n`` entries forwarded over UDP, and the collector's file of them."""
    sec = Security(data_dir)
    with receiver("udp") as r, forwarding(sec, r.url):
        for i in range(n):
            sec.audit("cli", "test.action", f"t{i}", {"i": i})
        assert wait_until(lambda: len(r.messages) >= n, 10)
    sec.close()
    return r.write(tmp_path / "collector.log")


def _rewrite(data_dir: Path, entry_id: int, detail: str) -> None:
    """Edit entry ``entry_id``'s detail and recompute every hash, as a tamperer can."""
    rows = _sql(data_dir, "SELECT id, ts_ns, actor, action, target, detail FROM audit "
                          "ORDER BY id")
    prev = AUDIT_GENESIS
    for i, ts, actor, action, target, d in rows:
        d = detail if i == entry_id else d
        digest = audit_hash(prev, i, ts, actor, action, target, json.loads(d))
        _sql(data_dir, "UPDATE audit SET detail = ?, prev_hash = ?, hash = ? WHERE id = ?",
             (d, prev, digest, i))
        prev = digest


def test_verify_against_passes_on_a_true_copy_among_other_lines(data_dir: Path,
                                                                 tmp_path: Path) -> None:
    """Check a true copy passes, with another program's lines and another gateway's entries
    in the file ignored, and the line says how far the copy vouches."""
    other_dir = tmp_path / "other"
    other = Security(other_dir)
    other.audit("cli", "elsewhere")
    foreign = format_message(other.audit_log(1)[0], other.audit_log_id).decode()
    path = _forwarded_log(data_dir, tmp_path)
    text = path.read_text()
    path.write_text("Jan  1 00:00:00 gw sshd[1]: Accepted publickey {for} root\n"
                    + foreign + "\n" + text)
    Security(data_dir).audit("cli", "not.forwarded")  # newer than the copy: told, not failed
    code, out = _verify(data_dir, path)
    assert code == 0, out
    assert out.startswith(f"audit log ok against {path}: 6 entries; 5 forwarded, up to entry "
                          f"5, which vouches for entries up to it; 1 newer not in the file")


def test_verify_against_catches_an_entry_rewritten_with_valid_hashes(data_dir: Path,
                                                                     tmp_path: Path) -> None:
    """Check the attack the bare chain cannot see: entry 2 edited and every hash after it
    recomputed passes 'audit verify', and fails '--against' naming entry 2 and the field."""
    path = _forwarded_log(data_dir, tmp_path)
    _rewrite(data_dir, 2, '{"i": 42}')
    assert _verify(data_dir)[0] == 0  # the chain alone: ok
    code, out = _verify(data_dir, path)
    assert code == 1 and len(out.splitlines()) == 1, out
    assert out.startswith(f"audit log does NOT match {path} at entry 2 (differs): Entry 2 "
                          f"(test.action by cli) is not what was forwarded to {path}:2: its "
                          f"detail differs"), out


def test_verify_against_catches_deleted_newest_entries(data_dir: Path,
                                                      tmp_path: Path) -> None:
    """Check deleting the newest entries (the sequence rewound too, so nothing shows a
    gap) passes 'audit verify' and fails '--against' naming them; entries appended over
    the same ids fail as rewritten."""
    path = _forwarded_log(data_dir, tmp_path)
    _sql(data_dir, "DELETE FROM audit WHERE id >= 4")
    _sql(data_dir, "UPDATE sqlite_sequence SET seq = 3 WHERE name = 'audit'")
    assert _verify(data_dir)[0] == 0
    code, out = _verify(data_dir, path)
    assert code == 1, out
    assert "at entry 4 (missing): Entries 4..5 were forwarded" in out
    assert "the local log ends at entry 3: the newest entries were deleted" in out
    Security(data_dir).audit("cli", "forged.later")  # takes id 4 again
    assert _verify(data_dir)[0] == 0
    code, out = _verify(data_dir, path)
    assert code == 1 and "at entry 4 (differs)" in out, out


def _send_three_then_delete_the_third(sec: Security, r: Receiver, data_dir: Path) -> None:
    """Three entries forwarded to ``r`` (a clean close: all delivered), then entry 3 deleted
    and SQLite's sequence rewound, so the next entry takes id 3 again."""
    with forwarding(sec, r.url):
        for i in range(3):
            sec.audit("cli", "test.action", f"t{i}")
        assert wait_until(lambda: len(r.messages) >= 3, 10)
    _sql(data_dir, "DELETE FROM audit WHERE id = 3")
    _sql(data_dir, "UPDATE sqlite_sequence SET seq = 2 WHERE name = 'audit'")


def test_ids_taken_again_after_deleted_newest_entries_are_forwarded_too(
        data_dir: Path, tmp_path: Path) -> None:
    """Check a restart after the newest entries were deleted (sequence rewound) sends the
    entries that take their ids again, so the collector's file shows two entries of one id
    and '--against' says forged: whether the forwarder starts before the new entry 3 is
    written (the log then ends before its cursor: the ids taken again are sent) or after
    (its cursor's entry 3 has another hash: the whole log is sent again). The second case
    used to send nothing, so the test failed now and then."""
    sec = Security(data_dir)
    with receiver("tcp") as r:
        _send_three_then_delete_the_third(sec, r, data_dir)
        with forwarding(sec, r.url):
            sec.audit("cli", "forged.later")
            assert wait_until(lambda: r.ids().count(3) == 2, 10), r.ids()
    assert r.ids()[:3] == [1, 2, 3] and r.ids()[-1] == 3
    code, out = _verify(data_dir, r.write(tmp_path / "collector.log"))
    assert code == 1 and "at entry 3 (forged)" in out, out


def test_a_log_rewritten_before_a_restart_is_sent_again_whole(
        data_dir: Path, tmp_path: Path) -> None:
    """Check the other order deterministically: entry 3 deleted, the sequence rewound and a
    new entry 3 written while no forwarder runs; the next start finds its cursor's entry
    with another hash and sends the whole log again ('--against': forged at entry 3)."""
    sec = Security(data_dir)
    with receiver("tcp") as r:
        _send_three_then_delete_the_third(sec, r, data_dir)
        sec.audit("cli", "forged.later")  # before the forwarder starts
        with forwarding(sec, r.url):
            assert wait_until(lambda: len(r.messages) >= 6, 10), r.ids()
    assert r.ids() == [1, 2, 3, 1, 2, 3]
    code, out = _verify(data_dir, r.write(tmp_path / "collector.log"))
    assert code == 1 and "at entry 3 (forged)" in out, out


def test_verify_against_with_a_lost_udp_entry_still_vouches_and_catches_its_edit(
        data_dir: Path, tmp_path: Path) -> None:
    """Check an entry the file lacks (lost over UDP) is vouched for by the next one: the
    copy passes, saying so; that entry edited (hashes recomputed) fails at the next
    forwarded entry, which now chains from something else."""
    path = _forwarded_log(data_dir, tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + lines[2:]))  # entry 2 never arrived
    code, out = _verify(data_dir, path)
    assert code == 0 and "1 of those not in the file" in out, out
    _rewrite(data_dir, 2, '{"i": 42}')
    code, out = _verify(data_dir, path)
    assert code == 1 and "at entry 3 (differs)" in out and "chains from another entry 2" in \
        out, out


def test_verify_against_catches_forged_and_foreign_copies(data_dir: Path,
                                                          tmp_path: Path) -> None:
    """Check a file holding two different entries of one id (the log rewritten and sent
    again), a line that does not match its own hash, and a file with none of this log's
    entries all fail, in one line."""
    path = _forwarded_log(data_dir, tmp_path)
    sec = Security(data_dir)
    good = path.read_text()
    e = sec.audit_log(5)[-1]  # entry 1
    forged = type(e)(e.id, e.ts_ns, e.actor, e.action, e.target, {"i": 99}, e.prev_hash,
                     audit_hash(e.prev_hash, e.id, e.ts_ns, e.actor, e.action, e.target,
                                {"i": 99}))
    path.write_text(good + format_message(forged, sec.audit_log_id).decode() + "\n")
    code, out = _verify(data_dir, path)
    assert code == 1 and "at entry 1 (forged)" in out and "two different entries 1" in out
    path.write_text(good.replace('"i":3', '"i":33'))
    code, out = _verify(data_dir, path)
    assert code == 1 and "at entry 4 (forged)" in out and "does not match its own hash" in out
    other = Security(tmp_path / "other")
    other.audit("cli", "elsewhere")
    path.write_text(format_message(other.audit_log(1)[0], other.audit_log_id).decode() + "\n")
    code, out = _verify(data_dir, path)
    assert code == 1 and "(unforwarded): None of the 5 local entries is in the files" in out
    assert other.audit_log_id in out
    check = compare_forwarded(sec, [path])
    assert (check.ok, check.problem, check.other_lines) == (False, "unforwarded", 1)


def _give_a_new_log_id(data_dir: Path) -> str:
    """Change the log id in audit_meta, as whoever rewrote the log can; the new id."""
    new_id = "5e" * 8
    _sql(data_dir, "UPDATE audit_meta SET value = ? WHERE key = 'log_id'", (new_id,))
    return new_id


def _forward_again(data_dir: Path, path: Path) -> None:
    """Start a forwarder on the log as it is now (a gateway restarted), to a new collector
    whose lines are added to ``path``: a cursor of another log id sends it whole."""
    sec = Security(data_dir)
    n = len(sec.audit_log(1000))
    with receiver("udp") as r, forwarding(sec, r.url):
        assert wait_until(lambda: len(r.messages) >= n, 10), r.messages
    sec.close()
    path.write_text(path.read_text() + "".join(f"{m}\n" for m in r.messages))


def test_a_log_sent_again_under_a_new_id_is_still_checked_as_this_one(
        data_dir: Path, tmp_path: Path) -> None:
    """Check the newest entry deleted (sequence rewound) and the log id in audit_meta
    changed, then the log sent again by a restarted gateway under the new id, fails as
    missing: the lines of the old id hold this log's entries, so they are this log's. It
    used to pass ("ok ... 7 entries"), only --json counting 8 "other_lines". The line
    names the log id and the old id."""
    path = _forwarded_log(data_dir, tmp_path, n=8)
    old_id = Security(data_dir).audit_log_id
    _sql(data_dir, "DELETE FROM audit WHERE id = 8")
    _sql(data_dir, "UPDATE sqlite_sequence SET seq = 7 WHERE name = 'audit'")
    new_id = _give_a_new_log_id(data_dir)
    _forward_again(data_dir, path)
    code, out = _verify(data_dir, path)
    assert code == 1 and len(out.splitlines()) == 1, out
    assert "at entry 8 (missing): Entries 8..8 were forwarded" in out, out
    assert f"[log {old_id}] first" in out, out
    assert f"log {new_id}, also as {old_id} (an earlier id" in out, out
    check = compare_forwarded(Security(data_dir), [path])
    assert (check.log_id, check.taken_logs, check.other_lines) == (new_id, (old_id,), 0)


def test_a_rewritten_log_sent_again_under_a_new_id_is_forged(data_dir: Path,
                                                             tmp_path: Path) -> None:
    """Check entry 5 rewritten (hashes recomputed) and the log id changed, then the log sent
    again, fails as forged at entry 5 (the old id's lines hold entries 1..4: they are this
    log's); it used to pass, the old id's lines skipped as another gateway's."""
    path = _forwarded_log(data_dir, tmp_path, n=6)
    _rewrite(data_dir, 5, '{"i": 42}')
    _give_a_new_log_id(data_dir)
    _forward_again(data_dir, path)
    code, out = _verify(data_dir, path)
    assert code == 1 and "at entry 5 (forged)" in out and "two different entries 5" in out, out


def test_a_log_rewritten_from_its_first_entry_is_caught_with_its_old_id_pinned(
        data_dir: Path, tmp_path: Path) -> None:
    """Check a log rewritten from entry 1 under a new id shares no hash with what was sent
    before: the line passes but says the old id's lines were skipped; --log OLD_ID checks
    them as this log's and fails (forged); a malformed --log, or one without --against, is
    refused in one line."""
    path = _forwarded_log(data_dir, tmp_path, n=3)
    old_id = Security(data_dir).audit_log_id
    _rewrite(data_dir, 1, '{"i": 42}')
    new_id = _give_a_new_log_id(data_dir)
    _forward_again(data_dir, path)
    code, out = _verify(data_dir, path)
    assert code == 0, out
    assert f"; log {new_id}; 3 lines of other logs skipped ({old_id}); head 3:" in out, out
    code, out = _verify(data_dir, path, "--log", old_id)
    assert code == 1 and "at entry 1 (forged)" in out and f"[log {old_id}]" in out, out
    for args in (["--against", str(path), "--log", "gw-1"], ["--log", old_id]):
        assert one_line("audit", "verify", "--data-dir", str(data_dir), *args).startswith(
            "error: --log")


def test_verify_against_a_missing_file_is_one_line(data_dir: Path) -> None:
    Security(data_dir).audit("cli", "x")
    r = CliRunner().invoke(app, ["audit", "verify", "--data-dir", str(data_dir),
                                 "--against", str(data_dir / "nope.log")])
    assert r.exit_code == 2 and "is not a file" in r.output


# -- bad settings -------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "needle"), [
    ("http://siem:514", "the scheme 'http' is not one Edgewise sends syslog over"),
    ("siem.example.org:514", "is not one Edgewise sends syslog over"),
    ("tcp://:601", "which names no host"),
    ("tcp://siem:99999", "which is no URL (Port out of range"),
    ("udp://siem:abc", "which is no URL (Port could not be cast"),
    ("tcp://siem:0", "port 0 cannot be sent to"),
    ("tcp://siem:601/log", "a collector's URL has no path"),
    ("udp://siem?facility=kern", "facility='kern' is not a facility"),
    ("tls://user:pw@siem", "syslog has no user or password"),
])
def test_bad_collector_urls_are_refused_by_settings(url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)) as info:
        Settings.load(env={}, audit_syslog=url)
    assert "\n" not in str(info.value) and "pw" not in str(info.value)
    assert "--audit-syslog" in str(info.value)


def test_serve_refuses_a_bad_collector_in_one_line(tmp_path: Path) -> None:
    """Check 'serve' refuses a bad --audit-syslog (scheme, port, host), a CA file without
    tls:// and a CA file that is no certificate, each in one line before anything starts."""
    base = ["serve", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
            "--mqtt-port", str(free_port())]
    assert "the scheme 'syslog'" in one_line(*base, "--audit-syslog", "syslog://siem")
    assert "Port out of range" in one_line(*base, "--audit-syslog", "tcp://siem:70000")
    assert "names no host" in one_line(*base, "--audit-syslog", "udp://:514")
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    assert "is not tls://" in one_line(*base, "--audit-syslog", "tcp://siem",
                                       "--audit-syslog-ca-file", str(junk))
    assert "cannot be loaded as PEM CA certificates" in one_line(
        *base, "--audit-syslog", "tls://siem", "--audit-syslog-ca-file", str(junk))
    assert not (tmp_path / "d" / "security.sqlite").exists()


def test_the_collector_comes_from_the_environment_too() -> None:
    """Check EDGEWISE_AUDIT_SYSLOG(_CA_FILE) set what --audit-syslog(-ca-file) do, with the
    default port of each scheme and the authpriv facility."""
    s = Settings.load(env={"EDGEWISE_AUDIT_SYSLOG": "tls://[::1]",
                           "EDGEWISE_AUDIT_SYSLOG_CA_FILE": "/etc/ssl/ca.pem"})
    assert (s.audit_syslog_target.shown, s.audit_syslog_target.facility,
            s.audit_syslog_ca_file) == ("tls://[::1]:6514", 10, "/etc/ssl/ca.pem")
    assert [Settings(audit_syslog=f"{k}://h").audit_syslog_target.port
            for k in ("udp", "tcp", "tls")] == [514, 601, 6514]
    assert Settings.load(env={}).audit_syslog_target is None


def test_entries_in_a_stalled_connections_buffers_are_sent_again_after_a_reset(
        data_dir: Path) -> None:
    """Check entries handed to a TCP connection whose collector stopped reading (hundreds,
    in the kernels' buffers) and then reset it reach the next connection: they used to count
    as sent (cursor past them), so only entries from about 230 of 300 on ever arrived and
    ``--against`` took the rest for UDP-style loss."""
    sec = Security(data_dir)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    stalled: list[socket.socket] = []
    srv.settimeout(0.1)
    stop = threading.Event()

    def accept_and_stall() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                stalled.append(srv.accept()[0])  # never read

    t = threading.Thread(target=accept_and_stall, daemon=True)
    t.start()
    with forwarding(sec, f"tcp://127.0.0.1:{port}", timeout_s=0.5) as fwd:
        for i in range(300):
            sec.audit("cli", "label.add", f"pump-{i}", {"note": "x" * 20000})
        assert wait_until(lambda: fwd.sent_id > 20, 10)
        stop.set()
        t.join(5)
        srv.close()
        for c in stalled:  # the collector resets: what its buffers held is gone
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        with receiver("tcp", port=port) as r:
            assert wait_until(lambda: len(set(r.ids())) >= 300, 30), len(set(r.ids()))
            assert wait_until(lambda: fwd.sent_id == 300, 10)
    assert sorted(set(r.ids())) == list(range(1, 301))
    code, out = _verify(data_dir, r.write(data_dir / "coll.log"))
    assert code == 0 and "missing" not in out.lower(), out


def test_a_failure_that_is_not_the_networks_does_not_end_forwarding(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    """Check an error other than OSError in the sending thread (sqlite3.Error, a malformed
    row) is logged and counted, and forwarding goes on after a backoff: it used to end the
    thread for good, silently forwarding nothing more."""
    sec = Security(data_dir)
    metrics = Metrics()
    real = AuditForwarder._next_batch
    failed = []

    def once(self: AuditForwarder) -> list[Any]:
        if not failed:
            failed.append(1)
            raise sqlite3.DatabaseError("database disk image is malformed")
        return real(self)

    monkeypatch.setattr(AuditForwarder, "_next_batch", once)
    with receiver("tcp") as r, forwarding(sec, r.url, metrics=metrics) as fwd:
        sec.audit("cli", "device.add", "pump-1")
        assert wait_until(lambda: len(r.messages) >= 1, 10), failed
        assert fwd._thread is not None and fwd._thread.is_alive()
        sec.audit("cli", "device.add", "pump-2")
        assert wait_until(lambda: len(set(r.ids())) >= 2, 10)
    assert failed and metrics.get("edgewise_audit_syslog_errors_total") == 1
    assert "malformed" in caplog.text
