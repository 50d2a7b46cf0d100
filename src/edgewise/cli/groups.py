"""``edgewise groups``: which devices behave alike, what sets each group apart, odd ones out.

Histories come from a gateway's store (``--data``: a gateway data dir holding
``edgewise.duckdb``, or a store URL) or from CSV (``--csv``): a long file (device, time,
metric, value columns), a wide file with a device column (one column per metric), or a
folder of wide files, one per device (the device id is the file name without ``.csv``).
The groups are fitted by :class:`~edgewise.models.cluster.BehaviourGroups`; ``--save``
writes the model, and ``--model`` assigns the devices to the groups of a saved model
instead of fitting new ones.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgewise.cli._app import Json, NonBlankPath, app, fail

if TYPE_CHECKING:
    import pandas as pd

#: --seed bounds (BehaviourGroups' random_state)
SEED_MAX = 2**31 - 1
METHODS = ("kmeans", "agglomerative", "gmm")
#: BehaviourGroups' parameters and the flags that set them
FLAGS = {"n_groups": "--groups", "max_groups": "--max-groups", "method": "--method",
         "reference": "--reference", "random_state": "--seed"}


def in_flags(message: str) -> str:
    """A BehaviourGroups refusal in the words the user typed: the flag, not the parameter.

    >>> in_flags("The 'max_groups' parameter of BehaviourGroups must be an int in the range "
    ...          "[2, inf). Got 1 instead.")
    '--max-groups must be an int in the range [2, inf). Got 1 instead.'
    >>> in_flags("Device 'a' has no finite reading.")
    "Device 'a' has no finite reading."
    """
    def flag(m: re.Match[str]) -> str:
        return FLAGS.get(m.group(1), m.group(0))

    return re.sub(r"The '(\w+)' parameter of BehaviourGroups", flag, message)


def _store_histories(data: str, devices: str | None) -> dict[str, pd.DataFrame]:
    from edgewise.cli.rul import _store_url, open_existing_store
    from edgewise.models.cluster import histories_from_store

    url = _store_url(data)
    if url is None:
        raise fail(f"--data {data!r} is neither a gateway data dir (a folder holding "
                   "edgewise.duckdb) nor a store URL (duckdb:///PATH, postgresql://...); for "
                   "a CSV file use --csv")
    store = open_existing_store(url)
    try:
        known = sorted(d.device_id for d in store.devices())
        wanted = [d.strip() for d in devices.split(",") if d.strip()] if devices else known
        if devices is not None and not wanted:  # not "needs at least 2 devices. Got 0"
            raise fail(f"--devices {devices!r} names no device: give comma-separated device "
                       "ids (e.g. pump-1,pump-2), or leave it out for every device")
        unknown = [d for d in wanted if d not in known]
        if unknown:
            raise fail(f"--devices: {unknown} not in the store; it holds {known[:20]}")
        return histories_from_store(store, wanted)
    finally:
        store.close()


def _frame_histories(df: pd.DataFrame, cells: pd.DataFrame, where: str,
                     device: str | None, time_column: str | None,
                     clock_name: str | None = None) -> dict[str, pd.DataFrame]:
    """Histories from one table: long (metric and value columns) or wide; one device
    (``device``) when the table has no device column."""
    import numpy as np
    import pandas as pd

    from edgewise.cli.quality import _ids, _numbers, default_device_column
    from edgewise.errors import InvalidParameterError, QualityError
    from edgewise.tables import (
        date_and_clock,
        find_time_column,
        named_clock,
        not_a_metric,
        time_cells,
        time_ns,
    )

    time_column = time_column or find_time_column(df)
    if time_column is None or time_column not in df.columns:
        raise fail(f"{where} has no time column {time_column or ''!r} (looked for timestamp, "
                   f"time, ts, datetime or date; name it with --time-column); columns: "
                   f"{list(map(str, df.columns))}")
    try:  # date,time: one time together, as detect reads it (or the --clock-column named)
        clock = named_clock(df, time_column, clock_name, where)
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None
    try:
        ts = time_ns(time_cells(df, cells, time_column) if clock is None
                     else date_and_clock(df, time_column, clock))
    except (QualityError, ValueError, TypeError) as exc:
        raise fail(f"{where}: column {time_column!r} holds no usable times: {exc}") from None
    index = pd.to_datetime(np.asarray(ts, dtype=np.int64), unit="ns", utc=True)
    dev_col = default_device_column(list(df.columns))  # as 'edgewise quality' takes it
    ids = (_ids(cells[dev_col], dev_col, "device id", Path(where)) if dev_col
           else pd.Series([device or Path(where).stem] * len(df)))
    if "metric" in df.columns and "value" not in df.columns:
        raise fail(f"{where} has a 'metric' column but no 'value' column (columns: "
                   f"{list(map(str, df.columns))}); a long file needs device_id, time, metric "
                   "and value columns: rename its reading column to 'value'")
    if "metric" in df.columns:
        long = pd.DataFrame({"device": ids.to_numpy(), "metric": _ids(
            cells["metric"], "metric", "metric", Path(where)).to_numpy(),
            "value": _numbers(df["value"]).to_numpy()}, index=index)
        _refuse_text(df, long[["value"]], where)
        _long_repeats(long, where)
        # every metric a device names stays a column, one without a number too (else a
        # device whose values are all text is refused as having no columns at all)
        return {str(d): g.pivot_table(index=g.index, columns="metric", values="value",
                                      aggfunc="mean").reindex(columns=sorted(set(g["metric"])))
                .rename_axis(None, axis=1)
                for d, g in long.groupby("device", sort=True)}
    metrics = [c for c in df.columns if c not in (time_column, clock, dev_col)
               and not not_a_metric(str(c))]
    wide = pd.DataFrame({str(c): _numbers(df[c]).to_numpy() for c in metrics}, index=index)
    # a column with no number at all (a site name) stays as before: a metric never read
    _refuse_text(df, wide.loc[:, wide.notna().any().to_numpy()], where)
    # two rows of one device at one time that both hold a metric: a few are a logger's
    # repeat (NAB's AWS files repeat the hour a clock went back), averaged and said; many
    # are a long file misread as wide, or two devices under one id: refused
    held = wide.notna().set_axis(pd.MultiIndex.from_arrays([ids.to_numpy(), index]))
    twice = (held.groupby(level=[0, 1]).sum() > 1).any(axis=1)
    out: dict[str, pd.DataFrame] = {}
    for d, g in wide.groupby(ids.to_numpy(), sort=True):
        times = twice.loc[d]
        n = int(times.sum())
        if n:
            _repeats(where, str(d), n, len(times), f"(the first {times.idxmax().isoformat()})",
                     "a wide file holds one row per device and time (a long file: device_id, "
                     "time, metric and value columns)")
            g = g.groupby(level=0).mean()
        out[str(d)] = g
    return out


def _refuse_text(df: pd.DataFrame, numbers: pd.DataFrame, where: str) -> None:
    """Refuse, in one line naming the row (and its line in the file), the column and the
    cell, the first cell of ``df`` that holds text where ``numbers`` (columns of ``df``
    read by :func:`~edgewise.cli.quality._numbers`, positionally aligned) has no number: a
    typo or a logger's error text was read as a missing reading without a word, as
    ``train forecast`` and ``label suggest`` refuse it. An empty cell, or one pandas reads
    as missing (``nan``, ``NA``, ``null``), stays a missing reading."""
    import numpy as np

    from edgewise.tables import text_cells

    first: tuple[int, str] | None = None
    for c in numbers.columns:
        bad = text_cells(df[c], numbers[c])  # positionally: numbers is indexed by time
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            if first is None or i < first[0]:
                first = (i, str(c))
    if first is None:
        return
    i, c = first
    raise fail(f"{where}: column {c!r} must hold numbers; row {i + 1} (line {i + 2} of the "
               f"file) has {str(df[c].iloc[i])!r}. Leave the cell empty where there is no "
               "reading, or write the number.")


def _long_repeats(long: pd.DataFrame, where: str) -> None:
    """Refuse, as a wide file's are, a long file's device holding more than one number of
    one metric at one time at more than 1 % of its times (two devices under one id: their
    readings were averaged into one device between them, without a word); say so, once per
    device, where fewer are (a logger's repeat: their mean is used)."""
    import pandas as pd

    numbered = long[long["value"].notna()]
    keys = pd.DataFrame({"device": numbered["device"].to_numpy(),
                         "metric": numbered["metric"].to_numpy(),
                         "time": numbered.index})
    repeated = keys[keys.duplicated(["device", "metric", "time"], keep=False)]
    if repeated.empty:
        return
    times = pd.Series(long.index).groupby(long["device"].to_numpy()).nunique()
    for d, g in repeated.groupby("device", sort=True):
        n, first = int(g["time"].nunique()), g.sort_values(["time", "metric"]).iloc[0]
        _repeats(where, str(d), n, int(times[d]),
                 f"(the first: metric {str(first['metric'])!r} at {first['time'].isoformat()})",
                 "a long file holds one row per device, metric and time (two devices under "
                 "one id would be averaged into one that is neither): give each device its "
                 "own id")


def _repeats(where: str, device: str, n: int, times: int, first: str, layout: str) -> None:
    """Refuse a device holding more than one reading of a metric at ``n`` of its ``times``
    times (``first``: where the first is) when that is more than 1 % of them (two devices
    under one id, or a long file misread as wide; ``layout``: what the file should hold),
    else say so in a note (a logger's repeat, as NAB's AWS files repeat the hour a clock
    went back: their mean is used)."""
    if n > max(1, times // 100):
        raise fail(f"{where}: device {device!r} has more than one reading of a metric at {n} "
                   f"of its {times} times {first}; {layout}")
    typer.echo(f"note: {where}: device {device!r} has more than one reading of a metric at "
               f"{n} time(s) {first}; their mean is used", err=True)


def _csv_histories(path: Path, time_column: str | None,
                   clock: str | None = None) -> dict[str, pd.DataFrame]:
    from edgewise.errors import QualityError
    from edgewise.tables import read_tables

    files = ([path] if not path.is_dir()
             else sorted([*path.glob("*.csv"), *path.glob("*.csv.gz")]))
    if not files:
        raise fail(f"--csv {str(path)!r} is a folder with no *.csv or *.csv.gz files; give a "
                   "CSV file, or a folder of one CSV per device")
    out: dict[str, pd.DataFrame] = {}
    for f in files:
        try:
            df, cells = read_tables(f, "--csv")
        except QualityError as exc:
            raise fail(str(exc)) from None
        name = f.name.removesuffix(".gz").removesuffix(".csv")
        got = _frame_histories(df, cells, f"--csv {str(f)!r}", name, time_column, clock)
        twice = sorted(set(got) & set(out))
        if twice:
            raise fail(f"--csv {str(path)!r}: device {twice[0]!r} is in more than one file; "
                       "give each device's history in one file")
        out.update(got)
    return out


def _table(summary: dict[str, Any], assigned: pd.DataFrame | None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from edgewise.models._words import and_more
    from edgewise.models.cluster import MAX_MAGNITUDE

    console = Console()
    if assigned is not None:
        t = Table(title="Devices assigned to the saved groups")
        for col in ("device", "group", "odd score", "odd one out: why"):
            t.add_column(col)
        for device, row in assigned.iterrows():
            t.add_row(escape(str(device)), str(row["group"]), f"{row['odd_score']:.2f}",
                      escape(row["why"]) if row["odd"] else "")
        console.print(t)
        return
    t = Table(title=f"{summary['n_groups']} group(s) of {summary['n_devices']} devices")
    for col in ("group", "devices", "members", "what sets it apart"):
        t.add_column(col)
    for g in summary["groups"]:
        members = ", ".join(g["members"][:8]) + (" ..." if len(g["members"]) > 8 else "")
        traits = "\n".join(x["text"] for x in g["traits"]) or (
            "the whole fleet: nothing separates it" if summary["n_groups"] == 1 else "-")
        t.add_row(str(g["group"]), str(g["size"]), escape(members), escape(traits))
    console.print(t)
    if summary.get("fewer_groups"):  # --groups asked for more than could be made: why
        console.print(f"note: {escape(summary['fewer_groups'])}")
    if summary["odd_ones_out"]:
        o = Table(title="Odd ones out (fit no group)")
        for col in ("device", "nearest group", "odd score", "furthest from its group in"):
            o.add_column(col)
        for d in summary["odd_ones_out"]:
            o.add_row(escape(d["device"]), str(d["nearest_group"]), f"{d['odd_score']:.2f}",
                      escape(d["why"]))
        console.print(o)
    else:
        console.print("No odd ones out.")
    for m, why in summary["left_out"].items():
        console.print(f"note: metric {escape(m)!r} left out: {escape(why)}")
    devices_out = list(summary.get("left_out_devices", {}).items())
    for d, why in devices_out[:10]:
        console.print(f"note: device {escape(d)!r} left out (in no group): {escape(why)}")
    if len(devices_out) > 10:
        console.print(f"note:{and_more(len(devices_out), 10, 'device(s)')} left out likewise")
    aside = summary.get("set_aside", {})
    if aside:
        total = sum(n for per in aside.values() for n in per.values())
        shown = ", ".join(f"{d} {m} {n}" for d, per in list(aside.items())[:5]
                          for m, n in sorted(per.items()))
        more = and_more(len(aside), 5, "device(s)")
        console.print(f"note: {total} reading(s) past +-{MAX_MAGNITUDE:g} set aside (no "
                      f"reading comes near it: a 'no value' sentinel?): {escape(shown)}{more}")
    if summary["missing"]:
        lacking = list(summary["missing"].items())[:5]
        console.print(f"note: {len(summary['missing'])} device(s) lack a used metric (each "
                      "is grouped by the metrics it sends): " + escape(", ".join(
                          f"{d} ({', '.join(ms)})" for d, ms in lacking)))


@app.command("groups")
def groups(
    data: Annotated[str | None, typer.Option(
        help="A gateway data dir (holding edgewise.duckdb) or a store URL: duckdb:///PATH, "
        "postgresql://...")] = None,
    csv: Annotated[Path | None, typer.Option(
        "--csv", help="A CSV file (long: device,time,metric,value; or wide with a device "
        "column) or a folder of one wide CSV per device.",
        # blank: Path("") is the working directory, read as a folder of CSVs
        click_type=NonBlankPath("a CSV file or a folder of CSVs, e.g. fleet.csv"))] = None,
    devices: Annotated[str | None, typer.Option(
        help="Store only: comma-separated devices (default: all).")] = None,
    time_column: Annotated[str | None, typer.Option(
        help="CSV time column (default: timestamp, time, ts, datetime or date).")] = None,
    clock_column: Annotated[str | None, typer.Option(
        "--clock-column", help="CSV: the time of day joined to the date in --time-column "
        "(Datum,Zeit: --time-column Datum --clock-column Zeit), as 'edgewise detect' takes "
        "it; a 'time' column beside a 'date' one is joined without it.")] = None,
    n_groups: Annotated[int | None, typer.Option(
        "--groups", help="Number of groups (default: chosen; 1 when nothing separates the "
        "fleet).")] = None,
    max_groups: Annotated[int, typer.Option(help="Most groups tried when choosing.")] = 8,
    method: Annotated[str, typer.Option(help=f"One of {', '.join(METHODS)}.")] = "kmeans",
    reference: Annotated[str | None, typer.Option(
        help="A metric (e.g. speed_rpm) at whose fleet-median level the others are compared "
        "(\"vibration at the same speed\").")] = None,
    seed: Annotated[int, typer.Option(help=f"Random seed, 0 to {SEED_MAX}.")] = 0,
    # blank: Path("") is the working directory ("Got '.', which is a directory")
    save: Annotated[Path | None, typer.Option(
        help="Write the fitted groups model here.",
        click_type=NonBlankPath("a file to write, e.g. groups.json"))] = None,
    model: Annotated[Path | None, typer.Option(
        help="A saved groups model: assign the devices to its groups instead of fitting.",
        click_type=NonBlankPath("a groups model file 'edgewise groups --save' wrote, "
                                "e.g. groups.json"))] = None,
    json_out: Json = False,
) -> None:
    """Group devices that behave alike; say what sets each group apart; list odd ones out."""
    from edgewise.errors import EdgewiseError

    if data is not None and not data.strip():  # Path("") would be the working directory
        raise fail(f"--data must be a gateway data dir or a store URL, e.g. "
                   f"~/.local/share/edgewise; an empty one would mean the working directory. "
                   f"Got {data!r}.")
    if (data is None) == (csv is None):
        raise fail("give exactly one of --data (a gateway data dir or store URL) and --csv "
                   f"(a CSV file or folder); got {'both' if data else 'neither'}")
    if not 0 <= seed <= SEED_MAX:
        raise fail(f"--seed {seed}: must be a whole number from 0 to {SEED_MAX}")
    if method not in METHODS:
        raise fail(f"--method must be one of {', '.join(METHODS)}. Got {method!r}.")
    if n_groups is not None and n_groups < 1:
        raise fail(f"--groups must be a whole number of at least 1. Got {n_groups}.")
    if model is not None and save is not None:
        raise fail("--save writes a newly fitted model and --model assigns to a saved one; "
                   "give one of them")
    if model is not None:
        fitting = [flag for flag, given in (
            (f"--groups {n_groups}", n_groups is not None),
            (f"--reference {reference}", reference is not None),
            (f"--max-groups {max_groups}", max_groups != 8),
            (f"--method {method}", method != "kmeans"),
            (f"--seed {seed}", seed != 0)) if given]
        if fitting:
            raise fail(f"{', '.join(fitting)} set how groups are fitted, but --model assigns "
                       "the devices to the groups a saved model already has (fitted with its "
                       "own options); drop them, or fit anew without --model")
    if model is not None and not model.is_file():
        raise fail(f"--model {str(model)!r} is not a file; give a file 'edgewise groups "
                   "--save' wrote")
    if save is not None:
        from edgewise.cli._app import out_path
        from edgewise.cli.rul import data_input

        out_path("--save", str(save), folder=False, example="groups.json",
                 inputs=[("--csv", csv), ("--data", data_input(data))])
    if devices and data is None:
        raise fail("--devices applies to store data (--data) only")
    for flag, given in (("--time-column", time_column), ("--clock-column", clock_column)):
        if given is not None and csv is None:
            raise fail(f"{flag} {given!r} applies to CSV data (--csv) only: a store's "
                       "readings carry their times; drop it")
    if csv is not None and not csv.exists():
        raise fail(f"--csv {str(csv)!r} does not exist")
    hist = _store_histories(data, devices) if data is not None else _csv_histories(
        csv, time_column, clock_column)  # type: ignore[arg-type]
    try:
        if model is not None:
            from edgewise.models.cluster import load_groups

            assigned = load_groups(model).assign(hist)
            if json_out:
                typer.echo(json.dumps({"assigned": [
                    {"device": d, "group": int(r["group"]), "odd_score": round(float(
                        r["odd_score"]), 3), "odd": bool(r["odd"]), "why": r["why"]}
                    for d, r in assigned.iterrows()]}))
            else:
                _table({}, assigned)
            return
        from edgewise.models.cluster import BehaviourGroups

        fitted = BehaviourGroups(n_groups=n_groups, max_groups=max_groups, method=method,
                                 reference=reference, random_state=seed).fit(hist)
        summary = fitted.summary()
        if save is not None:
            # out_path checked that its folder can be made (it promises that it is)
            save.parent.mkdir(parents=True, exist_ok=True)
            size = fitted.save(save)
            summary["saved"] = {"path": str(save), "bytes": size}
    except EdgewiseError as exc:
        raise fail(in_flags(str(exc))) from None
    except OSError as exc:
        raise fail(f"--save {str(save)!r} cannot be written: {exc.strerror or exc}") from None
    if json_out:
        typer.echo(json.dumps(summary, allow_nan=False, default=str))
        return
    _table(summary, None)
    if save is not None:
        typer.echo(f"saved the groups model to {save} ({summary['saved']['bytes']} bytes)")
