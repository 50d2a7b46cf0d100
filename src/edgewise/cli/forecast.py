"""``edgewise train forecast`` and ``edgewise predict forecast``: one metric, steps ahead.

The history is one metric: a CSV's time and value columns (``--csv FILE --time-column C
--column V``; times as epoch numbers or ISO 8601, a time without an offset read as UTC), or
a device's metric in a gateway's store (``--data DIR --device ID --metric M``, ``DIR`` a
gateway data dir holding ``edgewise.duckdb``, or a store URL); a flag of the other source is
refused. A CSV's readings are sorted by time and those at one time averaged, with a note
(more than one time in a hundred repeated is refused: several devices or metrics in one
column). ``train`` fits a :class:`~edgewise.models.forecast.Forecaster` and saves it
versioned; ``predict`` forecasts the steps after the end of a history (by default the one
the model was trained on) with its interval, as a table, one JSON object (``--json``, the
numbers to the last digit, as in ``--out``) or a CSV file (``--out``). An
interval bound the calibration could not make finite (too few known values in the
history's tail) is unbounded: ``-inf``/``inf`` in the table and the CSV, ``null`` in JSON.
Times are UTC, with decimals of a second when the steps need them (a 200 ms step:
``…T22:13:20.200Z``); ``--json`` gives ``step_s``, the seconds per step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import Json, NonBlankPath, fail
from edgewise.cli.rul import (
    OUT_DELETED_HELP,
    TrainedBy,
    _shown,
    _store_url,
    data_input,
    open_existing_store,
    predict_app,
    train_app,
)
from edgewise.config import default_data_dir

Csv = Annotated[Path | None, typer.Option(
    "--csv", help="CSV file holding the metric's history (time and value columns).")]
TimeCol = Annotated[str | None, typer.Option(
    help="CSV: the time column (epoch s/ms/us/ns or ISO 8601; no offset means UTC). Default: "
    "the first column named timestamp, time, ts, datetime or date (any case), as 'edgewise "
    "detect' finds it ('readings export' writes time).", show_default=False)]
ClockCol = Annotated[str | None, typer.Option(
    "--clock-column", help="CSV: the time of day joined to the date in --time-column to make "
    "the time (Datum,Zeit: --time-column Datum --clock-column Zeit), as 'edgewise detect' "
    "takes it; a 'time' column beside a 'date' one is joined without it.",
    show_default=False)]
ValueCol = Annotated[str | None, typer.Option(
    "--column", help="CSV: the value column to forecast.")]
Data = Annotated[str | None, typer.Option(
    help="A gateway data dir (holding edgewise.duckdb) or a store URL, instead of --csv.")]
Device = Annotated[str | None, typer.Option(help="Store: the device whose metric it is.")]
Metric = Annotated[str | None, typer.Option(help="Store: the metric to forecast.")]


def _history(csv: Path | None, time_column: str | None, column: str | None, data: str | None,
             device: str | None, metric: str | None, model: Any = None,
             clock: str | None = None) -> tuple[Any, Any, str]:
    """Times (ns), values and a name for the history the options give (from a store, with
    ``model``: only the part its predict reads)."""
    if (csv is None) == (data is None):
        raise fail("give the history as --csv FILE --column V, or as --data DIR --device ID "
                   "--metric M (one of the two)")
    if csv is not None:
        _not_given({"--device": device, "--metric": metric},
                   "apply to store data (--data), not to --csv")
        return _csv_history(csv, time_column, column, clock)
    _not_given({"--time-column": time_column, "--clock-column": clock, "--column": column},
               "apply to a CSV file (--csv), not to --data")
    return _store_history(data or "", device, metric, model)


def _not_given(flags: dict[str, str | None], why: str, remedy: str = "drop {it}") -> None:
    """Fail, naming them, where ``flags`` are given that the command would ignore without a
    word (a --metric naming nothing beside --csv, and a forecast of the CSV's column)."""
    given = [f"{flag} {value!r}" for flag, value in flags.items() if value is not None]
    if given:
        many = len(given) > 1
        why = why.replace("apply", "apply" if many else "applies", 1)
        raise fail(f"{', '.join(given)} {why}: " + remedy.format(it="them" if many else "it"))


def _unused(csv: Path | None, time_column: str | None, column: str | None, data: str | None,
            device: str | None, metric: str | None, clock: str | None = None) -> None:
    """Fail where predict has no history given (it forecasts from the trained one) but a
    flag that names part of one is."""
    if csv is None and data is None:
        _not_given({"--time-column": time_column, "--clock-column": clock, "--column": column,
                    "--device": device,
                    "--metric": metric}, "apply to a history given with --csv or --data, "
                   "and neither is given (the model forecasts from the history it was "
                   "trained on)", "give --csv FILE or --data DIR with {it}, or drop {it}")


def once_per_time(ts: Any, values: Any, where: str) -> tuple[Any, Any]:
    """A CSV's readings sorted by time, those at one time averaged (NaN left out), saying
    so on stderr in one line as 'edgewise groups' does; more than one time in a hundred
    repeated is refused (a long file: several devices or metrics in one column).

    >>> once_per_time([3, 1, 1, 2], [4.0, 1.0, 2.0, float("nan")], "f.csv")
    (array([1, 2, 3]), array([1.5, nan, 4. ]))
    """
    import numpy as np
    import pandas as pd

    ts, values = np.asarray(ts, dtype=np.int64), np.asarray(values, dtype=float)
    back = np.flatnonzero(ts[1:] < ts[:-1])  # readings before the one above them
    ts_in = ts  # as read, for naming the first reading out of order
    order = np.argsort(ts, kind="stable")
    ts, values = ts[order], values[order]
    times, first, counts = np.unique(ts, return_index=True, return_counts=True)
    twice = counts > 1
    n = int(twice.sum())

    def iso(ns: Any) -> str:
        return pd.Timestamp(int(ns), tz="UTC").isoformat()

    if n > max(1, len(times) // 100):
        raise fail(f"{where} has more than one reading at {n} of its {len(times)} times (the "
                   f"first {iso(times[twice][0])}); a history holds one reading per time: "
                   "a file of several devices or metrics (device_id, time, metric, value) "
                   "needs one device's metric alone, e.g. through a store and --data --device "
                   "--metric")
    said = []
    if n:
        said.append(f"more than one reading at {n} time(s) (the first "
                    f"{iso(times[twice][0])}); their mean is used")
        known = ~np.isnan(values)
        sums = np.add.reduceat(np.where(known, values, 0.0), first)
        held = np.add.reduceat(known.astype(np.int64), first)
        with np.errstate(invalid="ignore", divide="ignore"):
            values = np.where(held > 0, sums / np.maximum(held, 1), np.nan)
        ts = times
    if len(back):
        i = int(back[0])  # the first reading earlier than the one above it
        said.append(f"{len(back)} reading(s) out of time order (the first at {iso(ts_in[i + 1])}, "
                    f"after one at {iso(ts_in[i])}); sorted by time")
    if said:
        typer.echo(f"note: {where}: {'; '.join(said)}", err=True)
    return ts, values


def _csv_history(csv: Path, time_column: str | None, column: str | None,
                 clock_name: str | None = None) -> tuple[Any, Any, str]:
    from edgewise.errors import InvalidParameterError, QualityError
    from edgewise.tables import (
        date_and_clock,
        find_time_column,
        named_clock,
        number_column,
        read_tables,
        time_cells,
        time_ns,
    )

    if column is None:
        raise fail("--column is needed with --csv: the value column to forecast")
    try:
        df, cells = read_tables(csv, "--csv")
    except QualityError as exc:
        raise fail(str(exc)) from None
    if time_column is None:  # found by its name, as detect and quality find it
        time_column = find_time_column(df)
        if time_column is None:
            raise fail(f"--csv {str(csv)!r} has no column named timestamp, time, ts, datetime "
                       f"or date (any case); name its time column with --time-column; its "
                       f"columns are {[str(c) for c in df.columns][:20]}")
    for flag, name in (("--time-column", time_column), ("--column", column)):
        if name is not None and name not in df.columns:
            raise fail(f"{flag} {name!r} is not a column of --csv {str(csv)!r}; its columns are "
                       f"{[str(c) for c in df.columns][:20]}")
    try:  # date,time: one time together, found or named
        clock = named_clock(df, time_column, clock_name, f"--csv {str(csv)!r}")
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None
    if clock == column:
        raise fail(f"--column {column!r} is the time of day joined to the date column "
                   f"{time_column!r} to make the time; name the value column to forecast")
    try:
        times = (time_cells(df, cells, time_column) if clock is None
                 else date_and_clock(df, time_column, clock))
        ts, values = time_ns(times), number_column(df, column)
    except QualityError as exc:
        raise fail(f"--csv {str(csv)!r}: {exc}") from None
    ts, values = once_per_time(ts, values, f"--csv {str(csv)!r}")
    return ts, values, f"{csv.name}:{column}"


#: Readings read from a store at a time: each page is put into arrays before the next is
#: read (a million readings as a list of tuples took about 400 MiB; as arrays, 16 MiB).
_PAGE = 50_000


def _store_arrays(store: Any, device: str, metric: str,
                  start_ns: int | None = None) -> tuple[Any, Any]:
    """Times (int64 ns) and values of ``device``'s ``metric`` from ``start_ns`` (default:
    all of them), in time order, read :data:`_PAGE` readings at a time."""
    import numpy as np

    times, values = [np.empty(0, np.int64)], [np.empty(0, float)]
    while True:
        rows = store.query(device, metric, start_ns, None, None, _PAGE)
        times.append(np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)))
        values.append(np.fromiter((r[2] for r in rows), dtype=float, count=len(rows)))
        if len(rows) < _PAGE:
            return np.concatenate(times), np.concatenate(values)
        start_ns = int(times[-1][-1]) + 1  # one reading per (device, metric, time)
        del rows


def _lowest_before(store: Any, device: str, metric: str, end_ns: int) -> tuple[int, float]:
    """The time and value of the lowest of ``device``'s ``metric`` readings before
    ``end_ns`` (the first of them on a tie), read a page at a time."""
    import numpy as np

    best, start = (int(end_ns), math.inf), None  # called where a reading before end_ns is
    while True:
        rows = store.query(device, metric, start, end_ns, None, _PAGE)
        if rows:
            v = np.fromiter((r[2] for r in rows), dtype=float, count=len(rows))
            i = int(np.argmin(v))
            if v[i] < best[1]:
                best = (int(rows[i][1]), float(v[i]))
        if len(rows) < _PAGE:
            return best
        start = int(rows[-1][1]) + 1
        del rows


def _recent_arrays(store: Any, device: str, metric: str, model: Any) -> tuple[Any, Any]:
    """The part of ``device``'s ``metric`` history that ``model.predict`` reads (the readings
    after :meth:`~edgewise.models.forecast.Forecaster.reads_after`), and, before them, the
    lowest of the older readings: their only other use is that one is there and whether one
    goes below the model's floor, so the forecast is the one from the whole history."""
    import numpy as np

    newest = store.times_before(device, metric, 2**63 - 1, limit=1)
    if not newest:
        return np.empty(0, np.int64), np.empty(0, float)
    cutoff = model.reads_after(newest[0])
    ts, values = _store_arrays(store, device, metric, cutoff + 1)
    older = store.times_before(device, metric, cutoff + 1, limit=1)
    if not older:
        return ts, values
    floor = getattr(model, "floor_", None)
    if floor is not None and not (values < floor).any():  # is an older one below it?
        at, low = _lowest_before(store, device, metric, cutoff + 1)
    else:  # the floor is off either way: any older reading stands for them
        at, low = older[0], store.query(device, metric, older[0], older[0] + 1)[0][2]
    return np.concatenate([[at], ts]), np.concatenate([[low], values])


def _store_history(data: str, device: str | None, metric: str | None,
                   model: Any = None) -> tuple[Any, Any, str]:
    """Times (ns), values and a name of a store's metric: the whole history, or with
    ``model`` (a fitted Forecaster) only what its predict reads (:func:`_recent_arrays`)."""
    if not device or not metric:
        raise fail("--device and --metric are needed with --data: which device's metric to "
                   "forecast")
    url = _store_url(data)
    if url is None:
        raise fail(f"--data {data!r} is not a gateway data dir (no edgewise.duckdb in it) nor a "
                   "store URL; give the data dir 'edgewise serve' runs with, or use --csv")
    store = open_existing_store(url)
    try:
        known = sorted(d.device_id for d in store.devices())
        if device not in known:
            raise fail(f"--device {device!r} is not in the store {_shown(url)!r}; it holds "
                       f"{known[:20]}")
        ts, values = (_store_arrays(store, device, metric) if model is None
                      else _recent_arrays(store, device, metric, model))
        if not len(ts):
            metrics = sorted({r[0] for r in store.query(device, None, limit=100_000)})
            raise fail(f"--metric {metric!r}: device {device!r} has no readings of it; its "
                       f"metrics are {metrics[:20]}")
    finally:
        store.close()
    return ts, values, f"{device}/{metric}"


@train_app.command("forecast")
def train_forecast(
    out: Annotated[Path, typer.Option(
        help=f"Where to write the model file. {OUT_DELETED_HELP}",
        click_type=NonBlankPath("a file to write, e.g. model.forecast"))],
    csv: Csv = None,
    time_column: TimeCol = None,
    clock_column: ClockCol = None,
    column: ValueCol = None,
    data: Data = None,
    device: Device = None,
    metric: Metric = None,
    horizon: Annotated[int, typer.Option(help="Steps to forecast.")] = 48,
    season: Annotated[int | None, typer.Option(
        help="Steps per seasonal cycle (default: detect a daily/weekly cycle; 1: none).",
        show_default=False)] = None,
    step: Annotated[str | None, typer.Option(
        help="Grid step, e.g. 30min or 1h (default: the median spacing of the readings, or "
        "the finest common step 60% of whose steps hold a reading where they come in "
        "bursts).",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option(help="Random seed, 0 to 2**32-1.")] = 0,
    json_out: Json = False,
) -> None:
    """Fit a forecaster on one metric's history; save it versioned."""
    from edgewise.cli.detect import check_out
    from edgewise.errors import EdgewiseError
    from edgewise.models.forecast import Forecaster

    check_out(out, example="model.forecast", inputs=[("--csv", csv), ("--data", data_input(data))])
    if not 0 <= seed < 2**32:
        raise fail(f"--seed {seed}: must be a whole number from 0 to {2**32 - 1}")
    # named by their options, and before the history is read (they were refused as "The
    # 'horizon' parameter of Forecaster ..." once the whole history had been loaded)
    if horizon < 1:
        raise fail(f"--horizon must be a whole number of steps to forecast, at least 1. "
                   f"Got {horizon}.")
    if season is not None and season < 1:
        raise fail(f"--season must be a whole number of steps per cycle, at least 1 (1: no "
                   f"season), or left out to detect one. Got {season}.")
    model = Forecaster(horizon=horizon, season=season, step=step, random_state=seed)
    try:
        model._given_step()
    except EdgewiseError:
        raise fail(f"--step must be a positive time step such as 30min, 1h or 5min, or left "
                   f"out to take the readings' spacing. Got {step!r}.") from None
    ts, values, name = _history(csv, time_column, column, data, device, metric,
                                clock=clock_column)
    # a model of stored data (it keeps the history's tail) names its device beside it, so
    # deleting the device deletes it (when it lies under the data dir's models folder)
    url = None
    if csv is None and data:  # read as _store_history read it (a URL, or a data dir's file)
        # the resolved path is absolute: duckdb:///D/..., not ////D (shown in notes)
        url = data if "://" in data else f"duckdb://{(Path(data) / 'edgewise.duckdb').resolve()}"
    record = TrainedBy(out, None if url is None else [str(device)], url, default_data_dir())
    try:
        if json_out:
            model.fit(ts, values)
        else:
            from rich.console import Console

            with Console(stderr=True).status(f"fitting the forecaster on {len(ts)} readings"):
                model.fit(ts, values)
        record.before()
        size = model.save(out)
    except EdgewiseError as exc:
        record.failed()
        raise fail(str(exc)) from None
    except OSError as exc:
        record.failed()
        raise fail(f"--out {str(out)!r} cannot be written: {exc.strerror or exc}") from None
    record.after()
    head = model.header()
    summary = {"model": str(out), "bytes": size, "history": name, **head}
    if json_out:
        typer.echo(json.dumps(summary))
        return
    typer.echo(f"trained forecaster on {name}: {head['n_steps']} steps of "
               f"{head['step_ns'] / 1e9:g} s, season {head['season']} steps, horizon "
               f"{head['horizon']}; wrote {out} ({size} bytes, format v{head['format_version']})")


def time_texts(times_ns: Any) -> list[str]:
    """UTC times (ns) as RFC 3339 text with as many decimals of a second as they need (0, 3,
    6 or 9, the same for every time), so that steps below a second stay distinct.

    >>> time_texts([1_700_000_000 * 10**9, 1_700_000_001 * 10**9])
    ['2023-11-14T22:13:20Z', '2023-11-14T22:13:21Z']
    >>> time_texts([1_700_000_000 * 10**9, 1_700_000_000_200_000_000])
    ['2023-11-14T22:13:20.000Z', '2023-11-14T22:13:20.200Z']
    """
    from datetime import UTC, datetime

    ns = [int(t) for t in times_ns]
    digits = next((d for d in (0, 3, 6) if all(t % 10 ** (9 - d) == 0 for t in ns)), 9)
    out = []
    for t in ns:
        text = datetime.fromtimestamp(t // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        frac = f".{(t % 10**9) // 10 ** (9 - digits):0{digits}d}" if digits else ""
        out.append(f"{text}{frac}Z")
    return out


@predict_app.command("forecast")
def predict_forecast(
    model: Annotated[Path, typer.Option(help="A model file from 'edgewise train forecast'.")],
    csv: Csv = None,
    time_column: TimeCol = None,
    clock_column: ClockCol = None,
    column: ValueCol = None,
    data: Data = None,
    device: Device = None,
    metric: Metric = None,
    out: Annotated[Path | None, typer.Option(
        help="Also write the forecast as CSV (time,forecast,low,high).",
        click_type=NonBlankPath("a file to write, e.g. forecast.csv"))] = None,
    json_out: Json = False,
) -> None:
    """Forecast the steps after the end of a history (default: the trained one), with intervals."""
    from edgewise.cli.detect import check_out
    from edgewise.errors import EdgewiseError
    from edgewise.models.forecast import load_forecaster

    if not model.is_file():
        raise fail(f"--model {str(model)!r} is a directory; give the model file 'edgewise train "
                   "forecast --out' wrote" if model.is_dir()
                   else f"--model {str(model)!r} does not exist")
    if out is not None:
        check_out(out, example="forecast.csv", inputs=[
            ("--model", model), ("--csv", csv), ("--data", data_input(data))])
    _unused(csv, time_column, column, data, device, metric, clock_column)
    try:
        fc = load_forecaster(model)
        if csv is None and data is None:
            frame = fc.predict()
        else:
            ts, values, _ = _history(csv, time_column, column, data, device, metric, fc,
                                     clock=clock_column)
            frame = fc.predict(ts, values)
    except EdgewiseError as exc:
        raise fail(str(exc)) from None
    level = round(100 * (1 - fc.alpha))
    frame = frame.assign(time=time_texts(frame["time"].astype("int64").to_numpy()))
    if out is not None:
        try:
            frame.to_csv(out, index=False)
        except OSError as exc:
            raise fail(f"--out {str(out)!r} cannot be written: {exc.strerror or exc}") from None
    if json_out:  # JSON holds no infinity: an unbounded side of an interval is null
        rows = [{k: None if isinstance(v, float) and not math.isfinite(v) else v
                 for k, v in r.items()} for r in frame.to_dict("records")]
        typer.echo(json.dumps({"interval": level, "horizon": fc.horizon,
                               "step_s": fc.step_ns_ / 1e9, "forecast": rows},
                              allow_nan=False))
        return
    typer.echo(f"{'time':>20}  {'forecast':>12}  {level}% interval")
    for r in frame.itertuples(index=False):
        typer.echo(f"{r.time:>20}  {r.forecast:12.6g}  [{r.low:.6g}, {r.high:.6g}]")
    if out is not None:
        typer.echo(f"wrote {out}")
