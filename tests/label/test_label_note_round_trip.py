"""A label's note comes back exactly from :func:`labels_csv` through ``edgewise label
import``, as its docstring says: a note starting or ending with white space lost it (the
reader strips every note) and one holding a lone carriage return was not quoted by
:mod:`csv` (``\\r`` is not in the writer's line terminator), so the row broke in two and
the import failed. A note holding NUL, which no label file can carry (a NUL byte reads as
binary data), is refused rather than written."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

import pytest

from edgewise.errors import InvalidParameterError
from edgewise.label.store import LabelStore, labels_csv, read_labels_csv
from edgewise.security import Security
from tests.in_process import edgewise_here

S = 1_000_000_000
NOTES = [" seal", "seal ", "\tvalve\t", "a\rb", "a\r\nb", "a\nb", "line\r", "x\xa0",
         ' "q" ', "a,b; c", "", "plain"]


def _rows(t0: int) -> list[tuple[str, int, int, str, str]]:
    return [("pump-1", t0 + 10 * i * S, t0 + (10 * i + 5) * S, "anomaly", note)
            for i, note in enumerate(NOTES)]


def test_labels_csv_notes_read_back_exactly(tmp_path: Path) -> None:
    """Check every note of ``NOTES`` comes back as written (on the old code ' seal' came
    back 'seal', and 'a\\rb' made the import fail on a row of empty times)."""
    rows = _rows(1_704_067_200 * S)
    f = tmp_path / "labels.csv"
    f.write_bytes(labels_csv(rows).encode())
    assert read_labels_csv(f) == rows


def test_label_import_of_an_export_keeps_notes_and_adds_nothing_again(
        data_dir: Path, tmp_path: Path) -> None:
    """Check ``edgewise label import`` of a :func:`labels_csv` file stores the notes as
    given, and importing the file again finds every window unchanged (no new version)."""
    with closing(Security(data_dir)) as sec:
        sec.add_device("pump-1")
    t0 = (int(time.time()) - 3600) * S
    f = tmp_path / "labels.csv"
    f.write_bytes(labels_csv(_rows(t0)).encode())
    first = edgewise_here("label", "import", str(f), "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    with LabelStore(data_dir) as labels:
        assert [lab.note for lab in labels.labels("pump-1")] == NOTES
    again = edgewise_here("label", "import", str(f), "--data-dir", str(data_dir))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"imported 0 labels (0 relabelled, {len(NOTES)} unchanged)")


def test_files_written_before_read_as_before(tmp_path: Path) -> None:
    """Check unquoted notes still lose the spaces around them (a spreadsheet's
    'anomaly, seal'), and a quote not at the start of the field is text, as csv reads it;
    a quoted note followed by more text is read as csv reads it, stripped."""
    f = tmp_path / "labels.csv"
    f.write_text("device_id, start, end, label, note\n"
                 "pump-1, 1704067200, 1704067260, anomaly, seal \n"
                 'pump-1,1704067300,1704067360,anomaly, "q"\n'
                 'pump-1,1704067400,1704067460,anomaly," a " b \r\n'
                 "pump-1,1704067500,1704067560,anomaly,plain\n")
    assert [row[4] for row in read_labels_csv(f)] == ["seal", '"q"', "a  b", "plain"]


def test_a_note_holding_nul_is_refused_not_written(tmp_path: Path) -> None:
    """Check :func:`labels_csv` refuses a note with NUL, naming the field and where the
    NUL is: it wrote it, and the file was then refused as binary data on import."""
    with pytest.raises(InvalidParameterError) as exc:
        labels_csv([("pump-1", 10**18, 10**18 + 1, "anomaly", "seal\x00leak")])
    assert exc.value.field == "note"
    assert "without NUL characters" in str(exc.value) and "character 4" in str(exc.value)
