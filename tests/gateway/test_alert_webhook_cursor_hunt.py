"""An alert webhook's cursor and retries: with the store's list read seldom (poll_s above
the creation slack), an alert another process wrote is still sent (the cursor's floor
stays behind the last read of the list); and a malformed ``Retry-After`` (``²``: a digit
to str.isdigit(), not to float()) is ignored as an HTTP-date one is, instead of failing
the step."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from edgewise.gateway import webhooks
from edgewise.gateway.metrics import Metrics
from edgewise.gateway.webhooks import Webhook
from edgewise.store import open_store
from edgewise.store.base import Alert

SECRET = b"test-secret-0123456789abcdef"


class _Clock:
    """The ``time`` module as the webhook module sees it, wall clock and monotonic clock
    both moved on by :attr:`offset_s`."""

    def __init__(self) -> None:
        self.offset_s = 0

    def time_ns(self) -> int:
        return time.time_ns() + self.offset_s * 10**9

    def monotonic(self) -> float:
        return time.monotonic() + self.offset_s

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def _recording(w: Webhook, answer: tuple[int, str | None, str]) -> list[str]:
    """Replace ``w``'s POST by one answering ``answer``; the ids of the alerts posted."""
    posted: list[str] = []

    def post(body: bytes, headers: dict[str, str]) -> tuple[int, str | None, str]:
        posted.append(json.loads(body)["alert"]["id"])
        return answer

    w._post = post  # type: ignore[method-assign]
    return posted


def test_an_alert_of_another_process_is_sent_however_seldom_the_list_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The list is read every 600 s. Just after a read, another gateway sharing the store
    writes alert B (this webhook hears of it only by the next read); 301 s later this
    gateway raises and sends its own alert. The next read still finds B and sends it
    (before, the floor had passed B's creation time: B was never sent, not even after a
    restart)."""
    clock = _Clock()
    monkeypatch.setattr(webhooks, "time", clock)
    monkeypatch.setattr(webhooks, "EVENT_POLL_S", 0.0)  # no step waits for the outbox
    store = open_store("duckdb://:memory:")
    w = Webhook("http://127.0.0.1:9/hook", store, SECRET, Metrics(), tmp_path, poll_s=600.0)
    posted = _recording(w, (200, None, ""))
    try:
        w.run_once()  # reads the list: nothing yet
        now = clock.time_ns()
        b = store.add_alert(Alert("pump-9", now, now, 1.0, kind="seq_gap", created_ns=now,
                                  message="written by another gateway"))
        clock.offset_s += 301
        now = clock.time_ns()
        own = store.add_alert(Alert("pump-1", now, now, 1.0, kind="seq_gap", created_ns=now,
                                    message="this gateway's"))
        w.notify(own)
        w.run_once()
        assert posted == [own.id]
        clock.offset_s += 300  # 601 s after the last read: the next one is due
        for _ in range(3):
            w.run_once()
        assert posted == [own.id, b.id], (
            f"alert {b.id}, written by another process 301 s before this webhook sent "
            f"an alert of its own and read with the list 600 s after the last read, was "
            f"not sent (posted: {posted})")
        w.close()
        floor = json.loads(w.path.read_text())["floor_ns"]
        assert floor >= b.created_ns, "the cursor's floor stays behind for good"
    finally:
        w.close()
        store.close()


@pytest.mark.parametrize("value", ["\u00b2", "\u00b9\u2070", "Wed, 21 Oct 2015 07:28:00 GMT",
                                   "-5", "1.5"])
def test_a_malformed_retry_after_is_ignored(value: str, tmp_path: Path) -> None:
    """A 503 with ``Retry-After: ²`` is a failure retried after the webhook's own backoff
    (as one with an HTTP-date or no Retry-After), not a ValueError out of the step."""
    store = open_store("duckdb://:memory:")
    w = Webhook("http://127.0.0.1:9/hook", store, SECRET, Metrics(), tmp_path,
                retry_s=0.001, max_retry_s=300.0)
    posted = _recording(w, (503, value, ""))
    try:
        now = time.time_ns()
        a = store.add_alert(Alert("pump-1", now, now, 1.0, kind="seq_gap", message="m"))
        w.notify(a)
        assert w.run_once() == 1  # one failure in a row, no exception
        assert posted == [a.id]
        assert w.metrics.get("edgewise_alert_webhook_deliveries_total", webhook=w.id,
                             outcome="failed") == 1
        assert w._delay(1, value) <= 0.001  # the backoff alone
        assert w._delay(1, " 5 ") == 5.0  # delay-seconds still taken
    finally:
        w.close()
        store.close()
