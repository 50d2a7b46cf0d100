"""A private Mosquitto (default config, no persistence) that a test may restart, and a
TCP proxy in front of PostgreSQL that a test may cut (a store outage)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, port_answers, wait_until
from tests.gateway.test_broker_limits import Running


class Mosquitto:
    """``mosquitto`` on a free port of 127.0.0.1, anonymous clients allowed."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.conf = work / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self.log = work / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=out,
                                         stderr=subprocess.STDOUT)
        assert wait_until(lambda: port_answers("127.0.0.1", self.port), 10), "no mosquitto"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto, killed at the end."""
    if shutil.which("mosquitto") is None:
        pytest.skip("the mosquitto binary is not installed")
    m = Mosquitto(tmp_path)
    m.start()
    try:
        yield m
    finally:
        m.stop()


class Proxy:
    """A TCP proxy on a free port: :meth:`cut` closes its links and refuses new ones
    until :meth:`restore`."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.up = True
        self.links: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            if not self.up:
                c.close()
                continue
            try:
                s = socket.create_connection(self.target)
            except OSError:
                c.close()
                continue
            with self.lock:
                self.links += [c, s]
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while d := a.recv(65536):
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for x in self.links:
                try:
                    x.shutdown(socket.SHUT_RDWR)
                    x.close()
                except OSError:
                    pass
            self.links = []

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.srv.close()


@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[Proxy]:
    """A cuttable proxy in front of the test PostgreSQL."""
    p = Proxy(5432)
    try:
        yield p
    finally:
        p.close()
        time.sleep(0.05)


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[Running]:
    """The embedded broker in a thread of its own (``Running``), with the keyword
    arguments a test parametrizes indirectly (none by default)."""
    kw: dict[str, Any] = getattr(request, "param", {})
    r = Running(**kw)
    yield r
    r.stop()


class CutProxy:
    """A TCP proxy in front of Mosquitto that closes a client's connection, like a broker
    enforcing its ACL that way, when the client sends a packet of type ``kind`` (3:
    PUBLISH, 8: SUBSCRIBE) whose topic ends in ``suffix`` (MQTT 3.1.1 packets read whole)."""

    def __init__(self, target_port: int, kind: int, suffix: bytes = b"") -> None:
        self.target = target_port
        self.kind, self.suffix = kind, suffix
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
                s = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            threading.Thread(target=self._up, args=(c, s), daemon=True).start()
            threading.Thread(target=self._down, args=(s, c), daemon=True).start()

    @staticmethod
    def _packet_end(buf: bytes) -> tuple[int, int] | None:
        length, mult, i = 0, 1, 1
        while i < len(buf) and i <= 4:
            length += (buf[i] & 127) * mult
            mult *= 128
            i += 1
            if not buf[i - 1] & 128:
                return (i + length, i) if len(buf) >= i + length else None
        return None

    def _cut_here(self, packet: bytes, head: int) -> bool:
        if packet[0] >> 4 != self.kind:
            return False
        at = head + (2 if self.kind == 8 else 0)  # SUBSCRIBE: the packet id comes first
        n = int.from_bytes(packet[at:at + 2], "big")
        return packet[at + 2:at + 2 + n].endswith(self.suffix)

    def _up(self, c: socket.socket, s: socket.socket) -> None:
        buf = b""
        try:
            while data := c.recv(65536):
                buf += data
                out = b""
                while (whole := self._packet_end(buf)) is not None:
                    end, head = whole
                    packet, buf = buf[:end], buf[end:]
                    if self._cut_here(packet, head):
                        self.cuts += 1
                        raise ConnectionAbortedError
                    out += packet
                s.sendall(out)
        except OSError:
            pass
        self._close(c, s)

    def _down(self, s: socket.socket, c: socket.socket) -> None:
        try:
            while data := s.recv(65536):
                c.sendall(data)
        except OSError:
            pass
        self._close(c, s)

    @staticmethod
    def _close(*socks: socket.socket) -> None:
        for x in socks:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()

    def close(self) -> None:
        self.srv.close()
