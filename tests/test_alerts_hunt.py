"""Alert bookkeeping found wrong by the explanations hunt: late readings (the moved start
is stored; one fault stays one alert), drivers as each reading's mean share, and a second
acknowledgement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.alerts import AlertManager, merge_drivers
from edgewise.config import Settings
from edgewise.detect.base import Detector
from edgewise.errors import InvalidParameterError
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from edgewise.store.base import Store
from edgewise.telemetry import Reading

S = 10**9
T0 = 1_700_000_000 * S


class Limit(Detector):
    """A fixed limit: any value above 100 is anomalous."""

    def learn_one(self, x: dict[str, float]) -> None:
        pass

    def score_one(self, x: dict[str, float]) -> float:
        return 1.0 if max(x.values()) > 100 else 0.0


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("duckdb://:memory:")
    yield s
    s.close()


@pytest.fixture
def pipeline(store: Store, tmp_path: Path) -> Iterator[Pipeline]:
    p = Pipeline(store, Settings.load(env={}, data_dir=tmp_path), detect_async=False,
                 detector_factory=Limit, multivariate_factory=None, fast_gate=None,
                 cleaner=None)
    yield p
    p.close()


def _spans(store: Store, device: str) -> list[tuple[int, int]]:
    return sorted(((a.start_ns - T0) // S, (a.end_ns - T0) // S)
                  for a in store.list_alerts(device, None, None, None, 100))


# -- M2: a start moved earlier by a late reading is stored ---------------------------------

def test_a_late_reading_moves_the_stored_start(store: Store) -> None:
    """Check the start a late reading moves earlier reaches the store (it stayed in memory:
    the API, the label window and the explanation saw the later start)."""
    am = AlertManager(store, write_every_s=0.0)
    a = am.observe("pump", T0 + 10 * S, 0.97, {"temp": 1.0})
    assert a is not None
    assert am.observe("pump", T0 + 8 * S, 0.98, {"temp": 1.0}) is a
    am.flush(force=True)
    stored = store.get_alert(a.id)
    assert (stored.start_ns, stored.end_ns, stored.score) == (T0 + 8 * S, T0 + 10 * S, 0.98)


def test_the_pipeline_stores_the_start_of_a_late_first_reading(pipeline: Pipeline,
                                                               store: Store) -> None:
    """Check a fault whose first hot reading arrives 90 s late is stored from that reading."""
    for t in range(0, 1700, 10):
        if t == 1000:
            continue  # the first hot reading is delayed ...
        pipeline.detect([Reading("dev", "temp", T0 + t * S, 150.0 if 1000 <= t < 1600 else 50.0)])
        if t == 1090:  # ... and arrives 90 s late
            pipeline.detect([Reading("dev", "temp", T0 + 1000 * S, 150.0)])
    pipeline.alerts.flush(force=True)
    assert _spans(store, "dev") == [(1000, 1590)]


# -- M3: one fault whose readings arrive late stays one alert ------------------------------

def test_a_resent_backlog_joins_the_open_alert(pipeline: Pipeline, store: Store) -> None:
    """Check eight messages of one overheating resent 200 s late (oldest first, the oldest
    more than merge_gap_s before the open alert) join it: they made three alerts."""
    for t in range(0, 1700, 10):
        if 1000 <= t < 1080:
            continue  # held up by a network outage ...
        pipeline.detect([Reading("dev", "temp", T0 + t * S, 150.0 if 1000 <= t < 1600 else 50.0)])
        if t == 1200:  # ... resent together, 200 s late
            pipeline.detect([Reading("dev", "temp", T0 + u * S, 150.0)
                             for u in range(1000, 1080, 10)])
    pipeline.alerts.flush(force=True)
    assert _spans(store, "dev") == [(1000, 1590)]
    assert pipeline.metrics.get("edgewise_alerts_total", kind="anomaly") == 1


def test_a_late_reading_never_replaces_the_open_alert(store: Store) -> None:
    """Check a late reading far before the open alert is an alert of its own and the open
    alert keeps growing (it took the open alert's place, so the next on-time reading opened
    a third alert)."""
    new: list[str] = []
    am = AlertManager(store, write_every_s=0.0, on_alert=lambda a: new.append(a.id))
    o = am.observe("pump", T0 + 1000 * S, 0.99, {"temp": 1.0})
    late = am.observe("pump", T0 + 800 * S, 0.99, {"temp": 1.0})
    assert late is not None and late is not o
    assert am.observe("pump", T0 + 1010 * S, 0.99, {"temp": 1.0}) is o
    # a late reading next to the earlier, late alert joins that one
    assert am.observe("pump", T0 + 830 * S, 0.99, {"temp": 1.0}) is late
    am.flush(force=True)
    assert _spans(store, "pump") == [(800, 830), (1000, 1010)]
    assert new == [o.id, late.id]


def test_a_late_reading_joins_a_recent_closed_alert(store: Store) -> None:
    """Check a late reading just after an alert that has since been followed by another
    extends the earlier one, within the lateness horizon, and not past it."""
    am = AlertManager(store, write_every_s=0.0, late_horizon_s=300.0)
    first = am.observe("pump", T0 + 100 * S, 0.99, {"temp": 1.0})
    second = am.observe("pump", T0 + 300 * S, 0.99, {"temp": 1.0})
    assert second is not first
    assert am.observe("pump", T0 + 150 * S, 0.99, {"temp": 1.0}) is first
    am.observe("pump", T0 + 1000 * S, 0.99, {"temp": 1.0})  # the device moves on
    beyond = am.observe("pump", T0 + 160 * S, 0.99, {"temp": 1.0})
    assert beyond not in (first, second)
    am.flush(force=True)
    assert store.get_alert(first.id).end_ns == T0 + 150 * S


def test_a_batch_joins_in_any_order(store: Store) -> None:
    """Check a batch of late readings joins the open alert whatever order it is given in."""
    for order in (1, -1):
        am = AlertManager(store, write_every_s=0.0)
        dev = f"pump{order}"
        a = am.observe(dev, T0 + 1080 * S, 0.99, {"temp": 1.0})
        batch = [(T0 + u * S, 0.99, {"temp": 1.0}) for u in range(1000, 1080, 10)][::order]
        assert am.observe_many(dev, batch) == [a]
        am.flush(force=True)
        assert _spans(store, dev) == [(1000, 1080)]


# -- L1: drivers are each metric's mean share; no driver at 0 % is named --------------------

def test_drivers_are_the_mean_share_in_any_order(store: Store) -> None:
    """Check a reading with two drivers weighs as much as one with one (raw driver values
    were added, so a=0.34, b=c=0.33, and 0.49 for a in the other order)."""
    for first, second in (({"a": 0.95}, {"b": 0.95, "c": 0.95}),
                          ({"b": 0.95, "c": 0.95}, {"a": 0.95})):
        am = AlertManager(store)
        dev = "fan" + "".join(first)
        a = am.observe(dev, T0, 0.95, first)
        am.observe(dev, T0 + S, 0.95, second)
        assert a is not None and a.drivers == {"a": 0.5, "b": 0.25, "c": 0.25}


def test_no_driver_at_zero_is_named(store: Store) -> None:
    """Check metrics at 0 share are neither drivers nor named in the message."""
    am = AlertManager(store, write_every_s=0.0)
    a = am.observe("pump", T0, 0.99, {"temp": 0.99, "rpm": 0.0, "flow": 0.0})
    assert a is not None
    assert a.message == "Anomalous temp (100%)." and a.drivers == {"temp": 1.0}
    am.observe("pump", T0 + S, 0.99, {"temp": 0.5, "rpm": 0.0, "flow": float("nan")})
    assert set(a.drivers) == {"temp"}
    assert merge_drivers({"a": 1.0, "b": 0.0}, {"c": -1.0}) == {"a": 1.0}


# -- L4: a second acknowledgement keeps the first ------------------------------------------

def test_acknowledging_twice_keeps_the_first(store: Store) -> None:
    """Check the Python API keeps who acknowledged first, as the HTTP API does."""
    am = AlertManager(store)
    a = am.observe("pump", T0, 0.99, {"temp": 1.0})
    assert a is not None
    assert am.acknowledge(a.id, by="alice").acked_by == "alice"
    assert am.acknowledge(a.id, by="bob").acked_by == "alice"
    assert store.get_alert(a.id).acked_by == "alice"
    with pytest.raises(KeyError):
        am.acknowledge("no-such-alert", by="bob")


# -- review of the rewrite: bridging runs, a future reading, parameters, duplicates ------

def test_a_late_run_bridging_two_alerts_merges_them(store: Store) -> None:
    """Check a late run touching two held alerts leaves one alert covering both (it
    extended only the newer one: (0, 10) and (5, 110), one inside the other), and a run
    that lands 40 s from each (under the 60 s merge gap) joins them too."""
    am = AlertManager(store, write_every_s=0.0)
    for lo in (0, 100):
        am.observe_many("pump", [(T0 + t * S, 0.99, {"temp": 1.0}) for t in range(lo, lo + 11)])
    am.observe_many("pump", [(T0 + t * S, 0.99, {"temp": 1.0}) for t in (5, 50, 105)])
    am.flush(force=True)
    assert _spans(store, "pump") == [(0, 110)]
    for lo in (0, 100):
        am.observe_many("pump-2", [(T0 + t * S, 0.99, {"rpm": 1.0}) for t in range(lo, lo + 11)])
    am.observe_many("pump-2", [(T0 + t * S, 0.99, {"rpm": 1.0}) for t in range(50, 56)])
    am.flush(force=True)
    assert _spans(store, "pump-2") == [(0, 110)]
    assert len(am._held["pump-2"]) == 1


def test_a_bridging_run_in_the_pipeline_leaves_one_alert(
    store: Store, pipeline: Pipeline
) -> None:
    """Check the same through Pipeline.detect: two faults, then their late readings."""
    def send(ts: list[int]) -> None:
        readings = [Reading("pump", "temp", T0 + t * S, 150.0) for t in ts]
        store.append(readings)
        pipeline.detect(readings)

    send(list(range(0, 11)))
    send(list(range(100, 111)))
    send([5, 50, 105])
    pipeline.alerts.flush(force=True)
    assert _spans(store, "pump") == [(0, 110)]


def test_a_reading_far_ahead_does_not_split_a_fault(store: Store) -> None:
    """Check one reading stamped an hour ahead leaves a 2-minute fault one alert (every
    reading of it became its own alert: the prune cutoff was measured from the future
    alert, so each alert in time was let go as soon as it was raised)."""
    am = AlertManager(store, write_every_s=0.0)
    am.observe("pump", T0 + 3600 * S, 0.99, {"vibration": 1.0})
    for t in range(120):
        am.observe("pump", T0 + t * S, 0.99, {"temp": 1.0})
    am.flush(force=True)
    assert _spans(store, "pump") == [(0, 119), (3600, 3600)]


def test_the_alert_a_run_raised_is_never_pruned(store: Store) -> None:
    """Check the alert a batch raised or extended stays held (extendable) whatever else
    the device has held."""
    am = AlertManager(store, write_every_s=0.0, late_horizon_s=0.0)
    am.observe("pump", T0 + 10**6 * S, 0.99, {"temp": 1.0})
    a = am.observe("pump", T0, 0.99, {"temp": 1.0})
    assert any(h.alert is a for h in am._held["pump"])
    assert am.observe("pump", T0 + S, 0.99, {"temp": 1.0}) is a


@pytest.mark.parametrize("kw, value", [
    ("late_horizon_s", float("inf")), ("late_horizon_s", float("nan")),
    ("late_horizon_s", -1.0), ("merge_gap_s", 0.0), ("merge_gap_s", -1.0),
    ("merge_gap_s", float("nan")), ("merge_gap_s", float("inf")),
])
def test_bad_horizon_and_merge_gap_get_one_line_errors(
    store: Store, kw: str, value: float
) -> None:
    """Check an infinite horizon (OverflowError) and a merge gap at or below 0 or NaN
    (every reading its own alert) are refused with the documented one-line error."""
    with pytest.raises(InvalidParameterError) as info:
        AlertManager(store, **{kw: value})
    text = str(info.value)
    assert "\n" not in text and kw in text and repr(value) in text and "range" in text


def test_a_resent_duplicate_counts_once(store: Store) -> None:
    """Check a reading resent in the batch (same ts) counts once in the driver shares
    (5 copies weighed as 5 readings), and entries at one ts are one reading."""
    am = AlertManager(store, write_every_s=0.0)
    am.observe_many("pump", [(T0, 0.99, {"temp": 1.0})] * 5 + [(T0, 0.5, {"temp": 1.0})]
                    + [(T0 + S, 0.99, {"rpm": 1.0})])
    held = am._held["pump"][0]
    assert held.readings == 2 and held.alert.drivers == {"temp": 0.5, "rpm": 0.5}


def test_observe_many_returns_each_alert_once(store: Store) -> None:
    """Check two runs more than the merge gap apart inside one long held alert give it
    back once (it was listed once per run)."""
    am = AlertManager(store, write_every_s=0.0)
    a = am.observe_many("pump", [(T0 + t * S, 0.99, {"temp": 1.0}) for t in range(0, 301, 30)])
    out = am.observe_many("pump", [(T0 + 10 * S, 0.99, {"temp": 1.0}),
                                   (T0 + 200 * S, 0.99, {"temp": 1.0})])
    assert out == a and len(out) == 1
