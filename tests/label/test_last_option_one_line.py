"""``--last 0`` (and -1) of ``predict labels`` / ``predict transfer`` and ``-k 0`` of
``label suggest`` are refused in one ``error:`` line naming the option and the range, exit
2, through the real entry point (Click's range check, made one line by
:func:`edgewise.cli.main`; only ``CliRunner().invoke(app, …)``, which bypasses ``main``,
shows Click's usage box). A guard: it passed before this test was written too."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.in_process import edgewise_here


@pytest.mark.parametrize(("args", "option"), [
    (["predict", "labels", "--device", "pump-1", "--last", "0"], "--last"),
    (["predict", "labels", "--device", "pump-1", "--last", "-1"], "--last"),
    (["predict", "transfer", "--device", "pump-1", "--last", "0"], "--last"),
    (["label", "suggest", "--device", "pump-1", "-k", "0"], "-k"),
])
def test_a_count_below_1_is_one_error_line(tmp_path: Path, args: list[str],
                                           option: str) -> None:
    p = edgewise_here(*args, "--data-dir", str(tmp_path))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    assert lines[0].startswith(f"error: Invalid value for '{option}': ")
    assert "is not in the range x>=1" in lines[0] and "Usage:" not in p.stderr
