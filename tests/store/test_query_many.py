"""Store.query_many: a fleet's bucketed window in one query, the same rows as query()."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.store import _sql, open_store
from edgewise.store.base import Store
from edgewise.telemetry import Reading
from tests.store.conftest import BACKENDS

T0 = 1_700_000_000 * 10**9
S = 10**9


@pytest.fixture(params=[pytest.param(b, marks=[pytest.mark.postgres] if b == "postgres"
                                     else []) for b in BACKENDS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store of each backend (PostgreSQL skips, saying why, where it is absent)."""
    url = (f"duckdb://{tmp_path / 's.duckdb'}" if request.param == "duckdb"
           else request.getfixturevalue("pg_schema_url"))
    s = open_store(url)
    yield s
    s.close()


def _fleet(store: Store, n: int = 5) -> list[str]:
    ids = [f"pump-{i}" for i in range(n)]
    store.append([Reading(d, m, T0 + k * 7 * S, 10.0 * i + k + j / 4)
                  for i, d in enumerate(ids) for k in range(40)
                  for j, m in enumerate(("temp_c", "flow", "rpm")[: 1 + i % 3])])
    return ids


def test_query_many_is_one_read_of_the_readings(store: Store,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Check five devices' bucketed windows come from one read of the readings table,
    each device's rows equal to its own query()."""
    ids = _fleet(store)
    seen: list[str] = []
    real = store._read  # type: ignore[attr-defined]

    def counted(sql: str, params: Any = None) -> Any:
        seen.append(sql)
        return real(sql, params)

    monkeypatch.setattr(store, "_read", counted)
    got = store.query_many(ids, T0 + 20 * S, T0 + 250 * S, 30 * S, 12)
    assert len(seen) == 1 and "FROM readings" in seen[0], seen
    monkeypatch.undo()
    assert list(got) == ids
    for d in ids:
        assert got[d] == store.query(d, None, T0 + 20 * S, T0 + 250 * S, 30 * S, 12), d
    sizes = sorted(len(r) for r in got.values())
    assert sizes[-1] == 12 and sizes[0] < 12, sizes  # the limit holds per device


def test_query_many_reads_a_long_list_in_chunks(store: Store,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a list longer than QUERY_MANY_CHUNK is read in chunks, with the same rows."""
    ids = _fleet(store)
    whole = store.query_many([*ids, "nobody"], step_ns=60 * S)
    monkeypatch.setattr(_sql, "QUERY_MANY_CHUNK", 2)
    assert store.query_many([*ids, "nobody"], step_ns=60 * S) == whole
    assert whole["nobody"] == [] and all(whole[d] for d in ids)
