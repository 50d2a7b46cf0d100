"""The alert a manager holds (and ``observe`` returns) says what was written to it since:
acknowledged, labelled, by whom and with which note, whether by the manager itself or by
the HTTP API beside it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.alerts import AlertManager
from edgewise.store import open_store
from edgewise.store.base import Store
from tests.server.conftest import Env, build_env

S = 10**9
T = 10**18


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("duckdb://:memory:")
    yield s
    s.close()


def _said(alert: object) -> tuple[object, ...]:
    return tuple(getattr(alert, k) for k in ("status", "label", "acked_by", "labelled_by", "note"))


def test_observe_returns_the_label_the_manager_wrote(store: Store) -> None:
    am = AlertManager(store, write_every_s=0.0)
    a = am.observe("pump-1", T, 0.97, {"temp": 1.0})
    assert a is not None
    am.label(a.id, "false_alarm", by="ops", note="cleaning")
    b = am.observe("pump-1", T + S, 0.98, {"temp": 1.0})
    assert b is not None and b.id == a.id
    assert _said(b) == _said(store.get_alert(a.id)) == (
        "acknowledged", "false_alarm", "ops", "ops", "cleaning")


def test_observe_returns_the_acknowledgement_the_manager_wrote(store: Store) -> None:
    am = AlertManager(store, write_every_s=0.0)
    a = am.observe("pump-1", T, 0.97, {"temp": 1.0})
    assert a is not None
    am.acknowledge(a.id, by="ops")
    b = am.observe("pump-1", T + S, 0.98, {"temp": 1.0})
    assert b is not None and b.id == a.id
    assert _said(b) == _said(store.get_alert(a.id)) == ("acknowledged", None, "ops", None, None)


def test_observe_returns_what_the_api_wrote(data_dir: Path) -> None:
    gen = build_env(data_dir)
    env: Env = next(gen)
    try:
        am, t = env.pipeline.alerts, time.time_ns() - 600 * S
        a = am.observe(env.device, t, 0.97, {"temp_c": 1.0})
        assert a is not None
        r = env.client.post(f"/v1/alerts/{a.id}/ack", headers=env.auth("operator"))
        assert r.status_code == 200, r.text
        b = am.observe(env.device, t + S, 0.98, {"temp_c": 1.0})
        assert b is not None and (b.id, b.status, b.acked_by) == (a.id, "acknowledged",
                                                                   "test-operator")
        r = env.client.post(f"/v1/alerts/{a.id}/label", headers=env.auth("operator"),
                            json={"label": "true_alarm", "note": "bearing"})
        assert r.status_code == 200, r.text
        c = am.observe(env.device, t + 2 * S, 0.98, {"temp_c": 1.0})
        assert c is not None and _said(c) == _said(env.store.get_alert(a.id)) == (
            "acknowledged", "true_alarm", "test-operator", "test-operator", "bearing")
    finally:
        gen.close()
