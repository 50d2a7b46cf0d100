"""GET /v1/label-queue: bugs a report-only hunt of the label queue page proved.

* ``start_ns``/``end_ns`` are JSON numbers: above 2**53 a browser's JSON.parse rounds them,
  and the page stored a label 128 ns off that covered a reading of the next window. The
  queue now also gives them as exact text (``start_ns_text``/``end_ns_text``).
* The context around a window came from the queue's forward-filled history: a sensor that
  stopped was drawn as a flat line of readings it never sent (0 real readings, 140 values).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.server.conftest import Env, build_env

S = 10**9
N = 600
DEAD_AT = 300  # temp's last reading is reading DEAD_AT - 1


def send_queue_history(env: Env) -> list[int]:
    """600 readings of pump-1 at odd nanosecond times (no double holds one), ``flow`` with
    a spike at 450..459, ``temp`` only for the first 300; their times."""
    t0 = (time.time_ns() - 2 * N * S) | 1
    ts = [t0 + i * 1_000_123_458 for i in range(N)]  # odd + even: every time odd
    batch = [{"ts": t, "seq": i + 1,
              "metrics": {"flow": 10 + math.sin(i / 9) + (8 if 450 <= i < 460 else 0),
                          **({"temp": 40.0 + i % 7} if i < DEAD_AT else {})}}
             for i, t in enumerate(ts)]
    assert env.send(batch).json()["accepted"] == N + DEAD_AT
    return ts


@pytest.fixture
def qenv(data_dir: Path) -> Iterator[tuple[Env, list[int]]]:
    gen = build_env(data_dir)
    env = next(gen)
    ts = send_queue_history(env)
    yield env, ts
    gen.close()


def _queue(env: Env, k: int = 10) -> list[dict]:
    r = env.client.get("/v1/label-queue", params={"device": "pump-1", "k": k},
                       headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_label_queue_gives_each_window_exactly_as_text(qenv) -> None:
    """Check each item carries start_ns_text/end_ns_text, the exact decimal text of
    start_ns/end_ns (which a double rounds here), and that POST /v1/labels stores exactly
    that window from them, as 'start'/'end' and as start_ns/end_ns."""
    env, ts = qenv
    items = _queue(env)
    assert items
    for it in items:
        assert it["start_ns_text"] == str(it["start_ns"])
        assert it["end_ns_text"] == str(it["end_ns"])
        assert it["start_ns"] in ts  # a reading's time: odd, so no double holds it
        assert int(float(it["start_ns"])) != it["start_ns"]
    first, second = items[0], items[1]
    for item, body in ((first, {"start": first["start_ns_text"], "end": first["end_ns_text"]}),
                       (second, {"start_ns": int(second["start_ns_text"]),
                                 "end_ns": int(second["end_ns_text"])})):
        r = env.client.post("/v1/labels", headers=env.auth("operator"),
                            json={"device_id": "pump-1", "label": "normal", **body})
        assert r.status_code == 201, r.text
        assert (r.json()["start_ns"], r.json()["end_ns"]) == (item["start_ns"], item["end_ns"])


def test_label_queue_documents_the_text_times() -> None:
    """Check the route's OpenAPI description names the new fields."""
    from edgewise.server.routes.labels import label_queue

    assert "start_ns_text" in (label_queue.__doc__ or "")
    assert "end_ns_text" in (label_queue.__doc__ or "")


def test_label_queue_context_has_no_readings_a_stopped_sensor_never_sent(qenv) -> None:
    """Check the context drawn around each window holds a metric's value only where it has
    a stored reading: temp, silent after reading 300, was drawn from the forward-filled
    history as a flat line of its last value over windows where it sent nothing."""
    env, ts = qenv
    temp_last = ts[DEAD_AT - 1]
    items = _queue(env, k=20)
    after = 0
    for it in items:
        shown = it["context"]["ts_ns"]
        temp = it["context"]["values"]["temp"]
        flow = it["context"]["values"]["flow"]
        assert len(temp) == len(flow) == len(shown)
        assert all(v is not None for v in flow)  # flow reports at every time
        if shown[0] > temp_last:
            after += 1
            assert temp == [None] * len(shown), it["start"]
        for i, v in enumerate(temp):
            upto = shown[i + 1] if i + 1 < len(shown) else shown[-1] + 1
            real = [r[2] for r in env.store.query("pump-1", "temp", shown[i], upto)]
            if real:
                assert v == pytest.approx(np.mean(real), abs=1e-6)
            else:
                assert v is None, (it["start"], i, v)
    assert after >= 1, "no window's context lies after temp stopped: the check ran on none"
