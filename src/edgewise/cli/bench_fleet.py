"""``edgewise bench fleet``: the gateway's alerts on a simulated pump fleet, per detector."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from edgewise.bench._machine import machine_fields, machine_line
from edgewise.cli._app import Json, bench_app


@bench_app.command("fleet")
def bench_fleet_cmd(
    detectors: Annotated[str, typer.Option(
        help="Comma-separated level detectors (as `edgewise serve --detector`).")
    ] = "context-likelihood,ewzscore",
    pumps: Annotated[int, typer.Option(help="Simulated pumps, 8 sensors each.")] = 20,
    hours: Annotated[float, typer.Option(help="Simulated hours, one reading a second.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Random seed of the fleet and its faults.")] = 3,
    fault_rate: Annotated[float, typer.Option(help="Faults per pump-hour.")] = 2.0,
    compare_gate: Annotated[bool, typer.Option(
        "--compare-gate",
        help="Also run each detector without the fast-stream gate (and so without the "
             "cross-sensor gate, which needs it), for comparison.")
    ] = False,
    compare_cross: Annotated[bool, typer.Option(
        "--compare-cross",
        help="Also run each detector with the fast-stream gate but without the cross-sensor "
             "gate, for comparison.")
    ] = False,
    compare_prior: Annotated[bool, typer.Option(
        "--compare-prior",
        help="Also run each detector with both gates but without the cross-sensor gate's "
             "fleet prior, for comparison.")
    ] = False,
    feedback: Annotated[bool, typer.Option(
        "--feedback",
        help="Also run each detector with live false-alarm feedback (EDGEWISE_ALERT_FEEDBACK) "
             "and a simulated operator who labels each alert 10 minutes after it starts: "
             "false alarm when it overlaps no injected fault, else true alarm.")
    ] = False,
    json_out: Json = False,
) -> None:
    """False alerts per device-hour and faults found, through the gateway's own detection."""
    from edgewise.bench.fleet import (
        MAX_HOURS,
        MAX_PUMP_HOURS,
        MAX_PUMPS,
        bench_fleet,
        check_fleet_options,
    )
    from edgewise.errors import ConfigError

    # named by their options here (the library's own check names them as its arguments)
    if pumps < 1:
        raise ConfigError(f"--pumps must be at least 1 (8 sensors each), e.g. 20. Got {pumps} "
                          "instead.")
    if pumps > MAX_PUMPS:
        raise ConfigError(f"--pumps must be at most {MAX_PUMPS} (8 sensors each), e.g. 20. "
                          f"Got {pumps} instead.")
    if not 0.5 / 3600 <= hours <= MAX_HOURS:  # NaN too
        raise ConfigError(f"--hours must give at least one reading (one a second) and at most "
                          f"{MAX_HOURS:g} h, held in memory: a number in [{0.5 / 3600:.6f}, "
                          f"{MAX_HOURS:g}], e.g. 2. Got {hours} instead.")
    if pumps * hours > MAX_PUMP_HOURS:
        raise ConfigError(f"--pumps x --hours must be at most {MAX_PUMP_HOURS:g} pump-hours, "
                          f"held in memory (8 readings a pump a second), e.g. --pumps 20 "
                          f"--hours 2. Got {pumps} x {hours:g} = {pumps * hours:g} instead.")

    def show(row: dict[str, Any]) -> None:
        if not json_out:
            delay = row["median_delay_s"]
            name = row["detector"] + (
                " (no gate)" if not row["fast_gate"] else " (no cross gate)"
                if not row["cross_gate"] else "" if row["fleet_prior"] else " (no fleet prior)"
            ) + (" (feedback)" if row["feedback"] else "")
            after = row["false_alerts_per_device_hour_after_first_hour"]
            fb = (f"; labelled {row['labelled_false']} false / {row['labelled_true']} true, "
                  f"held back {row['suppressed']}" if row["feedback"] else "")
            typer.echo(
                f"{name:<36} alerts {row['alerts']:>5}  false {row['false_alerts']:>5} "
                f"({row['false_alerts_per_device_hour']:.2f} per device-hour)  faults found "
                f"{row['found']}/{row['faults']} (named {row['named']})  under alert "
                f"{100 * row['alert_time_share']:.1f}% of the time (false "
                f"{100 * row['false_alert_time_share']:.1f}%)  median delay "
                f"{'-' if delay is None else f'{delay:.0f} s'}; false per device-hour by hour "
                f"{' '.join(f'{x:.2f}' for x in row['false_alerts_per_device_hour_by_hour'])}"
                f" (after the first hour {'-' if after is None else f'{after:.2f}'}){fb}"
                f"; white noise "
                f"{row['noise_alarms_per_stream_hour']:.2f} alarms per stream-hour  "
                f"[{row['seconds']:.0f} s]")

    names = [d.strip() for d in detectors.split(",") if d.strip()]
    # a name the gateway does not take, or a bad number, fails before the header
    check_fleet_options(names, pumps=pumps, hours=hours, seed=seed, fault_rate_per_h=fault_rate)
    if not json_out:
        typer.echo(f"{pumps} pumps x {hours:g} h at 1 Hz, {fault_rate:g} faults per pump-hour, "
                   f"seed {seed}:", err=True)
    res = bench_fleet(names, pumps=pumps, hours=hours, seed=seed, fault_rate_per_h=fault_rate,
                      fast_gate=(True, False) if compare_gate else (True,),
                      cross_gate=(True, False) if compare_cross else (True,),
                      fleet_prior=(True, False) if compare_prior else (True,),
                      feedback=(False, True) if feedback else (False,), on_detector=show)
    res.update(machine_fields())
    if json_out:
        typer.echo(json.dumps(res))
    else:
        typer.echo(machine_line())  # where the [seconds] above were measured
