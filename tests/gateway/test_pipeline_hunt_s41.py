"""Session 41 pipeline hunt: copies of clockless SenML messages, T² and spikes, the
detection backlog, the saved state after a crash and after retention.

* A resent SenML pack with fractional relative times was stored twice: each record's
  time was rounded to the microsecond on its own, so the copy's readings moved by the
  arrivals' gap give or take 1 us, and the copy check wants one shift for all.
* After one message refused or lost, a clockless device's resends were stored twice: the
  acknowledgement stops at the hole, so the device resends the stored messages after it,
  and the check took the device's own later messages, between the two copies, for a
  device that went on (a restarted counter).
* The device's T² learned readings the cleaner flagged as spikes: one glitch blinded it.
* The detection queue was bounded in batches (of up to 4000 messages): memory without end.
* The docstring said the streams warm up from scratch after a crash; the state of the
  last clean stop is loaded.
* The metric cap held within one run only: a restart after retention emptied some names
  seeded it from the store's names while every saved detector came back.
"""

from __future__ import annotations

import json
import pickle
import random
import threading
import time
from pathlib import Path

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline, per_metric_factory
from edgewise.store import open_store
from edgewise.telemetry import Reading

S = 10**9
DAY = 86_400


def _light(store, settings: Settings | None = None, **kw) -> Pipeline:  # type: ignore[no-untyped-def]
    """A pipeline scoring inline with cheap detectors."""
    kw.setdefault("detector_factory", per_metric_factory("ewzscore"))
    return Pipeline(store, settings or Settings(), detect_async=kw.pop("detect_async", False),
                    **kw)


# -- 1. a resent pack with fractional relative times --------------------------------------


def test_a_resent_pack_with_fractional_relative_times_is_stored_once() -> None:
    store = open_store("duckdb://:memory:")
    p = _light(store)
    rnd = random.Random(7)
    start = time.time_ns() - 3600 * S
    n = 40
    for seq in range(1, n + 1):
        body = json.dumps([{"n": "vib", "v": 0.11 * seq, "t": -0.2, "seq": seq},
                           {"n": "vib", "v": 0.12 * seq, "t": -0.1},
                           {"n": "vib", "v": 0.13 * seq}]).encode()
        t1 = start + seq * 30 * S + rnd.randrange(S)
        t2 = t1 + rnd.randrange(S // 10, 10 * S)  # the answer was lost: sent again
        first = p.ingest_many([("pump", body, t1)], via="http")[0]
        again = p.ingest_many([("pump", body, t2)], via="http")[0]
        assert (first.accepted, again.accepted, again.duplicates) == (3, 0, 3), seq
    assert store.count_readings() == 3 * n
    p.close()
    store.close()


# -- 2. resends after a hole --------------------------------------------------------------


class _Device:
    """A clockless SenML device: numbers its messages, keeps each until acknowledged."""

    def __init__(self, p: Pipeline, name: str, value0: float = 100.0) -> None:
        self.p, self.name, self.value0 = p, name, value0
        self.pending: dict[int, bytes] = {}
        self.acked = 0

    def body(self, seq: int) -> bytes:
        return json.dumps([{"n": "kwh", "v": self.value0 + seq, "seq": seq}]).encode()

    def send(self, seq: int, at: int, lost: bool = False) -> None:
        self.pending.setdefault(seq, self.body(seq))
        if lost:
            return
        r = self.p.ingest_many([(self.name, self.pending[seq], at)], via="mqtt")[0]
        self.acked = max(self.acked, r.ack_seq)  # type: ignore[union-attr]
        for s in [s for s in self.pending if s <= self.acked]:
            del self.pending[s]


def test_resends_after_a_lost_message_are_stored_once() -> None:
    store = open_store("duckdb://:memory:")
    p = _light(store)
    t0 = time.time_ns() - 3600 * S
    dev = _Device(p, "meter")
    for seq in range(1, 13):  # one a second; seq 5 lost on the way
        dev.send(seq, t0 + seq * S, lost=seq == 5)
    assert dev.acked == 4 and sorted(dev.pending) == list(range(5, 13))
    for k, seq in enumerate(sorted(dev.pending)):  # no ack for a while: resend them all
        dev.send(seq, t0 + 13 * S + k * 10**7)
    assert dev.acked == 12 and not dev.pending
    values = [v for _, _, v in store.query("meter", "kwh")]
    assert sorted(values) == [100.0 + s for s in range(1, 13)]  # each once
    # a second round of the same (an ack lost again) is no new data either
    for k, seq in enumerate(range(6, 13)):
        r = p.ingest_many([("meter", dev.body(seq), t0 + 20 * S + k * 10**7)], via="mqtt")[0]
        assert r.duplicates == 1, seq  # type: ignore[union-attr]
    p.close()
    store.close()


def test_a_restarted_counter_after_a_hole_is_still_stored() -> None:
    """The other side: a device that restarts its seqs at 1 (a reboot) after a hole in its
    first run, and whose seqs 6.. repeat the very messages of its first run, is new data,
    not a copy: it stored seqs 1..4 again, which had been acknowledged (a device never
    resends those)."""
    store = open_store("duckdb://:memory:")
    p = _light(store)
    t0 = time.time_ns() - 3600 * S
    dev = _Device(p, "meter")
    for seq in range(1, 9):  # seq 5 lost
        dev.send(seq, t0 + seq * S, lost=seq == 5)
    assert dev.acked == 4
    again = _Device(p, "meter", value0=200.0)  # rebooted: counter at 1
    for seq in range(1, 6):
        again.send(seq, t0 + (30 + seq) * S)
    for seq in range(6, 9):  # the first run's messages, to the value
        again.pending[seq] = dev.body(seq)
        again.send(seq, t0 + (30 + seq) * S)
    values = [v for _, _, v in store.query("meter", "kwh")]
    assert len(values) == 15, sorted(values)  # 7 of the first run, all 8 of the second
    p.close()
    store.close()


# -- 3. T² and spikes ---------------------------------------------------------------------


def test_the_device_t2_does_not_learn_a_flagged_spike() -> None:
    store = open_store("duckdb://:memory:")
    p = _light(store, fast_gate=None, cross_gate=None)
    rnd = random.Random(2)
    t0 = 1_700_000_000

    def row(i: int, a: float, b: float) -> None:
        ts = (t0 + 60 * i) * S
        p.detect([Reading("pump", "a", ts, a, i + 1), Reading("pump", "b", ts, b, i + 1)])

    for i in range(300):
        x = rnd.gauss(0, 1)
        row(i, 50 + 5 * x + rnd.gauss(0, 0.3), 20 + 2 * x + rnd.gauss(0, 0.2))
    row(300, 5000.0, 20.0)  # one glitch of a
    assert p.quality_counts("pump")["metrics"]["a"]["flagged"] == {"spike": 1}
    mv = p._mv["pump"]
    assert mv.n_ == 300  # type: ignore[attr-defined]
    # b breaking from a, each in range: only T² sees it, and it still does
    x = 1.5
    assert mv.score_one({"a": 50 + 5 * x, "b": 20 - 2 * x}) >= p.alerts.threshold
    p.close()
    store.close()


# -- 4. the detection backlog, bounded in readings -----------------------------------------


def test_the_detection_backlog_is_bounded_in_readings_and_never_blocks_ingest() -> None:
    store = open_store("duckdb://:memory:")
    p = _light(store, Settings(rate_limit_per_s=1e6, rate_limit_burst=1e6), detect_async=True)
    p.max_backlog_readings = 50
    t0 = int(time.time()) - DAY
    metrics = {f"m{j}": 1.0 for j in range(5)}
    with p._detect_lock:  # detection stalls on its first batch
        started = time.monotonic()
        for k in range(40):  # 40 batches of 2 messages of 5 readings
            p.ingest_many([(f"pump-{i}", json.dumps(
                {"ts": t0 + k, "metrics": metrics, "seq": k + 1}).encode()) for i in range(2)])
        assert time.monotonic() - started < 20  # ingest went on
        queued = sum(len(b) for b in list(p._queue.queue) if b)
        assert queued <= 50, queued
        unscored = p.metrics.get("edgewise_readings_late_unscored_total")
        assert unscored >= 400 - 50 - 10, unscored  # all past the budget (and one batch taken)
    assert p.flush(30)
    scored = p.metrics.get("edgewise_readings_scored_total")
    assert scored + unscored == 400 and store.count_readings() == 400
    assert p._queued_readings == 0
    p.close()
    store.close()


# -- 5. after a crash: the last clean stop's state ------------------------------------------


def test_after_a_crash_the_last_clean_stops_state_is_loaded_as_documented(tmp_path: Path) -> None:
    doc = " ".join((Pipeline.__doc__ or "").split())
    assert "warm up from scratch" not in doc
    assert "After a crash the file as last written is loaded: that of the last clean stop" in doc
    state = tmp_path / "detectors.pickle"
    url = f"duckdb:///{tmp_path / 's.duckdb'}"
    t0 = int(time.time()) - 10_000

    def feed(p: Pipeline, lo: int, hi: int) -> None:
        for i in range(lo, hi):
            p.ingest("pump", json.dumps({"ts": t0 + 10 * i, "metrics": {"temp": 20 + i % 7},
                                         "seq": i + 1}).encode())

    store = open_store(url)
    p = _light(store, state_path=state)
    feed(p, 0, 20)
    p.close()  # a clean stop
    store.close()
    store = open_store(url)
    p = _light(store, state_path=state)
    feed(p, 20, 40)
    store.close()  # a crash: no close
    store = open_store(url)
    p = _light(store, state_path=state)
    assert p._last_scored[("pump", "temp")] == (t0 + 10 * 19) * S  # the clean stop's
    p.close()
    store.close()


# -- 6. the metric cap across restarts ------------------------------------------------------


def _send(p: Pipeline, device: str, ts: int, seq: int, names: list[str]) -> int:
    """One message of ``names``; return how many of its readings were refused."""
    r = p.ingest(device, json.dumps({"ts": ts, "seq": seq,
                                     "metrics": {n: float(seq % 7) for n in names}}).encode())
    return len(r.rejected)


def _saved_streams(state: Path, device: str) -> set[str]:
    with open(state, "rb") as f:
        st = pickle.load(f)
    return {k[1] for part in ("detectors", "last_scored", "cleaner") for k in st[part]
            if k[0] == device}


def test_names_retention_emptied_leave_the_cap_and_the_saved_state(tmp_path: Path) -> None:
    """A device whose readings retention took, all of them or some names', comes back
    with new names after a restart: its detectors stay within the cap, and the new
    names are taken, not refused for names that hold no readings any more."""
    settings = Settings(max_metrics_per_device=2)
    state = tmp_path / "detectors.pickle"
    url = f"duckdb:///{tmp_path / 's.duckdb'}"
    now = int(time.time())
    cycles = [["a0", "a1"], ["b0", "b1"], ["keep", "c1"], ["keep", "d1"]]
    for k, names in enumerate(cycles):
        store = open_store(url)
        p = _light(store, settings, state_path=state)
        base = now - (10 - k) * DAY
        refused = sum(_send(p, "pump-1", base + 60 * i, 100 * k + i + 1, names)
                      for i in range(5))
        if k == 2:  # "keep" goes on past the next retention cut
            _send(p, "pump-1", base + 2 * DAY, 100 * k + 50, ["keep"])
        p.close()
        assert refused == 0, (k, names)
        assert _saved_streams(state, "pump-1") <= {"keep", *names}, k
        store.delete_before((base + DAY) * S)  # retention takes this cycle's readings
        store.close()


def test_the_cap_counts_the_names_of_the_saved_streams(tmp_path: Path) -> None:
    """A store that never held the device's readings (no retention cut): its saved streams'
    names still count towards its cap."""
    state = tmp_path / "detectors.pickle"
    settings = Settings(max_metrics_per_device=2)
    store = open_store("duckdb://:memory:")
    p = _light(store, settings, state_path=state)
    ts = int(time.time()) - 600
    assert _send(p, "pump-1", ts, 1, ["x", "y"]) == 0
    p.close()
    store.close()
    store = open_store("duckdb://:memory:")
    p = _light(store, settings, state_path=state)
    assert sorted(p.metric_cap.known("pump-1")) == ["x", "y"]
    assert _send(p, "pump-1", ts + 1, 2, ["z"]) == 1  # past the cap
    p.close()
    store.close()


def test_the_backlog_reading_count_comes_back_to_zero() -> None:
    """Many threads committing while detection runs: the readings counted in the backlog
    come back to 0 once all is scored."""
    store = open_store("duckdb://:memory:")
    p = _light(store, Settings(rate_limit_per_s=1e6, rate_limit_burst=1e6), detect_async=True)
    t0 = int(time.time()) - DAY

    def run(i: int) -> None:
        for k in range(20):
            p.ingest(f"pump-{i}", json.dumps({"ts": t0 + k, "metrics": {"a": 1.0, "b": 2.0},
                                              "seq": k + 1}).encode())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert p.flush(30) and p._queued_readings == 0
    assert p.metrics.get("edgewise_readings_scored_total") == 160
    p.close()
    store.close()
