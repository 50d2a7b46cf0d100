"""Security and configuration hunt, session 49: one peer keeping every HTTP connection
busy locked every other client out, a rate limiter NaN turned off, and a parameter check
that a numpy array or a bool slipped past."""

from __future__ import annotations

import math
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from edgewise.errors import InvalidParameterError, RateLimitError
from edgewise.params import OneOf, validate_params
from edgewise.security.ratelimit import RateLimiter
from tests.gateway.test_http_guard_s45 import Served, _open
from tests.gateway.test_http_guard_tls_s46 import ServedTLS


@pytest.mark.parametrize(("rate", "burst"), [
    (math.nan, 20.0), (10.0, math.nan), (math.inf, 20.0), (10.0, math.inf), (1e-320, 20.0),
    (True, 20.0),
])
def test_a_rate_limiter_that_would_limit_nothing_is_refused(rate: float, burst: float) -> None:
    """Check a NaN, infinite or subnormal rate or burst is refused by name: a NaN rate
    refilled every bucket at every take and a NaN burst let every take through (the old
    ``<= 0`` / ``< 1`` checks are False for NaN), so a device could send without limit."""
    with pytest.raises(InvalidParameterError, match=r"RateLimiter needs a finite rate_per_s"):
        RateLimiter(rate_per_s=rate, burst=burst)


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 20.0), (-1.0, 20.0), (10.0, 0.5)])
def test_a_rate_or_burst_too_small_is_still_refused(rate: float, burst: float) -> None:
    """Check what was refused before still is."""
    with pytest.raises(InvalidParameterError, match=r"RateLimiter needs"):
        RateLimiter(rate_per_s=rate, burst=burst)


def test_a_finite_limiter_still_limits() -> None:
    """Check the smallest rate the settings take and an int burst still build a limiter
    that refuses past its burst."""
    rl = RateLimiter(rate_per_s=1e-6, burst=2)
    rl.take("pump-1", 2)
    with pytest.raises(RateLimitError):
        rl.take("pump-1", 1)


@pytest.mark.parametrize("value", [
    np.array(["kmeans", "gmm"]),  # raised numpy's ValueError, not a refusal
    np.array(["kmeans"]),  # was taken: array(['kmeans']) == 'kmeans' is array([True])
    ["kmeans"],
])
def test_one_of_refuses_an_array_by_name(value: object) -> None:
    """Check a choice parameter given an array is refused in the parameters' one message
    (naming the parameter, the choices and the value), never taken or a traceback."""
    with pytest.raises(InvalidParameterError,
                       match=r"The 'method' parameter of Cluster must be one of 'kmeans', "
                             r"'gmm'\. Got"):
        validate_params({"method": OneOf(("kmeans", "gmm"))}, {"method": value}, "Cluster")


def test_one_of_tells_a_bool_from_a_number() -> None:
    """Check True is not the option 1 (True == 1), while the texts and numbers that are
    options (numpy's too) are taken."""
    o = OneOf(("auto", 0, 1))
    assert not o.accepts(True) and not o.accepts(False)
    assert o.accepts(1) and o.accepts(np.int64(0)) and o.accepts(1.0)
    assert o.accepts("auto") and o.accepts(np.str_("auto"))
    assert not o.accepts("Auto") and not o.accepts(None)


# -- HTTP connections one peer kept busy (edgewise.gateway.http_guard) ---------------------

class _Keeper:
    """Connections that each send ``GET /`` again every 0.15 s (one peer keeping every
    connection the guard allows open, as a cheap request a second each does)."""

    def __init__(self, open_one: Any, n: int) -> None:
        self.socks = []
        for _ in range(n):
            so = open_one()
            so.settimeout(2)
            if self._ask(so):
                self.socks.append(so)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @staticmethod
    def _ask(so: socket.socket) -> bool:
        try:
            so.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while not got.endswith(b"}"):
                chunk = so.recv(4096)
                if not chunk:
                    return False
                got += chunk
            return True
        except OSError:
            return False

    def _run(self) -> None:
        while not self.stopping.is_set():
            for so in list(self.socks):
                if not self._ask(so):
                    self.socks.remove(so)
            time.sleep(0.15)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for so in self.socks:
            so.close()


@pytest.fixture
def plain() -> Iterator[Served]:
    s = Served()
    yield s
    s.stop()


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[ServedTLS]:
    s = ServedTLS(tmp_path)
    yield s
    s.stop()


def test_a_peer_keeping_every_http_connection_busy_no_longer_locks_out_others(
        plain: Served) -> None:
    """Check a new client is served while one peer keeps all 6 connections the guard
    allows open with a request every 0.15 s (shorter than the idle period): it takes the
    place of the one idle longest between requests (counted as reason 'total'). Before,
    every other client was refused at once for as long as the peer went on (at the default
    ulimit -n 1024: 256 connections, a GET /healthz each every few seconds)."""
    keeper = _Keeper(plain.connect, 6)
    try:
        assert len(keeper.socks) == 6
        time.sleep(0.5)
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{plain.port}/", timeout=5).json() == {
                "ok": True}
        assert "total" in plain.counted
    finally:
        keeper.stop()


def test_a_connection_with_a_request_under_way_is_never_taken(plain: Served) -> None:
    """Check that at the cap a connection whose answer is being made (1.5 s) is not taken
    for a new one: the new one is refused ('total'), every slow request answered."""
    socks = []
    for _ in range(6):
        so = plain.connect()
        so.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(so)
    time.sleep(0.3)
    extra = plain.connect()
    assert not _open(extra, 0.3)
    assert plain.counted.count("total") == 1
    for so in socks:
        so.settimeout(5)
        got = b""
        while not got.endswith(b"}"):
            chunk = so.recv(4096)
            assert chunk, "a request under way was cut"
            got += chunk
        assert got.endswith(b'{"ok":true}')
        so.close()


def test_over_tls_a_peer_keeping_every_connection_busy_no_longer_locks_out_others(
        tls: ServedTLS) -> None:
    """Check the same over HTTPS (the guard's TLS factory): the new client is served."""
    context = ssl.create_default_context(cafile=str(tls.cert))

    def open_one() -> socket.socket:
        return context.wrap_socket(tls.connect(), server_hostname="localhost")

    keeper = _Keeper(open_one, 6)
    try:
        assert len(keeper.socks) == 6
        time.sleep(0.5)
        for _ in range(3):
            assert tls.get() == {"scheme": "https"}
        assert "total" in tls.counted
    finally:
        keeper.stop()
