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

from pathlib import Path

from edgewise.config import shown_url, userinfo_end
from edgewise.errors import StoreError
from edgewise.store.base import Alert, AppendResult, Conflict, DeviceSummary, Store

__all__ = [
    "Alert", "AppendResult", "Conflict", "DeviceSummary", "Store", "check_store_url",
    "duckdb_file", "duckdb_path", "open_store", "shown_url", "userinfo_end",
]

SUPPORTED = "duckdb:///ABS/PATH, duckdb://:memory:, postgresql://USER@HOST:PORT/DB[?schema=NAME]"


def duckdb_file(url: str) -> Path | None:
    """The file a ``duckdb:///PATH`` URL names, read as :func:`duckdb_path` (and
    :func:`open_store`) read it; ``None`` for another backend and for ``:memory:``: where a
    command that must not create a store looks before opening it.

    >>> duckdb_file("duckdb:///srv/ew/edgewise.duckdb"), duckdb_file("duckdb://:memory:")
    (PosixPath('/srv/ew/edgewise.duckdb'), None)
    >>> duckdb_file("postgresql://ew@db/ew") is None
    True
    >>> duckdb_file("duckdb:///")
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Store URL 'duckdb:///' must name an absolute file path, e.g. 'duckdb:///var/lib/edgewise/edgewise.duckdb', or be 'duckdb://:memory:'.

    Raises
    ------
    StoreError
        For a ``duckdb://`` URL that :func:`open_store` refuses (no file named, or not an
        absolute path), so a check before opening never looks at another file than the one
        opening would take (``duckdb:///`` is no store at ``/``).
    """  # noqa: E501
    if url.partition("://")[0].lower() != "duckdb":
        return None
    path = duckdb_path(url)
    return None if path is None else Path(path)


def duckdb_path(url: str) -> str | None:
    """The file path of a ``duckdb://`` URL as :func:`open_store` takes it (the scheme in
    any case); ``None`` for ``:memory:``.

    >>> duckdb_path("DuckDB:///srv/ew/edgewise.duckdb"), duckdb_path("duckdb://:memory:")
    ('/srv/ew/edgewise.duckdb', None)
    >>> duckdb_path("duckdb://relative/x.duckdb")
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Store URL 'duckdb://relative/x.duckdb' must name an absolute file path, e.g. 'duckdb:///var/lib/edgewise/edgewise.duckdb', or be 'duckdb://:memory:'.

    Raises
    ------
    StoreError
        For another scheme, or a path that is not absolute or names no file (``duckdb://``,
        ``duckdb:///``).
    """  # noqa: E501
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "duckdb":
        raise StoreError(f"Store URL {shown_url(url)!r} is not a DuckDB URL; expected "
                         "duckdb:///ABS/PATH or duckdb://:memory:.")
    if rest in (":memory:", "/:memory:"):
        return None
    if not rest.startswith("/") or rest.endswith("/"):
        raise StoreError(
            f"Store URL {shown_url(url)!r} must name an absolute file path, e.g. "
            "'duckdb:///var/lib/edgewise/edgewise.duckdb', or be 'duckdb://:memory:'."
        )
    return rest


def check_store_url(url: str) -> str:
    """The backend a store URL names (``'duckdb'`` or ``'postgresql'``), or a
    :class:`~edgewise.errors.StoreError` for one that names none: no ``://`` or an
    unsupported scheme. Nothing is opened: a command that acts before it opens the store
    (``device delete`` revokes first) refuses a mistyped URL before anything.

    >>> check_store_url("postgres://ew@db/ew"), check_store_url("duckdb:///x.duckdb")
    ('postgresql', 'duckdb')
    >>> check_store_url("bogus")
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Store URL 'bogus' is not a URL. Supported: ...
    """
    if not isinstance(url, str) or "://" not in url:
        raise StoreError(f"Store URL {shown_url(url)!r} is not a URL. Supported: {SUPPORTED}.")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "duckdb":
        return "duckdb"
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        return "postgresql"
    raise StoreError(
        f"Store URL {shown_url(url)!r} has an unsupported scheme {scheme!r}. "
        f"Supported: {SUPPORTED}."
    )


def open_store(url: str, create: bool = True) -> Store:
    """Open the store that ``url`` names.

    ``create=False`` opens only a store that exists, for the commands that read or delete
    from one (a mistyped path or ``?schema=`` must not make an empty store and report "0
    rows"): a missing DuckDB file, or a PostgreSQL schema with no ``readings`` table, is
    refused before anything is made.

    >>> open_store("duckdb:///nowhere/edgewise.duckdb", create=False)
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Store URL 'duckdb:///nowhere/edgewise.duckdb': no store file at '/nowhere/edgewise.duckdb'; give the URL of an existing store (the one the gateway runs with).

    Raises
    ------
    StoreError
        For an unsupported scheme, a malformed URL, a store that cannot be opened
        (:class:`~edgewise.errors.StoreCorruptError` when it needs ``edgewise repair``), or
        with ``create=False`` one that does not exist.
    """  # noqa: E501
    scheme = check_store_url(url)
    if scheme == "duckdb":
        from edgewise.store.duckdb import DuckDBStore

        path = duckdb_path(url)
        if path is None:
            return DuckDBStore(":memory:")
        if not create and not Path(path).is_file():
            raise StoreError(
                f"Store URL {shown_url(url)!r}: no store file at {path!r}; give the URL of an "
                "existing store (the one the gateway runs with)."
            )
        return DuckDBStore(path)
    if scheme == "postgresql":
        from edgewise.store.postgres import PostgresStore

        return PostgresStore(url, create=create)
    raise AssertionError(scheme)  # check_store_url took only these
