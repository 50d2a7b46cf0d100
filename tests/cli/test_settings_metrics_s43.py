"""Session 43 (walkB): settings read through ``serve``/``demo`` options named as settings,
undefined alarm rates shown as undefined, and ``groups`` path options refusing blanks.

- A bad ``EDGEWISE_*`` value of an option backed by a variable (``EDGEWISE_HTTP_PORT=abc``)
  was told as Click tells a bad option (``Invalid value for '--port': 'abc' is not a valid
  integer``): no variable, no range. It is now refused as every other setting is.
- ``edgewise detect --label-column`` with no labelled anomaly scored printed recall 0.000
  and missed-alarm rate 0.000 at once; a rate whose denominator is 0 is now ``-`` (``null``
  in ``bench csv --json``).
- ``groups --save ""`` was refused as ``'.'``, a directory; a blank path is now refused as
  blank.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.bench.csv import alarm_metrics
from tests.in_process import edgewise_here

UNSET = {"EDGEWISE_HTTP_PORT": "", "EDGEWISE_MQTT_PORT": ""}


# -- 1. serve / demo: a bad value of a variable-backed option, in the settings' words ----

BAD_SETTINGS = [
    ("EDGEWISE_HTTP_PORT", "abc",
     ("Setting 'http_port' (EDGEWISE_HTTP_PORT, --port) has value 'abc'. It must be an int "
      "in the range [1, 65535].")),
    ("EDGEWISE_MQTT_PORT", "1.5",
     ("Setting 'mqtt_port' (EDGEWISE_MQTT_PORT, --mqtt-port) has value '1.5'. It must be an "
      "int in the range [1, 65535].")),
    ("EDGEWISE_FAST_STREAM_Z", "abc",
     ("Setting 'fast_stream_z' (EDGEWISE_FAST_STREAM_Z, --fast-stream-z) has value 'abc'. It "
      "must be a finite float in the range [0, inf).")),
    ("EDGEWISE_FLEET_PRIOR", "maybe",
     ("Setting 'fleet_prior' (EDGEWISE_FLEET_PRIOR, --fleet-prior) has value 'maybe'. Use one "
      "of 1, true, t, yes, y, on (on) or 0, false, f, no, n, off (off).")),
    ("EDGEWISE_HTTP_PORT", "99999",
     ("Setting 'http_port' (EDGEWISE_HTTP_PORT, --port) has value 99999. It must be an int in "
      "the range [1, 65535].")),
]


@pytest.mark.parametrize("command", ["serve", "demo"])
@pytest.mark.parametrize(("var", "value", "message"), BAD_SETTINGS,
                         ids=[f"{v}={x}" for v, x, _ in BAD_SETTINGS])
def test_a_bad_variable_of_an_option_is_named_as_a_setting(
        tmp_path: Path, command: str, var: str, value: str, message: str) -> None:
    data = tmp_path / "data"
    got = edgewise_here(command, "--data-dir", str(data), env={var: value})
    assert got.returncode == 2, got.stderr
    assert got.stderr.strip() == f"error: {message}"
    assert not data.exists()  # refused before anything was made


def test_a_bad_option_value_names_the_setting_and_its_range(tmp_path: Path) -> None:
    got = edgewise_here("serve", "--data-dir", str(tmp_path / "d"), "--mqtt-port", "1.5",
                        env=UNSET)
    assert got.returncode == 2
    assert got.stderr.strip() == (
        "error: Setting 'mqtt_port' (EDGEWISE_MQTT_PORT, --mqtt-port) has value '1.5'. It "
        "must be an int in the range [1, 65535].")


def test_a_blank_data_dir_variable_is_named_by_its_variable(tmp_path: Path) -> None:
    got = edgewise_here("serve", env={"EDGEWISE_DATA_DIR": " "}, cwd=tmp_path)
    assert got.returncode == 2
    assert got.stderr.startswith("error: EDGEWISE_DATA_DIR (--data-dir) is not valid: must be "
                                 "the data directory"), got.stderr


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_good_values_of_those_options_still_reach_the_settings(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    import edgewise.cli.gateway as gateway
    from edgewise.errors import ConfigError

    seen = []

    def stop(settings) -> None:  # type: ignore[no-untyped-def]
        seen.append(settings)
        raise ConfigError("stopped before the start")

    monkeypatch.setattr(gateway, "_preflight", stop)
    env = {"EDGEWISE_HTTP_PORT": "9001", "EDGEWISE_MQTT_PORT": "9002",
           "EDGEWISE_FAST_STREAM_Z": "2.5", "EDGEWISE_FLEET_PRIOR": "off"}
    got = edgewise_here(command, "--data-dir", str(tmp_path / "d"), env=env)
    assert got.stderr.strip() == "error: stopped before the start"
    s = seen[-1]
    assert (s.http_port, s.mqtt_port, s.fast_stream_z, s.fleet_prior) == (9001, 9002, 2.5,
                                                                            False)
    edgewise_here(command, "--data-dir", str(tmp_path / "d"), "--port", "9003",
                  "--no-fleet-prior", env=UNSET)
    assert (seen[-1].http_port, seen[-1].mqtt_port, seen[-1].fleet_prior) == (9003, 1884,
                                                                              False)
    edgewise_here(command, "--data-dir", str(tmp_path / "d"), env=UNSET)
    assert (seen[-1].http_port, seen[-1].fast_stream_z, seen[-1].fleet_prior) == (8080, 3.0,
                                                                                  True)


# -- 2. undefined alarm rates: '-' and null, not 0 -----------------------------------------

def test_alarm_metrics_leave_a_rate_with_no_denominator_undefined() -> None:
    m = alarm_metrics(np.zeros(6, dtype=bool), [1, 1, 0, 0, 0, 0], skip=2)
    assert (m["precision"], m["recall"], m["f1"], m["missed_alarm_rate"]) == (None,) * 4
    assert m["false_alarm_rate"] == 0.0 and (m["tp"], m["fn"], m["tn"]) == (0, 0, 4)
    m = alarm_metrics(np.array([0, 0, 1, 0]), [1, 1, 0, 0])  # all missed, one false alarm
    assert (m["precision"], m["recall"], m["f1"], m["missed_alarm_rate"]) == (0.0, 0.0, 0.0,
                                                                               1.0)
    m = alarm_metrics(np.array([0, 0, 0]), [1, 0, 0])  # nothing flagged, one anomaly missed
    assert (m["precision"], m["recall"], m["f1"], m["missed_alarm_rate"]) == (None, 0.0, 0.0,
                                                                               1.0)
    m = alarm_metrics(np.array([1, 0, 1, 0]), [1, 0, 0, 1])  # defined ones as before
    assert (m["precision"], m["recall"], m["f1"], m["false_alarm_rate"],
            m["missed_alarm_rate"]) == (0.5, 0.5, 0.5, 0.5, 0.5)


def _labelled_in_training(path: Path, n: int = 300, train: int = 250) -> Path:
    """A two-metric CSV whose labelled anomalies all lie in its first ``train`` rows."""
    rng = np.random.default_rng(7)
    labels = np.zeros(n, dtype=int)
    labels[100:105] = 1
    pd.DataFrame({"timestamp": np.arange(n) * 60 + 1_700_000_000,
                  "a": 20 + rng.normal(0, 0.1, n), "b": 50 + rng.normal(0, 0.1, n),
                  "anomaly": labels}).to_csv(path, index=False)
    return path


def test_detect_prints_a_dash_for_rates_no_row_defines(tmp_path: Path) -> None:
    csv = _labelled_in_training(tmp_path / "pump.csv")
    got = edgewise_here("detect", str(csv), "--train-rows", "250", "--label-column",
                        "anomaly", "--detector", "ewzscore", "--out",
                        str(tmp_path / "scored.csv"))
    assert got.returncode == 0, got.stderr
    line = got.stdout.splitlines()[-1]
    assert line.startswith("precision -  recall -  F1 -  false-alarm rate "), line
    assert "missed-alarm rate -  (tp 0, fp " in line and "fn 0, tn " in line, line


def test_bench_csv_shows_undefined_rates_as_dash_and_null(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    folder.mkdir()
    _labelled_in_training(folder / "pump.csv")
    args = ("bench", "csv", str(folder), "--train-rows", "250", "--detector", "ewzscore")
    got = edgewise_here(*args, "--json")
    assert got.returncode == 0, got.stderr
    res = json.loads(got.stdout)
    for m in (res["files"][0], res["total"]):
        assert (m["recall"], m["missed_alarm_rate"]) == (None, None)
        assert m["false_alarm_rate"] is not None
    got = edgewise_here(*args)
    assert got.returncode == 0, got.stderr
    assert "MAR -" in got.stdout and "recall -" in got.stdout and "missed-alarm rate -" in \
        got.stdout, got.stdout


# -- 3. groups: a blank path option refused as blank ---------------------------------------

@pytest.mark.parametrize("option", ["--save", "--model", "--csv"])
def test_groups_refuses_a_blank_path_as_blank(tmp_path: Path, option: str) -> None:
    csv = tmp_path / "fleet.csv"
    csv.write_text("device_id,timestamp,a\np1,2024-01-01T00:00:00Z,1\n")
    args = ["groups", "--csv", str(csv), option, ""]
    got = edgewise_here(*args, cwd=tmp_path)
    assert got.returncode == 2
    line = got.stderr.strip()
    assert line.startswith(f"error: Invalid value for '{option}': must be "), line
    assert "an empty one would mean the working directory. Got ''." in line
    assert "'.'" not in line


def test_groups_refuses_a_blank_data_as_blank(tmp_path: Path) -> None:
    got = edgewise_here("groups", "--data", "", cwd=tmp_path)
    assert got.returncode == 2
    assert got.stderr.strip().startswith("error: --data must be a gateway data dir or a store "
                                         "URL"), got.stderr
    assert "Got ''." in got.stderr
