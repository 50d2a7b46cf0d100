"""A forecast fit running when its device is deleted keeps nothing for the id.

The route checked only that the device was known again before caching: with the id
registered again before the fit ended, the deleted device's forecast (its 240 readings'
history) was cached under the new device and served to it as fresh, since the new
device's readings were older than the cached grid's last step.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from edgewise.server.routes import forecast as route
from tests.server.conftest import Env, problem
from tests.server.test_forecast_route import DAYS, HOUR, _get, _send_hourly


def test_a_fit_of_a_device_deleted_and_added_again_meanwhile_is_not_kept(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the reported case: a fit of pump-1's 240 readings is held while pump-1 is
    deleted, registered again and sends 2 readings (older than the old last one); once the
    fit ends, nothing is cached, and the new device's forecast is its own (422: too little
    history), never the old device's."""
    end = _send_hourly(env, "load_kw", DAYS)
    started, go = threading.Event(), threading.Event()
    real_fit = route._fit

    def held_fit(*args: Any) -> Any:
        started.set()
        assert go.wait(30), "the test never released the fit"
        return real_fit(*args)

    monkeypatch.setattr(route, "_fit", held_fit)
    answers: list[Any] = []
    racing = threading.Thread(target=lambda: answers.append(
        _get(env, metric="load_kw", horizon=6)), daemon=True)
    racing.start()
    try:
        assert started.wait(30), "the forecast request never reached its fit"
        r = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        _, secret = env.security.add_device(env.device)
        r = env.send([{"ts": end - (DAYS + 2) * 24 * HOUR + i * HOUR, "seq": i + 1,
                       "metrics": {"load_kw": 1.0 + i}} for i in range(2)], secret=secret)
        assert r.status_code == 200 and r.json()["accepted"] == 2, r.text
    finally:
        go.set()
        racing.join(60)
    assert answers and answers[0].status_code == 200, answers
    cache = route.cache_of(env.client.app)
    assert cache.keys() == [], cache.keys()
    again = _get(env, metric="load_kw", horizon=6)
    assert problem(again, 422)["reason"] == "too_little_history", again.text
    assert cache.keys() == []


def test_a_fit_with_no_deletion_meanwhile_is_still_kept(env: Env) -> None:
    """Check the generation taken before the fit does not stop an ordinary fit from being
    cached: the second request is answered from the cache."""
    _send_hourly(env, "load_kw", DAYS)
    assert _get(env, metric="load_kw", horizon=6).json()["cached"] is False
    assert _get(env, metric="load_kw", horizon=6).json()["cached"] is True
