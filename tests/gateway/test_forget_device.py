"""Deleting a device while no gateway runs also drops it from the saved detector state."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.security import Security
from edgewise.store import open_store

REPO = Path(__file__).resolve().parents[2]


def test_cli_device_delete_forgets_the_device_in_the_saved_state(tmp_path: Path) -> None:
    """Check `edgewise device delete` (a real process) removes pump-1's detectors from
    detectors.pickle and keeps pump-2's."""
    settings = Settings.load(env={}, data_dir=tmp_path)
    sec = Security(tmp_path)
    for d in ("pump-1", "pump-2"):
        sec.add_device(d)
    sec.close()
    state = tmp_path / "detectors.pickle"
    store = open_store(settings.store_url)
    p = Pipeline(store, settings, detect_async=False, state_path=state)
    for i in range(60):
        for d in ("pump-1", "pump-2"):
            body = {"ts": 1_700_000_000 + i, "seq": i + 1, "metrics": {"a": i % 5, "b": 1.0}}
            p.ingest(d, json.dumps(body).encode())
    p.close()
    store.close()
    before = pickle.loads(state.read_bytes())
    assert {k[0] for k in before["detectors"]} == {"pump-1", "pump-2"}

    r = subprocess.run([sys.executable, "-m", "edgewise", "device", "delete", "pump-1",
                        "--data-dir", str(tmp_path), "--json"], capture_output=True, text=True,
                       cwd=REPO, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows_deleted"] >= 120
    after = pickle.loads(state.read_bytes())
    assert {k[0] for k in after["detectors"]} == {"pump-2"}
    assert set(after["multivariate"]) == {"pump-2"}
    assert {k[0] for k in after["last_scored"]} == {"pump-2"}
