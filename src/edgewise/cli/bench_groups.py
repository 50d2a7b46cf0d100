"""``edgewise bench groups``: does grouping by behaviour find the groups a fleet has?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import Json, bench_app, fail


@bench_app.command("groups")
def bench_groups(
    nab: Annotated[Path, typer.Option(
        "--nab", help="NAB root (the folder holding data/realAWSCloudwatch/ ...).")],
    tasks: Annotated[str, typer.Option(
        help="Comma-separated tasks: aws, real, pumps, pumps-same.")] = "aws,real,pumps,pumps-same",
    seeds: Annotated[int, typer.Option(min=1, help="Seeds 0..N-1; figures are mean ± std.")] = 3,
    json_out: Json = False,
) -> None:
    """Score BehaviourGroups against known groups (adjusted Rand index, NMI), beside k-means
    on z-normalised series and on plain mean/std, both given the true number of groups."""
    from rich.console import Console
    from rich.table import Table

    from edgewise.bench.groups import TASKS, run

    chosen = tuple(t.strip() for t in tasks.split(",") if t.strip())
    bad = [t for t in chosen if t not in TASKS]
    if bad or not chosen:
        raise fail(f"--tasks must be comma-separated tasks from {', '.join(TASKS)}. "
                   f"Got {tasks!r}.")
    nab_tasks = any(t in ("aws", "real") for t in chosen)
    if nab_tasks and not (nab / "data" / "realAWSCloudwatch").is_dir():
        raise fail(f"--nab {str(nab)!r} is not a NAB root: no data/realAWSCloudwatch folder; "
                   "give the folder holding NAB's data/, e.g. /work/shared/data/nab")
    console = Console(stderr=True)
    result = run(nab, chosen, seeds, progress=None if json_out else console.log)
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
