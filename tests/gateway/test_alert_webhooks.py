"""Outgoing alert webhooks against a real local HTTP receiver and a real gateway runtime.

Each test starts a :class:`Receiver` (``http.server`` on a free port, recording every
request and answering from a script) and an in-process :class:`Gateway` (real store,
pipeline and alert manager; the embedded broker on a free port), raises alerts through
the pipeline, and looks at what the receiver got. Poll and retry intervals are made short.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from edgewise.config import Settings
from edgewise.errors import ConfigError
from edgewise.gateway.runtime import Gateway
from edgewise.gateway.webhooks import SECRET_FILE, webhook_id
from edgewise.store import open_store
from edgewise.store.base import Alert
from tests.conftest import REPO, free_port, self_signed_cert

SECRET = "test-secret-0123456789abcdef"
COUNTER = "edgewise_alert_webhook_deliveries_total"


class Receiver:
    """A real HTTP receiver on 127.0.0.1: records ``(path, headers, body)`` of every
    request; answers each POST with the next status of ``answers`` (then 200), after
    ``delay_s``."""

    def __init__(self, port: int | None = None, answers: list[int] | None = None,
                 delay_s: float = 0.0, tls: tuple[Path, Path] | None = None) -> None:
        self.port = port or free_port()
        self.tls = tls
        self.answers = list(answers or [])
        self.delay_s = delay_s
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        recv = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with recv._cond:
                    recv.requests.append((self.path, dict(self.headers.items()), body))
                    status = recv.answers.pop(0) if recv.answers else 200
                    recv._cond.notify_all()
                time.sleep(recv.delay_s)
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", f"http://127.0.0.1:{recv.port}/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_POST = do_GET = _answer

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        if self.tls is not None:  # HTTPS with this certificate and key
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*self.tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        server.block_on_close = False  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, n: int, timeout: float = 15.0) -> list[tuple[str, dict[str, str], bytes]]:
        """The requests once there are at least ``n`` (fails after ``timeout``)."""
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.requests) >= n, timeout), (
                f"the receiver got {len(self.requests)} requests, not {n}")
            return list(self.requests)

    def alert_ids(self) -> list[str]:
        with self._cond:
            return [json.loads(b)["alert"]["id"] for _, _, b in self.requests]


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        r = Receiver(**kw)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def _settings(data_dir: Path, urls: str | tuple[str, ...], **kw: Any) -> Settings:
    values: dict[str, Any] = dict(
        data_dir=data_dir, mqtt_port=free_port(), http_port=free_port(),
        alert_webhooks=urls, alert_webhook_secret=SECRET, alert_webhook_poll_s=0.2,
        alert_webhook_retry_s=0.05, alert_webhook_max_retry_s=0.2,
        alert_webhook_timeout_s=2.0)
    values.update(kw)
    return Settings(**values)


class _ReadCounter:
    """A webhook's store, counting that webhook's reads of the alert list and of the
    alert events (everything else passes through): a test waits for reads that happened
    (:func:`_quiet`), not for a time that may hold fewer of them under load."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.lists = 0
        self.event_reads = 0

    def unnumbered_alerts(self, *args: Any, **kw: Any) -> Any:
        out = self._store.unnumbered_alerts(*args, **kw)
        self.lists += 1
        return out

    def alert_events(self, *args: Any, **kw: Any) -> Any:
        out = self._store.alert_events(*args, **kw)
        self.event_reads += 1
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@contextmanager
def running(settings: Settings) -> Iterator[Gateway]:
    """A started gateway (MQTT broker, no HTTP), stopped after; each webhook's reads of
    the store are counted (:func:`_quiet`)."""
    loop = asyncio.new_event_loop()
    gw = Gateway(settings, gap_grace_s=0.0)
    for w in gw.webhooks.webhooks if gw.webhooks is not None else []:
        w.store = _ReadCounter(w.store)  # type: ignore[assignment]
    try:
        loop.run_until_complete(gw.start(http=False))
        yield gw
    finally:
        loop.run_until_complete(gw.stop())
        loop.close()


def _until(pred: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _quiet(gw: Gateway, reads: int = 3, *, lists: bool = True,
           timeout: float = 15.0) -> None:
    """Wait until every webhook has read the store's alert events (and, with ``lists``,
    its alert list) ``reads`` more times: the first of those reads began after this call,
    and the thread's steps up to the last of them have run, so whatever those reads would
    send again has gone out by now. A read of the list comes every ``poll_s`` at most:
    ``reads`` of them span ``(reads - 1) * poll_s`` at least, however fast the thread."""
    hooks = gw.webhooks.webhooks if gw.webhooks is not None else []
    counters = [w.store for w in hooks]
    assert all(isinstance(c, _ReadCounter) for c in counters), "not started by running()"
    start = [(c.lists, c.event_reads) for c in counters]

    def done() -> bool:
        return all(c.event_reads >= e + reads and (not lists or c.lists >= n + reads)
                   for c, (n, e) in zip(counters, start, strict=True))

    _until(done, timeout)


def _listed(gw: Gateway) -> None:
    """Wait until every webhook's thread has read the store's alert list once (the read
    its start makes, whatever ``poll_s``)."""
    _until(lambda: all(w.store.lists >= 1  # type: ignore[attr-defined]
                       for w in (gw.webhooks.webhooks if gw.webhooks is not None else [])))


def _raise(gw: Gateway, device: str = "pump-1") -> Alert:
    """A new alert through the gateway's alert manager (as the pipeline raises them)."""
    now = time.time_ns()
    return gw.pipeline.alerts.raise_alert(Alert(device, now, now, 1.0, kind="seq_gap",
                                                message="messages seq 2..2 missing (1)"))


def _count(gw: Gateway, url: str, outcome: str) -> float:
    return gw.pipeline.metrics.get(COUNTER, webhook=webhook_id(url), outcome=outcome)


def _msg(seq: int, ts: float, **metrics: float) -> bytes:
    return json.dumps({"ts": ts, "metrics": metrics, "seq": seq}).encode()


def _verify(secret: bytes, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check, written from the README's description."""
    ts = headers["X-Edgewise-Timestamp"]
    want = "sha256=" + hmac.new(secret, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return (hmac.compare_digest(want, headers["X-Edgewise-Signature"])
            and abs(time.time() - int(ts)) <= 60)


def test_a_new_alert_is_delivered_once_signed(tmp_path: Path, receivers) -> None:
    """A seq gap the pipeline reports reaches the receiver once, as the JSON the README
    shows, with a signature the secret verifies; later polls send it not again."""
    recv = receivers().start()
    with running(_settings(tmp_path, recv.url)) as gw:
        gw.security.add_device("pump-1")
        t0 = int(time.time()) - 10
        gw.pipeline.ingest("pump-1", _msg(1, t0, temp=20.0))
        gw.pipeline.ingest("pump-1", _msg(3, t0 + 2, temp=20.0))  # seq 2 missing
        gw.pipeline.check_gaps(now=time.monotonic() + 1)
        (path, headers, body), = recv.wait_for(1)
        _quiet(gw)  # more reads of the store's list and events: none sends it again
        assert len(recv.requests) == 1
        (alert,) = gw.store.list_alerts()
        assert _count(gw, recv.url, "delivered") == 1
    assert path == "/hook"
    assert _verify(SECRET.encode(), headers, body)
    assert not _verify(SECRET.encode(), headers, body.replace(b"pump-1", b"pump-2"))
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Edgewise-Delivery"] == alert.id
    sent = json.loads(body)
    assert sent["event"] == "alert.raised"
    a = sent["alert"]
    assert (a["id"], a["device_id"], a["kind"], a["status"]) == (
        alert.id, "pump-1", "seq_gap", "open")
    assert (a["start_ns"], a["end_ns"], a["score"]) == (alert.start_ns, alert.end_ns, 1.0)
    assert a["message"] == "messages seq 2..2 missing (1)"
    assert a["path"] == f"/v1/alerts/{alert.id}"
    start = datetime.fromtimestamp(alert.start_ns // 10**9, tz=UTC)
    assert a["start"] == start.strftime("%Y-%m-%dT%H:%M:%S") + f".{alert.start_ns % 10**9:09d}Z"
    assert set(a) >= {"end", "created", "created_ns", "drivers"}


def test_an_anomaly_alert_names_its_drivers(tmp_path: Path, receivers) -> None:
    """An anomaly alert's drivers and message go out as the alert manager made them."""
    recv = receivers().start()
    with running(_settings(tmp_path, recv.url)) as gw:
        now = time.time_ns()
        alert = gw.pipeline.alerts.observe("pump-1", now, 0.99, {"temp_c": 0.9, "rpm": 0.1})
        (_, _, body), = recv.wait_for(1)
    a = json.loads(body)["alert"]
    assert (a["id"], a["kind"], a["drivers"]) == (alert.id, "anomaly", {"temp_c": 0.9,
                                                                        "rpm": 0.1})
    assert a["message"] == "Anomalous temp_c (90%), rpm (10%)."


def test_receiver_down_then_up_gets_the_alert_once(tmp_path: Path, receivers) -> None:
    """Connection refused is retried; once the receiver listens it gets the alert, once."""
    recv = receivers()  # not listening yet: connections are refused
    with running(_settings(tmp_path, recv.url)) as gw:
        alert = _raise(gw)
        _until(lambda: _count(gw, recv.url, "failed") >= 3)
        assert recv.requests == []
        recv.start()
        recv.wait_for(1)
        _quiet(gw)
        assert recv.alert_ids() == [alert.id]
        assert _count(gw, recv.url, "delivered") == 1


def test_a_5xx_is_retried_until_a_2xx(tmp_path: Path, receivers) -> None:
    """500, then 429: the same alert is sent again (a later alert waits behind it), then
    delivered once; both go out in the order they were raised."""
    recv = receivers(answers=[500, 429]).start()
    with running(_settings(tmp_path, recv.url)) as gw:
        first = _raise(gw)
        second = _raise(gw, "pump-2")
        recv.wait_for(4)
        _quiet(gw, 4)  # 0.6 s at least: longer than any retry's wait (max_retry_s 0.2)
        assert recv.alert_ids() == [first.id, first.id, first.id, second.id]
        assert _count(gw, recv.url, "failed") == 2
        assert _count(gw, recv.url, "delivered") == 2


def test_a_4xx_or_a_redirect_is_not_retried(tmp_path: Path, receivers) -> None:
    """400 refuses that alert for good (counted), a redirect is not followed and refuses
    it too; the next alert is still delivered."""
    recv = receivers(answers=[400, 302]).start()
    with running(_settings(tmp_path, recv.url)) as gw:
        bad, moved, good = _raise(gw), _raise(gw, "pump-2"), _raise(gw, "pump-3")
        recv.wait_for(3)
        _quiet(gw)  # 0.4 s at least: a retry (max_retry_s 0.2) would have gone
        assert recv.alert_ids() == [bad.id, moved.id, good.id]
        assert [p for p, _, _ in recv.requests] == ["/hook"] * 3  # /elsewhere never asked
        assert _count(gw, recv.url, "refused") == 2
        assert _count(gw, recv.url, "delivered") == 1
        assert _count(gw, recv.url, "failed") == 0


def test_the_cursor_survives_a_restart(tmp_path: Path, receivers) -> None:
    """After a restart nothing sent before is sent again; what was not delivered (the
    receiver was down) and an alert stored while the gateway was down are."""
    recv = receivers().start()
    port = recv.port
    settings = _settings(tmp_path, recv.url)
    with running(settings) as gw:
        sent = _raise(gw)
        recv.wait_for(1)
        recv.stop()
        unsent = _raise(gw, "pump-2")
        _until(lambda: _count(gw, recv.url, "failed") >= 1)
    cursor = tmp_path / "webhooks" / f"{webhook_id(recv.url)}.json"
    assert stat.S_IMODE(cursor.stat().st_mode) == 0o600
    store = open_store(settings.store_url)  # stored while no gateway ran (its thread never told)
    now = time.time_ns()
    quiet = store.add_alert(Alert("pump-3", now, now, 0.95, message="Anomalous t (100%)."))
    store.close()
    recv2 = receivers(port=port).start()
    with running(settings) as gw:
        recv2.wait_for(2)
        _quiet(gw)
        assert sorted(recv2.alert_ids()) == sorted([unsent.id, quiet.id])
        assert sent.id not in recv2.alert_ids()
    with running(settings) as gw:  # and nothing once more
        _quiet(gw)  # the start's read of the list and the reads after it
    assert len(recv2.requests) == 2


def test_a_new_webhook_does_not_send_older_alerts(tmp_path: Path, receivers) -> None:
    """Alerts stored before a webhook was configured are not sent to it."""
    store = open_store(f"duckdb:///{tmp_path / 'edgewise.duckdb'}")
    now = time.time_ns()
    store.add_alert(Alert("pump-1", now, now, 0.95))
    store.close()
    recv = receivers().start()
    with running(_settings(tmp_path, recv.url)) as gw:
        _quiet(gw)  # the start's read of the list, and more: the old alert is not sent
        new = _raise(gw)
        recv.wait_for(1)
        _quiet(gw)
    assert recv.alert_ids() == [new.id]


def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    """http:// to a host that is not loopback stops the start (before the data dir is
    made), naming the URL and what is allowed; the opt-in allows it."""
    with pytest.raises(ConfigError) as e:
        Settings.load(env={"EDGEWISE_ALERT_WEBHOOKS": "https://ok.example.org/h, "
                                                      "http://ops.example.org/hook"})
    msg = str(e.value)
    assert "http://ops.example.org/…" in msg and "EDGEWISE_ALERT_WEBHOOKS" in msg
    assert webhook_id("http://ops.example.org/hook") in msg and "/hook" not in msg
    assert "https://ops.example.org/…" in msg and "loopback" in msg
    assert "--alert-webhook-allow-http" in msg
    d = tmp_path / "d"
    with pytest.raises(ConfigError, match=r"10\.1\.2\.3"):
        Gateway(Settings(data_dir=d, alert_webhooks="http://10.1.2.3:8000/x"))
    assert not d.exists()
    for bad in ("ftp://ops.example.org/x", "https:///nohost", "ops.example.org/x",
                "https://ops.example.org:99999/x"):
        with pytest.raises(ConfigError, match="https://HOST"):
            Settings.load(env={"EDGEWISE_ALERT_WEBHOOKS": bad})
    ok = Settings.load(env={"EDGEWISE_ALERT_WEBHOOKS": "http://10.1.2.3/x",
                            "EDGEWISE_ALERT_WEBHOOK_ALLOW_HTTP": "1"})
    assert ok.alert_webhook_urls == ["http://10.1.2.3/x"]
    assert Settings(alert_webhooks="http://localhost:9/x,http://[::1]:9/y").alert_webhook_urls
    # the CLI: one line, exit 2, nothing made
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    env.pop("EDGEWISE_ALERT_WEBHOOKS", None)
    r = subprocess.run([sys.executable, "-m", "edgewise", "serve", "--data-dir", str(d),
                        "--alert-webhook", "http://ops.example.org/hook"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert r.stderr.startswith("error: Setting 'alert_webhooks'") and r.stderr.count("\n") == 1
    assert not d.exists()


def test_ingest_does_not_wait_for_a_hanging_receiver(tmp_path: Path, receivers) -> None:
    """A receiver that takes 2 s to answer: every ingest (each raising a seq-gap alert)
    still returns at once."""
    recv = receivers(delay_s=2.0).start()
    with running(_settings(tmp_path, recv.url, alert_webhook_timeout_s=5.0)) as gw:
        gw.security.add_device("pump-1")
        t0 = int(time.time()) - 100
        slowest = 0.0
        for k in range(8):
            start = time.perf_counter()
            gw.pipeline.ingest("pump-1", _msg(2 * k + 1, t0 + 2 * k, temp=20.0))
            gw.pipeline.check_gaps(now=time.monotonic() + 1)  # raises the alert (and posts)
            slowest = max(slowest, time.perf_counter() - start)
        _until(lambda: len(gw.store.list_alerts(limit=100)) == 7)
        assert len(recv.requests) <= 2  # the receiver is still busy with the first ones
        assert slowest < 1.0, slowest
        stop_started = time.monotonic()
    assert time.monotonic() - stop_started < 8.0  # stop waits for one POST at most


def test_the_secret_is_made_once_0600_and_signs(tmp_path: Path, receivers) -> None:
    """Without EDGEWISE_ALERT_WEBHOOK_SECRET a secret is made at first start (mode 0600),
    said once, kept for the next start, and the POSTs verify with it."""
    recv = receivers().start()
    settings = _settings(tmp_path, recv.url, alert_webhook_secret="")
    with running(settings) as gw:
        made = gw.webhook_secret_made
        assert made == tmp_path / SECRET_FILE
        assert stat.S_IMODE(made.stat().st_mode) == 0o600
        _raise(gw)
        (_, headers, body), = recv.wait_for(1)
    secret = made.read_bytes().strip()
    assert len(secret) >= 32 and _verify(secret, headers, body)
    with running(settings) as gw:
        assert gw.webhook_secret_made is None
    assert made.read_bytes().strip() == secret
    with pytest.raises(ConfigError, match="at least 16"):
        Gateway(_settings(tmp_path / "x", recv.url, alert_webhook_secret="short"))


def test_the_readme_verify_snippet_works(tmp_path: Path, receivers) -> None:
    """The README's receiver check accepts a real POST and refuses a changed body, a
    wrong secret and an old timestamp."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Alert webhooks", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    scope: dict[str, Any] = {}
    exec(code, scope)
    verify = scope["verify"]
    recv = receivers().start()
    with running(_settings(tmp_path, recv.url)) as gw:
        _raise(gw)
        (_, headers, body), = recv.wait_for(1)
    assert verify(SECRET.encode(), headers, body) is True
    assert not verify(SECRET.encode(), headers, body + b" ")
    assert not verify(b"another-secret-0123456789", headers, body)
    assert not verify(SECRET.encode(), headers, body, max_age_s=-1)


def test_https_certificates_are_checked(tmp_path: Path, receivers) -> None:
    """An https:// receiver whose certificate no trusted CA signed gets nothing (the POST
    fails and is retried); with --alert-webhook-ca-file naming its CA it gets the alert.
    A CA file that cannot be loaded stops the start, named."""
    cert, key = self_signed_cert(tmp_path)
    recv = receivers(tls=(cert, key)).start()
    with running(_settings(tmp_path / "a", recv.url)) as gw:
        _raise(gw)
        _until(lambda: _count(gw, recv.url, "failed") >= 2)
        assert recv.requests == [] and _count(gw, recv.url, "delivered") == 0
    with running(_settings(tmp_path / "a", recv.url, alert_webhook_ca_file=str(cert))) as gw:
        recv.wait_for(1)  # the alert the untrusted run could not send
        _until(lambda: _count(gw, recv.url, "delivered") == 1)
    with pytest.raises(ConfigError, match=r"alert_webhook_ca_file.*key\.pem"):
        Gateway(_settings(tmp_path / "b", recv.url, alert_webhook_ca_file=str(key)))


# -- fixes of 2026-12-05 --------------------------------------------------------------------


def test_an_alert_deleted_or_merged_while_the_receiver_is_down_is_skipped(
        tmp_path: Path, receivers) -> None:
    """The store is read again before every retry: an alert whose device was deleted after
    a failed POST, and one merged into a newer alert after a failed POST, are not sent
    again (counted ``skipped``); the alert they were merged into is sent, then the
    merge's ``alert.merged`` (naming the skipped alert and the one it is part of now)."""
    recv = receivers(answers=[503] * 4).start()
    with running(_settings(tmp_path, recv.url, alert_webhook_retry_s=0.6,
                           alert_webhook_max_retry_s=1.2)) as gw:
        doomed = _raise(gw, "doomed-1")
        merged = _raise(gw, "pump-1")
        recv.wait_for(1)  # doomed: 503; its retry waits at least 0.3 s
        gw.store.delete_device("doomed-1")
        recv.wait_for(2)  # merged: 503
        into = _raise(gw, "pump-1")
        gw.store.merge_alert(merged.id, into=into.id)
        _until(lambda: _count(gw, recv.url, "delivered") == 2, timeout=30)
        _quiet(gw, 4)  # 0.6 s at least
        ids = recv.alert_ids()
        assert ids.count(doomed.id) == 1 and ids.count(merged.id) == 2, ids
        assert ids[2:] == [into.id] * 3 + [merged.id]  # 503, 503, 200; then its merge
        last = json.loads(recv.requests[-1][2])
        assert (last["event"], last["merged_into"], last["into"]["id"]) == (
            "alert.merged", into.id, into.id)
        assert _count(gw, recv.url, "skipped") == 2


class Trickler:
    """A receiver that reads the request and then sends its answer's header one byte a
    second, for ever: every read is quick, the answer never ends."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.posts = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: Any) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.posts += 1
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while True:
                    time.sleep(0.5)
                    conn.sendall(b"a")
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def test_a_trickling_receiver_times_out_and_stop_is_prompt(tmp_path: Path) -> None:
    """``timeout_s`` bounds the whole POST: a receiver that answers a byte at a time is
    failed (counted, logged, retried) after it, not waited for for ever; three such
    webhooks stop together within one ``timeout_s + 2`` (not one after another), and no
    webhook thread is left."""
    slow = Trickler()
    urls = [slow.url(f"/hook{i}") for i in range(3)]
    try:
        with running(_settings(tmp_path, ",".join(urls), alert_webhook_timeout_s=1.0)) as gw:
            _raise(gw)
            for url in urls:
                _until(lambda url=url: _count(gw, url, "failed") >= 2, timeout=20)
            assert all(_count(gw, url, "delivered") == 0 for url in urls)
            t0 = time.monotonic()
        stop_s = time.monotonic() - t0
        assert stop_s < 3.0, f"stop took {stop_s:.1f} s"
        _until(lambda: not [t for t in threading.enumerate()
                            if t.name.startswith("alert-webhook")], timeout=3)
    finally:
        slow.close()


@pytest.mark.parametrize("text", [
    '{"done": {}, "floor_ns": Infinity}', '{"done": {"a": 1e400}, "floor_ns": 1}',
    '{"done": {}, "floor_ns": NaN}', '{"done": [], "floor_', "[1, 2]",
], ids=["infinity", "1e400", "nan", "cut-short", "a-list"])
def test_a_damaged_cursor_is_moved_aside_and_the_webhook_starts_now(
        tmp_path: Path, receivers, caplog, text: str) -> None:
    """A cursor file that is not one written by the gateway (hand-edited, cut short) does
    not stop the start: it is moved aside to ``.damaged`` with a warning naming it, a
    new one is written, and alerts raised from then on are delivered."""
    recv = receivers().start()
    cursor = tmp_path / "webhooks" / f"{webhook_id(recv.url)}.json"
    cursor.parent.mkdir(parents=True)
    cursor.write_text(text)
    with caplog.at_level("WARNING", logger="edgewise.gateway.webhooks"):
        with running(_settings(tmp_path, recv.url)) as gw:
            alert = _raise(gw)
            recv.wait_for(1)
            _until(lambda: _count(gw, recv.url, "delivered") == 1)
    assert recv.alert_ids() == [alert.id]
    assert (tmp_path / "webhooks" / f"{cursor.name}.damaged").read_text() == text
    assert json.loads(cursor.read_text())["done"] == {alert.id: alert.created_ns}
    assert any("moved aside" in r.getMessage() and str(cursor) in r.getMessage()
               for r in caplog.records), caplog.text


_TOKEN_URLS = [
    "http://ops:s3cret@relay.example.org/hook/T0k3n?key=K3y",  # plain http, not loopback
    "ftp://ops:s3cret@relay.example.org/hook/T0k3n?key=K3y",
    "https://ops:s3cret@relay.example.org:99999/hook/T0k3n?key=K3y",
    "https://ops:s3cret@relay.example.org:0/hook/T0k3n?key=K3y",
    "https://ops:s3cret@relay.example.org/hook/T0k3n?key=K3y x",
    "https://ops:s3cret@[::1/hook/T0k3n?key=K3y",
    "relay.example.org/hook/T0k3n?key=K3y",
]


@pytest.mark.parametrize("url", _TOKEN_URLS,
                         ids=["http", "ftp", "port", "port0", "space", "ipv6", "no-scheme"])
def test_a_refused_webhook_url_never_shows_its_path_or_password(url: str) -> None:
    """Every refusal of a webhook URL names it as logs do (scheme, host, port, webhook
    id), never its path, query or user part, which may hold a token."""
    with pytest.raises(ConfigError) as e:
        Settings.load(env={"EDGEWISE_ALERT_WEBHOOKS": url})
    msg = str(e.value)
    for secret in ("T0k3n", "K3y", "s3cret", "ops:"):
        assert secret not in msg, msg
    assert webhook_id(url) in msg and "EDGEWISE_ALERT_WEBHOOKS" in msg, msg


def _add_pump(d: Path) -> str:
    """Register pump-1 in data dir ``d`` as ``edgewise device add`` does (in this process:
    the CLI is not what these tests check); its secret."""
    from edgewise.security.credentials import Security

    sec = Security(d)
    try:
        return sec.add_device("pump-1", actor="cli")[1]
    finally:
        sec.close()


def _send_with_a_gap(http_port: int, device_secret: str) -> None:
    """POST pump-1's seqs 1 and 3 over HTTP: seq 2 never comes, a seq_gap alert."""
    import httpx

    t0 = int(time.time()) - 10
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port}") as http:
        for seq in (1, 3):
            r = http.post("/v1/telemetry", headers={"Authorization": f"Bearer {device_secret}",
                                                    "X-Device-Id": "pump-1"},
                          json={"ts": t0 + seq, "metrics": {"temp": 20.0}, "seq": seq})
            assert r.status_code == 200, r.text
