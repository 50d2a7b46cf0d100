"""``edgewise bench active``: labels chosen by our query strategy vs at random."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import Json, bench_app, fail, out_path

_DATASETS = ("nab", "pumps", "sim-pumps")


def _names(flag: str, value: str, allowed: tuple[str, ...]) -> list[str]:
    """The comma-separated names in ``value``: at least one, each of ``allowed``, none twice.

    >>> _names("--datasets", "nab, pumps", _DATASETS)
    ['nab', 'pumps']
    """
    names = [n.strip() for n in value.split(",") if n.strip()]
    why = "" if names else ", which names none"
    for i, n in enumerate(names):
        if n not in allowed or n in names[:i]:
            why = f": {n!r} is {'not one of them' if n not in allowed else 'named twice'}"
            break
    if why:
        raise fail(f"{flag} must name one or more of {', '.join(allowed)}, comma-separated, "
                   f"each once. Got {value!r}{why}.")
    return names


@bench_app.command("active")
def bench_active(
    json_out: Json = False,
    datasets: Annotated[str, typer.Option(
        help="Comma-separated: nab, pumps, sim-pumps.")] = "nab,pumps,sim-pumps",
    nab_dir: Annotated[Path | None, typer.Option(
        help="NAB corpus (default ../shared/data/nab or $EDGEWISE_SHARED_DATA/nab).")] = None,
    nab_files: Annotated[int, typer.Option(
        help="Use only the first N NAB files (sorted); 0 = all 58.")] = 0,
    strategies: Annotated[str, typer.Option(
        help="Comma-separated strategies; 'mix' is reported as active.")] = "mix,random",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds to average over.")] = 5,
    out: Annotated[str | None, typer.Option(
        metavar="FILE", help="Also write a Markdown report here (its folder made if missing).")
    ] = None,
) -> None:
    """Simulate a person who answers only what is asked; F1 per label budget."""
    import os

    from edgewise.bench._machine import command_line
    from edgewise.bench.active import (
        comparison_lines,
        load_nab,
        pump_fleet,
        run_benchmark,
        sim_pump_fleet,
        to_markdown,
    )
    from edgewise.bench.nab import read_nab_json
    from edgewise.bench.nab_scorer import load_windows
    from edgewise.label.strategies import STRATEGIES

    # every option is checked before any corpus is read or any fleet simulated
    names = _names("--datasets", datasets, _DATASETS)
    strats = _names("--strategies", strategies, STRATEGIES)
    if nab_files < 0:
        raise fail(f"--nab-files must be an int >= 0 (the first N NAB files, sorted; 0 = "
                   f"all). Got {nab_files}.")
    out_file = None if out is None else out_path("--out", out, folder=False,
                                                 example="benchmarks/results/active.md",
                                                 inputs=[("--nab-dir", nab_dir)] if nab_dir else ())
    root = nab_dir
    if "nab" in names:
        where = "--nab-dir"
        if root is None:
            env = os.environ.get("EDGEWISE_SHARED_DATA")
            root = Path(env) / "nab" if env else Path.cwd().parent / "shared" / "data" / "nab"
            where = ("the NAB folder of $EDGEWISE_SHARED_DATA" if env else
                     "the default NAB folder (../shared/data/nab; give --nab-dir)")
        if not (root / "labels" / "combined_windows.json").is_file():
            raise fail(f"{where} {str(root)!r} has no labels/combined_windows.json.")
    items = []
    for name in names:
        if name == "nab":
            assert root is not None
            files = None
            if nab_files:
                windows = read_nab_json(root / "labels" / "combined_windows.json",
                                         load_windows)
                assert isinstance(windows, dict)
                all_files = sorted(windows)
                files = all_files[:nab_files]
            items.append(load_nab(root, files))
        elif name == "pumps":
            items.append(lambda seed: pump_fleet(seed=seed))
        else:
            items.append(lambda seed: sim_pump_fleet(seed=seed))

    def progress(msg: str) -> None:
        if not json_out:
            typer.echo(msg, err=True)

    results = run_benchmark(items, strategies=strats, seeds=seeds, progress=progress)
    if out_file is not None:
        cmd = command_line([
            "bench", "active", *(["--json"] if json_out else []), "--datasets", datasets,
            *(["--nab-dir", str(nab_dir)] if nab_dir is not None else []),
            "--nab-files", str(nab_files), "--strategies", strategies, "--seeds", str(seeds),
            "--out", str(out)])
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(to_markdown(results, cmd))
    if json_out:
        typer.echo(json.dumps(results))
        return
    for name, e in results.items():
        typer.echo(f"{name}: budgets {e['budgets']}")
        # every strategy run ('mix' is reported as active), in the order run, as
        # to_markdown's tables have them
        keys = [k for k in e if k.endswith("_f1") and not k.endswith("_window_f1")]
        width = max([10, *(len(k) for k in keys)])
        for k in keys:
            typer.echo(f"  {k:{width}s} {e[k]}")
        if "active_f1" in e and "random_f1" in e:
            typer.echo(f"  gain ratio (25 active / 100 random): "
                       f"{e.get('gain_ratio_active25_vs_random100')}")
            # seed by seed: a larger mean inside the seeds' spread is no win
            for line in comparison_lines(e)[1:]:
                typer.echo(f"  {line}")
        else:  # it printed None, as though measured
            typer.echo("  gain ratio (25 active / 100 random): needs both --strategies mix "
                       "and random")
