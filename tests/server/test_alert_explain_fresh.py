"""An alert's explanation keeps its slow sensors and follows readings that arrive late.

A bug hunt found (1) a metric reported every 2 h left out as having "no history before the
alert" (only the hour before was read, and a longer one only when the hour was too little),
and (2) the explanation cached per span for ever: a reading arriving later inside the span
never changed it (T² 595 shown, 33 854 recomputed), and a failure stayed cached too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgewise.explain.alerts import alert_explanation
from edgewise.store.base import Alert
from edgewise.telemetry import Reading
from tests.server.conftest import Env

S = 10**9
T0 = 1_700_000_000 * S


def _explain(env: Env, alert: Alert) -> dict[str, Any]:
    r = env.client.get(f"/v1/alerts/{alert.id}", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _flow_pressure(env: Env, seconds: int, every_s: int = 1, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(0, seconds, every_s):
        f = rng.normal(10, 1)
        rows += [Reading(env.device, "flow", T0 + i * S, f),
                 Reading(env.device, "pressure", T0 + i * S, 2 * f + rng.normal(0, 0.2))]
    env.store.append(rows)


def test_a_slow_metric_with_history_is_not_left_out(env: Env) -> None:
    """Check a metric read every 2 h (none in the hour before the alert) is compared with
    its readings before that, and its drop in the alert counts in the T²."""
    _flow_pressure(env, 4 * 3600, every_s=10)
    start = T0 + 4 * 3600 * S
    env.store.append([Reading(env.device, "oil", T0 + k * 7200 * S, 50.0 + k) for k in range(2)]
                     + [Reading(env.device, "flow", start, 10.0),
                        Reading(env.device, "pressure", start, 20.0),
                        Reading(env.device, "oil", start, 20.0)])  # the oil level collapses
    a = env.store.add_alert(Alert(env.device, start, start, 0.99, drivers={"oil": 1.0}))
    body = _explain(env, a)
    ex = body["explanation"]
    assert ex["left_out"] == [] and body["explanation_detail"] is None, body
    assert set(ex["contributions"]) == {"flow", "oil", "pressure"}
    assert ex["top"][0]["name"] == "oil", ex["top"]


def test_a_metric_left_out_is_said_truly(env: Env) -> None:
    """Check a metric with no reading in the week before the alert is left out, and the
    detail says so in those words (not 'no history', which it may have, older)."""
    _flow_pressure(env, 600)
    start = T0 + 600 * S
    env.store.append([Reading(env.device, "oil", T0 - 8 * 24 * 3600 * S, 50.0),
                      Reading(env.device, "flow", start, 12.0),
                      Reading(env.device, "pressure", start, 16.0),
                      Reading(env.device, "oil", start, 20.0)])
    a = env.store.add_alert(Alert(env.device, start, start, 0.99))
    body = _explain(env, a)
    assert body["explanation"]["left_out"] == ["oil"], body
    assert body["explanation_detail"] == (
        "oil has no reading in the week before the alert; left out.")


def test_the_explanation_follows_a_reading_that_arrived_inside_the_span(env: Env) -> None:
    """Check a reading stored after the alert was explained, inside its span, changes the
    explanation to what it is now (and one that changed nothing is answered from the cache,
    reading no readings)."""
    _flow_pressure(env, 300, seed=1)
    s0 = T0 + 300 * S
    env.store.append([Reading(env.device, "flow", s0, 12.0),
                      Reading(env.device, "pressure", s0, 16.0),
                      Reading(env.device, "flow", s0 + 2 * S, 10.0)])
    a = env.store.add_alert(Alert(env.device, s0, s0 + 2 * S, 0.99, drivers={"pressure": 1.0}))
    first = _explain(env, a)["explanation"]
    env.store.append([Reading(env.device, "pressure", s0 + 2 * S, -40.0)])  # arrives now
    again = _explain(env, a)["explanation"]
    fresh = alert_explanation(env.store.query(env.device, None, s0 - 3600 * S, s0 + 3 * S),
                              s0, s0 + 2 * S)
    assert abs(again["value"] - fresh.value) < 1e-6 * fresh.value, (
        f"T² {again['value']} answered after the reading arrived, {first['value']} before; "
        f"it is {fresh.value} now")
    assert again["peak"] != first["peak"]


def test_a_cached_explanation_reads_no_readings(env: Env,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Check asking again, with nothing stored meanwhile, reads no readings (the cache),
    and a reading stored in the reference (before the alert) makes it anew."""
    _flow_pressure(env, 300, seed=2)
    s0 = T0 + 300 * S
    env.store.append([Reading(env.device, "flow", s0, 12.0),
                      Reading(env.device, "pressure", s0, 16.0)])
    a = env.store.add_alert(Alert(env.device, s0, s0, 0.99))
    reads: list[int | None] = []
    real = env.store.query

    def spy(device_id, metric=None, start_ns=None, end_ns=None, step_ns=None, limit=None):
        if step_ns is None:
            reads.append(start_ns)
        return real(device_id, metric, start_ns, end_ns, step_ns, limit)

    monkeypatch.setattr(env.store, "query", spy)
    first = _explain(env, a)
    assert len(reads) == 1
    assert _explain(env, a) == first and len(reads) == 1, reads
    env.store.append([Reading(env.device, "flow", T0 + 300 * S - S // 2, 30.0)])
    assert _explain(env, a)["explanation"]["reference_rows"] == (
        first["explanation"]["reference_rows"] + 1)
    assert len(reads) == 2


def test_a_failed_explanation_is_not_kept(env: Env) -> None:
    """Check an alert explained too early (too little history) is explained once the
    history has arrived: a failure is not cached."""
    s0 = T0 + 300 * S
    env.store.append([Reading(env.device, m, s0, v) for m, v in (("flow", 12.0),
                                                                 ("pressure", 16.0))])
    a = env.store.add_alert(Alert(env.device, s0, s0, 0.99))
    body = _explain(env, a)
    assert body["explanation"] is None and "before the alert" in body["explanation_detail"]
    _flow_pressure(env, 300, seed=3)  # the backlog (of the hour before) arrives
    assert _explain(env, a)["explanation"]["reference_rows"] == 300
