"""Deleting a device deletes the models ``edgewise train rul`` and ``train forecast`` trained
on its stored data under ``<data dir>/models`` (named in a ``.<name>.trained-by.json``
beside each), over HTTP and with ``edgewise device delete``, and keeps those trained only
on other devices. They hold the device's data (a forecaster keeps its history's tail) and
were kept for ever before."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.in_process import edgewise_here as edgewise
from tests.server.conftest import Env, build_env

T0 = 1_700_000_000 * 10**9
STEP = 60 * 10**9
#: pump-1 and pump-2 send 'temp' (forecast) and run to failure (RUL) as e-3 to e-6 do: a
#: RUL model needs 4 units at least
UNITS = {"pump-1": 90, "pump-2": 110, "e-3": 80, "e-4": 100, "e-5": 95, "e-6": 120}
MODELS = {  # the model files trained, and the devices whose data trained each
    "rul-all.ewm": set(UNITS),
    "forecast-pump-1.ewm": {"pump-1"}, "forecast-pump-2.ewm": {"pump-2"},
}


def _fill(d: Path) -> None:
    rng = np.random.default_rng(0)
    store = open_store(f"duckdb:///{d / 'edgewise.duckdb'}")
    try:
        for dev, life in UNITS.items():
            c = np.arange(1, life + 1)
            rows = [Reading(dev, "wear", T0 + int(k) * STEP, float(k / life + rng.normal(0, .05)))
                    for k in c]
            rows += [Reading(dev, "vib", T0 + int(k) * STEP, float(rng.normal(1, .1))) for k in c]
            if dev.startswith("pump"):
                k = np.arange(400)
                rows += [Reading(dev, "temp", T0 + int(i) * STEP,
                                 float(20 + np.sin(i / 10) + rng.normal(0, .1))) for i in k]
            store.append(rows)
    finally:
        store.close()


def _train(d: Path) -> None:
    models = d / "models"
    common = ("--data", str(d), "--history-ends-at-failure", "--sensor-columns", "wear,vib",
              "--window", "10", "--data-dir", str(d))
    for name, devices in MODELS.items():
        if name.startswith("rul"):
            done = edgewise("train", "rul", *common, "--devices", ",".join(sorted(devices)),
                            "--out", str(models / name))
        else:
            (dev,) = devices
            done = edgewise("train", "forecast", "--data", str(d), "--device", dev,
                            "--metric", "temp", "--horizon", "5", "--out", str(models / name))
        assert done.returncode == 0, done.stderr
        assert "note:" not in done.stderr, done.stderr  # under the data dir: tracked


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose store holds the six units and whose models folder the four models
    trained on them (once for the module; each test works on a copy)."""
    d = tmp_path_factory.mktemp("ew47")
    _fill(d)
    _train(d)
    return d


@pytest.fixture
def data_dir_copy(trained: Path, tmp_path: Path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(trained, d)
    return d


@pytest.fixture
def app_env(data_dir_copy: Path) -> Iterator[Env]:
    yield from build_env(data_dir_copy)  # registers pump-1


def _left(d: Path) -> set[str]:
    return {p.name for p in (d / "models").glob("*.ewm")}


def test_each_trained_model_names_its_devices_beside_it(trained: Path) -> None:
    """Check each model file trained from the store has the hidden file beside it naming
    exactly the devices whose data trained it, and the gateway's ``rul*`` glob of model
    files does not pick that file up."""
    from edgewise.label.workflow import trained_by

    assert _left(trained) == set(MODELS)
    for name, devices in MODELS.items():
        assert trained_by(trained / "models" / name) == devices, name
    assert sorted(p.name for p in (trained / "models").glob("rul*")) == ["rul-all.ewm"]


def test_delete_over_http_deletes_and_names_the_models_of_its_data(
        app_env: Env, data_dir_copy: Path) -> None:
    """Check DELETE /v1/devices/pump-1 deletes the RUL model trained on every unit and
    pump-1's forecaster, names both in ``trained_models_deleted`` (and counts them), and
    keeps pump-2's forecaster; the RUL route, which had the deleted model loaded, then has
    none to answer with."""
    def rul() -> dict:
        r = app_env.client.get("/v1/devices/pump-2/rul", headers=app_env.auth("viewer"))
        return {"status": r.status_code, **r.json()}

    before = rul()
    r = app_env.client.delete("/v1/devices/pump-1", headers=app_env.auth("admin"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["trained_models_deleted"] == ["forecast-pump-1.ewm", "rul-all.ewm"], body
    assert body["label_models_deleted"] == 2, body
    assert _left(data_dir_copy) == {"forecast-pump-2.ewm"}
    assert [p.name for p in (data_dir_copy / "models").glob(".*.json")] == [
        ".forecast-pump-2.ewm.trained-by.json"]
    after = rul()
    assert before.get("model") == "rul-all.ewm" and "rul-all.ewm" not in json.dumps(after), (
        before, after)


def test_device_delete_cli_deletes_the_models_of_its_data(data_dir_copy: Path) -> None:
    """Check 'edgewise device delete pump-2' deletes (and counts) the RUL model and
    pump-2's forecaster, whose data trained them, and keeps pump-1's forecaster."""
    done = edgewise("device", "delete", "pump-2", "--json",
                    env={"EDGEWISE_DATA_DIR": str(data_dir_copy)})
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["label_models_deleted"] == 2, done.stdout
    assert sorted(answer["trained_models_deleted"]) == ["forecast-pump-2.ewm", "rul-all.ewm"]
    assert _left(data_dir_copy) == {"forecast-pump-1.ewm"}


def test_a_model_written_outside_the_data_dir_is_noted_as_kept(
        trained: Path, tmp_path: Path) -> None:
    """Check 'train forecast --out' outside the data dir's models folder says the file is
    not deleted with its device (it names it and the record beside it), and that a model
    trained from a CSV over a store-trained one drops the old record."""
    from edgewise.label.workflow import trained_by

    out = tmp_path / "forecast.ewm"
    done = edgewise("train", "forecast", "--data", str(trained), "--device", "pump-2",
                    "--metric", "temp", "--horizon", "5", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "does not delete it" in done.stderr and ".forecast.ewm.trained-by.json" in \
        done.stderr, done.stderr
    assert trained_by(out) == {"pump-2"}
    csv = tmp_path / "temp.csv"
    csv.write_text("time,temp\n" + "".join(f"{1_700_000_000 + 60 * i},{20 + np.sin(i / 10):.3f}\n"
                                           for i in range(400)))
    done = edgewise("train", "forecast", "--csv", str(csv), "--column", "temp", "--horizon",
                    "5", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert trained_by(out) is None and "does not delete it" not in done.stderr
