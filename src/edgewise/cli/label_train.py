"""``edgewise label suggest`` and ``edgewise train --with-labels``: the labelling loop."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from edgewise.cli._app import DataDir, Json, existing_data_dir, fail
from edgewise.cli.label import _iso, label_app
from edgewise.cli.rul import predict_app, train_app

Device = Annotated[str, typer.Option("--device", help="The device.")]
Csv = Annotated[Path | None, typer.Option(
    "--csv", help="Read the device's history from this CSV (timestamp + one column per "
    "metric) instead of the store.")]
Store = Annotated[str | None, typer.Option(
    "--store", envvar="EDGEWISE_STORE",
    help="Store URL (default duckdb under the data dir).")]
Last = Annotated[int | None, typer.Option(min=1, help="Print only the last N windows.")]
Window = Annotated[int | None, typer.Option(
    help="Readings per window (default: history length / 100, at least 10).")]
T = TypeVar("T")


def read_history_csv(csv: Path, device: str, table: Any = None,
                     said: set[str] | None = None):
    """``load_history_csv`` for a CLI: a column it leaves out (every cell empty, or named
    like a label) is said in one ``note:`` line on stderr, not as a Python warning with a
    source line, as ``edgewise detect`` and ``quality`` say it. ``table`` is the file already
    read (:func:`~edgewise.tables.read_tables`' numbers and cells), where a fleet's
    histories are taken from one file; ``said`` holds the notes already printed for it
    (each is printed once, not once per device)."""
    import warnings

    from edgewise.label.workflow import history_from_table
    from edgewise.tables import not_a_metric, read_tables

    if table is None:
        table = read_tables(csv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        history = history_from_table(table[0], f"History CSV {str(csv)!r}", device_id=device,
                                     cells=table[1])
    notes = [str(w.message) for w in caught]
    # no time column is named like a label, a detect output or nothing (not_a_metric), so
    # none is told apart here: the history's reader found it by its name
    notes += [f"History CSV {str(csv)!r}: column {c!r} left out of the metrics: {why}."
              for c in table[0].columns if c != "device_id" and (why := not_a_metric(c))]
    said = set() if said is None else said
    for note in notes:
        if note not in said:
            said.add(note)
            typer.echo(f"note: {note}", err=True)
    return history


def _history(device: str, csv: Path | None, store_url: str | None, data_dir: Path):
    from edgewise.label.workflow import history_from_store

    if csv is not None:
        try:  # a missing file, a directory or a binary file is named in one line
            return read_history_csv(csv, device)
        except ValueError as exc:
            raise fail(f"--csv: {exc}") from None
    from edgewise.errors import InvalidParameterError

    store = open_history_store(store_url, data_dir)
    try:
        # the whole history, as a --csv is read (the HTTP label queue reads a capped one)
        return history_from_store(store, device, max_readings=None, max_metrics=None)
    except InvalidParameterError as exc:  # which devices it does hold (pump-01, not pump-1)
        held = sorted(d.device_id for d in store.devices())
        raise fail(f"{exc} " + (f"The store holds readings of {', '.join(held[:8])}"
                                f"{' ...' if len(held) > 8 else ''}." if held else
                                "The store holds no readings yet.")) from None
    finally:
        store.close()


def open_history_store(store_url: str | None, data_dir: Path) -> Any:
    """The store histories are read from: ``--store``, else the data dir's DuckDB file. A
    store that is not there is refused in one line, not created empty to read from."""
    from edgewise.cli.rul import open_existing_store

    if store_url is None:
        path = (data_dir / "edgewise.duckdb").absolute()
        if not path.is_file():
            raise fail(f"No store at {str(path)!r} (--data-dir {str(data_dir)!r}); pass the "
                       "data dir the gateway runs with, --store URL, or --csv FILE.")
        store_url = f"duckdb://{path}"  # path is absolute: duckdb:///D/..., not ////
    return open_existing_store(store_url, "--store")


def _check_args(device: str, window: int | None, strategy: str | None = None, *,
                option: str = "--device") -> None:
    """Refuse a device id, window or strategy that cannot be right, naming the option,
    before any history is read (they failed later under internal names, or not at all: a
    bad device id went into the mix state)."""
    from edgewise.label.strategies import STRATEGIES
    from edgewise.telemetry import validate_device_id

    try:
        validate_device_id(device)
    except ValueError:
        raise fail(f"{option} must be a device id: 1-64 letters, digits, '_', '.', '-', "
                   f"starting with a letter or digit. Got {device!r}.") from None
    if window is not None and window < 2:
        raise fail(f"--window must be at least 2 readings. Got {window}.")
    if strategy is not None and strategy not in STRATEGIES:
        raise fail(f"--strategy must be one of {', '.join(STRATEGIES)}. Got {strategy!r}.")


def _with_labels(data_dir: Path, call: Callable[[Any], T]) -> T:
    """Run ``call(labels)`` on the data dir's label store; a ValueError becomes one clear line."""
    from edgewise.label.store import LabelStore

    labels = LabelStore(data_dir)
    try:
        return call(labels)
    except ValueError as exc:
        raise fail(str(exc)) from None
    finally:
        labels.close()


def _deletions_now(data_dir: Path) -> Any:
    """The label store's deletion counts as of now (:meth:`~edgewise.label.store.LabelStore.
    deletions`), noted before a device's history is read: a deletion of the device landing
    while it is read or fitted then refuses what the work writes at its end (its mix state,
    its models). None counted where the data dir has no label store yet."""
    from edgewise.label.store import Deletions, LabelStore

    if not (data_dir / "labels.sqlite").is_file():
        return Deletions({})
    with LabelStore(data_dir) as labels:
        return labels.deletions()


@label_app.command("suggest")
def suggest_cmd(
    device: Device,
    data_dir: DataDir,
    k: Annotated[int, typer.Option("-k", min=1, help="How many windows to propose.")] = 10,
    strategy: Annotated[str, typer.Option(
        help="mix, uncertainty, top, disagreement, diversity, novelty or random.")] = "mix",
    csv: Csv = None,
    store: Store = None,
    window: Window = None,
    json_out: Json = False,
) -> None:
    """Propose the next K windows of a device's history to label."""
    from edgewise.label.workflow import suggest

    _check_args(device, window, strategy)
    since = _deletions_now(data_dir)
    hist = _history(device, csv, store, data_dir)
    if not data_dir.exists():  # only with --csv: a store is refused unless it is there
        typer.echo(f"note: --data-dir {str(data_dir)!r} did not exist; made it for the label "
                   "store (labels, and what 'label suggest' asked). Mistyped? Delete it and "
                   "pass the data dir your labels are in.", err=True)
    items = _with_labels(data_dir, lambda labels: suggest(
        hist, device, labels, k=k, strategy=strategy, window=window, since=since))
    if not items:  # nothing to print else: say why, beside the JSON's []
        typer.echo(f"note: every window of {device!r}'s history is labelled; nothing to "
                   f"suggest. Train with them: edgewise train --with-labels --device "
                   f"{device}", err=True)
    if json_out:
        typer.echo(json.dumps(items))
        return
    for it in items:
        typer.echo(f"{it['device_id']}  {_iso(it['start_ns'])} .. {_iso(it['end_ns'])}  "
                   f"score {it['score']:.3f}  {'ALARM' if it['alarm'] else 'quiet'}")


_TRAIN_HELP = """Train batch models from histories.

'train rul', 'train forecast' and 'train transfer' take their own options after their name
(edgewise train transfer --data-dir DIR …). The options below are for 'train --with-labels
--device D' without a subcommand: a device's thresholds and pattern memory from its labels,
and a fault-type classifier when fault classes are labelled; given before a subcommand
they are refused."""


@train_app.callback(invoke_without_command=True, help=_TRAIN_HELP)
def train_cmd(
    ctx: typer.Context,
    data_dir: DataDir,
    device: Annotated[str | None, typer.Option(
        "--device", help="The device (with --with-labels).")] = None,
    with_labels: Annotated[bool, typer.Option(
        "--with-labels", help="Train the label-aware models from the label store.")] = False,
    csv: Csv = None,
    store: Store = None,
    window: Window = None,
    json_out: Json = False,
) -> None:
    """Train models (the help is :data:`_TRAIN_HELP`): a subcommand, or with
    --with-labels --device D a device's label-aware models."""
    if ctx.invoked_subcommand is not None:
        _no_group_options(ctx)
        return
    from edgewise.label.workflow import train_with_labels

    if with_labels and device is None:
        raise fail("--with-labels trains one device's label-aware models: give --device D "
                   "with it, e.g. 'edgewise train --with-labels --device pump-1'.")
    if not with_labels or device is None:
        raise fail("Say what to train: 'edgewise train rul …', or "
                   "'edgewise train --with-labels --device D'.")
    _check_args(device, window)
    since = _deletions_now(data_dir)
    hist = _history(device, csv, store, data_dir)
    # labels live in the data dir: a mistyped one has none, and must not get a label store
    # and models/ made there (with --csv nothing else refuses it); checked after the CSV,
    # whose own faults are said first
    existing_data_dir(data_dir)
    out = _with_labels(data_dir, lambda labels: train_with_labels(
        hist, device, labels, data_dir, window=window, since=since))
    if json_out:
        typer.echo(json.dumps(out))
        return
    typer.echo(f"saved {out['path']} (v{out['version']}, labels {out['snapshot_id']}, "
               f"{out['n_labels']} labelled windows); alarms {out['alarms_before']} -> "
               f"{out['alarms_after']}" + (f"; fault classes {', '.join(out['classes'])}"
                                           if out["classes"] else ""))


def _no_group_options(ctx: typer.Context) -> None:
    """Refuse, in one line, an option of ``train`` itself given on the command line before
    a subcommand (``train --data-dir DIR transfer``, ``train --json forecast``): they are
    ``train --with-labels``'s, and the subcommand ran without them (another data dir,
    text instead of JSON). Values from the environment (EDGEWISE_DATA_DIR) are not given
    here, and the subcommand reads them itself."""
    import click
    from click.core import ParameterSource

    sub_name = ctx.invoked_subcommand or ""
    group = ctx.command
    sub = group.get_command(ctx, sub_name) if isinstance(group, click.Group) else None
    sub_opts = {o for p in (sub.params if sub is not None else []) for o in p.opts}
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name or "") is not ParameterSource.COMMANDLINE:
            continue
        flag = param.opts[0]
        if flag in sub_opts:
            raise fail(f"{flag} given before {sub_name!r} is an option of 'train --with-labels' "
                       f"and would be ignored; give {flag} after {sub_name!r}: edgewise train "
                       f"{sub_name} {flag} …")
        raise fail(f"{flag} is an option of 'train --with-labels' (without a subcommand); "
                   f"'train {sub_name}' takes none: see edgewise train {sub_name} --help")


@predict_app.command("labels")
def predict_labels_cmd(
    device: Device,
    data_dir: DataDir,
    csv: Csv = None,
    store: Store = None,
    last: Last = None,
    json_out: Json = False,
) -> None:
    """Score each window of a device's history with its newest label model (saved by
    'train --with-labels'): time span, alarm, score and fault class."""
    from edgewise.label.workflow import load_model, model_files, predict_with_labels

    _check_args(device, None)
    files = model_files(existing_data_dir(data_dir), device)
    if not files:
        raise fail(f"Device {device!r} has no label model in {str(data_dir)!r}; train one "
                   f"with 'edgewise train --with-labels --device {device}'.")
    path = files[max(files)]
    try:
        record = load_model(path)
        if record["device_id"] != device:  # before reading the history
            raise fail(f"{str(path)!r} is {record['device_id']!r}'s label model, not "
                       f"{device!r}'s.")
        windows = predict_with_labels(_history(device, csv, store, data_dir), record,
                                      device_id=device)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if last is not None:
        windows = windows[-last:]
    if json_out:
        typer.echo(json.dumps({"device_id": device, "model": str(path),
                               "version": record["version"],
                               "label_snapshot_id": record.get("label_snapshot_id"),
                               "windows": windows}))
        return
    for w in windows:
        typer.echo(f"{device}  {_iso(w['start_ns'])} .. {_iso(w['end_ns'])}  "
                   f"alarm {'yes' if w['alarm'] else 'no '}  score {w['score']:.3f}"
                   + (f"  fault {w['fault']}" if w["fault"] else ""))
