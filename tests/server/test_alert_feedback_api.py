"""A verdict given over HTTP reaches the running gateway's alert manager at once (with
EDGEWISE_ALERT_FEEDBACK on): a false alarm holds back the next alert like it, counted in
/metrics; a true alarm lets it through again; deleting the device forgets its bars."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import Env, build_env

S = 10**9


@pytest.fixture
def fb_env(data_dir: Path) -> Iterator[Env]:
    yield from build_env(data_dir, alert_feedback=True)


def suppressed(env: Env) -> float:
    text = env.client.get("/metrics", headers=env.auth("viewer")).text
    (line,) = [ln for ln in text.splitlines()
               if ln.startswith("edgewise_alerts_suppressed_total")]
    return float(line.split()[-1])


def test_the_label_route_changes_the_live_alerting(fb_env: Env) -> None:
    env, am = fb_env, fb_env.pipeline.alerts
    assert am.feedback
    t = time.time_ns() - 3600 * S
    first = am.observe(env.device, t, 0.95, {"temp_c": 1.0})
    assert first is not None
    r = env.client.post(f"/v1/alerts/{first.id}/label", headers=env.auth("operator"),
                        json={"label": "false_alarm", "note": "setpoint change"})
    assert r.status_code == 200, r.text
    assert am.bar(env.device, "temp_c", t + 600 * S) == pytest.approx(0.96, abs=1e-3)
    assert am.observe(env.device, t + 600 * S, 0.95, {"temp_c": 1.0}) is None
    assert suppressed(env) == 1
    assert len(env.store.list_alerts(env.device, kind="anomaly")) == 1

    r = env.client.post(f"/v1/alerts/{first.id}/label", headers=env.auth("operator"),
                        json={"label": "true_alarm"})
    assert r.status_code == 200, r.text
    assert am.bar(env.device, "temp_c", t + 1200 * S) is None
    assert am.observe(env.device, t + 1200 * S, 0.95, {"temp_c": 1.0}) is not None

    r = env.client.post(f"/v1/alerts/{first.id}/label", headers=env.auth("operator"),
                        json={"label": "false_alarm"})
    assert r.status_code == 200 and am.bar(env.device, "temp_c", t + 1800 * S) is not None
    r = env.client.delete(f"/v1/devices/{env.device}", headers=env.auth("admin"))
    assert r.status_code == 200, r.text
    assert am.bar(env.device, "temp_c", t + 1800 * S) is None


def test_feedback_is_off_unless_set(env: Env) -> None:
    am = env.pipeline.alerts
    assert not am.feedback
    t = time.time_ns() - 3600 * S
    first = am.observe(env.device, t, 0.95, {"temp_c": 1.0})
    assert first is not None
    r = env.client.post(f"/v1/alerts/{first.id}/label", headers=env.auth("operator"),
                        json={"label": "false_alarm"})
    assert r.status_code == 200
    assert am.observe(env.device, t + 600 * S, 0.95, {"temp_c": 1.0}) is not None
