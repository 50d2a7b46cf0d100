"""Store fixtures: a factory per backend that opens the same empty store each time it is called."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

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
