"""A device deleted while label work on its data runs leaves nothing of it behind.

Each test forces the interleaving: the deletion lands between the work's reading (or
checking) and its write. The deletion takes the label file's write lock to delete the
device's labels and counts itself there (``LabelStore.deletions``); the work noted the
count when it began, and writes holding the same lock, so it either writes before the
deletion (which then deletes what it wrote) or finds the deletion and writes nothing.
"""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

import edgewise.cli.label as cli_label
from edgewise.cli import app
from edgewise.label import workflow
from edgewise.label.feedback import WindowFeedbackModel
from edgewise.label.fleet_transfer import train_transfer
from edgewise.label.store import DeviceDeletedError, LabelStore
from edgewise.label.workflow import delete_models, model_files, suggest, train_with_labels
from edgewise.security import Security
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.in_process import edgewise_here
from tests.server.conftest import Env

S = 10**9


def _send(env: Env, n: int, device: str | None = None, secret: str | None = None) -> int:
    """``n`` readings of ``temp_c`` a second apart, ending a minute ago; the first time (s)."""
    t0 = int(time.time()) - n - 60
    rng = np.random.default_rng(0)
    for k in range(0, n, 500):
        batch = [{"ts": t0 + i, "seq": i + 1, "metrics": {"temp_c": float(rng.normal(40, .2))}}
                 for i in range(k, min(k + 500, n))]
        assert env.send(batch, device=device, secret=secret).status_code == 200
    return t0


def _history(n: int = 600) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    v = rng.normal(20, 0.3, n)
    v[n // 2:n // 2 + 4] += 5
    return (1_700_000_000 + 60 * np.arange(n)) * S, v[:, None], ["temp_c"]


def _delete(data_dir: Path, device: str) -> None:
    """What a device's deletion does to label data (``DELETE /v1/devices/{id}``, ``edgewise
    device delete``), on a connection of its own as another process's: the labels and mix
    state under the write lock, then the model files."""
    with LabelStore(data_dir) as other:
        other.delete_device(device)
    delete_models(data_dir, device)


# -- 1. label import ---------------------------------------------------------------------
def _import(env: Env, csv: Path) -> Any:
    return CliRunner(mix_stderr=False).invoke(
        app, ["label", "import", str(csv), "--data-dir", str(env.settings.data_dir), "--json"])


def _deleting_after_the_check(monkeypatch: pytest.MonkeyPatch, then: Any) -> None:
    """Run ``then()`` right after ``label import`` has checked its devices."""
    checked = cli_label._unknown_devices

    def check_then(*args: Any, **kwargs: Any) -> Any:
        out = checked(*args, **kwargs)
        then()
        return out

    monkeypatch.setattr(cli_label, "_unknown_devices", check_then)


def test_label_import_refuses_a_device_deleted_after_its_check(
        henv: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a device deleted (DELETE /v1/devices/{id}) after ``label import`` checked it
    and before it wrote gets none of the file's labels (they were kept, and a device
    registered again under the id inherited them): the import is refused naming the
    device, the deletion and the lines, and writes nothing."""
    t0 = _send(henv, 100)
    csv = tmp_path / "answers.csv"
    csv.write_text(f"device_id,start,end,label\n{henv.device},{t0 + 10},{t0 + 20},anomaly\n")
    deleted: list[int] = []
    _deleting_after_the_check(monkeypatch, lambda: deleted.append(henv.client.delete(
        f"/v1/devices/{henv.device}", headers=henv.auth("admin")).status_code))
    res = _import(henv, csv)
    assert deleted == [200]
    assert res.exit_code == 2 and res.stdout == ""
    assert "line 2: device 'pump-1' was deleted on" in res.stderr
    assert "nothing was imported" in res.stderr and "(line 2)" in res.stderr
    with LabelStore(henv.settings.data_dir) as labels:
        assert labels.history() == []
    r = henv.client.post("/v1/devices", headers=henv.auth("admin"), json={"name": henv.device})
    assert r.status_code == 201
    assert henv.client.get(f"/v1/labels?device={henv.device}",
                           headers=henv.auth("viewer")).json() == []


def test_label_import_refuses_an_unregistered_device_deleted_after_its_check(
        data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a device with stored data but no registration, deleted whole (``edgewise
    device delete``) between the import's check and its write, is refused too: it had no
    credentials to lose and its deletion had finished (no data kept), so only the label
    file's deletion count tells."""
    t0 = int(time.time()) - 600
    with closing(Security(data_dir)):
        pass  # the data dir's credentials file, with no device registered
    st = open_store(f"duckdb:///{data_dir / 'edgewise.duckdb'}")
    try:
        st.append([Reading("pump-9", "temp_c", (t0 + i) * S, 40.0) for i in range(50)])
    finally:
        st.close()
    csv = data_dir / "answers.csv"
    csv.write_text(f"device_id,start,end,label\npump-9,{t0 + 10},{t0 + 20},anomaly\n")
    deleted: list[int] = []
    _deleting_after_the_check(monkeypatch, lambda: deleted.append(edgewise_here(
        "device", "delete", "pump-9", "--data-dir", str(data_dir)).returncode))
    res = edgewise_here("label", "import", str(csv), "--data-dir", str(data_dir))
    assert deleted == [0]
    assert res.returncode == 2 and "device 'pump-9' was deleted on" in res.stderr
    with LabelStore(data_dir) as labels:
        assert labels.history() == []


def test_label_import_refuses_a_device_whose_deletion_is_under_way(
        henv: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a device whose deletion began after the import's check (its data noted as
    being deleted, its credentials revoked; its labels not deleted yet) is refused, naming
    it and the lines, rather than given labels its deletion is about to delete."""
    t0 = _send(henv, 100)
    csv = tmp_path / "answers.csv"
    csv.write_text(f"device_id,start,end,label\n{henv.device},{t0 + 10},{t0 + 20},anomaly\n"
                   f"{henv.device},{t0 + 30},{t0 + 40},normal\n")

    def begin_deletion() -> None:  # as 'edgewise device delete' begins one
        henv.security.keep_data(henv.device)
        henv.security.delete_device(henv.device, actor="cli")

    _deleting_after_the_check(monkeypatch, begin_deletion)
    res = _import(henv, csv)
    assert res.exit_code == 2
    assert "line 2: device 'pump-1' is being deleted" in res.stderr
    assert "(lines 2, 3)" in res.stderr and "nothing was imported" in res.stderr
    with LabelStore(henv.settings.data_dir) as labels:
        assert labels.history() == []


def test_add_many_check_and_since_write_nothing_when_they_refuse(tmp_path: Path) -> None:
    """Check ``add_many``'s ``check`` (called under the write lock) and ``since`` (the
    deletion count noted before) each refuse the whole write."""
    with LabelStore(tmp_path) as labels:
        since = labels.deletions()

        def refuse() -> None:
            raise DeviceDeletedError("pump-1", "the labels were")

        with pytest.raises(DeviceDeletedError, match="'pump-1' was deleted"):
            labels.add_many([("pump-1", 0, 10, "anomaly", "")], check=refuse)
        _delete(tmp_path, "pump-2")
        with pytest.raises(DeviceDeletedError, match="'pump-2' was deleted") as caught:
            labels.add_many([("pump-1", 0, 10, "anomaly", ""), ("pump-2", 0, 10, "normal", "")],
                            since=since)
        assert caught.value.device_id == "pump-2" and caught.value.field == "device_id"
        assert labels.history() == []
        assert len(labels.add_many([("pump-2", 0, 10, "normal", "")],
                                   since=labels.deletions())) == 1


# -- 2. suggest, train --with-labels, the label queue, train transfer -------------------
def _deleting_during_the_fit(monkeypatch: pytest.MonkeyPatch, data_dir: Path,
                             device: str) -> list[str]:
    """Delete ``device`` the first time a window model is fitted (after the work read the
    labels, before it reads the mix state or writes)."""
    fit = WindowFeedbackModel.fit
    done: list[str] = []

    def fit_then_delete(self: WindowFeedbackModel, *args: Any, **kwargs: Any) -> Any:
        out = fit(self, *args, **kwargs)
        if not done:
            done.append(device)
            _delete(data_dir, device)
        return out

    monkeypatch.setattr(WindowFeedbackModel, "fit", fit_then_delete)
    return done


def test_a_suggest_whose_device_is_deleted_mid_fit_saves_no_mix_state(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a deletion landing while ``suggest`` fits (before it reads the mix state,
    none stored: so the compare-and-swap saw nothing change) saves no state for the
    deleted device; the windows are answered as when a deletion drops a state read. A
    later suggest saves one."""
    hist = _history()
    with LabelStore(tmp_path) as labels:
        done = _deleting_during_the_fit(monkeypatch, tmp_path, "pump-1")
        assert len(suggest(hist, "pump-1", labels, k=3)) == 3
        assert done == ["pump-1"]
        assert labels.mix_state("pump-1") is None
        assert len(suggest(hist, "pump-1", labels, k=3)) == 3
        assert labels.mix_state("pump-1") is not None


def test_suggest_and_training_refuse_a_deletion_after_the_callers_history_read(
        tmp_path: Path) -> None:
    """Check ``since`` noted before the caller read the history (what ``label suggest``
    and ``train --with-labels`` read before the call) covers a deletion landing between
    that read and the call: no mix state saved, no label model written (refused naming
    the device)."""
    hist = _history()
    with LabelStore(tmp_path) as labels:
        suggest(hist, "pump-1", labels, k=3)
        since = labels.deletions()  # the caller begins: then reads the history ...
        _delete(tmp_path, "pump-1")  # ... and the deletion lands
        assert len(suggest(hist, "pump-1", labels, k=3, since=since)) == 3
        assert labels.mix_state("pump-1") is None
        with pytest.raises(DeviceDeletedError, match=r"'pump-1'.*label model was not"):
            train_with_labels(hist, "pump-1", labels, tmp_path, since=since)
        assert model_files(tmp_path, "pump-1") == {}


def test_training_whose_device_is_deleted_mid_fit_writes_no_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a deletion landing while ``train_with_labels`` fits (after it read the labels)
    leaves no ``label-<id>-vN.pkl``: it was written after the deletion had deleted the
    device's models, and a device registered again under the id started at v2 with v1
    the old device's."""
    hist = _history()
    with LabelStore(tmp_path) as labels:
        labels.add("pump-1", int(hist[0][300]), int(hist[0][310]), "anomaly")
        _deleting_during_the_fit(monkeypatch, tmp_path, "pump-1")
        with pytest.raises(DeviceDeletedError, match=r"'pump-1'.*label model was not"):
            train_with_labels(hist, "pump-1", labels, tmp_path)
        assert model_files(tmp_path, "pump-1") == {}
        out = train_with_labels(hist, "pump-1", labels, tmp_path)  # the id's new device
        assert out["version"] == 1 and sorted(model_files(tmp_path, "pump-1")) == [1]


def test_the_label_queue_records_nothing_of_a_device_deleted_while_it_works(
        henv: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check an operator's GET /v1/label-queue whose device is deleted (DELETE
    /v1/devices/{id}) right after the queue read its history records no mix state for it
    (the deletion dropped the state an earlier queue saved; the queue then read none and
    saved its own), and a device registered again under the id starts with none."""
    _send(henv, 500)
    op = henv.auth("operator")
    url = f"/v1/label-queue?device={henv.device}&k=3"
    assert henv.client.get(url, headers=op).status_code == 200
    labels = henv.client.app.state.labels
    assert labels.mix_state(henv.device) is not None
    read = workflow.history_from_store
    calls: list[int] = []

    def read_then_delete(store: Any, device: str, **kwargs: Any) -> Any:
        out = read(store, device, **kwargs)
        calls.append(henv.client.delete(f"/v1/devices/{device}",
                                        headers=henv.auth("admin")).status_code)
        return out

    monkeypatch.setattr(workflow, "history_from_store", read_then_delete)
    assert henv.client.get(url, headers=op).status_code == 200
    assert calls == [200] and labels.mix_state(henv.device) is None
    assert henv.device not in json.loads(labels.mix_path.read_text())
    assert henv.client.post("/v1/devices", headers=henv.auth("admin"),
                            json={"name": henv.device}).status_code == 201
    assert labels.mix_state(henv.device) is None


def _fleet(tmp_path: Path) -> tuple[dict[str, Any], LabelStore]:
    rng = np.random.default_rng(1)
    hist: dict[str, Any] = {}
    labels = LabelStore(tmp_path)
    for i, dev in enumerate(["pump-1", "pump-2", "pump-3"]):
        v = rng.normal(20 + i, 0.3, 1200)
        v[600:640] += 4
        ts = (1_700_000_000 + 60 * np.arange(1200)) * S
        hist[dev] = (ts, v[:, None], ["temp_c"])
        labels.add(dev, int(ts[600]), int(ts[640]), "anomaly")
        labels.add(dev, int(ts[0]), int(ts[400]), "normal")
    return hist, labels


def test_train_transfer_writes_no_model_trained_on_a_fleet_device_deleted_meanwhile(
        tmp_path: Path) -> None:
    """Check ``train transfer`` for pump-1 during which fleet device pump-2 is deleted
    (after its labelled windows were read and used) writes no model naming pump-2 in its
    fleet: the deletion had deleted pump-2's models already, so that one survived it.
    Refused naming pump-2; the run again trains on the fleet left."""
    hist, labels = _fleet(tmp_path)
    deleted: list[str] = []

    def histories(dev: str) -> Any:
        if dev == "pump-3" and not deleted:  # pump-2 was read and used: it is deleted now
            deleted.append("pump-2")
            _delete(tmp_path, "pump-2")
        return hist[dev]

    try:
        with pytest.raises(DeviceDeletedError, match=r"'pump-2'.*transfer model was not"):
            train_transfer(histories, "pump-1", labels, tmp_path, window=40)
        assert deleted == ["pump-2"]
        models = tmp_path / "models"
        assert not models.exists() or list(models.iterdir()) == []
        out = train_transfer(histories, "pump-1", labels, tmp_path, window=40)
        assert out["fleet_devices"] == ["pump-3"] and out["version"] == 1
    finally:
        labels.close()


def test_a_model_written_before_the_deletion_is_deleted_by_it(tmp_path: Path) -> None:
    """Check the other order: a model written (under the lock) before a deletion reached
    the label file is there for the deletion, which deletes it; the deletion is counted."""
    hist, labels = _fleet(tmp_path)
    try:
        out = train_transfer(hist.__getitem__, "pump-1", labels, tmp_path, window=40)
        assert "pump-2" in out["fleet_devices"] and Path(out["path"]).exists()
        _delete(tmp_path, "pump-2")
        assert not Path(out["path"]).exists()
        assert labels.deletions().of("pump-2") == 1
    finally:
        labels.close()


def test_the_deletion_count_survives_reopening_and_keeps_no_id(tmp_path: Path) -> None:
    """Check ``deletions`` counts every deletion of a device (one registered again and
    deleted again moves it again), kept in the label file across openings, which holds no
    deleted device's id for it (a digest of it)."""
    _delete(tmp_path, "secret-pump-1")
    _delete(tmp_path, "secret-pump-1")
    _delete(tmp_path, "pump-2")
    with LabelStore(tmp_path) as labels:
        seen = labels.deletions()
        assert (seen.of("secret-pump-1"), seen.of("pump-2"), seen.of("pump-3")) == (2, 1, 0)
    assert not any(b"secret-pump-1" in p.read_bytes() for p in tmp_path.glob("labels.sqlite*"))


def test_an_older_label_file_gets_the_deletion_table(tmp_path: Path) -> None:
    """Check a label file written before deletions were counted opens, and counts."""
    import sqlite3

    with LabelStore(tmp_path) as labels:
        labels.add("pump-1", 0, 10, "anomaly")
    db = sqlite3.connect(tmp_path / "labels.sqlite")
    db.execute("DROP TABLE deletions")
    db.commit()
    db.close()
    with LabelStore(tmp_path) as labels:
        assert labels.deletions().of("pump-1") == 0
        assert labels.delete_device("pump-1") == 1
        assert labels.deletions().of("pump-1") == 1



def test_the_cli_notes_deletions_before_it_reads_the_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ``label suggest`` and ``train --with-labels`` note the deletion count before
    they read the device's history: a deletion landing during that read (before the
    label store is opened) saves no mix state and writes no label model."""
    import pandas as pd

    import edgewise.cli.label_train as cli_train

    ts, v, _ = _history()
    csv = tmp_path / "h.csv"
    pd.DataFrame({"timestamp": ts // S, "temp_c": v[:, 0]}).to_csv(csv, index=False)
    with LabelStore(tmp_path) as labels:
        labels.add("pump-1", int(ts[300]), int(ts[310]), "anomaly")
        suggest(_history(), "pump-1", labels, k=3)  # an earlier suggest: a state exists
    read = cli_train._history

    def read_then_delete(*args: Any, **kwargs: Any) -> Any:
        out = read(*args, **kwargs)
        _delete(tmp_path, "pump-1")
        return out

    monkeypatch.setattr(cli_train, "_history", read_then_delete)
    runner = CliRunner(mix_stderr=False)
    done = runner.invoke(app, ["label", "suggest", "--device", "pump-1", "--csv", str(csv),
                               "--data-dir", str(tmp_path), "--json"])
    assert done.exit_code == 0, done.stderr
    with LabelStore(tmp_path) as labels:
        assert labels.mix_state("pump-1") is None
    done = runner.invoke(app, ["train", "--with-labels", "--device", "pump-1", "--csv",
                               str(csv), "--data-dir", str(tmp_path)])
    assert done.exit_code != 0 and "pump-1" in done.stderr, (done.stdout, done.stderr)
    assert model_files(tmp_path, "pump-1") == {}
