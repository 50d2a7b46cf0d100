"""Extreme but finite readings (a 1.7e308 "no value" sentinel, +-1e308 swings, 1e300 steps)
on the gateway's live path: the reading itself alarms, and once the device reads normal
values again the gates recover instead of staying poisoned."""

from __future__ import annotations

import json
import math
import pickle
import warnings

import numpy as np
import pytest

from edgewise.config import Settings
from edgewise.gateway.cross_sensor import CrossSensorGate
from edgewise.gateway.fast_streams import FastStreamGate
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store

T0 = 1_700_000_000
EXTREMES = {
    "sentinel": [1.7e308],
    "negative sentinel": [-1.7e308],
    "swinging": [1e308 * (-1) ** i for i in range(20)],
    "1e300 steps": [i * 1e300 for i in range(1, 21)],
    "huge once": [1e200],
}


def _warm_fast_gate(rng: np.random.Generator) -> tuple[FastStreamGate, int]:
    gate = FastStreamGate()
    t = 0
    for v in 20 + rng.normal(0, 0.5, 1000):  # a reading a second, past the warm-up
        t += 10**9
        gate.observe(("p", "x"), t, float(v), 1.0)
    return gate, t


@pytest.mark.parametrize("extreme", list(EXTREMES), ids=list(EXTREMES))
def test_fast_gate_recovers_after_extreme_readings(extreme: str) -> None:
    """Check a fast stream still alarms on a real fault after extreme readings were learned
    (a level-shift-like run the cleaner does not flag is learned): one update past the
    largest float left the running variance at inf for good, every later reading 0
    deviations off, and every later alarm of the stream capped at 0 (a 20 sd spike scored
    0.0). The extreme readings alarm themselves, and the state saves and loads."""
    rng = np.random.default_rng(0)
    gate, t = _warm_fast_gate(rng)
    key = ("p", "x")
    for v in EXTREMES[extreme]:
        t += 10**9
        assert gate.observe(key, t, v, 1.0) == 1.0  # far off: the detector's alarm stands
    st = gate.streams_[key]
    assert math.isfinite(st.mean) and math.isfinite(st.var)
    gate = pickle.loads(pickle.dumps(gate))
    passed = 0
    for v in 20 + rng.normal(0, 0.5, 300):
        t += 10**9
        passed += gate.observe(key, t, float(v), 1.0) >= 0.9
    assert passed <= 1  # ordinary noise is capped as before
    t += 10**9
    assert gate.observe(key, t, 30.0, 1.0) == 1.0  # a 20 sd spike alarms


def test_fast_gate_sentinel_first_does_not_hold_the_warm_up() -> None:
    """Check a stream whose first reading is the sentinel warms up on the readings after
    it (learning them from a mean of 1.7e308 would overflow: skipped for good, the stream
    never warmed up) and then caps noise and passes a fault."""
    rng = np.random.default_rng(1)
    gate, key, t = FastStreamGate(), ("p", "x"), 10**9
    gate.observe(key, t, 1.7e308, 0.0)
    for v in 20 + rng.normal(0, 0.5, 1000):
        t += 10**9
        gate.observe(key, t, float(v), 1.0)
    st = gate.streams_[key]
    assert st.n >= gate.warmup and abs(st.mean - 20) < 1 and st.var < 1
    assert gate.observe(key, t + 10**9, 20.1, 1.0) < 0.9
    assert gate.observe(key, t + 2 * 10**9, 30.0, 1.0) == 1.0


def test_fast_gate_ordinary_readings_gate_exactly_as_before() -> None:
    """Check the overflow guard changes no gated score on ordinary readings: the same
    stream scored against the arithmetic as it was."""
    rng = np.random.default_rng(2)
    x = np.r_[20 + rng.normal(0, 0.5, 1500), 35.0, 20 + rng.normal(0, 0.5, 500), 1e6,
              20 + rng.normal(0, 0.5, 500)].round(1)  # coarse: it repeats itself
    raw = rng.uniform(0, 1, len(x))
    gate = FastStreamGate(warmup=50)
    n, mean, var, repeats = 0, 0.0, 0.0, 0
    for i, (v, s) in enumerate(zip(x.tolist(), raw.tolist(), strict=True)):
        got = gate.observe(("p", "x"), (i + 1) * 10**9, v, s)
        if i >= 10 and n >= gate.warmup:  # fast from its 10th interval on
            z = abs(v - mean) / math.sqrt(var)
            need = gate.needed_z(("p", "x"))
            assert got == (min(s, gate.threshold * z / need) if z < need else s)
        repeats += i > 0 and v == x[i - 1]
        n += 1
        d = v - mean
        if n <= gate.warmup:
            mean += d / n
            var += (d * (v - mean) - var) / n
        else:
            mean += gate.alpha * d
            var = (1.0 - gate.alpha) * (var + gate.alpha * d * d)
        st = gate.streams_[("p", "x")]
        assert (st.n, st.mean, st.var, st.repeats) == (n, mean, var, repeats)


def _send(p: Pipeline, seq: int, speed: float, flow: float) -> None:
    p.ingest("pump", json.dumps({"ts": T0 + seq, "seq": seq,
                                 "metrics": {"speed": speed, "flow": flow}}).encode())


@pytest.mark.slow  # ~70 s end to end; the fast gate tests above pin the bug
def test_pipeline_names_the_faulty_sensor_after_a_swing_of_extremes(tmp_path) -> None:
    """Check, on a real Pipeline over DuckDB, a pump read once a second that sent 20
    readings swinging between +-1e308 for its speed (the cleaner takes the run for a level
    shift, so the fast-stream gate learns it): its speed's running variance went to inf for
    good, every later speed score was capped at 0, and a later fault of the speed alone was
    alerted on the flow (its cross-sensor break) instead of the speed. The state saved
    after the swing loads in a new pipeline."""
    store = open_store(f"duckdb:///{tmp_path / 'p.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0, detect_async=False,
                 multivariate_factory=None)
    rng = np.random.default_rng(0)

    def normal(i: int) -> tuple[float, float]:
        s = 1.0 + 0.1 * ((i // 200) % 2)  # two setpoints, speed and flow together
        return 2950 * s + rng.normal(0, 3), 120 * s + rng.normal(0, 0.6)

    try:
        seq = 0
        for i in range(1200):
            seq += 1
            _send(p, seq, *normal(i))
        for k in range(20):
            seq += 1
            _send(p, seq, 1e308 * (-1) ** k, normal(0)[1])
        st = p.fast_gate.streams_[("pump", "speed")]
        assert math.isfinite(st.mean) and math.isfinite(st.var)
        p.save_state(tmp_path / "state.pkl")
        again = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0,
                         detect_async=False, state_path=tmp_path / "state.pkl")
        try:
            assert again.fast_gate.streams_[("pump", "speed")].var == st.var
        finally:
            again.close()
        for i in range(1200, 2200):
            seq += 1
            _send(p, seq, *normal(i))
        before = {a.id for a in store.list_alerts(kind="anomaly", limit=1000)}
        for i in range(2200, 2240):  # the speed alone 30 % up: a fault
            seq += 1
            _send(p, seq, 2950 * 1.3 + rng.normal(0, 3), normal(i)[1])
        new = [a for a in store.list_alerts(kind="anomaly", limit=1000) if a.id not in before]
        assert new, "the speed fault raised no alert"
        assert all(max(a.drivers, key=a.drivers.get) == "speed" for a in new), [
            a.drivers for a in new]
    finally:
        p.close()
        store.close()


@pytest.mark.parametrize("extreme", ["swinging", "1e300 steps"])
def test_cross_gate_learns_past_extremes_without_warnings_and_recovers(extreme: str) -> None:
    """Check a warmed cross-sensor gate fed a lasting run of extremes (learned after 10 rows
    as the device's new state) overflows no moment with a RuntimeWarning (an error where
    warnings are errors, as under pytest: the dashboard's test hit them in ``_learn``), and
    once the pump reads normally again it explains a setpoint change and alarms a break
    within a warm-up, its state saving and loading."""
    rng = np.random.default_rng(0)
    gate = CrossSensorGate(warmup=50)
    both = {"speed", "flow"}

    def row(i: int) -> dict[str, float]:
        s = 0.8 + 0.1 * (i // 100 % 2)
        return {"speed": 2950 * s + rng.normal(0, 3), "flow": 120 * s + rng.normal(0, 0.6)}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(1000):
            gate.observe("p", row(i), {"speed": 0.0, "flow": 0.0}, both)
            gate.learn("p")
        for v in EXTREMES[extreme]:
            r = row(0)
            r["flow"] = v
            gate.observe("p", r, {"speed": 1.0, "flow": 1.0}, both)
            gate.learn("p")
        gate = pickle.loads(pickle.dumps(gate))
        for i in range(1000, 1450):  # the gate starts again: a warm-up, then a setpoint
            gate.observe("p", row(i), {"speed": 0.0, "flow": 0.0}, both)
            gate.learn("p")
        dev = gate.devices_["p"]
        assert np.isfinite(dev.cov).all() and np.isfinite(dev.mean).all()
        moved = {"speed": 2950 * 0.95, "flow": 120 * 0.95}
        assert gate.observe("p", moved, {"speed": 1.0, "flow": 1.0}, both)["speed"] < 0.5
        broken = {"speed": 2950 * 0.95, "flow": 120 * 0.8}
        assert gate.observe("p", broken, {"speed": 0.0, "flow": 1.0}, both)["flow"] == 1.0


@pytest.mark.parametrize("path", ["replay", "one_at_a_time"])
def test_default_detector_keeps_a_finite_prediction_variance(path: str) -> None:
    """Check ContextLikelihood does not learn a sentinel (1.7e308) or a +-1e308 swing into
    its prediction's mean and variance after the warm-up: its variance went to inf for
    good, the prediction error of every later reading was 0, and a 40 sd spike scored
    0.71 where a clean stream scores 1. Replay and one-at-a-time agree."""
    from edgewise.detect.context_likelihood import _M, _V, ContextLikelihood

    rng = np.random.default_rng(46)
    x = 20.0 + rng.normal(0, 0.5, 3000)
    x[1000] = 1.7e308
    x[1500:1504] = [1e308, -1e308, 1e308, -1e308]
    det = ContextLikelihood()
    if path == "replay":
        scores = det.score_many(x[:, None], columns=["v"])
    else:
        scores = []
        for v in x:
            scores.append(det.score_one({"v": v}))
            det.learn_one({"v": v})
        scores = np.asarray(scores)
    state = det.state_
    assert np.isfinite(state[:, _M]).all() and np.isfinite(state[:, _V]).all(), state[:, [_M, _V]]
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    assert scores[1000] == 1.0  # the sentinel itself alarms
