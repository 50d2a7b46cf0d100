"""Deleting a device's labels removes them from labels.sqlite's bytes, not only from view."""

from __future__ import annotations

from pathlib import Path

from edgewise.label.store import LabelStore

SECRET = "secret-pump-5d1e9c"


def _traces(data_dir: Path) -> int:
    """How many times the secret device id appears in the label store's files."""
    return sum(p.read_bytes().count(SECRET.encode())
               for p in data_dir.glob("labels.sqlite*") if p.is_file())


def test_deleted_labels_are_gone_from_the_files(tmp_path: Path) -> None:
    """Check a device's labels (its id and notes) leave no trace in labels.sqlite or its
    write-ahead log once deleted, at once while the store stays open (before, the log kept
    them until the store closed), while another device's labels stay."""
    with LabelStore(tmp_path) as labels:
        for i in range(40):
            labels.add(SECRET, i * 10, i * 10 + 5, "anomaly", note=f"{SECRET} bearing {i}")
            labels.add("other-1", i * 10, i * 10 + 5, "normal", note=f"fine {i}")
        assert _traces(tmp_path) > 0
        assert labels.delete_device(SECRET) == 40
        assert _traces(tmp_path) == 0  # at once, while the store stays open (a gateway)
        assert len(labels.labels("other-1")) == 40
    assert _traces(tmp_path) == 0
    with LabelStore(tmp_path) as labels:
        assert labels.labels(SECRET) == [] and len(labels.labels("other-1")) == 40
