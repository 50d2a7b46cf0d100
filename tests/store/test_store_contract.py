"""Every store backend passes every check of edgewise.checks (the public contract suite)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from edgewise.checks import yield_store_checks
from edgewise.store import open_store
from tests.store.conftest import BACKENDS

CASES = [
    pytest.param(
        backend, check, id=f"{backend}:{check.__name__}",
        marks=[pytest.mark.postgres] if backend == "postgres" else [],
    )
    for backend in BACKENDS
    for check in yield_store_checks()
]


@pytest.mark.parametrize(("backend", "check"), CASES)
def test_store_contract(
    backend: str, check: Callable, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Check that the backend keeps the promise this check tests."""
    if backend == "duckdb":
        url = f"duckdb://{tmp_path / 'store.duckdb'}"
    else:
        url = request.getfixturevalue("pg_schema_url")
    check(lambda: open_store(url))
