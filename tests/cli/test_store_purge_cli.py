"""``edgewise store purge``: deleted rows' bytes gone from the store's files, on demand.

A device is deleted through the store API without a purge (its bytes stay in the file),
then the command runs through the CLI runner; a byte scan of the store's files shows the
secret id and values there before and gone after. Refusals (a held file, a missing store,
a bad URL, a PostgreSQL role that does not own the tables) end in one line.
"""

from __future__ import annotations

import json
import os
import random
import re
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.security import Security
from edgewise.store.duckdb import DuckDBStore
from edgewise.telemetry import Reading
from tests.conftest import REPO, dml_only_role

load_commands()

T0 = 1_700_000_000 * 10**9
SECRET = "secret-pump-4f0b2d9e"
NO_ENV = {"EDGEWISE_STORE": None, "EDGEWISE_DATA_DIR": None}


def _secret_values(n: int = 300) -> list[float]:
    rng = random.Random(20261205)
    return [rng.uniform(-1e6, 1e6) for _ in range(n)]


def _traces(files: list[Path]) -> dict[str, int]:
    """How many times the secret id, and how many of its values, occur in ``files``."""
    data = b"".join(p.read_bytes() for p in files if p.exists())
    return {"id": data.count(SECRET.encode()),
            "values": sum(struct.pack("<d", v) in data for v in _secret_values())}


def _fill(store) -> None:
    store.append([Reading("other-1", "temp_c", T0 + i * 10**9, float(i % 97) / 4, seq=i + 1)
                  for i in range(5000)])
    store.append([Reading(SECRET, "temp_c", T0 + i * 10**9, v, seq=i + 1)
                  for i, v in enumerate(_secret_values())])


def _deleted_unpurged(path: Path) -> list[tuple[str, int, float]]:
    """A DuckDB store at ``path`` whose SECRET device is deleted but not purged; returns
    the other device's readings."""
    store = DuckDBStore(path)
    try:
        _fill(store)
        store.checkpoint()
        assert store.delete_device(SECRET, purge=False) == 2 * 300
        return store.query("other-1")
    finally:
        store.close()


def _files(path: Path) -> list[Path]:
    return [path, path.with_name(path.name + ".wal")]


def _size(files: list[Path]) -> int:
    return sum(p.stat().st_size for p in files if p.exists())


def _invoke(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, ["store", "purge", *args], env=NO_ENV)


def _one_line_refusal(result) -> str:
    """The refusal's stderr: one 'error:' line, nothing on stdout, no traceback."""
    assert result.exit_code != 0, result.stdout
    assert isinstance(result.exception, SystemExit), result.exception  # typer.Exit, no crash
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_purge_erases_a_deleted_devices_bytes_from_the_duckdb_file(data_dir: Path) -> None:
    """Check the secret id and values are in the file after an unpurged delete, gone after
    'store purge --data-dir', the other device intact, sizes printed and audited."""
    # Prepare
    path = data_dir / "edgewise.duckdb"
    other = _deleted_unpurged(path)
    Security(data_dir).close()  # the data dir has its audit log
    before = _traces(_files(path))
    assert before["id"] > 0 and before["values"] == 300, before  # the scan sees them
    size_before, file_before = _size(_files(path)), path.stat().st_size
    # Execute
    result = _invoke("--data-dir", str(data_dir))
    # Assert
    assert result.exit_code == 0, result.stderr
    assert _traces(_files(path)) == {"id": 0, "values": 0}
    size_after = _size(_files(path))
    out = result.stdout
    assert out.startswith(f"purged duckdb://{path} in "), out
    m = re.search(r"^  edgewise\.duckdb: .*\(([\d,]+) B\) -> .*\(([\d,]+) B\)$", out, re.M)
    assert m, out
    assert int(m[1].replace(",", "")) == file_before
    assert int(m[2].replace(",", "")) == path.stat().st_size == size_after < size_before
    store = DuckDBStore(path)
    try:
        assert store.query("other-1") == other
        assert store.query(SECRET) == []
    finally:
        store.close()
    sec = Security(data_dir)
    try:
        entry = sec.audit_log(1)[0]
        assert (entry.action, entry.target) == ("store.purge", f"duckdb://{path}")
        assert entry.detail["bytes_before"] == size_before
        assert sec.verify_audit().ok
    finally:
        sec.close()


def test_purge_erases_what_retention_deleted_unpurged(tmp_path: Path) -> None:
    """Check readings retention deleted without a purge (no purge mark: opening the store
    leaves them) have their values gone from the file only once the command runs."""
    path = tmp_path / "ew.duckdb"
    store = DuckDBStore(path)
    _fill(store)
    assert store.delete_before(T0 + 10**12, SECRET) == 300  # purge=False: the default
    store.close()
    DuckDBStore(path).close()  # an open alone purges nothing here
    assert _traces(_files(path))["values"] == 300
    result = _invoke("--store", f"duckdb://{path}")
    assert result.exit_code == 0, result.stderr
    assert _traces(_files(path))["values"] == 0


def test_purge_json_is_one_object_with_sizes_and_time(tmp_path: Path) -> None:
    """Check --json prints one JSON object: the store, sizes before/after (total and per
    file) that match the file, the seconds taken; nothing audited without an audit log."""
    path = tmp_path / "ew.duckdb"
    _deleted_unpurged(path)
    size_before = _size(_files(path))
    result = _invoke("--store", f"duckdb://{path}", "--json")
    assert result.exit_code == 0, result.stderr
    got = json.loads(result.stdout)  # the whole of stdout: one object
    assert set(got) == {"store", "backend", "bytes_before", "bytes_after", "files",
                        "seconds", "audited"}, got
    assert (got["store"], got["backend"], got["audited"]) == (f"duckdb://{path}", "duckdb",
                                                              False)
    assert got["bytes_before"] == size_before
    assert got["bytes_after"] == _size(_files(path)) <= size_before
    assert got["files"]["ew.duckdb"]["bytes_after"] == path.stat().st_size
    assert sum(f["bytes_before"] for f in got["files"].values()) == size_before
    assert isinstance(got["seconds"], float) and got["seconds"] >= 0
    assert _traces(_files(path)) == {"id": 0, "values": 0}
    assert not (tmp_path / "security.sqlite").exists()


_HOLD = """
import sys
from edgewise.store.duckdb import DuckDBStore
s = DuckDBStore(sys.argv[1])
print("open", flush=True)
sys.stdin.read()  # held until the test closes stdin
print(len(s.query("other-1")), flush=True)
s.close()
"""


def test_purge_refuses_a_duckdb_file_another_process_holds(tmp_path: Path) -> None:
    """Check a file held by another process (as a running gateway holds it) is refused in
    one line naming the file and the holder's pid, saying to stop the gateway or run it
    when it is stopped; the deleted bytes stay, the holder is unharmed."""
    path = tmp_path / "ew.duckdb"
    _deleted_unpurged(path)
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True, cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        line = _one_line_refusal(_invoke("--store", f"duckdb://{path}"))
        assert f"DuckDB store {str(path)!r} is held by another process (pid {holder.pid})" \
            in line, line
        assert "stop the gateway, or run 'edgewise store purge' when it is stopped" in line
    finally:
        out, _ = holder.communicate("", timeout=60)
    assert holder.returncode == 0 and out.strip() == "5000", out


def test_purge_refuses_a_missing_store_and_makes_none(tmp_path: Path, data_dir: Path) -> None:
    """Check a DuckDB file that is not there is refused (by --store and by --data-dir) and
    neither the file nor its folder is made; a missing --data-dir is refused too."""
    missing = tmp_path / "nowhere" / "ew.duckdb"
    line = _one_line_refusal(_invoke("--store", f"duckdb://{missing}"))
    assert f"No DuckDB store at {str(missing)!r}" in line and "none is made" in line, line
    assert not missing.parent.exists()
    line = _one_line_refusal(_invoke("--data-dir", str(data_dir)))
    assert f"No DuckDB store at {str(data_dir / 'edgewise.duckdb')!r}" in line, line
    assert list(data_dir.iterdir()) == []
    line = _one_line_refusal(_invoke("--data-dir", str(tmp_path / "typo")))
    assert "does not exist" in line and not (tmp_path / "typo").exists(), line


@pytest.mark.parametrize(("url", "says"), [
    ("sqlite:///x.db", "unsupported scheme 'sqlite'"),
    ("duckdb://relative/ew.duckdb", "must name an absolute file path"),
    ("duckdb:///", "must name an absolute file path"),  # not "no DuckDB store at '/'"
    ("duckdb://:memory:", "in-memory store: it has no files to purge"),
    ("postgresql://ew@[::1/db", "is malformed"),
    ("not a url", "is not a URL"),
], ids=["scheme", "relative", "root", "memory", "malformed-pg", "not-url"])
def test_purge_refuses_a_bad_url_in_one_line(url: str, says: str) -> None:
    """Check a URL that names no store with files is refused in one line saying why."""
    line = _one_line_refusal(_invoke("--store", url))
    assert says in line, line


# -- PostgreSQL ---------------------------------------------------------------------------


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[str]:
    """A PostgreSQL store URL on a schema of its own, dropped afterwards."""
    import psycopg

    schema = f"ew_purge_cli_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}schema={schema}"
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _pg_sizes(base: str, schema: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(base, autocommit=True) as con:
        return {t: int(n) for t, n in con.execute(
            "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace "
            "n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r'",
            [schema]).fetchall()}


@pytest.mark.postgres
def test_purge_vacuums_postgres_tables_and_prints_their_sizes(
        pg_store: str, postgres_url: str) -> None:
    """Check the command rewrites the tables after an unpurged delete: each table's size
    before and after printed, as pg_total_relation_size has them, readings' smaller."""
    from edgewise.store.postgres import PostgresStore

    schema = pg_store.rpartition("schema=")[2]
    store = PostgresStore(pg_store)
    try:
        _fill(store)
        other = store.query("other-1")
        assert store.delete_device(SECRET) == 2 * 300  # PostgreSQL: not purged by default
    finally:
        store.close()
    before = _pg_sizes(postgres_url, schema)
    result = _invoke("--store", pg_store)
    assert result.exit_code == 0, result.stderr
    after = _pg_sizes(postgres_url, schema)
    assert after["readings"] < before["readings"], (before, after)
    for table in ("readings", "seqs", "alerts", "device_stats"):
        assert f"  {table}: " in result.stdout and (
            f"({before[table]:,} B) -> " in result.stdout), result.stdout
        assert f"({after[table]:,} B)" in result.stdout, result.stdout
    assert "total: " in result.stdout
    got = json.loads(_invoke("--store", pg_store, "--json").stdout)
    assert got["backend"] == "postgresql"
    assert got["tables"]["readings"]["bytes_before"] == after["readings"]
    store = PostgresStore(pg_store)
    try:
        assert store.query("other-1") == other and store.query(SECRET) == []
    finally:
        store.close()


@pytest.mark.postgres
def test_purge_refuses_a_postgres_schema_without_the_store(postgres_url: str) -> None:
    """Check a schema that holds no store is refused and not made."""
    import psycopg

    schema = f"ew_purge_none_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in postgres_url else "?"
    try:
        line = _one_line_refusal(_invoke("--store", f"{postgres_url}{sep}schema={schema}"))
        assert f"schema {schema!r} has no table 'readings'" in line, line
        assert "none is made" in line, line
        with psycopg.connect(postgres_url, autocommit=True) as con:
            assert con.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                               [schema]).fetchone() is None
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
def test_purge_as_a_role_that_does_not_own_the_tables_says_what_to_run(
        pg_store: str, postgres_url: str) -> None:
    """Check a role with only DML rights is refused in one line (exit 1) naming the role,
    the tables and the VACUUM (FULL) their owner must run."""
    from edgewise.store.postgres import PostgresStore

    PostgresStore(pg_store).close()  # the admin sets the tables up
    schema = pg_store.rpartition("schema=")[2]
    with dml_only_role(postgres_url, schema, "ew_purge_cli_") as (role, url):
        result = _invoke("--store", url)
        line = _one_line_refusal(result)
        assert result.exit_code == 1
        assert f"role {role!r} does not own them" in line, line
        assert f'Run as their owner: VACUUM (FULL) "{schema}".readings, "{schema}".seqs' \
            in line, line


@pytest.mark.parametrize("password", ["ab%zz99", "p%41ss%", "x%00y"],
                         ids=["bad-escape", "escape-then-bare-percent", "nul"])
def test_a_password_libpq_cannot_decode_is_never_printed(password: str) -> None:
    """A PostgreSQL password holding a '%' that starts no %XX escape (or %00) is refused
    in one line that shows it as ``***`` (libpq's own error names the raw password), in
    ``store purge`` and in :func:`open_store`; no server is needed to see it."""
    from edgewise.errors import StoreError
    from edgewise.store import open_store

    url = f"postgresql://postgres:{password}@127.0.0.1:5432/test?schema=x"
    decoded = password.replace("%41", "A")
    line = _one_line_refusal(_invoke("--store", url))
    assert password not in line and decoded not in line, line
    assert "postgresql://postgres:***@127.0.0.1:5432/test?schema=x" in line, line
    assert "%25" in line, line  # says how to write a '%'
    with pytest.raises(StoreError) as e:
        open_store(url).close()
    assert password not in str(e.value) and decoded not in str(e.value), str(e.value)
    assert "postgres:***@" in str(e.value)
