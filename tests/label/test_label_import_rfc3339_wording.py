"""``label import`` reads RFC 3339 to the nanosecond, and its refusal of an empty window
says so: it said 'read to the microsecond' and pointed to 1 microsecond later, where
1 nanosecond later (``.000000001``) is read and labels the single reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.errors import InvalidParameterError
from edgewise.label.store import read_labels_csv


def test_an_empty_window_refusal_says_rfc3339_is_read_to_the_nanosecond(tmp_path: Path) -> None:
    """Check the wording, and that the end it points to is read, 1 ns after the start."""
    f = tmp_path / "labels.csv"
    f.write_text("device_id,start,end,label\n"
                 "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z,anomaly\n")
    with pytest.raises(InvalidParameterError) as exc:
        read_labels_csv(f)
    said = str(exc.value)
    assert "microsecond" not in said
    assert said.endswith("t + 1 in integer epoch nanoseconds (here 1704067200000000001), or 1 "
                         "nanosecond later in RFC 3339, which is read to the nanosecond (nine "
                         "digits of the second: .000000001).")
    f.write_text("device_id,start,end,label\n"
                 "pump-1,2024-01-01T00:00:00Z,2024-01-01T00:00:00.000000001Z,anomaly\n")
    assert read_labels_csv(f) == [
        ("pump-1", 1704067200000000000, 1704067200000000001, "anomaly", "")]
