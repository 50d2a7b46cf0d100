"""A metric that stopped reporting before an alert is not part of the alert's explanation.

The live detector scores a reading on the metrics it holds; the stored-readings
explanation carried a dropped-out sensor's last value forward, and that value, out of
step with partners that had moved on, took a share of the blame (temp 0.34 below)."""
from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.explain.alerts import STALE_GAPS, alert_explanation


def _pump(drop_temp_at: int | None, n: int = 400) -> list[tuple[str, int, float]]:
    rng = np.random.default_rng(1)
    rows: list[tuple[str, int, float]] = []
    for t in range(n):
        load = np.sin(t / 30) * 5 + rng.normal(0, 0.3)
        rows += [("flow", t, 50 + load + rng.normal(0, 0.2)),
                 ("current", t, 10 + 0.5 * load + rng.normal(0, 0.1))]
        if drop_temp_at is None or t < drop_temp_at:
            rows.append(("temp", t, 40 + 0.8 * load + rng.normal(0, 0.2)))
    load = np.sin(n / 30) * 5
    rows += [("flow", n, 50 + load), ("current", n, 10 + 0.5 * load + 1.5)]  # current off
    if drop_temp_at is None:
        rows.append(("temp", n, 40 + 0.8 * load))
    return rows


def test_a_sensor_that_dropped_out_takes_no_share_of_the_alert() -> None:
    ex = alert_explanation(_pump(drop_temp_at=300), 400, 400)
    assert ex.stale == ["temp"]
    assert set(ex.shares) == set(ex.contributions) == {"flow", "current"}
    assert ex.check() and sum(ex.shares.values()) == pytest.approx(1.0)
    assert ex.top(1)[0][0] in {"flow", "current"}


def test_a_sensor_read_at_the_peak_is_not_stale() -> None:
    ex = alert_explanation(_pump(drop_temp_at=None), 400, 400)
    assert ex.stale == [] and set(ex.shares) == {"flow", "current", "temp"}
    assert max(ex.shares, key=ex.shares.get) == "current"


def test_a_metric_read_less_often_is_stale_only_past_its_own_interval() -> None:
    # 'temp' every 5 readings: carried over its usual gap it is read; beyond three gaps not
    rng = np.random.default_rng(2)
    rows = []
    for t in range(300):
        a = rng.normal()
        rows += [("flow", t, a), ("current", t, 0.5 * a + 0.1 * rng.normal())]
        if t % 5 == 0:
            rows.append(("temp", t, 0.8 * a + 0.1 * rng.normal()))
    ok = alert_explanation([*rows, ("flow", 303, 3.0), ("current", 303, -1.0)], 303, 303)
    assert ok.stale == [] and "temp" in ok.shares
    late = 295 + int(STALE_GAPS * 5) + 1
    gone = alert_explanation([*rows, ("flow", late, 3.0), ("current", late, -1.0)],
                             late, late)
    assert gone.stale == ["temp"] and "temp" not in gone.shares


def test_the_peak_is_chosen_on_the_metrics_each_reading_holds() -> None:
    # two span rows: the first with temp wildly off but temp stale (its value carried from
    # long ago does not count), the second a milder real break of flow and current
    rng = np.random.default_rng(3)
    rows = []
    for t in range(300):
        a = rng.normal()
        rows += [("flow", t, a), ("current", t, a + 0.1 * rng.normal()),
                 ("temp", t, a + 0.1 * rng.normal())]
    rows += [("temp", 300, 9.0)]  # its last reading, then it drops out
    for t in range(301, 330):
        a = rng.normal()
        rows += [("flow", t, a), ("current", t, a + 0.1 * rng.normal())]
    rows += [("flow", 331, 0.0), ("current", 331, 0.2),
             ("flow", 332, 1.0), ("current", 332, -1.0)]
    ex = alert_explanation(rows, 331, 332)
    assert ex.peak_ns == 332 and ex.stale == ["temp"]


def test_an_alert_of_no_fresh_metric_is_refused_naming_them() -> None:
    """Check an alert whose span holds no reading of a metric with history (the device's
    old sensors stopped, a new one alarms) is refused, naming the stopped and the new
    metrics: it was explained as T² 0, no terms and no shares, as if nothing were off."""
    rows = [r for r in _pump(None, n=300) if r[1] < 300]
    rows += [("vibration", t, 100.0 + t) for t in range(320, 331)]
    with pytest.raises(InvalidParameterError) as err:
        alert_explanation(rows, 320, 330)
    said = str(err.value)
    assert "'current', 'flow', 'temp' have stopped before it" in said, said
    assert "'vibration' has no reading before it" in said, said
