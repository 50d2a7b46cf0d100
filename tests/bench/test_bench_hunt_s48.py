"""Bench hunt, session 48: ``bench groups`` scores each device against its own truth
whatever the order of its ids; ``bench forecast`` says a bad ``--tail`` or a huge
``--origins`` in one line (or copes), not a traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.bench import forecast as bench_forecast
from edgewise.bench.groups import _ours, _scores
from edgewise.cli import app, load_commands
from edgewise.models.cluster import BehaviourGroups

load_commands()


def _fleet(order: list[tuple[str, float]]) -> dict[str, pd.DataFrame]:
    """Two hours a minute of two metrics per device, at the level given, in ``order``."""
    idx = pd.date_range("2026-01-01", periods=120, freq="1min", tz="UTC")
    out = {}
    for i, (dev, level) in enumerate(order):
        rng = np.random.default_rng(i)
        out[dev] = pd.DataFrame({"a": level + rng.normal(0, 1, 120),
                                 "b": 2 * level + rng.normal(0, 1, 120)}, index=idx)
    return out


def test_groups_found_are_scored_in_the_fleets_own_order() -> None:
    """Check ``_ours`` gives each device's group in the order of the fleet given (the truth's
    order), not in the sorted order the model keeps: devices a0, a2, a4 at 0 and a1, a3, a5
    at 100, given in that order, were scored against each other's truth (ARI -0.5, not 1)."""
    hist = _fleet([("a0", 0.0), ("a2", 0.0), ("a4", 0.0),
                   ("a1", 100.0), ("a3", 100.0), ("a5", 100.0)])
    truth = ["low"] * 3 + ["high"] * 3
    found = _ours(BehaviourGroups(n_groups=2, min_group_size=1, random_state=0), hist)
    assert len(set(found[:3].tolist())) == 1 and len(set(found[3:].tolist())) == 1
    assert _scores(truth, found)["ari"] == pytest.approx(1.0)


def test_forecast_tail_nan_is_one_line(shared_data: Path) -> None:
    """Check ``--tail nan`` (which typer's range lets through) is one error line naming the
    option, not a ValueError traceback from placing the origins."""
    r = CliRunner().invoke(app, ["bench", "forecast", "--nab", str(shared_data / "nab"),
                                 "--series", "realKnownCause/nyc_taxi.csv", "--tail", "nan"])
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    line = r.output.strip()
    assert "\n" not in line and "--tail" in line and "nan" in line


def test_more_origins_than_steps_places_each_step_once() -> None:
    """Check origins asked past the steps there are give each step once, at once, as a
    smaller ask that reaches every step does: ``--origins 1000000000000`` asked numpy for
    7 TiB and ended in a MemoryError traceback."""
    every = bench_forecast.origin_steps("s.csv", 1000, 100, 0.2, 100)
    assert every.tolist() == list(range(800, 900))
    assert bench_forecast.origin_steps("s.csv", 1000, 100, 0.2, 10**12).tolist() == \
        every.tolist()


@pytest.mark.parametrize("args", [
    ["store", "--batch", "160", "--batches", "2", "--devices", "2"],
    ["fleet", "--pumps", "1", "--hours", "0.01", "--detectors", "ewzscore"],
])
def test_text_output_of_a_timing_bench_says_the_machine(args: list[str]) -> None:
    """Check ``bench store`` and ``bench fleet`` without ``--json`` say the machine their
    timings were measured on (CPUs and Python), as their JSON does: the text said none."""
    from edgewise.bench._machine import machine

    r = CliRunner(mix_stderr=False).invoke(app, ["bench", *args])
    assert r.exit_code == 0, r.output
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("machine: ") and machine() in last


def test_bench_store_removes_the_folders_it_made_for_its_file(tmp_path: Path) -> None:
    """Check ``bench store --store duckdb:///NEW/DEEPER/x.duckdb`` removes the folders it
    made for its file along with the file (it left ``NEW/DEEPER`` behind, empty), and leaves
    a folder that was there before."""
    url = f"duckdb://{tmp_path / 'new' / 'deeper' / 'x.duckdb'}"
    r = CliRunner(mix_stderr=False).invoke(app, ["bench", "store", "--store", url, "--batch",
                                                 "160", "--batches", "2", "--devices", "2"])
    assert r.exit_code == 0, r.output
    assert not (tmp_path / "new").exists() and tmp_path.is_dir()


def test_forecast_title_says_the_origins_each_series_had(tmp_path: Path) -> None:
    """Check the table's title gives the origins the series had (5: every step of a short
    tail), not ``--origins`` (8), which the title claimed however few were placed."""
    folder = tmp_path / "data" / "x"
    folder.mkdir(parents=True)
    t = pd.date_range("2026-01-01", periods=240, freq="1h")
    v = 20 + 5 * np.sin(2 * np.pi * np.arange(240) / 24) + \
        np.random.default_rng(0).normal(0, 0.3, 240)
    pd.DataFrame({"timestamp": t.strftime("%Y-%m-%d %H:%M:%S"), "value": v.round(3)}).to_csv(
        folder / "s.csv", index=False)
    r = CliRunner(mix_stderr=False).invoke(app, [
        "bench", "forecast", "--nab", str(tmp_path), "--series", "x/s.csv", "--tail", "0.12",
        "--origins", "8"])
    assert r.exit_code == 0, r.output
    assert "5 origins per series" in r.stdout and "8 origins" not in r.stdout


class _Flood:
    """A feedback model that alarms on every window, whatever it is told."""

    def fit(self, ws: object, y: object) -> _Flood:
        return self

    def decision_function(self, ws: object) -> np.ndarray:
        return np.ones(len(ws))  # type: ignore[arg-type]


def test_active_nab_score_takes_no_detection_time_from_the_labels(
        shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the active bench's NAB score of a model alarming on every window is NAB's null
    score, 0, far below the labels' own: the bench cut each alarm run where the labels
    start and end an anomaly, so every anomaly got a detection at its very start from the
    labels, and the flood scored 85.7 where the labels score 89.3 on these three files."""
    from edgewise.bench import active

    files = ["realKnownCause/nyc_taxi.csv", "artificialWithAnomaly/art_daily_jumpsup.csv",
             "realTweets/Twitter_volume_AAPL.csv"]
    ds = active.load_nab(shared_data / "nab", files)
    assert ds.nab is not None
    oracle = ds.nab.score(ds.windows, ds.y)["standard"]
    monkeypatch.setattr(active, "WindowFeedbackModel", lambda **kw: _Flood())
    flood = active.run_active(ds, "random", 0, budgets=(0,))[0][2]
    assert oracle > 80 and flood == 0.0
