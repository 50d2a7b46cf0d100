"""Two-state series (booleans stored as 1/0): no stuck runs, spikes or drift claimed, in
the batch report, the gateway's stream cleaner and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd

from edgewise.quality.report import device_report
from edgewise.quality.states import two_state
from edgewise.quality.stream import StreamCleaner
from edgewise.telemetry import Reading
from tests.quality.test_cli_quality import run


def _pump_flag(n: int = 600) -> np.ndarray:
    """A pump running in shifts: off 100 readings, on 200, off 150, on 150."""
    return np.r_[np.zeros(100), np.ones(200), np.zeros(150), np.ones(n - 450)]


def test_a_boolean_is_two_state_with_its_switches():
    """Check the switches and share of 1s, and what is not two-state."""
    assert two_state(_pump_flag()) == {"binary": True, "transitions": 3, "on_fraction": 0.5833}
    assert not two_state(np.zeros(50))["binary"]           # never switched: undecided
    assert not two_state([0.0, 1.0, 2.0, 1.0])["binary"]   # a small count, not a flag
    assert two_state([0.0, np.nan, 1.0])["binary"]         # a gap is skipped


def test_the_report_claims_no_stuck_spike_or_drift_for_a_flag():
    """Check a running flag beside a real stuck sensor: the sensor's run is stuck, the
    flag's long states are not, and the flag's switches are no spikes nor drift."""
    flag = _pump_flag()
    rng = np.random.default_rng(0)
    temp = 40 + rng.normal(0, 0.3, 600)
    temp[300:400] = 41.0  # a stuck sensor
    rows = [{"device_id": "p1", "metric": m, "ts_ns": (1_700_000_000 + i) * 10**9,
             "value": float(v)} for m, vs in (("running", flag), ("temp", temp))
            for i, v in enumerate(vs)]
    rep = device_report(rows)["metrics"]
    f, t = rep["running"], rep["temp"]
    assert (f["binary"], f["transitions"], f["stuck"], f["spikes"], f["drift"]) == (
        True, 3, 0, 0, None)
    assert not t["binary"] and t["stuck"] == 100 and isinstance(t["drift"], float)


def test_the_stream_cleaner_stops_calling_a_flag_stuck_once_it_switched():
    """Check that after its first switch a flag is never flagged stuck nor spiky, while
    before it (0 for 100 readings) it cannot be told from a stuck sensor."""
    c = StreamCleaner()
    kept = c.clean([Reading("p1", "running", i, float(v)) for i, v in enumerate(_pump_flag())])
    assert len(kept) == 600
    assert dict(c.flagged) == {"stuck": 100}  # the whole run of 0s, as the report counts


def test_cli_reads_true_false_columns_as_a_flag(tmp_path):
    """Check a spreadsheet column of TRUE/FALSE (or true/false) reads as 1/0, valid and
    two-state, not as invalid text."""
    flag = _pump_flag(500)
    words = np.where(flag == 1, "TRUE", "FALSE")
    words[::7] = np.where(flag[::7] == 1, "true", "false")
    pd.DataFrame({"ts": 1_700_000_000 + 60 * np.arange(500), "running": words,
                  "temp": 40 + np.arange(500) % 3}).to_csv(tmp_path / "f.csv", index=False)
    done = run(str(tmp_path / "f.csv"), "--device", "pump-1")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[2:]}
    assert "two-state: 3 switches, 50% on" in rows["running"], done.stdout
    assert rows["running"].split()[3] == "1.000"  # validity
    assert "two-state" not in rows["temp"]
