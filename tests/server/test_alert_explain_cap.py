"""An alert's explanation reads a bounded number of readings, whatever the device's rate.

A bug hunt found the explanation read every reading of the hour, day or week before the
alert (the week when a slow metric has no reading in the day): a device at a high rate
put millions of rows in memory for one request. It now reads at most
``MAX_EXPLAIN_ROWS``; a reference (and span) holding more is averaged per bucket, and the
detail says so. The cap is made small here so a few thousand readings go over it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgewise.explain import alerts as explain
from edgewise.server.routes import alerts as routes
from edgewise.store.base import Alert
from edgewise.telemetry import Reading
from tests.server.conftest import Env

S = 10**9
T0 = 1_700_000_000 * S
CAP = 2_000


def _flow_pressure(env: Env, seconds: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    f = rng.normal(10, 1, seconds)
    p = 2 * f + rng.normal(0, 0.2, seconds)
    env.store.append([Reading(env.device, m, T0 + i * S, float(v))
                      for i in range(seconds) for m, v in (("flow", f[i]), ("pressure", p[i]))])


def _explain(env: Env, alert: Alert) -> dict[str, Any]:
    r = env.client.get(f"/v1/alerts/{alert.id}", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
def reads(env: Env, monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    """The cap set to :data:`CAP`; what the store was asked (each query's ``limit`` and
    how many rows it gave) and how many rows each explanation was made of."""
    routes._explained.clear()
    # raising=False: where no cap exists (the old code) the bounds below fail, not this
    monkeypatch.setattr(routes, "MAX_EXPLAIN_ROWS", CAP, raising=False)
    seen: dict[str, list[Any]] = {"queries": [], "explained": []}
    real_query, real_explanation = env.store.query, explain.alert_explanation

    def query(device_id, metric=None, start_ns=None, end_ns=None, step_ns=None, limit=None):
        out = real_query(device_id, metric, start_ns, end_ns, step_ns, limit)
        seen["queries"].append((step_ns, limit, len(out)))
        return out

    def alert_explanation(rows: Any, *args: Any, **kw: Any) -> Any:
        seen["explained"].append(len(rows))
        return real_explanation(rows, *args, **kw)

    monkeypatch.setattr(env.store, "query", query)
    monkeypatch.setattr(explain, "alert_explanation", alert_explanation)
    yield seen
    routes._explained.clear()


def _bounded(seen: dict[str, list[Any]]) -> None:
    """Every read of readings as stored asked the store to stop at the cap (the cache's
    fingerprints are 64 bucket means a metric), and no read gave more."""
    for step, limit, got in seen["queries"]:
        if step is None:
            assert limit is not None and limit <= CAP + 1, seen["queries"]
        assert got <= CAP + 1, seen["queries"]
    assert seen["explained"] and max(seen["explained"]) <= CAP, seen["explained"]


def test_the_week_fallback_of_a_busy_device_reads_at_most_the_cap(
        env: Env, reads: dict[str, list[Any]]) -> None:
    """Check a device with far more readings than the cap before the alert (flow and
    pressure every second for 3 h; oil twice, 28 and 30 h before: none in the day, so the
    week is read) is explained from at most the cap of rows, keeps its slow metric, names
    it, and says the week was averaged."""
    _flow_pressure(env, 3 * 3600)  # 21,600 readings, over ten times the cap
    start = T0 + (3 * 3600 + 60) * S
    env.store.append([Reading(env.device, "oil", T0 - h * 3600 * S, 50.0 + h) for h in (28, 30)]
                     + [Reading(env.device, "flow", start, 10.0),
                        Reading(env.device, "pressure", start, 20.0),
                        Reading(env.device, "oil", start, 20.0)])  # the oil level collapses
    a = env.store.add_alert(Alert(env.device, start, start, 0.99, drivers={"oil": 1.0}))
    body = _explain(env, a)
    ex = body["explanation"]
    assert ex is not None, body
    assert ex["left_out"] == [] and set(ex["contributions"]) == {"flow", "oil", "pressure"}
    assert ex["top"][0]["name"] == "oil", ex["top"]
    assert ex["peak"] == body["start"]
    assert 100 <= ex["reference_rows"] <= CAP
    detail = body["explanation_detail"]
    assert detail.startswith("The week before the alert") and "averaged" in detail, detail
    assert f"{CAP:,}" in detail
    _bounded(reads)


def test_a_long_busy_alert_has_its_span_averaged_too(
        env: Env, reads: dict[str, list[Any]]) -> None:
    """Check an alert whose span alone holds more readings than half the cap is explained
    from at most the cap, with its peak inside the span (a bucket starting before the
    alert is not taken for reference)."""
    _flow_pressure(env, 3000)
    start = T0 + 1500 * S + S // 2  # inside a bucket: its start lies before the alert
    env.store.append([Reading(env.device, "flow", T0 + 2500 * S + S // 3, 30.0),
                      Reading(env.device, "pressure", T0 + 2500 * S + S // 3, 0.0)])
    a = env.store.add_alert(Alert(env.device, start, T0 + 2999 * S, 0.99))
    body = _explain(env, a)
    ex = body["explanation"]
    assert ex is not None, body
    assert body["start"] <= ex["peak"] <= body["end"], (ex["peak"], body)
    assert "the alert's span to" in body["explanation_detail"], body
    _bounded(reads)


def test_an_explanation_under_the_cap_is_made_of_every_reading(
        env: Env, reads: dict[str, list[Any]]) -> None:
    """Check a device with fewer readings than the cap is explained exactly as from all
    its readings, with no word of averaging."""
    _flow_pressure(env, 600)  # 1,200 readings
    s0 = T0 + 600 * S
    env.store.append([Reading(env.device, "flow", s0, 12.0),
                      Reading(env.device, "pressure", s0, 16.0)])
    a = env.store.add_alert(Alert(env.device, s0, s0, 0.99))
    body = _explain(env, a)
    _bounded(reads)
    rows = env.store.query(env.device, None, s0 - routes.REFERENCE_NS, s0 + 1)
    assert reads["explained"] == [len(rows)] == [1202]
    want = explain.alert_explanation(rows, s0, s0)
    assert body["explanation_detail"] is None
    assert body["explanation"]["value"] == round(want.value, 6)
    assert body["explanation"]["reference_rows"] == want.reference_rows == 600
