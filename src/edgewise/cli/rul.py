"""``edgewise train rul`` and ``edgewise predict rul``: remaining useful life from histories.

``--data`` is a CSV file, a directory of CSVs, or a store: a store URL
(``duckdb:///ABS/PATH``, ``postgresql://…``) or a gateway data directory holding
``edgewise.duckdb`` (and no CSVs). From a store every device is a unit, its metrics
pivoted on time into columns (:func:`~edgewise.models.history.device_frame`; the time
column counts readings, of the metrics trained on or that the model uses only: another
metric's readings add no rows; ``--condition-columns`` name metrics too, which are then no
sensors). Training needs each device's failure time, and it is never
guessed: ``--failures CSV`` (``device_id,time`` rows; a device listed twice keeps its
earliest time, with a warning), ``--failure-label CLASS`` (the start of the device's
earliest current label of that class in the label store of ``--data-dir``), or
``--history-ends-at-failure`` (you say every history ends at a failure). Devices without
a known failure, devices whose old readings were deleted (retention or Store.delete_before(), which
the store records: their rows, numbered from the first one kept, would pass as a younger
unit's; ``history trimmed``), and devices a model cannot score, are listed as skipped, never
dropped silently; so are units of a CSV the model cannot score (a sensor it uses with no value in
any of the unit's rows, or a value that is not finite; a history that starts after the
training units' did, its first rows missing: see :meth:`RULModel.unscorable
<edgewise.models.rul.RULModel.unscorable>`). A lone glitch reading (far outside the
model's domain for at most 3 rows, at most one per 100 rows) is passed over and listed
instead (:meth:`RULModel.pass_over_glitches
<edgewise.models.rul.RULModel.pass_over_glitches>`; ``--json``: ``passed_over``), as a
store's history cannot be edited. A CSV's unit ids are printed as written
(``001`` stays ``001``); ids that are all whole numbers are numbers. A store URL is printed
with its password masked (``***``).

Predictions are of the RUL capped at the model's cap (``--cap``, 125 by default): a
prediction at the cap prints as ``>=125.0`` (at least that long) and an interval whose upper
bound reaches the cap as open (``[low, open)``); ``--json`` says so with ``rul_open`` and
``high_open``. The RUL counts steps of the time column (``--json``: ``rul_unit`` and
``time_column``; ``time_step``, the step of the training data, ``null`` when uneven or for
a model saved before it was recorded); from a store it counts readings, and each
prediction's ``step_s`` is the device's mean seconds between readings.

A model trained from a store holds features of its devices' data: ``train rul`` (and
``train forecast``) write ``.<name>.trained-by.json`` beside it naming them
(:class:`TrainedBy`). Under the gateway's ``<data dir>/models`` it is deleted with any of
them (``edgewise device delete``, ``DELETE /v1/devices/{id}``:
:func:`~edgewise.label.workflow.delete_trained_models`); written elsewhere, no deletion
knows of it, and ``train`` prints a note saying so.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import DataDir, Json, NonBlankPath, app, fail

train_app = typer.Typer(help="Train batch models from histories.", no_args_is_help=True)
predict_app = typer.Typer(help="Score devices with a trained model.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(predict_app, name="predict")


def _store_url(data: str) -> str | None:
    """The store URL ``--data`` names, or ``None`` when it names CSV data. A folder holding
    ``edgewise.duckdb`` is a gateway's data dir: its store is read, and CSV files beside it
    (the demo's ``demo-labels.csv``, exports) are named in a note as not read."""
    if "://" in data:
        return data
    path = Path(data)
    if path.is_dir() and (path / "edgewise.duckdb").is_file():
        beside = sorted(p.name for p in [*path.glob("*.csv"), *path.glob("*.csv.gz")])
        if beside:
            typer.echo(f"note: --data {data!r} is a gateway data dir (it holds edgewise.duckdb): "
                       f"reading its store, not {', '.join(beside[:3])}"
                       f"{' ...' if len(beside) > 3 else ''}; give a CSV file to read one.",
                       err=True)
        # the resolved path is absolute: duckdb:///D/..., not ////D (shown in notes)
        return f"duckdb://{(path / 'edgewise.duckdb').resolve()}"
    return None


def data_input(data: str | None) -> Path | None:
    """The file or folder ``--data`` reads, for :func:`~edgewise.cli._app.not_an_input`: a
    CSV file or folder as given, a gateway data dir's ``edgewise.duckdb`` (only that file of
    the dir is read), the file of a ``duckdb:///PATH`` URL; ``None`` for another store.

    >>> data_input("duckdb:///srv/ew/edgewise.duckdb").as_posix(), data_input("postgresql://db")
    ('/srv/ew/edgewise.duckdb', None)
    """
    from edgewise.store import duckdb_file

    if not data:
        return None
    if "://" in data:
        return duckdb_file(data)
    path = Path(data)
    store = path / "edgewise.duckdb"
    return store if path.is_dir() and store.is_file() else path


def _shown(url: str) -> str:
    """The store URL as it may be printed: its password masked."""
    from edgewise.store import shown_url

    return shown_url(url)


def open_existing_store(url: str, option: str = "--data") -> Any:
    """Open an existing store to read from; one error line, naming ``option``, for a bad
    URL, a missing DuckDB file or a PostgreSQL schema with no store (which opening would
    otherwise create, empty)."""
    from edgewise.errors import StoreError, StoreLockedError
    from edgewise.store import duckdb_file, open_store

    file = duckdb_file(url)
    if file is not None and not file.is_file():
        raise fail(f"{option} {_shown(url)!r}: no store file at {str(file)!r}; give the path "
                   "of an existing store, e.g. duckdb:///<data dir>/edgewise.duckdb")
    try:
        return open_store(url, create=False)
    except StoreLockedError as exc:  # it names the file, and the gateway holding it
        raise fail(str(exc)) from None
    except StoreError as exc:
        raise fail(f"{option} {_shown(url)!r}: {exc}") from None


def _read(data: Path, unit_column: str):
    """One table from a CSV file, or from every ``*.csv``/``*.csv.gz`` in a directory, with
    the unit ids as written (:func:`_unit_ids`)."""
    numbers, cells = _read_any(data)
    from edgewise.tables import is_unnamed

    # A saved pandas index ("Unnamed: 0") would be a leaky "sensor"; drop it.
    frame = numbers.loc[:, [not is_unnamed(c) for c in numbers.columns]]
    if unit_column in cells.columns:
        frame = frame.copy()
        frame[unit_column] = _unit_ids(cells[unit_column]).to_numpy()
    return frame


#: A unit id written as a whole number (``17``, ``-3``, or ``17.0`` as pandas writes float
#: ids), with no leading zero or exponent, and within int64.
_WHOLE_ID = r"-?(?:0|[1-9][0-9]{0,17})(?:\.0+)?"


def _unit_ids(cells: Any) -> Any:
    """The unit ids of a CSV as written (the text view of
    :func:`~edgewise.tables.read_tables`, spaces around them dropped): ``001`` stays
    ``001`` (not ``1``) and ``1e3`` stays ``1e3`` (not ``1000``). Only when every id is a
    plain whole number (``17``, or ``17.0`` as pandas writes float ids) are they ints, so
    that numbered units print, sort and serialise as numbers, as before. An empty cell
    stays ``""``, which :func:`_check_units` refuses by row.

    >>> import pandas as pd
    >>> _unit_ids(pd.Series(["001", "002", "3"])).tolist()
    ['001', '002', '3']
    >>> _unit_ids(pd.Series(["1", " 2", "3.0"])).tolist()
    [1, 2, 3]
    """
    import numpy as np

    text = cells.astype(object).where(cells.notna(), "").astype(str).str.strip()
    if len(text) and bool(text.str.fullmatch(_WHOLE_ID).all()):
        return text.str.replace(r"\.0+$", "", regex=True).astype(np.int64)
    return text


def _read_any(data: Path) -> tuple[Any, Any]:
    """The numbers and the cells as written (:func:`~edgewise.tables.read_tables`) of one
    CSV file, or of every ``*.csv``/``*.csv.gz`` in a directory, one after another."""
    import pandas as pd

    from edgewise.errors import QualityError
    from edgewise.tables import read_tables

    if data.is_dir():
        files = sorted([*data.glob("*.csv"), *data.glob("*.csv.gz")])
        if not files:
            raise fail(f"--data {str(data)!r} holds no *.csv or *.csv.gz files")
        try:
            both = [read_tables(f) for f in files]
        except QualityError as exc:
            raise fail(f"--data: {exc}") from None
        return (pd.concat([n for n, _ in both], ignore_index=True),
                pd.concat([c for _, c in both], ignore_index=True))
    if not data.is_file():
        raise fail(f"--data {str(data)!r} is neither a CSV file nor a directory")
    try:
        return read_tables(data)
    except QualityError as exc:
        raise fail(f"--data: {exc}") from None


def _check_units(df: Any, unit_column: str, time_column: str,
                 repeats: dict[Any, str] | None = None) -> Any:
    """Refuse an empty unit id or a unit's cycle given twice, naming the row; whole-number
    ids read as floats (``1.0``) come back as ints. Missing columns are left to the model,
    which names them. With ``repeats`` (prediction) a unit giving a cycle twice is not
    refused: it goes into ``repeats`` with why, and its rows are dropped."""
    import numpy as np
    import pandas as pd

    if unit_column not in df.columns:
        return df
    units = df[unit_column]
    empty = units.isna() | (units.astype(object).astype(str).str.strip() == "")
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise fail(f"--data: row {i + 1} has an empty {unit_column!r} (unit id); every row "
                   "needs the unit it belongs to")
    if pd.api.types.is_float_dtype(units) and bool((units == units.round()).all()):
        df = df.assign(**{unit_column: units.astype(np.int64)})
    if time_column not in df.columns:
        return df
    twice = df.duplicated([unit_column, time_column], keep=False).to_numpy()
    if not twice.any():
        return df
    found: dict[Any, str] = {}
    for r in np.flatnonzero(twice).tolist():
        unit, cycle = (v.item() if hasattr(v, "item") else v
                       for v in (df[unit_column].iloc[r], df[time_column].iloc[r]))
        if unit in found:
            continue
        same = np.flatnonzero(twice & (df[unit_column] == unit).to_numpy()
                              & (df[time_column] == cycle).to_numpy())
        where = f"rows {same[0] + 1} and {same[1] + 1}"
        if repeats is None:
            raise fail(f"--data: unit {unit!r} has {time_column} {cycle!r} more than "
                       f"once ({where}); give each unit's rows once")
        found[unit] = (f"its {time_column!r} {cycle!r} is given more than once ({where}): "
                       f"a step of 0; give each of its rows once")
    repeats.update(found)
    return df[~df[unit_column].isin(list(found))]


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


#: --seed bounds: numpy, k-means and torch all take it (RULModel's random_state).
SEED_MAX = 2**31 - 1
#: --window when none is given (RULModel's default).
DEFAULT_WINDOW = 30


def _check_window(df: Any, unit_column: str, window: int | None) -> int:
    """The window to train with: ``window``, refused when it is longer than the longest
    unit's history (such a window sees nothing more, and its cost grows with it: 100,000
    once asked for a 75 GiB table). The default is kept on short histories, as before."""
    if window is None:
        return DEFAULT_WINDOW
    if unit_column in df.columns and len(df):
        longest = int(df.groupby(unit_column, sort=False).size().max())
        if window > longest:
            raise fail(f"--window {window} is longer than the longest unit's history "
                       f"({longest} rows), so it would see nothing more; give at most "
                       f"{longest}")
    return window


def _check_train_options(unit_column: str, time_column: str, condition_columns: str | None,
                         sensor_columns: str | None, models: str, seed: int) -> None:
    """Refuse options that cannot be right, naming the option, before any data is read (a
    negative seed, a column in two roles and a member named twice failed as tracebacks, or
    made a model file every prediction then crashed on)."""
    if not 0 <= seed <= SEED_MAX:
        raise fail(f"--seed {seed}: must be a whole number from 0 to {SEED_MAX}")
    members = _names(models) or []
    twice = sorted({m for m in members if members.count(m) > 1})
    if twice:
        raise fail(f"--models {models!r} names {twice[0]!r} more than once; give each member "
                   "once: gbm, cnn or gbm,cnn")
    roles = [("--unit-column", unit_column), ("--time-column", time_column),
             *(("--condition-columns", c) for c in _names(condition_columns) or []),
             *(("--sensor-columns", c) for c in _names(sensor_columns) or [])]
    seen: dict[str, str] = {}
    for option, column in roles:
        if column in seen:
            where = (f"twice in {option}" if seen[column] == option
                     else f"in both {seen[column]} and {option}")
            raise fail(f"column {column!r} is named {where}; each column is the unit, the "
                       "time, a condition or a sensor, once")
        seen[column] = option


@dataclass
class _StoreData:
    """Device histories read from a store, and the devices left out with why."""

    frames: list[Any] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: Each device's median seconds between readings (a store RUL counts readings).
    steps: dict[str, float | None] = field(default_factory=dict)

    def skip(self, device: str, reason: str) -> None:
        self.skipped.append({"device": device, "reason": reason})


def _device_ids(store: Any, url: str, devices: str | None) -> list[str]:
    known = sorted(d.device_id for d in store.devices())
    if not known:
        raise fail(f"--data {_shown(url)!r}: the store holds no devices (no readings stored)")
    wanted = _names(devices)
    if wanted is None:
        return known
    unknown = [d for d in wanted if d not in known]
    if unknown:
        raise fail(f"--devices: {unknown} not in the store {_shown(url)!r}; it holds "
                   f"{known[:20]}")
    return wanted


def _read_failures(path: Path) -> dict[str, int]:
    """``device_id,time`` rows (header line; time RFC 3339 or epoch s, ms, us or ns, the
    unit told by size as for telemetry). A device listed more than once keeps its earliest
    time (its first failure ends its history), with a one-line warning naming both times."""
    from edgewise.errors import QualityError
    from edgewise.tables import read_text
    from edgewise.telemetry import parse_time_text

    try:  # a missing file, a directory or a binary file is named in one line
        text = read_text(path, "--failures")
    except QualityError as exc:
        raise fail(f"{str(exc).rstrip('.')}; give a CSV of device_id,time") from None
    out: dict[str, int] = {}
    given: dict[str, tuple[int, str]] = {}  # device -> (line, time as written) of the one kept
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"device_id", "time"} <= set(reader.fieldnames or []):
            raise fail(f"--failures {str(path)!r} must have the header device_id,time; got "
                       f"{reader.fieldnames}")
        for line, rec in enumerate(reader, start=2):
            device, text = (rec["device_id"] or "").strip(), (rec["time"] or "").strip()
            try:  # an integer stays exact to the ns; its unit follows its size
                ts = parse_time_text(text, field_name="time", max_future_s=10 * 365 * 86400.0)
            except ValueError as exc:
                raise fail(f"--failures {str(path)!r} line {line}: {exc}") from None
            if device in out:  # the first failure ends the history; say so
                (was_line, was), kept = given[device], min(ts, out[device])
                used = was if kept == out[device] else text
                typer.echo(f"warning: --failures {str(path)!r} lists device {device!r} more than "
                           f"once: {was} (line {was_line}) and {text} (line {line}); using the "
                           f"earlier, {used}, as its first failure ends its history", err=True)
                if kept == out[device]:
                    continue
            out[device] = ts
            given[device] = (line, text)
    return out


def _label_failures(data_dir: Path, classes: list[str]) -> dict[str, int]:
    """Start of each device's earliest current label of one of ``classes``."""
    from edgewise.label.store import LabelStore

    if not (data_dir / "labels.sqlite").is_file():
        raise fail(f"--failure-label: no label store at {str(data_dir / 'labels.sqlite')!r}; "
                   "point --data-dir at the gateway data dir whose labels mark the failures")
    with LabelStore(data_dir) as labels:
        found = labels.labels()
    have = sorted({lab.label for lab in found})
    unmatched = [c for c in classes if c not in have]
    if unmatched or not classes:  # a typo, or the wrong data dir: say so before any device
        store = str(data_dir / "labels.sqlite")
        held = f"its classes are {', '.join(have)}" if have else "it holds no labels"
        if len(unmatched) == len(classes):
            which = "that class" if len(classes) == 1 else "any of those classes"
            raise fail(f"--failure-label {','.join(classes)!r}: no label in the label store "
                       f"{store!r} has {which}; {held}")
        typer.echo(f"note: --failure-label class(es) {', '.join(unmatched)} match no label in "
                   f"the label store {store!r}; {held}", err=True)
    out: dict[str, int] = {}
    for lab in found:
        if lab.label in classes:
            out[lab.device_id] = min(lab.start_ns, out.get(lab.device_id, lab.start_ns))
    return out


def _store_histories(
    url: str, devices: str | None, unit_column: str, time_column: str,
    failures: dict[str, int] | None,
    choose: Callable[[dict[str, set[str]], _StoreData], set[str]],
) -> _StoreData:
    """Every chosen device's history (cut at its failure when ``failures`` is given) of the
    metrics ``choose`` picks, given each device's metrics (those with a reading before its
    failure) and the devices skipped so far: a row is a reading time, so only the metrics
    the model is trained on or uses make rows (another metric's readings, a link quality
    stamped between the samples, would add rows: an older unit, flatter trends), as
    ``GET /v1/devices/{id}/rul`` reads them. A device whose old readings were deleted
    (retention, Store.delete_before(): the store records it) is skipped, as a RUL model needs a
    unit's whole history, with a note saying why; so is one with a metric (any) named like
    the unit or time column."""
    from edgewise.errors import InvalidParameterError
    from edgewise.models._words import first_and_more
    from edgewise.models.history import TRIMMED_WHY, device_frame, reading_step_s, trimmed_reason

    store = open_existing_store(url)
    got = _StoreData()
    trimmed: list[str] = []
    try:
        summaries = {d.device_id: d for d in store.devices()}
        sent: dict[str, set[str]] = {}
        cut: dict[str, int | None] = {}
        for device in _device_ids(store, url, devices):
            until = None
            if failures is not None:
                until = failures.get(device)
                if until is None:
                    got.skip(device, "no known failure")
                    continue
            before = store.trimmed_before(device)
            if before is not None:  # numbered from 1, its tail would pass as a young unit
                got.skip(device, f"history trimmed: {trimmed_reason(before, why=False)}")
                trimmed.append(device)
                continue
            metrics = summaries[device].metrics if device in summaries else []
            try:  # device_frame's name check on every metric, on a stand-in row of each
                device_frame([(m, 0, 0.0) for m in metrics if m in (unit_column, time_column)],
                             device, unit_column, time_column)
            except InvalidParameterError as exc:  # a metric named like the unit/time column
                role = str(exc.field).removesuffix("_column")
                got.skip(device, f"has a metric named {exc.value!r}, the name of the {role} "
                         f"column (rename the metric, or train with another --{role}-column)")
                continue
            if until is not None:  # the metrics with a reading at or before the failure
                metrics = [m for m in metrics if store.query(device, m, None, until + 1,
                                                             None, 1)]
            if not metrics:
                got.skip(device, "no readings" if until is None else "no readings before "
                         "its failure")
                continue
            sent[device], cut[device] = set(metrics), until
        keep = choose(sent, got)
        for device, metrics in sent.items():
            if not keep & metrics:
                got.skip(device, f"lacks metric(s) {sorted(keep)}")
                continue
            rows = [r for m in sorted(keep & metrics) for r in store.query(device, m)]
            got.steps[device] = reading_step_s(rows)
            got.frames.append(device_frame(rows, device, unit_column, time_column,
                                           until_ns=cut[device]))
    finally:
        store.close()
    if trimmed:
        typer.echo(f"note: skipped {len(trimmed)} device(s) whose stored history was trimmed "
                   f"({first_and_more(trimmed, 3)}): a RUL model needs a unit's whole "
                   f"history; {TRIMMED_WHY}", err=True)
    return got


def _skipped_text(skipped: list[dict[str, Any]], shown: int = 10) -> str:
    """One line naming the skipped devices (or CSV units) with why: the first ``shown``,
    then how many more (``--json`` lists them all)."""
    from edgewise.models._words import first_and_more

    what = "device(s)" if all("device" in s for s in skipped) else "unit(s)"
    return f"skipped {len(skipped)} {what}: " + first_and_more(
        skipped, shown, each=lambda s: f"{s.get('device', s.get('unit'))} ({s['reason']})")


def _store_training_table(
    url: str, devices: str | None, unit_column: str, time_column: str,
    sensor_columns: list[str] | None, failures: dict[str, int] | None,
    condition_columns: list[str] | None = None,
) -> tuple[Any, list[dict[str, str]]]:
    """The training devices' histories as one table: the unit and time columns, the
    ``condition_columns`` (metrics too, e.g. a pump's speed setting) and the sensors
    (``sensor_columns``, or the metrics every training device sends that are not
    conditions). A device lacking one of them is skipped, with the metrics it lacks."""
    import pandas as pd

    conditions = condition_columns or []

    def choose(sent: dict[str, set[str]], got: _StoreData) -> set[str]:
        """The metrics trained on: the given sensors, or those every device sends."""
        if sensor_columns is not None:
            return {*conditions, *sensor_columns}
        if not sent:
            return set()
        common = set.intersection(*sent.values()) - {unit_column, time_column, *conditions}
        if not common:
            besides = " besides the --condition-columns" if conditions else ""
            raise fail(f"--data {_shown(url)!r}: no metric{besides} is sent by every "
                       "training device; " + _skipped_text(got.skipped))
        return {*conditions, *common}

    got = _store_histories(url, devices, unit_column, time_column, failures, choose)
    if not got.frames:
        raise fail(f"--data {_shown(url)!r}: no device has a known failure to train on; "
                   + _skipped_text(got.skipped))
    if sensor_columns is None:  # the metrics every training device sends, bar the settings
        common = set.intersection(*(set(f.columns) for f in got.frames))
        sensor_columns = sorted(common - {unit_column, time_column, *conditions})
    for f in list(got.frames):
        missing = [c for c in [*conditions, *sensor_columns] if c not in f.columns]
        if missing:
            got.frames.remove(f)
            got.skip(str(f[unit_column].iloc[0]), f"lacks metric(s) {missing}")
    if not got.frames or not sensor_columns:
        besides = " besides the --condition-columns" if conditions else ""
        raise fail(f"--data {_shown(url)!r}: no metric{besides} is sent by every training "
                   "device; " + _skipped_text(got.skipped))
    table = pd.concat([f[[unit_column, time_column, *conditions, *sensor_columns]]
                       for f in got.frames], ignore_index=True)
    return table, got.skipped


#: What ``--out`` of ``train rul`` / ``train forecast`` says about deleting the model.
OUT_DELETED_HELP = (
    "From a store, the devices whose data trained it are named beside it "
    "(.<name>.trained-by.json); under the data dir's models folder it is deleted when one "
    "of them is ('device delete', DELETE /v1/devices/{id}), elsewhere it is not (a note "
    "says so).")


@dataclass
class TrainedBy:
    """Which devices' stored data train a model file, recorded beside it
    (:func:`~edgewise.label.workflow.record_trained_by`) so that deleting one of them
    (``edgewise device delete``, ``DELETE /v1/devices/{id}``) deletes the model when it lies
    under ``<data dir>/models``. ``devices`` is ``None`` for a model trained on no stored
    data (a CSV): a record beside ``out`` left by an earlier model goes once it is saved.
    Call :meth:`before` before the model is saved and :meth:`after` once it is."""

    out: Path
    devices: list[str] | None
    #: the store's URL and the data dir given, for where its gateway keeps its models
    url: str | None = None
    data_dir: Path | None = None
    _had: bool = field(default=False, init=False, repr=False)

    def before(self) -> None:
        """Name the devices beside ``out`` before the model is written (with those an
        older model there was trained on, kept until it is replaced), so that no model of
        their data is ever there unnamed."""
        from edgewise.label.workflow import record_trained_by, trained_by

        self._had = trained_by(self.out) is not None
        if self.devices is not None:
            self._write(lambda: record_trained_by(self.out, self.devices or [], keep=True))

    def failed(self) -> None:
        """The model was not saved: a record written only for it goes."""
        from edgewise.label.workflow import forget_trained_by

        if self.devices is not None and not self._had:
            forget_trained_by(self.out)

    def after(self) -> None:
        """The model is saved: the record names exactly its devices (or goes, for a model of
        no stored data), and a note says when ``out`` is outside the data dir's models
        folder, where no deletion of a device looks."""
        from edgewise.label.workflow import forget_trained_by, record_trained_by

        if self.devices is None:
            forget_trained_by(self.out)
            return
        self._write(lambda: record_trained_by(self.out, self.devices or []))
        models = self.models_dir()
        if models is None or self.out.resolve().parent != models.resolve():
            where = (f"outside {str(models)!r}" if models is not None
                     else "outside a gateway data dir's models folder")
            typer.echo(
                f"note: {str(self.out)!r} holds features of the stored data of "
                f"{len(self.devices)} device(s) but is {where}, so deleting one of them "
                "('edgewise device delete', DELETE /v1/devices/{id}) does not delete it: "
                f"delete it yourself then (the file {trained_by_name(self.out)!r} beside it "
                "names them)", err=True)

    def models_dir(self) -> Path | None:
        """The models folder of the gateway whose store trained the model: beside a DuckDB
        store's file, else the data dir given (``None``: none given)."""
        from edgewise.store import duckdb_file

        file = duckdb_file(self.url) if self.url else None
        if file is not None:
            return file.parent / "models"
        return None if self.data_dir is None else self.data_dir / "models"

    def _write(self, write: Callable[[], Any]) -> None:
        try:
            write()
        except OSError as exc:
            raise fail(f"--out {str(self.out)!r}: the record of the devices that trained it "
                       f"({trained_by_name(self.out)!r}) cannot be written beside it: "
                       f"{exc.strerror or exc}") from None


def trained_by_name(out: Path) -> str:
    """The name of the file beside ``out`` naming the devices that trained it.

    >>> trained_by_name(Path("models/rul-v1.ewm"))
    '.rul-v1.ewm.trained-by.json'
    """
    from edgewise.label.workflow import trained_by_file

    return trained_by_file(out).name


@train_app.command("rul")
def train_rul(
    data: Annotated[str, typer.Option(
        help="CSV of run-to-failure histories, a dir of CSVs, or a store: duckdb:///PATH, "
        "postgresql://…, or a gateway data dir.")],
    out: Annotated[Path, typer.Option(
        help=f"Where to write the model file. {OUT_DELETED_HELP}",
        click_type=NonBlankPath("a file to write, e.g. model.rul"))],
    data_dir: DataDir,
    unit_column: Annotated[str, typer.Option(help="Column naming the unit/device.")] = "unit",
    time_column: Annotated[str, typer.Option(help="Column ordering each unit's rows.")] = "cycle",
    condition_columns: Annotated[
        str | None, typer.Option(help="Comma-separated operating-setting columns (from a "
                                 "store: metrics, never taken as sensors).")
    ] = None,
    sensor_columns: Annotated[
        str | None, typer.Option(help="Comma-separated sensors (default: all other numerics; "
                                 "from a store: the metrics every training device sends).")
    ] = None,
    failures: Annotated[Path | None, typer.Option(
        help="Store only: CSV of device_id,time, each device's failure time. A device listed "
        "twice keeps its earliest time (its first failure ends its history); a warning names "
        "both times.")] = None,
    failure_label: Annotated[str | None, typer.Option(
        help="Store only: comma-separated label classes (label store in --data-dir) whose "
        "earliest window start is the device's failure time.")] = None,
    history_ends_at_failure: Annotated[bool, typer.Option(
        "--history-ends-at-failure",
        help="Store only: every device's last reading is its failure.")] = False,
    devices: Annotated[str | None, typer.Option(
        help="Store only: comma-separated devices (default: all).")] = None,
    cap: Annotated[float, typer.Option(
        help="RUL target cap, in the time column's units (125 cycles; 7500 for epoch seconds "
        "a minute apart; at least 10 of its steps): the model learns and predicts the RUL capped "
        "here, so a prediction at the cap means at least that much left.")] = 125.0,
    window: Annotated[int | None, typer.Option(
        help=f"Rows per trailing window (default {DEFAULT_WINDOW}); at most the longest unit's "
        "history, as a longer window sees nothing more.", show_default=False)] = None,
    models: Annotated[str, typer.Option(help="Comma-separated members: gbm, cnn.")] = "gbm",
    seed: Annotated[int, typer.Option(help=f"Random seed, 0 to {SEED_MAX}.")] = 0,
    json_out: Json = False,
) -> None:
    """Fit a RUL model on histories that each end at the unit's failure; save it versioned."""
    from edgewise.cli.detect import check_out
    from edgewise.errors import InvalidParameterError
    from edgewise.models.rul import RULModel

    if out.parent.name == "models" and not out.parent.exists() and out.parent.parent.is_dir():
        # <data dir>/models/rul-v1.ewm, where the gateway looks: a fresh data dir has none yet
        out.parent.mkdir(mode=0o700)
    check_out(out, example="model.rul", inputs=[
        ("--data", data_input(data)), ("--failures", failures)])
    _check_train_options(unit_column, time_column, condition_columns, sensor_columns, models,
                         seed)
    url = _store_url(data)
    sources = [n for n, given in (("--failures", failures is not None),
                                  ("--failure-label", bool(failure_label)),
                                  ("--history-ends-at-failure", history_ends_at_failure))
               if given]
    skipped: list[dict[str, str]] = []
    if url is None:
        if sources or devices:
            raise fail(f"{', '.join(sources) or '--devices'} applies to store data only; "
                       f"--data {data!r} is CSV, whose histories must each end at a failure")
        df = _check_units(_read(Path(data), unit_column), unit_column, time_column)
    else:
        if len(sources) != 1:
            raise fail(f"training from the store {_shown(url)!r} needs exactly one source of "
                       "failure times: --failures CSV, --failure-label CLASS or "
                       f"--history-ends-at-failure (got {sources or 'none'})")
        fails = None
        if failures is not None:
            fails = _read_failures(failures)
        elif failure_label:
            fails = _label_failures(data_dir, _names(failure_label) or [])
        df, skipped = _store_training_table(url, devices, unit_column, time_column,
                                            _names(sensor_columns), fails,
                                            _names(condition_columns))
        if failures is not None and fails and not devices:
            seen = {str(u) for u in df[unit_column].unique()} | {s["device"] for s in skipped}
            unknown = sorted(set(fails) - seen)
            if unknown:  # a typo, or another site's device: say which rows were not used
                typer.echo(f"note: --failures names {len(unknown)} device(s) with no readings "
                           f"in the store, not used: {', '.join(unknown[:10])}"
                           f"{' ...' if len(unknown) > 10 else ''}", err=True)
    window = _check_window(df, unit_column, window)
    conditions = _names(condition_columns) or []

    def fit(table: Any, sensors: list[str] | None) -> RULModel:
        try:
            return RULModel(
                unit_column=unit_column, time_column=time_column,
                condition_columns=_names(condition_columns), sensor_columns=sensors, cap=cap,
                window=window, models=tuple(_names(models) or ()), random_state=seed,
            ).fit(table)
        except InvalidParameterError as exc:
            raise fail(str(exc)) from None

    model = fit(df, _names(sensor_columns) if url is None else
                [c for c in df.columns if c not in (unit_column, time_column, *conditions)])
    left_out = dict(model.left_out_)
    if url is not None:
        # a row is a reading time of the metrics the table holds: a sensor the model left
        # out (constant) but stamped apart from the others added rows, which the RUL route
        # and predict rul, reading only the metrics the model uses, never see; such a table
        # is read again without it and the model fitted on that
        used = [c for c in model.required_columns()[2:] if c not in conditions]
        if set(used) != set(model.sensors_):
            again, skipped = _store_training_table(url, devices, unit_column, time_column,
                                                   used, fails, conditions)
            if len(again) != len(df):
                df = again
                model = fit(df, used)
    for column, why in left_out.items():
        typer.echo(f"note: column {column!r} left out of the model: {why}; predictions do "
                   "not need it", err=True)
    # a model of stored data names its devices beside it, so deleting one deletes it
    record = TrainedBy(out, None if url is None else sorted(
        {str(u) for u in df[unit_column].unique()}), url, data_dir)
    record.before()
    try:
        size = model.save(out)
    except OSError as exc:
        record.failed()
        raise fail(f"--out {str(out)!r} cannot be written: {exc.strerror or exc}") from None
    record.after()
    head = model.header()
    summary = {
        "model": str(out),
        "bytes": size,
        "units": head["n_units"],
        "features": len(head["features"]),
        "format_version": head["format_version"],
        "training_data_sha256": head["training_data_sha256"],
        "skipped": skipped,
    }
    if json_out:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"trained RUL model on {summary['units']} units, {summary['features']} features; "
        f"wrote {out} ({size} bytes, format v{summary['format_version']})"
    )
    if skipped:
        typer.echo(_skipped_text(skipped))


def _store_current(url: str, devices: str | None,
                   rul: Any) -> tuple[Any, list[dict[str, str]], dict[str, float | None]]:
    """Each device's whole history as the model's table; devices it cannot score skipped;
    each device's median seconds between readings."""
    import pandas as pd

    needed = rul.required_columns()[2:]  # a sensor the model learned nothing from may be absent
    got = _store_histories(url, devices, rul.unit_column, rul.time_column, None,
                           lambda sent, got: set(needed))
    keep = []
    for f in got.frames:
        missing = [c for c in needed if c not in f.columns]
        if missing:
            got.skip(str(f[rul.unit_column].iloc[0]), f"lacks metric(s) {missing}")
        else:
            keep.append(f[[rul.unit_column, rul.time_column, *needed]])
    if not keep:
        raise fail(f"--data {_shown(url)!r}: no device can be scored by this model; "
                   + _skipped_text(got.skipped))
    return pd.concat(keep, ignore_index=True), got.skipped, got.steps


@predict_app.command("rul")
def predict_rul(
    model: Annotated[Path, typer.Option(help="A model file from 'edgewise train rul'.")],
    data: Annotated[str, typer.Option(
        help="CSV of current histories (one or more units), a dir of CSVs, or a store: "
        "duckdb:///PATH, postgresql://…, or a gateway data dir (scores every device).")],
    devices: Annotated[str | None, typer.Option(
        help="Store only: comma-separated devices (default: all).")] = None,
    json_out: Json = False,
) -> None:
    """Print each unit's remaining useful life at its last row, with its interval.

    The model predicts the RUL capped at its cap (--cap at training): a prediction at the
    cap prints as >=CAP and an interval reaching it as open. Units (devices) the model
    cannot score are listed as skipped, with why.
    """
    from edgewise.errors import EdgewiseError
    from edgewise.models._words import first_and_more
    from edgewise.models.rul import load_model

    if not model.is_file():
        raise fail(f"--model {str(model)!r} is a directory; give the model file 'edgewise "
                   "train rul --out' wrote" if model.is_dir()
                   else f"--model {str(model)!r} does not exist")
    try:
        rul = load_model(model)
    except EdgewiseError as exc:
        raise fail(str(exc)) from None
    url = _store_url(data)
    skipped: list[dict[str, Any]] = []
    steps: dict[str, float | None] = {}
    if url is None:
        if devices:
            raise fail(f"--devices applies to store data only; --data {data!r} is CSV")
        repeated: dict[Any, str] = {}
        df = _check_units(_read(Path(data), rul.unit_column), rul.unit_column,
                          rul.time_column, repeated)
        step = getattr(rul, "time_step_", None)
        seen = f" (the model was trained on steps of {step:g})" if step is not None else ""
        skipped += [{"unit": u, "reason": why.replace("a step of 0;", f"a step of 0{seen};")}
                    for u, why in repeated.items()]
        if df.empty:
            raise fail(f"--data {_shown(data)!r}: no unit can be scored by this model; "
                       + _skipped_text(skipped))
    else:
        df, skipped, steps = _store_current(url, devices, rul)
    key = "unit" if url is None else "device"
    try:
        # a lone wild reading is carried over (a store's history cannot be edited), and said
        df, glitches = rul.pass_over_glitches(df)
        passed = [{key: u, **{k: v for k, v in g.items() if k != "row"}}
                  for u, gs in glitches.items() for g in gs]
        cannot = rul.unscorable(df)  # named in the output, never filled with a made-up level
        if cannot:
            skipped += [{key: u, "reason": why} for u, why in cannot.items()]
            df = df[~df[rul.unit_column].isin(list(cannot))]
            if df.empty:
                raise fail(f"--data {_shown(data)!r}: no {key} can be scored by this model; "
                           + _skipped_text(skipped))
        point, low, high = rul.predict_interval(df)
        units = rul.predict(df).index
    except EdgewiseError as exc:
        raise fail(str(exc)) from None
    level = round(100 * (1 - rul.alpha))
    rul_open, high_open = rul.open_above(point), rul.open_above(high)
    rows = [
        {"unit": u.item() if hasattr(u, "item") else u, "rul": round(float(p), 2),
         "low": round(float(lo), 2),
         "high": round(float(hi), 2) if math.isfinite(hi) else None,  # no cap: unbounded
         "rul_open": bool(po),
         "high_open": bool(ho)}
        for u, p, lo, hi, po, ho in zip(units, point, low, high, rul_open, high_open,
                                         strict=True)
    ]
    if json_out:
        if url is not None:  # a store RUL counts readings; say how long one is
            rows = [{**r, "step_s": steps.get(str(r["unit"]))} for r in rows]
        typer.echo(json.dumps({"interval": level, "cap": rul.cap,
                               "rul_unit": rul.time_column if url is None else "readings",
                               "time_column": rul.time_column,
                               "time_step": getattr(rul, "time_step_", None),
                               "predictions": rows, "skipped": skipped,
                               "passed_over": passed}))
        return
    typer.echo(f"{'unit':>12}  {'RUL':>8}  {level}% interval")
    for r in rows:
        shown = f"{'>=' if r['rul_open'] else ''}{r['rul']:.1f}"
        upper = "open)" if r["high_open"] else f"{r['high']:.1f}]"
        typer.echo(f"{r['unit']!s:>12}  {shown:>8}  [{r['low']:.1f}, {upper}")
    if (rul_open.any() or high_open.any()) and rul.cap:
        # the cap is in the time column's units, steps only where the time steps by 1 (a
        # store's readings, cycles): 7500 over epoch seconds a minute apart is 125 steps
        step = getattr(rul, "time_step_", None)
        units = "steps" if url is not None or step == 1 else (
            f"in {rul.time_column!r} units" + (f", {rul.cap / step:g} steps of {step:g}"
                                               if step else ""))
        typer.echo(f"note: the model predicts the RUL capped at {rul.cap:g} {units}: "
                   f">={rul.cap:.1f} means at least that much is left, and an open interval "
                   "has no upper bound")
    elif high_open.any():
        typer.echo("note: an open interval has no upper bound (too few calibration residuals "
                   "for a finite one)")
    if passed:
        shown = first_and_more(passed, 10, each=lambda g: (
            f"{g[key]} {g['sensor']}={g['value']:g} at {rul.time_column} "
            f"{g[rul.time_column]}"))
        typer.echo(f"note: passed over {len(passed)} lone glitch reading(s) far outside the "
                   f"model's domain, carrying the previous value: {shown}")
    if skipped:
        typer.echo(_skipped_text(skipped))
