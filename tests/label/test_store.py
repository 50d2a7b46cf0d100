from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edgewise.errors import InvalidParameterError
from edgewise.label.store import LabelStore
from edgewise.security import Security

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
    return subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                          text=True, cwd=REPO, env={"PYTHONPATH": str(REPO / "src"),
                                                    "PATH": "/usr/bin:/bin"}, timeout=60)


def test_cli_import_and_list(data_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("device_id,start,end,label,note\n"
                   "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:10:00Z,anomaly,seal leak\n"
                   f"pump-2,{1704067200 * S},{1704067260 * S},normal,\n")
    r = _cli("label", "import", str(csv), "--data-dir", str(data_dir), "--who", "ops", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["imported"] == 2 and out["snapshot_id"].startswith("ls-")
    r = _cli("label", "list", "--data-dir", str(data_dir), "--json")
    rows = json.loads(r.stdout)
    assert [(x["device_id"], x["label"], x["who"]) for x in rows] == [
        ("pump-1", "anomaly", "ops"), ("pump-2", "normal", "ops")]
    assert len([e for e in Security(data_dir).audit_log() if e.action == "label.add"]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("device_id,start,end,label\npump-1,10,5,normal\n")
    r = _cli("label", "import", str(bad), "--data-dir", str(data_dir))
    assert r.returncode == 2 and "line 2" in r.stderr and "\n" == r.stderr[-1]


def test_label_csv_from_a_spreadsheet_reads_as_the_plain_one(tmp_path: Path) -> None:
    """Check a label file saved by a spreadsheet (byte-order mark, semicolons) and one with
    epoch times in s, ms or ns give the same rows as the plain RFC 3339 file; before, a
    seconds value was taken as nanoseconds (a label in 1970) and a BOM hid 'device_id'."""
    from edgewise.label.store import read_labels_csv

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
