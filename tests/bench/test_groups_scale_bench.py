"""``edgewise bench groups --fleet-scale``: the route's read and fit timed on a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands

load_commands()


def test_fleet_scale_times_read_and_fit_on_a_kept_store(tmp_path: Path) -> None:
    """Check --fleet-scale builds a DuckDB store of the simulated pumps, times the read and
    the fit, reports the groups and a result digest, and reuses the store on a rerun."""
    args = ["bench", "groups", "--fleet-scale", "6", "--store-dir", str(tmp_path),
            "--repeats", "1", "--json"]
    res = CliRunner(mix_stderr=False).invoke(app, args)
    assert res.exit_code == 0, res.stderr
    fig = json.loads(res.stdout)["fleets"]["6"]
    assert fig["devices"] == 6 and fig["readings"] == 6 * 8 * 2880
    assert fig["bucket_s"] == 300 and len(fig["read_s"]["runs"]) == 1
    assert fig["fit_s"]["median"] > 0 and fig["n_groups"] >= 1
    assert (tmp_path / "groups-scale-6-seed0.duckdb").exists()
    again = json.loads(CliRunner(mix_stderr=False).invoke(app, args).stdout)["fleets"]["6"]
    assert again["result_sha256"] == fig["result_sha256"] and again["build_s"] < 5


@pytest.mark.parametrize(("args", "message"), [
    (["--fleet-scale", "1,x"], ("error: --fleet-scale must be comma-separated fleet sizes "
     "of at least 2 devices, e.g. 100,300,1000. Got '1,x'.")),
    (["--tasks", "aws"], ("error: --nab is needed for the aws and real tasks: give the "
     "folder holding NAB's data/, e.g. /work/shared/data/nab (or --tasks pumps,pumps-same)")),
])
def test_bad_scale_options_are_one_error_line(args: list[str], message: str) -> None:
    """Check a bad --fleet-scale, or a NAB task without --nab, is one 'error:' line, exit 2."""
    res = CliRunner(mix_stderr=False).invoke(app, ["bench", "groups", *args])
    assert res.exit_code == 2 and res.stderr == message + "\n"
