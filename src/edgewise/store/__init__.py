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

import re
from pathlib import Path

from edgewise.errors import StoreError
from edgewise.store.base import Alert, AppendResult, Conflict, DeviceSummary, Store

__all__ = [
    "Alert", "AppendResult", "Conflict", "DeviceSummary", "Store", "duckdb_file", "open_store",
    "shown_url",
]

SUPPORTED = "duckdb:///ABS/PATH, duckdb://:memory:, postgresql://USER@HOST:PORT/DB[?schema=NAME]"


def duckdb_file(url: str) -> Path | None:
    """The file a ``duckdb:///PATH`` URL names; ``None`` for any other store (and for
    ``:memory:``): where a command that must not create a store looks before opening it.

    >>> duckdb_file("duckdb:///srv/ew/edgewise.duckdb"), duckdb_file("duckdb://:memory:")
    (PosixPath('/srv/ew/edgewise.duckdb'), None)
    >>> duckdb_file("postgresql://ew@db/ew") is None
    True
    """
    scheme, _, rest = url.partition("://")
    if scheme.lower() != "duckdb" or not rest.startswith("/") or rest == "/:memory:":
        return None
    return Path(rest)


def shown_url(url: str) -> str:
    """``url`` safe to print: a password in it (``user:PASSWORD@host`` or
    ``?password=…``) becomes ``***``. Never raises, even on a malformed URL.

    >>> shown_url("postgresql://ew:s3cret@db:5432/ew?schema=a&password=x")
    'postgresql://ew:***@db:5432/ew?schema=a&password=***'
    >>> shown_url("postgresql://ew:s3cret@[::1/db")
    'postgresql://ew:***@[::1/db'
    """
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if sep:
        end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0], default=len(rest))
        userinfo, at, host = rest[:end].rpartition("@")
        if at and ":" in userinfo:
            rest = f"{userinfo.partition(':')[0]}:***@{host}{rest[end:]}"
        url = f"{scheme}{sep}{rest}"
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


def open_store(url: str) -> Store:
    """Open the store that ``url`` names.

    Raises
    ------
    StoreError
        For an unsupported scheme, a malformed URL, or a store that cannot be opened
        (:class:`~edgewise.errors.StoreCorruptError` when it needs ``edgewise repair``).
    """
    if not isinstance(url, str) or "://" not in url:
        raise StoreError(f"Store URL {shown_url(url)!r} is not a URL. Supported: {SUPPORTED}.")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "duckdb":
        from edgewise.store.duckdb import DuckDBStore

        if rest in (":memory:", "/:memory:"):
            return DuckDBStore(":memory:")
        if not rest.startswith("/") or rest == "/":
            raise StoreError(
                f"Store URL {shown_url(url)!r} must name an absolute file path, e.g. "
                "'duckdb:///var/lib/edgewise/edgewise.duckdb', or be 'duckdb://:memory:'."
            )
        return DuckDBStore(rest)
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        from edgewise.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(
        f"Store URL {shown_url(url)!r} has an unsupported scheme {scheme!r}. "
        f"Supported: {SUPPORTED}."
    )
