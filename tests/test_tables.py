"""The one CSV reader of the command line (``edgewise.tables``)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from edgewise.errors import QualityError
from edgewise.label.workflow import load_history_csv
from edgewise.tables import read_table


def test_gzip_bom_and_decimal_commas(tmp_path: Path) -> None:
    """Check a gzipped semicolon file with a byte-order mark and decimal commas reads as
    numbers under clean column names."""
    f = tmp_path / "x.csv.gz"
    f.write_bytes(gzip.compress("\ufeff t ; druck\n1;0,5\n2;-1,25e1\n".encode()))
    df = read_table(f)
    assert list(df.columns) == ["t", "druck"]
    assert df["druck"].tolist() == [0.5, -12.5]


@pytest.mark.parametrize(("text", "needle"), [
    ("", "is empty"), ("a,b\n", "header but no data rows"), ('a,b\n"1,2\n', "not a valid CSV"),
])
def test_bad_files_are_named(tmp_path: Path, text: str, needle: str) -> None:
    """Check an empty, header-only or broken file gets one error naming it."""
    f = tmp_path / "bad.csv"
    f.write_text(text)
    with pytest.raises(QualityError, match=needle):
        read_table(f)
    with pytest.raises(QualityError, match="does not exist"):
        read_table(tmp_path / "missing.csv")


def test_label_history_reads_a_semicolon_export(tmp_path: Path) -> None:
    """Check ``label suggest --csv`` reads the same European export as ``detect``."""
    f = tmp_path / "h.csv"
    f.write_text("timestamp;temp;druck\n1700000001;20,5;1,0\n1700000000;20,25;0,5\n")
    ts, X, metrics = load_history_csv(f)
    assert metrics == ["temp", "druck"]
    assert ts.tolist() == [1_700_000_000 * 10**9, 1_700_000_001 * 10**9]
    np.testing.assert_array_equal(X, [[20.25, 0.5], [20.5, 1.0]])
