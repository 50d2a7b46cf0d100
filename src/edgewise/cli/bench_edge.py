"""``edgewise bench edge``: size, RAM, latency and parity of exported models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import Json, bench_app, fail, out_path

_ROWS = [
    ("detector", "c_ram_bytes", "C RAM (state), bytes", "<= 2048"),
    ("detector", "c_flash_tables_bytes", "C flash (initial-state tables), bytes", ""),
    ("detector", "c_code_bytes", "C code, bytes (host x86-64 -O2)", ""),
    ("detector", "c_ns_per_reading", "C ns per reading", "< 1000"),
    ("detector", "python_ns_per_reading", "Python ns per reading (score_one+learn_one)", ""),
    ("detector", "python_batch_ns_per_reading", "Python ns per reading (Numba score_many)", ""),
    ("detector", "parity_max_abs_err", "max abs score error C vs Python", "< 1e-9"),
    ("detector", "alerts_c", "alerts (score >= 0.9) C; Python equal", ""),
    ("detector_ewzscore", "c_ram_bytes", "C RAM (state), bytes", ""),
    ("detector_ewzscore", "c_ns_per_reading", "C ns per reading", ""),
    ("detector_ewzscore", "python_ns_per_reading",
     "Python ns per reading (score_one+learn_one)", ""),
    ("detector_ewzscore", "python_batch_ns_per_reading",
     "Python ns per reading (Numba score_many)", ""),
    ("detector_ewzscore", "onnx_ns_per_call", "onnxruntime ns per call (1 reading)", ""),
    ("detector_ewzscore", "parity_max_abs_err", "max abs score error C (float32) vs Python",
     "< 1e-3"),
    ("multivariate", "c_ram_bytes", "C RAM (4 metrics), bytes", ""),
    ("multivariate", "c_code_bytes", "C code, bytes (host x86-64 -O2)", ""),
    ("multivariate", "c_ns_per_reading", "C ns per reading (score+learn)", ""),
    ("multivariate", "python_ns_per_reading", "Python ns per reading (score_one+learn_one)",
     ""),
    ("multivariate", "parity_max_abs_err", "max abs score error C vs Python", "< 1e-9"),
    ("multivariate", "onnx_bytes", "ONNX (frozen T² step) bytes", ""),
    ("multivariate", "onnx_ns_per_call", "onnxruntime ns per call (1 row)", ""),
    ("multivariate", "onnx_t2_max_rel_err", "max rel T² error ONNX vs Python", "< 1e-9"),
    ("rul_standin", "c_flash_bytes", "C flash (model tables), bytes", "< 32768"),
    ("rul_standin", "c_code_bytes", "C flash incl. code, bytes (host x86-64)", ""),
    ("rul_standin", "rmse_python", "RMSE Python (train units 81-100, capped RUL)", ""),
    ("rul_standin", "rmse_c", "RMSE C float32", "within 0.5 of Python"),
    ("rul_standin", "c_max_abs_diff", "max abs diff C vs Python (cycles)", ""),
    ("rul_standin", "rmse_onnx", "RMSE ONNX", ""),
    ("rul_standin", "onnx_bytes", "ONNX size, bytes", ""),
    ("rul_standin", "int8_c_flash_bytes", "C int8 flash (tables), bytes", ""),
    ("rul_standin", "rmse_c_int8", "RMSE C int8", ""),
    ("rul_standin", "pruned75_c_flash_bytes", "C flash, first 75 of 150 trees, bytes", ""),
    ("rul_standin", "rmse_c_pruned75", "RMSE C, first 75 trees", ""),
    ("rul_standin", "python_us_per_inference", "Python µs per single inference", ""),
    ("rul_standin", "onnx_us_per_inference", "onnxruntime µs per single inference", ""),
    ("rul_standin", "c_us_per_inference", "C µs per row (float32, batch via ctypes)", ""),
    ("rul_standin", "c_int8_us_per_inference", "C µs per row (int8, batch via ctypes)", ""),
    ("rul", "c_flash_bytes", "RULModel cut, compact C flash (tables), bytes", "< 32768"),
    ("rul", "c_code_bytes", "RULModel cut, C flash incl. code, bytes (host x86-64)", ""),
    ("rul", "rmse_python", "RULModel whole, RMSE Python (FD001 test, RUL capped 125)", ""),
    ("rul", "rmse_uncapped", "RULModel whole, RMSE Python (uncapped RUL)", ""),
    ("rul", "rmse_c", "RULModel cut, RMSE C (RUL capped 125)", "within 0.5 of Python"),
    ("rul", "rmse_c_uncapped", "RULModel cut, RMSE C (uncapped RUL)", ""),
    ("rul", "cut_validation_rmse", "RULModel cut, RMSE on held-out train units", ""),
    ("rul", "c_us_per_inference", "RULModel cut, C µs per row (batch via ctypes)", ""),
    ("rul", "full_c_flash_bytes", "RULModel whole, C float32 flash, bytes", ""),
    ("rul", "full_rmse_c", "RULModel whole, RMSE C float32", ""),
    ("rul", "full_c_max_abs_diff", "RULModel whole, max abs diff C vs Python (cycles)", ""),
    ("rul", "full_compact_c_flash_bytes", "RULModel whole, compact C flash, bytes", ""),
    ("rul", "full_compact_rmse_c", "RULModel whole, RMSE compact C", ""),
    ("rul", "float32_cut_c_flash_bytes", "best float32-layout cut in 32 KB: flash, bytes", ""),
    ("rul", "float32_cut_rmse_c", "best float32-layout cut in 32 KB: RMSE C", ""),
    ("mlp", "rmse_torch", "MLP RMSE torch", ""),
    ("mlp", "rmse_c_float32", "MLP RMSE C float32", ""),
    ("mlp", "rmse_c_int8", "MLP RMSE C int8 weights", ""),
    ("mlp", "rmse_onnx_float32", "MLP RMSE ONNX float32", ""),
    ("mlp", "rmse_onnx_int8", "MLP RMSE ONNX int8 (static PTQ, calibrated on FD001 rows)", ""),
    ("mlp", "c_flash_bytes", "MLP C flash float32, bytes", ""),
    ("mlp", "c_int8_flash_bytes", "MLP C flash int8, bytes", ""),
    ("mlp", "onnx_bytes", "MLP ONNX float32, bytes", ""),
    ("mlp", "onnx_int8_bytes", "MLP ONNX int8, bytes", ""),
    ("agent", "outbox_puts_per_s", "agent outbox messages/s (SQLite WAL, fsync each)", ""),
    ("agent", "outbox_bytes_per_message", "agent outbox bytes per 1-metric message", ""),
]


def _shared_default() -> Path:
    import os

    return Path(os.environ.get("EDGEWISE_SHARED_DATA", "../shared/data"))


def _check_data(data: Path) -> None:
    """Fail in one line, before any work, unless ``data`` holds the files the run reads."""
    from edgewise.bench.edge import NAB_SERIES

    cmapss = data / "cmapss"
    for shown, found in (
        (f"nab/data/{NAB_SERIES}", [data / "nab" / "data" / NAB_SERIES]),
        ("cmapss/train_FD001.txt.gz", [cmapss / "train_FD001.txt.gz"]),
        *((f"cmapss/{n}_FD001.txt[.gz]", [cmapss / f"{n}_FD001.txt.gz", cmapss / f"{n}_FD001.txt"])
          for n in ("test", "RUL")),
    ):
        if not any(f.is_file() for f in found):
            raise fail(f"--data must be a folder holding nab/ (the NAB corpus) and cmapss/ "
                       f"(C-MAPSS FD001), e.g. ../shared/data. Got {str(data)!r}, which has "
                       f"no {shown}.")


def _measure(data: Path, repeats: int, shown: bool) -> dict[str, Any]:
    """:func:`edgewise.bench.edge.run` under a progress bar on stderr (one step per part,
    the part being measured named), as ``bench nab`` and ``bench forecast`` show theirs;
    none where ``shown`` is false (``--json``)."""
    from rich.console import Console
    from rich.progress import Progress

    from edgewise.bench.edge import SECTIONS, run

    with Progress(console=Console(stderr=True), transient=True, disable=not shown) as bar:
        task = bar.add_task(f"edge: {SECTIONS[0]}", total=len(SECTIONS))

        def progress(name: str) -> None:
            left = SECTIONS[SECTIONS.index(name) + 1:]
            bar.update(task, advance=1, description=f"edge: {left[0] if left else 'done'}")

        return run(data, repeats=repeats, progress=progress)


@bench_app.command("edge")
def bench_edge(
    json_out: Json = False,
    data: Annotated[Path, typer.Option(help="Folder holding nab/ and cmapss/.",
                                       default_factory=_shared_default)] = ...,  # type: ignore
    repeats: Annotated[int, typer.Option(help="Timing repeats (median reported).")] = 5,
    out: Annotated[str | None, typer.Option(
        metavar="FILE", help="Also write a Markdown results file (its folder made if missing).")
    ] = None,
) -> None:
    """Exported detector and RUL model: RAM, flash, latency, parity (Python/ONNX/C)."""
    from edgewise.bench._machine import command_line, machine_fields, machine_line
    from edgewise.bench.detect_speed import check_sizes

    # every option is checked before the minutes of measuring, not when they are spent
    check_sizes(repeats=repeats)
    _check_data(data)
    out_file = None if out is None else out_path("--out", out, folder=False,
                                                 example="benchmarks/results/edge.md",
                                                 inputs=[("--data", data)])
    res = _measure(data, repeats, shown=not json_out)
    res.update(machine_fields())
    if out_file is not None:
        command = command_line(["bench", "edge", *(["--json"] if json_out else []), "--data",
                                str(data), "--repeats", str(repeats), "--out", str(out)])
        lines = [
            "# edge: exported models on this machine", "",
            f"Command: `{command}`", "",
            (f"Machine: {res['machine']}, Python {res['python']}; timings are medians of "
             f"{repeats} runs."),
            (f"Detector: the default ContextLikelihood (and EWZScore for comparison) over NAB "
             f"`{res['detector']['series']}` ({res['detector']['readings']} readings); "
             f"ContextLikelihood also over all {res['detector']['all_nab']['series']} NAB series "
             f"({res['detector']['all_nab']['readings']} readings): identical scores on all "
             f"but {len(res['detector']['all_nab']['series_differing'])} "
             f"({', '.join(res['detector']['all_nab']['series_differing'])}), whose "
             f"transitions overflow the {res['detector']['all_nab']['capacity']}-key set "
             f"(max abs error {res['detector']['all_nab']['parity_max_abs_err']:.3g}; alerts "
             f"{res['detector']['all_nab']['alerts_c']} C vs "
             f"{res['detector']['all_nab']['alerts_python']} Python); with "
             f"{res['detector']['all_nab']['keys_needed_max'] + 1} keys "
             f"({res['detector']['all_nab']['exact_capacity_ram_bytes']} bytes of RAM) the "
             "max abs error is "
             f"{res['detector']['all_nab']['exact_capacity_parity_max_abs_err']:.3g}."),
            (f"Multivariate: default Mahalanobis over {res['multivariate']['data']}, "
             f"{res['multivariate']['readings']} rows."),
            (f"RUL (`rul`): {res['rul']['model']}; {res['rul']['n_features']} window features; "
             f"exported as {res['rul']['export']} (of the cuts that fit 32 KB, the most accurate "
             "on a fifth of the training units, held out of a model fitted on the rest and "
             "each cut at 10 random cycles; the test set scores it once: `cut_chosen_on`); "
             "RMSEs against the test units' true RUL capped at 125, as `bench cmapss` and the "
             "published C-MAPSS results score (`*_uncapped`: against the raw RUL)."),
            (f"RUL stand-in (`rul_standin`, the earlier figure): {res['rul_standin']['model']}; "
             f"{res['rul_standin']['n_train']} train / {res['rul_standin']['n_test']} test "
             f"windows (every window of training units 81-100, RUL capped at 125: another test "
             f"set than `rul`'s, so its RMSEs do not compare with `rul`'s), "
             f"{res['rul_standin']['n_features']} features."), "",
            "| part | figure | value | goal |", "|---|---|---|---|",
        ]
        for part, key, label, goal in _ROWS:
            v = res[part][key]
            shown = f"{v:.4g}" if isinstance(v, float) else str(v)
            lines.append(f"| {part} | {label} | {shown} | {goal} |")
        lines += [
            "", "Notes:",
            "- Latencies vary run to run on a machine other jobs share (medians shown).",
            "- onnxruntime per-call figures are dominated by the Python -> onnxruntime call cost;",
            "  the C per-row figures are a batch loop called once through ctypes.",
            "- int8 trees: features coded to 0..255 per feature (range from the training rows),",
            "  int16 leaves; flash counts the model tables only (code on top: see incl. code).",
            "- 'first 75 trees' is pruning by truncating the boosted ensemble.",
            "- RULModel: only the boosted member is exported; the window features and the",
            "  per-regime normaliser are computed before the call. Whole, its 400 trees need",
            "  196 KB (float32) or 123 KB (compact); the cut keeps the first trees to a depth.",
            "  Compact: each distinct (feature, threshold) stored once as float32 and indexed by",
            "  one byte, 4 bytes per node, int16 leaves (splits unchanged). C takes float32",
            "  features (Python float64): a few units cross a split, hence the max diff.",
            "- ContextLikelihood C works in double (its symbol grid and hashed transitions need",
            "  it for parity) and keeps the transitions its two members have seen as one set of",
            "  16-bit keys, as many as fit under 2 KiB (Python: 2 x 2^14 int32 counters, of",
            "  which only 'seen or not' is read).",
            "- The univariate detector has no ONNX graph (uint64 hashing of a growing",
            "  transition set); Mahalanobis's ONNX is the frozen scoring step (T², double).",
            "", "```json", json.dumps(res, indent=1), "```", "",
        ]
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text("\n".join(lines))
    if json_out:
        typer.echo(json.dumps(res))
        return
    for part, key, label, goal in _ROWS:
        typer.echo(f"{part:8} {label:48} {res[part][key]:>12.6g}  {goal}")
    typer.echo(f"{machine_line()}; timings are medians of {repeats} runs")
