"""``edgewise bench cmapss``: remaining-useful-life benchmark on NASA C-MAPSS."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import Json, bench_app, fail

#: the members ``--models`` takes (as :class:`edgewise.models.rul.RULModel` has them)
MODELS = ("gbm", "cnn")


@bench_app.command("cmapss")
def bench_cmapss(
    data: Annotated[Path, typer.Option(help="Directory with train_/test_/RUL_FD00x files.")],
    subset: Annotated[str, typer.Option(help="Which subset, e.g. FD001 or FD002.")] = "FD001",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1; figures are mean ± std.")] = 5,
    models: Annotated[str, typer.Option(help="Comma-separated members: gbm, cnn.")] = "gbm",
    threads: Annotated[int, typer.Option(min=1, help="CPU threads for LightGBM/torch.")] = 1,
    json_out: Json = False,
) -> None:
    """Fit on the training fleet, score each test unit at its last cycle (RUL cap 125)."""
    from edgewise.bench._machine import machine_line
    from edgewise.bench.cmapss import Loaded, load, run
    from edgewise.errors import InvalidParameterError, QualityError

    if not data.is_dir():
        raise fail(f"--data {str(data)!r} is not a directory")
    # a subset is there when its three files are (else the run would fail after training)
    try:
        named = {m[2] for f in data.iterdir()
                 if (m := re.fullmatch(r"(train|test|RUL)_(FD\d{3})\.txt(\.gz)?", f.name))}
    except OSError as exc:
        raise fail(f"--data {str(data)!r} cannot be read ({exc.strerror or exc})") from None
    have = sorted(s for s in named
                  if all(any((data / f"{kind}_{s}{ext}").is_file() for ext in (".txt.gz", ".txt"))
                         for kind in ("train", "test", "RUL")))
    if subset not in have:
        there = (f"the subsets there are {', '.join(have)}" if have else "it holds no "
                 "subset's train_FD00x, test_FD00x and RUL_FD00x .txt[.gz] files")
        raise fail(f"--subset must be a C-MAPSS subset in --data {str(data)!r}, e.g. FD001: "
                   f"{there}. Got {subset!r}.")
    members = tuple(m.strip() for m in models.split(",") if m.strip())
    if not members or set(members) - set(MODELS) or len(set(members)) < len(members):
        raise fail(f"--models must be comma-separated members from {', '.join(MODELS)}, each "
                   f"once, e.g. gbm or gbm,cnn. Got {models!r}.")

    def progress(seed: int, figs: dict[str, float]) -> None:
        if not json_out:
            typer.echo(
                f"  seed {seed}: RMSE {figs['rmse']:.2f}  score {figs['score']:.0f}  "
                f"coverage {figs['coverage']:.2f}  fit {figs['fit_s']:.0f}s",
                err=True,
            )

    def checked_load(folder: str | Path, name: str) -> Loaded:
        """:func:`~edgewise.bench.cmapss.load`, which `run` calls before the first fit
        (minutes on a whole subset); a wrong file is one `error: --data:` line, a damaged
        gzip file said as `train rul --data` says it, a bad true RUL with its line."""
        try:
            return load(folder, name)
        except (InvalidParameterError, QualityError) as exc:
            raise fail(f"--data: {exc}") from None

    result = run(data, subset, seeds=seeds, progress=progress, loader=checked_load,
                 models=members, n_threads=threads)
    out = result.to_json()
    if json_out:
        typer.echo(json.dumps(out, allow_nan=False))  # to_json gives null for a non-finite
        return
    r, s = out["rmse"], out["score"]
    typer.echo(f"C-MAPSS {subset}, {out['seeds']} seeds, models {','.join(members)}")
    typer.echo(f"  RMSE          {_f(r['mean'], '.2f')} ± {_f(r['std'], '.2f')}")
    typer.echo(f"  PHM08 score   {_f(s['mean'], '.0f')} ± {_f(s['std'], '.0f')}")
    typer.echo(
        f"  90% interval coverage {_f(out['coverage'], '.3f')} ± "
        f"{_f(out['coverage_std'], '.3f')}, mean width {_f(out['interval_width'], '.1f')}"
    )
    u = out["rmse_uncapped"]
    typer.echo(f"  RMSE vs uncapped truth {_f(u['mean'], '.2f')} ± {_f(u['std'], '.2f')}")
    typer.echo(
        f"  model {out['model_bytes']} bytes, one prediction {_f(out['latency_ms'], '.1f')} ms"
    )
    typer.echo(f"  {machine_line()}")  # where the fit and prediction times were measured


def _f(value: float | None, spec: str) -> str:
    """``value`` formatted with ``spec``; ``n/a`` for ``None`` (a figure that was no finite
    number, ``null`` in the JSON).

    >>> _f(1.234, ".1f"), _f(None, ".1f")
    ('1.2', 'n/a')
    """
    return "n/a" if value is None else format(value, spec)
