"""Label store fixes of session 35: a write's lookups use the indexes (an import was
quadratic), and the audit log keeps a note's length and hash, not its text."""

from __future__ import annotations

import json
from pathlib import Path

from edgewise.label.store import LabelStore
from edgewise.security import Security

S = 10**9


def _vm_steps_per_row(data_dir: Path, before: int) -> float:
    """SQLite VM steps (in tens) per row of a 50-row add_many into a device that already
    has ``before`` labels."""
    store = LabelStore(data_dir)
    store.add_many([("pump-1", i * S, i * S + 1, "normal", "") for i in range(before)])
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    store._db.set_progress_handler(tick, 10)
    store.add_many([("pump-1", (before + i) * S, (before + i) * S + 1, "anomaly", "")
                    for i in range(50)])
    store._db.set_progress_handler(None, 10)
    store.close()
    return ticks[0] / 50


def test_adding_a_row_costs_the_same_however_many_labels_the_device_has(
        tmp_path: Path) -> None:
    """Check a row's work does not grow with the device's labels: the window-or-source
    lookup walked all of them per row (import of 16,000 rows: 54 s, holding the file's
    write lock; 13 times the work per row at 3,000 labels as at 200)."""
    few = _vm_steps_per_row(tmp_path / "few", 200)
    many = _vm_steps_per_row(tmp_path / "many", 3000)
    assert many < 2 * few, (few, many)


def _state(store: LabelStore) -> list[tuple]:
    return [(x.start_ns, x.end_ns, x.label, x.version, x.current, x.source)
            for x in store.history("pump-1")]


def test_versions_and_supersedes_are_those_of_window_or_source(tmp_path: Path) -> None:
    """Check a label is the next version of, and supersedes, the current labels of its
    window and (when it has one) of its source, and no others (as the one OR query did)."""
    store = LabelStore(tmp_path)
    store.add("pump-1", 0, 10, "anomaly")                          # 1: window A, no source
    store.add("pump-1", 20, 30, "anomaly")                         # 2: window B, no source
    store.add("pump-2", 0, 10, "anomaly")                          # another device
    store.add("pump-1", 40, 50, "anomaly", source="alert:a")       # 3: window C, alert a
    store.add("pump-1", 40, 60, "normal", source="alert:a")        # 4: span grew: v2, 3 off
    store.add("pump-1", 0, 10, "normal", source="alert:a")         # 5: window A and a: v3
    store.add("pump-1", 0, 10, "cavitation")                       # 6: window A: v4, 5 off
    store.add("pump-1", 70, 80, "anomaly", source="alert:b")       # 7: alert b, own window
    store.add("pump-1", 90, 99, "normal")                          # 8: '' is no source
    assert _state(store) == [
        (0, 10, "anomaly", 1, False, ""),
        (20, 30, "anomaly", 1, True, ""),
        (40, 50, "anomaly", 1, False, "alert:a"),
        (40, 60, "normal", 2, False, "alert:a"),
        (0, 10, "normal", 3, False, "alert:a"),
        (0, 10, "cavitation", 4, True, ""),
        (70, 80, "anomaly", 1, True, "alert:b"),
        (90, 99, "normal", 1, True, ""),
    ]
    assert [(x.label, x.version) for x in store.labels("pump-2")] == [("anomaly", 1)]
    # the same answer again adds no version; supersedes= takes another source's label off
    store.add("pump-1", 0, 10, "cavitation")
    store.add("pump-1", 65, 85, "anomaly", source="alert:c", supersedes=["alert:b"])
    assert [(x.start_ns, x.label, x.version) for x in store.labels("pump-1")] == [
        (0, "cavitation", 4), (20, "anomaly", 1), (65, "anomaly", 1), (90, "normal", 1)]


def test_the_audit_log_keeps_a_notes_length_not_its_text_nor_hash(tmp_path: Path) -> None:
    """Check ``label.add`` entries hold no note text (a deleted device's "operator Jane saw
    smoke at valve V-12" outlived its labels there) nor a hash of it (unsalted, a word list
    gave a short note back), only its length; the hash chain stays whole."""
    sec = Security(tmp_path)
    store = LabelStore(tmp_path, security=sec)
    note = "operator Jane saw smoke at valve V-12"
    store.add("pump-1", 0, 10, "anomaly", who="ana", note=note)
    store.add_many([("pump-1", 20, 30, "normal", "")], who="importer")
    store.add("pump-1", 40, 50, "anomaly", who="ben", note=note)
    assert store.delete_device("pump-1") == 3
    entries = [e for e in sec.audit_log(50) if e.action == "label.add"]
    assert len(entries) == 3
    assert not any(note in json.dumps(e.detail) for e in sec.audit_log(50))
    assert sorted((e.actor, e.detail["note_chars"], e.detail.get("note_sha256"))
                  for e in entries) == [("ana", len(note), None), ("ben", len(note), None),
                                        ("importer", 0, None)]
    assert sec.verify_audit().ok
    sec.close()


def test_labels_added_in_a_hold_commit_with_it_and_are_audited_only_then(
        tmp_path: Path) -> None:
    """Check ``hold()``: adds join its transaction, audited once it commits; a block that
    raises writes and audits nothing (the alert route: a refused verdict, no label)."""
    sec = Security(tmp_path)
    store = LabelStore(tmp_path, security=sec)
    try:
        with store.hold() as held:
            held.add("pump-1", 0, 10, "anomaly", who="ana", note="smoke")
            raise RuntimeError("the verdict was refused")
    except RuntimeError:
        pass
    assert store.history() == []
    assert [e for e in sec.audit_log(50) if e.action == "label.add"] == []
    with store.hold() as held:
        lab = held.add("pump-1", 0, 10, "anomaly", who="ana", note="smoke")
    assert store.labels() == [lab]
    assert [(e.actor, e.detail["label_id"]) for e in sec.audit_log(50)
            if e.action == "label.add"] == [("ana", lab.id)]
    sec.close()
