"""Reading the tables users hand to the command line: CSV files of readings, histories and
labels, as spreadsheets and data loggers write them.

One reader for every command (``detect``, ``quality``, ``train rul``, ``label suggest``),
so each accepts the same files: comma or semicolon separated, a UTF-8 byte-order mark,
gzip, and decimal commas in semicolon files.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd

from edgewise.errors import QualityError
from edgewise.telemetry import epoch_unit_ns

__all__ = ["read_table", "separator", "time_ns"]


def time_ns(col: pd.Series) -> np.ndarray:
    """A time column as int64 UTC nanoseconds: epoch numbers in s, ms, us or ns (told by
    size, as :func:`edgewise.telemetry.epoch_unit_ns` does for telemetry), or RFC 3339 text.

    >>> time_ns(pd.Series([1.7e9, 1.7e9 + 60])).tolist() == time_ns(
    ...     pd.Series([1_700_000_000_000, 1_700_000_060_000])).tolist()
    True
    >>> int(time_ns(pd.Series(["2023-11-14T22:13:20Z"]))[0])
    1700000000000000000
    """
    if pd.api.types.is_numeric_dtype(col):
        x = col.astype(float).to_numpy()
        big = np.nanmax(np.abs(x)) if len(x) else 0.0
        return (x * float(epoch_unit_ns(big))).astype(np.int64)
    # to ns before int64: pandas may parse text at microsecond resolution
    return pd.to_datetime(col, utc=True).to_numpy(dtype="datetime64[ns]").astype(np.int64)


def separator(header: str) -> str:
    """The field separator of a CSV file, told from its header line: ``;`` where it has
    more semicolons than commas (a European spreadsheet's export), else ``,``.

    >>> separator("zeit;druck;temp"), separator("ts,value")
    (';', ',')
    """
    return ";" if header.count(";") > header.count(",") else ","


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a comma- or semicolon-separated file, optionally gzipped (the separator is
    detected; in a semicolon file, numbers may have a decimal comma, as European
    spreadsheets write them).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = Path(d) / "pump.csv"
    ...     _ = f.write_text("zeit;druck\\n2024-01-01 00:00:00;1,5\\n")
    ...     read_table(f)["druck"].tolist()
    [1.5]

    Raises :class:`~edgewise.errors.QualityError` when the file is missing, empty or has
    no data rows.
    """
    p = Path(path)
    if not p.is_file():
        raise QualityError(f"File {str(p)!r} does not exist.")
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8-sig", errors="replace") as f:
        head = f.readline()
    if not head.strip():
        raise QualityError(f"File {str(p)!r} is empty; expected a header row and data rows.")
    sep = separator(head)
    try:
        df = pd.read_csv(p, sep=sep, encoding="utf-8-sig", skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise QualityError(
            f"File {str(p)!r} is empty; expected a header row and data rows."
        ) from None
    except pd.errors.ParserError as exc:
        raise QualityError(f"File {str(p)!r} is not a valid CSV: {exc}".splitlines()[0]) from None
    if df.empty:
        raise QualityError(f"File {str(p)!r} has a header but no data rows.")
    df.columns = [str(c).strip() for c in df.columns]
    if sep == ";":
        _decimal_commas(df)
    return df


_DECIMAL_COMMA = r"^[+-]?(\d+,\d*|,\d+|\d+)([eE][+-]?\d+)?$"


def _decimal_commas(df: pd.DataFrame) -> None:
    """Turn text columns written with a decimal comma (``0,125``: a semicolon file from a
    European spreadsheet) into numbers, in place. A column is converted only when every
    non-empty value is such a number and at least one has a comma; anything else is left
    for the numeric check to name."""
    for col in df.columns:
        raw = df[col]
        if raw.dtype != object and not pd.api.types.is_string_dtype(raw):
            continue
        text = raw.dropna().astype(str).str.strip()
        text = text[text != ""]
        if text.empty or not text.str.contains(",", regex=False).any():
            continue
        if text.str.fullmatch(_DECIMAL_COMMA).all():
            df[col] = pd.to_numeric(raw.astype(str).str.strip().str.replace(",", ".",
                                                                           regex=False),
                                    errors="coerce").where(raw.notna())
