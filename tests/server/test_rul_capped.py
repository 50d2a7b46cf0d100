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
