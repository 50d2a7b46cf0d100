"""Label edges, round 2: one rule for the label of a single reading ([t, t + 1 ns)), the
query mix's state file kept private, and the HTTP label routes' inputs."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgewise.errors import InvalidParameterError
from edgewise.label.store import Label, LabelStore, read_labels_csv
from edgewise.label.windows import WindowSet, window_labels
from edgewise.store.base import Alert
from tests.server.conftest import Env, problem

T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z


def _windows(ts: np.ndarray, length: int) -> WindowSet:
    """Windows of ``length`` readings at ``ts`` as windows_from_series cuts them:
    ``[ts[a], ts[b])``, the last ending one step after the last reading."""
    starts = ts[::length]
    ends = np.append(starts[1:], ts[-1] + (ts[-1] - ts[-2]))
    n = len(starts)
    return WindowSet(np.array(["d"] * n, dtype=object), starts, ends, np.zeros((n, 1)),
                     np.zeros((n, 1)), ["f"])


# -- 1. the label of a single reading --------------------------------------------------
def test_a_zero_length_label_is_refused_naming_the_single_reading_rule(tmp_path: Path) -> None:
    """Check start == end is refused by the store with the fix (end = start + 1), and a
    single-reading label [t, t + 1) is stored."""
    with LabelStore(tmp_path) as store:
        with pytest.raises(InvalidParameterError) as err:
            store.add("pump-1", T0, T0, "spike")
        assert err.value.field == "end_ns"
        assert "[t, t + 1 ns)" in str(err.value) and "end_ns = start_ns + 1" in str(err.value)
        lab = store.add("pump-1", T0, T0 + 1, "spike")
        assert (lab.start_ns, lab.end_ns) == (T0, T0 + 1)


@pytest.mark.parametrize("i", [0, 9, 10, 15, 29])  # first, last, next window's first, ...
def test_a_single_reading_label_lands_on_the_window_holding_the_reading(i: int) -> None:
    """Check window_labels puts [t, t + 1) on the one window that holds the reading at t,
    whether t is a window's first reading, its last or in between; [t, t) landed on no
    window when t was a window's first reading."""
    ts = T0 + np.arange(30, dtype=np.int64) * 10**9
    ws = _windows(ts, 10)
    t = int(ts[i])
    y, kind = window_labels(ws, [Label(1, "d", t, t + 1, "spike", "", "x", 0, 1, True)])
    assert y.tolist() == [1 if w == i // 10 else -1 for w in range(3)]
    assert kind[i // 10] == "spike"


def test_a_csv_row_with_start_equal_to_end_is_refused_naming_line_and_fix(
        tmp_path: Path) -> None:
    """Check `label import`'s reader names the line, the times and the fix (t + 1 in epoch
    ns) for a zero-length window; it said only that the window must end after it starts."""
    p = tmp_path / "l.csv"
    p.write_text("device_id,start,end,label\n"
                 f"pump-1,{T0},{T0 + 10**9},normal\n"
                 f"pump-1,{T0},{T0},spike\n")
    with pytest.raises(InvalidParameterError) as err:
        read_labels_csv(p)
    msg = str(err.value)
    assert msg.startswith("Label CSV line 3: the window of 'pump-1' must end after it starts")
    assert f"here {T0 + 1}" in msg and err.value.field == "end"
    p.write_text(f"device_id,start,end,label\npump-1,{T0},{T0 + 1},spike\n")
    assert read_labels_csv(p) == [("pump-1", T0, T0 + 1, "spike", "")]


def test_labels_csv_writes_what_label_import_reads_back_exactly(tmp_path: Path) -> None:
    """Check labels_csv round-trips through read_labels_csv to the nanosecond, with a
    note holding the separator, a single-reading label and a time before 1973."""
    from edgewise.label.store import labels_csv

    rows = [("pump-1", T0, T0 + 1, "spike", "on a, b"),
            ("pump-2", T0 + 5, T0 + 600 * 10**9 + 1, "drift", ""),
            ("pump-1", 1_000, 2_000_000, "normal", "1970")]
    p = tmp_path / "l.csv"
    p.write_text(labels_csv(rows))
    assert read_labels_csv(p) == rows
    with pytest.raises(InvalidParameterError, match="end_ns = start_ns \\+ 1"):
        labels_csv([("pump-1", T0, T0, "spike", "")])
    with pytest.raises(InvalidParameterError, match="whole microsecond"):
        labels_csv([("pump-1", 1, 3, "spike", "")])


def test_the_demo_writes_its_ground_truth_as_labels_label_import_takes(tmp_path: Path) -> None:
    """Check the demo writes demo-labels.csv beside demo-labels.json, owner-only, a label
    per fault ending 1 ns after the fault's last reading, and `label import` takes it
    whole: an earlier run's spike (start_ns == end_ns in the JSON) included. Converted
    as is, that spike was refused ('line 13: A label's window must end after it starts')
    and with it the whole file."""
    from edgewise.cli import app, load_commands
    from tests.conftest import start_demo, stop_demo, wait_stored

    d = tmp_path / "d"
    d.mkdir()
    spike_ns = (int(time.time()) - 3600) * 10**9
    earlier = {"device_id": "pump-01", "kind": "spike", "metric": "flow_m3h",
               "start_ns": spike_ns, "end_ns": spike_ns, "metrics": ["flow_m3h"]}
    (d / "demo-labels.json").write_text(json.dumps([earlier]))
    proc, _lines, http = start_demo(d, "--pumps", "1")
    try:  # as the other demo tests: a Ctrl-C in the demo's first moments exits 130
        wait_stored(http, 8 * 20, timeout=60)
    finally:
        rest = stop_demo(proc)
    assert proc.returncode == 0, rest
    faults = json.loads((d / "demo-labels.json").read_text())
    csv_file = d / "demo-labels.csv"
    assert stat.S_IMODE(csv_file.stat().st_mode) == 0o600
    rows = read_labels_csv(csv_file)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        (f["device_id"], f["start_ns"], f["end_ns"] + 1, f["kind"]) for f in faults]
    assert ("pump-01", spike_ns, spike_ns + 1, "spike") in {r[:4] for r in rows}

    load_commands()
    res = CliRunner(mix_stderr=False).invoke(
        app, ["label", "import", str(csv_file), "--data-dir", str(d), "--json"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    assert json.loads(res.stdout)["imported"] == len(faults)
    with LabelStore(d) as store:
        assert (spike_ns, spike_ns + 1, "spike") in {
            (x.start_ns, x.end_ns, x.label) for x in store.labels("pump-01")}


def test_a_single_reading_alert_verdict_labels_that_reading(henv: Env) -> None:
    """Check the verdict on an alert of one reading (start_ns == end_ns) writes the window
    label [t, t + 1 ns), which lands on the window holding that reading."""
    t = (int(time.time()) - 600) * 10**9
    alert = henv.store.add_alert(Alert(henv.device, t, t, 0.99))
    r = henv.client.post(f"/v1/alerts/{alert.id}/label", headers=henv.auth("operator"),
                         json={"label": "true_alarm"})
    assert r.status_code == 200, r.text
    w = r.json()["window_label"]
    assert (w["start_ns"], w["end_ns"], w["label"]) == (t, t + 1, "anomaly")
    ts = t + np.arange(-10, 10, dtype=np.int64) * 10**9  # t is the 2nd window's first
    with LabelStore(henv.settings.data_dir) as store:
        labs = [Label(x.id, "d", x.start_ns, x.end_ns, x.label, "", "", 0, 1, True)
                for x in store.labels(henv.device)]
    assert window_labels(_windows(ts, 10), labs)[0].tolist() == [-1, 1]


# -- 2. label-mix.json is owner-only ----------------------------------------------------
def test_the_query_mix_state_file_is_owner_only(tmp_path: Path) -> None:
    """Check label-mix.json is written 0600 (it was 0644 under the default umask), and
    one an older version left 0644 is made 0600 when the label store opens."""
    old = os.umask(0o022)
    try:
        with LabelStore(tmp_path) as store:
            store.save_mix_state("pump-1", {"hits": [1.0]})
        mix = tmp_path / "label-mix.json"
        assert stat.S_IMODE(mix.stat().st_mode) == 0o600
        os.chmod(mix, 0o644)
        with LabelStore(tmp_path) as store:
            assert stat.S_IMODE(mix.stat().st_mode) == 0o600
            assert store.mix_state("pump-1") == {"hits": [1.0]}
            store.save_mix_state("pump-2", {"hits": [0.5]})
        assert stat.S_IMODE(mix.stat().st_mode) == 0o600
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".label-mix")] == []
    finally:
        os.umask(old)


# -- 3. HTTP ----------------------------------------------------------------------------
@pytest.mark.parametrize("start, end", [
    (1_704_067_200, 1_704_067_260),                       # epoch seconds
    (1_704_067_200.0, 1_704_067_260.5),                   # float seconds
    (1_704_067_200_000, 1_704_067_260_000),               # milliseconds
    (T0, T0 + 1),                                         # nanoseconds: a single reading
    ("1704067200", 1_704_067_260),                        # text and a number
])
def test_post_label_takes_epoch_numbers_as_telemetry_does(henv: Env, start: float,
                                                          end: float) -> None:
    """Check JSON numbers for start/end are epoch times (s, ms, us or ns by size), as the
    same epochs as text are; they were a 422 'Input should be a valid string'."""
    r = henv.client.post("/v1/labels", headers=henv.auth("operator"), json={
        "device_id": "pump-1", "start": start, "end": end, "label": "normal"})
    assert r.status_code == 201, r.text
    assert r.json()["start_ns"] == T0
    assert r.json()["end_ns"] in (T0 + 60 * 10**9, T0 + 60_500_000_000, T0 + 1)


@pytest.mark.parametrize("start, reason", [(True, "invalid"), (-5, "bad_time"),
                                           (1e300, "bad_time")])
def test_a_bad_epoch_number_is_a_422_naming_field_value_and_allowed(
        henv: Env, start: object, reason: str) -> None:
    """Check true, a negative epoch and one past 2262 are 422s naming 'start'."""
    r = henv.client.post("/v1/labels", headers=henv.auth("operator"), json={
        "device_id": "pump-1", "start": start, "end": 1_704_067_260, "label": "normal"})
    p = problem(r, 422)
    assert (p["field"], p["reason"]) == ("start", reason)
    if reason == "bad_time":
        assert p["value"] == start and "epoch time" in p["allowed"]


def test_a_zero_length_label_over_http_is_a_422_naming_the_fix(henv: Env) -> None:
    r = henv.client.post("/v1/labels", headers=henv.auth("operator"), json={
        "device_id": "pump-1", "start_ns": T0, "end_ns": T0, "label": "spike"})
    p = problem(r, 422)
    assert p["field"] == "end" and p["value"] == T0
    assert "[t, t + 1 ns)" in p["detail"] and "end_ns = start_ns + 1" in p["detail"]


@pytest.mark.parametrize("device", ["a/b", "", "x" * 65, "-lead"])
def test_the_label_queue_names_an_invalid_device_id(henv: Env, device: str) -> None:
    """Check an id no device could have is a 422 naming 'device', not 404 no_history."""
    r = henv.client.get("/v1/label-queue", params={"device": device},
                        headers=henv.auth("viewer"))
    p = problem(r, 422)
    assert (p["field"], p["value"], p["reason"]) == ("device", device, "bad_device")
    assert "letters, digits" in p["allowed"]
