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
    msgs = [(d, json.dumps({"ts": 1_700_000_000 + i, "seq": i + 1,
                            "metrics": {"a": i % 5, "b": 1.0}}).encode())
            for i in range(60) for d in ("pump-1", "pump-2")]
    for k in range(0, len(msgs), 20):  # ten seconds of both a commit (a commit a message
        # took most of this test's time)
        res = p.ingest_many(msgs[k:k + 20], via="http")
        assert not [x for x in res if isinstance(x, Exception)], res
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


def test_forgetting_a_device_rewrites_the_saved_state_at_once(tmp_path: Path) -> None:
    """Check a running pipeline that forgets a device (``DELETE /v1/devices/{id}``)
    rewrites detectors.pickle then: it was written only at the next clean stop, so a crash
    in between brought the deleted device's detectors back at the next start."""
    settings = Settings.load(env={}, data_dir=tmp_path)
    state = tmp_path / "detectors.pickle"
    store = open_store(settings.store_url)

    def feed(p: Pipeline, start: int) -> None:
        for i in range(start, start + 60):
            for d in ("pump-1", "pump-2"):
                body = {"ts": 1_700_000_000 + i, "seq": i + 1, "metrics": {"a": i % 5, "b": 1.0}}
                p.ingest(d, json.dumps(body).encode())

    p = Pipeline(store, settings, detect_async=False, state_path=state)
    feed(p, 0)
    p.close()  # a clean stop: both devices saved
    running = Pipeline(store, settings, detect_async=False, state_path=state)
    feed(running, 60)
    assert running.forget_device("pump-1") == 2
    # no close(): the process dies here; what the next start reads is on disk already
    saved = pickle.loads(state.read_bytes())
    assert {k[0] for k in saved["detectors"]} == {"pump-2"}
    assert set(saved["multivariate"]) == {"pump-2"}
    store.close()


def test_a_relative_data_dir_is_the_working_directorys(tmp_path: Path) -> None:
    """Check `--data-dir` given relative finds the store in the working directory: the
    store URL was duckdb:///<dir>/..., so `device delete pump-1 --data-dir d2` opened (and
    made) /d2/edgewise.duckdb, deleted 0 rows, and left every reading in place."""
    import uuid

    rel = f"ew-rel-{uuid.uuid4().hex[:8]}"
    data = tmp_path / rel
    sec = Security(data)
    sec.add_device("pump-1")
    sec.close()
    store = open_store(f"duckdb:///{data / 'edgewise.duckdb'}")
    from edgewise.telemetry import Reading

    store.append([Reading("pump-1", "a", (1_700_000_000 + i) * 10**9, float(i), i + 1)
                  for i in range(5)])
    store.close()
    r = subprocess.run([sys.executable, "-m", "edgewise", "device", "delete", "pump-1",
                        "--data-dir", rel, "--json"], capture_output=True, text=True,
                       cwd=tmp_path, env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows_deleted"] >= 5  # the readings (and its seqs)
    assert not Path("/", rel).exists()
    assert Settings.load(env={"EDGEWISE_DATA_DIR": rel}).data_dir == Path.cwd() / rel


def test_forgetting_a_device_drops_its_held_alert_from_the_saved_state(tmp_path: Path) -> None:
    """Check the state a running pipeline rewrites when it forgets a device no longer holds
    the device's open alert (its id, span and metric shares): the file was written before
    the alerts forgot the device, so the deleted device's alert stayed in it until the next
    clean stop (the CLI's deletion already dropped it)."""
    import numpy as np

    settings = Settings.load(env={}, data_dir=tmp_path)
    state = tmp_path / "detectors.pickle"
    store = open_store(settings.store_url)
    p = Pipeline(store, settings, detect_async=False, state_path=state)
    rng = np.random.default_rng(1)
    t0 = 1_700_000_000
    # 190 steady readings, then a jump the detectors alert on (without it no alert is
    # held at 200 readings, nor at 1,500: the guard below fails); 1,500 readings took 15 s
    for i in range(200):
        v = 40 + rng.normal(0, 0.2) + (30 if i >= 190 else 0)
        body = {"ts": t0 + i, "seq": i + 1,
                "metrics": {"zqxmetric": v, "other": 2 + rng.normal(0, 0.02)}}
        p.ingest("zqxpump", json.dumps(body).encode())
    assert p.alerts.held_state(), "the fault raised no held alert: the test proves nothing"
    p.save_state(state)  # as at an earlier clean stop
    p.forget_device("zqxpump")
    saved = pickle.loads(state.read_bytes())
    assert saved["alerts_held"] == {}
    assert b"zqxmetric" not in state.read_bytes()
    p.close()
    store.close()
