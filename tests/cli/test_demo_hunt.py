"""Hunt fixes in ``edgewise demo`` / ``serve`` startup: bad values refused before the admin
token is made (M2), a restart that neither back-dates history over the stored data nor
drops the earlier run's labels (H2), and device secrets printed only when made (L5)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import ConfigError
from tests.conftest import free_port, start_demo, stop_demo, wait_stored

load_commands()


def test_demo_refuses_a_negative_seed_before_making_the_admin_token(tmp_path: Path) -> None:
    """M2: ``--seed -1`` was numpy's traceback after the shown-once token was made."""
    d = tmp_path / "d"
    res = CliRunner(mix_stderr=False).invoke(
        app, ["demo", "--data-dir", str(d), "--seed", "-1", "--port", str(free_port()),
              "--mqtt-port", str(free_port())])
    assert isinstance(res.exception, ConfigError), res.exception
    assert str(res.exception) == "--seed must be an int >= 0. Got -1 instead."
    assert not (d / "security.sqlite").exists()


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_a_bad_mqtt_consumer_is_refused_before_the_admin_token(tmp_path: Path,
                                                               command: str) -> None:
    """M2: ``EDGEWISE_MQTT_CONSUMER=junk`` was a ValueError traceback after the token."""
    d = tmp_path / "d"
    res = CliRunner(mix_stderr=False).invoke(
        app, [command, "--data-dir", str(d), "--port", str(free_port()),
              "--mqtt-port", str(free_port())], env={"EDGEWISE_MQTT_CONSUMER": "junk"})
    assert isinstance(res.exception, ConfigError), res.exception
    assert str(res.exception) == ("Setting 'EDGEWISE_MQTT_CONSUMER' has value 'junk'. "
                                  "Use 'plugin' or 'subscriber'.")
    assert not (d / "security.sqlite").exists()


def _run_demo(data: Path, until_stored: float) -> list[str]:
    """Start the demo (2 pumps), wait until it stored ``until_stored`` readings, stop it."""
    proc, lines, http = start_demo(data, "--pumps", "2")
    try:
        wait_stored(http, until_stored, timeout=60)
    finally:
        rest = stop_demo(proc)
    assert proc.returncode == 0, "\n".join(lines) + rest
    return lines + rest.splitlines()


def test_a_restarted_demo_goes_on_after_the_stored_data_and_keeps_the_labels(
        tmp_path: Path) -> None:
    """H2: a restart wrote a second 10-minute history, 0.5 s off the first, over the stored
    one, and overwrote demo-labels.json with its own faults only. L5: every start printed
    every device secret."""
    from edgewise.store import open_store

    d = tmp_path / "d"
    first = _run_demo(d, until_stored=2 * 8 * 500)  # most of the 600 s history
    secrets = [ln for ln in first if ln.startswith("  pump-")]
    assert len(secrets) == 2 and "made now for 2 (shown once)" in "\n".join(first)
    creds = d / "demo-devices.json"
    assert creds.stat().st_mode & 0o777 == 0o600
    labels_file = d / "demo-labels.json"
    earlier = json.loads(labels_file.read_text())
    marker = {"device_id": "pump-01", "kind": "drift", "metric": "flow_m3h", "start_ns": 1,
              "end_ns": 2, "metrics": ["flow_m3h"]}  # stands for an earlier run's fault
    labels_file.write_text(json.dumps([*earlier, marker]))
    s = open_store(f"duckdb:///{d / 'edgewise.duckdb'}")
    last_1 = max(ts for _, ts, _ in s.query("pump-01", "speed_rpm"))
    s.close()

    second = _run_demo(d, until_stored=2 * 8 * 3)
    text = "\n".join(second)
    assert not [ln for ln in second if ln.startswith("  pump-")], text  # no secret again
    assert f"are in {creds}" in text and "data of an earlier run found" in text
    labels = json.loads(labels_file.read_text())
    keys = {(x["device_id"], x["start_ns"]) for x in labels}
    assert {(x["device_id"], x["start_ns"]) for x in [*earlier, marker]} <= keys

    s = open_store(f"duckdb:///{d / 'edgewise.duckdb'}")
    ts = sorted(t for _, t, _ in s.query("pump-01", "speed_rpm"))
    s.close()
    assert ts[-1] > last_1  # the second run stored readings, after the first run's
    gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(ts)]
    assert min(gaps) >= 0.999, sorted(gaps)[:5]  # a 1 Hz sensor: nothing interleaved
