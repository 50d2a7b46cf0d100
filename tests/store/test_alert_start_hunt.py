"""Both stores persist an alert's start moved earlier by a late reading."""

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


def _url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "duckdb":
        return f"duckdb://{tmp_path / 'store.duckdb'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.mark.parametrize("backend", [
    pytest.param(b, marks=[pytest.mark.postgres] if b == "postgres" else []) for b in BACKENDS
])
def test_a_moved_start_is_stored_and_survives_reopening(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Check ``update_alert(start_ns=…)`` is accepted (it was refused as not changeable) and
    kept, and that the alert manager writes the start a late reading moved."""
    url = _url(backend, tmp_path, request)
    store = open_store(url)
    try:
        am = AlertManager(store, write_every_s=3600.0)
        a = am.observe("pump", T0 + 10 * S, 0.97, {"temp": 1.0})
        assert a is not None
        am.observe("pump", T0 + 8 * S, 0.98, {"temp": 1.0})  # late, 2 s earlier
        am.flush(force=True)
        assert store.get_alert(a.id).start_ns == T0 + 8 * S
        other = store.add_alert(Alert("pump", T0 + 500 * S, T0 + 510 * S, 0.9))
        assert store.update_alert(other.id, start_ns=T0 + 490 * S).start_ns == T0 + 490 * S
        with pytest.raises(StoreError, match="Cannot change alert field"):
            store.update_alert(other.id, device_id="elsewhere")
    finally:
        store.close()
    store = open_store(url)
    try:
        assert store.get_alert(a.id).start_ns == T0 + 8 * S
        assert store.get_alert(other.id).start_ns == T0 + 490 * S
        assert [x.id for x in store.list_alerts("pump", None, None, None, 10)] == [other.id, a.id]
    finally:
        store.close()
