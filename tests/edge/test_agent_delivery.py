"""What the agent does when the real gateway app answers 413 (payload too large): a message
it will never take is set aside as rejected and the rest flow, and posts shrink only as much
as the gateway's limit needs, then grow back (one 413 used to wedge or slow the agent for
good)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.edge.agent import Agent
from tests.server.conftest import Env, build_env

LIMIT = 8192  # the gateway's max_payload_bytes here: small, so big messages are quick to make


@pytest.fixture
def gw(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir, max_payload_bytes=LIMIT)


class _Counting:
    """The real app's client, counting telemetry posts and their answers."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.statuses: list[int] = []

    def post(self, url: str, **kw: Any) -> Any:
        r = self.client.post(url, **kw)
        self.statuses.append(r.status_code)
        return r


def _big(n_bytes: int, k: float = 0.0) -> dict[str, float]:
    """A reading of about ``n_bytes`` of JSON (metric names of 60 characters)."""
    return {f"bin_{i:04d}_" + "x" * 51: float(i) + k for i in range(n_bytes // 72)}


def _drain(agent: Agent, client: Any, tries: int) -> None:
    for _ in range(tries):
        if not len(agent.outbox):
            return
        agent.drain_once(client)


def test_a_message_too_large_even_alone_is_set_aside_and_the_rest_flow(gw, tmp_path, caplog):
    """Check a buffered message the gateway refuses even alone (413 at one message per post)
    is rejected for good as 'too_large' (logged, counted, kept in the rejected table: its
    first 4 KB and its size), a small stand-in takes its seq so the ack moves on, and the
    20 readings behind it are stored (the agent used to post it every second for ever,
    delivering nothing behind it, until the full outbox dropped new readings)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a")
    big = agent.handle(_big(3 * LIMIT))
    (agent_body,) = agent.outbox._db.execute("SELECT body FROM outbox WHERE seq = ?",
                                             (big,)).fetchone()
    for i in range(20):
        agent.handle({"temp_c": 20.0 + i / 10})
    client = _Counting(gw.client)
    _drain(agent, client, 15)
    assert len(agent.outbox) == 0, client.statuses
    assert agent.outbox.rejected == 1 and 413 in client.statuses
    db = sqlite3.connect(tmp_path / "a" / "outbox.sqlite")
    (seq, reason, detail, body, size), = db.execute(
        "SELECT seq, reason, detail, body, body_bytes FROM rejected")
    assert (seq, reason) == (big, "too_large") and size > 2 * LIMIT
    assert body == agent_body[:len(body)] and len(body) == 4096  # its start, its size kept
    assert "413" in json.loads(detail)["detail"]
    logged = [json.loads(r.getMessage()) for r in caplog.records
              if "readings_rejected" in r.getMessage()]
    assert logged and logged[0]["reasons"] == {"too_large": 1}
    assert [v for _, _, v in gw.store.query(gw.device, "temp_c")] == [
        20.0 + i / 10 for i in range(20)]
    (stand_in,) = gw.store.query(gw.device, "agent.too_large")
    assert stand_in[2] > 2 * LIMIT


def test_after_a_413_posts_grow_back_instead_of_one_message_each(gw, tmp_path):
    """Check two messages too large together but not alone are delivered one per post, and
    a later backlog of 100 small readings then goes in one post, not 100 (the batch was
    halved to below the number pending and never grew back), without another 413."""
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a")
    agent.handle(_big(LIMIT * 2 // 3))
    agent.handle(_big(LIMIT * 2 // 3, k=1.0))
    client = _Counting(gw.client)
    _drain(agent, client, 10)
    assert len(agent.outbox) == 0 and agent.outbox.rejected == 0
    assert client.statuses == [413, 200, 200]
    for i in range(100):
        agent.handle({"temp_c": 20.0 + i / 100})
    client.statuses.clear()
    _drain(agent, client, 100)
    assert len(agent.outbox) == 0
    assert client.statuses == [200]
    assert len(gw.store.query(gw.device, "temp_c")) == 100


def test_posts_fill_the_room_under_a_413_and_find_a_raised_limit_again(gw, tmp_path):
    """Check messages of about a third of the limit go two per post after a 413 (not one:
    the midpoint budget stopped just under two), and once the gateway's limit is raised
    a probe past the refused size finds it within a few posts (the budget could never
    exceed the smallest size ever refused, so a raised limit went unnoticed until a
    restart), while no message is lost or set aside."""
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a")
    for k in range(3):
        agent.handle(_big(3000, k))
    client = _Counting(gw.client)
    _drain(agent, client, 10)
    assert client.statuses[0] == 413 and len(agent.outbox) == 0
    for k in range(40):
        agent.handle(_big(3000, 10 + k))
    client.statuses.clear()
    _drain(agent, client, 100)
    db = sqlite3.connect(tmp_path / "a" / "outbox.sqlite")
    assert len(agent.outbox) == 0 and agent.outbox.rejected == 0, db.execute(
        "SELECT reason, detail FROM rejected LIMIT 1").fetchall()
    assert client.statuses.count(200) <= 21, client.statuses  # two a post, was 40
    assert client.statuses.count(413) <= 2, client.statuses  # the probes refused
    object.__setattr__(gw.settings, "max_payload_bytes", 1 << 20)  # the limit is raised
    for k in range(40):
        agent.handle(_big(3000, 50 + k))
    client.statuses.clear()
    _drain(agent, client, 100)
    assert len(agent.outbox) == 0 and agent.outbox.rejected == 0, db.execute(
        "SELECT reason, detail FROM rejected LIMIT 1").fetchall()
    assert len(client.statuses) <= 12 and 413 not in client.statuses, client.statuses
    assert agent.post_budget is None  # the probe was taken: no limit kept any more
    assert len(gw.store.query(gw.device, "bin_0001_" + "x" * 51)) == 83


def test_a_local_alert_on_a_long_metric_name_is_delivered(gw, tmp_path):
    """Check a local alert on a metric whose name is 59-64 characters reaches the gateway
    with the reading that raised it: ``alert:<name>`` passed the gateway's 64 characters,
    so the whole message, the alerting reading with it, was rejected as bad_metric."""
    from edgewise.edge.agent import alert_metric

    name = "bearing_outer_race_vibration_velocity_rms_mm_per_s_sensor_0001"  # 62 characters
    agent = Agent("http://testserver", gw.device, gw.secret, tmp_path / "a")
    for i in range(400):
        agent.handle({name: 1.0 + (i % 5) / 100})
    agent.handle({name: 500.0})  # far off: a local alert
    assert agent.local_alerts >= 1
    _drain(agent, _Counting(gw.client), 20)
    assert len(agent.outbox) == 0 and agent.outbox.rejected == 0
    assert gw.store.query(gw.device, name)[-1][2] == 500.0
    alert = alert_metric(name)
    assert len(alert) == 64 and alert.startswith("alert:bearing_outer")
    assert gw.store.query(gw.device, alert)[-1][2] >= agent.threshold


@pytest.fixture
def gw_wide(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir)


def test_rejections_past_the_hundred_the_gateway_lists_are_counted(gw_wide, tmp_path):
    """Check a post whose 150 messages the gateway all refuses (readings stamped an hour
    ahead of its clock) counts 150 rejected: the answer lists the first 100 and counts the
    rest by reason (rejected_by_reason), which the agent adds (it counted only the listed
    100, so its rejected figure fell short of what the gateway refused)."""
    import time

    agent = Agent("http://testserver", gw_wide.device, gw_wide.secret, tmp_path / "a")
    ahead = time.time_ns() + 3600 * 10**9
    for i in range(150):
        agent.handle({"temp_c": 20.0 + i / 100}, ts_ns=ahead + i * 10**9)
    _drain(agent, gw_wide.client, 10)
    assert len(agent.outbox) == 0
    assert agent.outbox.rejected == 150
    db = sqlite3.connect(tmp_path / "a" / "outbox.sqlite")
    reasons = dict(db.execute("SELECT reason, COUNT(*) FROM rejected GROUP BY reason"))
    unnamed = db.execute("SELECT COUNT(*) FROM rejected WHERE seq IS NULL").fetchone()[0]
    db.close()
    # the table keeps what the gateway listed, each with its message; the rest are counted
    # only (stand-in rows for them pushed real rejections with their bodies out of it)
    assert reasons == {"future_ts": 100} and unnamed == 0, (reasons, unnamed)
