"""Store fixtures: a factory per backend that opens the same empty store each time it is called."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

BACKENDS = ["duckdb", "postgres"]


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}schema={schema}"


@pytest.fixture
def pg_schema_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A postgresql:// URL with a random schema of its own, dropped afterwards."""
    base = request.getfixturevalue("postgres_url")
    import psycopg

    schema = f"ew_test_{uuid.uuid4().hex[:12]}"
    yield _pg_schema_url(base, schema)
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=[pytest.param(b, marks=[pytest.mark.postgres] if b == "postgres" else [])
                        for b in BACKENDS])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store's URL on each backend: a DuckDB file, or a PostgreSQL schema of its own."""
    if request.param == "duckdb":
        return f"duckdb://{tmp_path / 'store.duckdb'}"
    return str(request.getfixturevalue("pg_schema_url"))
