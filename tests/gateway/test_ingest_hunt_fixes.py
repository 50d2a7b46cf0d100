"""Four ingest-path bugs a report-only hunt proved, each checked on a real store.

- sparse seqs (2, 4, 6, ...) raised one seq_gap alert per hole, on the detection worker,
  which stalled the scoring of every other device;
- an over-limit gzipped MQTT message was never acknowledged (its seqs were read from the
  still-gzipped bytes);
- a failed commit spent the device's rate limit and counted its readings as ingested;
- SenML without a time, re-delivered under the same seq, was stored twice.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from edgewise.config import Settings
from edgewise.errors import PayloadError, RateLimitError, StoreError
from edgewise.gateway.pipeline import IngestResult, Pipeline
from edgewise.store import open_store

T0 = int(time.time()) - 3600


def _msg(seq: int, ts: float, **metrics: float) -> bytes:
    return json.dumps({"ts": ts, "metrics": metrics, "seq": seq}).encode()


def test_sparse_seqs_raise_one_bounded_gap_alert_that_settles(tmp_path: Path) -> None:
    """Check one message with seqs 2, 4, ..., 1000 raises one seq_gap alert naming the
    500 missing seqs in 500 ranges (first few shown), not 500 alerts; once they all
    arrive the gateway acknowledges it."""
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0, detect_async=False)
    try:
        body = json.dumps([{"ts": T0 + k, "metrics": {"a": 1.0}, "seq": 2 * k}
                           for k in range(1, 501)]).encode()
        p.ingest("pump-1", body, via="mqtt")
        (alert,) = p.check_gaps(now=time.monotonic() + 1)
        assert alert.message == ("messages seq 1..999 missing (500) in 500 ranges: "
                                 "1..1, 3..3, 5..5, 7..7, 9..9, ...")
        assert p.check_gaps(now=time.monotonic() + 2) == []
        assert p.metrics.get("edgewise_seq_missing_total") == 500
        odd = json.dumps([{"ts": T0 + k, "metrics": {"b": 1.0}, "seq": 2 * k - 1}
                          for k in range(1, 500)]).encode()  # 1..997: 999 still missing
        p.ingest("pump-1", odd, via="mqtt")
        p.check_gaps(now=time.monotonic() + 3)
        (gap,) = store.list_alerts(device_id="pump-1", kind="seq_gap")
        assert (gap.status, gap.message) == ("open", alert.message
                                             + "; 999..999 still missing (1)")
        p.ingest("pump-1", _msg(999, T0 + 999, b=1.0), via="mqtt")
        p.check_gaps(now=time.monotonic() + 4)
        (gap,) = store.list_alerts(device_id="pump-1", kind="seq_gap")
        assert (gap.status, gap.acked_by) == ("acknowledged", "gateway")
        assert gap.message == alert.message + ", all arrived later"
    finally:
        p.close()
        store.close()


def test_a_slow_gap_check_does_not_hold_up_scoring(tmp_path: Path) -> None:
    """Check detection keeps scoring while a seq-gap check is under way (held here for
    as long as a device's many gaps took): the gap check ran on the detection worker,
    and another device's reading waited ~90 s to be scored."""
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0)
    try:
        with p._gap_check_lock:  # a gap check that takes long
            p.ingest("pump-1", _msg(1, T0, a=1.0))
            time.sleep(1.5)  # the worker's (old) once-a-second gap check is due
            p.ingest("pump-2", _msg(1, T0, a=1.0))
            assert p.flush(timeout=3.0), "pump-2's reading was not scored"
    finally:
        p.close()
        store.close()


def test_an_over_limit_gzipped_message_is_acknowledged_and_a_bomb_is_not_read(
        tmp_path: Path) -> None:
    """Check an MQTT message too large once inflated counts towards the ack as the same
    message plain does (its seqs are read from the inflated bytes), while a gzip bomb
    stays unread (inflated no further than the bounded scan)."""
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path, max_payload_bytes=4096),
                 detect_async=False)
    try:
        big = json.dumps({"ts": T0 + 2, "metrics": {"a": 2.0}, "seq": 2,
                          "units": {"x": "y" * 6000}}).encode()
        for dev, payload in (("plain", big), ("zipped", gzip.compress(big))):
            out = p.ingest_many([(dev, _msg(1, T0 + 1, a=1.0)), (dev, payload),
                                 (dev, _msg(3, T0 + 3, a=3.0))], via="mqtt")
            assert [o.ack_seq for o in out if isinstance(o, IngestResult)] == [3, 3, 3], dev
            assert store.seq_watermark(dev) == 3, dev
        # 1 MiB of spaces and a seq: over the 64 KiB scan once inflated, so never read
        bomb = gzip.compress(b'{"seq": 1, "pad": "' + b" " * (1 << 20) + b'"}')
        assert len(bomb) < 4096
        (res,) = p.ingest_many([("bomb", bomb)], via="mqtt")
        assert isinstance(res, PayloadError) and res.reason == "too_large"
        assert store.seq_watermark("bomb") == 0
    finally:
        p.close()
        store.close()


@pytest.mark.postgres
def test_a_failed_commit_leaves_the_rate_limit_and_counts_alone(
        postgres_url: str, tmp_path: Path) -> None:
    """Check a commit that fails (PostgreSQL's readings table is away) spends none of the
    device's rate limit and counts nothing as ingested: its resend, once the store is
    back, is stored. It was refused as over the rate limit, and 100 readings counted as
    ingested with none stored."""
    schema = f"ew_hunt_{uuid.uuid4().hex[:10]}"
    store = open_store(f"{postgres_url}?schema={schema}")
    p = Pipeline(store, Settings(data_dir=tmp_path, rate_limit_per_s=10,
                                 rate_limit_burst=100), detect_async=False)
    body = json.dumps({"ts": T0, "metrics": {f"m{i}": float(i) for i in range(100)},
                       "seq": 1}).encode()
    try:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"ALTER TABLE {schema}.readings RENAME TO readings_away")
            try:
                with pytest.raises(StoreError):
                    p.ingest("pump-1", body)
            finally:
                admin.execute(f"ALTER TABLE {schema}.readings_away RENAME TO readings")
        assert p.metrics.get("edgewise_readings_ingested_total") == 0
        assert p.metrics.get("edgewise_messages_total") == 0  # counted once, when stored
        try:
            r = p.ingest("pump-1", body)
        except RateLimitError as exc:
            pytest.fail(f"the resend was refused: {exc}")
        assert (r.accepted, r.ack_seq) == (100, 1)
        assert p.metrics.get("edgewise_readings_ingested_total") == 100
        assert p.metrics.get("edgewise_messages_total", via="http") == 1
        assert store.count_readings() == 100
    finally:
        p.close()
        store.close()
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_senml_with_arrival_times_is_not_stored_twice_when_redelivered(
        tmp_path: Path) -> None:
    """Check SenML without a time, delivered again under the same seq (a lost ack), is
    acknowledged as a duplicate and not stored a second time, also by a gateway started
    since; a device whose seq counter restarted still has its new readings stored."""
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    body = b'[{"bn": "pump-1/", "n": "temp_c", "v": 21.5, "seq": 1}]'
    try:
        assert p.ingest("pump-1", body, via="mqtt").accepted == 1
        time.sleep(0.01)
        again = p.ingest("pump-1", body, via="mqtt")
        assert (again.accepted, again.duplicates, again.ack_seq) == (0, 1, 1)
        assert store.count_readings() == 1
        # relative times (bt + t) and two records under one seq, from a new gateway
        pack = b'[{"bt": -5, "n": "a", "v": 1, "seq": 2}, {"t": 1, "n": "b", "v": 2}]'
        assert p.ingest("pump-1", pack, via="mqtt").accepted == 2
    finally:
        p.close()
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    try:
        time.sleep(0.01)
        assert p.ingest("pump-1", pack, via="mqtt").duplicates == 2
        assert store.count_readings() == 3
        # the device restarts its seq counter: seq 1 again, with a new value: stored
        restarted = p.ingest("pump-1", b'[{"n": "temp_c", "v": 22.0, "seq": 1}]', via="mqtt")
        assert (restarted.accepted, restarted.duplicates) == (1, 0)
        assert store.count_readings() == 4
    finally:
        p.close()
        store.close()


def test_concurrent_gap_checks_report_once(tmp_path: Path) -> None:
    """Check two gap checks at once (the gap thread and a caller) report a device's
    holes in one alert between them."""
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0, detect_async=False)
    try:
        p.ingest("pump-1", json.dumps([{"ts": T0 + k, "metrics": {"a": 1.0}, "seq": 3 * k}
                                       for k in range(1, 50)]).encode())
        got: list[int] = []
        ts = [threading.Thread(target=lambda: got.append(len(p.check_gaps(
            now=time.monotonic() + 1)))) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert sorted(got) == [0, 1]
        assert len(store.list_alerts(device_id="pump-1", kind="seq_gap")) == 1
    finally:
        p.close()
        store.close()


def test_seq_bookkeeping_grows_with_holes_not_seqs(tmp_path: Path) -> None:
    """Check the store's seq bookkeeping for a device that lost seq 1 for good and sent
    200,000 seqs since holds one run in memory (it held every seq, and sorted them all
    at each gap check), and still tells its one gap."""
    import tracemalloc

    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    try:
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        store._seqs.add("pump-1", range(2, 200_002))  # type: ignore[attr-defined]
        held = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(
            before, "filename") if s.size_diff > 0)
        tracemalloc.stop()
        assert held < 1_000_000, held
        assert store.seq_gaps("pump-1") == [(1, 1)]
        assert store.seq_watermark("pump-1") == 0
    finally:
        store.close()
