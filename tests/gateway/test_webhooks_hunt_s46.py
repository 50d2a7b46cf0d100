"""Hunt s46 on alert webhooks (:mod:`edgewise.gateway.webhooks`): a URL the settings take
but no POST can be sent to is refused at start, in one line that never shows its path;
and, against real sockets, a receiver whose answer body never ends, and the cap on its
``Retry-After``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgewise.config import Settings
from edgewise.errors import ConfigError
from edgewise.gateway.metrics import Metrics
from edgewise.gateway.webhooks import AlertWebhooks, Webhook, webhook_id
from edgewise.store import open_store
from edgewise.store.base import Alert, Store

COUNTER = "edgewise_alert_webhook_deliveries_total"


class EndlessReceiver:
    """A raw HTTP/1.1 receiver: reads each request's head, answers ``status`` with a
    Content-Length of 100 GB and writes body bytes as fast as they are taken."""

    def __init__(self, status: bytes = b"200 OK", extra: bytes = b"") -> None:
        self.status, self.extra = status, extra
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.body_bytes = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        with conn:
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.requests += 1
                conn.sendall(b"HTTP/1.1 " + self.status + b"\r\nContent-Length: 100000000000"
                             b"\r\n" + self.extra + b"\r\n")
                block = b"x" * 65536
                while not self._closed:
                    conn.sendall(block)
                    self.body_bytes += len(block)
            except OSError:
                return

    def close(self) -> None:
        self._closed = True
        self.sock.close()


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("duckdb://:memory:")
    yield s
    s.close()


def _alert(store: Store) -> Alert:
    now = time.time_ns()
    return store.add_alert(Alert("pump-1", now, now, 1.0, kind="seq_gap",
                                 message="messages seq 2..2 missing (1)"))


def _until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_2xx_with_an_endless_body_is_delivered_without_reading_it(
        store: Store, tmp_path: Path) -> None:
    """Held: the answer's body is never read (100 GB announced, written without end):
    the alert counts delivered at once, and little of the body crossed the socket."""
    recv = EndlessReceiver()
    metrics = Metrics()
    w = Webhook(f"http://127.0.0.1:{recv.port}/hook", store, b"k" * 16, metrics, tmp_path,
                timeout_s=5.0, poll_s=0.2, retry_s=0.05, max_retry_s=0.2)
    try:
        w.start()
        t0 = time.monotonic()
        w.notify(_alert(store))
        _until(lambda: metrics.get(COUNTER, webhook=w.id, outcome="delivered") == 1)
        assert time.monotonic() - t0 < 3.0
        time.sleep(0.3)
        assert recv.requests == 1
        assert recv.body_bytes < 64 * 2**20  # the connection is dropped, not drained
        assert metrics.get(COUNTER, webhook=w.id, outcome="failed") == 0
    finally:
        w.close()
        recv.close()


def test_a_5xx_with_an_endless_body_is_retried_and_a_huge_retry_after_is_capped(
        store: Store, tmp_path: Path) -> None:
    """Held: a 503 whose body never ends, with ``Retry-After`` of 10**30 s, is a failure
    retried after ``max_retry_s`` (0.3 s here), not after the receiver's 10**30 s."""
    recv = EndlessReceiver(b"503 Service Unavailable",
                           b"Retry-After: 1000000000000000000000000000000\r\n")
    metrics = Metrics()
    w = Webhook(f"http://127.0.0.1:{recv.port}/hook", store, b"k" * 16, metrics, tmp_path,
                timeout_s=5.0, poll_s=0.2, retry_s=0.05, max_retry_s=0.3)
    try:
        w.start()
        w.notify(_alert(store))
        _until(lambda: metrics.get(COUNTER, webhook=w.id, outcome="failed") >= 3)
        assert metrics.get(COUNTER, webhook=w.id, outcome="delivered") == 0
    finally:
        w.close()
        recv.close()


@pytest.mark.parametrize(("url", "host"), [
    ("https://999.1.1.1/hook/T0k3n", "https://999.1.1.1/…"),
    ("https://ops:pw@01.02.03.04:8443/hook/T0k3n?key=s3cret", "https://01.02.03.04:8443/…"),
    ("https://xn--/hook/T0k3n", "https://xn--/…"),
], ids=["octet-999", "leading-zeros", "empty-a-label"])
def test_a_url_no_post_can_be_sent_to_stops_the_start_in_one_line(
        url: str, host: str, store: Store, tmp_path: Path) -> None:
    """Before: the settings took these (``edgewise serve`` said ``alert webhooks: 5930ed85
    (https://999.1.1.1/…)`` and ``ready``), and every POST raised httpx's InvalidURL (or
    idna's IDNAError) in the webhook's thread, which is no ``httpx.HTTPError``: no alert
    was ever sent, none counted failed, only a warning logged at every backoff."""
    settings = Settings(data_dir=tmp_path, alert_webhooks=(url,),
                        alert_webhook_secret="s" * 16)
    assert settings.alert_webhook_urls == [url]  # the settings' own check takes it
    with pytest.raises(ConfigError) as info:
        AlertWebhooks(settings, store, Metrics())
    msg = str(info.value)
    assert "\n" not in msg
    assert f"has value {host} (webhook {webhook_id(url)}; its path is not shown)" in msg
    assert "cannot be sent to" in msg
    for secret in ("T0k3n", "s3cret", "ops", "pw@"):
        assert secret not in msg


def test_urls_a_post_can_be_sent_to_are_taken(store: Store, tmp_path: Path) -> None:
    """Held: IDNA and punycode hosts, IPv6 and loopback ones pass the new check."""
    urls = ("https://例え.テスト/h", "https://xn--bcher-kva.example/h",
            "https://[2001:db8::1]:8443/h", "http://localhost:9/h")
    hooks = AlertWebhooks(Settings(data_dir=tmp_path, alert_webhooks=urls,
                                   alert_webhook_secret="s" * 16), store, Metrics())
    try:
        assert [w.url for w in hooks.webhooks] == list(urls)
    finally:
        hooks.close()


@pytest.mark.parametrize("proxy", ["ftp://u:p4ss@proxy.example:21", "http://999.1.1.1:3128"])
def test_a_proxy_the_client_cannot_use_stops_the_start_in_one_line(
        proxy: str, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: a proxy variable httpx cannot take (another scheme, a bad address; a
    socks5:// one without socksio the same way) raised out of the webhook's client at
    start: ``edgewise serve`` ended in a traceback (exit 1)."""
    monkeypatch.setenv("ALL_PROXY", proxy)
    url = "https://relay.example.org/hook/T0k3n"
    settings = Settings(data_dir=tmp_path, alert_webhooks=(url,),
                        alert_webhook_secret="s" * 16)
    with pytest.raises(ConfigError) as info:
        AlertWebhooks(settings, store, Metrics())
    msg = str(info.value)
    assert msg.startswith(f"Alert webhook {webhook_id(url)} (https://relay.example.org/…) "
                          f"cannot be sent through the proxy the environment names "
                          f"(ALL_PROXY): ")
    assert "T0k3n" not in msg and "p4ss" not in msg
    assert not (tmp_path / "webhooks").exists()  # nothing written for it


def test_a_loopback_receiver_ignores_the_environments_proxy(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held: a loopback receiver is sent to directly, whatever proxy the environment
    names (unusable here), and gets its alert."""
    monkeypatch.setenv("ALL_PROXY", "ftp://proxy.example:21")
    recv = EndlessReceiver()
    metrics = Metrics()
    w = Webhook(f"http://127.0.0.1:{recv.port}/hook", store, b"k" * 16, metrics, tmp_path,
                timeout_s=5.0, poll_s=0.2, retry_s=0.05, max_retry_s=0.2)
    try:
        w.start()
        w.notify(_alert(store))
        _until(lambda: metrics.get(COUNTER, webhook=w.id, outcome="delivered") == 1)
    finally:
        w.close()
        recv.close()


def test_a_start_refused_for_a_webhook_leaves_no_secret_made_unsaid(
        store: Store, tmp_path: Path) -> None:
    """Before: the secret file was made before the webhooks were checked, so a start
    refused for one (a URL no POST can go to) left it made, and the next start, finding
    it, never said where it was (it says so once, when it makes it)."""
    bad = Settings(data_dir=tmp_path, alert_webhooks=("https://relay.example.org/h",
                                                      "https://999.1.1.1/h"))
    with pytest.raises(ConfigError):
        AlertWebhooks(bad, store, Metrics())
    good = Settings(data_dir=tmp_path, alert_webhooks=("https://relay.example.org/h",))
    hooks = AlertWebhooks(good, store, Metrics())
    try:
        assert hooks.secret_made == tmp_path / "alert_webhook_secret"
    finally:
        hooks.close()
