"""Two-state streams (door contacts, on/off flags): TwoState and the gateway's StateAware."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from edgewise.config import Settings
from edgewise.detect import ContextLikelihood, StateAware, TwoState
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from tests.conftest import score_one_by_one

THR = 0.9


def _door(seed: int, n: int = 10080, openings: int = 60) -> np.ndarray:
    """A door read once a minute for a week, opened at random for 1-9 minutes."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for s in rng.choice(n - 80, openings, replace=False):
        x[s:s + rng.integers(1, 10)] = 1.0
    return x


def _onsets(scores: np.ndarray) -> int:
    on = scores >= THR
    return int((on & ~np.r_[False, on[:-1]]).sum())


@pytest.mark.parametrize("seed", range(3))
def test_a_door_opened_at_random_raises_no_alarm(seed: int) -> None:
    """Check that a week of ordinary openings is quiet under StateAware, while the level
    detector alone reads the switches as jumps (the limit this fixes: 14-26 alarms)."""
    x = _door(seed)
    assert _onsets(ContextLikelihood().score_many(x)) >= 10
    assert _onsets(StateAware().score_many(x)) == 0


@pytest.mark.parametrize("seed", range(3))
def test_a_door_left_open_and_a_flapping_contact_are_found(seed: int) -> None:
    x = _door(seed)
    x[9000:9180] = 1.0  # left open three hours; openings usually last minutes
    s = StateAware().score_many(x)
    assert (s[9000:9180] >= THR).any() and _onsets(s[:9000]) == 0
    y = _door(seed)
    y[9500:9560] = 0.0
    for k in range(8):  # 8 openings in 48 minutes; it is opened about every 3 hours
        y[9500 + 6 * k:9503 + 6 * k] = 1.0
    s = StateAware().score_many(y)
    assert (s[9500:9560] >= THR).any() and _onsets(s[:9500]) == 0


def test_a_pump_on_a_shift_schedule_alarms_only_when_it_misses_a_stop() -> None:
    rng = np.random.default_rng(3)
    days, parts = 21, []
    for _ in range(days):
        on = 480 + int(rng.integers(-20, 21))  # about 8 hours on, a reading a minute
        parts += [np.ones(on), np.zeros(1440 - on)]
    x = np.concatenate(parts)
    assert _onsets(StateAware().score_many(x)) == 0
    stuck = x.copy()
    start = 18 * 1440
    stuck[start:start + 1440 + 480] = 1.0  # ran through the night and the next day
    s = StateAware().score_many(stuck)
    first = int(np.argmax(s >= THR))
    assert s.max() >= THR and start + 480 < first < start + 1440


def test_level_streams_score_exactly_as_the_level_detector(shared_data) -> None:
    """A stream with more than two values is the level detector's, bit for bit, in
    replay and one at a time."""
    df = pd.read_csv(shared_data / "nab/data/realKnownCause/machine_temperature_system_failure.csv")
    x = df["value"].to_numpy(float)[:5000]
    ref = ContextLikelihood().score_many(x)
    np.testing.assert_array_equal(StateAware().score_many(x), ref)
    det = StateAware()
    np.testing.assert_array_equal(score_one_by_one(det, x[:1500]), ref[:1500])
    assert det.two_ is None


def test_a_flat_line_stepping_to_a_new_level_is_still_found() -> None:
    """Two values, but no run of the new one has ended: the level detector scores it."""
    x = np.r_[np.full(2000, 5.0), np.full(200, 7.0)]
    s = StateAware().score_many(x)
    assert s[2000] >= THR and s[:2000].max() < THR


def test_a_third_value_hands_the_stream_to_the_level_detector_for_good() -> None:
    det = StateAware()
    x = _door(0)
    det.score_many(x)
    assert det.two_state_
    s = det.score_many(np.array([2.0]))
    assert s[0] >= THR and det.two_ is None and not det.two_state_
    ts = TwoState()
    ts.score_many(x)
    assert ts.score_one({"door": 0.5}) == 1.0


def test_twostate_checks_params() -> None:
    from edgewise.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="warmup_runs"):
        TwoState(warmup_runs=0)
    with pytest.raises(InvalidParameterError, match="rate_window"):
        TwoState(rate_window=1)


def test_the_gateway_scores_a_boolean_door_by_its_states(tmp_path) -> None:
    """Check through the pipeline: a door sending compact JSON booleans for a week raises
    no anomaly alert under the gateway's default, and an alert once it is left open."""
    store = open_store(f"duckdb:///{tmp_path / 'p.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    try:
        x = _door(1)
        x[9000:9180] = 1.0
        t0 = 1_700_000_000
        batch = []
        for i, v in enumerate(x):
            batch.append({"ts": t0 + 60 * i, "metrics": {"door": bool(v)}, "seq": i + 1})
            if len(batch) == 500 or i == len(x) - 1:
                r = p.ingest("door-1", json.dumps(batch).encode())
                assert not r.rejected
                batch = []
        alerts = store.list_alerts(kind="anomaly")
        assert len(alerts) == 1, [(a.start_ns // 10**9 - t0) // 60 for a in alerts]
        minute = (alerts[0].start_ns // 10**9 - t0) // 60
        assert 9000 < minute < 9180
    finally:
        p.close()
        store.close()
