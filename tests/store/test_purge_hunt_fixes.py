"""Purge hunt: what a failed or unusual purge did to a deletion, a store's owner, a
store's name, a bucket's mean, retention across a restart and the store's log mode.

Each test stores values whose float64 bytes are unique and scans the store's files for
them, so "gone from the disk" is checked on the bytes, not through DuckDB.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from edgewise.config import Settings
from edgewise.errors import StoreError
from edgewise.gateway.runtime import Gateway
from edgewise.label.store import LabelStore
from edgewise.security import Security
from edgewise.store import open_store
from edgewise.store.duckdb import DuckDBStore
from edgewise.telemetry import Reading
from tests.conftest import random_values, values_on_disk

DAY = 86_400 * 10**9
T0 = 1_700_000_000 * 10**9
GATEWAY_UID = 65534  # the gateway's service user ('nobody' here)


def _leave_free(disk: Path, store: Path) -> Path:
    """Fill ``disk`` so that half a copy of ``store`` is left free (a purge's copy fails);
    return the filler file, whose removal frees the disk."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - store.stat().st_size // 2))
    return filler


# -- 1. a purge that fails does not fail (or half do) the deletion ---------------------------


def test_a_failed_purge_leaves_the_device_deleted_and_the_purge_pending(
        small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Check that when the purge after a device deletion fails for want of disk, the
    deletion returns its count (it raised), logs why, keeps the store usable and the
    purge pending, and the next open (with space again) purges the device's values."""
    # Prepare
    path = small_disk / "edgewise.duckdb"
    gone, kept = random_values(1), random_values(2)
    store = DuckDBStore(path)
    store.append([Reading("gone", "t", T0 + i, v) for i, v in enumerate(gone)]
                 + [Reading("kept", "t", T0 + i, v) for i, v in enumerate(kept)])
    store.checkpoint()
    assert values_on_disk(path, gone) == len(gone)
    filler = _leave_free(small_disk, path)
    # Execute
    with caplog.at_level(logging.WARNING, logger="edgewise.store.duckdb"):
        rows = store.delete_device("gone")
    # Assert
    assert rows == len(gone)
    assert store.purge_pending is True
    assert "'gone' was deleted" in caplog.text and "free space" in caplog.text, caplog.text
    assert store.query("gone") == [] and len(store.query("kept")) == len(kept)
    store.append([Reading("kept", "t", T0 + 10**9, 1.5)])  # still takes writes
    filler.unlink()
    store.close()
    store = DuckDBStore(path)  # the pending mark makes the open purge
    try:
        assert store.purge_pending is False
        assert values_on_disk(path, gone) == 0
        assert len(store.query("kept")) == len(kept) + 1
    finally:
        store.close()


def test_rest_delete_completes_when_the_purge_fails(small_disk: Path) -> None:
    """Check DELETE /v1/devices/pump-1 whose store purge fails for want of disk answers
    200 with purge_pending true, deletes the labels, writes device.delete_data and frees
    the id (it answered 503 and left labels, no audit entry and a 404 on retry)."""
    from tests.server.conftest import build_env

    # Prepare
    data = small_disk / "data"
    data.mkdir()
    gen = build_env(data)
    env = next(gen)
    try:
        t0 = int(time.time()) - 600
        values = random_values(3, 300)
        batch = [{"ts": t0 + i, "seq": i + 1, "metrics": {"temp_c": v}}
                 for i, v in enumerate(values)]
        assert env.send(batch).status_code == 200
        r = env.client.post("/v1/labels", headers=env.auth("operator"), json={
            "device_id": "pump-1", "start": t0, "end": t0 + 60, "label": "failure"})
        assert r.status_code == 201, r.text
        env.store.checkpoint()
        path = Path(env.store.path)  # type: ignore[attr-defined]
        filler = _leave_free(small_disk, path)
        # Execute
        resp = env.client.delete("/v1/devices/pump-1", headers=env.auth("admin"))
        # Assert
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["rows_deleted"] >= 300 and body["labels_deleted"] == 1
        assert body["purge_pending"] is True
        labels = env.client.get("/v1/labels?device=pump-1", headers=env.auth("viewer"))
        assert labels.status_code == 200 and labels.json() == [], labels.text
        entries = [e for e in env.security.audit_log() if e.action == "device.delete_data"]
        assert len(entries) == 1, [e.action for e in env.security.audit_log()]
        env.security.add_device("pump-1")  # data_deleted ran: the id may be registered again
        filler.unlink()
        assert env.store.purge() and env.store.purge_pending is False  # type: ignore[attr-defined]
        assert values_on_disk(path, values) == 0
    finally:
        gen.close()


def test_cli_device_delete_completes_when_the_purge_fails(small_disk: Path) -> None:
    """Check 'edgewise device delete' whose purge fails for want of disk exits 0, deletes
    the labels, says the purge is pending, and the next open purges the values (it said
    the data was NOT deleted, with the readings gone)."""
    from edgewise.cli import app, load_commands

    load_commands()
    data = small_disk / "data"
    data.mkdir()
    runner = CliRunner(mix_stderr=False)
    assert runner.invoke(app, ["device", "add", "pump-1", "--data-dir", str(data)]).exit_code == 0
    values = random_values(4, 300)
    path = data / "edgewise.duckdb"
    store = DuckDBStore(path)
    store.append([Reading("pump-1", "t", T0 + i, v) for i, v in enumerate(values)])
    store.close()
    with LabelStore(data) as labels:
        labels.add("pump-1", 0, 10, "anomaly", who="test")
    filler = _leave_free(small_disk, path)
    # Execute
    res = runner.invoke(app, ["device", "delete", "pump-1", "--json", "--data-dir", str(data)])
    # Assert
    assert res.exit_code == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    assert (out["rows_deleted"], out["labels_deleted"], out["purge_pending"]) == (300, 1, True)
    assert values_on_disk(path, values) > 0  # deleted, not purged yet
    filler.unlink()
    store = DuckDBStore(path)
    store.close()
    assert values_on_disk(path, values) == 0


# -- 2. the purged file keeps the store's owner, group and mode -----------------------------


def _store_with_a_deleted_device(path: Path) -> list[float]:
    gone = random_values(5)
    s = DuckDBStore(path)
    s.append([Reading("gone", "t", T0 + i, v) for i, v in enumerate(gone)]
             + [Reading("kept", "t", T0, 2.0)])
    s.delete_device("gone", purge=False)
    s.close()
    return gone


def test_a_purge_as_root_keeps_the_store_files_owner_and_mode(tmp_path: Path) -> None:
    """Check a purge run as root (``sudo edgewise store purge``) of a store owned by the
    gateway's user leaves the file that user's, with its group and mode (the copy was
    root's: the gateway's user could no longer open its store)."""
    if os.geteuid() != 0:
        pytest.skip("giving a file another owner needs root")
    path = tmp_path / "edgewise.duckdb"
    gone = _store_with_a_deleted_device(path)
    os.chown(path, GATEWAY_UID, GATEWAY_UID)
    os.chmod(path, 0o640)
    # Execute: the open finishes the pending purge, then one more by hand
    s = DuckDBStore(path)
    try:
        assert s.purge()
        # Assert
        st = path.stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (
            GATEWAY_UID, GATEWAY_UID, 0o640)
    finally:
        s.close()
    assert values_on_disk(path, gone) == 0
    mine = [p.name for p in tmp_path.iterdir() if p.stat().st_uid == 0]
    assert mine == [], mine


def test_a_purge_that_cannot_keep_the_owner_is_refused_before_the_copy() -> None:
    """Check a purge by a user that is neither root nor the file's owner (the file is
    writable to it) is refused naming the file and its owner, and leaves the file as it
    was (the copy became that user's)."""
    if os.geteuid() != 0:
        pytest.skip("acting as another user needs root")
    top = Path(tempfile.mkdtemp())  # not under tmp_path: its folders are root's only
    try:
        os.chmod(top, 0o777)
        path = top / "edgewise.duckdb"
        _store_with_a_deleted_device(path)
        os.chmod(path, 0o666)
        inode = path.stat().st_ino
        os.seteuid(GATEWAY_UID)
        try:
            s = DuckDBStore(path)  # its open-time purge is refused too, with a warning
            try:
                with pytest.raises(StoreError) as err:
                    s.purge()
            finally:
                s.close()
        finally:
            os.seteuid(0)
        assert str(path) in str(err.value) and "uid 0" in str(err.value), err.value
        assert (path.stat().st_ino, path.stat().st_uid) == (inode, 0)
        assert not [p for p in top.iterdir() if ".purge-" in p.name]
    finally:
        shutil.rmtree(top, ignore_errors=True)


# -- 3. unusual file names ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ew_purge.duckdb", 'we"ird.duckdb', "EW_PURGE"])
def test_a_store_with_an_unusual_name_is_purged(tmp_path: Path, name: str) -> None:
    """Check a store whose file name is the purge's old alias, or holds a double quote,
    is purged (it failed, and the error blamed free space)."""
    path = tmp_path / name
    gone = random_values(6)
    s = DuckDBStore(path)
    try:
        s.append([Reading("gone", "t", T0 + i, v) for i, v in enumerate(gone)]
                 + [Reading("kept", "t", T0, 2.0)])
        assert s.delete_device("gone") == len(gone)
        assert s.purge_pending is False
        assert s.query("kept") == [("t", T0, 2.0)]
    finally:
        s.close()
    assert values_on_disk(path, gone) == 0


# -- 4. a bucket mean below the smallest float8 -------------------------------------------


@pytest.mark.parametrize("backend", ["duckdb", "postgres"])
def test_a_bucket_mean_below_the_smallest_double_is_zero(
        backend: str, request: pytest.FixtureRequest) -> None:
    """Check query(step_ns=...) and query_many of a bucket of one 5e-324 and seven 0.0
    give 0.0 on both backends (PostgreSQL failed the whole query: out of range)."""
    url = ("duckdb://:memory:" if backend == "duckdb"
           else request.getfixturevalue("pg_schema_url"))
    s = open_store(url)
    try:
        s.append([Reading("p", "t", i, 5e-324 if i == 0 else 0.0) for i in range(8)]
                 + [Reading("p", "t", 10 + i, v) for i, v in enumerate((1.5, 2.5))])
        assert s.query("p", step_ns=10) == [("t", 0, 0.0), ("t", 10, 2.0)]
        assert s.query_many(["p"], step_ns=10) == {"p": [("t", 0, 0.0), ("t", 10, 2.0)]}
    finally:
        s.close()


# -- 5. retention's unpurged deletions survive a restart -----------------------------------


def _gateway(data: Path) -> Gateway:
    return Gateway(Settings.load(env={}, data_dir=data, retention_days=1))


def test_retention_deletions_not_purged_are_purged_after_a_restart(tmp_path: Path) -> None:
    """Check readings a retention pass deleted within a day of the last purge are purged
    by the first pass after a restart even when it deletes nothing (the note was kept in
    memory only: they stayed on disk for good), that neither the store's open nor the
    gateway's start rewrites the file for it, and a second restart purges nothing."""
    data = tmp_path / "data"
    now = time.time_ns()
    first, second = random_values(7, 50), random_values(8, 50)
    gw = _gateway(data)
    path = Path(gw.store.path)  # type: ignore[attr-defined]
    gw.store.append([Reading("p", "t", now - 3 * DAY + i, v) for i, v in enumerate(first)]
                    + [Reading("p", "t", now - DAY - 3600 * 10**9 + i, v)
                       for i, v in enumerate(second)]
                    + [Reading("p", "t", now + 60 * DAY + i, 5.0) for i in range(50)])
    assert gw.apply_retention(now - 2 * 3600 * 10**9) == 50  # the first pass purges
    assert gw.apply_retention(now) == 50  # within a day of that purge: not purged
    asyncio.run(gw.stop())
    assert values_on_disk(path, first) == 0 and values_on_disk(path, second) == len(second)
    inode = path.stat().st_ino
    # Execute: a restart, then a pass that deletes nothing
    gw = _gateway(data)
    try:
        assert path.stat().st_ino == inode, "the open or the start rewrote the store"
        assert gw.apply_retention(now + 3600 * 10**9) == 0
        # Assert
        assert values_on_disk(path, second) == 0
        assert gw.store.purge_pending is False  # type: ignore[attr-defined]
    finally:
        asyncio.run(gw.stop())
    inode = path.stat().st_ino
    gw = _gateway(data)
    try:
        assert gw.apply_retention(now + 2 * 3600 * 10**9) == 0
        assert path.stat().st_ino == inode, "purged again with nothing deleted"
    finally:
        asyncio.run(gw.stop())


# -- 6. a real 'edgewise serve' keeps the store's log 0600 --------------------------------


def test_serve_keeps_the_store_log_private_after_a_checkpoint(tmp_path: Path) -> None:
    """Check that a real 'edgewise serve' started under umask 022 writes the DuckDB log
    that DuckDB makes anew after a checkpoint (here a device deletion's purge) with mode
    0600 (it was 0644: the gateway made the files 0600 only at start)."""
    from tests.gateway.conftest import GatewayProcess

    data = tmp_path / "ew"
    data.mkdir()
    sec = Security(data)
    secrets = {d: sec.add_device(d)[1] for d in ("pump-1", "pump-2")}
    admin = sec.create_token("admin", "test-admin")
    sec.close()
    old = os.umask(0o022)  # the shell's usual umask, inherited by serve
    try:
        gw = GatewayProcess(data).start(timeout=60)
    finally:
        os.umask(old)
    wal = data / "edgewise.duckdb.wal"
    base = f"http://127.0.0.1:{gw.http_port}"

    def send(device: str, value: float) -> None:
        r = httpx.post(f"{base}/v1/telemetry", json={"ts": time.time(), "seq": 1,
                                                      "metrics": {"t": value}},
                       headers={"Authorization": f"Bearer {secrets[device]}",
                                "X-Device-Id": device}, timeout=60)  # a loaded machine
        assert r.status_code == 200, r.text

    try:
        send("pump-2", 1.0)
        r = httpx.delete(f"{base}/v1/devices/pump-2",
                         headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        assert r.status_code == 200, r.text
        assert not wal.exists() or wal.stat().st_size == 0  # checkpointed by the purge
        send("pump-1", 2.0)  # DuckDB writes the log anew
        assert wal.exists() and wal.stat().st_size > 0
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600, oct(wal.stat().st_mode)
    finally:
        gw.kill()
