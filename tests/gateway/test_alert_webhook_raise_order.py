"""Alert webhooks find the alerts they were not told of by the store's raise numbers (given
in commit order, in the inserting transaction), not by wall-clock creation time.

They found another process's alerts (another gateway's, on a shared PostgreSQL store: the
README gives the webhooks to one gateway, which sends every alert) by ``created_ns``
above a floor trailing this gateway's clock by 300 s. An alert stamped by a host whose
clock lagged by more than that was never sent (no counter, no log), and its
acknowledgement went out without it; so were this gateway's own alerts left unsent
(receiver down) after its clock was stepped back, once it restarted.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.gateway import webhooks
from edgewise.gateway.metrics import Metrics
from edgewise.gateway.webhooks import Webhook
from edgewise.store import open_store
from edgewise.store.base import Alert, Store

SECRET = b"test-secret-0123456789abcdef"
S = 10**9


class _WallClock:
    """The ``time`` module as the webhook module sees it, with the wall clock (only)
    moved by :attr:`offset_s`: a step of the system clock leaves the monotonic one."""

    def __init__(self, offset_s: int = 0) -> None:
        self.offset_s = offset_s

    def time_ns(self) -> int:
        return time.time_ns() + self.offset_s * S

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


class _Receiver:
    """Stands in for a webhook's POST: records ``(event, alert id)`` of every POST and
    answers :attr:`status`."""

    def __init__(self) -> None:
        self.status = 200
        self.posted: list[tuple[str, str]] = []
        self.delivered: list[tuple[str, str]] = []

    def attach(self, w: Webhook) -> Webhook:
        def post(body: bytes, headers: dict[str, str]) -> tuple[int, str | None, str]:
            got = json.loads(body)
            item = (str(got["event"]), str(got["alert"]["id"]))
            self.posted.append(item)
            if 200 <= self.status < 300:
                self.delivered.append(item)
            return self.status, None, ""

        w._post = post  # type: ignore[method-assign]
        return w

    def raised(self) -> list[str]:
        return [i for e, i in self.delivered if e == "alert.raised"]


def _hook(store: Store, state: Path, recv: _Receiver) -> Webhook:
    """A webhook reading the store's alerts and events at every step."""
    return recv.attach(Webhook("http://127.0.0.1:9/hook", store, SECRET, Metrics(), state,
                               poll_s=0.0, retry_s=0.001, max_retry_s=0.002))


def _steps(w: Webhook, n: int = 12) -> None:
    for _ in range(n):
        w.run_once()


def _alert(store: Store, device: str, created_ns: int, message: str) -> Alert:
    t = time.time_ns()
    return store.add_alert(Alert(device, t, t, 0.9, kind="seq_gap", drivers={"t": 1.0},
                                 message=message, created_ns=created_ns))


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store two gateways could share: a PostgreSQL schema of its own (dropped after),
    or a DuckDB file (one process: both 'gateways' are then one store object)."""
    if request.param == "duckdb":
        yield f"duckdb://{tmp_path / 'ew.duckdb'}"
        return
    base = request.getfixturevalue("postgres_url")
    schema = f"ew_raise_{uuid.uuid4().hex[:10]}"
    yield f"{base}{'&' if '?' in base else '?'}schema={schema}"
    import psycopg

    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_alerts_stamped_by_a_lagging_clock_are_sent_with_their_events_after(
        shared_url: str, tmp_path: Path) -> None:
    """This gateway sends its own alert (the floor is then 300 s behind its clock);
    another gateway on the store, whose clock is 120 s, 600 s and an hour behind, raises
    three alerts and acknowledges the last: each is sent once, the acknowledgement after
    its alert (before: the 600 s and hour-old ones were never sent, and the
    acknowledgement went out alone)."""
    store = open_store(shared_url)
    peer = open_store(shared_url) if shared_url.startswith("postgresql") else store
    recv = _Receiver()
    w = _hook(store, tmp_path / "webhooks", recv)
    try:
        now = time.time_ns()
        own = _alert(store, "pump-0", now, "own clock")
        w.notify(own)
        _steps(w, 4)
        assert recv.raised() == [own.id]
        now = time.time_ns()
        lagging = {skew: _alert(peer, f"pump-{skew}", now - skew * S, f"{skew} s behind")
                   for skew in (120, 600, 3600)}
        peer.acknowledge_alert(lagging[3600].id, "ops")
        _steps(w)
        assert sorted(recv.raised()) == sorted([own.id, *(a.id for a in lagging.values())]), (
            f"sent: {recv.delivered}")
        assert len(recv.delivered) == len(set(recv.delivered)) == 5, recv.delivered
        ack = ("alert.acknowledged", lagging[3600].id)
        assert recv.delivered.index(("alert.raised", lagging[3600].id)) < \
            recv.delivered.index(ack), recv.delivered
        assert w.pending() == 0
    finally:
        w.close()
        if peer is not store:
            peer.close()
        store.close()


def test_own_unsent_alerts_are_sent_after_the_clock_is_stepped_back_and_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's clock runs an hour ahead while it sends alert A; then it is stepped
    back to the right time, the receiver goes down, and alert B, raised then, is not
    delivered before the gateway restarts. After the restart B is sent, A is not sent
    again (before: B, created below the floor of the clock that was ahead, never was)."""
    clock = _WallClock(3600)
    monkeypatch.setattr(webhooks, "time", clock)
    store = open_store(f"duckdb://{tmp_path / 'ew.duckdb'}")
    state = tmp_path / "webhooks"
    recv = _Receiver()
    w = _hook(store, state, recv)
    try:
        a = _alert(store, "pump-1", clock.time_ns(), "raised while the clock was ahead")
        w.notify(a)
        _steps(w, 4)
        assert recv.raised() == [a.id]
        clock.offset_s = 0  # the clock is stepped back an hour
        recv.status = 503
        b = _alert(store, "pump-2", clock.time_ns(), "raised after the clock was stepped back")
        w.notify(b)
        _steps(w, 3)
        assert ("alert.raised", b.id) in recv.posted and recv.raised() == [a.id]
        w.close()
        recv.status = 200
        w = _hook(store, state, recv)
        _steps(w, 6)
        assert recv.raised() == [a.id, b.id], f"sent: {recv.delivered}"
        assert w.pending() == 0
    finally:
        w.close()
        store.close()


def test_a_restart_resends_nothing_and_a_new_webhook_sends_no_history(
        tmp_path: Path) -> None:
    """Alerts in the store before a webhook is configured are not sent; another
    gateway's alerts raised after are (its clock 15 minutes behind); one delivered before a
    restart is not sent again, one not delivered is, once; the cursor keeps the raise
    number (``alerts_after``)."""
    store = open_store(f"duckdb://{tmp_path / 'ew.duckdb'}")
    state = tmp_path / "webhooks"
    now = time.time_ns()
    history = [_alert(store, f"old-{i}", now - i * S, "before the webhook") for i in range(3)]
    recv = _Receiver()
    w = _hook(store, state, recv)
    try:
        _steps(w, 3)
        assert recv.posted == []
        behind = time.time_ns() - 900 * S
        first = _alert(store, "pump-1", behind, "first")
        _steps(w, 3)
        assert recv.raised() == [first.id]
        recv.status = 503
        second = _alert(store, "pump-2", behind + S, "second")
        _steps(w, 3)
        assert ("alert.raised", second.id) in recv.posted
        w.close()
        assert json.loads(w.path.read_text())["alerts_after"] == 4  # 3 of history, first
        recv.status = 200
        w = _hook(store, state, recv)
        _steps(w, 6)
        w.close()
        assert recv.raised() == [first.id, second.id], recv.delivered
        assert not {a.id for a in history} & {i for _, i in recv.posted}
        assert json.loads(w.path.read_text())["alerts_after"] == 5
        w = _hook(store, state, recv)  # and once more: nothing left to send
        _steps(w, 3)
        assert recv.raised() == [first.id, second.id], recv.delivered
    finally:
        w.close()
        store.close()


def test_a_cursor_file_of_an_edgewise_before_raise_numbers_keeps_its_word(
        tmp_path: Path) -> None:
    """A cursor file without ``alerts_after`` (an older Edgewise wrote it): the alerts
    created at or before its floor, or in its ``done``, are not sent again; one created
    after and not done is sent; the file then keeps the raise number."""
    store = open_store(f"duckdb://{tmp_path / 'ew.duckdb'}")
    state = tmp_path / "webhooks"
    floor = time.time_ns() - 60 * S
    handled = _alert(store, "pump-1", floor - S, "below the floor")
    done = _alert(store, "pump-2", floor + S, "done")
    unsent = _alert(store, "pump-3", floor + 2 * S, "not sent yet")
    recv = _Receiver()
    path = state / f"{webhooks.webhook_id('http://127.0.0.1:9/hook')}.json"
    state.mkdir()
    path.write_text(json.dumps({"webhook": "http://127.0.0.1:9/…", "floor_ns": floor,
                                "done": {done.id: done.created_ns}, "events_after": 0,
                                "store": store.store_id()}))
    w = _hook(store, state, recv)
    try:
        _steps(w, 4)
        w.close()
        assert recv.raised() == [unsent.id], recv.delivered
        assert handled.id not in recv.raised()
        assert json.loads(path.read_text())["alerts_after"] == 3
        w = _hook(store, state, recv)
        _steps(w, 3)
        assert recv.raised() == [unsent.id], recv.delivered
    finally:
        w.close()
        store.close()


def test_raise_numbers_are_unique_and_in_commit_order_across_writers(shared_url: str) -> None:
    """Two store objects (two gateways on PostgreSQL) add alerts at once: numbers run
    1..N without a repeat, each alert has one, and a reader that keeps the highest number
    read misses none."""
    url = shared_url
    stores = [open_store(url)]
    stores.append(open_store(url) if url.startswith("postgresql") else stores[0])
    seen: list[tuple[int, str]] = []
    try:
        ids: list[str] = []
        lock = threading.Lock()

        def write(store: Store, k: int) -> None:
            for i in range(15):
                a = _alert(store, f"w{k}-{i}", time.time_ns() - (k * 1000 + i) * S, "x")
                with lock:
                    ids.append(a.id)

        threads = [threading.Thread(target=write, args=(s, k)) for k, s in enumerate(stores)]
        for t in threads:
            t.start()
        upto = 0
        while any(t.is_alive() for t in threads):
            got = stores[0].raised_alerts(upto)
            seen += [(n, a.id) for n, a in got]
            upto = got[-1][0] if got else upto
        for t in threads:
            t.join()
        seen += [(n, a.id) for n, a in stores[0].raised_alerts(upto)]
        assert [n for n, _ in seen] == list(range(1, 31))
        assert sorted(i for _, i in seen) == sorted(ids)
        assert stores[0].last_alert_seq() == 30
    finally:
        for s in {id(s): s for s in stores}.values():
            s.close()


def test_a_duckdb_store_made_before_raise_numbers_numbers_new_alerts(tmp_path: Path) -> None:
    """A DuckDB file without ``raised_seq`` and its counter (an older Edgewise) opens; its
    alerts keep no number (a webhook finds them by creation time), new ones are numbered
    from 1."""
    import duckdb

    path = tmp_path / "old.duckdb"
    store = open_store(f"duckdb://{path}")
    old = _alert(store, "pump-1", time.time_ns(), "old")
    store.close()
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE alerts DROP COLUMN raised_seq")
    con.execute("DELETE FROM ew_meta WHERE key = 'alert_raised_seq'")
    con.close()
    _old_store_numbers_new_alerts(f"duckdb://{path}", old)


@pytest.mark.postgres
def test_a_postgres_store_made_before_raise_numbers_numbers_new_alerts(
        postgres_url: str) -> None:
    """As for DuckDB, on a PostgreSQL schema without ``raised_seq``, its index and its
    counter: a role with only SELECT, INSERT, UPDATE and DELETE is refused, naming what
    it lacks; the owner's open adds them; the role then raises numbered alerts."""
    import psycopg

    from edgewise.errors import StoreError
    from tests.conftest import dml_only_role

    schema = f"ew_raise_{uuid.uuid4().hex[:10]}"
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}schema={schema}"
    try:
        store = open_store(url)
        old = _alert(store, "pump-1", time.time_ns(), "old")
        store.close()
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f'ALTER TABLE "{schema}".alerts DROP COLUMN raised_seq')
            con.execute(f"DELETE FROM \"{schema}\".ew_meta WHERE key = 'alert_raised_seq'")
        with dml_only_role(postgres_url, schema, "ew_rs_") as (role, role_url):
            with pytest.raises(StoreError) as info:  # the column is the owner's to add
                open_store(role_url)
            assert (f"role {role!r} needs ownership of table 'alerts' to add column "
                    "alerts.raised_seq") in str(info.value), info.value
            _old_store_numbers_new_alerts(url, old)
            store = open_store(role_url)
            try:
                new = _alert(store, "pump-3", time.time_ns(), "by the role")
                assert [(n, a.id) for n, a in store.raised_alerts(1)] == [(2, new.id)]
            finally:
                store.close()
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _old_store_numbers_new_alerts(url: str, old: Alert) -> None:
    store = open_store(url)
    try:
        assert store.raised_alerts() == [] and store.last_alert_seq() == 0
        assert [a.id for a in store.list_alerts()] == [old.id]
        new = _alert(store, "pump-2", time.time_ns(), "new")
        assert [(n, a.id) for n, a in store.raised_alerts()] == [(1, new.id)]
    finally:
        store.close()
