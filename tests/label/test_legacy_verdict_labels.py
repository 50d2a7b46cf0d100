"""A label file written before the verdict words were refused as label names.

``edgewise label add ... false_alarm`` was accepted until session 31 and stored
``false_alarm`` as a fault class: training read the window as faulty. Such rows are now
read as the window label the verdict means (``normal`` / ``anomaly``), everywhere the store
is read: current labels, history and snapshots.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edgewise.label.store import LabelStore, is_anomalous

T0 = 1_700_000_000_000_000_000


def _legacy_rows(data_dir: Path) -> None:
    with LabelStore(data_dir) as store:  # the schema of this version, then old rows
        store.add("pump-1", T0, T0 + 10, "cavitation", who="ops")
    db = sqlite3.connect(data_dir / "labels.sqlite")
    with db:
        for i, word in enumerate(("false_alarm", "true_alarm")):
            db.execute("INSERT INTO labels (device_id, start_ns, end_ns, label, note, who, "
                       "created_ns, version) VALUES (?, ?, ?, ?, '', 'ops', ?, 1)",
                       ("pump-1", T0 + 100 * (i + 1), T0 + 100 * (i + 1) + 10, word, T0))
    db.close()


def test_verdict_words_stored_earlier_are_read_as_window_labels(tmp_path: Path) -> None:
    _legacy_rows(tmp_path)
    with LabelStore(tmp_path) as store:
        got = {lab.start_ns - T0: lab.label for lab in store.labels("pump-1")}
        assert got == {0: "cavitation", 100: "normal", 200: "anomaly"}
        assert [is_anomalous(got[k]) for k in (0, 100, 200)] == [True, False, True]
        assert sorted(lab.label for lab in store.history("pump-1")) == [
            "anomaly", "cavitation", "normal"]
        snap = store.snapshot_id("pump-1")
        assert sorted(lab.label for lab in store.labels_at(snap)) == [
            "anomaly", "cavitation", "normal"]
