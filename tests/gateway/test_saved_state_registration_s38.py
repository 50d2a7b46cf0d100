"""A saved detector state keeps nothing of a device deleted, or registered again, since it
was saved.

Two gateways on one data dir and a shared store: a device deleted through one is forgotten
by the other only if that one is still running when the device next sends. The other,
stopping last, saved the deleted device's detectors, cleaner history (its raw readings)
and cross-sensor state; at the next start they came back, and a new device registered
under the id was scored with the old one's detectors and cleaned against its readings.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.security import Security
from edgewise.store import open_store


def _run(settings: Settings, sec: Security, state: Path, devices: tuple[str, ...]) -> None:
    store = open_store(settings.store_url)
    p = Pipeline(store, settings, security=sec, detect_async=False, state_path=state)
    try:
        # a minute of each device's readings in the order they were sent one at a time, ten
        # seconds of them a commit (a commit each was most of these tests' time): the saved
        # state is what is under test, not how the readings were committed
        msgs = [(d, json.dumps({"ts": 1_700_000_000 + i, "seq": i + 1,
                                "metrics": {"a": 20 + i % 5 / 10, "b": 1.0 + i % 3}}).encode())
                for i in range(60) for d in devices]
        for k in range(0, len(msgs), 10 * len(devices)):
            res = p.ingest_many(msgs[k:k + 10 * len(devices)], via="http")
            assert not [x for x in res if isinstance(x, Exception)], res
    finally:
        p.close()
        store.close()


def _devices_in(p: Pipeline) -> set[str]:
    return {k[0] for k in p._detectors} | set(p._mv) | {k[0] for k in p._last_scored}


def test_a_device_deleted_or_added_again_since_the_save_starts_afresh(tmp_path: Path) -> None:
    settings = Settings.load(env={}, data_dir=tmp_path)
    sec = Security(tmp_path)
    try:
        for d in ("pump-1", "pump-2", "pump-3"):
            sec.add_device(d)
        state = tmp_path / "detectors.pickle"
        _run(settings, sec, state, ("pump-1", "pump-2", "pump-3"))
        saved = pickle.loads(state.read_bytes())
        assert set(saved["devices_created"]) == {"pump-1", "pump-2", "pump-3"}
        # meanwhile, through another gateway: pump-1 deleted, pump-2 deleted and added again
        sec.delete_device("pump-1")
        sec.delete_device("pump-2")
        sec.add_device("pump-2")
        store = open_store(settings.store_url)
        p = Pipeline(store, settings, security=sec, detect_async=False, state_path=state)
        try:
            assert _devices_in(p) == {"pump-3"}
            assert {k[0] for k in p.cleaner.export_state()} == {"pump-3"}
        finally:
            p.close()
            store.close()
    finally:
        sec.close()


def test_a_state_saved_before_registration_times_still_drops_deleted_devices(
        tmp_path: Path) -> None:
    """A file without ``devices_created`` (an Edgewise before it): deleted devices go, the
    registered ones keep their state."""
    settings = Settings.load(env={}, data_dir=tmp_path)
    sec = Security(tmp_path)
    try:
        for d in ("pump-1", "pump-2"):
            sec.add_device(d)
        state = tmp_path / "detectors.pickle"
        _run(settings, sec, state, ("pump-1", "pump-2"))
        saved = pickle.loads(state.read_bytes())
        del saved["devices_created"]
        state.write_bytes(pickle.dumps(saved))
        sec.delete_device("pump-1")
        store = open_store(settings.store_url)
        p = Pipeline(store, settings, security=sec, detect_async=False, state_path=state)
        try:
            assert _devices_in(p) == {"pump-2"}
        finally:
            p.close()
            store.close()
    finally:
        sec.close()
