"""Retention: EDGEWISE_RETENTION_DAYS deletes old readings (it was accepted and ignored)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import httpx
import pytest

from edgewise.config import Settings
from edgewise.errors import ConfigError
from edgewise.gateway.runtime import Gateway
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.gateway.conftest import GatewayProcess

DAY = 86_400 * 10**9


def _fill(data: Path, now: int) -> None:
    store = open_store(f"duckdb:///{data / 'edgewise.duckdb'}")
    try:
        store.append([Reading("pump-1", "temp", now - d * DAY, float(d)) for d in (30, 10, 3, 0)],
                     {"pump-1": range(1, 5)})
    finally:
        store.close()


def test_a_gateway_with_retention_deletes_old_readings_at_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check `edgewise serve` with EDGEWISE_RETENTION_DAYS=7 deletes the readings older
    than a week at start, keeps the rest and the device's seq watermark."""
    data = tmp_path / "ew"
    data.mkdir()
    now = time.time_ns()
    _fill(data, now)
    monkeypatch.setenv("EDGEWISE_RETENTION_DAYS", "7")
    gw = GatewayProcess(data).start()
    try:
        deadline = time.monotonic() + 20
        while "edgewise_readings_expired_total 2" not in httpx.get(
                f"http://127.0.0.1:{gw.http_port}/metrics", timeout=10).text:
            assert time.monotonic() < deadline, gw.log.read_text()[-2000:]
            time.sleep(0.1)
    finally:
        gw.kill()
    store = open_store(f"duckdb:///{data / 'edgewise.duckdb'}")
    try:
        assert [v for _, _, v in store.query("pump-1")] == [3.0, 0.0]
        assert store.seq_watermark("pump-1") == 4
    finally:
        store.close()


def test_apply_retention_and_bad_settings(tmp_path: Path) -> None:
    """Check apply_retention keeps everything at 0 days, and a negative setting is refused."""
    now = time.time_ns()
    _fill(tmp_path, now)
    gw = Gateway(Settings.load(env={}, data_dir=tmp_path))
    try:
        assert gw.apply_retention(now) == 0
        gw.settings = dataclasses.replace(gw.settings, retention_days=5)
        assert gw.apply_retention(now) == 2
        assert gw.pipeline.metrics.get("edgewise_readings_expired_total") == 2
    finally:
        gw.pipeline.close()
        gw.store.close()
        gw.security.close()
        gw.registry.close()
    with pytest.raises(ConfigError, match="retention_days"):
        Gateway(Settings.load(env={"EDGEWISE_RETENTION_DAYS": "-1"}, data_dir=tmp_path))


def test_a_reading_older_than_retention_is_not_stored_again(tmp_path: Path) -> None:
    """Check a re-sent reading older than the retention is refused ('expired') but its seq
    counted, instead of being stored again until the next hourly pass (the readings table
    no longer held it, so it was no duplicate)."""
    from edgewise.gateway.pipeline import Pipeline

    store = open_store(f"duckdb:///{tmp_path / 'r.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path, retention_days=30), detect_async=False)
    try:
        now = int(time.time())
        body = json.dumps([{"ts": now - 40 * 86400, "metrics": {"t": 1.0}, "seq": 1},
                           {"ts": now - 60, "metrics": {"t": 2.0}, "seq": 2}])
        r = p.ingest("pump-1", body.encode())
        assert (r.accepted, r.ack_seq) == (1, 2)
        assert [(e.reason, e.field) for e in r.rejected] == [("expired", "ts")]
        assert [v for _, _, v in store.query("pump-1")] == [2.0]
    finally:
        p.close()
        store.close()


def test_retention_names_the_logs_repair_moved_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Check a retention pass that deletes readings warns of the write-ahead logs 'edgewise
    repair' moved aside beside the store (they hold readings it cannot reach), naming each;
    a pass with none says nothing of them."""
    now = time.time_ns()
    _fill(tmp_path, now)
    gw = Gateway(Settings.load(env={"EDGEWISE_RETENTION_DAYS": "20"}, data_dir=tmp_path))
    try:
        with caplog.at_level("WARNING", logger="edgewise"):
            assert gw.apply_retention(now) == 1  # the 30-day-old reading
        assert "moved aside" not in caplog.text
        broken = tmp_path / "edgewise.duckdb.wal.broken-20260101T000000Z"
        broken.write_bytes(b"old readings")
        with caplog.at_level("WARNING", logger="edgewise"):
            assert gw.apply_retention(now + 15 * DAY) == 1  # the 10-day-old one
        assert "'edgewise repair' moved aside" in caplog.text and str(broken) in caplog.text
        assert broken.read_bytes() == b"old readings"  # the operator's to remove
    finally:
        gw.pipeline.close()
        gw.store.close()
        gw.security.close()
        gw.registry.close()
