"""Storage: the Store protocol (``base.py``) and one file per backend.

:func:`open_store` picks the backend from a URL:

* ``duckdb:///abs/path/edgewise.duckdb`` — the embedded default, one process at a time;
* ``duckdb://:memory:`` — in memory, gone at close (tests, demos);
* ``postgresql://user@host:port/db[?schema=name]`` — shared by several processes.

>>> store = open_store("duckdb://:memory:")
>>> store.count_readings()
0
>>> store.close()
>>> open_store("sqlite:///x.db")
Traceback (most recent call last):
...
edgewise.errors.StoreError: Store URL 'sqlite:///x.db' has an unsupported scheme 'sqlite'. Supported: duckdb:///ABS/PATH, duckdb://:memory:, postgresql://USER@HOST:PORT/DB[?schema=NAME].
"""  # noqa: E501

from __future__ import annotations

from edgewise.errors import StoreError
from edgewise.store.base import Alert, AppendResult, Conflict, DeviceSummary, Store

__all__ = ["Alert", "AppendResult", "Conflict", "DeviceSummary", "Store", "open_store"]

SUPPORTED = "duckdb:///ABS/PATH, duckdb://:memory:, postgresql://USER@HOST:PORT/DB[?schema=NAME]"


def open_store(url: str) -> Store:
    """Open the store that ``url`` names.

    Raises
    ------
    StoreError
        For an unsupported scheme, a malformed URL, or a store that cannot be opened
        (:class:`~edgewise.errors.StoreCorruptError` when it needs ``edgewise repair``).
    """
    if not isinstance(url, str) or "://" not in url:
        raise StoreError(f"Store URL {url!r} is not a URL. Supported: {SUPPORTED}.")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "duckdb":
        from edgewise.store.duckdb import DuckDBStore

        if rest in (":memory:", "/:memory:"):
            return DuckDBStore(":memory:")
        if not rest.startswith("/") or rest == "/":
            raise StoreError(
                f"Store URL {url!r} must name an absolute file path, e.g. "
                "'duckdb:///var/lib/edgewise/edgewise.duckdb', or be 'duckdb://:memory:'."
            )
        return DuckDBStore(rest)
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        from edgewise.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(
        f"Store URL {url!r} has an unsupported scheme {scheme!r}. Supported: {SUPPORTED}."
    )
