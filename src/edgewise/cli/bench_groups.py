"""``edgewise bench groups``: does grouping by behaviour find the groups a fleet has?"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import Json, bench_app, fail, out_path

#: default folder of the --fleet-scale stores (they are big: keep them out of the repository)
_STORE_DIR = Path(tempfile.gettempdir()) / "edgewise-scale"


@bench_app.command("groups")
def bench_groups(
    nab: Annotated[Path | None, typer.Option(
        "--nab", help="NAB root (the folder holding data/realAWSCloudwatch/ ...); needed by "
        "the aws and real tasks.")] = None,
    tasks: Annotated[str, typer.Option(
        help="Comma-separated tasks: aws, real, pumps, pumps-same.")] = "aws,real,pumps,pumps-same",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1; figures are mean ± std.")] = 3,
    fleet_scale: Annotated[str | None, typer.Option(
        "--fleet-scale", help="Instead of the tasks: time the fleet-groups route's store "
        "read and fit for simulated fleets of these comma-separated sizes, e.g. "
        "100,300,1000 (2 days at 1 min of 8-metric pumps each, in DuckDB).")] = None,
    store_dir: Annotated[str, typer.Option(
        "--store-dir", help="With --fleet-scale: where the fleets' DuckDB stores are built "
        "(and reused when already there).")] = str(_STORE_DIR),
    repeats: Annotated[int, typer.Option(
        min=1, help="With --fleet-scale: times each read and fit is run (median shown).")] = 3,
    json_out: Json = False,
) -> None:
    """Score BehaviourGroups against known groups (adjusted Rand index, NMI), beside k-means
    on z-normalised series and on plain mean/std, both given the true number of groups; or,
    with --fleet-scale, time the route's store read and fit for fleets of N pumps."""
    from rich.console import Console
    from rich.table import Table

    from edgewise.bench._machine import machine_line
    from edgewise.bench.groups import TASKS, run, run_scale

    console = Console(stderr=True)
    if fleet_scale is not None:
        try:
            sizes = tuple(int(x) for x in fleet_scale.split(",") if x.strip())
        except ValueError:
            sizes = ()
        if not sizes or min(sizes) < 2:
            raise fail("--fleet-scale must be comma-separated fleet sizes of at least 2 "
                       f"devices, e.g. 100,300,1000. Got {fleet_scale!r}.")
        # checked (and made absolute: the store URL needs it) before any fleet is built
        folder = out_path("--store-dir", store_dir, folder=True,
                          example=str(_STORE_DIR),
                          what="a folder for the fleets' DuckDB stores").absolute()
        res = run_scale(sizes, folder, repeats, progress=None if json_out else console.log)
        if json_out:
            typer.echo(json.dumps(res))
            return
        table = Table(title=f"fleet groups at scale: {res['days']:g} days at "
                      f"{res['step_s']:g} s, medians of {repeats}")
        for col in ("devices", "readings", "read s", "fit s", "groups", "odd", "ARI"):
            table.add_column(col)
        for fig in res["fleets"].values():
            table.add_row(str(fig["devices"]), f"{fig['readings']:,}",
                          f"{fig['read_s']['median']:.2f}", f"{fig['fit_s']['median']:.2f}",
                          str(fig["n_groups"]), str(fig["odd_ones_out"]), f"{fig['ari']:.3f}")
        Console().print(table)
        typer.echo(machine_line())  # where the read and fit times were measured
        return

    chosen = tuple(t.strip() for t in tasks.split(",") if t.strip())
    bad = [t for t in chosen if t not in TASKS]
    if bad or not chosen:
        raise fail(f"--tasks must be comma-separated tasks from {', '.join(TASKS)}. "
                   f"Got {tasks!r}.")
    nab_tasks = any(t in ("aws", "real") for t in chosen)
    if nab_tasks and nab is None:
        raise fail("--nab is needed for the aws and real tasks: give the folder holding "
                   "NAB's data/, e.g. /work/shared/data/nab (or --tasks pumps,pumps-same)")
    if nab_tasks and not (nab / "data" / "realAWSCloudwatch").is_dir():  # type: ignore[operator]
        raise fail(f"--nab {str(nab)!r} is not a NAB root: no data/realAWSCloudwatch folder; "
                   "give the folder holding NAB's data/, e.g. /work/shared/data/nab")
    result = run(nab or Path("."), chosen, seeds, progress=None if json_out else console.log)
    if json_out:
        typer.echo(json.dumps(result))
        return
    out = Console()
    for task, fig in result["tasks"].items():
        table = Table(title=f"{task}: {fig['devices']} devices, {fig['true_groups']} true "
                      f"group(s), {result['seeds']} seed(s)")
        for col in ("method", "ARI", "NMI", "groups found"):
            table.add_column(col)
        for name, m in fig["methods"].items():
            table.add_row(name, f"{m['ari']['mean']:.3f} ± {m['ari']['std']:.3f}",
                          f"{m['nmi']['mean']:.3f} ± {m['nmi']['std']:.3f}",
                          f"{m['groups']['mean']:.1f}")
        out.print(table)
        auto = fig["auto_seed0"]
        out.print(f"  auto (seed 0): {auto['n_groups']} group(s); odd ones out "
                  f"{auto['odd_ones_out'] or 'none'}; truly odd {auto['true_odd'] or 'none'}")
