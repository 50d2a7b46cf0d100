"""Store URLs: a password is masked whatever it holds, a raw '#', '?', '/' or '@' in it is
refused, ``duckdb_path`` takes what ``open_store`` takes, and ``open_store(url,
create=False)`` makes no store where none is (a mistyped ``?schema=``, a missing file)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from edgewise.errors import StoreError
from edgewise.store import open_store, shown_url
from edgewise.store.postgres import _split_url
from edgewise.telemetry import Reading


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://ew:Se#cr3t@db/ew?schema=a", "postgresql://ew:***@db/ew?schema=a"),
    ("postgresql://ew:a/b@db/ew", "postgresql://ew:***@db/ew"),
    ("postgresql://ew:a?b@db/ew?schema=x", "postgresql://ew:***@db/ew?schema=x"),
    ("postgresql://ew:a@b@db/ew", "postgresql://ew:***@db/ew"),
    ("postgresql://ew:p#w@db", "postgresql://ew:***@db"),
    ("postgresql://ew:a/b/c@[::1]:5/ew", "postgresql://ew:***@[::1]:5/ew"),
    ("postgresql://ew:pw@db/ew?application_name=a@b",
     "postgresql://ew:***@db/ew?application_name=a@b"),
    ("postgresql://ew@db/ew?application_name=a@b", "postgresql://ew@db/ew?application_name=a@b"),
    ("postgresql://ew:s3cret@db:5432/ew?password=x", "postgresql://ew:***@db:5432/ew?password=***"),
])
def test_shown_url_masks_a_password_holding_url_delimiters(url: str, shown: str) -> None:
    """Check the password is masked when it holds a raw '#', '/', '?' or '@' (it was shown
    whole: the user info was cut at the first '/', '?' or '#', before its '@')."""
    assert shown_url(url) == shown


@pytest.mark.parametrize(("password", "escape"), [
    ("Se#cr3t", "%23"), ("a/b", "%2F"), ("a?b", "%3F"), ("a@b", "%40")])
def test_a_raw_delimiter_in_the_password_is_refused(password: str, escape: str) -> None:
    """Check the URL splitter refuses a raw '#', '/', '?' or '@' in the password, naming
    its escape and never the password (urlsplit took the rest for the fragment or query)."""
    with pytest.raises(StoreError) as exc:
        _split_url(f"postgresql://ew:{password}@db/ew?schema=a")
    assert escape in str(exc.value)
    assert password not in str(exc.value)
    assert "ew:***@db/ew?schema=a" in str(exc.value)


def test_an_escaped_password_is_accepted() -> None:
    """Check the escaped forms pass through to libpq as written."""
    assert _split_url("postgresql://ew:Se%23c%2F%3F%40@db/ew?schema=a")[:2] == (
        "postgresql://ew:Se%23c%2F%3F%40@db/ew", "a")


def test_duckdb_path_takes_what_open_store_takes() -> None:
    """Check the scheme in any case is taken, and an empty, root or relative path refused."""
    from edgewise.store import duckdb_path

    assert duckdb_path("DuckDB:///srv/ew.duckdb") == "/srv/ew.duckdb"
    assert duckdb_path("duckdb://:memory:") is None
    for url in ("duckdb://", "duckdb:///", "duckdb://relative/x.duckdb"):
        with pytest.raises(StoreError, match="must name an absolute file path"):
            duckdb_path(url)


def test_open_store_create_false_refuses_a_missing_duckdb_file(tmp_path: Path) -> None:
    """Check ``create=False`` refuses, in one line naming the file, and makes nothing."""
    path = tmp_path / "typo.duckdb"
    with pytest.raises(StoreError, match="no store file at") as exc:
        open_store(f"duckdb://{path}", create=False)
    assert "\n" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_open_store_create_false_refuses_a_schema_with_no_store(postgres_url: str,
                                                                pg_schema_url: str) -> None:
    """Check ``create=False`` on a mistyped ``?schema=`` refuses, naming the schema and the
    URL with its password masked, before any DDL: neither the schema nor a table is made
    (``_connect(create=True)`` made the schema and its 9 tables, an empty store)."""
    import psycopg

    real = open_store(pg_schema_url)
    real.append([Reading("d1", "t", 10**18 + i, float(i), i + 1) for i in range(3)])
    real.close()
    typo = f"hunt_storecli_typo_{uuid.uuid4().hex[:8]}"
    base = pg_schema_url.partition("?")[0]
    # a password (trust auth ignores it) that the refusal must mask
    user_url = base.replace("@", ":pw-4f0b@", 1) if "@" in base and ":pw" not in base else base
    try:
        with pytest.raises(StoreError) as exc:
            open_store(f"{user_url}?schema={typo}", create=False)
        assert repr(typo) in str(exc.value) and "readings" in str(exc.value)
        assert "pw-4f0b" not in str(exc.value) and "\n" not in str(exc.value)
        with psycopg.connect(postgres_url, autocommit=True) as con:
            made = con.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                               [typo]).fetchone()
        assert made is None
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{typo}" CASCADE')
    again = open_store(pg_schema_url, create=False)  # the real store opens as before
    try:
        assert again.count_readings() == 3
    finally:
        again.close()
