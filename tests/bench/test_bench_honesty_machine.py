"""Bench honesty: `bench nab`, `bench nab-split` and `bench active` record the machine.

Before: their ``--json`` objects held points/s and seconds with no machine, CPU count or
Python beside them, unlike the other benches (``machine_fields()``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.bench._machine import machine_fields
from edgewise.cli import app, load_commands

load_commands()

FILES = ["artificialWithAnomaly/art_daily_jumpsdown.csv",
         "artificialWithAnomaly/art_daily_jumpsup.csv"]


@pytest.fixture(scope="module")
def tiny_nab(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A NAB root of two real files with anomalies (one per half), their windows and the
    real profiles."""
    src = shared_data / "nab"
    root = tmp_path_factory.mktemp("nab")
    for rel in FILES:
        (root / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "data" / rel, root / "data" / rel)
    (root / "labels").mkdir()
    windows = json.loads((src / "labels" / "combined_windows.json").read_text())
    (root / "labels" / "combined_windows.json").write_text(
        json.dumps({k: windows[k] for k in FILES}))
    shutil.copytree(src / "config", root / "config")
    return root


def _json(*args: str) -> dict[str, object]:
    res = CliRunner(mix_stderr=False).invoke(app, [*args, "--json"])
    assert res.exit_code == 0, (res.exception, res.stderr)
    return json.loads(res.stdout)


def _has_machine(doc: dict[str, object]) -> None:
    for key, value in machine_fields().items():
        assert doc[key] == value, key


def test_bench_nab_json_records_the_machine(tiny_nab: Path, tmp_path: Path) -> None:
    """Check `bench nab --json` (its points/s) says which machine measured it."""
    doc = _json("bench", "nab", "--data", str(tiny_nab), "--out", str(tmp_path / "out"))
    assert doc["files"] == 2 and doc["points_per_second"] > 0
    _has_machine(doc)


def test_bench_nab_split_json_records_the_machine(tiny_nab: Path) -> None:
    """Check `bench nab-split --json` says which machine ran the search."""
    doc = _json("bench", "nab-split", "--data", str(tiny_nab), "--steps", "1")
    assert {"before", "after"} <= set(doc)
    _has_machine(doc)
