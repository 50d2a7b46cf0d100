"""``drop_device_state`` (what ``device delete`` runs on a stopped gateway's
``detectors.pickle``) against a state :meth:`Pipeline.save_state` really wrote: every part
keyed by device or stream loses the device's entries, the other device's stay, and a part
added to the saved state without being named here fails this test instead of keeping a
deleted device's learned state."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from edgewise.config import Settings
from edgewise.gateway import pipeline as pl
from edgewise.store import open_store


def _saved_state(tmp_path: Path) -> dict[str, object]:
    store = open_store("duckdb://:memory:")
    p = pl.Pipeline(store, Settings(), detect_async=False)
    try:
        for i in range(1, 40):
            for d in ("p1", "p2"):
                p.ingest(d, json.dumps({"ts": 1_700_000_000 + i, "seq": i,
                                        "metrics": {"a": i % 5, "b": 2 * (i % 3)}}).encode())
        p.save_state(tmp_path / "detectors.pickle")
    finally:
        p.close()
        store.close()
    return pickle.loads((tmp_path / "detectors.pickle").read_bytes())


def _held_by(key: object, device: str) -> bool:
    return key == device or (isinstance(key, tuple) and key[:1] == (device,))


def test_every_part_of_a_saved_state_loses_the_device_and_keeps_the_other(
        tmp_path: Path) -> None:
    """Check all of p1's entries go (10: 4 stream parts x 2 metrics + 2 device parts) and
    p2's are untouched."""
    state = _saved_state(tmp_path)
    parts = {k for k, v in state.items() if isinstance(v, dict) and v}
    # alerts_held is keyed by alert id: dropped by the ids given (tests/cli/
    # test_delete_hunt_s31.py); no alert is held here
    assert parts <= {*pl._STREAM_STATE, *pl._DEVICE_STATE}, parts
    before_p2 = {k: [key for key in state[k] if _held_by(key, "p2")] for k in parts}
    assert pl.drop_device_state(state, "p1") == 10
    for k in parts:
        assert not [key for key in state[k] if _held_by(key, "p1")], k
        assert [key for key in state[k] if _held_by(key, "p2")] == before_p2[k], k
    assert pl.drop_device_state(state, "p1") == 0


def test_every_keyed_part_save_state_writes_is_one_drop_device_state_knows(
        tmp_path: Path) -> None:
    """Check the saved state's parts are those named: a new per-device part must be added
    to _STREAM_STATE, _DEVICE_STATE or _ALERT_STATE (or here, with why it holds no device)."""
    state = _saved_state(tmp_path)
    known = {*pl._STREAM_STATE, *pl._DEVICE_STATE, *pl._ALERT_STATE,
             "cross_sensor_version", "cleaner_version"}
    assert set(state) == known, set(state) ^ known
