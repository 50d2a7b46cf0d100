"""``edgewise train transfer`` and ``edgewise predict transfer``: a fleet model per device.

The labels of every device train a fleet model; one device's own labels fine-tune it
(:mod:`edgewise.label.fleet_transfer`). Histories come from the store, or from one CSV
with a ``device_id`` column holding every device's rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import DataDir, Json, existing_data_dir, fail
from edgewise.cli.label import _iso
from edgewise.cli.label_train import (
    Csv,
    Device,
    Last,
    Store,
    Window,
    _check_args,
    _with_labels,
    open_history_store,
    read_history_csv,
)
from edgewise.cli.rul import predict_app, train_app


@contextmanager
def _histories(csv: Path | None, store_url: str | None, data_dir: Path,
               ) -> Iterator[Callable[[str], Any]]:
    """A function from a device id to its history, from ``csv`` or the store (opened once)."""
    from edgewise.label.workflow import history_from_store

    if csv is not None:
        from edgewise.tables import read_tables

        try:  # read once: each device's history is taken from the one table
            table = read_tables(csv)
        except ValueError as exc:
            raise fail(f"--csv: {exc}") from None
        if "device_id" not in table[0].columns:
            raise fail(f"--csv {str(csv)!r} has no 'device_id' column; a fleet's histories "
                       f"are one file with a device_id column naming each row's device. "
                       f"Got columns {list(table[0].columns)!r}.")
        said: set[str] = set()  # a column's note once for the file, not once per device
        yield lambda dev: read_history_csv(csv, dev, table=table, said=said)
        return
    store = open_history_store(store_url, data_dir)
    try:
        yield lambda dev: history_from_store(store, dev, max_readings=None, max_metrics=None)
    finally:
        store.close()


def _fleet(value: str | None) -> list[str] | None:
    """``--fleet a,b`` as a list of device ids, each checked."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise fail(f"--fleet must name devices, comma-separated. Got {value!r}.")
    from edgewise.label.fleet_transfer import check_fleet

    for name in names:
        _check_args(name, None, option="--fleet")
    try:  # before any history is read
        check_fleet(names)
    except ValueError as exc:
        raise fail(f"--fleet: {exc}") from None
    return names


@train_app.command("transfer")
def train_transfer_cmd(
    device: Device,
    data_dir: DataDir,
    fleet: Annotated[str | None, typer.Option(
        help="Devices whose labels train the fleet model, comma-separated (default: every "
        "other device with labels).")] = None,
    csv: Csv = None,
    store: Store = None,
    window: Window = None,
    json_out: Json = False,
) -> None:
    """Fit a fleet model on the fleet's labelled windows, fine-tune it on the device's own
    labels, and save it as the device's next transfer model version.

    The fleet model is saved instead when fine-tuning changed nothing, or when the
    fine-tuned one does not beat it on the hold-out (the later half of the device's
    labels, or the earlier where the later cannot measure it; balanced accuracy) by a gain
    chance alone gives at most 5 % of the time (an exact paired test on the windows only
    one of them got right); a fine-tuned model that could not be measured, was kept on a
    hold-out under 30 windows, or flags far more windows than the fleet model, is saved
    with a warning (stderr) saying so."""
    from edgewise.label.fleet_transfer import train_transfer

    _check_args(device, window)
    names = _fleet(fleet)
    existing_data_dir(data_dir)  # the labels are there; a mistyped one is not made
    with _histories(csv, store, data_dir) as histories:
        out = _with_labels(data_dir, lambda labels: train_transfer(
            histories, device, labels, data_dir, fleet=names, window=window))
    if out["warning"]:
        typer.echo(f"warning: {out['warning']}", err=True)
    if json_out:
        typer.echo(json.dumps(out))
        return
    fw, dw, al = out["fleet_windows"], out["device_windows"], out["alarms"]
    typer.echo(f"saved {out['path']} (v{out['version']}, labels {out['snapshot_id']})")
    typer.echo(f"fleet: {', '.join(out['fleet_devices'])} ({fw['normal']} normal, "
               f"{fw['anomaly']} anomalous windows)")
    for dev, why in out["skipped"].items():
        typer.echo(f"  left out {dev}: {why}")
    typer.echo(f"{device}: {dw['normal']} normal, {dw['anomaly']} anomalous windows; "
               f"re-centred {len(out['recentred'])} feature(s), "
               f"{'re-calibrated' if out['recalibrated'] else 'fleet threshold kept'}")
    typer.echo(f"alarms on {device}'s {al['windows']} windows: fleet model {al['fleet']}, "
               f"fine-tuned model {al['fine_tuned']}")
    h = out["holdout"]
    typer.echo(f"hold-out ({h.get('held_out', 'later')} half of its labels): balanced "
               f"accuracy fleet {h['fleet_balanced_accuracy']:.3f}, "
               f"device {h['device_balanced_accuracy']:.3f}"
               f"; F1 fleet {h['fleet_f1']:.3f}, device {h['device_f1']:.3f}; windows only the "
               f"device model got right {int(h['device_only_right'])}, only the fleet model "
               f"{int(h['fleet_only_right'])} (p = {h['paired_p']:.3f})"
               if h else f"hold-out: not measured ({out['holdout_why']})")
    typer.echo(f"saved as {device}'s model: "
               + ("the fine-tuned model" if out["kept"] == "device" else
                  "the fleet model, not fine-tuned")
               + f" ({out['kept_why']})")


@predict_app.command("transfer")
def predict_transfer_cmd(
    device: Device,
    data_dir: DataDir,
    model: Annotated[Path | None, typer.Option(
        help="A transfer model file (default: the device's newest).")] = None,
    csv: Csv = None,
    store: Store = None,
    last: Last = None,
    json_out: Json = False,
) -> None:
    """Score each window of a device's history with its transfer model."""
    from edgewise.cli.label_train import _history
    from edgewise.label.fleet_transfer import load_transfer_model, predict_transfer
    from edgewise.label.workflow import model_files

    _check_args(device, None)
    if model is None:
        existing_data_dir(data_dir)
        files = model_files(data_dir, device, kind="transfer")
        if not files:
            raise fail(f"Device {device!r} has no transfer model in {str(data_dir)!r}; train "
                       f"one with 'edgewise train transfer --device {device}'.")
        model = files[max(files)]
    try:
        record = load_transfer_model(model)
    except ValueError as exc:
        raise fail(f"--model: {exc}") from None
    if record["device_id"] != device:
        raise fail(f"--model {str(model)!r} is {record['device_id']!r}'s transfer model, not "
                   f"{device!r}'s.")
    windows = predict_transfer(_history(device, csv, store, data_dir), record)
    if last is not None:
        windows = windows[-last:]
    if json_out:
        typer.echo(json.dumps({"device_id": device, "model": str(model),
                               "version": record["version"], "windows": windows}))
        return
    for w in windows:
        typer.echo(f"{device}  {_iso(w['start_ns'])} .. {_iso(w['end_ns'])}  "
                   f"{w['decision']:+.3f}  {'ANOMALY' if w['anomaly'] else 'normal'}")
