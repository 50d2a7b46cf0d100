"""Requests to the fitting routes wait for a thread in the event loop, not in the threadpool:
a crowd of them cannot hold up the other routes (telemetry) until they give up."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import edgewise.server.routes.rul as rul
from edgewise.server.fitting import THREAD_SPARE
from tests.server.conftest import Env, build_env, serve_in_thread


@pytest.fixture
def served(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Env, str]]:
    gen = build_env(data_dir)
    env = next(gen)
    with serve_in_thread(env.client.app) as port:
        yield env, f"http://127.0.0.1:{port}"
    gen.close()
    rul._answers.drop(lambda key: True)


def test_a_crowd_of_rul_requests_leaves_the_threadpool_to_telemetry(
        served: tuple[Env, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that while one device's RUL takes long and 60 more requests for it wait, at most
    ``MAX_FITS + THREAD_SPARE`` hold a thread, so a telemetry POST answers at once (before:
    each waiter held one of the threadpool's 40 threads for FIT_WAIT_S, and the POST waited
    for them to give up); the waiters are then each a 429 ``rul_busy`` and the first
    request gets its answer."""
    env, base = served
    model = tmp_path / "rul-v1.ewm"
    model.write_bytes(b"never loaded: _score is the stand-in")
    monkeypatch.setattr(rul, "model_files", lambda data_dir: [model])
    monkeypatch.setattr(rul, "FIT_WAIT_S", 4.0)
    release, started = threading.Event(), threading.Event()
    in_threads = [0, 0]  # now, most
    lock = threading.Lock()

    def slow(store: Any, paths: Any, device_id: str) -> dict[str, Any]:
        started.set()
        release.wait(30)
        return rul._none(device_id, "no_history", "slow", paths[0].name)

    real_predict = rul._predict

    def counted(*args: Any) -> dict[str, Any]:
        with lock:
            in_threads[0] += 1
            in_threads[1] = max(in_threads)
        try:
            return real_predict(*args)
        finally:
            with lock:
                in_threads[0] -= 1

    monkeypatch.setattr(rul, "_score", slow)
    monkeypatch.setattr(rul, "_predict", counted)
    auth = env.auth("viewer")
    answers: list[tuple[int, str | None, float]] = []

    def ask() -> None:
        t0 = time.monotonic()
        r = httpx.get(f"{base}/v1/devices/{env.device}/rul", headers=auth, timeout=60)
        answers.append((r.status_code, r.json().get("reason"), time.monotonic() - t0))

    first = threading.Thread(target=ask)
    first.start()
    assert started.wait(10)
    crowd = [threading.Thread(target=ask) for _ in range(60)]
    for t in crowd:
        t.start()
    time.sleep(1.0)  # all 60 are waiting
    t0 = time.monotonic()
    post = httpx.post(f"{base}/v1/telemetry", content=json.dumps(
        {"ts": time.time(), "seq": 1, "metrics": {"temp_c": 40.0}}).encode(),
        headers={**env.device_headers(None, None), "Content-Type": "application/json"},
        timeout=60)
    posted_in = time.monotonic() - t0
    for t in crowd:
        t.join(30)
    release.set()
    first.join(30)
    assert post.status_code == 200, post.text
    assert posted_in < 2.0, f"the telemetry POST waited {posted_in:.1f} s for a thread"
    assert in_threads[1] <= rul.MAX_FITS + THREAD_SPARE, in_threads
    assert len(answers) == 61
    busy = [a for a in answers if a[0] == 429]
    assert len(busy) == 60 and {a[1] for a in busy} == {"rul_busy"}, answers[:5]
    assert [a[:2] for a in answers if a[0] == 200] == [(200, "no_history")]
