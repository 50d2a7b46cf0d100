"""``edgewise label import|list|suggest``: labels on time windows of a device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgewise.cli._app import DataDir, Json, app, existing_data_dir, fail

if TYPE_CHECKING:
    from edgewise.security import Security

label_app = typer.Typer(help="Labels on windows of device history: import, list, suggest.",
                        no_args_is_help=True)
app.add_typer(label_app, name="label")


def _open(data_dir: Path):
    from edgewise.label.store import LabelStore
    from edgewise.security import Security

    security = Security(data_dir)
    return LabelStore(data_dir, security=security), security


def _unknown_devices(security: Security, devices: list[str], store_url: str) -> list[str]:
    """The ``devices`` neither registered nor with stored data, as ``POST /v1/labels`` has
    it (a label kept for an unknown id is inherited by a device registered later under it).
    The store is opened only when a device is not registered."""
    from edgewise.errors import StoreError
    from edgewise.store import duckdb_file, open_store

    unregistered = [d for d in devices if not security.has_device(d)]
    if not unregistered:
        return []
    path = duckdb_file(store_url)
    if path is not None and not path.exists():
        return unregistered  # no store yet: no device has data (and none is made here)
    try:
        st = open_store(store_url, create=False)
    except StoreError as exc:
        raise fail(f"Device {unregistered[0]!r} is not registered, and whether it has stored "
                   f"data cannot be told: {str(exc).rstrip('.')}. Register it with: edgewise "
                   f"device add {unregistered[0]}, or import once the gateway is stopped."
                   ) from None
    try:
        with_data = {s.device_id for s in st.devices()}
    finally:
        st.close()
    return [d for d in unregistered if d not in with_data]


@label_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV with device_id,start,end,label[,note].")],
    data_dir: DataDir,
    who: Annotated[str, typer.Option(help="Who gave these labels (audit log).")] = "cli",
    store_url: Annotated[str, typer.Option(
        "--store", envvar="EDGEWISE_STORE",
        help="Store URL (default: the DuckDB file under the data directory); read only to "
        "tell whether an unregistered device has data.")] = "",
    json_out: Json = False,
) -> None:
    """Import labels from a CSV file; relabelled windows get a new version.

    Every device must be registered or have stored data, and no window may end later than
    now plus the clock skew the gateway allows readings (EDGEWISE_MAX_FUTURE_S); otherwise
    nothing is imported. Prints each device's label snapshot id, which a model trained
    with 'train --with-labels' on these labels records (--json: 'device_snapshot_ids', and
    'snapshot_id', that of every device's labels, which 'train transfer' records).
    """
    from edgewise.config import Settings
    from edgewise.errors import ConfigError
    from edgewise.label.store import read_labels_csv

    if not who.strip():  # the audit log would name no one
        raise fail(f"--who must name who gave these labels (the audit log keeps it). Got "
                   f"{who!r}.")
    import os

    # only the settings an import uses (the data dir and store are options, their variables
    # read by click); a gateway setting set wrong in this shell (EDGEWISE_RATE_LIMIT_PER_S=10s)
    # is the gateway's, not the import's, as in 'device delete'
    used = {k: os.environ[k] for k in ("EDGEWISE_MAX_FUTURE_S",) if k in os.environ}
    try:
        settings = Settings.load(env=used, data_dir=data_dir, store=store_url or None)
    except ConfigError as exc:
        raise fail(str(exc)) from None
    try:  # a missing file, a directory or a binary file is named in one line
        rows = read_labels_csv(file, max_future_s=settings.max_future_s)
    except ValueError as exc:
        raise fail(str(exc)) from None
    # a mistyped one: refused before anything (a label store, credentials) is made there;
    # labels need a registered device or its stored data, both in an existing data dir
    existing_data_dir(data_dir)
    store, security = _open(data_dir)
    try:
        devices = list(dict.fromkeys(row[0] for row in rows))
        unknown = _unknown_devices(security, devices, settings.store_url)
        if unknown:
            line = 2 + next(i for i, row in enumerate(rows) if row[0] == unknown[0])
            more = ""
            if len(unknown) > 1:
                more = f" (likewise {', '.join(map(repr, unknown[1:4]))}" + (
                    ", …)" if len(unknown) > 4 else ")")
            raise fail(f"Label CSV line {line}: device {unknown[0]!r} is not registered and "
                       f"has no stored data{more}; nothing was imported. Register it first "
                       f"with: edgewise device add {unknown[0]}")
        before = store.last_id()  # a label with a higher id is a version this file wrote
        added = store.add_many(rows, who=who)
        snap = store.snapshot_id()
        # what a device's 'train --with-labels' model records: one id per device
        snaps = {device: store.snapshot_id(device) for device in devices}
    finally:
        store.close()
        security.close()
    # a row repeating its window's current label comes back as it was (an id from before,
    # or one this file already wrote: a row repeated exactly): no new version. Each label
    # counts once, so imported + unchanged is the number of windows in the file
    fresh = list({lab.id: lab for lab in added if lab.id > before}.values())
    relabelled = sum(1 for lab in fresh if lab.version > 1)
    unchanged = len({lab.id for lab in added if lab.id <= before})
    if json_out:
        typer.echo(json.dumps({"imported": len(fresh), "relabelled": relabelled,
                               "unchanged": unchanged, "snapshot_id": snap,
                               "device_snapshot_ids": snaps}))
    else:
        typer.echo(f"imported {len(fresh)} labels ({relabelled} relabelled, {unchanged} "
                   "unchanged)" + "".join(f"; {device} labels {sid}"
                                          for device, sid in snaps.items()))


@label_app.command("list")
def list_(
    data_dir: DataDir,
    device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    history: Annotated[bool, typer.Option(help="Every version, superseded ones too.")] = False,
    json_out: Json = False,
) -> None:
    """List the current labels (or their whole history)."""
    labels = []
    if (existing_data_dir(data_dir) / "labels.sqlite").is_file():  # a listing makes nothing
        store, security = _open(data_dir)
        try:
            labels = store.history(device) if history else store.labels(device)
        finally:
            store.close()
            security.close()
    if json_out:
        typer.echo(json.dumps([lab.to_dict() for lab in labels]))
        return
    from rich.console import Console
    from rich.table import Column, Table
    from rich.text import Text

    table = Table("device", "label", "v", "who", "note")
    for i, name in ((1, "start"), (2, "end")):  # whole times, never cut to "2014-02-09T02:4…"
        table.columns.insert(i, Column(name, no_wrap=True, min_width=20))
    for lab in labels:
        # Text, not str: a str cell is Rich markup, and a note such as "[/]" crashed the
        # table (MarkupError) or "[red]" restyled it
        table.add_row(*(Text(cell) for cell in (
            lab.device_id, _iso(lab.start_ns), _iso(lab.end_ns), lab.label,
            str(lab.version) + ("" if lab.current else " (old)"), lab.who, lab.note)))
    console = Console()
    if not console.is_terminal:  # piped or redirected: no terminal width to fit, keep it all
        console = Console(width=max(console.width, 160))
    console.print(table)


def _iso(ns: int) -> str:
    """RFC 3339 UTC text of integer nanoseconds, exact: whole seconds as they are, else
    microseconds, else nanoseconds (as a float of seconds, the single reading's window
    ``[t, t + 1 ns)`` printed its start and end alike).

    >>> t = 1704067200_000000000
    >>> _iso(t), _iso(t + 250_000_000), _iso(t + 1)
    ('2024-01-01T00:00:00Z', '2024-01-01T00:00:00.250000Z', '2024-01-01T00:00:00.000000001Z')
    """
    from datetime import UTC, datetime

    seconds, frac = divmod(int(ns), 1_000_000_000)
    text = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac == 0:
        return text + "Z"
    return text + (f".{frac // 1000:06d}Z" if frac % 1000 == 0 else f".{frac:09d}Z")
