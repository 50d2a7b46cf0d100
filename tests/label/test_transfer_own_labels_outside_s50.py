"""train_transfer on a device whose labels all fall outside its readings says so: it was
told to "label some first", though it had labels (older than the readings the store
still keeps, say)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.label.fleet_transfer import train_transfer
from edgewise.label.store import LabelStore


def _histories() -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    rng = np.random.default_rng(1)
    ts = (1_700_000_000 + 60 * np.arange(400)) * 10**9
    return {dev: (ts, rng.normal(20, 0.3, 400)[:, None], ["temp_c"]) for dev in ("p1", "p2")}


def test_labels_outside_the_readings_are_named(tmp_path: Path) -> None:
    """Check the error counts the device's labels and says they fall on no window."""
    hist, labels = _histories(), LabelStore(tmp_path)
    ts = hist["p2"][0]
    labels.add("p2", int(ts[0]) - 10**12, int(ts[0]) - 10**11, "anomaly")
    with pytest.raises(InvalidParameterError,
                       match=r"its 1 label\(s\) fall on none of its \d+ windows of 20 "):
        train_transfer(hist.__getitem__, "p2", labels, tmp_path, window=20)


def test_a_device_without_labels_is_still_told_to_label_some(tmp_path: Path) -> None:
    """Check a device with no label at all is told to label some first."""
    hist, labels = _histories(), LabelStore(tmp_path)
    labels.add("p1", int(hist["p1"][0][0]), int(hist["p1"][0][40]), "normal")
    with pytest.raises(InvalidParameterError, match="label some first"):
        train_transfer(hist.__getitem__, "p2", labels, tmp_path, window=20)
