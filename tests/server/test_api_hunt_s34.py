"""Server-API hunt, session 34: a NUL in a device id or metric is an unknown one (404),
never PostgreSQL's 503; the diversity label queue on a history with huge readings; two
admins registering one name at once; the RUL route's reads and concurrent requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgewise.telemetry import Reading
from tests.server.conftest import Env, problem

T0 = 1769860800 * 10**9



@pytest.mark.parametrize(("method", "path", "role", "reason"), [
    ("GET", "/v1/devices/pump%001/readings", "viewer", "unknown_device"),
    ("GET", "/v1/devices/pump%001/rul", "viewer", "unknown_device"),
    ("GET", "/v1/devices/pump%001/quality", "viewer", "unknown_device"),
    ("GET", "/v1/devices/pump%001/forecast?metric=t", "viewer", "unknown_device"),
    ("DELETE", "/v1/devices/pump%001", "admin", "unknown_device"),
    ("GET", "/v1/devices/pump-1/quality/plots/a%00b.png", "viewer", "no_plot"),
])
def test_a_nul_in_a_device_id_or_metric_is_a_404_not_the_stores_503(
        any_env: Env, method: str, path: str, role: str, reason: str) -> None:
    any_env.store.append([Reading("pump-1", "t", T0 + i * 10**9, float(i)) for i in range(5)])
    body = problem(any_env.client.request(method, path, headers=any_env.auth(role)), 404)
    assert body["reason"] == reason, body
    assert "postgresql" not in body["detail"].lower()  # the database is never named


def test_storable_is_the_one_helper_of_alerts_and_devices() -> None:
    from edgewise.server.problems import storable

    assert storable("pump-1") and storable("température")
    assert not storable("a\x00b") and not storable("\ud800")


# the window features themselves overflow to inf (with numpy's warning, label/windows.py)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("big", [1e154, 1e200, 1e300])
def test_diversity_queue_of_a_history_with_a_huge_reading_answers(env: Env, big: float) -> None:
    env.store.append([Reading("spike", "a", T0 + i * 10**9, big if i == 100 else float(i % 3))
                      for i in range(300)])
    r = env.client.get("/v1/label-queue", params={"device": "spike", "k": 5,
                                                  "strategy": "diversity"},
                       headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    assert len(r.json()["items"]) == 5


def test_diversity_features_stay_finite_and_normal_ones_unchanged() -> None:
    from edgewise.label.strategies import Diversity, Pool, _standardised

    rng = np.random.default_rng(0)
    F = rng.normal(size=(40, 3))
    sd = F.std(axis=0)
    assert np.array_equal(_standardised(F), (F - F.mean(axis=0)) / sd)  # as before, exactly
    huge = F.copy()
    huge[5, 1] = np.inf
    huge[6, 2] = 1e300
    huge[7, 0] = np.nan
    assert np.isfinite(_standardised(huge)).all()
    prio = Diversity(n_clusters=4, seed=0).priority(Pool(margin=np.zeros(40), features=huge))
    assert np.isfinite(prio).all()


def test_an_unexpected_value_error_is_not_called_no_history(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgewise.label.workflow as workflow

    def broken(*a: Any, **kw: Any) -> Any:
        raise ValueError("Input X contains NaN.")

    env.store.append([Reading("p2", "a", T0 + i * 10**9, float(i % 3)) for i in range(50)])
    monkeypatch.setattr(workflow, "suggest", broken)
    from fastapi.testclient import TestClient

    client = TestClient(env.client.app, raise_server_exceptions=False)  # the 500 as sent
    r = client.get("/v1/label-queue", params={"device": "p2", "strategy": "diversity"},
                   headers=env.auth("viewer"))
    assert r.status_code == 500, r.text
    assert r.json()["reason"] == "internal"
    # a device without readings is still the 404
    body = problem(env.client.get("/v1/label-queue", params={"device": "none-such"},
                                  headers=env.auth("viewer")), 404)
    assert body["reason"] == "no_history"


def test_the_loser_of_two_admins_registering_one_name_gets_409_exists(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    real = env.security.add_device

    def other_admin_first(name: str, **kw: Any) -> Any:
        real(name, **kw)  # another admin's request registered it after our check
        return real(name, **kw)

    monkeypatch.setattr(env.security, "add_device", other_admin_first)
    body = problem(env.client.post("/v1/devices", json={"name": "pump-9"},
                                   headers=env.auth("admin")), 409)
    assert body["reason"] == "exists" and body["field"] == "name", body
    monkeypatch.undo()
    body = problem(env.client.post("/v1/devices", json={"name": "bad name!"},
                                   headers=env.auth("admin")), 422)  # still its own 422
    assert body["field"] == "name"


def test_concurrent_rul_requests_of_one_device_score_it_once(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import edgewise.server.routes.rul as rul

    model = env.settings.data_dir / "rul-v1.ewm"  # never loaded: _score is the stand-in
    model.write_bytes(b"not scored here")
    monkeypatch.setattr(rul, "model_files", lambda data_dir: [model])
    rul.forget_device(env.device)
    calls: list[float] = []

    def slow_score(store: Any, paths: Any, device_id: str) -> dict[str, Any]:
        calls.append(time.monotonic())
        time.sleep(0.6)  # an uncached RUL of a long history: longer than the requests' gap
        return rul._none(device_id, "no_history", "counted", paths[0].name)

    monkeypatch.setattr(rul, "_score", slow_score)
    answers: list[int] = []

    def ask() -> None:
        r = env.client.get(f"/v1/devices/{env.device}/rul", headers=env.auth("viewer"))
        answers.append(r.status_code)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join()
    assert answers == [200] * 4
    assert len(calls) == 1, f"scored {len(calls)} times for 4 concurrent requests"


def test_the_dashboard_starts_no_second_rul_request_while_one_is_in_flight() -> None:
    import edgewise.server

    js = (Path(edgewise.server.__file__).parent / "web" / "app.js").read_text()
    body = js[js.index("async function fillRul(box, id)"):]
    body = body[:body.index("\n}\n")]
    assert "rulInFlight.has(id)" in body and "rulInFlight.delete(id)" in body
