"""`bench active` on bad inputs: one `error:` line and a non-zero exit, never a traceback.

Before: a NAB root whose ``labels/combined_windows.json`` names a data file that is not
there, a data file without NAB's ``timestamp``/``value`` columns, a JSON file that is not
JSON, or no ``config/profiles.json`` each ended the command in a Python traceback
(FileNotFoundError, KeyError 'value', JSONDecodeError). A dataset with fewer windows than
the largest budget (100) ended in ``KeyError: 100`` after the whole run: ``run_active``
stopped asking once every window was labelled and silently left the larger budgets out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgewise.bench import active
from edgewise.errors import InvalidParameterError
from tests.in_process import edgewise_here

PROFILES = {"standard": {"CostMatrix": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0,
                                        "tnWeight": 1.0}}}


def _nab_root(tmp_path: Path, rows: int = 0, *, columns: str = "timestamp,value",
              windows: str | None = None, profiles: bool = True) -> Path:
    """A NAB-shaped root with one file ``x/a.csv`` of ``rows`` readings (none: not there)."""
    root = tmp_path / "nab"
    (root / "labels").mkdir(parents=True)
    (root / "config").mkdir()
    (root / "data" / "x").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(
        windows if windows is not None else json.dumps(
            {"x/a.csv": [["2020-01-01 00:01:00.000000", "2020-01-01 00:02:00.000000"]]}))
    if profiles:
        (root / "config" / "profiles.json").write_text(json.dumps(PROFILES))
    if rows:
        t = np.datetime64("2020-01-01T00:00:00") + np.arange(rows) * np.timedelta64(1, "s")
        body = "\n".join(f"{str(s).replace('T', ' ')},{np.sin(i / 5):.4f}"
                         for i, s in enumerate(t))
        (root / "data" / "x" / "a.csv").write_text(f"{columns}\n{body}\n")
    return root


def _refused(root: Path, *more: str) -> str:
    r = edgewise_here("bench", "active", "--datasets", "nab", "--nab-dir", str(root),
                      "--seeds", "1", *more)
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_a_data_file_not_there_is_named(tmp_path: Path) -> None:
    """Check a data file the labels name but the root lacks is one error line naming it."""
    line = _refused(_nab_root(tmp_path))
    assert "x/a.csv" in line and "no such file" in line.lower()


def test_a_data_file_without_value_column_is_named(tmp_path: Path) -> None:
    """Check a data file without NAB's columns names the file and the columns it needs."""
    line = _refused(_nab_root(tmp_path, rows=300, columns="timestamp,val"))
    assert "x/a.csv" in line and "'value'" in line and "'val'" in line


def test_a_data_file_of_no_readings_is_named(tmp_path: Path) -> None:
    """Check a data file of a header only names the file (was IndexError)."""
    root = _nab_root(tmp_path)
    (root / "data" / "x" / "a.csv").write_text("timestamp,value\n")
    line = _refused(root)
    assert "x/a.csv" in line and "no readings" in line


def test_labels_that_are_not_json_are_named(tmp_path: Path) -> None:
    """Check a combined_windows.json that is not JSON names the file."""
    line = _refused(_nab_root(tmp_path, rows=300, windows="{not json"))
    assert "combined_windows.json" in line and "JSON" in line


def test_labels_that_are_not_json_are_named_with_nab_files_too(tmp_path: Path) -> None:
    """Check --nab-files N, which reads the labels' file names itself, names a
    combined_windows.json that is not JSON too (was a JSONDecodeError traceback)."""
    line = _refused(_nab_root(tmp_path, rows=300, windows="{not json"), "--nab-files", "1")
    assert "combined_windows.json" in line and "JSON" in line


def test_a_shared_data_folder_without_nab_names_where_it_came_from(tmp_path: Path) -> None:
    """Check a $EDGEWISE_SHARED_DATA without nab/ is named as such, not as a --nab-dir the
    user never gave."""
    r = edgewise_here("bench", "active", "--datasets", "nab", "--seeds", "1",
                      env={"EDGEWISE_SHARED_DATA": str(tmp_path / "nope")})
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "$EDGEWISE_SHARED_DATA" in r.stderr and "--nab-dir '" not in r.stderr, r.stderr


def test_missing_profiles_are_named(tmp_path: Path) -> None:
    """Check a root without config/profiles.json names the file."""
    line = _refused(_nab_root(tmp_path, rows=300, profiles=False))
    assert "profiles.json" in line


def test_too_few_windows_for_the_budgets_is_refused(tmp_path: Path) -> None:
    """Check a corpus of fewer windows (300 readings: 30) than the largest budget (100) is
    refused naming both, not a KeyError after the run."""
    line = _refused(_nab_root(tmp_path, rows=300))
    assert "100" in line and "30 windows" in line


def test_run_benchmark_refuses_a_budget_past_the_windows() -> None:
    """Check the Python API refuses before running, where it raised KeyError: 100 after."""
    ds = active.pump_fleet(n_pumps=1, length=2100, seed=1)  # 70 windows
    assert len(ds.windows) == 70
    with pytest.raises(InvalidParameterError, match=r"100.*70 windows"):
        active.run_benchmark([ds], seeds=1)
    with pytest.raises(InvalidParameterError, match=r"100.*70 windows"):
        active.run_active(ds, "random", 0)
    with pytest.raises(InvalidParameterError, match="seeds"):  # was IndexError
        active.run_benchmark([ds], seeds=0)


@pytest.mark.parametrize(("budgets", "batch"), [((0, -5, 10), 5), ((), 5), ((0, 10), 0),
                                                ((0, 2.5), 5), ((0, 10), -1)])
def test_run_active_refuses_bad_budgets_and_batches(budgets: tuple[float, ...],
                                                    batch: int) -> None:
    """Check budgets below 0 or not whole, no budget, or a batch under 1 are refused by name
    (a negative budget or a batch of 0 returned silently without those budgets)."""
    ds = active.pump_fleet(n_pumps=1, length=2100, seed=1)
    field = "batch" if batch < 1 else "budgets"
    with pytest.raises(InvalidParameterError, match=field):
        active.run_active(ds, "random", 0, budgets, batch=batch)  # type: ignore[arg-type]


def test_a_new_fleet_per_seed_reports_every_seed_s_counts() -> None:
    """Check the report of a dataset drawn anew per seed gives each seed's anomalous windows
    and events, not seed 0's as the dataset's.

    Before: `pumps` read "1200 windows, 119 anomalous, 26 anomaly events" while the five
    fleets averaged over held 89 to 134 anomalous windows and 22 to 26 events.
    """
    fleets = [active.pump_fleet(n_pumps=1, length=3000, seed=s) for s in (1, 4)]
    counts = [int(ds.y.sum()) for ds in fleets]
    assert counts[0] != counts[1]  # the fleets differ
    res = active.run_benchmark([lambda s: fleets[s]], strategies=("random",), seeds=2,
                               budgets=(0, 10))
    e = res["pumps"]
    assert e["anomalous_windows_by_seed"] == counts
    assert e["windows_by_seed"] == [len(ds.windows) for ds in fleets]
    assert len(e["events_by_seed"]) == 2  # type: ignore[arg-type]
    md = active.to_markdown(res, "edgewise bench active")
    line = next(x for x in md.splitlines() if x.startswith("1 simulated pumps"))
    assert f"anomalous windows {counts[0]}, {counts[1]}" in line, line
    # a fixed dataset (the same for every seed) keeps its one count
    one = active.run_benchmark([fleets[0]], strategies=("random",), seeds=2, budgets=(0, 10))
    assert "by_seed" not in "".join(k for k in one["pumps"] if k.startswith(("anom", "ev")))
