"""A mistyped ``--data-dir`` given to a command that only reads (or acts on what is already
there) is refused in one line and leaves nothing behind: ``device list --data-dir /typo``
made ``/typo/security.sqlite`` and answered "no devices" as if the directory were right.
Commands that make state (``device add``, ``token create``) still create it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands

load_commands()

# 'audit verify' refuses a data dir without security.sqlite in its own words
# (tests/security/test_audit_chain.py); it is checked below for leaving nothing behind.
READERS = [
    ["device", "list"],
    ["device", "list", "--json"],
    ["device", "groups", "pump-1"],
    ["device", "groups", "pump-1", "--group", "north"],
    ["device", "delete", "pump-1"],
    ["token", "list"],
    ["token", "revoke", "ci"],
    ["label", "list"],
    ["label", "list", "--json"],
    ["registry", "list"],
]


def _invoke(*args: str, data_dir: Path):
    return CliRunner(mix_stderr=False).invoke(app, [*args, "--data-dir", str(data_dir)])


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_a_missing_data_dir_is_refused_and_not_made(tmp_path: Path, args: list[str]) -> None:
    """Check the command exits 2 with one line naming --data-dir and its value, and makes
    neither the directory nor anything in it."""
    typo = tmp_path / "ewdtaa"
    res = _invoke(*args, data_dir=typo)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr == (
        f"error: --data-dir (EDGEWISE_DATA_DIR) {str(typo)!r} does not exist; nothing is "
        "kept there yet (create it with 'edgewise serve' or 'edgewise device add', or pass "
        "the right --data-dir).\n")
    assert res.stdout == ""
    assert not typo.exists()


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_a_file_as_data_dir_is_refused_in_one_line(tmp_path: Path, args: list[str]) -> None:
    """Check a file given as --data-dir is named in one line (Security's mkdir raised
    FileExistsError with a traceback)."""
    f = tmp_path / "notes.txt"
    f.write_text("x")
    res = _invoke(*args, data_dir=f)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert res.stderr.startswith(f"error: --data-dir (EDGEWISE_DATA_DIR) {str(f)!r} is not a "
                                 "directory") and res.stderr.count("\n") == 1
    assert f.read_text() == "x"


@pytest.mark.parametrize("args", [["device", "list"], ["token", "list"], ["label", "list"]],
                         ids=" ".join)
def test_a_listing_makes_no_file_in_an_existing_dir(data_dir: Path, args: list[str]) -> None:
    """Check a listing of an empty data directory answers "none" and writes nothing there."""
    res = _invoke(*args, data_dir=data_dir)
    assert res.exit_code == 0, res.stderr
    assert list(data_dir.iterdir()) == []


def test_listings_still_read_what_is_there(data_dir: Path) -> None:
    """Check the listings still show what was made (a check that the guard reads, not only
    refuses)."""
    assert _invoke("device", "add", "pump-1", data_dir=data_dir).exit_code == 0
    assert _invoke("token", "create", "--role", "viewer", "--name", "ci",
                   data_dir=data_dir).exit_code == 0
    assert "pump-1\t" in _invoke("device", "list", data_dir=data_dir).stdout
    assert "\tci\tviewer\t" in _invoke("token", "list", data_dir=data_dir).stdout
    assert _invoke("label", "list", "--json", data_dir=data_dir).stdout.strip() == "[]"
    assert _invoke("audit", "verify", data_dir=data_dir).exit_code == 0


@pytest.mark.parametrize("args", [["device", "add", "pump-1"],
                                  ["token", "create", "--role", "viewer"]], ids=" ".join)
def test_commands_that_make_state_still_create_the_data_dir(tmp_path: Path,
                                                            args: list[str]) -> None:
    """Check ``device add`` and ``token create`` still make a new data directory."""
    new = tmp_path / "new" / "ewdata"
    res = _invoke(*args, data_dir=new)
    assert res.exit_code == 0, res.stderr
    assert (new / "security.sqlite").is_file()


@pytest.mark.parametrize("make", [False, True], ids=["missing", "a file"])
def test_audit_verify_refuses_a_wrong_data_dir_in_one_line(tmp_path: Path, make: bool) -> None:
    """Check 'audit verify' refuses a missing data dir, or a file, in one line and makes
    nothing."""
    wrong = tmp_path / "ewdtaa"
    if make:
        wrong.write_text("x")
    res = _invoke("audit", "verify", data_dir=wrong)
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.startswith("error: No audit log in --data-dir")
    assert res.stderr.count("\n") == 1
    assert wrong.is_file() if make else not wrong.exists()
