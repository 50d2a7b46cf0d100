"""Every command that takes a CSV path, given a directory or a binary file: one line naming the
path and what is wrong (a directory was "does not exist"; a binary label file was a codec
error naming no file; detect's was a tokenizer error)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import EdgewiseError

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8


def run(*args: str) -> tuple[int, str]:
    """Exit code and stderr, as the ``edgewise`` script gives them (its main() prints an
    EdgewiseError as one ``error:`` line and exits 2)."""
    load_commands()
    r = CliRunner(mix_stderr=False).invoke(app, list(args))
    if isinstance(r.exception, EdgewiseError):
        return 2, f"error: {r.exception}\n"
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.stderr


def commands(path: str, tmp: Path) -> dict[str, list[str]]:
    data = ["--data-dir", str(tmp / "ew")]
    return {
        "label import": ["label", "import", path, *data],
        "detect": ["detect", path, "--out", str(tmp / "scored.csv")],
        "quality": ["quality", path],
        "label suggest": ["label", "suggest", "--device", "pump-1", "--csv", path, *data],
        "train --with-labels": ["train", "--with-labels", "--device", "pump-1", "--csv", path,
                                *data],
        "train rul --data": ["train", "rul", "--data", path, "--out", str(tmp / "m.rul")],
        "train rul --failures": ["train", "rul", "--data", f"duckdb:///{tmp}/no.duckdb",
                                 "--failures", path, "--out", str(tmp / "m.rul")],
        "export --calibration": ["export", "--detector", "ewzscore", "--dtype", "int8",
                                 "--calibration", path, "--out", str(tmp / "export")],
    }


NAMES = list(commands("x", Path("/")))


def _one_line(code: int, err: str, *parts: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


@pytest.mark.parametrize("name", [n for n in NAMES if n != "train rul --data"])
def test_a_directory_is_named_as_a_directory(tmp_path: Path, name: str) -> None:
    """Check a directory given as the CSV is called one, not a missing file (``train rul
    --data`` reads every CSV of a directory, so it is left out)."""
    folder = tmp_path / "exports"
    folder.mkdir()
    code, err = run(*commands(str(folder), tmp_path)[name])
    _one_line(code, err, repr(str(folder)), "is a directory, expected a CSV file")


@pytest.mark.parametrize("name", NAMES)
def test_a_binary_file_is_named_as_not_text(tmp_path: Path, name: str) -> None:
    """Check a binary file given as the CSV is refused naming it, not with a codec error."""
    f = tmp_path / "pump.csv"
    f.write_bytes(PNG)
    code, err = run(*commands(str(f), tmp_path)[name])
    _one_line(code, err, repr(str(f)), "is not text (UTF-8/CP1252) CSV", "NUL byte")


def test_a_workbook_is_told_to_be_exported(tmp_path: Path) -> None:
    """Check an .xlsx renamed .csv (a ZIP archive) is named with what to do."""
    f = tmp_path / "labels.csv"
    f.write_bytes(b"PK\x03\x04\x14\x00\x06\x00" + b"[Content_Types].xml" * 20)
    code, err = run("label", "import", str(f), "--data-dir", str(tmp_path / "ew"))
    _one_line(code, err, f"Label file {str(f)!r}", "ZIP archive", "export the sheet as CSV")


def test_bench_csv_names_a_file_and_a_binary_csv_in_its_folder(tmp_path: Path) -> None:
    """Check bench csv, which takes a folder, says so when given a file (it called the file
    a folder holding no CSV), and names a binary *.csv inside its folder."""
    f = tmp_path / "one.csv"
    f.write_text("timestamp,temp,anomaly\n2024-01-01T00:00:00Z,1,0\n")
    code, err = run("bench", "csv", str(f))
    _one_line(code, err, repr(str(f)), "is a file, expected a folder of labelled *.csv files")
    folder = tmp_path / "runs"
    folder.mkdir()
    (folder / "bad.csv").write_bytes(PNG)
    code, err = run("bench", "csv", str(folder))
    _one_line(code, err, "bad.csv", "is not text (UTF-8/CP1252) CSV")


def test_a_windows_1252_label_file_is_imported(tmp_path: Path) -> None:
    """Check a label file a spreadsheet saved as Windows-1252 imports, as tables read it (it
    failed with a UTF-8 codec error naming no file)."""
    f = tmp_path / "labels.csv"
    f.write_bytes("device_id;start;end;label;note\n"
                  "pump-1;2024-01-01T00:00:00Z;2024-01-01T00:10:00Z;anomaly;Lager 80°C\n"
                  .encode("cp1252"))
    from edgewise.security import Security

    Security(tmp_path / "ew").add_device("pump-1")  # labels are for known devices only
    code, err = run("label", "import", str(f), "--data-dir", str(tmp_path / "ew"))
    assert code == 0, err
    load_commands()
    out = CliRunner(mix_stderr=False).invoke(
        app, ["label", "list", "--data-dir", str(tmp_path / "ew"), "--json"])
    assert [x["note"] for x in json.loads(out.stdout)] == ["Lager 80°C"], out.stdout
