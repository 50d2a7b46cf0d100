"""``edgewise bench forecast``: the forecaster against seasonal naive and Holt-Winters on NAB."""

from __future__ import annotations

import json
import math
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

    if not math.isfinite(tail):  # typer's 0.01..0.9 range lets NaN through
        raise fail(f"--tail must be a number in [0.01, 0.9] (the share of each series, at "
                   f"its end, holding the origins), e.g. 0.2. Got {tail}.")
    names = tuple(s.strip() for s in series.split(",") if s.strip()) if series is not None \
        else tuple(n for n, _ in SERIES)
    if not names:
        raise fail(f"--series must name NAB files, e.g. realKnownCause/nyc_taxi.csv. Got "
                   f"{series!r}.")
    _check_series(nab, names, given=series is not None)
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
    # the origins each series had: fewer than --origins where its tail has fewer steps
    had = sorted({row["origins"] for row in out["series"]})
    placed = f"{had[0]}" if len(had) == 1 else f"{had[0]}-{had[-1]}"
    table = Table(title=f"Day-ahead forecasts, {placed} origins per series in the last "
                  f"{tail:.0%} (MASE / sMAPE % / 90% coverage)")
    table.add_column("series")
    for m in out["methods"]:
        table.add_column(m, justify="right")
    for row in [*out["series"], {"series": "median", "methods": out["median"]}]:
        table.add_row(Path(row["series"]).stem, *(
            _cell(row["methods"].get(m)) for m in out["methods"]))
    Console().print(table)


def _check_series(nab: Path, names: tuple[str, ...], given: bool = True) -> None:
    """Fail (one line, exit 2) where a NAB file of ``names`` is not under ``nab``'s data/
    or is named twice: ``--nab`` is blamed where it holds no NAB file at all or ``names``
    are the default (not ``given``), ``--series`` (with the files that are there) where
    they were given."""
    import difflib
    import os

    data = nab / "data"
    available = sorted(p.relative_to(data).as_posix() for p in data.glob("*/*.csv")) \
        if data.is_dir() else []
    seen: dict[str, str] = {}
    for name in names:
        if not (data / name).is_file():
            if not (available and given):
                raise fail(f"--nab {str(nab)!r} has no data/{name}; give the NAB root (the "
                           "folder holding data/realKnownCause/nyc_taxi.csv)")
            near = difflib.get_close_matches(name, available, n=1)
            folder = Path(name).parent.as_posix()
            same = [a for a in available if Path(a).parent.as_posix() == folder]
            listed = (f"the files of {folder}/ are {', '.join(Path(a).name for a in same)}"
                      if same else "the folders there are " + ", ".join(
                          sorted({Path(a).parent.as_posix() for a in available})))
            raise fail(f"--series names {name!r}, which is not a NAB file under "
                       f"{str(data)!r}" + (f"; did you mean {near[0]!r}?" if near else ".")
                       + f" Give comma-separated NAB files as folder/file.csv: {listed}.")
        key = os.path.normcase(os.path.realpath(data / name))
        if key in seen:
            raise fail(f"--series names {seen[key]!r} twice (as {name!r} too): each series "
                       "is forecast once, so name each NAB file once.")
        seen[key] = name


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
