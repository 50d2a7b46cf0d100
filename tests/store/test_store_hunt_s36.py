"""Store hunt s36: the store bench hides the password and purges nothing it did not make,
a DuckDB path under a file is a StoreError, conflicts list in one order on both backends,
seq_readings binds any number of seqs on PostgreSQL, retention longer than int64 clamps,
an int value past the float range and NUL / surrogate alert text are StoreErrors."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from pathlib import Path

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store
from edgewise.store.base import Alert
from edgewise.telemetry import Reading


def _with_password(url: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    user, _, host = rest.partition("@")
    return f"{scheme}://{user.partition(':')[0]}:{password}@{host}"


@pytest.mark.postgres
def test_bench_store_never_shows_the_store_password(postgres_url: str) -> None:
    """Check `edgewise bench store` shows the URL without its password, in the result
    and in the printed line (the raw URL, password and all, was both)."""
    from typer.testing import CliRunner

    from edgewise.bench.store import run_store_bench
    from edgewise.cli import app, load_commands

    load_commands()
    url = _with_password(postgres_url.split("?")[0], "s3cretPW")  # trust auth: any password
    r = run_store_bench(url, batch=160, batches=1, devices=1)
    assert "s3cretPW" not in json.dumps(r)
    assert r["store"].startswith("postgresql://") and ":***@" in r["store"]
    out = CliRunner(mix_stderr=False).invoke(app, ["bench", "store", "--store", url, "--batch",
                                                   "160", "--batches", "1", "--devices", "1"])
    assert out.exit_code == 0, out.stderr
    assert "s3cretPW" not in out.stdout + out.stderr and ":***@" in out.stdout


def _relfilenode(base: str, schema: str) -> int | None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as con:
        row = con.execute("SELECT c.relfilenode FROM pg_class c JOIN pg_namespace n ON "
                          "n.oid = c.relnamespace WHERE nspname = %s AND relname = 'readings'",
                          [schema]).fetchone()
    return None if row is None else int(row[0])


@pytest.mark.postgres
def test_bench_store_purges_no_postgres_store_it_did_not_make(
        postgres_url: str, pg_schema_url: str) -> None:
    """Check the bench on an existing store (?schema=) leaves its tables' files alone (no
    VACUUM FULL, which locks every table) and its readings in place, and that an
    upper-case ``PostgreSQL://`` gets a fresh schema too instead of writing into the
    connection's current schema (it made 10 tables there)."""
    import psycopg

    from edgewise.bench.store import run_store_bench

    base = postgres_url.split("?")[0]
    schema = pg_schema_url.rpartition("schema=")[2]
    s = open_store(pg_schema_url)
    try:
        s.append([Reading("prod", "t", 1, 1.0)])
    finally:
        s.close()
    before = _relfilenode(base, schema)
    run_store_bench(pg_schema_url, batch=160, batches=2, devices=1)
    assert _relfilenode(base, schema) == before
    s = open_store(pg_schema_url, create=False)
    try:
        assert s.query("prod") == [("t", 1, 1.0)] and s.count_readings() == 1
    finally:
        s.close()
    cur = f"ew_test_cur_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'CREATE SCHEMA "{cur}"')
    try:
        upper = "PostgreSQL" + base[base.index("://"):] + f"?options=-csearch_path%3D{cur}"
        r = run_store_bench(upper, batch=160, batches=1, devices=1)
        assert r["store"] == upper
        with psycopg.connect(base, autocommit=True) as con:
            assert con.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s",
                               [cur]).fetchone()[0] == 0
    finally:
        with psycopg.connect(base, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{cur}" CASCADE')


def test_duckdb_store_whose_folder_cannot_be_made_is_a_store_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a DuckDB path under a file, or in a folder that cannot be made, raises one
    StoreError naming the path and what is wrong (a raw FileExistsError / PermissionError
    escaped before)."""
    (tmp_path / "afile").touch()
    with pytest.raises(StoreError, match=r"afile' is a file, not a folder"):
        open_store(f"duckdb://{tmp_path / 'afile' / 'sub' / 'x.duckdb'}")

    def refuse(self: Path, *a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(StoreError, match=r"cannot create its folder .*Permission denied"):
        open_store(f"duckdb://{tmp_path / 'locked' / 'x.duckdb'}")


def test_conflicts_order_is_stable_on_timestamp_ties(store_url: str) -> None:
    """Check conflicts(limit=...) lists conflicts of one append (one received_ns, one
    ts_ns) by device, then metric, on both backends (each backend had an order of its own)."""
    ms = list("qwertyuiopasdfgh")
    s = open_store(store_url)
    try:
        s.append([Reading(d, m, 1, 1.0) for d in "de" for m in ms])
        s.append([Reading(d, m, 1, 2.0) for m in ms for d in "ed"])
        s.append([Reading(d, m, 1, 3.0) for m in ms for d in "de"])
        got = [(c.device_id, c.metric, c.new_value) for c in s.conflicts(limit=6)]
        assert got == [("d", m, 3.0) for m in sorted(ms)[:6]]
        assert [c.metric for c in s.conflicts("e", limit=3)] == sorted(ms)[:3]
    finally:
        s.close()


def test_seq_readings_takes_more_seqs_and_metrics_than_postgres_binds(store_url: str) -> None:
    """Check seq_readings with 70,000 seqs, or 70,000 metrics, answers on both backends
    (PostgreSQL refused more than 65,535 bound parameters)."""
    s = open_store(store_url)
    try:
        s.append([Reading("d", "m", i, 1.0, seq=i) for i in range(1, 5)])
        assert len(s.seq_readings("d", ["m"], range(1, 70_001), 0, 10)) == 4
        names = [f"m{i}" for i in range(70_000)] + ["m"]
        assert s.seq_readings("d", names, [1, 2], 0, 10) == [("m", 1, 1.0, 1), ("m", 2, 1.0, 2)]
    finally:
        s.close()


@pytest.mark.postgres
def test_retention_longer_than_int64_clamps_its_cut(pg_schema_url: str, tmp_path: Path) -> None:
    """Check EDGEWISE_RETENTION_DAYS=999999 (a cut before -2**63 ns) deletes nothing and
    raises nothing on PostgreSQL ("bigint out of range" every pass before)."""
    from edgewise.config import Settings
    from edgewise.gateway.runtime import Gateway

    gw = Gateway(Settings.load(env={"EDGEWISE_STORE": pg_schema_url}, data_dir=tmp_path))
    try:
        gw.store.append([Reading("d", "m", 5, 1.0)])
        gw.settings = dataclasses.replace(gw.settings, retention_days=999_999)
        assert gw.apply_retention(time.time_ns()) == 0
        assert gw.store.count_readings() == 1
    finally:
        gw.pipeline.close()
        gw.store.close()
        gw.security.close()
        gw.registry.close()


def test_an_int_value_past_the_float_range_is_a_store_error(store_url: str) -> None:
    """Check an int value that no float holds is refused with a StoreError naming the
    device and metric (OverflowError escaped before), and nothing of the batch stored."""
    s = open_store(store_url)
    try:
        for v in (10**400, -(10**5000)):
            with pytest.raises(StoreError, match=r"device 'd', metric 'm'\): value must be a "
                                                 r"finite number\. Got .*int of \d+ bits"):
                s.append([Reading("d", "m", 1, 1.0), Reading("d", "m", 2, v)])
        assert s.count_readings() == 0
    finally:
        s.close()


def test_alert_text_with_nul_or_a_lone_surrogate_is_refused_alike(store_url: str) -> None:
    """Check a NUL or lone surrogate in an alert's device id, message, note or acked_by is a
    StoreError on both backends, before anything is written (DuckDB stored the NUL,
    PostgreSQL refused it; a surrogate raised a driver error)."""
    s = open_store(store_url)
    try:
        a = s.add_alert(Alert("d", 1, 2, 0.5))
        for bad in (Alert("d\x00", 1, 2, 0.5), Alert("d", 1, 2, 0.5, message="m\x00"),
                    Alert("d", 1, 2, 0.5, message="m\ud800")):
            with pytest.raises(StoreError, match=r"must not hold a NUL|lone surrogate"):
                s.add_alert(bad)
        with pytest.raises(StoreError, match=r"note must not hold a NUL"):
            s.acknowledge_alert(a.id, "ops", label="true_alarm", labelled_by="ops",
                                note="x\x00y")
        with pytest.raises(StoreError, match=r"note must be text UTF-8 can encode"):
            s.update_alert(a.id, note="x\ud800y")
        with pytest.raises(StoreError, match=r"acked_by must not hold a NUL"):
            s.acknowledge_alert(a.id, "o\x00ps")
        assert s.get_alert(a.id).status == "open" and s.alert_events() == []
        assert [x.id for x in s.list_alerts()] == [a.id]
    finally:
        s.close()
