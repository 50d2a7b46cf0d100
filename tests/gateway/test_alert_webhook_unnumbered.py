"""An alert webhook reads only the alerts without a raise number by creation time
(``Store.unnumbered_alerts``), not the store's whole alert list at every poll.

Every alert this Edgewise writes is numbered (``Store.raised_alerts`` finds it); only those
an older Edgewise wrote have no number. The webhook read every live alert at every poll
(``list_alerts``, page after page) to find those few: on a store holding a year of alerts,
tens of thousands of rows a minute, read for nothing once every alert is numbered.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from edgewise.gateway.metrics import Metrics
from edgewise.gateway.webhooks import Webhook
from edgewise.store import open_store
from edgewise.store.base import Alert, Store
from tests.gateway import test_alert_webhook_raise_order as _raise_order

#: a DuckDB file, or a PostgreSQL schema of its own (the raise-order tests' fixture)
shared_url = _raise_order.shared_url
SECRET = b"test-secret-0123456789abcdef"
S = 10**9


def _unnumber(store: Store, url: str, *ids: str) -> None:
    """Take the raise number off ``ids``, as if an older Edgewise had written them."""
    sql = "UPDATE alerts SET raised_seq = NULL WHERE id = "
    if url.startswith("duckdb"):
        for i in ids:
            store._con.execute(sql + "?", [i])  # type: ignore[attr-defined]
        return
    import psycopg

    base, _, query = url.partition("?")
    schema = dict(p.split("=", 1) for p in query.split("&"))["schema"]
    others = "&".join(p for p in query.split("&") if not p.startswith("schema="))
    with psycopg.connect(base + (f"?{others}" if others else ""), autocommit=True) as con:
        for i in ids:
            con.execute(f'UPDATE "{schema}".alerts SET raised_seq = NULL WHERE id = %s', [i])


def _alert(store: Store, device: str, created_ns: int) -> Alert:
    t = time.time_ns()
    return store.add_alert(Alert(device, t, t, 0.9, kind="seq_gap", drivers={"t": 1.0},
                                 message="gap", created_ns=created_ns))


def test_unnumbered_alerts_pages_the_live_ones_above_the_floor_oldest_first(
        shared_url: str) -> None:
    url = shared_url
    store = open_store(url)
    try:
        made = [_alert(store, f"pump-{i}", 1000 + 10 * i) for i in range(6)]
        kept = _alert(store, "pump-numbered", 1005)  # keeps its number: not listed
        merged = _alert(store, "pump-0", 1001)
        store.merge_alert(merged.id, into=made[0].id, end_ns=merged.end_ns)
        _unnumber(store, url, *(a.id for a in made), merged.id)
        assert [a.id for a in store.unnumbered_alerts(1010)] == [a.id for a in made[2:]]
        pages: list[str] = []
        after: tuple[int, str] | None = None
        while True:
            page = store.unnumbered_alerts(0, limit=2, after=after)
            pages += [a.id for a in page]
            if len(page) < 2:
                break
            after = (page[-1].created_ns, page[-1].id)
        assert pages == [a.id for a in made]
        assert kept.id not in pages and merged.id not in pages
        assert store.unnumbered_alerts(0, limit=0) == []
    finally:
        store.close()


class _NoWholeList:
    """A webhook's store that refuses the whole alert list (everything else passes)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def list_alerts(self, *args: Any, **kw: Any) -> Any:
        raise AssertionError("the webhook read the whole alert list")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_the_webhook_finds_unnumbered_and_numbered_alerts_without_the_whole_list(
        shared_url: str, tmp_path: Path) -> None:
    """Two hundred alerts in the store before the webhook; after it, one numbered alert
    and one an older Edgewise wrote (no number): both are sent, once, and the webhook
    never reads the whole list (before: it did, at every poll)."""
    url = shared_url
    store = open_store(url)
    posted: list[str] = []
    w: Webhook | None = None
    try:
        now = time.time_ns()
        for i in range(200):
            _alert(store, f"old-{i % 7}", now - (i + 1) * S)
        w = Webhook("http://127.0.0.1:9/hook", _NoWholeList(store),  # type: ignore[arg-type]
                    SECRET, Metrics(), tmp_path / "webhooks", poll_s=0.0, retry_s=0.001,
                    max_retry_s=0.002)

        def post(body: bytes, headers: dict[str, str]) -> tuple[int, str | None, str]:
            got = json.loads(body)
            if got["event"] == "alert.raised":
                posted.append(str(got["alert"]["id"]))
            return 200, None, ""

        w._post = post  # type: ignore[method-assign]
        for _ in range(3):
            w.run_once()
        assert posted == []
        numbered = _alert(store, "pump-1", time.time_ns())
        older = _alert(store, "pump-2", time.time_ns())
        _unnumber(store, url, older.id)
        for _ in range(6):
            w.run_once()
        assert sorted(posted) == sorted([numbered.id, older.id]), posted
    finally:
        if w is not None:
            w.close()
        store.close()
