from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from edgewise.errors import InvalidParameterError
from edgewise.label.store import LabelStore, read_labels_csv
from edgewise.security import Security
from tests.in_process import edgewise_here

REPO = Path(__file__).resolve().parents[2]
S = 1_000_000_000


def test_relabel_keeps_history_and_bumps_version(data_dir: Path) -> None:
    store = LabelStore(data_dir)
    store.add("pump-1", 0, 60 * S, "anomaly", who="ana")
    store.add("pump-1", 60 * S, 120 * S, "normal", who="ana")
    again = store.add("pump-1", 0, 60 * S, "normal", who="ben", note="a test run")
    assert again.version == 2
    current = store.labels("pump-1")
    assert [(lab.start_ns, lab.label) for lab in current] == [(0, "normal"), (60 * S, "normal")]
    hist = store.history("pump-1")
    assert [(lab.label, lab.version, lab.current) for lab in hist if lab.start_ns == 0] == [
        ("anomaly", 1, False), ("normal", 2, True)]
    # WAL mode, so the server and CLI can share the file
    mode = sqlite3.connect(store.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_every_write_is_audited(data_dir: Path) -> None:
    sec = Security(data_dir)
    store = LabelStore(data_dir, security=sec)
    store.add("pump-1", 0, 60 * S, "anomaly", who="ana")
    store.add_many([("pump-2", 0, S, "cavitation", "x"), ("pump-2", S, 2 * S, "normal", "")],
                   who="importer")
    store.add("pump-1", 0, 60 * S, "normal", who="ben")
    entries = [e for e in sec.audit_log(50) if e.action == "label.add"]
    assert len(entries) == 4
    newest = entries[0]
    assert newest.actor == "ben" and newest.detail["version"] == 2
    assert {e.target for e in entries} == {f"pump-1:0-{60 * S}", "pump-2:0-1000000000",
                                           "pump-2:1000000000-2000000000"}


def test_snapshot_names_the_label_set(data_dir: Path) -> None:
    store = LabelStore(data_dir)
    store.add("pump-1", 0, 60 * S, "anomaly")
    s1 = store.snapshot_id()
    assert store.snapshot_id() == s1
    store.add("pump-1", 0, 60 * S, "normal")
    s2 = store.snapshot_id()
    assert s2 != s1
    assert [lab.label for lab in store.labels_at(s1)] == ["anomaly"]
    assert [lab.label for lab in store.labels_at(s2)] == ["normal"]
    with pytest.raises(KeyError):
        store.labels_at("ls-unknown")


@pytest.mark.parametrize(
    ("device", "start", "end", "label", "match"),
    [("a/b", 0, 1, "normal", "device"), ("p", 5, 5, "normal", "end after"),
     ("p", 0, 1, "Anomaly!", "fault class"), ("p", 0.5, 1, "normal", "start_ns")],
)
def test_bad_labels_are_refused_and_nothing_written(
    data_dir: Path, device: str, start: int, end: int, label: str, match: str
) -> None:
    store = LabelStore(data_dir)
    with pytest.raises(InvalidParameterError, match=match):
        store.add_many([("ok-1", 0, 1, "normal", ""), (device, start, end, label, "")])
    assert store.history() == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``edgewise ARGS`` in this process (what it prints and exits with is under test, not
    the process: an interpreter start each cost a second of CPU)."""
    return edgewise_here(*args, cwd=REPO)


def test_cli_import_and_list(data_dir: Path, tmp_path: Path) -> None:
    for device in ("pump-1", "pump-2"):  # labels are for known devices only
        Security(data_dir).add_device(device)
    csv = tmp_path / "labels.csv"
    csv.write_text("device_id,start,end,label,note\n"
                   "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,anomaly,seal leak\n"
                   f"pump-2,{1704067200 * S},{1704067260 * S},normal,\n")
    r = _cli("label", "import", str(csv), "--data-dir", str(data_dir), "--who", "ops", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["imported"] == 2 and out["snapshot_id"].startswith("ls-")
    # each device's own id, as its 'train --with-labels' model records it
    from edgewise.label.store import LabelStore

    own = LabelStore(data_dir)
    try:
        assert out["device_snapshot_ids"] == {d: own.snapshot_id(d)
                                              for d in out["device_snapshot_ids"]}
        assert len(out["device_snapshot_ids"]) >= 1
    finally:
        own.close()
    r = _cli("label", "list", "--data-dir", str(data_dir), "--json")
    rows = json.loads(r.stdout)
    assert [(x["device_id"], x["label"], x["who"]) for x in rows] == [
        ("pump-1", "anomaly", "ops"), ("pump-2", "normal", "ops")]
    assert len([e for e in Security(data_dir).audit_log() if e.action == "label.add"]) == 2
    # the same file again (the demo's labels file grows by run): no new version, no audit
    again = _cli("label", "import", str(csv), "--data-dir", str(data_dir), "--who", "ops",
                 "--json")
    assert json.loads(again.stdout) == {"imported": 0, "relabelled": 0, "unchanged": 2,
                                        "snapshot_id": out["snapshot_id"],
                                        "device_snapshot_ids": out["device_snapshot_ids"]}
    assert len([e for e in Security(data_dir).audit_log() if e.action == "label.add"]) == 2
    csv.write_text(csv.read_text().replace("normal", "anomaly"))
    third = json.loads(_cli("label", "import", str(csv), "--data-dir", str(data_dir),
                            "--json").stdout)
    assert (third["imported"], third["relabelled"], third["unchanged"]) == (1, 1, 1)
    bad = tmp_path / "bad.csv"
    bad.write_text("device_id,start,end,label\npump-1,10,5,normal\n")
    r = _cli("label", "import", str(bad), "--data-dir", str(data_dir))
    assert r.returncode == 2 and "line 2" in r.stderr and "\n" == r.stderr[-1]


def test_label_csv_from_a_spreadsheet_reads_as_the_plain_one(tmp_path: Path) -> None:
    """Check a label file saved by a spreadsheet (byte-order mark, semicolons) and one with
    epoch times in s, ms or ns give the same rows as the plain RFC 3339 file; before, a
    seconds value was taken as nanoseconds (a label in 1970) and a BOM hid 'device_id'."""

    plain = tmp_path / "plain.csv"
    plain.write_text("device_id,start,end,label,note\n"
                     "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,anomaly,seal\n")
    want = read_labels_csv(plain)
    for name, text in {
        "excel.csv": "\ufeffdevice_id;start;end;label;note\n"
                     "pump-1;2024-01-01T00:00:00Z;2024-01-01T00:10:00Z;anomaly;seal\n",
        "s.csv": "device_id,start,end,label,note\npump-1,1704067200,1704067800,anomaly,seal\n",
        "ms.csv": "device_id,start,end,label,note\n"
                  "pump-1,1704067200000,1704067800000,anomaly,seal\n",
        "ns.csv": "device_id,start,end,label,note\n"
                  "pump-1,1704067200000000000,1704067800000000000,anomaly,seal\n",
    }.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        assert read_labels_csv(tmp_path / name) == want, name


@pytest.mark.parametrize("label", ["normal\n", "anomaly\n", "normal\r\n", "bearing_wear\n"])
def test_a_label_value_with_a_trailing_newline_is_refused(data_dir: Path, label: str) -> None:
    """Check 'normal\\n' is refused naming the value: the pattern ended in '$', which also
    matches before a trailing newline, so it was stored, and read as an anomaly class
    (anything but 'normal' is anomalous)."""
    store = LabelStore(data_dir)
    with pytest.raises(InvalidParameterError, match=r"fault class.*Got '.*\\n' instead") as e:
        store.add("pump-1", 0, 60 * S, label)
    assert (e.value.field, e.value.value) == ("label", label)
    assert store.history() == []


def test_a_source_supersedes_its_earlier_label_whatever_the_window(data_dir: Path) -> None:
    """Check a label from a source (an alert's verdict) supersedes that source's current
    label even when its window grew, continuing its versions; other sources, other devices
    and plain labels of the same device stay current."""
    store = LabelStore(data_dir)
    store.add("pump-1", 0, 10 * S, "anomaly", source="alert:a1")
    store.add("pump-1", 0, 10 * S, "normal", who="ana")          # a person's own window
    store.add("pump-1", 50 * S, 60 * S, "anomaly", source="alert:a2")
    store.add("pump-2", 0, 10 * S, "anomaly", source="alert:a1")
    lab = store.add("pump-1", 0, 40 * S, "normal", source="alert:a1")
    assert (lab.version, lab.source, lab.current) == (2, "alert:a1", True)
    assert [(x.device_id, x.start_ns, x.end_ns, x.label, x.source) for x in store.labels()] == [
        ("pump-1", 0, 10 * S, "normal", ""),
        ("pump-1", 0, 40 * S, "normal", "alert:a1"),
        ("pump-1", 50 * S, 60 * S, "anomaly", "alert:a2"),
        ("pump-2", 0, 10 * S, "anomaly", "alert:a1")]
    assert [(x.label, x.version, x.current) for x in store.history("pump-1")] == [
        ("anomaly", 1, False), ("normal", 2, True), ("anomaly", 1, True), ("normal", 2, True)]


def test_a_label_file_from_before_sources_gets_them(data_dir: Path) -> None:
    """Check a labels.sqlite written before labels had a 'source' opens, and each verdict
    the alert route wrote then (note 'alert <id> labelled …') is named as that alert's, so
    relabelling the alert supersedes it."""
    db = sqlite3.connect(data_dir / "labels.sqlite")
    db.executescript("""
        CREATE TABLE labels (id INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL,
            start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, label TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT '', who TEXT NOT NULL, created_ns INTEGER NOT NULL,
            version INTEGER NOT NULL, current INTEGER NOT NULL DEFAULT 1);
        INSERT INTO labels VALUES (1, 'pump-1', 0, 11, 'anomaly',
            'alert 9f3a labelled true_alarm: bearing', 'token:ops', 1, 1, 1);
        INSERT INTO labels VALUES (2, 'pump-1', 100, 200, 'normal',
            'alert 9f3a labelled true_alarm is what I think', 'ana', 1, 1, 1);
    """)
    db.close()
    store = LabelStore(data_dir)
    assert [x.source for x in store.labels("pump-1")] == ["alert:9f3a", ""]
    store.add("pump-1", 0, 31, "normal", source="alert:9f3a")
    assert [(x.start_ns, x.end_ns, x.label, x.version) for x in store.labels("pump-1")] == [
        (0, 31, "normal", 2), (100, 200, "normal", 1)]
    store.close()
    assert LabelStore(data_dir).labels("pump-1")[0].source == "alert:9f3a"  # opens again


def _invoke(data_dir: Path, *args: str, env: dict | None = None):
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    return CliRunner(mix_stderr=False).invoke(app, [*args, "--data-dir", str(data_dir)],
                                              env=env)


def test_cli_import_refuses_a_window_ending_in_the_future(data_dir: Path,
                                                          tmp_path: Path) -> None:
    """Check a label file whose window ends past now plus the allowed clock skew is refused
    in one line naming the line, the field and the value, and nothing is imported: a
    'normal' label up to 2262 silenced every fault, present and to come (ten years ahead
    were allowed)."""
    import time

    Security(data_dir).add_device("pump-1")
    soon = int(time.time()) + 3600
    csv = tmp_path / "labels.csv"
    csv.write_text("device_id,start,end,label\n"
                   "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,anomaly\n"
                   f"pump-1,2000-01-01T00:00:00Z,{soon},normal\n")
    res = _invoke(data_dir, "label", "import", str(csv))
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1, res.stderr
    assert "line 3" in res.stderr and "'end'" in res.stderr and str(soon) in res.stderr
    assert "300 s in the future" in res.stderr
    with LabelStore(data_dir) as labels:
        assert labels.history() == []
    # the skew is the gateway's setting: with an hour and a half allowed it is imported
    res = _invoke(data_dir, "label", "import", str(csv),
                  env={"EDGEWISE_MAX_FUTURE_S": "5400"})
    assert res.exit_code == 0, res.stderr


def test_cli_import_refuses_labels_for_an_unknown_device(data_dir: Path,
                                                          tmp_path: Path) -> None:
    """Check a label file naming a device that is neither registered nor has stored data is
    refused, naming the device and its line, and nothing is imported (POST /v1/labels
    answers 404; a device registered later under the id inherited the labels). A device
    with stored data but no credentials may be labelled, as over HTTP."""
    import time

    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    Security(data_dir).add_device("pump-1")
    csv = tmp_path / "labels.csv"
    csv.write_text("device_id,start,end,label\n"
                   "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,anomaly\n"
                   "ghost-7,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,normal\n"
                   "data-only,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,normal\n")
    res = _invoke(data_dir, "label", "import", str(csv))
    assert res.exit_code == 2
    assert res.stderr.count("\n") == 1, res.stderr
    assert "line 3" in res.stderr and "'ghost-7' is not registered" in res.stderr
    assert "'data-only'" in res.stderr and "edgewise device add ghost-7" in res.stderr
    assert not (data_dir / "edgewise.duckdb").exists()  # no store was made to look
    with LabelStore(data_dir) as labels:
        assert labels.history() == []
    store = open_store(f"duckdb:///{data_dir / 'edgewise.duckdb'}")
    store.append([Reading("data-only", "a", int(time.time() - 60) * S, 1.0)])
    store.close()
    res = _invoke(data_dir, "label", "import", str(csv))
    assert res.exit_code == 2 and "'ghost-7'" in res.stderr
    assert "'data-only'" not in res.stderr
    csv.write_text("\n".join(csv.read_text().splitlines()[:2] + csv.read_text().splitlines()[3:]))
    res = _invoke(data_dir, "label", "import", str(csv), "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["imported"] == 2


def test_cli_list_shows_a_note_with_markup_as_it_is(data_dir: Path) -> None:
    """Check 'label list' prints notes, devices and names holding Rich markup as typed: a
    note 'oops [/] closing' crashed the table (MarkupError), '[red]' restyled it."""
    with LabelStore(data_dir) as labels:
        labels.add("pump-1", 0, 60 * S, "anomaly", who="[bold]ops", note="oops [/] closing")
        labels.add("pump-1", 60 * S, 120 * S, "normal", note="[red]not red[/red]")
    res = _invoke(data_dir, "label", "list", env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.stderr or res.exception
    assert "oops [/] closing" in res.stdout
    assert "[red]not red[/red]" in res.stdout and "[bold]ops" in res.stdout


def test_a_label_file_that_contradicts_itself_or_has_extra_fields_is_refused(tmp_path):
    """Check two lines labelling one window differently name both lines (the last one won
    silently), and a line with more fields than the header (an unquoted comma in a note) is
    refused instead of dropping the rest."""
    head = "device_id,start,end,label,note\n"
    row = "pump-1,2014-01-22T01:35:00Z,2014-01-22T20:25:00Z,{},{}\n"
    f = tmp_path / "l.csv"
    f.write_text(head + row.format("normal", "") + row.format("anomaly", ""))
    with pytest.raises(InvalidParameterError, match="lines 2 and 3 label the same window"):
        read_labels_csv(f)
    f.write_text(head + row.format("normal", "") + row.format("normal", ""))
    assert len(read_labels_csv(f)) == 2  # the same row twice contradicts nothing
    f.write_text(head + row.format("normal", "a,b"))
    with pytest.raises(InvalidParameterError, match="line 2 has 6 fields; the header names 5"):
        read_labels_csv(f)


def test_cli_list_piped_keeps_whole_times(data_dir: Path) -> None:
    """Check 'label list' into a pipe (no terminal: Rich took 80 columns) prints the start
    and end times whole, not cut to '2014-02-09T02:4…'."""
    with LabelStore(data_dir) as labels:
        labels.add("pump-1", 0, 60 * S, "anomaly", note="a long note about the bearing that "
                   "the operator wrote after the night shift, with details")
    res = _invoke(data_dir, "label", "list", env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.stderr or res.exception
    assert "1970-01-01T00:00:00Z" in res.stdout and "1970-01-01T00:01:00Z" in res.stdout
