"""What a new user walking the README met (session 49): grouping a fleet whose histories are
each one reading (or one bucket) failed with a ``KeyError`` traceback.

``BehaviourGroups.fit`` read every metric's ``spread:`` feature, which is dropped where no
device has two readings of it. The README's own steps reach it: the HTTP telemetry example
(``"ts": "2026-01-31T12:00:00Z"`` for pump-7) sent into ``edgewise demo``'s data dir, then
``GET /v1/fleet/groups?groups=2&reference=speed_rpm``: the old reading stretches the route's
window, its buckets grow to 15 minutes, each pump of a few minutes' demo becomes one bucket,
and the route answered 500. ``edgewise groups --csv DIR`` of one-row files was a traceback.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.models.cluster import BehaviourGroups
from tests.in_process import edgewise_here
from tests.server.conftest import Env, build_env


def _one_reading_each(n: int = 6) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        idx = pd.to_datetime([1_700_000_000_000_000_000 + i], unit="ns")
        out[f"d{i}"] = pd.DataFrame({"a": [rng.normal() + (5 if i < n // 2 else 0)],
                                     "b": [rng.normal()]}, index=idx)
    return out


def test_groups_fit_on_histories_of_one_reading_each() -> None:
    """Check a fleet with no spread to measure (one reading a device) is grouped by level,
    each metric's typical spread then 1, not a KeyError on the missing spread columns."""
    model = BehaviourGroups(random_state=0).fit(_one_reading_each())
    assert list(model.devices_) == [f"d{i}" for i in range(6)]
    assert not any(f.startswith("spread:") for f in model.feature_names_)
    assert model.typical_spread_ == {"a": 1.0, "b": 1.0}


def test_groups_cli_on_one_row_files_answers(tmp_path: Path) -> None:
    """Check ``edgewise groups --csv DIR`` of one-row files lists every device (it was a
    traceback, exit 1, where the README promises one ``error:`` line at worst)."""
    folder = tmp_path / "fleet"
    folder.mkdir()
    for i in range(1, 7):
        (folder / f"d{i}.csv").write_text(f"time,a,b\n2026-01-01T00:00:0{i}Z,{i},{2 * i}\n")
    r = edgewise_here("groups", "--csv", str(folder), "--json")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    body = json.loads(r.stdout)
    assert body["n_devices"] == 6
    assert sorted(m for g in body["groups"] for m in g["members"]) == [
        f"d{i}" for i in range(1, 7)]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    d = tmp_path / "ewdata"
    d.mkdir()
    yield from build_env(d)


def test_fleet_groups_route_with_one_old_reading_answers(env: Env) -> None:
    """Check ``GET /v1/fleet/groups?groups=2`` answers 200 for six devices of a few minutes
    each and one device whose one reading is six days old (the window's buckets are then
    longer than the others' histories), as on the README's demo plus its curl example."""
    now = int(time.time()) // 60 * 60 - 120
    for i in range(6):
        device = env.device if i == 0 else f"pump-{i + 1}"
        secret = env.secret if i == 0 else env.security.add_device(device)[1]
        level = 40.0 if i < 3 else 60.0
        batch = [{"ts": now - 60 * k, "seq": k + 1,
                  "metrics": {"temp_c": level + 0.1 * k, "load_kw": 10.0 + 0.05 * k}}
                 for k in range(3)]
        r = env.send(batch, device=device, secret=secret)
        assert r.status_code == 200, r.text
    secret = env.security.add_device("pump-old")[1]
    r = env.send([{"ts": now - 6 * 86400, "seq": 1,
                   "metrics": {"temp_c": 50.0, "load_kw": 10.0}}],
                 device="pump-old", secret=secret)
    assert r.status_code == 200, r.text
    r = env.client.get("/v1/fleet/groups", params={"groups": 2},
                       headers=env.auth("viewer"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["n_devices"] == 7, body
    assert sorted(m for g in body["groups"] for m in g["members"] + g["odd_ones_out"]) == \
        sorted(["pump-1", "pump-2", "pump-3", "pump-4", "pump-5", "pump-6", "pump-old"])


def test_train_forecast_from_a_data_dir_names_its_models_folder_with_one_slash(
        tmp_path: Path) -> None:
    """Check the note of ``train forecast --data DIR --out`` outside DIR's models folder
    names that folder as ``/…/models``: the URL made from the data dir had four slashes,
    ``duckdb:////…``, and the note said ``outside '//…/models'`` (as ``train rul --data DIR``
    did; the README's RUL section trains from a data dir)."""
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    d = tmp_path / "ewdata"
    d.mkdir()
    store = open_store(f"duckdb://{d / 'edgewise.duckdb'}")
    try:
        t0, step = 1_700_000_000 * 10**9, 60 * 10**9
        store.append([Reading("pump-1", "temp", t0 + i * step, float(20 + np.sin(i / 10)))
                      for i in range(400)])
    finally:
        store.close()
    done = edgewise_here("train", "forecast", "--data", str(d), "--device", "pump-1",
                         "--metric", "temp", "--horizon", "5",
                         "--out", str(tmp_path / "f.ewm"))
    assert done.returncode == 0, done.stderr
    models = (d / "models").resolve()
    assert f"outside '{models}'" in done.stderr, done.stderr
    assert f"'/{models}'" not in done.stderr, done.stderr
