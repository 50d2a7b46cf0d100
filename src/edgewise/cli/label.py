"""``edgewise label import|list|suggest``: labels on time windows of a device."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import DataDir, Json, app, fail

label_app = typer.Typer(help="Labels on windows of device history: import, list, suggest.",
                        no_args_is_help=True)
app.add_typer(label_app, name="label")


def _open(data_dir: Path):
    from edgewise.label.store import LabelStore
    from edgewise.security import Security

    security = Security(data_dir)
    return LabelStore(data_dir, security=security), security


@label_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="CSV with device_id,start,end,label[,note].")],
    data_dir: DataDir,
    who: Annotated[str, typer.Option(help="Who gave these labels (audit log).")] = "cli",
    json_out: Json = False,
) -> None:
    """Import labels from a CSV file; relabelled windows get a new version."""
    from edgewise.label.store import read_labels_csv

    try:  # a missing file, a directory or a binary file is named in one line
        rows = read_labels_csv(file)
    except ValueError as exc:
        raise fail(str(exc)) from None
    store, security = _open(data_dir)
    try:
        added = store.add_many(rows, who=who)
        snap = store.snapshot_id()
    finally:
        store.close()
        security.close()
    relabelled = sum(1 for lab in added if lab.version > 1)
    if json_out:
        typer.echo(json.dumps({"imported": len(added), "relabelled": relabelled,
                               "snapshot_id": snap}))
    else:
        typer.echo(f"imported {len(added)} labels ({relabelled} relabelled); snapshot {snap}")


@label_app.command("list")
def list_(
    data_dir: DataDir,
    device: Annotated[str | None, typer.Option(help="Only this device.")] = None,
    history: Annotated[bool, typer.Option(help="Every version, superseded ones too.")] = False,
    json_out: Json = False,
) -> None:
    """List the current labels (or their whole history)."""
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
    from rich.table import Table

    table = Table("device", "start", "end", "label", "v", "who", "note")
    for lab in labels:
        table.add_row(lab.device_id, _iso(lab.start_ns), _iso(lab.end_ns), lab.label,
                      str(lab.version) + ("" if lab.current else " (old)"), lab.who, lab.note)
    Console().print(table)


def _iso(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")
