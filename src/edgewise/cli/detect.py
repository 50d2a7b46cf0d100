"""``edgewise detect FILE.csv``: run a detector online over a CSV and write scored rows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import app, fail

# Options shared with `edgewise bench csv`, which runs this command over a folder.
TimeColumn = Annotated[
    str | None, typer.Option("--time-column", help="Timestamps: sorted, unique.")
]
Columns = Annotated[
    str | None, typer.Option("--columns", help="Comma-separated metric columns.")
]
DetectorName = Annotated[
    str | None, typer.Option("--detector", help="Detector name; default by column count.")
]
TrainRows = Annotated[
    int, typer.Option("--train-rows", help="First N rows are normal: learned, not flagged.")
]
Threshold = Annotated[
    float | None, typer.Option("--threshold", help="Flag scores at or above (default 0.9).")
]


def split_columns(columns: str | None) -> list[str] | None:
    """``"a, b,"`` -> ``["a", "b"]``; ``None`` (all numeric columns) stays ``None``.

    >>> split_columns("a, b,")
    ['a', 'b']
    """
    return [c.strip() for c in columns.split(",") if c.strip()] if columns else None


def check_out(target: Path, flag: str = "--out", example: str = "scored.csv") -> None:
    """Fail with one line, before any work, where ``target`` cannot be written as a file."""
    if target.is_dir():
        raise fail(f"{flag} {str(target)!r} is a directory; give a file path, e.g. "
                   f"{str(target / example)!r}")
    if not target.parent.is_dir():
        raise fail(f"{flag} {str(target)!r}: the directory {str(target.parent)!r} does not "
                   "exist; create it or give a path in an existing directory")


@app.command("detect")
def detect(
    file: Annotated[
        Path,
        typer.Argument(help="CSV file, comma or semicolon separated (then decimal commas too)."),
    ],
    time_column: TimeColumn = None,
    columns: Columns = None,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="1/true marks an anomaly; prints metrics.")
    ] = None,
    detector: DetectorName = None,
    train_rows: TrainRows = 0,
    threshold: Threshold = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output CSV (default FILE_scored.csv).")
    ] = None,
) -> None:
    """Score every row of FILE online; write anomaly_score, is_anomaly and top_column."""
    from rich.console import Console
    from rich.progress import Progress

    from edgewise.bench.csv import (
        OUTPUT_COLUMNS,
        _labels,
        alarm_metrics,
        check_threshold,
        detect_table,
        read_table,
    )

    check_threshold(threshold)
    target = out or file.with_name(f"{file.stem}_scored.csv")
    check_out(target)
    df = read_table(file)
    cols = split_columns(columns)
    earlier = [c for c in OUTPUT_COLUMNS if c in df.columns and c not in (cols or [])]
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
        )
    try:
        result.frame.to_csv(target, index=False)
    except OSError as exc:
        raise fail(f"--out {str(target)!r} cannot be written: {exc.strerror or exc}") from None
    flagged = int(result.frame["is_anomaly"].sum())
    typer.echo(
        f"{n} rows, detector {result.detector} on {', '.join(result.columns)}, "
        f"threshold {result.threshold:.3f}: {flagged} flagged -> {target}"
    )
    if earlier:
        typer.echo(f"{', '.join(earlier)}: written by an earlier run, so not metrics "
                   "(name them in --columns to score them); overwritten")
    for col in result.counters:
        typer.echo(f"{col}: a cumulative counter (it never fell and kept rising in the "
                   "warm-up), scored by its increments")
    if label_column is not None:
        m = alarm_metrics(result.frame["is_anomaly"].to_numpy(), df[label_column], train_rows)
        typer.echo(
            f"precision {m['precision']:.3f}  recall {m['recall']:.3f}  F1 {m['f1']:.3f}  "
            f"false-alarm rate {m['false_alarm_rate']:.3f}  "
            f"missed-alarm rate {m['missed_alarm_rate']:.3f}  "
            f"(tp {m['tp']}, fp {m['fp']}, fn {m['fn']}, tn {m['tn']})"
        )
