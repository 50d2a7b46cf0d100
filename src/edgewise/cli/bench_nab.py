"""``edgewise bench nab``: run a detector over NAB and print the three normalised scores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import Json, bench_app, fail, out_path


@bench_app.command("nab")
def bench_nab(
    data: Annotated[Path, typer.Option("--data", help="NAB root (data/, labels/, config/).")],
    out: Annotated[str, typer.Option(
        "--out", metavar="DIR", help="Folder for the NAB-layout results (made if missing).")],
    detector: Annotated[
        str, typer.Option("--detector", help="Detector name (see edgewise.detect.DETECTORS).")
    ] = "context-likelihood",
    bootstrap: Annotated[
        int,
        typer.Option(
            "--bootstrap",
            min=0,
            help="Also score the two halves of the corpus and N file-bootstrap resamples "
            "(0: off).",
        ),
    ] = 0,
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="Another detector's NAB results folder to compare with on the same "
            "resamples (e.g. reference-results/numenta); needs --bootstrap.",
        ),
    ] = None,
    json_out: Json = False,
) -> None:
    """Score a detector on the Numenta Anomaly Benchmark under NAB's rules.

    With ``--bootstrap N`` it also says how far the score can be trusted: the score of each
    half of the files, and the 5-95% range over N resamples of the files.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table
    from rich.text import Text

    from edgewise.bench.nab import data_files, run_nab
    from edgewise.detect import DETECTORS

    if detector not in DETECTORS:
        raise fail(f"--detector: Unknown detector {detector!r}. Choose one of: "
                   f"{', '.join(sorted(DETECTORS))}.")
    inputs = [("--data", data)] + ([("--reference", reference)] if reference else [])
    out_dir = out_path("--out", out, folder=True, example="/tmp/nab", inputs=inputs)
    if not (data / "labels" / "combined_windows.json").is_file():
        raise fail(f"--data {str(data)!r} is not a NAB root: no labels/combined_windows.json.")
    try:
        n = len(data_files(data))
    except FileNotFoundError as exc:
        raise fail(str(exc)) from None
    if reference is not None and bootstrap == 0:
        raise fail("--reference needs --bootstrap N (N > 0): the comparison uses the resamples.")
    ref_scores = None
    if reference is not None:
        from edgewise.bench.nab_scorer import load_results_dir

        try:
            _, ref_scores = load_results_dir(reference)
        except FileNotFoundError as exc:
            raise fail(f"--reference {str(reference)!r}: {exc}") from None
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=json_out) as bar:
        task = bar.add_task(f"NAB: {detector}", total=n)
        run = run_nab(data, out_dir, detector, on_file=lambda _: bar.advance(task))
    summary = run.summary()
    robust = None
    if bootstrap > 0:
        robust = _robustness(data, run.results_dir, bootstrap, ref_scores, reference)
        summary["robustness"] = robust.summary()
    if json_out:
        typer.echo(json.dumps(summary))
        return
    table = Table(title=f"NAB v1.1, detector '{detector}' ({run.n_files} files)")
    table.add_column("profile")
    table.add_column("score", justify="right")
    table.add_column("threshold", justify="right")
    for name, p in run.result.profiles.items():
        table.add_row(Text(name), f"{p.normalized:.2f}", f"{p.threshold:.4f}")
    Console().print(table)
    typer.echo(f"results: {run.results_dir}  ({summary['points_per_second']:,} points/s)")
    if robust is not None:
        Console().print(_robustness_table(robust))


def _robustness(data: Path, results_dir: Path, n: int, ref: Any, ref_path: Path | None) -> Any:
    from edgewise.bench.nab_robust import robustness
    from edgewise.bench.nab_scorer import load_profiles, load_results_dir, load_windows

    ts, scores = load_results_dir(results_dir)
    windows = load_windows(data / "labels" / "combined_windows.json")
    profiles = load_profiles(data / "config" / "profiles.json")
    if ref is not None:
        absent = sorted(set(scores) - set(ref))
        if absent:
            raise fail(f"--reference {str(ref_path)!r} has no results for {absent[0]!r}.")
    name = ref_path.name if ref_path is not None else "reference"
    return robustness(ts, scores, windows, profiles, n, reference=ref, reference_name=name)


def _robustness_table(r: Any) -> Any:
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Halves of the files; {r.resamples} file resamples (5-95%)")
    table.add_column("profile")
    for col in ("even", "odd", "5-95%"):
        table.add_column(col, justify="right")
    if r.reference is not None:
        table.add_column(f"- {escape(r.reference)}", justify="right")  # a folder's name
        table.add_column("P(>)", justify="right")
    short = {"reward_low_FP_rate": "low FP", "reward_low_FN_rate": "low FN"}
    for p in r.ci:
        row: list[Any] = [
            Text(short.get(p, p)),  # profile names come from the NAB root's profiles.json
            f"{r.halves['even'][p]:.2f}",
            f"{r.halves['odd'][p]:.2f}",
            f"{r.ci[p][0]:.1f} .. {r.ci[p][1]:.1f}",
        ]
        if r.reference is not None:
            lo, hi = r.diff_ci[p]
            row += [f"{r.diff_mean[p]:+.2f} ({lo:+.1f} .. {hi:+.1f})", f"{r.p_better[p]:.2f}"]
        table.add_row(*row)
    return table


@bench_app.command("nab-split")
def bench_nab_split(
    data: Annotated[Path, typer.Option("--data", help="NAB root (data/, labels/, config/).")],
    tune_on: Annotated[
        str, typer.Option("--tune-on", help="Half of the files searched on: even or odd.")
    ] = "even",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Search steps.")] = 150,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the search moves.")] = 1,
    detector: Annotated[
        str, typer.Option("--detector", help="Detector name (see edgewise.detect.DETECTORS).")
    ] = "context-likelihood",
    json_out: Json = False,
) -> None:
    """Tune a detector's constants on one half of NAB and score the other half.

    A NAB score is in-sample when the constants were searched on NAB; if the untouched
    half falls while the searched half rises, the search fitted those files.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from edgewise.bench._machine import machine_fields
    from edgewise.bench.nab_robust import tune_on_half
    from edgewise.detect import DETECTORS

    if detector not in DETECTORS:
        raise fail(f"--detector: Unknown detector {detector!r}. Choose one of: "
                   f"{', '.join(sorted(DETECTORS))}.")
    if tune_on not in ("even", "odd"):
        raise fail(f"--tune-on must be 'even' or 'odd'; got {tune_on!r}.")
    if not (data / "labels" / "combined_windows.json").is_file():
        raise fail(f"--data {str(data)!r} is not a NAB root: no labels/combined_windows.json.")
    with Progress(console=Console(stderr=True), transient=True, disable=json_out) as bar:
        task = bar.add_task(f"search on the {tune_on} half", total=steps)
        result = tune_on_half(data, detector, tune_on, steps, seed,
                              on_step=lambda _: bar.advance(task))
    if json_out:
        typer.echo(json.dumps({**result.summary(), **machine_fields()}))
        return
    table = Table(title=f"'{detector}' searched on the {tune_on} half ({steps} steps)")
    table.add_column("files")
    table.add_column("before (std / low FP / low FN)", justify="right")
    table.add_column("after", justify="right")
    for part in ("tuned", "other", "all"):
        row = [" / ".join(f"{v:.2f}" for v in d[part].values())
               for d in (result.before, result.after)]
        table.add_row(part, *row)
    Console().print(table)
    typer.echo(f"moved: {result.params}")
