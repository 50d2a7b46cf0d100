"""``edgewise repair``: make a store whose WAL does not replay open again (the WAL is kept)."""

from __future__ import annotations

from typing import Annotated

import typer

from edgewise.cli._app import DataDir, Json, app, fail
from edgewise.cli.admin import _security, private_files


@app.command()
@private_files  # the log it writes back and the store it opens: 0600, as serve makes them
def repair(
    data_dir: DataDir,
    store: Annotated[
        str,
        typer.Option("--store", envvar="EDGEWISE_STORE",
                     help="Store URL; default duckdb:///<data-dir>/edgewise.duckdb."),
    ] = "",
    json_out: Json = False,
) -> None:
    """Move an unreplayable DuckDB write-ahead log aside (kept, renamed) and reopen the store.

    Nothing is deleted. When DuckDB names where the log is damaged, its intact part (the
    transactions committed before the damage) is replayed; readings only in the rest are
    lost from the store, and how many is unknown (DuckDB cannot read it). Refused while
    another process (a running gateway) holds the store; no other process opens it while
    the repair works.
    """
    import json

    from edgewise.errors import StoreError
    from edgewise.store import SUPPORTED, duckdb_path, shown_url
    from edgewise.store.duckdb import repair as repair_duckdb

    def refuse(message: str) -> typer.Exit:
        if json_out:  # a script reading stdout gets one JSON object either way
            typer.echo(json.dumps({"error": message}))
        return fail(message)

    url = store or f"duckdb://{(data_dir / 'edgewise.duckdb').resolve()}"
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    if scheme != "duckdb":  # printed with its password masked
        if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
            why = ("is a PostgreSQL store, which recovers its own log on start: there is "
                   "nothing for repair to do")
        elif sep:
            why = (f"has the scheme {scheme!r}, which is no store edgewise opens "
                   f"(supported: {SUPPORTED})")
        else:
            why = f"is no store URL (supported: {SUPPORTED})"
        raise refuse(f"repair works on DuckDB stores (duckdb:///PATH); {shown_url(url)!r} "
                     f"{why}.")
    try:
        path = duckdb_path(url)  # the checks open_store makes: the same file, or a refusal
        if path is None:
            raise refuse("an in-memory store has nothing to repair")
        report = repair_duckdb(path)
    except StoreError as exc:
        raise refuse(str(exc)) from None
    if report.wal_moved_to is not None and (data_dir / "security.sqlite").is_file():
        # a change to the store (readings only in the log's damaged part are gone from it),
        # audited as 'edgewise store purge' is; an audit log is never made here
        with _security(data_dir) as sec:
            sec.audit("cli", "store.repair", shown_url(url), {
                "wal_moved_to": report.wal_moved_to, "wal_bytes": report.wal_bytes,
                "lost_rows": report.lost_rows, "readings_after": report.readings_after})
    if json_out:
        typer.echo(json.dumps(report.to_dict()))
    else:
        typer.echo(report.message)
