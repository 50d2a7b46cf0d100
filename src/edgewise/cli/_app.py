"""The Typer application objects that every ``edgewise.cli`` command module attaches to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgewise.config import default_data_dir

__all__ = ["DataDir", "Json", "app", "bench_app", "fail"]

app = typer.Typer(
    name="edgewise",
    help="Edgewise: machine learning on IoT sensor fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks; each takes --json for one JSON object of figures.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="EDGEWISE_DATA_DIR",
        help="Where the store, keys and registry live.",
        default_factory=default_data_dir,
        show_default=False,
        resolve_path=True,  # a relative dir is the working directory's, in every URL made of it
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as one line on stderr; return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)
