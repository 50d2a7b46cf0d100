"""Extreme readings, carried over from session 46: a Mahalanobis metric whose first value is
a sentinel (1.7e308), EWZScore's readings beyond float32's range, and the fast-stream
gate's running mean and variance after a finite but huge reading (1e100)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from edgewise.detect.mahalanobis import Mahalanobis
from edgewise.edge.export_detectors import export_mahalanobis_c

NAMES = ["flow", "pressure"]


def _pump(n: int, seed: int) -> np.ndarray:
    """Flow and pressure moving together: pressure 2 flow plus noise."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    return np.c_[20 + a, 10 + 2 * a + 0.1 * rng.normal(size=n)]


def _sentinel_first(where: str) -> np.ndarray:
    """A pump whose pressure's first value is 1.7e308 (a "no value" sentinel): from the
    start (``first``), or as a metric that appears on a warm device (``late``); then
    ordinary rows and, last, a fault of the pressure alone (6 off the flow's prediction,
    whose noise is 0.1)."""
    X = _pump(700, 0)
    if where == "late":
        X[:200, 1] = np.nan
        X[200, 1] = 1.7e308
    else:
        X[0] = [20.0, 1.7e308]
    X[-1, 1] += 6.0
    return X


def _loop(det: Mahalanobis, X: np.ndarray) -> tuple[np.ndarray, list[str]]:
    scores, top = [], []
    for row in X:
        x = {k: float(v) for k, v in zip(NAMES, row, strict=True) if math.isfinite(v)}
        scores.append(det.score_one(x))
        shares = det.explain_one(x)
        det.t2_shares(x)
        top.append(max(shares, key=shares.__getitem__) if any(shares.values()) else "")
        det.learn_one(x)
    return np.array(scores), top


@pytest.mark.parametrize("where", ["first", "late"])
def test_mahalanobis_metric_first_read_as_a_sentinel_starts_again(where: str) -> None:
    """Check a metric whose first value is 1.7e308 does not blind the detector: it was
    registered at that mean, every later update of it overflowed (d² past the largest
    float) and was left out, so it never warmed up: its fault scored 0 (and, from the
    start, the whole device scored 0 for good), and explain_one warned of an overflow
    (mean²) and an invalid division (inf / inf). Now it starts again from the next reading:
    no warning, scores finite in [0, 1], the fault alarms and is put on the pressure."""
    X = _sentinel_first(where)
    det = Mahalanobis()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores, top = _loop(det, X)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert np.isfinite(det.mean_).all() and np.isfinite(det.cov_).all()
    assert abs(det.mean_[1] - 10.0) < 1.0
    assert scores[-1] == 1.0 and top[-1] == "pressure"
    assert (scores[300:-1] >= 0.9).sum() <= 2  # ordinary rows stay quiet


@pytest.mark.parametrize("where", ["first", "late"])
def test_mahalanobis_sentinel_first_many_equals_the_loop(where: str) -> None:
    """Check score_many and score_explain_many (the compiled replay, which learned rows in
    its own copy of learn_one and left an overflowing row out there) give the loop's
    scores and culprits on a stream whose pressure starts again after a sentinel."""
    X = _sentinel_first(where)
    scores, top = _loop(Mahalanobis(), X)
    many = Mahalanobis().score_many(X, NAMES)
    fast, fast_top = Mahalanobis().score_explain_many(X, NAMES)
    assert np.abs(many - scores).max() < 1e-12
    assert np.abs(fast - scores).max() < 1e-9
    assert fast_top == top


@pytest.mark.parametrize("where", ["first", "late"])
def test_mahalanobis_c_starts_a_sentinel_metric_again_as_python(where: str) -> None:
    """Check the C export starts the metric again as Python does (it left every update
    out, as Python did, and scored the pressure fault 0)."""
    X = _sentinel_first(where)
    py, _ = _loop(Mahalanobis(), X)
    c = export_mahalanobis_c(Mahalanobis(), name=f"maha_s47_{where}", metrics=NAMES)
    got = c.score_many(X)
    assert np.abs(got - py).max() < 1e-9
    assert got[-1] == 1.0



# -- EWZScore beyond float32's range -------------------------------------------------------


def test_ewzscore_beyond_float32_is_missing_in_python_and_c_alike() -> None:
    """Pin the rule (intended, not changed): EWZScore's C and ONNX read a float, where a
    double beyond float32's range (1e39) arrives as inf, which every detector treats as
    missing; so Python leaves it out too (scores 0, not learned), while 3e38 (within
    float32) scores 1 and is not learned where its update would pass float32's range. The
    C, score_many and score_one agree, and the state is that of the stream without 1e39."""
    from edgewise.detect.zscore import EWZScore
    from edgewise.edge import export

    rng = np.random.default_rng(3)
    wave = 20 + rng.normal(0, 0.5, 200)
    x = np.r_[wave, 1e39, -1e39, 1.7e308, 3e38, wave[:50], 1e39, 30.0]
    py = EWZScore().score_many(x)
    one = EWZScore()
    loop = []
    for v in x:
        loop.append(one.score_one({"v": float(v)}))
        one.learn_one({"v": float(v)})
    assert np.array_equal(np.array(loop), py)
    assert py[200:203].tolist() == [0.0, 0.0, 0.0] and py[203] == 1.0 and py[-2] == 0.0
    assert py[-1] > 0.9  # a fault after them still alarms
    clean = EWZScore()
    clean.score_many(np.r_[wave, 3e38, wave[:50], 30.0])
    assert (one.n_, one.mean_, one.var_) == (clean.n_, clean.mean_, clean.var_)
    c = export(EWZScore(), format="c", name="ewz_s47").score_many(x)
    assert np.abs(c - py).max() < 1e-3  # float32 readings and scores
    assert c[200:203].tolist() == [0.0, 0.0, 0.0] and c[203] == 1.0 and c[-2] == 0.0


# -- the fast-stream gate after a finite but huge reading ------------------------------------

T0 = 1_700_000_000


def _gated(det, gate, key, t: int, v: float) -> float:  # type: ignore[no-untyped-def]
    """The gateway's per-metric score of one reading: its detector's, then the gate's."""
    x = {key[1]: v}
    s = det.score_one(x)
    det.learn_one(x)
    return gate.observe(key, t * 10**9, v, s)


@pytest.mark.parametrize("huge", [1e100, 1e30, -1e12])
def test_fast_gate_is_not_blinded_by_a_learned_huge_reading(huge: float) -> None:
    """Check a fast stream (20 +- 0.5, a reading a second) that learned a run of 20
    readings of ``huge`` (finite: the overflow guard let it in; the pipeline's cleaner
    takes a run for a level shift, so the gate learns it) still alarms on a real fault 300
    readings later: the gate's mean and deviation were those of the run (1e100: mean
    3.9e98, deviation 1.9e99), every later reading lay 0.2 deviations off, and a 20 sd
    spike that the default detector scored 1 was capped to 0.03, for some 200,000
    readings. The huge readings alarm themselves; ordinary noise stays capped."""
    from edgewise.gateway.fast_streams import FastStreamGate
    from edgewise.gateway.pipeline import default_detector_factory

    rng = np.random.default_rng(47)
    det, gate, key = default_detector_factory(), FastStreamGate(), ("pump", "flow")
    t = T0
    for v in 20 + rng.normal(0, 0.5, 1000):
        t += 1
        _gated(det, gate, key, t, float(v))
    for _ in range(20):
        t += 1
        assert gate.observe(key, t * 10**9, huge, 1.0) == 1.0
    st = gate.streams_[key]
    assert abs(st.mean - 20) < 0.5 and st.var < 1.0, (st.mean, st.var)
    noise = []
    for v in 20 + rng.normal(0, 0.5, 300):
        t += 1
        noise.append(_gated(det, gate, key, t, float(v)))
    assert sum(s >= 0.9 for s in noise) <= 1
    t += 1
    assert _gated(det, gate, key, t, 30.0) >= 0.9


def test_fast_gate_still_learns_a_constant_stream_that_moves() -> None:
    """Check a stream constant so far (variance 0: every move is infinitely many
    deviations off) still learns its next level, as before: the rule leaves out only a
    reading that rounds a variance away, and 0 has nothing to round."""
    from edgewise.gateway.fast_streams import FastStreamGate

    gate, key = FastStreamGate(warmup=10), ("p", "x")
    for i in range(50):
        gate.observe(key, (i + 1) * 10**9, 5.0, 0.0)
    gate.observe(key, 51 * 10**9, 6.0, 1.0)
    assert gate.streams_[key].n == 51 and gate.streams_[key].mean > 5.0


def test_pipeline_alerts_a_fault_after_a_run_of_1e100(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Check, through a real Pipeline's detection (the cleaner, the fast-stream gate), that
    a 1 Hz pump whose flow sent a run of 1e100 then reads normally again alerts a later 40
    sd flow spike naming the flow: the gate had learned the run and capped the spike below
    the threshold. Scored by EWZScore, which leaves 1e100 out (beyond float32's range);
    the default detector learns it itself and scores the spike 0.18 (open: its own
    guard is for overflow only)."""
    from edgewise.config import Settings
    from edgewise.gateway.pipeline import Pipeline
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    rng = np.random.default_rng(8)
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(data_dir=tmp_path, detector="ewzscore"), detect_async=False,
                 multivariate_factory=None)

    def feed(ts: int, flow: float) -> None:
        p.detect([Reading("pump", "flow", ts * 10**9, flow),
                  Reading("pump", "temp", ts * 10**9, float(45 + rng.normal(0, 0.15)))])

    try:
        ts = T0
        for _ in range(600):
            ts += 1
            feed(ts, float(100 + rng.normal(0, 0.6)))
        for _ in range(20):
            ts += 1
            feed(ts, 1e100)
        for _ in range(300):
            ts += 1
            feed(ts, float(100 + rng.normal(0, 0.6)))
        st = p.fast_gate.streams_[("pump", "flow")]
        assert abs(st.mean - 100) < 1 and st.var < 1, (st.mean, st.var)
        ts += 1
        feed(ts, 100 + 40 * 0.6)
        p.alerts.flush(force=True)
        spikes = [a for a in store.list_alerts(kind="anomaly", limit=1000)
                  if a.start_ns == ts * 10**9]
        assert spikes and max(spikes[0].drivers, key=spikes[0].drivers.get) == "flow"
    finally:
        p.close()
        store.close()
