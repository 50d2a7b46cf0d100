"""An alert's explanation compares like with like, and keeps the hour where a wider
reference cannot help.

A bug hunt found (1) a busy device's reference averaged per bucket (over the read cap)
beside the alert's readings as stored: averaging shrinks each sensor's own noise, so the
raw noise in the span looked anomalous and a noisy, innocent sensor was ranked above the
culprit (d 46.5 % first; temp 81.1 % from every reading); and (2) a metric new in the
alert, left out of every reference, made the explanation trade the hour's answer, read as
stored, for the week's, averaged per bucket. The cap is made small here so a few thousand
readings go over it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgewise.explain.alerts import alert_explanation
from edgewise.server.routes import alerts as routes
from edgewise.store.base import Alert
from edgewise.telemetry import Reading
from tests.server.conftest import Env

S = 10**9
T0 = 1_700_000_000 * S
CAP = 2_000


@pytest.fixture
def starts(env: Env, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int | None, bool]]:
    """The cap set to :data:`CAP`; the start and bucket of every read of the device's
    readings, and whether it was limited (a fingerprint, 64 bucket means, is not)."""
    routes._explained.clear()
    monkeypatch.setattr(routes, "MAX_EXPLAIN_ROWS", CAP)
    seen: list[tuple[int, int | None, bool]] = []
    real = env.store.query

    def query(device_id, metric=None, start_ns=None, end_ns=None, step_ns=None, limit=None):
        seen.append((start_ns, step_ns, limit is not None))
        return real(device_id, metric, start_ns, end_ns, step_ns, limit)

    monkeypatch.setattr(env.store, "query", query)
    yield seen
    routes._explained.clear()


def _explain(env: Env, alert: Alert) -> dict[str, Any]:
    r = env.client.get(f"/v1/alerts/{alert.id}", headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_a_busy_device_is_explained_from_alike_averaged_readings(
        env: Env, starts: list[tuple[int, int | None, bool]]) -> None:
    """Check a device over the cap (five noisy sensors following the load, temp wandering
    slowly, 1 Hz for 40 min; temp 4 of its sd high for the last 40 s) names temp first, as
    the explanation from every reading does: the span is averaged to the reference's
    buckets, whole (the span as stored ranked the noisy sensor e first, temp's share 0.30;
    now 0.80, from every reading 0.74)."""
    rng = np.random.default_rng(0)
    n, fault = 2400, 40
    load = np.sin(np.arange(n) / 300.0)
    wander = np.zeros(n)
    for i in range(1, n):  # slow: each reading keeps 99.5 % of the one before
        wander[i] = 0.995 * wander[i - 1] + rng.normal(0, 0.1)
    vals = {k: g * load + rng.normal(0, 1.0, n)
            for k, g in (("a", 10), ("b", 8), ("c", -6), ("d", 4), ("e", 3))}
    vals["temp"] = 60 + wander
    vals["temp"][-fault:] += 4 * wander[:-fault].std()
    env.store.append([Reading(env.device, m, T0 + i * S, float(v[i]))
                      for m, v in vals.items() for i in range(n)])
    start, end = T0 + (n - fault) * S, T0 + (n - 1) * S
    body = _explain(env, env.store.add_alert(Alert(env.device, start, end, 0.99)))
    ex = body["explanation"]
    assert ex is not None, body
    rows = env.store.query(env.device, None, start - routes.REFERENCE_NS, end + 1)
    assert len(rows) > CAP
    assert alert_explanation(rows, start, end).top(1)[0][0] == "temp"  # every reading
    assert ex["top"][0]["name"] == "temp", ex["shares"]
    assert ex["shares"]["temp"] > 0.5, ex["shares"]
    assert "the alert's span to the same buckets" in body["explanation_detail"], body
    steps = [step for _, step, limited in starts if step is not None and limited]
    assert len(steps) == 2 and len(set(steps)) == 1, starts  # the reference's and the span's


def test_a_metric_new_in_the_alert_keeps_the_hour_read_as_stored(
        env: Env, starts: list[tuple[int, int | None, bool]]) -> None:
    """Check an alert that carries a metric new in it ('err', no reading ever before) is
    explained from the hour's readings as stored, the detail saying err has none in the
    week; the day and the week (over the cap: averaged) are not read."""
    rng = np.random.default_rng(1)
    every, n = 10, 1080  # every 10 s for 3 h: the hour is 1,080 readings, the week 3,240
    f = rng.normal(10, 1, n)
    rows = [Reading(env.device, m, T0 + i * every * S, float(v))
            for i in range(n) for m, v in (("flow", f[i]), ("pressure", 2 * f[i] + 0.2),
                                           ("speed", 100 + rng.normal()))]
    start = T0 + n * every * S
    rows += [Reading(env.device, "flow", start, 10.0), Reading(env.device, "pressure", start, 26.0),
             Reading(env.device, "speed", start, 100.0), Reading(env.device, "err", start, 1.0)]
    env.store.append(rows)
    body = _explain(env, env.store.add_alert(Alert(env.device, start, start, 0.99)))
    ex = body["explanation"]
    assert ex is not None and ex["left_out"] == ["err"], body
    assert body["explanation_detail"] == (
        "err has no reading in the week before the alert; left out.")
    hour = env.store.query(env.device, None, start - routes.REFERENCE_NS, start + 1)
    assert ex["reference_rows"] == alert_explanation(hour, start, start).reference_rows == 360
    assert min(s for s, _, _ in starts) == start - routes.REFERENCE_NS, starts


def test_a_metric_last_read_days_ago_widens_straight_to_the_week(
        env: Env, starts: list[tuple[int, int | None, bool]]) -> None:
    """Check a metric left out of the hour whose newest reading is 3 days old makes the
    explanation read the week (which holds it), not the day first (which cannot)."""
    rng = np.random.default_rng(2)
    f = rng.normal(10, 1, 200)
    rows = [Reading(env.device, m, T0 + i * 10 * S, float(v))
            for i in range(200) for m, v in (("flow", f[i]), ("pressure", 2 * f[i]))]
    start = T0 + 2000 * S
    rows += [Reading(env.device, "oil", T0 - 3 * 24 * 3600 * S + k * S, 50.0 + k % 3)
             for k in range(30)]
    rows += [Reading(env.device, "flow", start, 10.0), Reading(env.device, "pressure", start, 20.0),
             Reading(env.device, "oil", start, 20.0)]
    env.store.append(rows)
    body = _explain(env, env.store.add_alert(Alert(env.device, start, start, 0.99)))
    ex = body["explanation"]
    assert ex is not None and ex["left_out"] == [], body
    assert ex["top"][0]["name"] == "oil", ex["top"]
    read_from = {s for s, _, _ in starts}
    assert start - 24 * routes.REFERENCE_NS not in read_from, starts
    assert start - routes.MAX_REFERENCE_NS in read_from, starts
