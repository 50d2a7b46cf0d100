"""CLI paths that open a store must not make one: a mistyped ``?schema=`` is refused
(``device delete`` / ``add``, ``train forecast --data``, ``label import``); ``device delete``
edits the saved detector state without dropping other devices' streams; ``repair`` takes
the store URLs ``open_store`` takes and refuses the rest in one line."""

from __future__ import annotations

import json
import pickle
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.security import Security
from edgewise.store import open_store
from edgewise.telemetry import Reading

load_commands()

NO_ENV = {"EDGEWISE_STORE": None, "EDGEWISE_DATA_DIR": None, "EDGEWISE_DETECTOR": None}
T0 = 1_700_000_000 * 10**9


def _run(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, list(args), env=NO_ENV)


@pytest.fixture
def typo_url(postgres_url: str) -> Iterator[tuple[str, str, str]]:
    """(the real store's URL, holding d1's 5 readings; a URL one letter off; its schema),
    both schemas dropped afterwards (the mistyped one should anything make it)."""
    import psycopg

    name = f"hunt_storecli_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in postgres_url else "?"
    pg_schema_url = f"{postgres_url}{sep}schema={name}"
    real = open_store(pg_schema_url)
    real.append([Reading("d1", "t", T0 + i * 10**9, float(i), i + 1) for i in range(5)])
    real.close()
    typo = f"{name}x"
    yield pg_schema_url, f"{postgres_url}{sep}schema={typo}", typo
    with psycopg.connect(postgres_url, autocommit=True) as con:
        for schema in (name, typo):
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _schema_made(postgres_url: str, schema: str) -> bool:
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as con:
        return con.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                           [schema]).fetchone() is not None


@pytest.mark.postgres
def test_device_delete_with_a_mistyped_schema_deletes_nothing(
        tmp_path: Path, postgres_url: str, typo_url: tuple[str, str, str]) -> None:
    """Check the deletion is refused (exit 1, data NOT deleted, naming the schema), makes
    no schema, keeps the data-kept hold, and the real store keeps d1's rows (it made an
    empty store in the typo, said '0 stored rows deleted' and cleared the hold)."""
    real, typo, schema = typo_url
    sec = Security(tmp_path)
    sec.add_device("d1")
    sec.close()
    res = _run("device", "delete", "d1", "--data-dir", str(tmp_path), "--store", typo)
    assert res.exit_code == 1, res.output + res.stderr
    assert "NOT deleted" in res.stderr and repr(schema) in res.stderr
    assert not _schema_made(postgres_url, schema)
    sec = Security(tmp_path)
    try:
        assert sec.data_kept("d1")
    finally:
        sec.close()
    st = open_store(real, create=False)
    try:
        assert st.count_readings() == 5
    finally:
        st.close()


@pytest.mark.postgres
def test_device_add_and_train_forecast_make_no_store_in_a_mistyped_schema(
        tmp_path: Path, postgres_url: str, typo_url: tuple[str, str, str]) -> None:
    """Check 'device add --store' (which looks for a device's stored data) and 'train
    forecast --data' (read only) leave a mistyped schema unmade; forecast refuses in one
    line naming it."""
    _, typo, schema = typo_url
    res = _run("device", "add", "d2", "--data-dir", str(tmp_path), "--store", typo)
    assert not _schema_made(postgres_url, schema), res.stderr
    res = _run("train", "forecast", "--data", typo, "--device", "d1", "--metric", "t",
               "--out", str(tmp_path / "m.fc"))
    assert res.exit_code == 2 and repr(schema) in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not _schema_made(postgres_url, schema)


@pytest.mark.postgres
def test_label_import_makes_no_store_in_a_mistyped_schema(
        tmp_path: Path, postgres_url: str, typo_url: tuple[str, str, str]) -> None:
    """Check 'label import --store' with an unregistered device refuses and makes nothing."""
    _, typo, schema = typo_url
    csv = tmp_path / "labels.csv"
    csv.write_text("device_id,start,end,label\nd9,2023-11-14T22:13:20Z,"
                   "2023-11-14T22:20:00Z,anomaly\n")
    res = _run("label", "import", str(csv), "--data-dir", str(tmp_path), "--store", typo)
    assert not _schema_made(postgres_url, schema)
    assert res.exit_code == 2 and repr(schema) in res.stderr, res.stderr


def _saved_state(data_dir: Path) -> Path:
    """detectors.pickle of a gateway that ran with --detector ewzscore (a flag: not in the
    environment of a later 'device delete'), scoring p1 and p2; both registered."""
    sec = Security(data_dir)
    for d in ("p1", "p2"):
        sec.add_device(d)
    sec.close()
    settings = Settings.load(env={}, data_dir=data_dir, detector="ewzscore")
    state = data_dir / "detectors.pickle"
    store = open_store(settings.store_url)
    p = Pipeline(store, settings, detect_async=False, state_path=state)
    for i in range(40):
        for d in ("p1", "p2"):
            body = {"ts": 1_700_000_000 + i, "seq": i + 1, "metrics": {"a": i % 5, "b": 1.0}}
            p.ingest(d, json.dumps(body).encode())
    p.close()
    store.close()
    return state


def test_device_delete_keeps_other_devices_detectors_of_another_kind(tmp_path: Path) -> None:
    """Check deleting p1 drops only p1's saved streams: p2's ewzscore detectors stay (the
    Pipeline the CLI built with the default detector dropped them as 'another detector's')."""
    state = _saved_state(tmp_path)
    state.chmod(0o600)
    mode = state.stat().st_mode
    before = pickle.loads(state.read_bytes())
    kinds = {type(d) for k, d in before["detectors"].items() if k[0] == "p2"}
    res = _run("device", "delete", "p1", "--data-dir", str(tmp_path))
    assert res.exit_code == 0, res.stderr
    after = pickle.loads(state.read_bytes())
    assert {k for k in after["detectors"]} == {k for k in before["detectors"] if k[0] == "p2"}
    assert {type(d) for d in after["detectors"].values()} == kinds
    assert set(after["multivariate"]) == {"p2"}
    assert {k[0] for k in after["last_scored"]} == {"p2"}
    assert state.stat().st_mode == mode  # rewritten in place of the file, as private


def test_device_delete_leaves_an_unreadable_detector_state_as_it_is(tmp_path: Path) -> None:
    """Check an unreadable detectors.pickle is not replaced (with an empty state): the data
    is deleted, a warning names the file, and its bytes are unchanged."""
    state = _saved_state(tmp_path)
    state.write_bytes(b"not a pickle at all")
    res = _run("device", "delete", "p1", "--data-dir", str(tmp_path))
    assert res.exit_code == 0, res.stderr
    assert "warning" in res.stderr and "detectors.pickle" in res.stderr
    assert state.read_bytes() == b"not a pickle at all"


@pytest.mark.parametrize("url", ["duckdb:///", "duckdb://", "duckdb://relative/x.duckdb"])
def test_repair_refuses_what_open_store_refuses(tmp_path: Path, url: str) -> None:
    """Check each malformed DuckDB URL is refused in one line (a traceback for
    'duckdb:///', the cwd opened for 'duckdb://', a relative path taken as one), and in
    one JSON object on stdout under --json."""
    res = _run("repair", "--data-dir", str(tmp_path), "--store", url)
    assert res.exit_code == 2, res.output + res.stderr
    assert res.stderr.startswith("error:") and len(res.stderr.strip().splitlines()) == 1
    assert "absolute file path" in res.stderr
    res = _run("repair", "--data-dir", str(tmp_path), "--store", url, "--json")
    assert res.exit_code == 2
    assert "absolute file path" in json.loads(res.stdout)["error"]


def test_repair_takes_the_scheme_in_any_case(tmp_path: Path) -> None:
    """Check 'DuckDB:///PATH', which open_store opens, is repaired (it was refused)."""
    path = tmp_path / "ew.duckdb"
    open_store(f"duckdb://{path}").close()
    res = _run("repair", "--data-dir", str(tmp_path), "--store", f"DuckDB://{path}", "--json")
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["ok_before"] is True
