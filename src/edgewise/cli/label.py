"""``edgewise label import|list|suggest``: labels on time windows of a device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgewise.cli._app import DataDir, Json, app, existing_data_dir, fail

if TYPE_CHECKING:
    from edgewise.label.store import DeviceDeletion
    from edgewise.security import Security

label_app = typer.Typer(help="Labels on windows of device history: import, list, suggest.",
                        no_args_is_help=True)
app.add_typer(label_app, name="label")


def _open(data_dir: Path):
    from edgewise.label.store import LabelStore
    from edgewise.security import Security

    security = Security(data_dir)
    return LabelStore(data_dir, security=security), security


def _unknown_devices(security: Security, devices: list[str],
                     store_url: str) -> tuple[list[str], str | None]:
    """The ``devices`` neither registered nor with stored data, as ``POST /v1/labels`` has
    it (a label kept for an unknown id is inherited by a device registered later under it),
    and why the store could not tell (``None``: it could; the unregistered ones are then
    all returned). The store is opened only when a device is not registered."""
    from edgewise.errors import StoreError
    from edgewise.store import duckdb_file, open_store

    unregistered = [d for d in devices if not security.has_device(d)]
    if not unregistered:
        return [], None
    path = duckdb_file(store_url)
    if path is not None and not path.exists():
        return unregistered, None  # no store yet: no device has data (and none is made here)
    try:
        st = open_store(store_url, create=False)
    except StoreError as exc:
        return unregistered, str(exc).rstrip(".")
    try:
        with_data = {s.device_id for s in st.devices()}
    finally:
        st.close()
    return [d for d in unregistered if d not in with_data], None


def _lines_text(lines: list[int], most: int = 10) -> str:
    """``"line 3"``, ``"lines 3, 5"``; past ``most`` lines, the count of the rest.

    >>> _lines_text([3]), _lines_text([3, 5]), _lines_text(list(range(2, 15)), most=3)
    ('line 3', 'lines 3, 5', 'lines 2, 3, 4 and 10 more')
    """
    shown = ", ".join(map(str, lines[:most]))
    rest = f" and {len(lines) - most} more" if len(lines) > most else ""
    return f"line{'s' if len(lines) > 1 else ''} {shown}{rest}"


def _likewise(more: list[str]) -> str:
    """``" (likewise a, b, c, …)"`` naming up to three of ``more``; ``""`` for none.

    >>> _likewise([]), _likewise(["'b'"]), _likewise(["1", "2", "3", "4"])
    ('', " (likewise 'b')", ' (likewise 1, 2, 3, …)')
    """
    if not more:
        return ""
    return f" (likewise {', '.join(more[:3])}{', …' if len(more) > 3 else ''})"


def _deletion_text(entry: DeviceDeletion) -> str:
    """When and by whom a device was deleted, from its ``device.delete_data`` audit entry."""
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(entry.ts_ns // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"on {when} by {entry.actor!r}"


def _refusal(lines: dict[str, list[int]], unknown: list[str], gone: dict[str, DeviceDeletion],
             store_error: str | None) -> str:
    """The one-line refusal of a label file naming ``unknown`` devices (neither registered
    nor with stored data; ``store_error``: whether they have data could not be told), of
    which ``gone`` were deleted with their data (their ``device.delete_data`` entries).

    A deleted device's readings and labels went with it: its rows are to be removed (a
    device added again under its id starts with no readings, so 'device add' would have its
    labels label nothing). A device never seen is to be registered first, as before."""
    never = [d for d in unknown if d not in gone]
    if not gone:
        first = never[0]
        if store_error is not None:
            return (f"Device {first!r} is not registered, and whether it has stored data "
                    f"cannot be told: {store_error}. Register it with: edgewise device add "
                    f"{first}, or import once the gateway is stopped.")
        more = _likewise([repr(d) for d in never[1:]])
        return (f"Label CSV line {lines[first][0]}: device {first!r} is not registered and "
                f"has no stored data{more}; nothing was imported. Register it first with: "
                f"edgewise device add {first}")
    deleted = [d for d in unknown if d in gone]
    first = deleted[0]
    more = _likewise([f"{d!r}, deleted {_deletion_text(gone[d])}" for d in deleted[1:]])
    drop = sorted(line for d in deleted for line in lines[d])
    text = (f"Label CSV line {lines[first][0]}: device {first!r} was deleted "
            f"{_deletion_text(gone[first])}{more}, and its readings and labels with it: its "
            f"labels cannot be imported, as they would label history that is gone (a device "
            f"added again under the id starts with no readings); nothing was imported. "
            f"Remove {'its rows' if len(deleted) == 1 else 'the rows of deleted devices'} "
            f"({_lines_text(drop)}) from the file and import it again.")
    if never:
        other = never[0]
        how = (f", and whether it has stored data cannot be told ({store_error}); register "
               f"it with: edgewise device add {other}, or import once the gateway is stopped"
               if store_error is not None else
               f" and has no stored data; register it first with: edgewise device add {other}")
        others = _likewise([repr(d) for d in never[1:]])
        text += f" Device {other!r} (line {lines[other][0]}){others} is not registered{how}."
    return text


def _not_being_deleted(security: Security, devices: list[str], registered: set[str]) -> None:
    """Raise :class:`~edgewise.label.store.DeviceDeletedError` for the first of ``devices``
    a deletion has reached since the import checked them: one whose data a deletion is
    deleting (:meth:`~edgewise.security.credentials.Security.data_kept`: noted before its
    credentials are revoked, cleared once its labels and models are gone), or one of
    ``registered`` (registered then) that is not now. Called holding the label file's
    write lock (``LabelStore.add_many(check=…)``), as ``POST /v1/labels`` re-checks; a
    deletion that got as far as the labels is refused by ``since`` (the deletion count)."""
    from edgewise.label.store import DeviceDeletedError

    for device in devices:
        if security.data_kept(device) or (device in registered
                                           and not security.has_device(device)):
            raise DeviceDeletedError(device, "the labels were")


def _deleted_meanwhile(lines: dict[str, list[int]], device: str, security: Security) -> str:
    """The refusal of an import during which ``device`` was deleted: the deletion (when,
    by whom) once the audit log has it, as for a file naming a device deleted before;
    else that it is being deleted. Either way, nothing was imported."""
    from edgewise.label.store import deleted_devices

    gone = deleted_devices(security, [device])
    if gone:
        return _refusal(lines, [device], gone, None)
    return (f"Label CSV line {lines[device][0]}: device {device!r} is being deleted (its "
            f"readings and labels with it) while this import ran: its labels cannot be "
            f"imported, as they would label history that is gone (a device added again "
            f"under the id starts with no readings); nothing was imported. Remove its rows "
            f"({_lines_text(lines[device])}) from the file and import it again.")


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
    from edgewise.label.store import (
        DeviceDeletedError,
        deleted_devices,
        read_labels_csv_lines,
    )

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
        numbered = read_labels_csv_lines(file, max_future_s=settings.max_future_s)
    except ValueError as exc:
        raise fail(str(exc)) from None
    # a mistyped one: refused before anything (a label store, credentials) is made there;
    # labels need a registered device or its stored data, both in an existing data dir
    existing_data_dir(data_dir)
    store, security = _open(data_dir)
    try:
        rows = [row for _line, row in numbered]
        lines: dict[str, list[int]] = {}  # each device's rows' lines, for a refusal
        for line, row in numbered:
            lines.setdefault(row[0], []).append(line)
        devices = list(lines)
        # noted before the devices are checked: a deletion landing between the check and
        # the write (which takes the label file's write lock, as the deletion does to
        # delete labels) refuses the write, as POST /v1/labels re-checks under that lock
        since = store.deletions()
        registered = {d for d in devices if security.has_device(d)}
        unknown, store_error = _unknown_devices(security, devices, settings.store_url)
        if unknown:
            gone = deleted_devices(security, unknown)
            raise fail(_refusal(lines, unknown, gone, store_error))
        before = store.last_id()  # a label with a higher id is a version this file wrote
        try:
            added = store.add_many(rows, who=who, since=since,
                                   check=lambda: _not_being_deleted(security, devices,
                                                                    registered))
        except DeviceDeletedError as exc:
            raise fail(_deleted_meanwhile(lines, exc.device_id, security)) from None
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
    why = " (no label has been imported into this data directory)"
    if (existing_data_dir(data_dir) / "labels.sqlite").is_file():  # a listing makes nothing
        store, security = _open(data_dir)
        try:
            labels = store.history(device) if history else store.labels(device)
            why = ("" if device is None or security.has_device(device)
                   else " (it is no registered device; 'edgewise device list' shows them)")
        finally:
            store.close()
            security.close()
    if not labels:  # an empty table alone read as "the command ran, and found nothing to say"
        typer.echo(f"note: no labels{'' if device is None else f' for device {device!r}'}"
                   f"{why}", err=True)
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
