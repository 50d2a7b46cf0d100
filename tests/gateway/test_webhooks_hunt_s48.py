"""Hunt s48 on alert webhooks (:mod:`edgewise.gateway.webhooks`), against a real local
HTTP receiver.

* httpx logs every request it sends at INFO (``HTTP Request: POST <url> "HTTP/1.1 200
  OK"``), the URL whole: a gateway whose logging was set to INFO wrote the user, password,
  path and query of a webhook URL (a Slack or Teams URL's path is its secret) at every
  POST, though the webhook's own messages never show them. That line now names the URL as
  they do (scheme, host, port and the webhook's id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgewise.gateway.metrics import Metrics
from edgewise.gateway.webhooks import Webhook
from edgewise.store import open_store
from edgewise.store.base import Alert, Store
from tests.gateway.test_alert_webhooks import Receiver

COUNTER = "edgewise_alert_webhook_deliveries_total"


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("duckdb://:memory:")
    yield s
    s.close()


def _until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_httpx_request_log_never_shows_the_urls_user_password_path_or_query(
        store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Check that, logging at DEBUG, a delivery to
    ``http://ops-user:pa55word@127.0.0.1:PORT/services/T0K3N?key=s3cr3tkey`` (the receiver
    gets it, with the URL's basic auth) logs no part of the URL but its scheme, host and
    port, and that httpx's request line names the webhook by its id. It logged
    ``HTTP Request: POST http://ops-user:pa55word@…/services/T0K3N?key=s3cr3tkey``."""
    recv = Receiver().start()
    url = f"http://ops-user:pa55word@127.0.0.1:{recv.port}/services/T0K3N?key=s3cr3tkey"
    metrics = Metrics()
    caplog.set_level(logging.DEBUG)
    w = Webhook(url, store, b"k" * 16, metrics, tmp_path, timeout_s=5.0, poll_s=0.2,
                retry_s=0.05, max_retry_s=0.2)
    try:
        w.start()
        now = time.time_ns()
        w.notify(store.add_alert(Alert("pump-1", now, now, 1.0, kind="seq_gap")))
        _until(lambda: metrics.get(COUNTER, webhook=w.id, outcome="delivered") == 1)
    finally:
        w.close()
        recv.stop()
    path, headers, _ = recv.requests[0]
    assert path == "/services/T0K3N?key=s3cr3tkey"
    assert headers["Authorization"].startswith("Basic ")
    said = [r.getMessage() for r in caplog.records]
    leaks = [m for m in said if any(s in m for s in ("ops-user", "pa55word", "T0K3N",
                                                     "s3cr3tkey", "/services"))]
    assert leaks == []
    assert any(m.startswith(f"HTTP Request: POST http://127.0.0.1:{recv.port}/… (webhook "
                            f"{w.id}) ") for m in said), said
