"""``edgewise bench forecast``: the forecaster against seasonal naive and Holt-Winters on NAB."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import Json, bench_app, fail


@bench_app.command("forecast")
def bench_forecast(
    nab: Annotated[Path, typer.Option("--nab", help="NAB root (holds data/realKnownCause/...).")],
    origins: Annotated[int, typer.Option(
        min=1, help="Forecast origins per series, spread over its last --tail share.")] = 8,
    tail: Annotated[float, typer.Option(
        min=0.01, max=0.9, help="Share of each series, at its end, holding the origins.")] = 0.2,
    series: Annotated[str | None, typer.Option(
        help="Comma-separated NAB files (e.g. realKnownCause/nyc_taxi.csv); default: the "
        "benchmark's seasonal series.")] = None,
    json_out: Json = False,
) -> None:
    """Rolling-origin day-ahead forecasts on NAB's seasonal series: MASE, sMAPE, coverage.

    Peers in the same run: seasonal naive and statsmodels' Holt-Winters (reported as
    missing, not run, when statsmodels is not installed: pip install statsmodels).
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from edgewise.bench.forecast import SERIES, run
    from edgewise.errors import EdgewiseError

    names = tuple(s.strip() for s in series.split(",") if s.strip()) if series else tuple(
        n for n, _ in SERIES)
    if not names:
        raise fail(f"--series must name NAB files, e.g. realKnownCause/nyc_taxi.csv. Got "
                   f"{series!r}.")
    missing = [n for n in names if not (nab / "data" / n).is_file()]
    if missing:
        raise fail(f"--nab {str(nab)!r} has no data/{missing[0]}; give the NAB root (the folder "
                   "holding data/realKnownCause/nyc_taxi.csv)")
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=json_out) as bar:
        task = bar.add_task("forecasting", total=len(names))

        def progress(name: str, row: dict[str, Any]) -> None:
            bar.advance(task)
            if not json_out:
                m = row["methods"]
                console.print(f"  {name}: MASE " + ", ".join(
                    f"{k} {_fig(v['mase'], '.3f')}" for k, v in m.items()))

        try:
            result = run(nab, names, origins=origins, tail=tail, progress=progress)
        except EdgewiseError as exc:
            raise fail(str(exc)) from None
    out = result.to_json()
    if json_out:
        typer.echo(json.dumps(out, allow_nan=False))  # a figure without a number is null
        return
    if out["statsmodels"] is None:
        typer.echo("note: statsmodels is not installed, so Holt-Winters was not run "
                   "(pip install statsmodels)", err=True)
    table = Table(title=f"Day-ahead forecasts, {origins} origins per series in the last "
                  f"{tail:.0%} (MASE / sMAPE % / 90% coverage)")
    table.add_column("series")
    for m in out["methods"]:
        table.add_column(m, justify="right")
    for row in [*out["series"], {"series": "median", "methods": out["median"]}]:
        table.add_row(Path(row["series"]).stem, *(
            _cell(row["methods"].get(m)) for m in out["methods"]))
    Console().print(table)


def _fig(value: float | None, spec: str) -> str:
    """A figure as ``spec`` formats it; ``-`` where there is none (``None``: a flat series'
    MASE has no scale).

    >>> _fig(0.98765, ".3f"), _fig(None, ".3f")
    ('0.988', '-')
    """
    return "-" if value is None else format(value, spec)


def _cell(fig: dict[str, Any] | None) -> str:
    if not fig:
        return "-"
    cover = f" / {fig['coverage']:.2f}" if fig.get("coverage") is not None else ""
    return f"{_fig(fig['mase'], '.3f')} / {_fig(fig['smape'], '.1f')}{cover}"
