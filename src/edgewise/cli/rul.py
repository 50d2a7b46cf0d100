"""``edgewise train rul`` and ``edgewise predict rul``: remaining useful life from CSV histories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import Json, app, fail

train_app = typer.Typer(help="Train batch models from histories.", no_args_is_help=True)
predict_app = typer.Typer(help="Score devices with a trained model.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(predict_app, name="predict")


def _read(data: Path):
    """One table from a CSV file, or from every ``*.csv``/``*.csv.gz`` in a directory."""
    frame = _read_any(data)
    # A saved pandas index ("Unnamed: 0") would be a leaky "sensor"; drop it.
    return frame.loc[:, ~frame.columns.astype(str).str.match(r"^Unnamed: \d+$")]


def _read_any(data: Path):
    import pandas as pd

    if data.is_dir():
        files = sorted([*data.glob("*.csv"), *data.glob("*.csv.gz")])
        if not files:
            raise fail(f"--data {str(data)!r} holds no *.csv or *.csv.gz files")
        return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    if not data.is_file():
        raise fail(f"--data {str(data)!r} is neither a CSV file nor a directory")
    try:
        return pd.read_csv(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise fail(f"--data {str(data)!r} is not a readable CSV: {exc}") from None


def _names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


@train_app.command("rul")
def train_rul(
    data: Annotated[Path, typer.Option(help="CSV of run-to-failure histories, or a dir of CSVs.")],
    out: Annotated[Path, typer.Option(help="Where to write the model file.")],
    unit_column: Annotated[str, typer.Option(help="Column naming the unit/device.")] = "unit",
    time_column: Annotated[str, typer.Option(help="Column ordering each unit's rows.")] = "cycle",
    condition_columns: Annotated[
        str | None, typer.Option(help="Comma-separated operating-setting columns.")
    ] = None,
    sensor_columns: Annotated[
        str | None, typer.Option(help="Comma-separated sensors (default: all other numerics).")
    ] = None,
    cap: Annotated[float, typer.Option(help="RUL target cap (steps).")] = 125.0,
    window: Annotated[int, typer.Option(help="Rows per trailing window.")] = 30,
    models: Annotated[str, typer.Option(help="Comma-separated members: gbm, cnn.")] = "gbm",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    json_out: Json = False,
) -> None:
    """Fit a RUL model on histories that each end at the unit's failure; save it versioned."""
    from edgewise.models.rul import RULModel

    df = _read(data)
    model = RULModel(
        unit_column=unit_column,
        time_column=time_column,
        condition_columns=_names(condition_columns),
        sensor_columns=_names(sensor_columns),
        cap=cap,
        window=window,
        models=tuple(_names(models) or ()),
        random_state=seed,
    ).fit(df)
    size = model.save(out)
    head = model.header()
    summary = {
        "model": str(out),
        "bytes": size,
        "units": head["n_units"],
        "features": len(head["features"]),
        "format_version": head["format_version"],
        "training_data_sha256": head["training_data_sha256"],
    }
    if json_out:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"trained RUL model on {summary['units']} units, {summary['features']} features; "
            f"wrote {out} ({size} bytes, format v{summary['format_version']})"
        )


@predict_app.command("rul")
def predict_rul(
    model: Annotated[Path, typer.Option(help="A model file from 'edgewise train rul'.")],
    data: Annotated[Path, typer.Option(help="CSV of current histories, one or more units.")],
    json_out: Json = False,
) -> None:
    """Print each unit's remaining useful life at its last row, with its interval."""
    from edgewise.models.rul import load_model

    if not model.is_file():
        raise fail(f"--model {str(model)!r} does not exist")
    rul = load_model(model)
    df = _read(data)
    point, low, high = rul.predict_interval(df)
    units = rul.predict(df).index
    level = round(100 * (1 - rul.alpha))
    rows = [
        {"unit": u.item() if hasattr(u, "item") else u, "rul": round(float(p), 2),
         "low": round(float(lo), 2), "high": round(float(hi), 2)}
        for u, p, lo, hi in zip(units, point, low, high, strict=True)
    ]
    if json_out:
        typer.echo(json.dumps({"interval": level, "predictions": rows}))
        return
    typer.echo(f"{'unit':>12}  {'RUL':>8}  {level}% interval")
    for r in rows:
        typer.echo(f"{r['unit']!s:>12}  {r['rul']:8.1f}  [{r['low']:.1f}, {r['high']:.1f}]")
