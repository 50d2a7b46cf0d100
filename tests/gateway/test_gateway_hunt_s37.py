"""Gateway hunt (session 37): alerts lost to a brief store error, a reading stamped ahead
blinding its stream, counters that did not add up, metric slots taken by messages never
stored, and a wrong warning for metrics sent one message each.

* A store error while a new alert was stored lost it, and the alerts of every device after
  it in the batch (the detectors had learned the readings; nothing retried): the alert is
  held and tried again at each flush, and each device alerts on its own.
* A seq gap was marked reported before its alert was stored: one store error and it was
  never reported. It is stored first now.
* With ``max_future_s`` past the late horizon, one reading stamped ahead marked its stream's
  last scored time ahead, and every reading in real time after it was "late" (unscored),
  across a restart too: the mark is bounded by the arrival time (and repaired at load).
* The same message twice in one batch counted ``accepted`` and ``ingested`` twice, no
  duplicates; a deleted device's message counted its readings ingested and one rejection.
* Metric names of messages never stored (rate-limited, not committed) took the device's
  metric slots until restart.
"""

from __future__ import annotations

import json
import logging
import pickle
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgewise import alerts as alerts_mod
from edgewise.alerts import AlertManager
from edgewise.config import Settings
from edgewise.errors import RateLimitError, StoreError
from edgewise.gateway.pipeline import IngestResult, Pipeline
from edgewise.store import open_store
from edgewise.store.base import Alert, Store

T0 = 1_700_000_000
S = 10**9


def _msg(seq: int, ts: float, **metrics: float) -> bytes:
    return json.dumps({"ts": ts, "metrics": metrics, "seq": seq}).encode()


def _flaky(store: Store, name: str, fails: int) -> list[int]:
    """Make ``store.<name>`` raise a StoreError its next ``fails`` calls; returns the
    counter of failures left (a one-item list)."""
    real = getattr(store, name)
    left = [fails]

    def call(*args: Any, **kwargs: Any) -> Any:
        if left[0]:
            left[0] -= 1
            raise StoreError("connection reset (transient)")
        return real(*args, **kwargs)

    setattr(store, name, call)
    return left


def _quiet_settings(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(data_dir=tmp_path, rate_limit_per_s=1e6, rate_limit_burst=1e6, **kw)


# -- 1. a new alert the store refused once is not lost, nor the next device's ---------------
@pytest.mark.parametrize("detect_async", [False, True], ids=["sync", "worker"])
def test_a_store_error_on_one_new_alert_loses_no_alert_of_the_batch(
        tmp_path: Path, detect_async: bool) -> None:
    """Check two pumps failing in one MQTT batch, the first alert's insert failing once,
    both get their alert, counted, and the batch is counted scored (old code: no alert at
    all, edgewise_alerts_total 0, scored short of the stored readings)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, _quiet_settings(tmp_path), detect_async=detect_async)
    rng = random.Random(1)
    for dev in ("pump-1", "pump-2"):
        p.ingest_many([(dev, _msg(i + 1, T0 + i * 120, a=20 + rng.gauss(0, 0.5)))
                       for i in range(300)])
    assert p.flush()
    _flaky(store, "add_alert", 1)
    t = T0 + 300 * 120
    p.ingest_many([("pump-1", _msg(301, t, a=60.0)), ("pump-2", _msg(301, t, a=60.0))])
    assert p.flush()
    for k in range(1, 4):
        p.ingest_many([(d, _msg(301 + k, t + k * 120, a=20.0)) for d in ("pump-1", "pump-2")])
    assert p.flush()
    assert sorted(a.device_id for a in store.list_alerts()) == ["pump-1", "pump-2"]
    assert all(a.start_ns == t * S for a in store.list_alerts())
    assert p.metrics.get("edgewise_alerts_total", kind="anomaly") == 2
    assert p.metrics.get("edgewise_readings_scored_total") == store.count_readings()
    p.close()
    store.close()


def test_an_unstored_alert_grows_in_memory_and_is_stored_whole_and_counted_once() -> None:
    """Check an alert whose insert failed keeps growing, is stored by the next flush with
    its whole span and counted then, once (old code: the StoreError left observe)."""
    store = open_store("duckdb://:memory:")
    told: list[Alert] = []
    am = AlertManager(store, write_every_s=0.0, on_alert=told.append)
    _flaky(store, "add_alert", 2)
    t = 10**18
    a = am.observe("pump-1", t, 0.99, {"temp": 1.0})
    assert a is not None and told == [] and store.list_alerts() == []
    assert am.observe("pump-1", t + 10 * S, 0.98, {"temp": 1.0}) is a  # grows in memory
    assert store.list_alerts() == [] and told == []  # the second try failed too
    am.flush()
    (stored,) = store.list_alerts()
    assert (stored.id, stored.start_ns, stored.end_ns) == (a.id, t, t + 10 * S)
    assert [x.id for x in told] == [a.id]
    am.flush(force=True)
    assert [x.id for x in told] == [a.id]
    store.close()


def test_an_unstored_alert_bridged_to_a_stored_one_is_merged_into_it_in_memory() -> None:
    """Check a late run touching a stored alert and one the store has not taken yet makes
    one alert, the stored one (nothing of the other reaches the store)."""
    store = open_store("duckdb://:memory:")
    am = AlertManager(store, write_every_s=0.0)
    t = 10**18
    first = am.observe("pump-1", t, 0.99, {"temp": 1.0})
    _flaky(store, "add_alert", 1)
    second = am.observe("pump-1", t + 200 * S, 0.99, {"temp": 1.0})
    assert first is not None and second is not None and first.id != second.id
    late = [(t + k * S, 0.98, {"temp": 1.0}) for k in range(40, 200, 40)]
    assert [x.id for x in am.observe_many("pump-1", late)] == [first.id]
    am.flush(force=True)
    (only,) = store.list_alerts()
    assert (only.id, only.start_ns, only.end_ns) == (first.id, t, t + 200 * S)
    store.close()


def test_an_alert_the_store_keeps_refusing_is_given_up_after_the_retry_time(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Check the tries are bounded: past ADD_RETRY_S the alert is let go of, logged as an
    error naming the device, and the device's next alert is stored as usual."""
    monkeypatch.setattr(alerts_mod, "ADD_RETRY_S", 0.0)
    store = open_store("duckdb://:memory:")
    am = AlertManager(store, write_every_s=0.0)
    left = _flaky(store, "add_alert", 10**6)
    t = 10**18
    assert am.observe("pump-1", t, 0.99, {"temp": 1.0}) is not None
    with caplog.at_level(logging.ERROR, logger="edgewise.alerts"):
        am.flush()
    assert any("gave up storing the alert of 'pump-1'" in r.getMessage()
               for r in caplog.records)
    assert am.held_state() == {}
    left[0] = 0
    b = am.observe("pump-1", t + 3600 * S, 0.99, {"temp": 1.0})
    assert b is not None and [x.id for x in store.list_alerts()] == [b.id]
    store.close()


def test_an_insert_that_committed_despite_its_error_is_not_stored_twice() -> None:
    """Check an insert that reported an error after it committed is brought up to date
    by the next flush, not refused for ever as a duplicate id."""
    store = open_store("duckdb://:memory:")
    am = AlertManager(store, write_every_s=0.0)
    real = store.add_alert
    calls = [0]

    def add(alert: Alert) -> Alert:
        calls[0] += 1
        out = real(alert)
        if calls[0] == 1:
            raise StoreError("connection lost after the commit")
        return out

    store.add_alert = add  # type: ignore[method-assign]
    t = 10**18
    a = am.observe("pump-1", t, 0.99, {"temp": 1.0})
    assert a is not None
    am.observe("pump-1", t + 5 * S, 0.995, {"temp": 1.0})
    am.flush()
    (stored,) = store.list_alerts()
    assert (stored.id, stored.end_ns, stored.score) == (a.id, t + 5 * S, 0.995)
    store.close()


# -- 2. a seq gap is reported once its alert is stored ----------------------------------------
def test_a_seq_gap_whose_alert_failed_to_store_is_reported_at_the_next_check(
        tmp_path: Path) -> None:
    """Check a store error storing a seq_gap alert leaves the gap unreported (not counted)
    and it is reported at the next check, while another device's gap in the same check
    is reported at once (old code: the check raised, the gap was marked reported and
    counted, and never stored)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False, gap_grace_s=0)
    for dev in ("pump-1", "pump-2"):
        p.ingest(dev, _msg(1, T0, a=1.0))
        p.ingest(dev, _msg(5, T0 + 4, a=1.0))  # seqs 2..4 lost
    _flaky(store, "add_alert", 1)
    first = p.check_gaps(now=1e12)
    assert len(first) == 1
    assert p.metrics.get("edgewise_seq_gaps_total") == 1
    assert p.metrics.get("edgewise_seq_missing_total") == 3
    second = p.check_gaps(now=1e12 + 1)
    assert [a.device_id for a in second] == [({"pump-1", "pump-2"}
                                              - {first[0].device_id}).pop()]
    assert p.check_gaps(now=1e12 + 2) == []
    assert sorted(a.device_id for a in store.list_alerts(kind="seq_gap")) == [
        "pump-1", "pump-2"]
    assert p.metrics.get("edgewise_seq_gaps_total") == 2
    assert p.metrics.get("edgewise_alerts_total", kind="seq_gap") == 2
    p.close()
    store.close()


# -- 3. a reading stamped ahead does not blind its stream ---------------------------------------
@pytest.mark.parametrize("future_s", [3600.0, 86400.0, float("inf")])
def test_a_reading_stamped_ahead_leaves_real_time_readings_scored(
        tmp_path: Path, future_s: float) -> None:
    """Check with max_future_s past the late horizon, a reading stamped far ahead leaves
    the readings after it in real time scored, and a fault then alerts (old code: both
    'late', unscored, no alert, until real time caught up with the glitch)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, _quiet_settings(tmp_path, max_future_s=future_s), detect_async=False)
    now = time.time()
    rng = random.Random(1)
    p.ingest_many([("pump-1", _msg(i + 1, now - 300 * 120 + i * 120,
                                   a=20 + rng.gauss(0, 0.5))) for i in range(300)])
    ahead = min(future_s * 0.99, 365 * 86400)
    p.ingest("pump-1", _msg(301, now + ahead, a=20.1))  # a clock glitch, a normal value
    p.ingest("pump-1", _msg(302, time.time(), a=90.0))  # a real fault, now
    p.ingest("pump-1", _msg(303, time.time(), a=95.0))
    assert p.metrics.get("edgewise_readings_late_unscored_total") == 0
    assert p.metrics.get("edgewise_readings_scored_total") == 303
    assert len(store.list_alerts()) == 1
    p.close()
    store.close()


def test_a_saved_mark_ahead_of_the_clock_is_repaired_at_load(tmp_path: Path) -> None:
    """Check a detector state saved with a stream's last scored time an hour ahead (as an
    earlier version saved it after a reading stamped ahead) does not leave the stream
    unscored after the restart (old code: every reading 'late' for that hour)."""
    state = tmp_path / "detectors.pickle"
    settings = _quiet_settings(tmp_path, max_future_s=7200.0)
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, settings, detect_async=False, state_path=state)
    now = time.time()
    p.ingest_many([("pump-1", _msg(i + 1, now - 100 + i, a=20.0)) for i in range(50)])
    p.close()
    store.close()
    saved = pickle.loads(state.read_bytes())
    saved["last_scored"][("pump-1", "a")] = int((now + 3600) * S)
    state.write_bytes(pickle.dumps(saved))
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, settings, detect_async=False, state_path=state)
    p.ingest("pump-1", _msg(51, time.time(), a=20.0))
    assert p.metrics.get("edgewise_readings_late_unscored_total") == 0
    assert p.metrics.get("edgewise_readings_scored_total") == 1
    p.close()
    store.close()


def test_the_late_horizon_still_holds_for_readings_in_the_past(tmp_path: Path) -> None:
    """Check the bound changes nothing for a stream in the past: a reading older than its
    stream's last one by more than the horizon is still stored and not scored."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, _quiet_settings(tmp_path), detect_async=False)
    p.ingest("pump-1", _msg(1, T0 + 1000, a=1.0))
    p.ingest("pump-1", _msg(2, T0, a=1.0))
    assert p.metrics.get("edgewise_readings_late_unscored_total") == 1
    p.close()
    store.close()


# -- 4. the reading counters add up ----------------------------------------------------------
def _counters(p: Pipeline) -> dict[str, float]:
    return {k: p.metrics.get(f"edgewise_readings_{k}_total")
            for k in ("ingested", "stored", "duplicate", "conflict")}


def test_the_same_message_twice_in_one_batch_counts_the_copy_as_duplicates(
        tmp_path: Path) -> None:
    """Check a QoS 1 resend landing in the same batch as its first copy is answered and
    counted as duplicates, as a resend found before the commit is (old code: accepted 3
    twice, ingested 6, duplicate 0)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    m = _msg(1, T0, a=1.0, b=2.0, c=3.0)
    res = p.ingest_many([("pump-1", m), ("pump-1", m)], via="mqtt")
    assert all(isinstance(r, IngestResult) for r in res)
    assert [(r.accepted, r.duplicates, r.ack_seq) for r in res  # type: ignore[union-attr]
            ] == [(3, 0, 1), (0, 3, 1)]
    assert _counters(p) == {"ingested": 3, "stored": 3, "duplicate": 3, "conflict": 0}
    assert store.count_readings() == 3
    p.close()
    store.close()


class _Deleted:
    """A security store that no longer knows any device."""

    def has_device(self, device_id: str) -> bool:
        return False


def test_a_deleted_devices_message_is_counted_rejected_per_reading(tmp_path: Path) -> None:
    """Check a deleted device's message of 3 readings counts 3 rejected unknown_device and
    none ingested (old code: ingested 3, rejected 1)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), _Deleted(), detect_async=False)
    (r,) = p.ingest_many([("pump-9", _msg(1, T0, a=1.0, b=2.0, c=3.0))], via="mqtt")
    assert getattr(r, "reason", None) == "unknown_device"
    assert p.metrics.get("edgewise_readings_rejected_total", reason="unknown_device") == 3
    assert p.metrics.get("edgewise_readings_ingested_total") == 0
    assert p.metrics.get("edgewise_messages_total", via="mqtt") == 1
    p.close()
    store.close()


# -- 5. only committed readings' names take a device's metric slots -----------------------------
def test_names_of_a_rate_limited_message_take_no_metric_slot(tmp_path: Path) -> None:
    """Check a message refused for the rate limit leaves its new names free: a later metric
    is taken (old code: refused too_many_metrics until a restart)."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path, rate_limit_per_s=1, rate_limit_burst=3,
                                 max_metrics_per_device=4), detect_async=False)
    assert p.ingest("pump-1", _msg(1, T0, a=1.0, b=2.0)).accepted == 2
    with pytest.raises(RateLimitError):
        p.ingest("pump-1", _msg(2, T0 + 1, x=1.0, y=2.0, z=3.0))
    p.rate_limiter.forget("pump-1")  # a full bucket again, without waiting
    r = p.ingest("pump-1", _msg(3, T0 + 5, temp=21.0))
    assert (r.accepted, [e.reason for e in r.rejected]) == (1, [])
    assert sorted(p.metric_cap.known("pump-1")) == ["a", "b", "temp"]
    assert p._names_held == {}
    p.close()
    store.close()


def test_names_of_a_failed_commit_take_no_metric_slot(tmp_path: Path) -> None:
    """Check a batch whose commit failed leaves its new names free, and its resend takes
    them."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path, max_metrics_per_device=2),
                 detect_async=False)
    _flaky(store, "append", 1)
    with pytest.raises(StoreError):
        p.ingest("pump-1", _msg(1, T0, x=1.0, y=2.0))
    assert p.metric_cap.known("pump-1") == frozenset()
    r = p.ingest("pump-1", _msg(2, T0 + 1, a=1.0, b=2.0))
    assert (r.accepted, [e.reason for e in r.rejected]) == (2, [])
    p.close()
    store.close()


def test_names_held_by_a_batch_in_flight_count_towards_the_cap(tmp_path: Path) -> None:
    """Check two batches in flight together never pass the cap: a batch waiting for its
    commit holds its new names' slots, so another batch's new name past them is refused,
    and the names are the device's once committed."""
    store = open_store("duckdb://:memory:")
    real = store.append
    holding, release = threading.Event(), threading.Event()

    def append(readings: Any, seqs: Any = None) -> Any:
        if readings and not holding.is_set():
            holding.set()
            release.wait(20)
        return real(readings, seqs)

    store.append = append  # type: ignore[method-assign]
    p = Pipeline(store, Settings(data_dir=tmp_path, max_metrics_per_device=2),
                 detect_async=False)
    first: list[IngestResult] = []
    t = threading.Thread(target=lambda: first.append(p.ingest("pump-1", _msg(1, T0, a=1.0,
                                                                              b=2.0))))
    t.start()
    try:
        assert holding.wait(10)
        # decoded now, while the first waits: c is past the 2 names a and b hold
        second: list[IngestResult] = []
        t2 = threading.Thread(target=lambda: second.append(
            p.ingest("pump-1", _msg(2, T0 + 1, a=3.0, c=4.0))))
        t2.start()
        time.sleep(0.3)
    finally:
        release.set()
    t.join(10)
    t2.join(10)
    assert first[0].accepted == 2
    assert (second[0].accepted, [e.reason for e in second[0].rejected]) == (
        1, ["too_many_metrics"])
    assert sorted(p.metric_cap.known("pump-1")) == ["a", "b"]
    assert p._names_held == {}
    p.close()
    store.close()


# -- 6. the warning names why a device's T² does not run --------------------------------------
def test_metrics_of_one_time_sent_one_message_each_are_warned_as_such(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Check a device that sends each metric of one time in its own message, committed
    one at a time, is told so, not that its metrics are stamped separately (they are not),
    where row assembly is turned off; on (the default), its rows are put together and it
    gets a T², with no warning."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, _quiet_settings(tmp_path), detect_async=False)
    with caplog.at_level(logging.WARNING, logger="edgewise.gateway.pipeline"):
        for i in range(120):
            p.ingest("pump-1", _msg(2 * i + 1, T0 + i * 60, a=20.0 + i % 3))
            p.ingest("pump-1", _msg(2 * i + 2, T0 + i * 60, b=40.0 + i % 5))
    assert "pump-1" in p._mv and not [r for r in caplog.records if "T²" in r.getMessage()]
    p.close()
    caplog.clear()
    p = Pipeline(store, _quiet_settings(tmp_path), detect_async=False,
                 assemble_split_rows=False)
    with caplog.at_level(logging.WARNING, logger="edgewise.gateway.pipeline"):
        for i in range(120):
            p.ingest("pump-1", _msg(2 * i + 1 + 240, T0 + (i + 120) * 60, a=20.0 + i % 3))
            p.ingest("pump-1", _msg(2 * i + 2 + 240, T0 + (i + 120) * 60, b=40.0 + i % 5))
    (msg,) = [r.getMessage() for r in caplog.records if "T²" in r.getMessage()]
    assert "separate messages" in msg and "stamped separately" not in msg
    assert "send a device's metrics of one reading in one message" in msg
    p.close()
    store.close()
