"""``edgewise quality FILE.csv``: the per-device data-quality report, offline."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgewise.cli._app import Json, app, fail

if TYPE_CHECKING:
    import pandas as pd


_TRUTH = {"true": 1.0, "false": 0.0}


def _numbers(col: pd.Series) -> pd.Series:
    """A column as float numbers: ``true``/``false`` (any case) as 1/0, as the gateway reads
    booleans; a cell that is no number is NaN, which the report counts as invalid.

    >>> import pandas as pd
    >>> _numbers(pd.Series(["1.5", "TRUE", "false", "err", None])).tolist()
    [1.5, 1.0, 0.0, nan, nan]
    """
    import pandas as pd  # here, not at the top: the CLI starts without pandas

    if pd.api.types.is_numeric_dtype(col):  # bool included
        return col.astype(float)
    text = col.astype(str).str.strip()
    truth = text.str.lower().map(_TRUTH)
    return pd.to_numeric(text.where(truth.isna(), truth), errors="coerce").where(col.notna())


def _time_names() -> str:
    """The names :func:`~edgewise.tables.find_time_column` looks for, 'ts' (the old
    default) first.

    >>> _time_names()
    "'ts', 'timestamp', 'time', 'datetime' or 'date'"
    """
    from edgewise.tables import TIME_NAMES

    names = ["ts", *(n for n in TIME_NAMES if n != "ts")]
    return ", ".join(map(repr, names[:-1])) + f" or {names[-1]!r}"


@app.command("quality")
def quality(
    file: Annotated[Path, typer.Argument(help="CSV: long (device, metric, ts, value) or wide.")],
    time_column: Annotated[str | None, typer.Option(
        help="Time column (epoch or RFC 3339). Default: the first column named timestamp, "
             "time, ts, datetime or date (any case), as 'edgewise detect' finds it.")] = None,
    device_column: Annotated[str | None, typer.Option(
        help="Device column; it must be in the file. Default: device_id when the file has "
             "one, else every row is of --device.")] = None,
    metric_column: Annotated[str | None, typer.Option(
        help="Metric column of a long CSV; it must be in the file. Default: metric (a file "
             "with metric and value columns is long, else wide).")] = None,
    value_column: Annotated[str | None, typer.Option(
        help="Value column of a long CSV; it must be in the file. Default: value.")] = None,
    device: Annotated[str, typer.Option(help="Device id when the CSV has no device column.")] = (
        "device"
    ),
    plots: Annotated[str | None, typer.Option(
        metavar="DIR", help="Directory for a PNG per metric with flagged issues (made if "
                            "missing).")] = None,
    json_out: Json = False,
) -> None:
    """Check a CSV of readings; print completeness, validity, duplicates, spikes, stuck runs.

    In a wide file (a column per metric) an empty cell is no reading of that metric, as a
    missing row of a long file; a cell that is no number is an invalid reading. Columns
    named like labels (label, anomaly, is_anomaly, ...) or written by 'edgewise detect'
    (anomaly_score, top_column) are no metrics, as in 'edgewise detect'.
    """
    import numpy as np

    from edgewise.errors import QualityError
    from edgewise.quality.report import fleet_report, metric_issues
    from edgewise.tables import find_time_column, not_a_metric, read_table, time_ns

    if plots is not None and not plots.strip():  # Path("") would be the working directory
        raise fail("--plots must be a folder for the plots (made if missing), e.g. "
                   f"quality-plots; an empty one would mean the working directory. Got {plots!r}.")
    plots_dir = None if plots is None else Path(plots)
    try:  # a missing file, a directory or a binary file is named in one line
        df = read_table(file)
    except QualityError as exc:
        raise fail(str(exc)) from None
    if time_column is None:
        time_column = find_time_column(df)
        if time_column is None:
            raise fail(f"{str(file)!r} has no time column {_time_names()} (any case, as "
                       f"'edgewise detect' finds it); name it with --time-column; columns: "
                       f"{list(df.columns)}")
    elif time_column not in df.columns:
        raise fail(f"{str(file)!r} has no time column {time_column!r}; columns: {list(df.columns)}")
    if device_column is None:
        device_column = "device_id"
        if device_column not in df.columns:  # no device column: one device's file
            df[device_column] = device
    elif device_column not in df.columns:  # a mistyped one merged every device into one
        raise fail(f"--device-column {device_column!r} is not a column of {str(file)!r}; "
                   f"columns: {list(df.columns)}")
    if metric_column is not None or value_column is not None:  # a long file, said so
        missing = [f"{opt} {name!r}" for opt, name in [
            ("--metric-column", metric_column or "metric"),
            ("--value-column", value_column or "value")] if name not in df.columns]
        if missing:  # a typo would have read the file as wide, every column a metric
            raise fail(f"{' and '.join(missing)}: not in {str(file)!r} (a long file needs "
                       f"both a metric and a value column); columns: {list(df.columns)}")
    try:
        df["_ts"] = time_ns(df[time_column])
    except QualityError as exc:
        raise fail(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise fail(f"column {time_column!r} holds no usable times: {exc}") from None
    metric_column, value_column = metric_column or "metric", value_column or "value"
    if metric_column in df.columns and value_column in df.columns:
        long = df.rename(columns={metric_column: "metric", value_column: "value"})
        keep = ["metric", "value", *(["unit"] if "unit" in long.columns else [])]
        long = long[[device_column, "_ts", *keep]]
        long["value"] = _numbers(long["value"])
    else:
        metrics = []
        present = {}  # a blank cell is no reading (as a row left out of a long file)
        for c in df.columns:
            if c in (time_column, device_column, "_ts"):
                continue
            if why := not_a_metric(c):
                typer.echo(f"note: column {c!r} left out of the report: {why}", err=True)
                continue
            values = _numbers(df[c])
            if values.notna().any():
                present[c] = df[c].notna().to_numpy()
                df[c] = values  # a cell that is no number stays, as an invalid reading
                metrics.append(c)
            elif df[c].isna().all():
                typer.echo(f"note: column {c!r} left out of the report: every cell is empty",
                           err=True)
            else:
                typer.echo(f"note: column {c!r} left out of the report: it holds no numbers "
                           f"(row 1 has {df[c].iloc[0]!r})", err=True)
        if not metrics:
            raise fail(f"{str(file)!r} has no numeric metric columns")
        # ids of our own, so that a metric column may be called 'metric' or 'value'
        long = df.melt(id_vars=[device_column, "_ts"], value_vars=metrics,
                       var_name="_metric", value_name="_value")
        long = long[np.concatenate([present[c] for c in metrics])]  # melt's order
        long = long.rename(columns={"_metric": "metric", "_value": "value"})
    long = long.rename(columns={device_column: "device_id", "_ts": "ts_ns"})
    rows = long.to_dict("records")
    report = fleet_report(rows)
    written = []
    if plots_dir is not None:
        from edgewise.quality.plot import plot_issues

        try:
            plots_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(f"--plots {plots!r} cannot be made a directory "
                       f"({exc.strerror or exc}); give a directory you can write to") from None
        for (dev, metric), g in long.groupby(["device_id", "metric"]):
            unit = g["unit"].dropna().iloc[0] if "unit" in g and g["unit"].notna().any() else None
            issues = metric_issues(g["ts_ns"].to_numpy(), g["value"].to_numpy(float), unit)
            if any(m.any() for m in issues["flags"].values()) or issues["gaps"]:
                safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{dev}__{metric}")
                written.append(str(plot_issues(str(dev), str(metric), issues,
                                               plots_dir / f"{safe}.png")))
    if json_out:
        typer.echo(json.dumps({"devices": report, "plots": written}, default=str))
        return
    for dev, rep in report.items():
        s = rep["summary"]
        typer.echo(f"device {dev}: {rep['readings']} readings, completeness "
                   f"{s['completeness']:.3f}, timeliness {s['timeliness']:.3f}, "
                   f"validity {s['validity']:.3f}")
        typer.echo(f"  {'metric':<20} {'n':>7} {'compl':>6} {'valid':>6} {'dup':>4} "
                   f"{'confl':>5} {'spike':>5} {'stuck':>5} {'gaps':>4} {'drift':>6}")
        for name, m in rep["metrics"].items():
            drift = "   -" if m["drift"] is None else f"{m['drift']:>6.2f}"
            typer.echo(f"  {name:<20} {m['readings']:>7} {m['completeness']:>6.3f} "
                       f"{m['validity']:>6.3f} {m['duplicates']:>4} {m['conflicts']:>5} "
                       f"{m['spikes']:>5} {m['stuck']:>5} {m['gaps']:>4} {drift:>6}"
                       + (f"  counter: {m['restarts']} restarts, {m['backwards']} backwards"
                          if m["counter"] else "")
                       + (f"  two-state: {m['transitions']} switches, "
                          f"{m['on_fraction']:.0%} on" if m["binary"] else ""))
    for p in written:
        typer.echo(f"plot: {p}")
