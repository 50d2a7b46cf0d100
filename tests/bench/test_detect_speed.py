"""Tests of `edgewise bench detect`."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from edgewise.bench._machine import machine
from edgewise.bench.detect_speed import benchmark_detectors, load_series

REPO = Path(__file__).resolve().parents[2]


def test_benchmark_reports_every_detector_and_river():
    """Check that each detector gets positive rates and River HST is measured beside them."""
    x, source = load_series(None, 5_000)
    rows = benchmark_detectors(x, one_at_a_time_points=500, repeats=1)
    names = [r["detector"] for r in rows]
    assert "context-likelihood" in names and names[-1] == "river.HalfSpaceTrees"
    assert all(r["one_pps"] > 0 for r in rows)
    assert rows[-1]["replay_pps"] is None
    assert source == "synthetic cycle"


def test_variants_of_a_compiled_detector_replay_the_whole_series():
    """Check a variant that inherits a compiled score_many (context-art) replays every point,
    and only a detector on the base class's plain loop (mahalanobis) replays a sample."""
    x, _ = load_series(None, 30_000)
    rows = {r["detector"]: r for r in benchmark_detectors(
        x, one_at_a_time_points=200, repeats=1, names=["context-art", "mahalanobis"])}
    assert rows["context-art"]["replay_points"] == 30_000
    assert rows["mahalanobis"]["replay_points"] == 20_000
    assert rows["river.HalfSpaceTrees"]["replay_points"] is None


def test_default_detector_replays_faster_than_river_one_at_a_time():
    """Check that replay of the default detector is well ahead of River (loose, loaded CI)."""
    x, _ = load_series(None, 200_000)
    rows = {r["detector"]: r for r in benchmark_detectors(
        x, one_at_a_time_points=2_000, repeats=1, names=["context-likelihood"])}
    assert rows["context-likelihood"]["replay_pps"] > 10 * rows["river.HalfSpaceTrees"]["one_pps"]


def test_cli_json_is_one_object():
    """Check that `edgewise bench detect --json` prints one JSON object with ratios and the
    machine it ran on."""
    p = subprocess.run(
        [sys.executable, "-m", "edgewise", "bench", "detect", "--points", "5000",
         "--one-points", "300", "--repeats", "1", "--json"],
        capture_output=True, text=True, check=False, timeout=300,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["default"] == "context-likelihood"
    assert doc["one_points"] == 300 and doc["machine"] == machine()  # measured, not the arch
    assert doc["cpus"] == os.cpu_count() and doc["python"] == platform.python_version()
    first = doc["detectors"][0]
    assert first["replay_vs_river"] > 1 and first["one_vs_river"] > 0
