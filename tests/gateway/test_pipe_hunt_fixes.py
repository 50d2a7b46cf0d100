"""Live-path defects found by the pipeline hunt: a reading the store refused (a conflict, a
re-delivery) was scored, the cleaner's stream state was lost on a restart, a huge deviation
split the blame equally, and a forgotten device kept its rate-limit bucket."""

from __future__ import annotations

import json
import math
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from edgewise.config import Settings
from edgewise.detect.mahalanobis import Mahalanobis
from edgewise.explain.linear import conditional_shares
from edgewise.gateway.pipeline import Pipeline, default_multivariate_factory
from edgewise.security.ratelimit import RateLimiter
from edgewise.store import open_store

T0 = 1_700_000_000


def _msgs(n: int, seed: int = 0, rpm: bool = False) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        m = {"temp": 20 + rng.gauss(0, 0.5)}
        if rpm:
            m["rpm"] = 1450 + rng.gauss(0, 5)
        out.append(json.dumps({"ts": T0 + k * 10, "metrics": m, "seq": k + 1}).encode())
    return out


# -- 1. only what the store stored is scored ---------------------------------------------
def test_a_conflicting_resend_is_not_scored_or_alerted(tmp_path: Path) -> None:
    """Check a reading re-sent at a stored time with another value (the store keeps the
    first: a conflict) is not scored: no alert on a value the store does not hold (it raised
    'Anomalous temp (100%)')."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False, gap_grace_s=0.0)
    try:
        ms = _msgs(600)
        for i in range(0, 600, 50):
            p.ingest("pump-1", b"[" + b",".join(ms[i:i + 50]) + b"]")
        scored = p.metrics.get("edgewise_readings_scored_total")
        old_ts = T0 + 598 * 10
        r = p.ingest("pump-1", json.dumps(
            {"ts": old_ts, "metrics": {"temp": 900.0}, "seq": 601}).encode())
        p.flush()
        assert (r.accepted, r.conflicts) == (0, 1)
        assert store.list_alerts(device_id="pump-1", kind="anomaly") == []
        assert p.metrics.get("edgewise_readings_scored_total") == scored
        # still counted by the cleaner
        assert p.quality_counts("pump-1")["metrics"]["temp"]["seen"] == 601
    finally:
        p.close()
        store.close()


def test_a_redelivered_older_message_is_not_scored_again(tmp_path: Path) -> None:
    """Check a message re-delivered in a batch with a new one (so not caught before the
    commit) and not its stream's newest is not scored or learned twice: only the new
    message's reading is scored."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    try:
        ms = _msgs(50)
        for m in ms[:40]:
            p.ingest("pump-1", m)
        before = p.metrics.get("edgewise_readings_scored_total")
        det = p._detectors[("pump-1", "temp")]
        blob = pickle.dumps(det)
        p.ingest_many([("pump-1", ms[37]), ("pump-1", ms[40])])
        p.flush()
        assert p.metrics.get("edgewise_readings_scored_total") == before + 1
        assert pickle.dumps(det) != blob  # the new one was learned
    finally:
        p.close()
        store.close()


class _NoPositionsStore:
    """A store whose AppendResult does not say which readings it stored."""

    def __init__(self, inner: object) -> None:
        self._inner = inner

    def append(self, *a: object, **kw: object) -> object:
        res = self._inner.append(*a, **kw)
        res.stored_positions = None
        return res

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_a_store_that_does_not_say_takes_all_as_stored(tmp_path: Path) -> None:
    """Check a store without ``stored_positions`` (None) keeps the old behaviour: the
    readings of a commit are all handed to detection."""
    inner = open_store("duckdb://:memory:")
    p = Pipeline(_NoPositionsStore(inner), Settings(data_dir=tmp_path),  # type: ignore[arg-type]
                 detect_async=False, cleaner=False)
    try:
        ms = _msgs(5)
        for m in ms:
            p.ingest("pump-1", m)
        p.ingest_many([("pump-1", ms[2]), ("pump-1", ms[4])])
        assert p.metrics.get("edgewise_readings_scored_total") == 7
    finally:
        p.close()
        inner.close()


def test_without_a_cleaner_a_conflict_is_not_scored(tmp_path: Path) -> None:
    """Check with no cleaner the refused readings are left out before detection too."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False, cleaner=False)
    try:
        ms = _msgs(5)
        for m in ms:
            p.ingest("pump-1", m)
        p.ingest_many([("pump-1", json.dumps(
            {"ts": T0 + 20, "metrics": {"temp": 900.0}, "seq": 9}).encode()),
            ("pump-1", _msgs(6)[5])])
        assert p.metrics.get("edgewise_readings_scored_total") == 6
    finally:
        p.close()
        store.close()


# -- 2. the cleaner's stream state survives a clean restart --------------------------------
def _restart_pair(tmp_path: Path) -> tuple[object, Path]:
    store = open_store(f"duckdb:///{tmp_path / 's.duckdb'}")
    return store, tmp_path / "detectors.pickle"


def test_a_restart_keeps_the_cleaners_stream_state(tmp_path: Path) -> None:
    """Check after a clean restart the spike test judges the first new reading (it was off
    for 5 readings: the kept window was lost) and the stuck run goes on."""
    store, sp = _restart_pair(tmp_path)
    mk = lambda: Pipeline(store, Settings(data_dir=tmp_path), detect_async=False,  # noqa: E731
                          state_path=sp)
    p = mk()
    try:
        for m in _msgs(100):
            p.ingest("pump-1", m)
        p.close()
        p = mk()
        st = p.cleaner._state[("pump-1", "temp")]
        assert st.last_ts == (T0 + 990) * 10**9 and len(st.window) == 15
        p.ingest("pump-1", json.dumps(
            {"ts": T0 + 1000, "metrics": {"temp": 60.0}, "seq": 101}).encode())
        assert p.quality_counts("pump-1")["metrics"]["temp"]["flagged"] == {"spike": 1}
    finally:
        p.close()
        store.close()


def test_state_files_without_the_cleaner_or_of_another_layout_still_load(
    tmp_path: Path,
) -> None:
    """Check a state file written before the cleaner was saved (no "cleaner") or with
    another layout version loads: detectors restored, the cleaner starts afresh."""
    store, sp = _restart_pair(tmp_path)
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False, state_path=sp)
    for m in _msgs(30):
        p.ingest("pump-1", m)
    p.close()
    state = pickle.loads(sp.read_bytes())
    assert state["cleaner_version"] == 1 and ("pump-1", "temp") in state["cleaner"]
    for edit in ({"cleaner_version": 999}, None):
        s2 = dict(state)
        if edit is None:
            del s2["cleaner"], s2["cleaner_version"]
        else:
            s2.update(edit)
        sp.write_bytes(pickle.dumps(s2))
        p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False, state_path=sp)
        try:
            assert ("pump-1", "temp") in p._detectors and p.cleaner._state == {}
        finally:
            p.state_path = None  # keep the edited file for the next round
            p.close()
    store.close()


# -- 3. a huge deviation is blamed on the metric that moved ----------------------------------
@pytest.mark.parametrize("temp", [1e160, 1e200, 1e300])
def test_explain_one_a_huge_deviation_blames_the_metric_that_moved(temp: float) -> None:
    """Check a temp-only deviation past ~1e154 (w² overflowed for every metric) gets the
    shares of a moderate one (it split 0.5 / 0.5)."""
    random.seed(0)
    mv = default_multivariate_factory()
    for _ in range(500):
        row = {"temp": 20 + random.gauss(0, .5), "rpm": 1450 + random.gauss(0, 5)}
        mv.learn_one(row)
    ref = mv.explain_one({"temp": 1e6, "rpm": 1450.0})
    got = mv.explain_one({"temp": temp, "rpm": 1450.0})
    assert got["temp"] > 0.99 and got["temp"] == pytest.approx(ref["temp"], rel=1e-6)
    assert math.fsum(got.values()) == pytest.approx(1.0)


def test_explain_one_a_zero_variance_metric_that_moved_still_leads() -> None:
    """Check the overflow fallback still names a metric constant at 0 that moved."""
    det = Mahalanobis(warmup=10)
    for i in range(50):
        det.learn_one({"flow": float(np.sin(i)), "valve": 0.0})
    assert det.explain_one({"flow": 0.1, "valve": 1.0})["valve"] == pytest.approx(1.0)


def test_conditional_shares_a_huge_deviation_is_scale_free() -> None:
    """Check conditional_shares of d and of d * 1e200 are the same (they were 1/3 each)."""
    prec = np.linalg.inv(np.full((3, 3), 0.5) + 0.5 * np.eye(3))
    d = np.array([3.0, 0.5, -0.2])
    ref = conditional_shares(d, np.zeros(3), prec)
    got = conditional_shares(d * 1e200, np.zeros(3), prec)
    assert got == pytest.approx(ref, rel=1e-9) and got["x0"] > 0.7


# -- 4. a forgotten device's rate-limit bucket goes ----------------------------------------
def test_forget_device_drops_its_rate_limit_bucket(tmp_path: Path) -> None:
    """Check forgetting devices leaves no bucket behind (500 churned ids left 500), and an
    id registered again starts on a full bucket, not its old debt."""
    store = open_store("duckdb://:memory:")
    s = Settings(data_dir=tmp_path, rate_limit_per_s=0.001, rate_limit_burst=5)
    p = Pipeline(store, s, detect_async=False)
    try:
        for i in range(50):
            d = f"churn-{i}"
            p.ingest(d, json.dumps({"ts": T0, "metrics": {"a": 1.0}, "seq": 1}).encode())
            p.forget_device(d)
        assert p.rate_limiter._buckets == {}
        body = json.dumps([{"ts": T0 + k, "metrics": {"a": 1.0}, "seq": k + 1}
                           for k in range(5)]).encode()
        assert p.ingest("pump-1", body).accepted == 5  # the bucket is empty now
        p.forget_device("pump-1")
        body = json.dumps([{"ts": T0 + 10 + k, "metrics": {"a": 1.0}, "seq": k + 1}
                           for k in range(5)]).encode()
        assert p.ingest("pump-1", body).accepted == 5
    finally:
        p.close()
        store.close()


def test_rate_limiter_prunes_idle_full_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check buckets that refilled are pruned once there are many, and a spent one stays."""
    import edgewise.security.ratelimit as rl_mod

    monkeypatch.setattr(rl_mod, "_PRUNE_MIN", 8)
    clock = [0.0]
    monkeypatch.setattr(rl_mod.time, "monotonic", lambda: clock[0])
    rl = RateLimiter(rate_per_s=1, burst=2)
    rl._prune_at = 8
    rl.take("busy", 2)
    for i in range(7):
        rl.take(f"d{i}", 1)
    assert len(rl._buckets) == 8  # not over the threshold yet
    clock[0] = 1.5  # d0..d6 refilled; busy has 1.5 of 2
    rl.take("late", 1)  # the 9th bucket: prune
    assert set(rl._buckets) == {"busy", "late"}
    assert rl.forget("busy") and not rl.forget("busy")
