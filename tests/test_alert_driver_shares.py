"""An alert's drivers are each metric's true mean share of the score, also on a device with
more metrics than the five kept (explain hunt, t17_top5): the top five were renormalised to
100 %, so a metric with a 30 % share of a 100-metric reading was shown as 91 %."""

from __future__ import annotations

import math

from edgewise.alerts import AlertManager, merge_drivers
from edgewise.store import open_store


def _drivers() -> dict[str, float]:
    """One reading's drivers: m000 holds 0.30 of it, 99 others share 0.70."""
    return {"m000": 0.30, **{f"m{i:03d}": 0.70 / 99 for i in range(1, 100)}}


def test_a_many_metric_alert_shows_true_shares() -> None:
    store = open_store("duckdb://:memory:")
    try:
        am = AlertManager(store)
        a = am.observe("pump-1", 10**18, 0.97, _drivers())
        assert a.drivers["m000"] == 0.3, a.drivers
        assert a.message.startswith("Anomalous m000 (30%)"), a.message
        b = am.observe("pump-1", 10**18 + 10**9, 0.98, _drivers())
        assert b.id == a.id and b.drivers["m000"] == 0.3, b.drivers
        assert sum(b.drivers.values()) < 0.4 and len(b.drivers) == 5
    finally:
        store.close()


def test_few_metrics_still_sum_to_one() -> None:
    shares = merge_drivers({}, {"temp": 0.6, "rpm": 0.3, "flow": 0.1})
    assert math.isclose(sum(shares.values()), 1.0) and shares["temp"] == 0.6
