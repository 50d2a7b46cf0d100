"""``edgewise bench detect``: points per second of every detector, beside River's HST."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import Json, bench_app


@bench_app.command("detect")
def bench_detect(
    points: Annotated[int, typer.Option("--points", help="Replay length per run.")] = 1_000_000,
    one_points: Annotated[
        int, typer.Option("--one-points", help="Readings per one-at-a-time run.")
    ] = 20_000,
    repeats: Annotated[int, typer.Option("--repeats", help="Runs per figure (median).")] = 5,
    nab: Annotated[
        Path | None, typer.Option("--nab", help="NAB root for a real series (else synthetic).")
    ] = None,
    json_out: Json = False,
) -> None:
    """Measure replay and one-at-a-time throughput, side by side with River."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from edgewise.bench.detect_speed import benchmark_detectors, check_sizes, load_series
    from edgewise.detect import DEFAULT_DETECTOR

    check_sizes(points=points, one_points=one_points, repeats=repeats)
    x, source = load_series(nab, points)
    rows = benchmark_detectors(x, one_points, repeats)
    river = next((r for r in rows if r["detector"] == "river.HalfSpaceTrees"), None)
    for r in rows:
        base = river["one_pps"] if river else None
        r["replay_vs_river"] = r["replay_pps"] / base if base and r["replay_pps"] else None
        r["one_vs_river"] = r["one_pps"] / base if base else None
    doc = {"series": source, "points": points, "one_points": one_points, "repeats": repeats,
           "machine": platform.machine(), "python": platform.python_version(),
           "default": DEFAULT_DETECTOR, "detectors": rows}
    if json_out:
        typer.echo(json.dumps(doc))
        return
    # the series is named by its file under --nab: escaped, a '[' in a path is no markup
    table = Table(title=f"Detector throughput, points/s (median of {repeats}; "
                  f"{escape(source)})")
    for c in ("detector", "replay (score_many)", "one-at-a-time", "replay / River", "one / River"):
        table.add_column(c, justify="left" if c == "detector" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["detector"],
            f"{r['replay_pps']:,.0f}" if r["replay_pps"] else "-",
            f"{r['one_pps']:,.0f}",
            f"{r['replay_vs_river']:,.0f}x" if r["replay_vs_river"] else "-",
            f"{r['one_vs_river']:,.1f}x" if r["one_vs_river"] else "-",
        )
    Console(width=max(Console().width, 100)).print(table)
