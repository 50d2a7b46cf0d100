"""``edgewise detect FILE.csv``: run a detector online over a CSV and write scored rows."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgewise.cli._app import Inputs, NonBlankPath, app, fail, not_an_input

if TYPE_CHECKING:
    import pandas as pd

# Options shared with `edgewise bench csv`, which runs this command over a folder.
TimeColumn = Annotated[
    str | None, typer.Option("--time-column", help="Timestamps: sorted, unique.")
]
ClockColumn = Annotated[
    str | None, typer.Option(
        "--clock-column",
        help="Time of day joined to the date in --time-column to make the time (Datum,Zeit: "
             "--time-column Datum --clock-column Zeit); a 'time' column beside a 'date' one "
             "is joined without it.")
]
Columns = Annotated[
    str | None, typer.Option("--columns", help="Comma-separated metric columns.")
]
#: The names --help lists for --detector: :data:`edgewise.detect.DETECTORS`' (a test keeps
#: them alike), written out so that the command line need not import the detectors.
DETECTOR_NAMES = ("context-art", "context-likelihood", "drift-residual", "ewzscore",
                  "long-run-residual", "mahalanobis", "per-metric-residual", "river-hst",
                  "state-aware")
DetectorName = Annotated[
    str | None, typer.Option(
        "--detector", help=f"Detector: {', '.join(DETECTOR_NAMES)}. Default by column count "
                           "and --train-rows (the run says which and why).")
]
TrainRows = Annotated[
    int, typer.Option("--train-rows", help="First N rows are normal: learned, not flagged. "
                                           "Several columns and enough such rows make "
                                           "drift-residual the default.")
]
Threshold = Annotated[
    float | None, typer.Option("--threshold", help="Flag scores at or above (default 0.9).")
]


def check_detector(detector: str | None) -> None:
    """Refuse, in one line naming ``--detector`` (exit 2), a detector name that is none of
    :data:`~edgewise.detect.DETECTORS`; ``None`` (the default by the data) passes.

    >>> check_detector("ewzscore")
    >>> check_detector(" ")
    Traceback (most recent call last):
    ...
    click.exceptions.Exit: 2
    """
    from edgewise.detect import DETECTORS

    if detector is not None and detector not in DETECTORS:
        raise fail(f"--detector: Unknown detector {detector!r}. Choose one of: "
                   f"{', '.join(sorted(DETECTORS))}.")


def check_columns_in(df: pd.DataFrame, columns: list[str] | None) -> None:
    """Refuse, in one line naming ``--columns`` (exit 2), a column ``columns`` names that
    ``df`` (the file as read) does not have."""
    from edgewise.bench.csv import _listed

    missing = [c for c in columns or [] if c not in df.columns]
    if missing:
        raise fail(f"--columns: Column {missing[0]!r} is not in the file. Columns: "
                   f"{_listed(df)}.")


def split_columns(columns: str | None) -> list[str] | None:
    """``"a, b,"`` -> ``["a", "b"]``; ``None`` (all numeric columns) stays ``None``. Read as
    one CSV line, so a name with a comma is quoted (``'"Temp, °C",Druck'``). A value that
    names no column (``" , "``) or one column twice (``"a,a"``) is refused in one line.

    >>> split_columns("a, b,")
    ['a', 'b']
    >>> split_columns('"Temp, °C", Druck')
    ['Temp, °C', 'Druck']
    >>> split_columns(" , ")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --columns ' , ' names no column; ...
    >>> split_columns("a,b, a")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --columns 'a,b, a' names 'a' twice; name each metric column once, e.g. --columns a,b.
    """  # noqa: E501
    import csv

    from edgewise.errors import InvalidParameterError

    if columns is None:
        return None
    try:
        cells = next(csv.reader([columns], skipinitialspace=True), [])
    except csv.Error as exc:
        raise InvalidParameterError(
            f"--columns {columns!r} is not one line of comma-separated names ({exc}); quote a "
            'name that holds a comma, e.g. --columns \'"Temp, °C",Druck\'.') from None
    names = [c.strip() for c in cells if c.strip()]
    if not names:
        raise InvalidParameterError(
            f"--columns {columns!r} names no column; give comma-separated metric columns, "
            "e.g. --columns temp,pressure, or leave it out for every numeric column."
        )
    twice = next((c for i, c in enumerate(names) if c in names[:i]), None)
    if twice is not None:
        once = ",".join(f'"{c}"' if "," in c else c for c in dict.fromkeys(names))
        raise InvalidParameterError(
            f"--columns {columns!r} names {twice!r} twice; name each metric column once, "
            f"e.g. --columns {once}."
        )
    return names


def scored_name(file: Path) -> Path:
    """The default output beside ``file``: ``x.csv`` and ``x.csv.gz`` (in any case:
    ``X.CSV.GZ``) -> ``x_scored.csv``.

    >>> scored_name(Path("d/x.csv.gz")).as_posix(), scored_name(Path("x.csv")).as_posix()
    ('d/x_scored.csv', 'x_scored.csv')
    >>> scored_name(Path("d/PUMP.CSV.GZ")).as_posix()
    'd/PUMP_scored.csv'
    """
    name = file.name[:-3] if file.name.lower().endswith(".gz") else file.name
    return file.with_name(f"{Path(name).stem}_scored.csv")


def check_out(target: Path, flag: str = "--out", example: str = "scored.csv",
              inputs: Inputs = ()) -> None:
    """Fail with one line, before any work, where ``target`` cannot be written as a file,
    or is one of the command's ``inputs`` (``(option, path)`` pairs) or lies in an input
    folder (:func:`~edgewise.cli._app.not_an_input`)."""
    not_an_input(flag, target, inputs, example)
    if target.is_dir():
        raise fail(f"{flag} {str(target)!r} is a directory; give a file path, e.g. "
                   f"{str(target / example)!r}")
    if not target.parent.is_dir():
        raise fail(f"{flag} {str(target)!r}: the directory {str(target.parent)!r} does not "
                   "exist; create it or give a path in an existing directory")


def write_whole(table: pd.DataFrame, target: Path, header: list[str],
                flag: str = "--out") -> None:
    """Write ``table`` as CSV (compressed as its name says, as :meth:`pandas.DataFrame.to_csv`
    infers it: ``.gz``) to ``target`` whole or not at all: into a hidden temporary file
    beside it, renamed to ``target`` once written, as ``readings export --out`` does, so a
    write that fails (a full disk, a file-size limit) leaves no half file and an earlier
    ``target`` as it was; the temporary file is removed whatever goes wrong. A link is
    followed (the file it names is replaced), and a ``target`` that is no regular file
    (``/dev/null``, a FIFO) is written to directly. Refused in one line naming ``flag``.

    >>> import pandas as pd, tempfile
    >>> f = Path(tempfile.mkdtemp()) / "s.csv"
    >>> write_whole(pd.DataFrame({"a": [1]}), f, ["a"])
    >>> f.read_text(), len(list(f.parent.iterdir()))
    ('a\\n1\\n', 1)
    """
    import os
    import tempfile

    from pandas.io.common import infer_compression

    from edgewise.cli.readings import _mode

    def refuse(exc: OSError) -> typer.Exit:
        kept = " (the file already there is left as it was)" if target.is_file() else ""
        return fail(f"{flag} {str(target)!r} cannot be written: {exc.strerror or exc}{kept}")

    kind = infer_compression(target.name, "infer")
    how: dict[str, str] | None = None if kind is None else {"method": kind}
    if kind in ("zip", "tar"):  # the member named as pandas names it from the path
        how = {"method": kind, "archive_name": Path(target.name).stem}
    if target.exists() and not target.is_file():  # /dev/null, a FIFO: written, not replaced
        try:
            table.to_csv(target, index=False, header=header, compression=how)
        except OSError as exc:
            raise refuse(exc) from None
        return
    real = target.resolve() if target.is_symlink() else target
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{real.name[:150]}.", suffix=".part",
                                   dir=real.parent)
    except OSError as exc:
        raise refuse(exc) from None
    done = False
    try:
        with os.fdopen(fd, "wb") as sink:
            os.fchmod(sink.fileno(), _mode(real))  # mkstemp made it 0600
            table.to_csv(sink, index=False, header=header, compression=how)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, real)
        done = True
    except OSError as exc:
        raise refuse(exc) from None
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except OSError:
                pass


@app.command("detect")
def detect(
    file: Annotated[
        Path,
        typer.Argument(help="CSV file, comma or semicolon separated (then decimal commas too)."),
    ],
    time_column: TimeColumn = None,
    clock_column: ClockColumn = None,
    columns: Columns = None,
    label_column: Annotated[
        str | None, typer.Option(
            "--label-column",
            help="1/true marks an anomaly; prints metrics. One named like an output column "
                 "(is_anomaly) is kept in OUT as NAME_label (is_anomaly_label).")
    ] = None,
    detector: DetectorName = None,
    train_rows: TrainRows = 0,
    threshold: Threshold = None,
    out: Annotated[
        Path | None, typer.Option(
            "--out", help="Output CSV (default FILE_scored.csv): FILE's rows as written, "
                          "comma-separated, with three columns added.",
            click_type=NonBlankPath("a file to write, e.g. scored.csv"))
    ] = None,
) -> None:
    """Score every row of FILE online; write anomaly_score, is_anomaly and top_column.

    OUT holds every column of FILE as written there (007, NA, TRUE, 1.50 and long ids
    stay as they are; a decimal comma becomes a point; an empty header cell, as a saved
    pandas index has, stays empty), then the three columns.
    """
    from rich.console import Console
    from rich.progress import Progress

    from edgewise.bench.csv import (
        OUTPUT_COLUMNS,
        _labels,
        alarm_metrics,
        check_threshold,
        detect_table,
        label_notes,
        rate_text,
        scored_rows,
    )
    from edgewise.tables import (
        TIME_NAMES,
        check_csv_file,
        find_time_column,
        header_as_written,
        read_tables,
    )

    check_threshold(threshold)
    check_detector(detector)
    cols = split_columns(columns)
    check_csv_file(file)  # before OUT's name is made from it ('' is the directory '.')
    target = out or scored_name(file)
    check_out(target, inputs=[("FILE", file)])
    df, cells = read_tables(file)  # the numbers, and every cell as written for OUT
    check_columns_in(df, cols)
    earlier = [c for c in OUTPUT_COLUMNS
               if c in df.columns and c not in (cols or []) and c != label_column]
    if label_column is not None and label_column in df.columns:
        _labels(df[label_column])  # bad labels fail before the run
    n = len(df)
    with Progress(console=Console(stderr=True), transient=True, disable=n < 50_000) as bar:
        task = bar.add_task("detect", total=n)
        result = detect_table(
            df,
            columns=cols,
            time_column=time_column,
            label_column=label_column,
            detector=detector,
            train_rows=train_rows,
            threshold=threshold,
            on_progress=lambda done: bar.update(task, completed=done),
            clock_column=clock_column,
            cells=cells,
        )
    # every input column written back as its text, not as pandas re-prints the numbers
    written = scored_rows(cells, result)
    write_whole(written, target, header_as_written(written))
    flagged = int(result.frame["is_anomaly"].sum())
    typer.echo(
        f"{n} rows, detector {result.detector} ({result.why}) on "
        f"{', '.join(result.columns)}, threshold {result.threshold!r}: {flagged} flagged "
        f"-> {target}"
    )
    for col, why in result.left_out.items():
        typer.echo(f"{col}: left out {why}")
    if time_column is None and find_time_column(df) is None:  # nothing checked the order
        typer.echo(f"note: no time column found (none is named {', '.join(TIME_NAMES)}): "
                   "rows are scored in file order, not checked to be sorted or unique; name "
                   "the time column with --time-column")
    if label_column in OUTPUT_COLUMNS:
        typer.echo(f"{label_column}: the label column, kept as {label_column}_label "
                   f"({label_column} holds this run's flags)")
    if result.truth is not None:
        earlier.remove(result.truth)
        typer.echo(f"{result.truth}: ground truth, not an earlier run's flags (no "
                   f"anomaly_score beside it), kept as {result.truth}_label; --label-column "
                   f"{result.truth} prints precision and recall against it")
    if earlier:
        typer.echo(f"{', '.join(earlier)}: written by an earlier run, so not metrics "
                   "(name them in --columns to score them); overwritten")
    for col in result.counters:
        typer.echo(f"{col}: a cumulative counter (it never fell and kept rising in the "
                   "warm-up), scored by its increments")
    for note in result.notes:  # a warm-up past --train-rows
        typer.echo(f"note: {note}")
    if label_column is not None:
        notes = label_notes(df[label_column], train_rows, result.warmup, result.detector)
        for note in notes:
            typer.echo(f"note: {note}")
        if train_rows >= n:
            return  # nothing to score: no figures of zeros
        m = alarm_metrics(result.frame["is_anomaly"].to_numpy(), df[label_column], train_rows)
        # '-' for a rate whose denominator is 0 (no row flagged, no labelled anomaly or
        # no normal row scored): 0.000 said "all missed" and "none missed" at once
        typer.echo(
            f"precision {rate_text(m['precision'])}  recall {rate_text(m['recall'])}  "
            f"F1 {rate_text(m['f1'])}  false-alarm rate {rate_text(m['false_alarm_rate'])}  "
            f"missed-alarm rate {rate_text(m['missed_alarm_rate'])}  "
            f"(tp {m['tp']}, fp {m['fp']}, fn {m['fn']}, tn {m['tn']})"
        )
