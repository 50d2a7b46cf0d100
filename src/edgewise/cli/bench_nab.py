"""``edgewise bench nab``: run a detector over NAB and print the three normalised scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import Json, bench_app, fail


@bench_app.command("nab")
def bench_nab(
    data: Annotated[Path, typer.Option("--data", help="NAB root (data/, labels/, config/).")],
    out: Annotated[Path, typer.Option("--out", help="Where NAB-layout results go.")],
    detector: Annotated[
        str, typer.Option("--detector", help="Detector name (see edgewise.detect.DETECTORS).")
    ] = "context-likelihood",
    json_out: Json = False,
) -> None:
    """Score a detector on the Numenta Anomaly Benchmark under NAB's rules."""
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from edgewise.bench.nab import data_files, run_nab
    from edgewise.detect import DETECTORS

    if detector not in DETECTORS:
        raise fail(f"Unknown detector {detector!r}. Choose one of: {', '.join(sorted(DETECTORS))}.")
    if not (data / "labels" / "combined_windows.json").is_file():
        raise fail(f"--data {str(data)!r} is not a NAB root: no labels/combined_windows.json.")
    try:
        n = len(data_files(data))
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=json_out) as bar:
        task = bar.add_task(f"NAB: {detector}", total=n)
        run = run_nab(data, out, detector, on_file=lambda _: bar.advance(task))
    summary = run.summary()
    if json_out:
        typer.echo(json.dumps(summary))
        return
    table = Table(title=f"NAB v1.1, detector '{detector}' ({run.n_files} files)")
    table.add_column("profile")
    table.add_column("score", justify="right")
    table.add_column("threshold", justify="right")
    for name, p in run.result.profiles.items():
        table.add_row(name, f"{p.normalized:.2f}", f"{p.threshold:.4f}")
    Console().print(table)
    typer.echo(f"results: {run.results_dir}  ({summary['points_per_second']:,} points/s)")
