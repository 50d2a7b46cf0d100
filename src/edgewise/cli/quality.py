"""``edgewise quality FILE.csv``: the per-device data-quality report, offline."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgewise.cli._app import UTF8_TEXT, Json, app, fail

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


def _ids(cells: pd.Series, column: str, what: str, file: Path) -> pd.Series:
    """The ids in ``cells``, column ``column`` of ``file`` as written there (the text view
    of :func:`~edgewise.tables.read_tables`), spaces around them dropped: ``007`` and
    ``7``, ``1`` and ``1.0``, or two 17-digit ids are two devices (or metrics), and ``NA``
    is an id, never a number. An empty cell is refused in one line naming the row and the
    column (``what`` says what it should hold).

    >>> import pandas as pd
    >>> _ids(pd.Series(["007", " 7", "NA"]), "device_id", "device id", Path("r.csv")).tolist()
    ['007', '7', 'NA']
    """
    ids = cells.astype(object).where(cells.notna(), "").astype(str).str.strip()
    empty = (ids == "").to_numpy()
    if empty.any():
        i = int(empty.argmax())
        raise fail(f"{str(file)!r} row {i + 1} has no {what} in column {column!r} (the cell "
                   f"is empty); write the {what} in every row of that column.")
    return ids


def _written(cells: pd.Series) -> pd.Series:
    """Whether each cell of a wide file's metric column (as written: the text view of
    :func:`~edgewise.tables.read_tables`) holds something: only a blank one is no reading.
    ``NaN``, ``NA`` or ``null`` is a reading that is no number, an invalid one, as the same
    cell in a long file's value column; pandas reads them as missing, which lost them.

    >>> import pandas as pd
    >>> _written(pd.Series(["1.5", "", " ", "NaN", "null", None])).tolist()
    [True, False, False, True, True, False]
    """
    return cells.astype(object).where(cells.notna(), "").astype(str).str.strip() != ""


#: Longest readable part of a plot's file name (before the hash and ``.png``).
_NAME_CHARS = 100


def _check_zone(tz: str, plots: str | None) -> None:
    """Refuse, in one line before anything is read, a ``--tz`` that is no IANA zone or
    that comes without ``--plots`` (only the plots have a time axis)."""
    from edgewise.quality.plot import time_zone

    if plots is None:
        raise fail(f"--tz {tz!r} sets the plots' time axis; give --plots DIR with it, or "
                   "leave --tz out (the report's times are UTC)")
    try:
        time_zone(tz)
    except ValueError:
        raise fail(f"--tz {tz!r} is no IANA time zone; give one such as UTC, "
                   "Europe/Berlin or America/New_York") from None


def _plot_name(device: str, metric: str, taken: set[str]) -> str:
    """The file name of the plot of ``(device, metric)``: ``DEVICE__METRIC.png`` where that
    is made of ``[A-Za-z0-9_.-]`` alone and not yet ``taken`` (any case: file systems that
    ignore case); else its readable part (other characters as ``_``) and a short hash of
    the real pair, so that ``温度`` and ``湿度``, or devices ``a/b`` and ``a_b``, never
    share a file. The name is added to ``taken``.

    >>> taken: set[str] = set()
    >>> _plot_name("pump-1", "temp", taken), _plot_name("a/b", "t", taken)
    ('pump-1__temp.png', 'a_b__t-09b622fb.png')
    >>> _plot_name("a_b", "t", taken)
    'a_b__t.png'
    """
    name = f"{device}__{metric}"
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:_NAME_CHARS]
    file = f"{safe}.png"
    if safe != name or file.lower() in taken:
        digest = hashlib.sha256(f"{device}\0{metric}".encode()).hexdigest()
        stem = f"{safe}-{digest[:8]}"
        file, n = f"{stem}.png", 1
        while file.lower() in taken:  # a clash of hashes, or a name that looks like one
            n += 1
            file = f"{stem}-{n}.png"
    taken.add(file.lower())
    return file


def _json_ready(value: Any) -> Any:
    """``value`` with every float that is not finite as ``None`` (JSON's ``null``: NaN and
    Infinity are no JSON) and numpy scalars as Python numbers, in dicts, lists and tuples.

    >>> import numpy as np
    >>> _json_ready({"drift": float("nan"), "n": [np.int64(3), float("-inf"), 1.5]})
    {'drift': None, 'n': [3, None, 1.5]}
    """
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _drift_cell(d: float | None) -> str:
    """A drift score as the table's 6-wide column: two decimals up to 999.99, then in
    powers of ten (a score of a flat series that shifted is 1e+299: 300 digits pushed the
    row apart), and ``-`` where it is unknown or has no meaning (``None``: too few
    readings, a counter, a two-state series).

    >>> _drift_cell(1.234), _drift_cell(8.65e9), _drift_cell(1.7e308), _drift_cell(None)
    ('  1.23', ' 9e+09', '2e+308', '   -')
    """
    if d is None or not math.isfinite(d):
        return "   -"
    return f"{d:>6.2f}" if abs(d) < 999.995 else f"{d:>6.0e}"


def _unchanged_note(m: dict[str, Any]) -> str:
    """The table's note on a metric whose valid readings never changed (the report's
    ``unchanged``): its whole run stuck where it is long enough to be (20 readings or more),
    else too short to call stuck; a frozen sensor and a setpoint that held read alike, so
    the note says both.

    >>> _unchanged_note({"stuck": 30})
    'never changed: one value throughout (a frozen sensor, or a setpoint that held)'
    >>> _unchanged_note({"stuck": 0})
    'never changed: one value throughout (too few readings to call it stuck)'
    """
    why = ("a frozen sensor, or a setpoint that held" if m.get("stuck")
           else "too few readings to call it stuck")
    return f"never changed: one value throughout ({why})"


def _time_names() -> str:
    """The names :func:`~edgewise.tables.find_time_column` looks for, 'ts' (the old
    default) first.

    >>> _time_names()
    "'ts', 'timestamp', 'time', 'datetime' or 'date'"
    """
    from edgewise.tables import TIME_NAMES

    names = ["ts", *(n for n in TIME_NAMES if n != "ts")]
    return ", ".join(map(repr, names[:-1])) + f" or {names[-1]!r}"


#: the names a device column is taken by, in this order, where none is named: those
#: 'edgewise groups' reads a fleet's file by
DEVICE_COLUMNS = ("device_id", "device")


def default_device_column(columns: list[str]) -> str | None:
    """The file's device column when none is named: the first of :data:`DEVICE_COLUMNS`
    it has (a long file whose column is ``device``, as FILE's help names it, had every
    device merged into one called "device", their readings read as conflicts), else
    ``None`` (one device's file).

    >>> default_device_column(["device", "metric", "ts", "value"])
    'device'
    >>> default_device_column(["device", "device_id", "ts"]), default_device_column(["ts"])
    ('device_id', None)
    """
    return next((c for c in DEVICE_COLUMNS if c in columns), None)


def _one_role_each(
    columns: list[str],
    time_column: str,
    explicit_time: bool,
    clock: str | None,
    device_column: str | None,
    metric_column: str | None,
    value_column: str | None,
) -> None:
    """Refuse, in one line naming the column and both options, a column of the file that
    would play two roles (time, its time of day, device, metric, value), given or taken by
    default: the rename that follows lost one of them (a traceback), or the times were
    read as device ids without a word. ``device_column`` and ``metric_column``/
    ``value_column`` are as given (``None``: not given); a default counts only where the
    file has that column, and the metric and value ones only for a long file.

    >>> _one_role_each(["ts", "metric", "value"], "ts", False, None, None, "metric", "metric")
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """
    roles: list[tuple[str, str]] = [
        ("--time-column" if explicit_time else "the time column (found by its name)",
         time_column)]
    if clock is not None:
        roles.append((f"the time of day beside --time-column {time_column!r}", clock))
    if device_column is not None:
        roles.append(("--device-column", device_column))
    elif (found := default_device_column(columns)) is not None:
        roles.append(("--device-column (by default)", found))
    long = (metric_column is not None or value_column is not None
            or ("metric" in columns and "value" in columns))
    if long:
        roles.append(("--metric-column" + (" (by default)" if metric_column is None else ""),
                      metric_column or "metric"))
        roles.append(("--value-column" + (" (by default)" if value_column is None else ""),
                      value_column or "value"))
    first: dict[str, str] = {}
    for role, column in roles:
        if column in first:
            raise fail(f"column {column!r} is given two roles, {first[column]} and {role}; "
                       "a column can be only one of the time, device, metric and value "
                       f"columns: name another for one of them. Columns: {columns}")
        first[column] = role


@app.command("quality")
def quality(
    file: Annotated[Path, typer.Argument(
        help="CSV: long (device_id or device, metric, time, value) or wide.")],
    time_column: Annotated[str | None, typer.Option(
        help="Time column (epoch or RFC 3339). Default: the first column named timestamp, "
             "time, ts, datetime or date (any case), as 'edgewise detect' finds it.")] = None,
    clock_column_name: Annotated[str | None, typer.Option(
        "--clock-column",
        help="Time of day joined to the date in --time-column to make the time (Datum,Zeit: "
             "--time-column Datum --clock-column Zeit), as 'edgewise detect' takes it; a "
             "'time' column beside a 'date' one is joined without it.")] = None,
    device_column: Annotated[str | None, typer.Option(
        help="Device column; it must be in the file. Default: device_id, else device, when "
             "the file has one (as 'edgewise groups' reads it), else every row is of "
             "--device.")] = None,
    metric_column: Annotated[str | None, typer.Option(
        help="Metric column of a long CSV; it must be in the file. Default: metric (a file "
             "with metric and value columns is long, else wide).")] = None,
    value_column: Annotated[str | None, typer.Option(
        help="Value column of a long CSV; it must be in the file. Default: value.")] = None,
    device: Annotated[str, typer.Option(help="Device id when the CSV has no device column.",
                                        click_type=UTF8_TEXT)] = "device",
    plots: Annotated[str | None, typer.Option(
        metavar="DIR", help="Directory for a PNG per metric with flagged issues (made if "
                            "missing).")] = None,
    tz: Annotated[str | None, typer.Option(
        "--tz", metavar="ZONE", help="IANA time zone the plots' time axis reads in (e.g. "
                                     "Europe/Berlin; each reading at its own offset, across "
                                     "a daylight saving change too). Default: UTC.")] = None,
    json_out: Json = False,
) -> None:
    """Check a CSV of readings; print completeness, validity, duplicates, spikes, stuck runs.

    In a wide file (a column per metric) an empty cell is no reading of that metric, as a
    missing row of a long file; a cell that is no number is an invalid reading. Columns
    named like labels (label, anomaly, is_anomaly, ...) or written by 'edgewise detect'
    (anomaly_score, top_column) are no metrics, as in 'edgewise detect'.
    """
    if not device.strip():  # the report (and --json) named the file's device ''
        raise fail(f"--device must be the id to report a one-device file under, e.g. pump-7. "
                   f"Got {device!r}.")
    import numpy as np
    import pandas as pd

    from edgewise.errors import InvalidParameterError, QualityError
    from edgewise.quality.order import newest_first
    from edgewise.quality.report import fleet_report, metric_issues
    from edgewise.tables import (
        date_and_clock,
        find_time_column,
        named_clock,
        not_a_metric,
        read_tables,
        time_cells,
        time_ns,
    )

    if plots is not None and not plots.strip():  # Path("") would be the working directory
        raise fail("--plots must be a folder for the plots (made if missing), e.g. "
                   f"quality-plots; an empty one would mean the working directory. Got {plots!r}.")
    plots_dir = None if plots is None else Path(plots)
    if tz is not None:
        _check_zone(tz, plots)
    try:  # a missing file, a directory or a binary file is named in one line
        df, cells = read_tables(file)  # the numbers, and the cells as written (the ids)
    except QualityError as exc:
        raise fail(str(exc)) from None
    explicit_time = time_column is not None
    if time_column is None:
        time_column = find_time_column(df)
        if time_column is None:
            raise fail(f"{str(file)!r} has no time column {_time_names()} (any case, as "
                       f"'edgewise detect' finds it); name it with --time-column; columns: "
                       f"{list(df.columns)}")
    elif time_column not in df.columns:
        raise fail(f"{str(file)!r} has no time column {time_column!r}; columns: {list(df.columns)}")
    try:  # date,time: one time together, as detect reads it (or the --clock-column named)
        clock = named_clock(df, time_column, clock_column_name, repr(str(file)))
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None
    columns = list(df.columns)  # the file's, before a device column of our own is added
    if device_column is not None and device_column not in columns:
        # a mistyped one merged every device into one
        raise fail(f"--device-column {device_column!r} is not a column of {str(file)!r}; "
                   f"columns: {columns}")
    if metric_column is not None or value_column is not None:  # a long file, said so
        missing = [f"{opt} {name!r}" for opt, name in [
            ("--metric-column", metric_column or "metric"),
            ("--value-column", value_column or "value")] if name not in columns]
        if missing:  # a typo would have read the file as wide, every column a metric
            raise fail(f"{' and '.join(missing)}: not in {str(file)!r} (a long file needs "
                       f"both a metric and a value column); columns: {columns}")
    _one_role_each(columns, time_column, explicit_time, clock, device_column, metric_column,
                   value_column)
    if device_column is None:
        device_column = default_device_column(columns) or "device_id"
        if device_column not in columns:  # no device column: one device's file
            df[device_column] = device
    if device_column in cells.columns:  # ids as written: 007 is not 7, NA no number
        df[device_column] = _ids(cells[device_column], device_column, "device id", file)
    try:  # an array of their own: a column named like one of ours ('_ts') stays the user's
        times = np.asarray(time_ns(time_cells(df, cells, time_column) if clock is None
                                   else date_and_clock(df, time_column, clock)), dtype=np.int64)
    except QualityError as exc:
        raise fail(str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise fail(f"column {time_column!r} holds no usable times: {exc}") from None
    metric_column, value_column = metric_column or "metric", value_column or "value"
    # the report's frame is built column by column under its own names: a rename could
    # give two columns one name (a device column called 'metric', a metric one 'device_id')
    if metric_column in df.columns and value_column in df.columns:
        parts = {"device_id": df[device_column].to_numpy(), "ts_ns": times,
                 "metric": _ids(cells[metric_column], metric_column, "metric", file),
                 "value": _numbers(df[value_column])}
        if "unit" in cells.columns and "unit" not in (time_column, clock, device_column,
                                                       metric_column, value_column):
            unit = cells["unit"].astype(str).str.strip()  # as written; blank: none
            parts["unit"] = unit.astype(object).where(unit != "", None)
        long = pd.DataFrame(parts)
    else:
        metrics = []
        present = {}  # a blank cell is no reading (as a row left out of a long file)
        for c in df.columns:
            if c in (time_column, clock, device_column):
                continue
            if why := not_a_metric(c):
                typer.echo(f"note: column {c!r} left out of the report: {why}", err=True)
                continue
            written = _written(cells[c]) if c in cells.columns else df[c].notna()
            values = _numbers(df[c])
            # a column of NaN/NA/null alone is a sensor's invalid readings (as in a long
            # file); one of words alone ('pump-a') is no metric
            if values.notna().any() or (written.any() and df[c].isna().all()):
                present[c] = written.to_numpy()
                df[c] = values  # a cell that is no number stays, as an invalid reading
                metrics.append(c)
            elif not written.any():
                typer.echo(f"note: column {c!r} left out of the report: every cell is empty",
                           err=True)
            else:
                i = int(written.to_numpy().argmax())  # the first cell with something in it
                first = cells[c].iloc[i] if c in cells.columns else df[c].iloc[i]
                typer.echo(f"note: column {c!r} left out of the report: it holds no numbers "
                           f"(row {i + 1} has {first!r})", err=True)
        if not metrics:
            raise fail(f"{str(file)!r} has no numeric metric columns")
        # built from arrays, not melted under names of our own: a metric column called
        # '_value', 'metric' or 'value' clashed with them (a traceback, or its cells lost)
        devices = df[device_column].to_numpy(dtype=object)
        long = pd.DataFrame({
            "device_id": np.concatenate([devices[present[c]] for c in metrics]),
            "ts_ns": np.concatenate([times[present[c]] for c in metrics]),
            "metric": np.repeat(np.array(metrics, dtype=object),
                                [int(present[c].sum()) for c in metrics]),
            "value": np.concatenate([df[c].to_numpy(dtype=float)[present[c]]
                                     for c in metrics])})
        reported = set(long["device_id"])
        for dev in pd.unique(df[device_column]):  # it vanished from the report unsaid
            if dev not in reported:
                typer.echo(f"note: device {str(dev)!r} left out of the report: every cell "
                           f"of its metric columns is empty "
                           f"({int((df[device_column] == dev).sum())} rows)", err=True)
    # each device judged over its first to last time in the file, of every metric (its
    # rows with empty cells too): a metric that stopped early has the gap at its end
    spans = {str(dev): (int(ts.min()), int(ts.max()) + 1)
             for dev, ts in pd.Series(times).groupby(df[device_column].to_numpy(),
                                                     sort=False)}
    if newest_first(times):  # the rows' order is no arrival order: judged in reverse
        typer.echo("note: the rows run newest first (their times mostly step back); they are "
                   "read in reverse, oldest first, and a reading out of place in that order "
                   "counts as out of order", err=True)
        long = long.iloc[::-1].reset_index(drop=True)
    rows = long.to_dict("records")
    report = fleet_report(rows, spans=spans)
    written = []
    if plots_dir is not None:
        from edgewise.quality.plot import plot_issues

        try:
            plots_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise fail(f"--plots {plots!r} cannot be made a directory "
                       f"({exc.strerror or exc}); give a directory you can write to") from None
        taken: set[str] = set()
        for (dev, metric), g in long.groupby(["device_id", "metric"]):
            units = g["unit"].tolist() if "unit" in g else None  # each reading's own
            issues = metric_issues(g["ts_ns"].to_numpy(), g["value"].to_numpy(float), units,
                                   span=spans[str(dev)])
            if any(m.any() for m in issues["flags"].values()) or issues["gaps"]:
                name = _plot_name(str(dev), str(metric), taken)
                try:
                    written.append(str(plot_issues(str(dev), str(metric), issues,
                                                   plots_dir / name, tz=tz)))
                except Exception as exc:  # matplotlib's errors are of many kinds: say which
                    raise fail(f"the plot of device {str(dev)!r} metric {str(metric)!r} "
                               f"could not be drawn ({type(exc).__name__}: {exc}); run "
                               "without --plots for the report") from None
        if not written:  # an empty folder and no word read as plots that failed to appear
            typer.echo(f"note: no plots: nothing flagged (no metric has a flagged reading or "
                       f"a gap); none written to --plots {str(plots)!r}", err=True)
    if json_out:  # NaN or Infinity would make it no JSON: null instead
        typer.echo(json.dumps(_json_ready({"devices": report, "plots": written}),
                              default=str, allow_nan=False))
        return
    for dev, rep in report.items():
        s = rep["summary"]
        # a metric whose valid readings were all one value: stuck where 20 or more, and
        # said so by name, as the report's 'unchanged' (a frozen sensor, or a setpoint held)
        still = s.get("unchanged", 0)
        typer.echo(f"device {dev}: {rep['readings']} readings, completeness "
                   f"{s['completeness']:.3f}, timeliness {s['timeliness']:.3f}, "
                   f"validity {s['validity']:.3f}"
                   + (f", {still} metric{'s' * (still != 1)} never changed" if still else ""))
        typer.echo(f"  {'metric':<20} {'n':>7} {'compl':>6} {'valid':>6} {'dup':>4} "
                   f"{'confl':>5} {'ooo':>4} {'spike':>5} {'stuck':>5} {'gaps':>4} "
                   f"{'drift':>6}")
        for name, m in rep["metrics"].items():
            drift = _drift_cell(m["drift"])
            typer.echo(f"  {name:<20} {m['readings']:>7} {m['completeness']:>6.3f} "
                       f"{m['validity']:>6.3f} {m['duplicates']:>4} {m['conflicts']:>5} "
                       f"{m['out_of_order']:>4} {m['spikes']:>5} {m['stuck']:>5} "
                       f"{m['gaps']:>4} {drift:>6}"
                       + (f"  counter: {m['restarts']} restarts, {m['backwards']} backwards"
                          if m["counter"] else "")
                       + (f"  two-state: {m['transitions']} switches, "
                          f"{m['on_fraction']:.0%} on" if m["binary"] else "")
                       + (f"  {_unchanged_note(m)}" if m.get("unchanged") else ""))
    for p in written:
        typer.echo(f"plot: {p}")
