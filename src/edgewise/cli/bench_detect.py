"""``edgewise bench detect``: points per second of every detector, beside River's HST.

River has no batch path: "batch replay / River" divides our ``score_many`` by River's
one-reading-at-a-time loop (issue #3's goal is set that way); "one at a time / River" is
the same work on both sides (:data:`edgewise.bench.detect_speed.RATIOS`)."""

from __future__ import annotations

import json
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
    """Measure replay and one-at-a-time throughput, side by side with River (which has
    no batch path: its one-at-a-time rate is the base of both ratios)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from edgewise.bench._machine import machine_fields
    from edgewise.bench.detect_speed import (
        RATIOS,
        benchmark_detectors,
        check_one_points,
        check_sizes,
        load_series,
    )
    from edgewise.detect import DEFAULT_DETECTOR

    check_sizes(points=points, one_points=one_points, repeats=repeats)
    check_one_points(one_points, points)
    x, source = load_series(nab, points)
    rows = benchmark_detectors(x, one_points, repeats)
    river = next((r for r in rows if r["detector"] == "river.HalfSpaceTrees"), None)
    for r in rows:
        base = river["one_pps"] if river else None
        # our batch replay over River's one-at-a-time loop (River has no batch path): not
        # the same work, but issue #3's goal; the same work is one_vs_river
        r["replay_vs_river"] = r["replay_pps"] / base if base and r["replay_pps"] else None
        r["one_vs_river"] = r["one_pps"] / base if base else None
    doc = {"series": source, "points": points, "one_points": one_points, "repeats": repeats,
           **machine_fields(),
           "default": DEFAULT_DETECTOR, "ratios": RATIOS, "detectors": rows}
    if json_out:
        typer.echo(json.dumps(doc))
        return
    # the series is named by its file under --nab: escaped, a '[' in a path is no markup
    table = Table(title=f"Detector throughput, points/s (median of {repeats}; "
                  f"{escape(source)})")
    for c in COLUMNS:
        table.add_column(c, justify="left" if c == "detector" else "right", no_wrap=True)
    for r in rows:
        table.add_row(
            r["detector"],
            f"{r['replay_pps']:,.0f}" if r["replay_pps"] else "-",
            f"{r['one_pps']:,.0f}",
            ratio(r["replay_vs_river"]),
            ratio(r["one_vs_river"]),
        )
    console = Console(width=max(Console().width, 100))
    console.print(table)
    console.print(RATIO_NOTE)


#: the printed table's columns: each ratio says what it divides by what
COLUMNS = ("detector", "batch replay\n(score_many)", "one at a time\n(score_one\n+ learn_one)",
           "batch replay\n÷ River one\nat a time",
           "one at a time\n÷ River one\nat a time\n(same work)")
#: printed under the table
RATIO_NOTE = ("River has no batch path: 'batch replay ÷ River one at a time' divides our "
              "score_many by River's one-reading-at-a-time loop (issue #3's '100x River' goal "
              "is set that way); 'one at a time ÷ River one at a time' is the same work on "
              "both sides.")


def ratio(value: float | None) -> str:
    """A speed ratio as printed: two significant digits below 10 (a 0.45 is no "0x"), whole
    numbers above; "-" where there is none.

    >>> [ratio(v) for v in (0.45, 0.04, 1.26, 9.4, 12.6, 1234.5, None)]
    ['0.45x', '0.04x', '1.3x', '9.4x', '13x', '1,234x', '-']
    """
    if value is None:
        return "-"
    return f"{value:.2g}x" if value < 10 else f"{value:,.0f}x"
