"""RUL training on inputs a bug hunt found: a window far longer than any history (a 75 GiB
table, then a traceback), a sensor empty in every row (required to predict, though it
changes nothing) and histories of one row per unit (a model that learned nothing)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.rul import RULModel
from edgewise.models.windows import window_features
from tests.in_process import edgewise_here as edgewise  # in this process
from tests.models.test_rul import fleet


def test_window_features_memory_follows_the_data_not_the_window() -> None:
    """Check that a window of 5,000 over 300 rows peaks at a few MB (a 5,000 x 5,000 slope
    table took 200 MB; 100,000 asked for 75 GiB) and that its slope is the least-squares
    slope of the whole history so far (the window is never full)."""
    z = np.random.default_rng(0).normal(size=(300, 2)).cumsum(axis=0)
    tracemalloc.start()
    try:
        f = window_features(z, window=5000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, peak
    expected = np.polyfit(np.arange(300.0), z[:, 0], 1)[0]
    assert f[-1, 2] == pytest.approx(expected, rel=1e-6)


def test_a_window_longer_than_every_history_is_one_line(tmp_path: Path) -> None:
    """Check that --window 100000 is refused in one line naming the option, the value and
    the longest unit's history (it ended in a 74.5 GiB MemoryError traceback), while a window
    of exactly the longest history trains."""
    df = fleet(6)
    df.to_csv(tmp_path / "h.csv", index=False)
    longest = int(df.groupby("unit").size().max())
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--window", "100000",
                    "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"error: --window 100000 is longer than the longest unit's history ({longest} rows), "
        f"so it would see nothing more; give at most {longest}")
    assert not (tmp_path / "m.rul").exists()
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--window", str(longest),
                    "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 0, done.stderr


def test_an_empty_sensor_is_left_out_and_not_needed_to_predict(tmp_path: Path) -> None:
    """Check that a sensor empty in every training row is left out with a note naming it and
    that data without it predicts (it failed with "The data lacks the column(s) ['dead']",
    though an empty 'dead' column gave identical predictions)."""
    train = fleet(8).assign(dead=np.nan)
    now = fleet(3, seed=4)
    model = RULModel(n_estimators=20, cap=60.0).fit(train)
    flat = ("only 1 distinct value(s) in the training rows (at least 5 needed): nothing to "
            "learn from")
    assert model.left_out_ == {"dead": "every cell is empty", "load": flat, "flat": flat}
    assert "dead" not in model.required_columns()
    np.testing.assert_array_equal(model.predict(now), model.predict(now.assign(dead=np.nan)))

    train.to_csv(tmp_path / "h.csv", index=False)
    now.to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"), "--cap", "60",
                    "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"note: column {c!r} left out of the model: {why}; predictions do not need it"
        for c, why in model.left_out_.items()]
    done = edgewise("predict", "rul", "--model", str(tmp_path / "m.rul"), "--data",
                    str(tmp_path / "n.csv"))
    assert done.returncode == 0, done.stderr


def test_one_row_per_unit_is_refused(tmp_path: Path) -> None:
    """Check that histories of one row per unit are refused by name: every target is 0 (the
    unit's only row is its failure), and the model trained silently to say "0 left" of
    every unit."""
    last = fleet(8).groupby("unit").tail(1)
    with pytest.raises(InvalidParameterError, match=r"cannot learn degradation from one row "
                                                    r"per unit: each of the 8 units"):
        RULModel(n_estimators=10).fit(last)
    last.to_csv(tmp_path / "h.csv", index=False)
    done = edgewise("train", "rul", "--data", str(tmp_path / "h.csv"),
                    "--out", str(tmp_path / "m.rul"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "one row per unit" in done.stderr


@pytest.mark.parametrize("cut", [5000, "header"])
def test_a_damaged_model_file_is_named_in_one_line(tmp_path: Path, cut: int | str) -> None:
    """Check a model file cut short after its header (a copy that stopped) is refused in one
    line naming it: it gave an UnpicklingError traceback, or Click's bare 'aborted' for an
    EOFError; and a directory given as --model is called one."""
    from edgewise.models.rul import ModelFileError, load_model

    model = tmp_path / "m.rul"
    RULModel(n_estimators=10, cap=60.0).fit(fleet(6)).save(model)
    data = model.read_bytes()
    end = data.index(b"\n", len(b"EDGEWISE-RUL\n")) + 1 if cut == "header" else int(cut)
    bad = tmp_path / "cut.rul"
    bad.write_bytes(data[:end])
    with pytest.raises(ModelFileError, match="is damaged or truncated"):
        load_model(bad)
    fleet(2, seed=3).to_csv(tmp_path / "n.csv", index=False)
    done = edgewise("predict", "rul", "--model", str(bad), "--data", str(tmp_path / "n.csv"))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"RUL model file {str(bad)!r} is damaged or truncated" in done.stderr
    done = edgewise("predict", "rul", "--model", str(tmp_path), "--data",
                    str(tmp_path / "n.csv"))
    assert done.returncode == 2 and "is a directory" in done.stderr, done.stderr


def test_an_infinite_cap_is_refused() -> None:
    """Check ``cap=inf`` is refused (it trained, and ``predict rul --json`` then wrote
    ``"cap": Infinity``, which is no JSON)."""
    with pytest.raises(InvalidParameterError, match=r"'cap' parameter of RULModel must be a "
                                                    r"float in the range \(0, inf\)"):
        RULModel(n_estimators=10, cap=float("inf")).fit(fleet(4))


def test_a_gateway_data_dir_with_csv_files_is_read_as_its_store(tmp_path: Path) -> None:
    """Check ``--data DIR`` reads DIR's ``edgewise.duckdb`` even when CSV files lie beside
    it (the demo writes ``demo-labels.csv`` there): before, such a dir was read as CSV data
    ('--failure-label applies to store data only', or the labels read as sensor rows), and
    the note names the CSV files not read."""
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    store = open_store(f"duckdb:///{tmp_path / 'edgewise.duckdb'}")
    try:
        for unit, g in fleet(6).groupby("unit"):
            store.append([Reading(f"pump-{unit}", m, int(1.7e18) + int(c) * 60 * 10**9,
                                  float(v))
                          for m in ("temp", "noise") for c, v in zip(g.cycle, g[m],
                                                                    strict=True)])
    finally:
        store.close()
    (tmp_path / "demo-labels.csv").write_text("device_id,start,end,label\n")
    done = edgewise("train", "rul", "--data", str(tmp_path), "--history-ends-at-failure",
                    "--out", str(tmp_path / "m.rul"), "--cap", "60")
    assert done.returncode == 0, done.stderr
    assert (f"note: --data {str(tmp_path)!r} is a gateway data dir (it holds edgewise.duckdb):"
            " reading its store, not demo-labels.csv; give a CSV file to read one.") \
        in done.stderr
