"""GET /v1/devices/{id}/rul: its answer cache (a FitCache, reused ``TTL_S`` seconds) and why
it scores a device's whole stored history, not its newest rows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import edgewise.server.routes.rul as rul
from edgewise.server.fitting import FitCache
from tests.server.conftest import Env
from tests.server.test_rul_api import SENSORS, _trained, _unit


@pytest.fixture
def scored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Stand-ins for the model files and ``_score`` (each call counted by device), and the
    cache left without the ``lru-*`` answers made here."""
    model = tmp_path / "rul-v1.ewm"
    model.write_bytes(b"never loaded: _score is the stand-in")
    monkeypatch.setattr(rul, "model_files", lambda data_dir: [model])
    calls: list[str] = []

    def score(store: Any, paths: Any, device_id: str) -> dict[str, Any]:
        calls.append(device_id)
        return rul._none(device_id, "no_history", "counted", paths[0].name)

    monkeypatch.setattr(rul, "_score", score)
    yield calls
    rul._answers.drop(lambda key: key[0].startswith("lru-"))


def test_rul_answers_are_a_fit_cache_that_drops_the_least_recent(
        scored: list[str], tmp_path: Path) -> None:
    """Check that the route's answers live in a FitCache of ``MAX_ANSWERS``: past the bound
    the least recently asked answer goes, not every answer (the route's own dict was
    cleared whole at 10,001 answers, so a fleet that large rescored every device, long
    histories read whole, on the next poll)."""
    assert isinstance(rul._answers, FitCache)
    n = rul.MAX_ANSWERS + 2
    for i in range(n):
        rul._predict(None, tmp_path, f"lru-{i}")
    assert len(scored) == n
    rul._predict(None, tmp_path, f"lru-{n - 2}")  # asked a moment ago: still cached
    assert len(scored) == n, "a recent answer was dropped with the rest"
    rul._predict(None, tmp_path, "lru-0")  # the least recently asked: dropped
    assert scored[-1] == "lru-0" and len(scored) == n + 1


def test_rul_answer_is_reused_for_ttl_seconds(
        scored: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that an answer is reused while younger than ``TTL_S`` and scored again after."""
    now = [1000.0]
    monkeypatch.setattr(rul.time, "monotonic", lambda: now[0])
    first = rul._predict(None, tmp_path, "lru-ttl")
    now[0] += rul.TTL_S - 0.5
    assert rul._predict(None, tmp_path, "lru-ttl") is first and scored == ["lru-ttl"]
    now[0] += 1.0
    rul._predict(None, tmp_path, "lru-ttl")
    assert scored == ["lru-ttl", "lru-ttl"]


def test_an_answer_scored_while_its_device_is_deleted_is_not_kept(
        scored: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that an answer computed while ``forget_device`` ran (DELETE of the device: its
    readings being purged) is answered once but not cached, and that ``forget_device``
    counts the answers it dropped."""
    def deleted_meanwhile(store: Any, paths: Any, device_id: str) -> dict[str, Any]:
        scored.append(device_id)
        rul.forget_device(device_id)
        return rul._none(device_id, "no_history", "counted", paths[0].name)

    monkeypatch.setattr(rul, "_score", deleted_meanwhile)
    rul._predict(None, tmp_path, "lru-del")
    rul._predict(None, tmp_path, "lru-del")
    assert scored == ["lru-del", "lru-del"]
    monkeypatch.setattr(rul, "_score", lambda store, paths, device_id: {"rul": 1.0})
    rul._predict(None, tmp_path, "lru-del")
    assert rul.forget_device("lru-del") == 1 and rul.forget_device("lru-del") == 0


def test_rul_of_a_long_history_rests_on_all_of_it(any_env: Env) -> None:
    """Check that the route's answer on a history many windows long is the model's own on
    the whole table, and that the newest rows alone would not give it: the model's
    features at the last row include the whole-history slope and the unit's age (its row
    count), and it refuses a history missing its first rows, so the route cannot read only
    the newest ``window`` rows (a guard against that shortcut)."""
    env = any_env
    model = _trained(np.random.default_rng(0), 12, window=10, n_estimators=40,
                     learning_rate=0.1, cap=60.0, random_state=0)
    (env.settings.data_dir / "models").mkdir(exist_ok=True)
    model.save(env.settings.data_dir / "models" / "rul-v1.ewm")
    n = 400  # 40 windows
    x = np.vstack([_unit(np.random.default_rng(1), 300)[:100]] * 4)
    t0 = int(time.time()) - n
    for s in range(0, n, 200):
        assert env.send([{"ts": t0 + i, "seq": i + 1,
                          "metrics": {m: float(x[i, j]) for j, m in enumerate(SENSORS)}}
                         for i in range(s, s + 200)]).status_code == 200
    body = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer")).json()
    whole = pd.DataFrame({"unit": env.device, "cycle": np.arange(1, n + 1),
                          **{m: x[:, j] for j, m in enumerate(SENSORS)}})
    point, low, high = model.predict_interval(whole)
    assert (body["rul"], body["low"], body["high"], body["rows"], body["step_s"]) == (
        round(float(point[0]), 2), round(float(low[0]), 2), round(float(high[0]), 2), n, 1.0)

    newest = whole.iloc[-model.window:]
    assert "starts at cycle" in model.unscorable(newest)[env.device]
    renumbered = newest.assign(cycle=np.arange(1, model.window + 1))
    cut, full = model.features(renumbered).iloc[0], model.features(whole).iloc[0]
    assert full["age"] == n and cut["age"] == model.window
    assert any(cut[f"{m}_hslope"] != full[f"{m}_hslope"] for m in SENSORS)


def test_rul_scores_at_most_max_fits_devices_at_once(
        scored: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that a device asked while ``MAX_FITS`` others are being scored waits for a slot
    and, finding none within ``FIT_WAIT_S``, is a 429 ``rul_busy`` with Retry-After: each
    scoring reads a whole history (seconds for a long one), and requests for many devices at
    once took every threadpool thread from the other routes."""
    import threading

    from edgewise.server.problems import Problem

    release = threading.Event()
    started = threading.Semaphore(0)

    def slow(store: Any, paths: Any, device_id: str) -> dict[str, Any]:
        started.release()
        release.wait(10)
        return rul._none(device_id, "no_history", "slow", paths[0].name)

    monkeypatch.setattr(rul, "_score", slow)
    monkeypatch.setattr(rul, "FIT_WAIT_S", 0.2)
    threads = [threading.Thread(target=rul._predict, args=(None, tmp_path, f"lru-busy{i}"))
               for i in range(rul.MAX_FITS)]
    for t in threads:
        t.start()
    for _ in threads:
        assert started.acquire(timeout=5)
    try:
        with pytest.raises(Problem) as caught:
            rul._predict(None, tmp_path, "lru-busy-late")
        assert caught.value.status == 429 and caught.value.reason == "rul_busy"
        assert caught.value.headers["Retry-After"] == "5"
    finally:
        release.set()
        for t in threads:
            t.join(5)
    assert rul._predict(None, tmp_path, "lru-busy-late")["detail"] == "slow"


def test_requests_for_a_device_being_scored_each_wait_fit_wait_s_at_most(
        scored: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that requests for a device whose scoring takes long are each a 429 ``rul_busy``
    after about ``FIT_WAIT_S``, together, not one after another: the wait for the device's
    turn had no limit (45 such requests held the threadpool and a telemetry POST took
    23.7 s), and behind busy slots each waiter's FIT_WAIT_S came after the previous ones'
    (2.5, 4.5 ... 12.5 s with FIT_WAIT_S = 2)."""
    import threading

    from edgewise.server.problems import Problem

    release, started = threading.Event(), threading.Event()

    def slow(store: Any, paths: Any, device_id: str) -> dict[str, Any]:
        started.set()
        release.wait(20)
        return rul._none(device_id, "no_history", "slow", paths[0].name)

    monkeypatch.setattr(rul, "_score", slow)
    monkeypatch.setattr(rul, "FIT_WAIT_S", 0.5)
    first = threading.Thread(target=rul._predict, args=(None, tmp_path, "lru-long"))
    first.start()
    assert started.wait(5)
    waited: list[tuple[str | None, float]] = []

    def ask() -> None:
        t0 = time.monotonic()
        try:
            rul._predict(None, tmp_path, "lru-long")
            waited.append((None, time.monotonic() - t0))
        except Problem as exc:
            waited.append((exc.reason, time.monotonic() - t0))

    askers = [threading.Thread(target=ask) for _ in range(6)]
    try:
        for t in askers:
            t.start()
        for t in askers:
            t.join(3.0)  # the old code waits for the scoring (20 s) and then queues
        assert len(waited) == 6, waited
        assert all(reason == "rul_busy" for reason, _ in waited), waited
        assert max(s for _, s in waited) < 2.0, waited  # one FIT_WAIT_S each, not six
    finally:
        release.set()
        first.join(5)
        for t in askers:
            t.join(25)


def test_each_same_device_request_waits_fit_wait_s_in_all_behind_busy_slots(
        scored: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that with every scoring slot taken by other devices, requests for one device
    are each a 429 within one ``FIT_WAIT_S`` (the wait for the device's turn and for a slot
    end at one deadline): they were answered one after another, the k-th after k waits."""
    import threading

    from edgewise.server.problems import Problem

    monkeypatch.setattr(rul, "FIT_WAIT_S", 0.5)
    for _ in range(rul.MAX_FITS):  # as if MAX_FITS other devices were being scored
        assert rul._answers.fits.acquire(timeout=1)
    waited: list[tuple[str | None, float]] = []

    def ask() -> None:
        t0 = time.monotonic()
        try:
            rul._predict(None, tmp_path, "lru-chain")
            waited.append((None, time.monotonic() - t0))
        except Problem as exc:
            waited.append((exc.reason, time.monotonic() - t0))

    askers = [threading.Thread(target=ask) for _ in range(5)]
    try:
        for t in askers:
            t.start()
        for t in askers:
            t.join(10)
    finally:
        for _ in range(rul.MAX_FITS):
            rul._answers.fits.release()
    assert [r for r, _ in waited] == ["rul_busy"] * 5, waited
    assert max(s for _, s in waited) < 1.5, waited  # was 0.5, 1.0 ... 2.5 s
    assert rul._predict(None, tmp_path, "lru-chain")["detail"] == "counted"


def test_a_history_over_max_rows_is_history_too_long_and_reads_only_the_models_metrics(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check that the route reads only the metrics the model uses, at most ``MAX_ROWS + 1``
    readings of each (it read the whole history of every metric as tuples: 3M readings took
    10 s and 1.5 GB per request), and that a history longer than ``MAX_ROWS`` rows is
    ``rul: null``, reason ``history_too_long``, naming the count and the limit: when one
    metric alone has more readings, and when the metrics' reading times together make more
    rows."""
    from tests.server.test_rul_api import _small_model

    _small_model(env)
    monkeypatch.setattr(rul, "MAX_ROWS", 30, raising=False)  # old code: none
    x = _unit(np.random.default_rng(1), 120)
    t0 = int(time.time()) - 100
    assert env.send([{"ts": t0 + i, "seq": i + 1,
                      "metrics": {**{m: float(x[i, j]) for j, m in enumerate(SENSORS)},
                                  "rssi": -60.0}} for i in range(40)]).status_code == 200
    asked: list[tuple[Any, ...]] = []
    real = env.store.query

    def query(*args: Any, **kwargs: Any) -> Any:
        asked.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(env.store, "query", query)
    body = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer")).json()
    assert (body["rul"], body["reason"]) == (None, "history_too_long"), body
    assert "over 30 rows" in body["detail"] and "limit of 30 rows" in body["detail"], body
    assert asked and {a[0] for a in asked} <= set(SENSORS), asked  # never rssi, never all
    assert all(a[4] == 31 for a in asked), asked

    sec = env.client.post("/v1/devices", json={"name": "pump-alt"},
                          headers=env.auth("admin")).json()["secret"]
    # 20 readings of each metric, the three at different instants: 60 rows
    assert env.send([{"ts": t0 + i + k / 4, "seq": 3 * i + k + 1,
                      "metrics": {SENSORS[k]: float(x[i, k])}}
                     for i in range(20) for k in range(3)],
                    device="pump-alt", secret=sec).status_code == 200
    body = env.client.get("/v1/devices/pump-alt/rul", headers=env.auth("viewer")).json()
    assert (body["rul"], body["reason"]) == (None, "history_too_long"), body
    assert "a history of 60 rows" in body["detail"] and "limit of 30" in body["detail"]
    monkeypatch.setattr(rul, "MAX_ROWS", 60)
    rul.forget_device("pump-alt")
    body = env.client.get("/v1/devices/pump-alt/rul", headers=env.auth("viewer")).json()
    assert body["reason"] is None and body["rows"] == 60, body
    op = env.client.get("/openapi.json").json()["paths"]["/v1/devices/{device_id}/rul"]["get"]
    assert "history_too_long" in op["description"]
