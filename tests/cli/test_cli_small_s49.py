"""Three small CLI silences (session 49): ``quality --plots`` with nothing flagged, ``label
list`` of a device with no labels, ``train --with-labels`` without ``--device``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.in_process import edgewise_here


def test_quality_plots_with_nothing_flagged_says_so(tmp_path: Path) -> None:
    """Check ``quality FILE --plots DIR`` of clean data says no plot was drawn (it made an
    empty DIR and said nothing: a user looked for plots that never came)."""
    ts = 1_700_000_000 + np.arange(60)
    pd.DataFrame({"ts": ts, "temp": 20 + np.sin(np.arange(60))}).to_csv(tmp_path / "r.csv",
                                                                       index=False)
    plots = tmp_path / "plots"
    r = edgewise_here("quality", str(tmp_path / "r.csv"), "--plots", str(plots))
    assert r.returncode == 0, r.stderr
    assert "no plots: nothing flagged" in r.stderr, r.stderr
    assert str(plots) in r.stderr
    assert not list(plots.iterdir())


def test_quality_plots_with_a_flag_draws_and_has_no_note(tmp_path: Path) -> None:
    ts = 1_700_000_000 + np.arange(60)
    temp = 20 + np.sin(np.arange(60))
    temp[30] = 1e6  # a spike
    pd.DataFrame({"ts": ts, "temp": temp}).to_csv(tmp_path / "r.csv", index=False)
    r = edgewise_here("quality", str(tmp_path / "r.csv"), "--plots", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    assert "no plots" not in r.stderr
    assert list((tmp_path / "p").iterdir())


def test_label_list_of_a_device_without_labels_says_so(tmp_path: Path) -> None:
    """Check ``label list --device nodev`` says there are none and that nodev is no
    registered device (it printed an empty table, exit 0, no word)."""
    dd = tmp_path / "ew"
    assert edgewise_here("device", "add", "pump-1", "--data-dir", str(dd)).returncode == 0
    csv = tmp_path / "labels.csv"
    csv.write_text("device_id,start,end,label\n"
                   "pump-1,2024-01-01T00:00:00Z,2024-01-01T01:00:00Z,fault\n")
    r = edgewise_here("label", "import", str(csv), "--data-dir", str(dd))
    assert r.returncode == 0, r.stderr
    r = edgewise_here("label", "list", "--device", "nodev", "--data-dir", str(dd))
    assert r.returncode == 0, r.stderr
    assert "no labels for device 'nodev'" in r.stderr, r.stderr
    assert "no registered device" in r.stderr
    r = edgewise_here("label", "list", "--device", "pump-1", "--data-dir", str(dd))
    assert r.returncode == 0 and "note" not in r.stderr and "fault" in r.stdout, r.stderr


def test_label_list_of_an_empty_data_dir_says_none_were_imported(tmp_path: Path) -> None:
    dd = tmp_path / "ew"
    dd.mkdir()
    r = edgewise_here("label", "list", "--device", "nodev", "--data-dir", str(dd), "--json")
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr
    assert "no labels for device 'nodev'" in r.stderr and "no label has been imported" in \
        r.stderr, r.stderr
    assert list(dd.iterdir()) == []  # a listing still makes nothing


def test_train_with_labels_without_device_names_device(tmp_path: Path) -> None:
    """Check ``train --with-labels`` without ``--device`` names --device (it said only "Say
    what to train: …")."""
    r = edgewise_here("train", "--with-labels", "--data-dir", str(tmp_path))
    assert r.returncode == 2, r.stdout
    line = r.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, r.stderr
    assert "--device" in line and "--with-labels" in line and "Say what" not in line, line
