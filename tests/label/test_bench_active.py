from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgewise.bench.active import alarm_pieces, event_f1, load_nab, pump_fleet, run_active

REPO = Path(__file__).resolve().parents[2]


def test_bench_active_json_shape(shared_data: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "edgewise", "bench", "active", "--json", "--seeds", "1",
         "--nab-files", "3", "--nab-dir", str(shared_data / "nab")],
        capture_output=True, text=True, cwd=REPO, timeout=300,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"nab", "pumps", "sim-pumps"}
    for entry in out.values():
        assert entry["budgets"] == [0, 10, 25, 50, 100]
        assert len(entry["active_f1"]) == len(entry["random_f1"]) == 5
        assert entry["active_f1"][0] == entry["random_f1"][0]
    assert len(out["nab"]["active_nab"]) == len(out["nab"]["random_nab"]) == 5
    assert "active_nab" not in out["pumps"]


def test_active_labels_beat_random_on_three_simulated_fleets() -> None:
    """Check, in event F1 averaged over the bench's first three pump fleets (fleet s with
    the strategies seeded s, as ``edgewise bench active`` pairs them), that 25 labels
    chosen by the mix beat none by 0.05 and 100 beat 100 random labels by 0.1.

    One fleet is too noisy a witness for the 25-label claim: paired this way (measured
    with the threshold floor alone) it held on 9 of fleets 0-9 (fleet 0: 0.296 against
    0.313 with none), and the former single-fleet
    test (fleet 7, the mix seeded 0) failed once thresholds stopped falling more than
    1.5 z (0.225 against 0.275) while the mean over fleets 0-9 rose (0.399 -> 0.451 at 25
    labels, 0.245 with none). Here the means are 0.404 against 0.285, and 0.883 against
    0.450. A model that ignores the answers scores the same at every budget: both fail.
    """
    a0, a25, a100, r100 = [], [], [], []
    for s in (0, 1, 2):
        ds = pump_fleet(seed=s)
        act = run_active(ds, "mix", s, (0, 25, 100))
        a0.append(act[0][0])
        a25.append(act[25][0])
        a100.append(act[100][0])
        r100.append(run_active(ds, "random", s, (0, 100))[100][0])
    assert np.mean(a25) > np.mean(a0) + 0.05, (a0, a25)
    assert np.mean(a100) > np.mean(r100) + 0.1, (a100, r100)


def test_event_f1_counts_runs_of_alarms() -> None:
    y = np.array([0, 1, 1, 0, 0, 0, 1], bool)
    ev = np.array([-1, 0, 0, -1, -1, -1, 1])
    dev = np.array(["a"] * 6 + ["b"])
    assert event_f1(np.zeros(7, bool), y, ev, dev) == 0.0
    assert event_f1(y.copy(), y, ev, dev) == 1.0
    # one long alarm over a device boundary counts as two alarms
    pred = np.array([0, 0, 0, 0, 0, 1, 1], bool)
    assert event_f1(pred, y, ev, dev) == 2 * 0.5 * 0.5 / 1.0


def test_nab_score_of_window_alarms_follows_nab(shared_data: Path) -> None:
    """Check that the active bench's NAB score is NAB's: alarms on exactly the labelled
    windows score near the perfect 100, no alarm scores the null 0, and alarming on
    every window scores far below zero (each alarm run outside a window costs)."""
    files = ["realKnownCause/nyc_taxi.csv", "artificialWithAnomaly/art_daily_jumpsup.csv",
             "realTweets/Twitter_volume_AAPL.csv"]
    ds = load_nab(shared_data / "nab", files)
    assert ds.nab is not None
    oracle = ds.nab.score(ds.windows, ds.y)["standard"]
    assert 80 < oracle <= 100
    assert ds.nab.score(ds.windows, np.zeros(len(ds.y), bool))["standard"] == 0.0
    alternate = np.arange(len(ds.y)) % 2 == 0  # one alarm run per other window
    assert alternate[ds.y].any()
    assert ds.nab.score(ds.windows, alternate)["standard"] < oracle - 30


def test_alarm_on_every_window_is_not_one_true_alarm() -> None:
    """Alarming on every window of a device used to count as one true alarm that found
    all its events (event F1 1.0 here); the run is now cut at the labelled anomalies."""
    y = np.zeros(40, bool)
    y[10:12] = y[30:32] = True
    ev = np.where(y, np.cumsum(np.r_[0, np.diff(y.astype(int)) == 1]), -1)
    dev = np.array(["a"] * 40)
    flood = event_f1(np.ones(40, bool), y, ev, dev)
    assert flood == pytest.approx(2 * 0.4 * 1.0 / 1.4)  # 2 true pieces, 3 false
    assert event_f1(y.copy(), y, ev, dev) == 1.0
    # an alarm one window early or late is still one true alarm
    early = y.copy()
    early[9] = early[32] = True
    assert event_f1(early, y, ev, dev) == 1.0
    assert alarm_pieces(early, y, dev) == [(9, 11, True), (30, 32, True)]
