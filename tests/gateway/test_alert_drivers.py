"""An alert's drivers are each metric's mean share over its readings, and its message
names the same metrics."""

from __future__ import annotations

from edgewise.alerts import AlertManager
from edgewise.store import open_store

S = 10**9


def test_drivers_are_the_mean_share_and_the_message_agrees() -> None:
    """Check a fault first seen in flow and then carried by the bearing temperature: the
    drivers weigh every reading alike (the pairwise average gave the latest reading half
    the weight, so the first one faded out), and the message, written at the first
    reading, is rewritten to name the top driver; the stored alert says the same."""
    store = open_store("duckdb://:memory:")
    am = AlertManager(store, write_every_s=0.0)
    t0 = 1_700_000_000 * S
    a = am.observe("pump-10", t0, 0.99, {"flow_m3h": 1.0})
    assert a is not None and a.message == "Anomalous flow_m3h (100%)."
    for i in range(1, 4):
        am.observe("pump-10", t0 + i * S, 0.95, {"bearing_temp_c": 0.6, "motor_current_a": 0.4})
    assert a.drivers == {"bearing_temp_c": 0.45, "motor_current_a": 0.3, "flow_m3h": 0.25}
    assert a.message == ("Anomalous bearing_temp_c (45%), motor_current_a (30%), "
                         "flow_m3h (25%).")
    am.flush(force=True)
    stored = store.get_alert(a.id)
    assert (stored.drivers, stored.message) == (a.drivers, a.message)
    store.close()


def test_an_alert_followed_by_the_next_keeps_its_last_extension() -> None:
    """Check an open alert's held-back update (end, score, drivers) is written when the
    device's next alert opens: it was dropped, so the stored alert ended where the last
    timed write left it, and how long it lasted depended on the wall clock."""
    store = open_store("duckdb://:memory:")
    am = AlertManager(store, merge_gap_s=60.0, write_every_s=3600.0)
    t0 = 1_700_000_000 * S
    first = am.observe("pump-3", t0, 0.91, {"flow_m3h": 1.0})
    assert first is not None
    am.observe("pump-3", t0 + 30 * S, 0.99, {"flow_m3h": 0.5, "speed_rpm": 0.5})
    second = am.observe("pump-3", t0 + 600 * S, 0.95, {"speed_rpm": 1.0})  # a new alert
    assert second is not None and second.id != first.id
    stored = store.get_alert(first.id)
    assert (stored.end_ns, stored.score) == (t0 + 30 * S, 0.99)
    assert stored.drivers == {"flow_m3h": 0.75, "speed_rpm": 0.25}
    store.close()
