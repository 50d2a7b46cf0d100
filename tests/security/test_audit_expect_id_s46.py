"""`edgewise audit verify --expect ID:HASH` with an entry id no audit entry can have: one
of over 4300 digits was int()'s ValueError (a traceback), one past 2**63 - 1 was reported
as a log whose newest entries were deleted. Both are one `error:` line now, and a
zero-padded id is still read as the id it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.in_process import edgewise_here

HASH = "a" * 64


@pytest.mark.parametrize("entry_id", ["9" * 5000, "9223372036854775808", "0" * 5000 + "9" * 20])
def test_an_entry_id_no_entry_can_have_is_one_error_line(data_dir: Path, entry_id: str) -> None:
    """Check the CLI refuses it in one line naming the range, exit 2, no traceback."""
    assert edgewise_here("device", "add", "pump-1", "--data-dir", str(data_dir)).returncode == 0
    r = edgewise_here("audit", "verify", "--data-dir", str(data_dir),
                      "--expect", f"{entry_id}:{HASH}")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr[-500:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "9223372036854775807" in lines[0], r.stderr[-500:]


def test_a_zero_padded_id_is_still_read(data_dir: Path) -> None:
    """Check '0000…1:HASH' (padded past 19 digits) names entry 1, as before."""
    assert edgewise_here("device", "add", "pump-1", "--data-dir", str(data_dir)).returncode == 0
    r = edgewise_here("audit", "verify", "--data-dir", str(data_dir),
                      "--expect", f"{'0' * 30}1:{HASH}")
    assert "entry id must be" not in r.stderr
    assert "Traceback" not in r.stderr
