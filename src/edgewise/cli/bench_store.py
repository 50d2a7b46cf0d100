"""``edgewise bench store``: append and query throughput of a store backend."""

from __future__ import annotations

from typing import Annotated

import typer

from edgewise.cli._app import Json, bench_app


@bench_app.command("store")
def bench_store(
    store: Annotated[
        list[str],
        typer.Option("--store", help="Store URL(s); default a DuckDB file in a temp folder."),
    ] = [],  # noqa: B006 - Typer reads the default, never mutates it
    batch: Annotated[int, typer.Option(help="Readings per append.")] = 10_000,
    batches: Annotated[int, typer.Option(help="Fresh batches appended.")] = 20,
    devices: Annotated[int, typer.Option(help="Devices per batch (8 metrics each).")] = 20,
    json_out: Json = False,
) -> None:
    """Append fresh and re-delivered batches, then query; report readings/s per backend."""
    import json

    from edgewise.bench._machine import machine_fields, machine_line
    from edgewise.bench.store import check_store_options, run_store_bench
    from edgewise.config import shown_url

    for u in store or [""]:  # every URL checked before any is measured
        check_store_options(u, batch, batches, devices)
    results = [run_store_bench(u, batch=batch, batches=batches, devices=devices)
               for u in (store or [""])]
    if json_out:
        typer.echo(json.dumps({"results": results, **machine_fields()}))
        return
    for r in results:
        a, d = r["append"], r["append_duplicates"]
        typer.echo(
            f"{shown_url(r['store'])}: append {a['readings']} readings in "
            f"{a['median_ms']} ms median ({a['readings_per_s']:,}/s); re-append "
            f"{d['median_ms']} ms ({d['readings_per_s']:,}/s); query "
            f"{r['query_one_metric']['rows']} rows in "
            f"{r['query_one_metric']['median_ms']} ms; downsampled "
            f"{r['query_downsampled_all_metrics_ms']} ms ({r['stored_total']:,} stored)"
        )
    typer.echo(machine_line())  # where the timings above were measured, as --json says
