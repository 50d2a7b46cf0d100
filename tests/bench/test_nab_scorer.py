"""Tests of our NAB scorer against NAB's own published numbers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from edgewise.bench.nab_scorer import (
    file_score,
    load_profiles,
    load_results_dir,
    load_windows,
    score_corpus,
    sweep_file,
    threshold_curve,
)

COST = {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0}


def test_reproduces_nab_on_numenta_reference_results(shared_data):
    """Check that the HTM reference results score 70.10 / 63.21 / 74.32 within 0.05, fast."""
    nab = shared_data / "nab"
    t0 = time.perf_counter()
    ts, scores = load_results_dir(nab / "reference-results" / "numenta")
    result = score_corpus(
        ts,
        scores,
        load_windows(nab / "labels" / "combined_windows.json"),
        load_profiles(nab / "config" / "profiles.json"),
    )
    elapsed = time.perf_counter() - t0
    got = result.normalized()
    assert len(scores) == 58
    assert got["standard"] == pytest.approx(70.10, abs=0.05)
    assert got["reward_low_FP_rate"] == pytest.approx(63.21, abs=0.05)
    assert got["reward_low_FN_rate"] == pytest.approx(74.32, abs=0.05)
    assert result.profiles["standard"].threshold == pytest.approx(0.5431, abs=1e-4)
    assert result.profiles["standard"].null == -116.0
    assert result.profiles["reward_low_FN_rate"].null == -232.0
    # per-file scores at the chosen threshold add up to the optimised corpus score
    std = result.profiles["standard"]
    assert sum(f.score for f in std.files.values()) == pytest.approx(std.raw, abs=1e-9)
    assert elapsed < 10.0


def test_only_the_earliest_detection_in_a_window_counts():
    """Check that a late second detection in a window adds nothing, an earlier one more."""
    ts = np.arange(200).astype("datetime64[m]")
    sweep = sweep_file(ts, [(ts[100], ts[119])])
    s = np.zeros(200)
    s[110] = 1.0
    late = file_score(sweep, s, 0.5, COST).score
    s[115] = 1.0
    assert file_score(sweep, s, 0.5, COST).score == pytest.approx(late)
    s[100] = 1.0
    assert file_score(sweep, s, 0.5, COST).score == pytest.approx(1.0)
    assert late < 1.0


def test_probationary_detections_and_misses_are_ignored():
    """Check that detections in the first 15% are not false positives."""
    ts = np.arange(200).astype("datetime64[m]")
    sweep = sweep_file(ts, [(ts[100], ts[119])])
    s = np.zeros(200)
    s[:30] = 1.0  # probation is floor(0.15 * 200) = 30 records
    r = file_score(sweep, s, 0.5, COST)
    assert (r.score, r.fp) == (-1.0, 0)
    s[30] = 1.0
    assert file_score(sweep, s, 0.5, COST).score == pytest.approx(-1.11)


def test_false_positive_cost_fades_near_a_window_and_is_full_far_away():
    """Check that an FP just after a window costs less than one far from it."""
    ts = np.arange(400).astype("datetime64[m]")
    sweep = sweep_file(ts, [(ts[100], ts[119])])
    assert -0.2 < sweep.fp_cost[120] < 0.0
    assert sweep.fp_cost[399] == -1.0
    assert sweep.fp_cost[70] == -1.0  # before the first window


def test_threshold_curve_matches_per_file_scores():
    """Check that the swept curve equals rescoring at each candidate threshold."""
    rng = np.random.default_rng(0)
    ts = np.arange(500).astype("datetime64[m]")
    sweep = sweep_file(ts, [(ts[200], ts[239]), (ts[400], ts[419])])
    s = np.round(rng.random(500), 2)
    thresholds, totals = threshold_curve([sweep], [s], COST)
    for t, total in zip(thresholds, totals, strict=True):
        assert file_score(sweep, s, t, COST).score == pytest.approx(total, abs=1e-9)


def test_window_limit_not_in_data_is_an_error():
    """Check that a window boundary missing from the timestamps is refused by name."""
    ts = np.arange(50).astype("datetime64[m]")
    with pytest.raises(ValueError, match="not a timestamp"):
        sweep_file(ts, [(np.datetime64("2030-01-01T00:00"), ts[10])])


def test_a_fresh_results_file_wins_over_an_archived_gzip(tmp_path):
    """Check that where a run wrote ``X.csv`` beside an archived ``X.csv.gz`` (a results
    folder kept in the repository), the fresh file is read, not the stale one."""
    import gzip

    folder = tmp_path / "det" / "cat"
    folder.mkdir(parents=True)
    head = "timestamp,value,anomaly_score,label\n"
    old = head + "2020-01-01 00:00:00,1,0.1,0\n"
    new = head + "2020-01-01 00:00:00,1,0.9,0\n"
    (folder / "det_a.csv.gz").write_bytes(gzip.compress(old.encode()))
    (folder / "det_a.csv").write_text(new)
    (folder / "det_b.csv.gz").write_bytes(gzip.compress(old.encode()))
    _, scores = load_results_dir(tmp_path / "det")
    assert scores["cat/a.csv"].tolist() == [0.9]
    assert scores["cat/b.csv"].tolist() == [0.1]
