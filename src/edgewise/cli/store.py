"""``edgewise store purge``: erase deleted rows' bytes from the store's files, in a
maintenance window.

A database only marks a deleted row: its bytes stay in the files until the store is
rewritten (:meth:`~edgewise.store.base.Store.purge`). DuckDB stores purge after each device
deletion and daily retention unasked; PostgreSQL stores never do (``VACUUM FULL`` locks the
tables against every process), so their operator runs this command when a pause suits.

It never makes a store: a DuckDB file that is not there, or a PostgreSQL database or schema
without the store's tables, is refused in one line. A DuckDB file held by a running gateway
is refused too (the gateway purges it itself). Done, it prints the sizes before and after
(the DuckDB file with its write-ahead log; each PostgreSQL table with its indexes and
TOAST, ``pg_total_relation_size``) and the time taken, and writes ``store.purge`` to the
data directory's audit log when it has one. Write-ahead logs ``edgewise repair`` moved
aside beside a DuckDB store (``<file>.wal.broken-<time>``) are not purged: they are named on
stderr (``broken_logs`` with ``--json``) with the command that removes them::

    edgewise store purge --store 'postgresql://owner@db:5432/ew?schema=ew' --json
    edgewise store purge --data-dir /var/lib/edgewise      # DuckDB, gateway stopped
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from edgewise.cli._app import DataDir, Json, app, existing_data_dir, fail
from edgewise.cli.admin import StoreUrl, _broken_logs, _security, private_files

__all__ = ["store_app"]

store_app = typer.Typer(help="The store of readings, seqs and alerts.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("purge")
@private_files
def store_purge(data_dir: DataDir, store: StoreUrl = "", as_json: Json = False) -> None:
    """Rewrite the store so that deleted rows' bytes are gone from its files.

    DuckDB: the live rows are copied to a new file that replaces the old one (writers wait;
    run it while the gateway is stopped: a running one holds the file, and purges it itself
    after deletions). PostgreSQL: VACUUM (FULL) of the store's tables, run as their owner;
    it locks them against every process while it rewrites them (about 9 s per million
    readings), so run it in a maintenance window. Prints the sizes before and after, and the
    time taken.

    Exit status 2 when refused before any work (no such store, a bad URL, a file another
    process holds), 1 when the purge fails or the role may not run it.
    """
    from edgewise.errors import StoreError
    from edgewise.store import duckdb_file, shown_url

    if not store:  # the data dir's DuckDB file: a mistyped --data-dir makes nothing
        existing_data_dir(data_dir)
    url = store or f"duckdb://{(data_dir / 'edgewise.duckdb').resolve()}"
    shown = shown_url(url)
    scheme = url.partition("://")[0].lower()
    try:
        path = duckdb_file(url)
    except StoreError as exc:  # duckdb:///, a relative path: what opening it would say
        raise fail(str(exc)) from None
    status = _status(f"Purging {shown}", quiet=as_json)
    start = time.monotonic()
    if path is not None:
        backend = "duckdb"
        sizes = _purge_duckdb(path, url, status)
    elif scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        backend = "postgresql"
        sizes = _purge_postgres(url, status)
    else:
        raise fail(_not_purgeable(url))
    seconds = round(time.monotonic() - start, 3)
    before = sum(b for b, _ in sizes.values())
    after = sum(a for _, a in sizes.values())
    audited = (data_dir / "security.sqlite").is_file()  # an audit log is never made here
    if audited:
        with _security(data_dir) as sec:
            sec.audit("cli", "store.purge", shown, {"backend": backend, "bytes_before": before,
                                                    "bytes_after": after, "seconds": seconds})
    # the logs 'edgewise repair' moved aside are no part of the store: never purged
    broken = _broken_logs(url, "the readings of deleted devices") if path is not None else []
    if as_json:
        what = "files" if backend == "duckdb" else "tables"
        typer.echo(json.dumps({
            "store": shown, "backend": backend, "bytes_before": before, "bytes_after": after,
            what: {k: {"bytes_before": b, "bytes_after": a} for k, (b, a) in sizes.items()},
            "seconds": seconds, "audited": audited,
            **({"broken_logs": broken} if broken else {})}))
        return
    typer.echo(f"purged {shown} in {seconds:.1f} s")
    for name, (b, a) in sizes.items():
        typer.echo(f"  {name}: {_size(b)} -> {_size(a)}")
    if len(sizes) > 1:
        typer.echo(f"  total: {_size(before)} -> {_size(after)}")


def _purge_duckdb(path: Path, url: str, status: Any) -> dict[str, tuple[int, int]]:
    """Purge the DuckDB file at ``path``; its and its log's sizes (before, after), by name.
    Refused (one line) when the file is not there or another process holds it."""
    from edgewise.errors import StoreError, StoreLockedError
    from edgewise.store import open_store, shown_url

    if not path.is_file():
        raise fail(f"No DuckDB store at {str(path)!r} (--store {shown_url(url)}); nothing to "
                   "purge, and none is made. Give the store the gateway runs with: "
                   "--store duckdb:///PATH, or its --data-dir.")
    files = [path, path.with_name(path.name + ".wal")]
    before = [f.stat().st_size if f.exists() else 0 for f in files]
    with status, _store_warnings() as warned:
        try:
            st = open_store(url)  # a purge an earlier crash cut short finishes here
        except StoreLockedError as exc:
            raise fail(
                f"DuckDB store {str(path)!r} is held by another process (pid {exc.pid}), such "
                "as a running gateway: stop the gateway, or run 'edgewise store purge' when "
                "it is stopped (a running gateway purges this store itself after each device "
                "deletion and its retention).") from None
        except StoreError as exc:
            raise fail(str(exc)) from None
        try:
            _purged(st, warned)
        finally:
            st.close()
    after = [f.stat().st_size if f.exists() else 0 for f in files]
    return {f.name: (b, a) for f, b, a in zip(files, before, after, strict=True) if b or a}


def _purge_postgres(url: str, status: Any) -> dict[str, tuple[int, int]]:
    """VACUUM (FULL) the PostgreSQL store's tables; each table's total size (before,
    after), by name. Refused (one line) when the store's tables are not there."""
    from edgewise.errors import StoreError
    from edgewise.store import open_store

    before = _pg_sizes(url)
    with status, _store_warnings() as warned:
        try:
            st = open_store(url)
        except StoreError as exc:
            raise fail(str(exc)) from None
        try:
            _purged(st, warned)
        finally:
            st.close()
    after = _pg_sizes(url)
    return {t: (b, after.get(t, 0)) for t, b in before.items()}


def _pg_sizes(url: str) -> dict[str, int]:
    """``pg_total_relation_size`` of each table a purge rewrites, by name, read on a
    connection of its own (no transaction held); refused (one line) for a bad URL, a server
    that does not answer, or a database or schema without the store's tables."""
    from edgewise.config import scrubbed
    from edgewise.errors import StoreError
    from edgewise.store.postgres import _PURGED_TABLES, _one_line, _split_url

    try:
        conninfo, schema, shown = _split_url(url)
    except StoreError as exc:
        raise fail(str(exc)) from None
    try:
        import psycopg
    except ImportError:  # pragma: no cover - depends on the install
        raise fail("The PostgreSQL store needs psycopg 3: pip install 'edgewise[postgres]'"
                   ) from None
    try:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=10) as con:
            if schema:
                con.execute(f'SET search_path TO "{schema}"')
            rows = con.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND c.relkind = 'r' "
                "AND c.relname = ANY(%s)", [list(_PURGED_TABLES)]).fetchall()
            where = schema or con.execute("SELECT current_schema()").fetchone()[0]
    except psycopg.Error as exc:
        raise fail(f"Cannot connect to PostgreSQL store {shown!r}: "
                   f"{scrubbed(_one_line(exc), conninfo)}") from None
    sizes = {name: int(n) for name, n in rows}
    if "readings" not in sizes:
        raise fail(f"No Edgewise store at {shown!r}: schema {where!r} has no table 'readings'; "
                   "nothing to purge, and none is made. Give the store the gateway runs with "
                   "(--store or EDGEWISE_STORE, with its ?schema=).")
    return {t: sizes[t] for t in _PURGED_TABLES if t in sizes}


def _purged(st: Any, warned: list[str]) -> None:
    """Run ``st.purge()``; a failure or a refusal (a PostgreSQL role that does not own the
    tables: the store's warning names them and what to run) ends the command in one line."""
    from edgewise.errors import StoreError

    try:
        done = st.purge()
    except StoreError as exc:  # e.g. no free space for the copy: the store is as it was
        raise fail(str(exc), code=1) from None
    if not done:
        why = warned[-1] if warned else f"the store {st.url!r} could not be purged"
        raise fail(f"{why.rstrip('.')} (or run 'edgewise store purge' with --store naming "
                   "their owner's role).", code=1)


@contextmanager
def _store_warnings() -> Iterator[list[str]]:
    """Collect the store modules' warnings (as one-line texts) instead of printing them:
    the command prints one line of its own, built from them where it fails."""
    logger = logging.getLogger("edgewise.store")
    seen: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(" ".join(record.getMessage().split()))

    handler = _Keep(logging.WARNING)
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _not_purgeable(url: str) -> str:
    """Why ``url`` names no store with files to purge: opening it says what is wrong with
    it (nothing is made for these URLs), or it is an in-memory store."""
    from edgewise.errors import StoreError
    from edgewise.store import open_store, shown_url

    if url.partition("://")[2] not in (":memory:", "/:memory:"):
        try:
            open_store(url).close()
        except StoreError as exc:
            return str(exc)
    return (f"--store {shown_url(url)!r} is an in-memory store: it has no files to purge. "
            "Give the store the gateway runs with, e.g. duckdb:///PATH or postgresql://….")


def _status(text: str, *, quiet: bool) -> Any:
    """A Rich status line on stderr while the purge runs (nothing with --json)."""
    from contextlib import nullcontext

    from rich.console import Console
    from rich.markup import escape

    return nullcontext() if quiet else Console(stderr=True).status(escape(text) + " …")


def _size(n: int) -> str:
    """``n`` bytes, readable.

    >>> _size(512), _size(3 * 1024**2 + 1)
    ('512 B', '3.0 MiB (3,145,729 B)')
    """
    if n < 1024:
        return f"{n} B"
    value = float(n)
    units = iter(("KiB", "MiB", "GiB", "TiB"))
    unit = next(units)
    value /= 1024
    for bigger in units:
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit} ({n:,} B)"
