"""Both stores merge alerts: a late run that bridges two held alerts of a device leaves one
listed alert covering both; the other keeps its id (``merged_into``), its acknowledgement and
label carry over, and stores made before the ``merged_into`` column keep working."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgewise.alerts import AlertManager
from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Alert
from tests.store.conftest import BACKENDS

S = 10**9
T0 = 1_700_000_000 * S

_BOTH = [pytest.param(b, marks=[pytest.mark.postgres] if b == "postgres" else [])
         for b in BACKENDS]


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "duckdb":
        return f"duckdb://{tmp_path / 'store.duckdb'}"
    return request.getfixturevalue("pg_schema_url")


def _spans(store: object, device: str) -> list[tuple[int, int]]:
    return sorted(((a.start_ns - T0) // S, (a.end_ns - T0) // S)
                  for a in store.list_alerts(device_id=device))  # type: ignore[attr-defined]


@pytest.mark.parametrize("backend", _BOTH)
def test_a_late_run_bridging_two_alerts_leaves_one(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Check a late run (5, 50, 105 s) touching alerts (0, 10) and (100, 110) leaves one
    listed alert (0, 110) (it was (0, 10) and (5, 110): one alert inside the other), that
    the absorbed one is still found by id and names the survivor, and that the survivor
    took over the absorbed alert's acknowledgement and label."""
    store = open_store(_url(backend, tmp_path, request))
    try:
        am = AlertManager(store, write_every_s=0.0)
        first = am.observe_many("pump", [(T0 + t * S, 0.99, {"temp": 1.0}) for t in range(11)])
        second = am.observe_many("pump", [(T0 + t * S, 0.99, {"rpm": 1.0})
                                          for t in range(100, 111)])
        a, b = first[0], second[0]
        am.acknowledge(b.id, by="ops")
        am.label(b.id, "true_alarm", by="ops", note="bearing")
        out = am.observe_many("pump", [(T0 + t * S, 0.99, {"temp": 1.0}) for t in (5, 50, 105)])
        am.flush(force=True)
        assert [x.id for x in out] == [a.id]
        assert _spans(store, "pump") == [(0, 110)]
        live = store.get_alert(a.id)
        assert (live.status, live.acked_by, live.label, live.labelled_by, live.note) == (
            "acknowledged", "ops", "true_alarm", "ops", "bearing")
        assert set(live.drivers) == {"temp", "rpm"} and live.merged_into is None
        gone = store.get_alert(b.id)
        assert gone.merged_into == a.id and gone.label == "true_alarm"
        assert [x.id for x in store.list_alerts(status="acknowledged")] == [a.id]
    finally:
        store.close()
    store = open_store(_url(backend, tmp_path, request))  # and after reopening
    try:
        assert _spans(store, "pump") == [(0, 110)]
        assert store.get_alert(b.id).merged_into == a.id
    finally:
        store.close()


@pytest.mark.parametrize("backend", _BOTH)
def test_merge_alert_keeps_the_survivors_label_and_refuses_bad_pairs(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Check a label the surviving alert has is kept, alerts merged into the absorbed one
    follow it to the survivor, and merging an alert into itself, across devices, an
    unknown id or a merged alert is refused (nothing changed)."""
    store = open_store(_url(backend, tmp_path, request))
    try:
        a = store.add_alert(Alert("d", T0, T0 + S, 0.9, label="false_alarm", labelled_by="x"))
        b = store.add_alert(Alert("d", T0 + 2 * S, T0 + 3 * S, 0.9, label="true_alarm"))
        c = store.add_alert(Alert("d", T0 + 4 * S, T0 + 5 * S, 0.9))
        other = store.add_alert(Alert("e", T0, T0 + S, 0.9))
        store.merge_alert(c.id, b.id, end_ns=T0 + 5 * S)
        merged = store.merge_alert(b.id, a.id, end_ns=T0 + 5 * S)
        assert (merged.label, merged.labelled_by, merged.end_ns) == (
            "false_alarm", "x", T0 + 5 * S)
        assert store.get_alert(c.id).merged_into == a.id  # never a chain
        assert [x.id for x in store.list_alerts(device_id="d")] == [a.id]
        for bad in ((a.id, a.id), (other.id, a.id), (b.id, a.id), (a.id, b.id)):
            with pytest.raises(StoreError):
                store.merge_alert(*bad)
        with pytest.raises(KeyError):
            store.merge_alert("no-such-id", a.id)
        assert store.get_alert(other.id).merged_into is None
    finally:
        store.close()


def test_a_duckdb_store_made_before_merged_into_opens_and_merges(tmp_path: Path) -> None:
    """Check a DuckDB file whose alerts table has no merged_into column (an older
    Edgewise) opens, lists its alerts as live, and takes new and merged alerts."""
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("""CREATE TABLE alerts (
        id VARCHAR NOT NULL, device_id VARCHAR NOT NULL, start_ns BIGINT NOT NULL,
        end_ns BIGINT NOT NULL, score DOUBLE NOT NULL, kind VARCHAR NOT NULL,
        drivers VARCHAR NOT NULL, message VARCHAR NOT NULL, created_ns BIGINT NOT NULL,
        status VARCHAR NOT NULL, label VARCHAR, acked_by VARCHAR, labelled_by VARCHAR,
        note VARCHAR)""")
    con.execute("INSERT INTO alerts VALUES ('old', 'd', ?, ?, 0.9, 'anomaly', '{}', 'm', 1, "
                "'open', NULL, NULL, NULL, NULL)", [T0, T0 + S])
    con.close()
    _old_alert_lists_and_merges(f"duckdb://{path}")


@pytest.mark.postgres
def test_a_postgres_store_made_before_merged_into_opens_and_merges(pg_schema_url: str) -> None:
    """Check a PostgreSQL schema whose alerts table has no merged_into column opens, lists
    its alerts as live, and takes new and merged alerts."""
    store = open_store(pg_schema_url)
    store.close()
    import psycopg

    base, schema = pg_schema_url.split("?schema=")
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'ALTER TABLE "{schema}".alerts DROP COLUMN merged_into')
        con.execute(f"DELETE FROM \"{schema}\".ew_meta WHERE key = 'alerts_merged_into'")
        con.execute(f"INSERT INTO \"{schema}\".alerts VALUES ('old', 'd', %s, %s, 0.9, "
                    "'anomaly', '{}', 'm', 1, 'open', NULL, NULL, NULL, NULL)", [T0, T0 + S])
    _old_alert_lists_and_merges(pg_schema_url)


def _old_alert_lists_and_merges(url: str) -> None:
    """Open ``url`` (whose alerts table was made without merged_into and holds alert
    'old'), check 'old' is listed as live and a new alert merges into it."""
    store = open_store(url)
    try:
        assert [a.id for a in store.list_alerts()] == ["old"]
        new = store.add_alert(Alert("d", T0 + 2 * S, T0 + 3 * S, 0.9))
        store.merge_alert(new.id, "old", end_ns=T0 + 3 * S)
        assert [(a.id, a.end_ns) for a in store.list_alerts()] == [("old", T0 + 3 * S)]
    finally:
        store.close()
