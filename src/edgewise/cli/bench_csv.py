"""``edgewise bench csv DIR``: run ``edgewise detect`` on a folder of labelled CSVs, pooled."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.bench._machine import machine_fields
from edgewise.cli._app import Json, bench_app
from edgewise.cli.detect import (
    ClockColumn,
    Columns,
    DetectorName,
    Threshold,
    TimeColumn,
    TrainRows,
    check_detector,
    split_columns,
)


def detector_counts(files: list[dict[str, Any]]) -> dict[str, int]:
    """Files scored by each detector, most used first.

    >>> detector_counts([{"detector": "a"}, {"detector": "b"}, {"detector": "b"}])
    {'b': 2, 'a': 1}
    """
    return dict(Counter(f["detector"] for f in files).most_common())


def describe_detectors(counts: dict[str, int]) -> str:
    """``detector NAME`` for one, else every detector with its file count.

    >>> describe_detectors({"drift-residual": 1})
    'detector drift-residual'
    >>> describe_detectors({"drift-residual": 1, "context-likelihood": 1})
    'detectors drift-residual x1, context-likelihood x1'
    """
    if not counts:
        return "no detector"
    if len(counts) == 1:
        return f"detector {next(iter(counts))}"
    return "detectors " + ", ".join(f"{d} x{n}" for d, n in counts.items())


@bench_app.command("csv")
def bench_csv(
    folder: Annotated[Path, typer.Argument(
        help="Folder of labelled *.csv / *.csv.gz (searched recursively; *_scored.csv, "
             "edgewise detect's outputs, left out).")],
    label_column: Annotated[
        str, typer.Option("--label-column", help="1/true marks an anomaly.")
    ] = "anomaly",
    time_column: TimeColumn = None,
    clock_column: ClockColumn = None,
    columns: Columns = None,
    detector: DetectorName = None,
    train_rows: TrainRows = 0,
    threshold: Threshold = None,
    json_out: Json = False,
) -> None:
    """Each file as one `edgewise detect` run; precision/recall/F1/FAR/MAR pooled over files
    ('-', null in --json, where a rate is undefined: its denominator is 0)."""
    from edgewise.bench.csv import bench_folder, rate_text

    check_detector(detector)  # before any file is scored
    cols = split_columns(columns)

    def show(path: Path, m: dict[str, Any]) -> None:
        if not json_out:
            typer.echo(
                f"{m['file']:<28} F1 {rate_text(m['f1'])}  "
                f"FAR {rate_text(m['false_alarm_rate'])}  "
                f"MAR {rate_text(m['missed_alarm_rate'])}"
            )
            for note in m["notes"]:
                typer.echo(f"  note: {note}")

    res = bench_folder(folder, label_column, time_column, cols, detector, train_rows,
                       threshold, on_file=show, clock_column=clock_column)
    res.update(machine_fields())
    res["detectors"] = detector_counts(res["files"])
    t = res["total"]
    if json_out:
        typer.echo(json.dumps(res))
        return
    if res["skipped"]:
        typer.echo(f"left out {len(res['skipped'])} *_scored.csv (edgewise detect's outputs): "
                   + ", ".join(res["skipped"][:5]) + (", ..." if len(res["skipped"]) > 5 else ""))
    if len(res["detectors"]) > 1:
        typer.echo("note: the pooled figures mix detectors (each file's default depends on its "
                   "columns and training span; --detector scores every file with one)")
    typer.echo(
        f"{t['files']} files, {describe_detectors(res['detectors'])}, pooled: "
        f"precision {rate_text(t['precision'])}  recall {rate_text(t['recall'])}  "
        f"F1 {rate_text(t['f1'])}  false-alarm rate {rate_text(t['false_alarm_rate'])}  "
        f"missed-alarm rate {rate_text(t['missed_alarm_rate'])}"
    )
