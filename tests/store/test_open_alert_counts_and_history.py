"""Store.open_alert_counts (GET /v1/fleet's open alerts per device, counted in the store with
no cap) and Store.times_before (a metric's newest reading times before an instant, the
quality report's history), alike on both backends."""

from __future__ import annotations

from edgewise.store import open_store
from edgewise.store.base import Alert
from edgewise.telemetry import Reading

S = 10**9


def test_open_alert_counts_count_what_list_alerts_lists_open(store_url: str) -> None:
    """Check the counts are those of list_alerts(status='open') per device, with no limit:
    merged and acknowledged alerts are left out, and so is a device with none open."""
    with open_store(store_url) as s:
        assert s.open_alert_counts() == {}
        a, b, c = (s.add_alert(Alert("p", t * S, (t + 1) * S, 0.9)) for t in (0, 10, 20))
        for t in range(150):
            s.add_alert(Alert("q", t * S, t * S + 1, 0.9, kind="seq_gap" if t % 2 else "anomaly"))
        acked = s.add_alert(Alert("r", 0, 1, 0.9))
        s.merge_alert(b.id, into=a.id, end_ns=11 * S)
        s.acknowledge_alert(acked.id, "ops")
        counts = s.open_alert_counts()
        assert counts == {"p": 2, "q": 150}
        for device, n in counts.items():
            assert len(s.list_alerts(device, "open", limit=10**6)) == n
        s.acknowledge_alert(c.id, "ops")
        assert s.open_alert_counts() == {"p": 1, "q": 150}


def test_times_before_reads_the_newest_times_before_an_instant(store_url: str) -> None:
    """Check the newest ``limit`` times of one metric strictly before the instant, oldest
    first, of that device and metric only; none: []."""
    with open_store(store_url) as s:
        s.append([Reading("p", "battery", i * 3600 * S, 90.0 - i) for i in range(10)]
                 + [Reading("p", "temp", i * S, 20.0) for i in range(100)]
                 + [Reading("q", "battery", i * S, 1.0) for i in range(100)])
        assert s.times_before("p", "battery", 7 * 3600 * S) == [i * 3600 * S for i in range(2, 7)]
        assert s.times_before("p", "battery", 7 * 3600 * S + 1, limit=2) == [
            6 * 3600 * S, 7 * 3600 * S]
        assert s.times_before("p", "battery", 0) == []
        assert s.times_before("p", "nosuch", 10**18) == []
        assert s.times_before("p", "temp", 3 * S, limit=10) == [0, S, 2 * S]
