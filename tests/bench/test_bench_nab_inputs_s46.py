"""`bench nab` and `bench nab-split` on a bad NAB root: one `error:` line naming the file,
a non-zero exit, and no results written.

Before: a data file with a value that is not a number, or without NAB's ``value`` or
``timestamp`` column, ended the command in a Python traceback (ValueError, KeyError), after
the files sorted before it had been written as results; a ``config/profiles.json`` that is
not JSON was a JSONDecodeError traceback. ``bench active`` already named such files
(``tests/bench/test_bench_active_inputs_s45.py``); the readers are shared now.
"""

from __future__ import annotations

from pathlib import Path

from tests.bench.test_bench_active_inputs_s45 import _nab_root
from tests.in_process import edgewise_here


def _refused(*args: str) -> str:
    r = edgewise_here("bench", *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def _with_second_file(root: Path, text: str) -> None:
    """Add ``x/b.csv`` (sorted after the good ``x/a.csv``) holding ``text``."""
    (root / "data" / "x" / "b.csv").write_text(text)


def test_a_value_that_is_not_a_number_is_named_and_nothing_written(tmp_path: Path) -> None:
    """Check a non-numeric value names its file, and the good file before it is not written."""
    root = _nab_root(tmp_path, rows=300)
    _with_second_file(root, "timestamp,value\n2020-01-01 00:00:00,1\n2020-01-01 00:00:01,abc\n")
    out = tmp_path / "out"
    line = _refused("nab", "--data", str(root), "--out", str(out))
    assert "x/b.csv" in line and "'abc'" in line and "not a number" in line
    assert not list(out.rglob("*.csv"))


def test_a_file_without_value_column_is_named(tmp_path: Path) -> None:
    """Check a data file lacking NAB's columns names the file, the column and its columns."""
    root = _nab_root(tmp_path, rows=300)
    _with_second_file(root, "timestamp,val\n2020-01-01 00:00:00,1\n")
    line = _refused("nab", "--data", str(root), "--out", str(tmp_path / "out"))
    assert "x/b.csv" in line and "'value'" in line and "'val'" in line


def test_profiles_that_are_not_json_are_named(tmp_path: Path) -> None:
    """Check a config/profiles.json that is not JSON names the file."""
    root = _nab_root(tmp_path, rows=300)
    (root / "config" / "profiles.json").write_text("{not json")
    line = _refused("nab", "--data", str(root), "--out", str(tmp_path / "out"))
    assert "profiles.json" in line and "JSON" in line


def test_nab_split_names_a_bad_file(tmp_path: Path) -> None:
    """Check `bench nab-split` names a data file whose value is not a number."""
    root = _nab_root(tmp_path, rows=300)
    _with_second_file(root, "timestamp,value\n2020-01-01 00:00:00,x1\n")
    line = _refused("nab-split", "--data", str(root), "--tune-on", "even", "--steps", "1")
    assert "x/b.csv" in line and "'x1'" in line
