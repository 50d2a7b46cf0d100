"""An output option naming one of the command's inputs is refused before any work.

``train rul --data runs.csv --out runs.csv``, ``train forecast --csv hist.csv --out
hist.csv``, ``predict forecast --model m.forecast --out m.forecast``, ``detect FILE --out
FILE`` and ``groups --csv DIR --save DIR/x.csv`` each ran and silently replaced the input
(the last one with a file the next ``groups --csv DIR`` reads as a device). Each now exits 2
with one line naming both options, and the input is left byte for byte as it was."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.models.forecast import Forecaster
from tests.models.test_cluster import device
from tests.models.test_forecast import hourly
from tests.models.test_rul import fleet

load_commands()


def cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner(mix_stderr=False).invoke(app, list(args))


def refused(args: list[str], kept: Path, *words: str) -> None:
    """Check the command exits 2 with one line holding ``words``, ``kept`` unchanged."""
    before = kept.read_bytes()
    done = cli(*args)
    assert done.exit_code == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert kept.read_bytes() == before


def _hist(tmp_path: Path) -> Path:
    ts, y = hourly(days=12)
    path = tmp_path / "hist.csv"
    pd.DataFrame({"timestamp": ts // 10**9, "kw": y}).to_csv(path, index=False)
    return path


def test_train_rul_out_is_its_data(tmp_path: Path) -> None:
    runs = tmp_path / "runs.csv"
    fleet(6).to_csv(runs, index=False)
    refused(["train", "rul", "--data", str(runs), "--out", str(runs)], runs,
            "--out", "is the --data input", "would destroy")


def test_train_rul_out_inside_its_data_folder(tmp_path: Path) -> None:
    """Check a model written into the folder of CSVs --data reads is refused too."""
    (tmp_path / "runs").mkdir()
    runs = tmp_path / "runs" / "a.csv"
    fleet(6).to_csv(runs, index=False)
    refused(["train", "rul", "--data", str(runs.parent), "--out",
             str(runs.with_name("m.csv"))], runs, "lies inside the --data folder")
    assert not runs.with_name("m.csv").exists()


def test_train_forecast_out_is_its_csv(tmp_path: Path) -> None:
    hist = _hist(tmp_path)
    refused(["train", "forecast", "--csv", str(hist), "--column", "kw", "--out", str(hist)],
            hist, "--out", "is the --csv input")


def test_train_forecast_out_is_its_csv_through_a_link(tmp_path: Path) -> None:
    """Check the same file under another name (a symbolic link) is refused as well."""
    hist = _hist(tmp_path)
    link = tmp_path / "link.csv"
    link.symlink_to(hist)
    refused(["train", "forecast", "--csv", str(hist), "--column", "kw", "--out", str(link)],
            hist, "is the --csv input")


def test_predict_forecast_out_is_its_model(tmp_path: Path) -> None:
    ts, y = hourly(days=12)
    model = tmp_path / "m.forecast"
    Forecaster(horizon=2, n_estimators=5, calibration_origins=4).fit(ts, y).save(model)
    refused(["predict", "forecast", "--model", str(model), "--out", str(model)], model,
            "is the --model input")


def test_detect_out_is_its_file(tmp_path: Path) -> None:
    file = tmp_path / "m.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"timestamp": np.arange(300), "temp": rng.normal(size=300)}).to_csv(
        file, index=False)
    refused(["detect", str(file), "--out", str(file)], file, "--out", "is the FILE input")


@pytest.mark.parametrize("name", ["x.csv", "groups.json"])
def test_groups_save_inside_its_csv_folder(tmp_path: Path, name: str) -> None:
    """Check --save into the --csv folder is refused: an x.csv there is read as a device
    by the next run."""
    for i, kind in enumerate(("plain", "plain", "hot", "hot")):
        device(kind, i).rename_axis("timestamp").to_csv(tmp_path / f"{kind}{i}.csv")
    first = tmp_path / "plain0.csv"
    refused(["groups", "--csv", str(tmp_path), "--save", str(tmp_path / name)], first,
            "--save", "lies inside the --csv folder")
    assert not (tmp_path / name).exists()


def test_an_out_beside_the_input_is_still_written(tmp_path: Path) -> None:
    """Check the refusal is only for the input itself: an --out beside it is written."""
    hist = _hist(tmp_path)
    out = tmp_path / "next.forecast"
    done = cli("train", "forecast", "--csv", str(hist), "--column", "kw", "--out", str(out),
               "--horizon", "2", "--json")
    assert done.exit_code == 0, done.stderr
    assert out.is_file()


@pytest.mark.parametrize("args", [
    ["bench", "nab", "--data", "{nab}", "--out", "{nab}/results"],
    ["bench", "nab", "--data", "{nab}", "--bootstrap", "10", "--reference", "{ref}",
     "--out", "{ref}/ours"],
    ["bench", "edge", "--data", "{root}", "--out", "{root}/edge.md"],
    ["bench", "active", "--nab-dir", "{nab}", "--out", "{nab}/active.md"],
])
def test_a_benchmark_never_writes_into_its_corpus(tmp_path: Path, args: list[str]) -> None:
    """A results path inside the corpus a benchmark reads is refused before anything is
    read or written (it would mix result files into the data the next run reads)."""
    root = tmp_path / "data"
    nab, ref = root / "nab", tmp_path / "ref"
    (nab / "labels").mkdir(parents=True)
    (nab / "labels" / "combined_windows.json").write_text("{}")
    (root / "cmapss").mkdir()
    for name in ("train_FD001.txt.gz", "test_FD001.txt", "RUL_FD001.txt"):  # bench edge's
        (root / "cmapss" / name).write_text("")
    series = nab / "data" / "realKnownCause" / "machine_temperature_system_failure.csv"
    series.parent.mkdir(parents=True)
    series.write_text("timestamp,value\n")
    ref.mkdir()
    kept = nab / "labels" / "combined_windows.json"
    filled = [a.format(nab=nab, ref=ref, root=root) for a in args]
    refused(filled, kept, "--out", "input")
    assert sorted(p.name for p in nab.iterdir()) == ["data", "labels"]
    assert sorted(p.name for p in ref.iterdir()) == []
