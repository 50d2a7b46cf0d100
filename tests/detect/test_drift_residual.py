"""Tests of the drift-residual multivariate detector: faults, drift, attribution, state."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.detect import DEFAULT_THRESHOLD, Detector, DriftResidual, get_detector
from edgewise.errors import InvalidParameterError
from tests.detect.test_drift_residual_drivers import loop

COLS = ["flow", "pressure", "temp"]


def pump(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A pump: flow and pressure coupled, temperature drifting up slowly; one stuck valve."""
    rng = np.random.default_rng(seed)
    flow = 30 + rng.standard_normal(n)
    pressure = 0.1 * flow + 0.05 * rng.standard_normal(n)
    temp = 60 + np.linspace(0, 1.5, n) + 0.1 * rng.standard_normal(n)
    y = np.zeros(n, dtype=bool)
    y[700:900] = True
    flow[700:900] -= 6.0  # the valve closes: flow drops, pressure does not follow
    return np.c_[flow, pressure, temp], y


def test_flags_the_fault_not_the_drift_and_names_the_metric():
    """Check the sustained fault is flagged, the slow temperature drift is not."""
    X, y = pump()
    det = DriftResidual(train_rows=300)
    s = det.score_many(X, columns=COLS)
    flagged = s >= DEFAULT_THRESHOLD
    assert not flagged[:300].any()
    assert flagged[y].mean() > 0.8
    assert not flagged[:700].any()  # the drift is tracked, never flagged
    assert not flagged[960:].any()  # alarms stop within a minute of the fault's end
    shares = det.explain_one(dict(zip(COLS, X[800], strict=True)))
    assert max(shares, key=shares.get) == "flow"
    assert sum(shares.values()) == pytest.approx(1.0)


def test_a_long_fault_is_not_learned_as_normal():
    """Check the baseline of a faulty metric does not follow the fault (gated learning)."""
    X, _ = pump()
    det = DriftResidual(train_rows=300)
    det.score_many(X[:899], columns=COLS)
    assert det.base_[det.metrics_["flow"]] > 29.0


def test_scores_are_zero_during_training_and_state_round_trips():
    """Check the training span scores 0 and a restored detector continues identically."""
    X, _ = pump()
    det = DriftResidual(train_rows=300)
    assert not det.score_many(X[:300], columns=COLS).any()
    det.score_many(X[300:750], columns=COLS)
    twin = Detector.loads(det.dumps())
    np.testing.assert_array_equal(
        det.score_many(X[750:], columns=COLS), twin.score_many(X[750:], columns=COLS)
    )


def test_registered_and_invalid_parameters_are_named():
    """Check the registry builds it and bad parameters name the parameter."""
    assert isinstance(get_detector("drift-residual", train_rows=10), DriftResidual)
    with pytest.raises(InvalidParameterError, match="train_rows"):
        DriftResidual(train_rows=1)


def test_a_lasting_change_becomes_normal_after_patience():
    """Check a locked metric is re-anchored after `patience` readings, so alarms end."""
    X, _ = pump(n=1200)
    X[900:, 0] -= 6.0  # pump() drops the flow over 700-900; here it stays down for good
    det = DriftResidual(train_rows=300, patience=200)
    s = det.score_many(X, columns=COLS)
    assert (s[750:900] >= DEFAULT_THRESHOLD).all()
    assert (s[1000:] < DEFAULT_THRESHOLD).all()


def test_missing_readings_do_not_reset_a_locked_metrics_patience():
    """Check a lasting change on a sensor that drops every 10th reading still becomes
    normal after `patience` of its readings, and that the gaps do not unlock the fault."""
    X, _ = pump(n=1400)
    X[900:, 0] -= 6.0  # the flow stays down for good, as above
    X[310::10, 0] = np.nan  # and the flow sensor misses every tenth reading
    det = DriftResidual(train_rows=300, patience=200)
    s = det.score_many(X, columns=COLS)
    assert (s[750:900] >= DEFAULT_THRESHOLD).all()
    # 200 seen readings after the lock (~222 rows) plus the smoothing's tail
    assert (s[1100:] < DEFAULT_THRESHOLD).all()
    # a gap right after the lock did not let the fault be learned as drift
    det = DriftResidual(train_rows=300, patience=200)
    det.score_many(X[:760], columns=COLS)
    assert det.locked_[det.metrics_["flow"]]
    assert det.base_[det.metrics_["flow"]] > 29.0


@pytest.mark.parametrize("levels", ["pooled", "per-metric"])
def test_compiled_replay_equals_the_loop_bit_for_bit(levels):
    """Check score_many over whole blocks gives the one-at-a-time loop's scores and state
    exactly (both run the one kernel): missing and infinite values, an empty row, an extra
    unknown column, a re-anchor after patience, input split across calls."""
    X, _ = pump(n=1200, seed=3)
    X[900:, 0] -= 6.0  # a lasting change: re-anchored after `patience`
    X[::29, 2] = np.nan
    X[::41, 1] = np.inf
    X[500] = np.nan
    X = np.c_[X, np.linspace(0, 1, len(X))]
    X[:300, 3] = np.nan  # "extra" appears only after the span: not a trained metric
    cols = [*COLS, "extra"]
    fast = DriftResidual(train_rows=300, patience=150, levels=levels)
    got = np.concatenate([fast.score_many(X[:450], columns=cols),
                          fast.score_many(X[450:], columns=cols)])
    slow = DriftResidual(train_rows=300, patience=150, levels=levels)
    want = []
    for row in X:
        x = {c: float(v) for c, v in zip(cols, row, strict=True) if np.isfinite(v)}
        want.append(slow.score_one(x))
        slow.learn_one(x)
    np.testing.assert_array_equal(got, want)
    assert (np.asarray(want)[1000:] < DEFAULT_THRESHOLD).all()  # the re-anchor happened
    for name in ("base_", "ema_", "prev_", "locked_", "held_", "recent_"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    assert fast.energy_ == slow.energy_


def wandering_plant(seed: int, n: int = 1500) -> np.ndarray:
    """Flow is white noise and drops by 6 sd over rows 1100-1250 (a fault); temp wanders
    slowly (AR(1), coefficient 0.995): a 300-row span shows only part of its normal range."""
    rng = np.random.default_rng(seed)
    flow = 30 + rng.standard_normal(n)
    e = 0.05 * rng.standard_normal(n)
    temp = np.zeros(n)
    for i in range(1, n):
        temp[i] = 0.995 * temp[i - 1] + e[i]
    flow[1100:1250] -= 6.0
    return np.c_[flow, 60 + temp]


def test_long_run_scale_widens_a_wandering_metric_only_and_keeps_the_fault():
    """Check the long-run scale widens temp's deviation (not flow's), ends the false alarms
    the sample deviation raises on temp's normal wandering, and still flags the flow fault."""
    cols = ["flow", "temp"]
    false_alarms = {"sample": 0, "long-run": 0}
    for seed in range(6):
        X = wandering_plant(seed)
        sample = DriftResidual(train_rows=300, scale="sample")
        sample.score_many(X[:300], columns=cols)
        for scale in false_alarms:
            det = DriftResidual(train_rows=300, scale=scale)
            s = det.score_many(X, columns=cols)
            false_alarms[scale] += int((s[300:1100] >= DEFAULT_THRESHOLD).sum())
            assert (s[1100:1250] >= DEFAULT_THRESHOLD).mean() > 0.9
        widen = det.sd_ / sample.sd_  # det: the long-run one
        assert widen[det.metrics_["flow"]] < 1.15
        assert widen[det.metrics_["temp"]] > 1.8
    assert false_alarms["long-run"] == 0 < false_alarms["sample"]


def test_scale_is_validated_and_old_pickles_train_with_sample_deviations():
    """Check a bad ``scale`` names the parameter, and a detector pickled mid-span before
    ``scale`` existed finishes its span with sample deviations."""
    with pytest.raises(InvalidParameterError, match="scale"):
        DriftResidual(scale="robust")
    X = wandering_plant(0)
    old = DriftResidual(train_rows=300)
    old.score_many(X[:100], columns=["flow", "temp"])
    del old.scale  # as pickled before the parameter
    old = Detector.loads(old.dumps())
    old.score_many(X[100:300], columns=["flow", "temp"])
    ref = DriftResidual(train_rows=300, scale="sample")
    ref.score_many(X[:300], columns=["flow", "temp"])
    np.testing.assert_array_equal(old.sd_, ref.sd_)


def test_recent_level_is_the_documented_running_mean():
    """Check ``recent_``, where a lasting change re-anchors the baseline, is a running mean
    of weight 0.05 of each metric's readings after the span (from its training mean,
    skipping missing ones)."""
    X, _ = pump(n=1200, seed=5)
    X[900:, 0] -= 6.0
    X[::31, 0] = np.nan
    det = DriftResidual(train_rows=300, patience=150)
    det.score_many(X, columns=COLS)
    for j, name in enumerate(COLS):
        want = float(np.nanmean(X[:300, j]))
        for v in X[300:, j]:
            if np.isfinite(v):
                want += 0.05 * (v - want)
        assert det.recent_[det.metrics_[name]] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name", ["drift-residual", "per-metric-residual", "long-run-residual"])
@pytest.mark.parametrize("unit", [1e-9, 1e6, 1e200])
def test_the_units_of_the_readings_do_not_matter(name, unit):
    """Check a pump read in other units (nano-units: a sensor in amperes reading nA; or
    huge counts) gets the same alarms: no absolute floor swamps small readings and no
    square overflows on big ones."""
    X, y = pump()
    X = X - X[:300].mean(axis=0)  # centred, so a small unit leaves small readings
    ref = get_detector(name, train_rows=300).score_many(X, columns=COLS) >= DEFAULT_THRESHOLD
    assert ref[y].mean() > 0.5
    got = get_detector(name, train_rows=300).score_many(X * unit, columns=COLS)
    np.testing.assert_array_equal(got >= DEFAULT_THRESHOLD, ref)


@pytest.mark.parametrize("levels", ["pooled", "per-metric"])
def test_score_explain_many_equals_the_loop_with_explanations(levels):
    """Check the compiled scores and top metrics equal the loop of score_one, explain_one
    and learn_one (what `edgewise detect` did row by row), gaps and empty rows included."""
    X, _ = pump()
    rng = np.random.default_rng(5)
    X[rng.random(X.shape) < 0.05] = np.nan
    X[650:655] = np.nan  # rows with no reading
    fast = DriftResidual(train_rows=300, levels=levels)
    slow = fast.clone()
    scores, top = fast.score_explain_many(X[:700], columns=COLS)
    s2, t2 = fast.score_explain_many(X[700:], columns=COLS)  # in two calls
    want_s, want_t = loop(slow, X, COLS)
    np.testing.assert_array_equal(np.r_[scores, s2], want_s)
    assert top + t2 == want_t
    assert set(want_t[300:]) >= {"flow", "pressure", "temp"} and want_t[652] == ""
    assert max(set(want_t[750:900]), key=want_t[750:900].count) == "flow"


@pytest.mark.parametrize("offset", [1e5, 1e7, 1e9])
def test_an_offset_does_not_hide_a_metric(offset):
    """Check a pump whose readings carry a large offset (absolute pressure in Pa; a
    latitude) alarms where the pump itself does: the floor of a span deviation is about
    float rounding of the level, not a share of it that swamps the noise."""
    X, _ = pump()
    ref = DriftResidual(train_rows=300).score_many(X, columns=COLS) >= DEFAULT_THRESHOLD
    got = DriftResidual(train_rows=300).score_many(X + offset, columns=COLS)
    np.testing.assert_array_equal(got >= DEFAULT_THRESHOLD, ref)


@pytest.mark.parametrize("levels", ["pooled", "per-metric"])
def test_a_one_reading_fault_of_any_size_is_flagged(levels):
    """Check a single reading far outside anything of the span alarms at once (the
    smoothing alone needs several readings, so ``spike=inf`` misses it), on that reading
    only, and the readings after it do not."""
    rng = np.random.default_rng(3)
    X = np.c_[20 + rng.standard_normal(600), 5 + 0.1 * rng.standard_normal(600)]
    X[450, 0] = 80.0  # 60 deviations, one reading
    X[520, 1] = 1e9
    for spike, want in [(2.0, [450, 520]), (float("inf"), [])]:
        det = DriftResidual(train_rows=250, levels=levels, spike=spike)
        flagged = np.flatnonzero(det.score_many(X, columns=["a", "b"]) >= DEFAULT_THRESHOLD)
        assert flagged.tolist() == want, (spike, flagged)


def test_the_spike_bound_is_quiet_on_normal_noise_and_old_pickles_go_without():
    """Check Gaussian readings far beyond the span raise no spike alarm (the bound is twice
    the span's widest residual, at least 6 deviations), and a detector pickled before the
    bound existed scores as before (no bound)."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50_000, 3))
    det = DriftResidual(train_rows=400)
    s = det.score_many(X, columns=COLS)
    assert (s[400:] >= DEFAULT_THRESHOLD).sum() == 0
    assert det.bound_.min() >= 6.0
    new, old = DriftResidual(train_rows=50), DriftResidual(train_rows=50)
    for det in (new, old):
        det.score_many(X[:60], columns=COLS)
    del old.bound_, old.spike  # as pickled before the parameter
    old = Detector.loads(old.dumps())
    spike = {"flow": 1e6, "pressure": 0.0, "temp": 0.0}
    assert old.score_one(spike) < DEFAULT_THRESHOLD <= new.score_one(spike)
