"""Calibration and quality of the default detectors on real NAB data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.nab_scorer import (
    file_score,
    load_profiles,
    load_windows,
    score_corpus,
    sweep_file,
)
from edgewise.detect import (
    DEFAULT_THRESHOLD,
    ContextART,
    ContextLikelihood,
    Mahalanobis,
    Threshold,
    get_detector,
)


@pytest.fixture(scope="module")
def nab_corpus(shared_data):
    nab = shared_data / "nab"
    ts, values = {}, {}
    for f in sorted((nab / "data").glob("*/*.csv")):
        key = f"{f.parent.name}/{f.name}"
        df = pd.read_csv(f)
        ts[key] = pd.to_datetime(df["timestamp"]).to_numpy("datetime64[ns]")
        values[key] = df["value"].to_numpy(float)
    windows = load_windows(nab / "labels" / "combined_windows.json")
    return ts, values, windows, load_profiles(nab / "config" / "profiles.json")


def test_default_threshold_is_nab_optimal_for_the_default_detector(nab_corpus):
    """Check that NAB's optimiser lands near 0.9 and 0.9 itself scores within 1 point of it."""
    ts, values, windows, profiles = nab_corpus
    scores = {k: ContextLikelihood().score_many(v) for k, v in values.items()}
    result = score_corpus(ts, scores, windows, profiles)
    std = result.profiles["standard"]
    assert 0.8 <= std.threshold <= 0.95
    cost = profiles["standard"]["CostMatrix"]
    raw_at_default = sum(
        file_score(sweep_file(ts[k], windows[k]), scores[k], DEFAULT_THRESHOLD, cost).score
        for k in scores
    )
    at_default = 100 * (raw_at_default - std.null) / (std.perfect - std.null)
    assert at_default >= std.normalized - 1.0
    # regression guard on the headline number (full corpus, NAB's rules)
    assert std.normalized > 70.0


def test_quiet_streams_raise_almost_no_alarm(nab_corpus):
    """Check that on NAB's anomaly-free series at most 0.1% of readings reach 0.9."""
    _, values, _, _ = nab_corpus
    for key in [k for k in values if k.startswith("artificialNoAnomaly/")]:
        s = ContextLikelihood().score_many(values[key])
        assert (s >= DEFAULT_THRESHOLD).mean() <= 0.001, key


def test_score_many_matches_loop_on_a_real_series(nab_corpus):
    """Check score_many == score_one/learn_one loop on a whole NAB file, NaNs included."""
    _, values, _, _ = nab_corpus
    x = values["realKnownCause/nyc_taxi.csv"].copy()
    x[[700, 701, 5000]] = np.nan
    fast = ContextLikelihood().score_many(x)
    det = ContextLikelihood()
    slow = np.empty(len(x))
    for i, v in enumerate(x):
        slow[i] = det.score_one({"value": v})
        det.learn_one({"value": v})
    np.testing.assert_array_equal(fast, slow)


def test_mahalanobis_attribution_names_the_broken_metric_after_one_emerges():
    """Check that attribution follows a metric that appeared mid-stream."""
    rng = np.random.default_rng(0)
    det = Mahalanobis(warmup=20)
    for i in range(600):
        a = rng.normal()
        x = {"flow": a, "pressure": 2 * a + 0.1 * rng.normal()}
        if i >= 200:
            x["temp"] = 50 + a + 0.1 * rng.normal()
        det.learn_one(x)
    shares = det.explain_one({"flow": 0.0, "pressure": 0.0, "temp": 56.0})
    assert max(shares, key=shares.get) == "temp"
    assert sum(shares.values()) == pytest.approx(1.0)
    assert det.score_one({"flow": 0.0, "pressure": 0.0, "temp": 56.0}) >= DEFAULT_THRESHOLD
    assert det.score_one({"flow": 0.0, "pressure": 0.0}) < 0.5  # temp gone: imputed at its mean
    assert json.dumps(shares)


def test_threshold_wrapper_protects_the_model_from_a_long_fault():
    """Check that with protect=True a persistent fault keeps being flagged."""
    rng = np.random.default_rng(0)
    guarded = Threshold(Mahalanobis(warmup=20))
    plain = Mahalanobis(warmup=20)
    for _ in range(300):
        a = rng.normal()
        x = {"flow": a, "pressure": 2 * a + 0.1 * rng.normal()}
        guarded.learn_one(x)
        plain.learn_one(x)
    fault = {"flow": 0.0, "pressure": 5.0}
    for _ in range(2000):
        guarded.learn_one(fault)
        plain.learn_one(fault)
    assert guarded.is_anomaly(fault)
    assert plain.score_one(fault) < DEFAULT_THRESHOLD


def test_invalid_parameters_are_named():
    """Check that a bad parameter names itself, its rule and its value."""
    from edgewise.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=r"'bins' parameter of ContextLikelihood"):
        ContextLikelihood(bins=0)
    with pytest.raises(InvalidParameterError, match=r"'shrinkage' parameter of Mahalanobis .* 2"):
        Mahalanobis(shrinkage=2.0)
    with pytest.raises(InvalidParameterError, match=r"'threshold' parameter of Threshold"):
        Threshold(ContextLikelihood(), threshold=1.5)


def test_a_pickle_from_before_the_ensemble_loads_as_one_member() -> None:
    """Gateways keep detector state across restarts: a single-member (1-D) state saved
    by an earlier version must resume as ``warmup_spread=0`` (and no ART member) with
    identical scores."""
    import pickle

    rng = np.random.default_rng(3)
    x = np.sin(np.arange(1500) / 15) + 0.1 * rng.standard_normal(1500)
    x[1200] = 5.0
    new = ContextLikelihood(warmup=280, warmup_spread=0, creep_min=0)
    new.score_many(x[:600])
    old = ContextLikelihood(warmup=280, warmup_spread=0)
    old.score_many(x[:600])
    # the old layout: 1-D state and table (no creep counts, no warm-up seconds), 19
    # parameters, no warmup_spread attribute
    old.state_ = np.delete(old.state_[0], np.arange(22, 28))
    old.table_, old._p = old.table_[0].copy(), old._p[:19]
    for k in ("warmup_spread", "creep_min", "creep_factor", "glitch_gap"):
        del old.__dict__[k]
    for k in [k for k in vars(old) if k.startswith(("art", "_pa"))]:  # nor the ART member
        del old.__dict__[k]
    restored = ContextLikelihood.loads(pickle.dumps(old))
    assert restored.state_.shape == new.state_.shape and restored.warmup_spread == 0
    assert restored.art_vigilance == 0 and restored.creep_min == 0
    np.testing.assert_array_equal(restored.score_many(x[600:]), new.score_many(x[600:]))
    assert restored.score_many(np.array([50.0]))[0] == 1.0


def test_art_member_only_adds_graded_alerts_far_from_others(nab_corpus):
    """Check, on real NAB series, that the ART member changes nothing but adds alerts at
    ``art_level`` where the ensemble has none, each over ``art_refractory`` readings after
    the previous alert; without it (``art_vigilance=0``) the scores are the ensemble's."""
    _, values, _, _ = nab_corpus
    added = 0
    for key in ["realKnownCause/nyc_taxi.csv", "realTweets/Twitter_volume_AAPL.csv",
                "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv"]:
        det = ContextART()
        full = det.score_many(values[key])
        plain = ContextLikelihood().score_many(values[key])
        diff = np.flatnonzero(full != plain)
        assert np.all(full[diff] == det.art_level) and np.all(plain[diff] < DEFAULT_THRESHOLD)
        alerts = np.flatnonzero(full >= DEFAULT_THRESHOLD)
        for i in diff:
            before = alerts[alerts < i]
            assert len(before) == 0 or i - before[-1] > det.art_refractory
        added += len(diff)
    assert added > 0


@pytest.mark.parametrize("name", ["context-likelihood", "context-art", "ewzscore"])
@pytest.mark.parametrize("unit", [2.0**-30, 2.0**30])
def test_the_units_of_the_readings_do_not_matter(name, unit):
    """Check a stream read in other units scores the same: no absolute epsilon in the
    symbol width, the prediction error or the ART scaling (nor in the edge agent's
    default, ``ewzscore``). Units are powers of two, so
    every step scales exactly and the scores must be equal bit for bit (with 1e-9 in the
    z-score's denominator, 2**-30 units changed the alarms of 22 of NAB's 58 files)."""
    rng = np.random.default_rng(3)
    n = 3000
    x = np.sin(np.arange(n) / 20) + 0.05 * rng.standard_normal(n)
    x[1500] = 4.0
    x[2200:] += 0.8
    ref = get_detector(name).score_many(x)
    assert ref[1500] >= 0.9  # the spike
    np.testing.assert_array_equal(get_detector(name).score_many(x * unit), ref)
