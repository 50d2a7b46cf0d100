"""Session 49's agent hunt, against the real gateway app (in-process, under uvicorn where
the agent's own loop talks to it) and a real SQLite outbox: a gateway whose store is down
(HTTP 503) while the agent keeps its readings."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.edge.agent import Agent
from tests.conftest import tmpfs
from tests.edge.test_agent_hunt_s46 import _events
from tests.server.conftest import Env, build_env, serve_in_thread


@pytest.fixture
def gw(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir)



def _counting(app: Any, posts: list[float]) -> Any:
    """The real app, each ``POST /v1/telemetry`` it is asked noted (its monotonic time)."""
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/telemetry":
            posts.append(time.monotonic())
        await app(scope, receive, send)
    return asgi


def test_a_gateway_whose_store_is_down_is_backed_off_and_said_once(gw, tmp_path, caplog):
    """Check a gateway answering every post 503 (its store is down: "nothing of this
    request was acknowledged") is posted to at growing intervals (1, 2, 4 ... s, at most
    30 s) and the failure is warned about once, not once a second, while the readings stay
    buffered. Old code posted the whole batch again every second (7 posts in 6.5 s) and
    logged a send_failed warning for each: 3,600 warnings an hour of a store outage, from
    every device, and a fleet hammering the recovering gateway in step."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    posts: list[float] = []
    with serve_in_thread(_counting(gw.client.app, posts)) as port:
        agent = Agent(f"http://127.0.0.1:{port}", gw.device, gw.secret, tmp_path / "a")
        for i in range(3):
            agent.handle({"temp_c": 20.0 + i})
        gw.store.close()  # the gateway answers 503 store_error from now on
        sender = threading.Thread(target=agent.sender_loop, daemon=True)
        sender.start()
        time.sleep(6.5)
        agent.stop()
        sender.join(10)
    try:
        assert len(agent.outbox) == 3  # nothing was acknowledged, nothing lost
        gaps = [round(b - a, 1) for a, b in itertools.pairwise(posts)]
        assert 2 <= len(posts) <= 3, f"posted at gaps of {gaps} s"
        assert all(b > a for a, b in itertools.pairwise(gaps)), gaps
        (failed,) = _events(caplog, "send_failed")
        assert failed["status"] == 503 and "store" in failed["detail"].lower()
        assert failed["failures"] == 1 and failed["retry_in_s"] == 1.0
    finally:
        agent.close()


def _csv_rows(csv: Path, n: int) -> None:
    t0 = int(time.time()) - 3600  # an hour ago: times the gateway takes
    csv.write_text("time,temp_c\n" + "".join(f"{t0 + i},{20 + i % 5}.0\n" for i in range(n)))


def test_a_csv_source_is_not_read_past_a_full_outbox(gw, tmp_path, caplog):
    """Check a csv source read while the gateway is away, into an outbox too small for the
    file, leaves the rows that do not fit in the file (its position held at the first of
    them, nothing counted dropped) and the next runs, the gateway back, deliver every row.
    Old code dropped those rows and moved the position past them: 40 of 60 rows, still in
    the file, were lost for good (the next run found nothing left to read)."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    csv, state = tmp_path / "pump.csv", tmp_path / "a"
    _csv_rows(csv, 60)
    small = 2_000  # about 20 one-metric messages
    away = Agent("http://127.0.0.1:9", gw.device, gw.secret, state, max_bytes=small)
    try:
        away.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=0)
        buffered = len(away.outbox)
        assert 10 <= buffered < 60 and away.outbox.dropped == 0
        assert away.outbox.source_pos == buffered + 1  # the first row left in the file
    finally:
        away.close()
    (held,) = _events(caplog, "source_held")
    assert held["row"] == buffered + 1 and held["source"] == f"csv:{csv}"
    with serve_in_thread(gw.client.app) as port:
        for _ in range(8):  # each run reads on from where the last one was held
            agent = Agent(f"http://127.0.0.1:{port}", gw.device, gw.secret, state,
                          max_bytes=small)
            try:
                agent.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=10)
            finally:
                agent.close()
            if gw.store.count_metric(gw.device, "temp_c") >= 60:
                break
    assert gw.store.count_metric(gw.device, "temp_c") == 60
    assert not _events(caplog, "outbox_full")


def test_a_csv_agent_started_on_a_full_disk_holds_the_file_and_sends(gw, tmp_path, caplog):
    """Check an agent started with a csv source on a full disk (a real 3 MB tmpfs, filled
    by another file) reads none of the file, raises nothing, still sends what it had
    buffered, and the next run, room freed, delivers every row of the file. Old code
    raised sqlite3.OperationalError (database or disk is full) out of run() while recording
    the file's position: the command ended in a traceback and the sender, whose acks free
    room, was stopped with it."""
    caplog.set_level(logging.INFO, "edgewise.agent")
    csv = tmp_path / "pump.csv"
    _csv_rows(csv, 300)
    with tmpfs(tmp_path, "3m") as disk, serve_in_thread(gw.client.app) as port:
        state, url = disk / "a", f"http://127.0.0.1:{port}"
        agent = Agent(url, gw.device, gw.secret, state)
        try:
            for i in range(3):  # buffered before the disk filled
                agent.handle({"rpm": 1500.0 + i})
            with pytest.raises(OSError), open(disk / "filler", "wb") as f:  # the disk fills
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            agent.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=10)
            assert agent.outbox.dropped == 0 and len(agent.outbox) == 0
        finally:
            agent.close()
        assert gw.store.count_metric(gw.device, "rpm") == 3  # sent all the same
        assert gw.store.count_metric(gw.device, "temp_c") == 0
        (held,) = _events(caplog, "source_held")
        assert held["row"] is None and "disk is full" in held["detail"]
        os.remove(disk / "filler")
        again = Agent(url, gw.device, gw.secret, state)
        try:
            again.run(f"csv:{csv}", rate_hz=0, flush_timeout_s=10)
            assert again.outbox.dropped == 0
        finally:
            again.close()
    assert gw.store.count_metric(gw.device, "temp_c") == 300
