"""Sending a backlog of alerts costs a webhook O(log n) of its own work per alert, not O(n).

Each alert sent rebuilt the webhook's bookkeeping (the handled ids, their raise numbers),
scanned every pending alert for the cursor by number, and took the oldest pending alert
by scanning them all, up to three times: a backlog of n alerts (a receiver down for a
while, a storm) cost O(n²), 8,000 alerts 74 s of the gateway's CPU (shared, by the GIL,
with ingest) with the POST and store reads taken out.

The work is counted, not timed: the lines of ``webhooks.py`` run (a loop's pass is one)
while a backlog is sent, per alert, for a backlog four times as long.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from edgewise.gateway import webhooks
from edgewise.gateway.metrics import Metrics
from edgewise.gateway.webhooks import Webhook
from edgewise.store import open_store
from edgewise.store.base import Alert

SECRET = b"test-secret-0123456789abcdef"
S = 10**9


def _hook(store: Any, state: Path, delivered: list[str], poll_s: float = 3600.0) -> Webhook:
    w = Webhook("http://127.0.0.1:9/hook", store, SECRET, Metrics(), state, poll_s=poll_s)

    def post(body: bytes, headers: dict[str, str]) -> tuple[int, str | None, str]:
        delivered.append(str(json.loads(body)["alert"]["id"]))
        return 200, None, ""

    w._post = post  # type: ignore[method-assign]
    return w


def _send_backlog(n: int, state: Path, seed: int) -> tuple[int, list[str], list[str]]:
    """Raise ``n`` alerts (created in shuffled order, within the last minute) while the
    webhook is told of each, then send them all: ``(lines of webhooks.py run, ids in
    the order delivered, ids oldest first by creation)``."""
    store = open_store("duckdb://:memory:")
    try:
        delivered: list[str] = []
        w = _hook(store, state, delivered)
        now = time.time_ns()
        offsets = list(range(n))
        random.Random(seed).shuffle(offsets)
        raised = []
        for k in offsets:
            created = now - 60 * S + k * 1000
            a = store.add_alert(Alert(f"pump-{k % 7}", created, created, 0.9, kind="seq_gap",
                                      message="gap", created_ns=created))
            raised.append(a)
            w.notify(a)
        lines = 0
        source = webhooks.__file__

        def count(frame: FrameType, event: str, arg: Any) -> Any:
            nonlocal lines
            if event == "line":
                lines += 1
            return count

        def calls(frame: FrameType, event: str, arg: Any) -> Any:
            return count if frame.f_code.co_filename == source else None

        before = sys.gettrace()
        sys.settrace(calls)
        try:
            steps = 0
            while w.pending() or steps == 0:
                w.run_once()
                steps += 1
                assert steps <= 2 * n + 5, f"{w.pending()} alerts still pending after {steps} steps"
        finally:
            sys.settrace(before)
        w.close()
        oldest_first = [a.id for a in sorted(raised, key=lambda a: (a.created_ns, a.id))]
        # the cursor kept: a restart sends nothing again (polling every 0.05 s: a step with
        # nothing to send waits a poll, 1 s at most, for nothing; each step reads the store)
        again: list[str] = []
        w2 = _hook(store, state, again, poll_s=0.05)
        for _ in range(3):
            w2.run_once()
        w2.close()
        assert again == [], f"a restart sent {len(again)} alerts again"
        return lines, delivered, oldest_first
    finally:
        store.close()


def test_a_backlog_costs_the_webhook_the_same_per_alert_whatever_its_length(
        tmp_path: Path) -> None:
    small, large = 100, 400
    lines_small, sent_small, order_small = _send_backlog(small, tmp_path / "small", 1)
    lines_large, sent_large, order_large = _send_backlog(large, tmp_path / "large", 2)
    # every alert once, oldest (by creation) first
    assert sent_small == order_small
    assert sent_large == order_large
    per_small, per_large = lines_small / small, lines_large / large
    # O(1) lines per alert (the heaps work in C) stays flat; O(n) grew about 3.5-fold here
    assert per_large < 1.5 * per_small, (
        f"sending {large} alerts ran {per_large:.0f} lines of webhooks.py per alert, "
        f"{small} alerts {per_small:.0f}: the work per alert grows with the backlog")
