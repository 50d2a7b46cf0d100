"""The ingest pipeline against a real DuckDB store: validation, commit, dedup, gaps, detection."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edgewise.config import Settings
from edgewise.errors import PayloadError, RateLimitError
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store

T0 = 1_700_000_000


def _msg(seq: int, ts: float, **metrics: float) -> bytes:
    return json.dumps({"ts": ts, "metrics": metrics, "seq": seq}).encode()


@pytest.fixture
def pipe(tmp_path):
    store = open_store(f"duckdb:///{tmp_path / 'p.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0)
    yield p
    p.close()
    store.close()


def test_ingest_commits_and_acks_watermark(pipe: Pipeline) -> None:
    r = pipe.ingest("pump-1", _msg(1, T0, a=1.0, b=2.0))
    assert (r.accepted, r.ack_seq) == (2, 1)
    assert pipe.store.count_readings() == 2
    r = pipe.ingest("pump-1", _msg(1, T0, a=1.0, b=2.0))  # re-delivered
    assert (r.accepted, r.duplicates, r.ack_seq) == (0, 2, 1)
    assert pipe.store.count_readings() == 2
    assert pipe.metrics.get("edgewise_readings_duplicate_total") == 2


def test_one_bad_record_keeps_the_good_ones(pipe: Pipeline) -> None:
    body = json.dumps([
        {"ts": T0, "metrics": {"a": 1.0}, "seq": 1},
        {"ts": T0 + 1, "metrics": {"a": "hot"}, "seq": 2},
        {"ts": "yesterday", "metrics": {"a": 3.0}, "seq": 3},
    ]).encode()
    r = pipe.ingest("pump-1", body)
    assert r.accepted == 1
    assert sorted(e.reason for e in r.rejected) == ["bad_ts", "bad_type"]
    assert [e.index for e in r.rejected if e.reason == "bad_type"] == [1]
    assert pipe.metrics.get("edgewise_readings_rejected_total", reason="bad_type") == 1
    assert pipe.store.count_readings() == 1


def test_whole_payload_errors_raise(pipe: Pipeline) -> None:
    with pytest.raises(PayloadError) as e:
        pipe.ingest("pump-1", b"{not json")
    assert e.value.reason == "bad_json"
    with pytest.raises(PayloadError) as e:
        pipe.ingest("pump-1", b"x" * (pipe.settings.max_payload_bytes + 1))
    assert e.value.reason == "too_large"
    assert pipe.store.count_readings() == 0


def test_rate_limit_refuses_and_stores_nothing(tmp_path) -> None:
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path, rate_limit_per_s=5, rate_limit_burst=10))
    try:
        p.ingest("pump-1", _msg(1, T0, **{f"m{i}": float(i) for i in range(8)}))
        with pytest.raises(RateLimitError) as e:
            p.ingest("pump-1", _msg(2, T0 + 1, **{f"m{i}": float(i) for i in range(8)}))
        assert e.value.retry_after_s > 0
        assert store.count_readings() == 8
        assert p.metrics.get("edgewise_readings_rejected_total", reason="rate_limited") == 8
        p.ingest("pump-2", _msg(1, T0, a=1.0))  # other devices are not affected
    finally:
        p.close()
        store.close()


def test_seq_gap_is_reported_once_after_grace(pipe: Pipeline) -> None:
    for s in (1, 2, 5, 6):
        pipe.ingest("pump-1", _msg(s, T0 + s, a=float(s)))
    assert pipe.ingest("pump-1", _msg(6, T0 + 6, a=6.0)).ack_seq == 2
    # The detection worker also checks gaps every second (grace is 0 here), so either it
    # or this call reports the gap; either way it is reported exactly once.
    pipe.check_gaps(now=time.monotonic() + 1)
    assert pipe.check_gaps(now=time.monotonic() + 2) == []
    gap_alerts = pipe.store.list_alerts(kind="seq_gap")
    assert [a.message for a in gap_alerts] == ["messages seq 3..4 missing (2)"]
    assert pipe.metrics.get("edgewise_seq_gaps_total") == 1
    # the late messages arrive: the watermark moves on, no new gap
    pipe.ingest("pump-1", _msg(3, T0 + 3, a=3.0))
    assert pipe.ingest("pump-1", _msg(4, T0 + 4, a=4.0)).ack_seq == 6
    assert pipe.check_gaps(now=time.monotonic() + 3) == []
    assert pipe.store.list_alerts(kind="seq_gap")[0].device_id == "pump-1"


def test_gap_within_grace_is_not_reported(tmp_path) -> None:
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=60.0)
    try:
        p.ingest("pump-1", _msg(2, T0, a=1.0))
        assert p.check_gaps() == []
        p.ingest("pump-1", _msg(1, T0 - 1, a=1.0))
        assert p.check_gaps(now=time.monotonic() + 120) == []
    finally:
        p.close()
        store.close()


def _stream(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        q = 100 + rng.normal(0, 1)
        yield i, {"flow": q, "current": 0.3 * q + rng.normal(0, 0.1),
                  "temp": 50 + rng.normal(0, 0.2)}


def test_a_fault_raises_one_merged_alert_with_drivers(pipe: Pipeline) -> None:
    # five minutes of normal readings, ten messages a commit (a commit each took 4 s of
    # this test); the fault's messages below come one at a time
    warm = [("pump-1", _msg(i + 1, T0 + i, **m)) for i, m in _stream(300)]
    for k in range(0, len(warm), 10):
        res = pipe.ingest_many(warm[k:k + 10], via="http")
        assert not [x for x in res if isinstance(x, Exception)], res
    assert pipe.flush()
    assert pipe.store.list_alerts(kind="anomaly") == []
    for k in range(10):  # a 10-second bearing fault: temperature far off
        i = 300 + k
        pipe.ingest("pump-1", _msg(i + 1, T0 + i, flow=100.0, current=30.0, temp=70.0 + k))
    assert pipe.flush()
    alerts = pipe.store.list_alerts(kind="anomaly")
    assert len(alerts) == 1
    a = alerts[0]
    assert a.device_id == "pump-1" and a.score >= 0.9
    assert a.start_ns == (T0 + 300) * 10**9
    assert (T0 + 300) * 10**9 < a.end_ns <= (T0 + 309) * 10**9  # later readings merged in
    assert max(a.drivers, key=a.drivers.get) == "temp"
    assert pipe.metrics.get("edgewise_alerts_total", kind="anomaly") == 1


def test_late_backlog_is_stored_but_not_scored(pipe: Pipeline) -> None:
    for i, m in _stream(100):
        pipe.ingest("pump-1", _msg(i + 1, T0 + 3600 + i, **m))
    # an hour-old backlog arrives late with wild values: stored, not scored, no storm
    for i in range(50):
        pipe.ingest("pump-1", _msg(200 + i, T0 + i, flow=500.0, current=1.0, temp=99.0))
    assert pipe.flush()
    assert pipe.store.count_readings() == 150 * 3
    assert pipe.metrics.get("edgewise_readings_late_unscored_total") == 150
    assert pipe.store.list_alerts(kind="anomaly") == []


def test_out_of_order_within_horizon_is_scored_without_storm(pipe: Pipeline) -> None:
    items = list(_stream(400, seed=3))
    rng = np.random.default_rng(1)
    order = np.arange(400)
    for j in range(0, 400, 10):  # shuffle within blocks of 10 s
        rng.shuffle(order[j:j + 10])
    msgs = [("pump-1", _msg(int(i) + 1, T0 + int(i), **items[i][1])) for i in order]
    # seven messages a commit (a commit each was nearly all of this test's time): detection
    # takes a batch's readings in the order sent, so it sees the same 186 steps back in time
    # as one message a commit gave; 7 does not divide the shuffled blocks of 10, so batches
    # straddle them
    for k in range(0, len(msgs), 7):
        res = pipe.ingest_many(msgs[k:k + 7], via="http")
        assert not [x for x in res if isinstance(x, Exception)], res
    assert pipe.flush()
    assert pipe.metrics.get("edgewise_readings_scored_total") == 1200
    assert len(pipe.store.list_alerts(kind="anomaly")) <= 1
    assert pipe.store.seq_watermark("pump-1") == 400


def test_ack_is_not_delayed_by_slow_detection(tmp_path) -> None:
    """Acks come while detection is held back: every message is stored and acked, none of
    its readings scored yet. (A bound on the ack time alone, 1 s against 2 s of detection,
    failed on a loaded CI machine at 1.35 s; holding detection shut is the same check with
    no race.)"""
    import threading

    from edgewise.detect.zscore import EWZScore

    gate = threading.Event()

    class Slow(EWZScore):
        def score_one(self, x):
            gate.wait(5.0)  # detection held until the acks are in (5 s at most)
            return super().score_one(x)

    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), detector_factory=Slow)
    try:
        t0 = time.perf_counter()
        for i in range(20):
            p.ingest("pump-1", _msg(i + 1, T0 + i, a=1.0, b=2.0))
        acked = time.perf_counter() - t0
        # an ack that waited for detection would wait out the gate: 5 s for the first
        assert acked < 5.0, acked
        assert p.store.seq_watermark("pump-1") == 20
        assert p.metrics.get("edgewise_readings_scored_total") == 0
        gate.set()
        assert p.flush(timeout=10)
        assert p.metrics.get("edgewise_readings_scored_total") == 40
    finally:
        p.close()
        store.close()


def test_detector_state_survives_a_clean_restart(tmp_path) -> None:
    state = tmp_path / "detectors.pickle"
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), state_path=state)
    for i, m in _stream(100):
        p.ingest("pump-1", _msg(i + 1, T0 + i, **m))
    p.close()
    assert state.exists()
    p2 = Pipeline(store, Settings(data_dir=tmp_path), state_path=state)
    try:  # warmed up already: the first reading after the restart can alert
        p2.ingest("pump-1", _msg(101, T0 + 101, flow=100.0, current=30.0, temp=80.0))
        assert p2.flush()
        assert len(store.list_alerts(kind="anomaly")) == 1
    finally:
        p2.close()
        store.close()


def test_an_energy_meter_is_scored_by_its_increments(pipe: Pipeline) -> None:
    """Check that a cumulative meter (kWh, one reading a minute for two days) raises a
    handful of alerts through the gateway, not one every hour or so as a level would, and
    that winding it back raises one."""
    rng = np.random.default_rng(2)
    t = np.arange(2 * 1440)
    load = np.clip(1 + 0.5 * np.sin(2 * np.pi * t / 1440) + 0.05 * rng.standard_normal(len(t)),
                   0, None) * 0.01
    kwh = np.round(5000.0 + np.cumsum(load), 2)
    kwh[2500:] -= 2.0  # wound back
    for start in range(0, len(t), 120):
        body = json.dumps([{"ts": T0 + 60 * i, "metrics": {"kwh": float(kwh[i])}, "seq": i + 1}
                           for i in range(start, min(start + 120, len(t)))]).encode()
        assert pipe.ingest("meter-7", body).accepted == min(120, len(t) - start)
    assert pipe.flush(timeout=30)
    alerts = pipe.store.list_alerts(kind="anomaly")
    assert 1 <= len(alerts) <= 4, [(a.start_ns // 10**9 - T0) // 60 for a in alerts]
    assert any(a.start_ns == (T0 + 60 * 2500) * 10**9 for a in alerts)


def test_a_seq_reused_in_one_batch_keeps_its_other_readings(pipe: Pipeline) -> None:
    """Check a batch holding one seq three times (the same message twice, then the seq
    reused for another value at the same time and for a reading at a new time) stores the
    new reading and records the conflict, as it does when they come in separate batches;
    every message after the first was dropped as a repeat of it."""
    first = _msg(7, T0, b=1.0)
    out = pipe.ingest_many([("pump-9", first), ("pump-9", first), ("pump-9", _msg(7, T0, b=2.0)),
                            ("pump-9", _msg(7, T0 + 1, b=3.0))])
    assert all(r.ack_seq == 0 for r in out)  # seq 7 alone: 1..6 missing
    assert sorted(v for _, _, v in pipe.store.query("pump-9")) == [1.0, 3.0]
    assert pipe.metrics.get("edgewise_readings_conflict_total") == 1
    assert pipe.metrics.get("edgewise_readings_stored_total") == 2


def test_a_refused_mqtt_message_with_a_readable_seq_moves_the_ack(pipe: Pipeline) -> None:
    """Check a message refused whole over MQTT (too large: 30,000 metrics) whose seq can
    still be read counts towards the ack, as a refused record does; before, the ack stayed
    at 1 for good and the device resent everything after it for ever. Over HTTP the
    refusal stays the request's answer, and an unreadable message has no seq to count."""
    big = json.dumps({"ts": T0 + 1, "seq": 2,
                      "metrics": {f"m{i}": 1.0 for i in range(30_000)}}).encode()
    assert len(big) > pipe.settings.max_payload_bytes
    out = pipe.ingest_many([("pump-1", _msg(1, T0, a=1.0)), ("pump-1", big),
                            ("pump-1", _msg(3, T0 + 2, a=1.0))], via="mqtt")
    assert [r.ack_seq for r in out] == [3, 3, 3]
    assert [e.reason for e in out[1].rejected] == ["too_large"]
    assert pipe.store.count_readings() == 2
    with pytest.raises(PayloadError):
        pipe.ingest("pump-1", big.replace(b'"seq": 2', b'"seq": 4'))
    [bad] = pipe.ingest_many([("pump-1", b'{"ts": 1, "seq": 5, "metr')], via="mqtt")
    assert isinstance(bad, PayloadError) and bad.reason == "bad_json"
    assert pipe.store.seq_watermark("pump-1") == 3
