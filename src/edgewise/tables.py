"""Reading the tables users hand to the command line: CSV files of readings, histories and
labels, as spreadsheets and data loggers write them.

One reader for every command (``detect``, ``quality``, ``train rul``, ``label suggest``),
so each accepts the same files: comma or semicolon separated, a UTF-8 byte-order mark,
gzip, decimal commas in semicolon files, and UTF-8 or Windows-1252 text. The small tables
read line by line (``label import``, ``--failures``) come through :func:`read_text`. Both
first pass :func:`check_csv_file`, so a directory, a binary file or a spreadsheet workbook
is refused in one line naming the path and what is wrong.
"""

from __future__ import annotations

import codecs
import gzip
import itertools
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from edgewise.errors import QualityError
from edgewise.telemetry import epoch_unit_ns

__all__ = ["check_csv_file", "read_table", "read_text", "separator", "time_ns"]


def time_ns(col: pd.Series) -> np.ndarray:
    """A time column as int64 UTC nanoseconds: epoch numbers in s, ms, us or ns (told by
    size, as :func:`edgewise.telemetry.epoch_unit_ns` does for telemetry), or RFC 3339 text.

    Text times may mix offsets; a time without one (``2024-01-01T00:00:00``) is read as
    UTC, as ``edgewise detect`` reads it.

    >>> time_ns(pd.Series([1.7e9, 1.7e9 + 60])).tolist() == time_ns(
    ...     pd.Series([1_700_000_000_000, 1_700_000_060_000])).tolist()
    True
    >>> int(time_ns(pd.Series(["2023-11-14T22:13:20Z"]))[0])
    1700000000000000000
    >>> time_ns(pd.Series(["2024-01-01T00:00:00", "2024-01-01T01:00:00+01:00"])).tolist()
    [1704067200000000000, 1704067200000000000]

    Raises :class:`~edgewise.errors.QualityError` naming the first row whose cell is empty
    or holds no time.
    """
    name = "time" if col.name is None else str(col.name)
    empty = col.isna().to_numpy().copy()
    if not pd.api.types.is_numeric_dtype(col) and not empty.all():
        empty |= (col.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise QualityError(
            f"Time column {name!r} has an empty cell in row {i + 1}; every row needs a time "
            "(an epoch number or RFC 3339 text)."
        )
    if pd.api.types.is_numeric_dtype(col):
        x = col.astype(float).to_numpy()
        if not np.isfinite(x).all():
            i = int(np.flatnonzero(~np.isfinite(x))[0])
            raise _not_a_time(name, i, col.iloc[i])
        big = np.nanmax(np.abs(x)) if len(x) else 0.0
        if pd.api.types.is_integer_dtype(col):  # exact to the ns, where floats are not
            return col.to_numpy(dtype=np.int64) * np.int64(epoch_unit_ns(big))
        return (x * float(epoch_unit_ns(big))).astype(np.int64)
    try:
        parsed = pd.to_datetime(col, utc=True)
    except (ValueError, TypeError):
        # one format guessed from the first cell did not fit them all (a naive time
        # beside one with an offset, a changed precision): each cell on its own
        parsed = pd.to_datetime(col, utc=True, format="mixed", errors="coerce")
        if parsed.isna().any():
            i = int(np.flatnonzero(parsed.isna().to_numpy())[0])
            raise _not_a_time(name, i, col.iloc[i]) from None
    # to ns before int64: pandas may parse text at microsecond resolution
    return parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)


def _not_a_time(name: str, i: int, value: object) -> QualityError:
    return QualityError(
        f"Time column {name!r} must hold epoch numbers or RFC 3339 times (a time without "
        f"an offset is read as UTC); row {i + 1} has {value!r}."
    )


def separator(header: str, lines: Iterable[str] = ()) -> str:
    """The field separator of a CSV file, told from its header line and, where that leaves
    it open, from the first data ``lines``. Separators inside quotes do not count.

    ``;`` where the header has more semicolons than commas (a European spreadsheet's
    export), ``,`` where it has more commas. On a tie (one column, say) the separator of
    which every data line has as many as the header wins, a comma first: a one-column file
    of decimal commas (``20,35``) is a semicolon file.

    >>> separator("zeit;druck;temp"), separator("ts,value"), separator('zeit;"Temp, °C"')
    (';', ',', ';')
    >>> separator("druck", ["20,35", "21,5"]), separator("druck", ["20", "21.5"])
    (';', ',')
    """
    heads = _counts(header)
    commas, semis = heads[0] if heads else (0, 0)
    if commas != semis:
        return ";" if semis > commas else ","
    rows = _counts("\n".join(line.rstrip("\r\n") for line in lines))
    if all(c == commas for c, _ in rows):
        return ","
    if all(s == semis for _, s in rows):
        return ";"
    return ","


def _counts(text: str) -> list[tuple[int, int]]:
    """Commas and semicolons outside quoted fields in each non-blank record of ``text``.

    A field is quoted where it opens with ``"`` (after blanks); ``""`` inside it is a
    quote, and it may span lines. A ``"`` anywhere else is text, as the csv module and
    pandas read it.

    >>> _counts('a;"b, c";d\\n"x""y,z",1 "2,3"')
    [(0, 2), (2, 0)]
    """
    out: list[tuple[int, int]] = []
    commas = semis = 0
    quoted = closed = False
    start = blank = True
    for ch in text + "\n":
        if quoted:
            if ch == '"':
                quoted, closed = False, True
            continue
        if ch == '"' and (start or closed):
            quoted, closed, start, blank = True, False, False, False
            continue
        closed = False
        if ch == "\n":
            if not blank:
                out.append((commas, semis))
            commas = semis = 0
            start = blank = True
        elif ch in ",;":
            commas += ch == ","
            semis += ch == ";"
            start, blank = True, False
        elif not ch.isspace():
            start = blank = False
    return out


#: Data lines read, besides the header, to tell the separator.
_SAMPLE_LINES = 50
#: Tried in turn: UTF-8 (with or without a byte-order mark), then what spreadsheets in
#: Western Europe write (Windows-1252), then Latin-1, which decodes any byte.
_ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")


#: Bytes read from the start of a file to tell text from binary data.
_SNIFF_BYTES = 64 * 1024
#: Files that are often handed over as "the CSV": what they are, and what to do instead.
_MAGIC = (
    (b"PK\x03\x04", "it is a ZIP archive (an .xlsx or .ods workbook?); export the sheet as CSV"),
    (b"\xd0\xcf\x11\xe0", "it is an Office document (an .xls workbook?); export it as CSV"),
    (b"\x1f\x8b", "it is gzip data; name it *.gz (gzipped CSV is read as such)"),
    (b"\xff\xfe", "it is UTF-16 text; save it as UTF-8"),
    (b"\xfe\xff", "it is UTF-16 text; save it as UTF-8"),
    (b"PAR1", "it is a Parquet file"),
    (b"SQLite format 3\x00", "it is an SQLite database"),
)


def check_csv_file(path: str | Path, name: str = "File") -> Path:
    r"""Return ``path`` as a :class:`~pathlib.Path` if it is a file of CSV text, else raise
    :class:`~edgewise.errors.QualityError` with one line naming ``name``, the path and
    what is wrong: it does not exist, is a directory, cannot be read, or is not text
    (UTF-8 or Windows-1252; a ``*.gz`` file must be gzip of such text). The first 64 KiB
    are looked at: a NUL byte, a byte that neither encoding decodes, or mostly control
    characters make it binary.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> check_csv_file(d, "--failures")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: --failures '...' is a directory, expected a CSV file.
    >>> _ = (d / "x.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    >>> check_csv_file(d / "x.csv")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: File '.../x.csv' is not text (UTF-8/CP1252) CSV: it holds a NUL byte at offset 8 (binary data).
    """  # noqa: E501
    p = Path(path)
    where = f"{name} {str(p)!r}"
    if p.is_dir():
        raise QualityError(f"{where} is a directory, expected a CSV file.")
    if not p.exists():
        raise QualityError(f"{where} does not exist.")
    if not p.is_file():
        raise QualityError(f"{where} is not a regular file, expected a CSV file.")
    head = _read_bytes(p, where, gz=False, limit=_SNIFF_BYTES)
    if p.suffix == ".gz":
        if not head.startswith(b"\x1f\x8b"):
            raise QualityError(f"{where} is not gzip data, as its .gz suffix says; "
                               "expected gzipped CSV text.")
        head = _read_bytes(p, where, gz=True, limit=_SNIFF_BYTES)
    why = _not_text(head, truncated=len(head) == _SNIFF_BYTES)
    if why:
        raise QualityError(f"{where} is not text (UTF-8/CP1252) CSV: {why}.")
    return p


def _not_text(data: bytes, truncated: bool = False) -> str | None:
    r"""Why ``data`` (the start of a file) is no CSV text, or ``None`` if it may be.

    >>> _not_text(b"ts,temp\n1,20.5\n"), _not_text("zeit;Temp°\n".encode("cp1252"))
    (None, None)
    >>> _not_text(b"PK\x03\x04rest")
    'it is a ZIP archive (an .xlsx or .ods workbook?); export the sheet as CSV'
    """
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return what
    nul = data.find(b"\x00")
    if nul >= 0:
        return f"it holds a NUL byte at offset {nul} (binary data)"
    try:  # a multi-byte character cut at the end of the sample is no fault
        text = codecs.getincrementaldecoder("utf-8")().decode(data, final=not truncated)
    except UnicodeDecodeError:
        try:
            text = data.decode("cp1252")
        except UnicodeDecodeError as exc:
            return (f"byte 0x{data[exc.start]:02x} at offset {exc.start} is neither UTF-8 "
                    "nor CP1252 text (binary data)")
    control = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f\v\x1a")
    if control > max(8, len(text) // 100):
        return f"{control} of its first {len(text)} characters are control characters (binary data)"
    return None


def read_text(path: str | Path, name: str = "File") -> str:
    r"""The whole text of a small CSV file (labels, failure times), for the ``csv`` module:
    UTF-8 (a byte-order mark skipped), else Windows-1252, gunzipped if it ends in ``.gz``.
    Line ends are kept (read it with ``io.StringIO(text, newline="")``).

    Raises :class:`~edgewise.errors.QualityError` naming ``name`` and the path when
    :func:`check_csv_file` refuses it, or when a byte further on decodes in neither.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "l.csv"
    >>> _ = f.write_bytes("device_id,note\npump-1,Lager 80°C\n".encode("cp1252"))
    >>> read_text(f).splitlines()[1]
    'pump-1,Lager 80°C'
    """
    p = check_csv_file(path, name)
    data = _read_bytes(p, f"{name} {str(p)!r}", gz=p.suffix == ".gz")
    for encoding in _ENCODINGS[:-1]:  # latin-1, the last, decodes anything: not a test
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as exc:
            err = exc
    raise QualityError(
        f"{name} {str(p)!r} is not text (UTF-8/CP1252) CSV: byte 0x{data[err.start]:02x} at "
        f"offset {err.start} decodes in neither (binary data)."
    ) from None


def _read_bytes(p: Path, where: str, *, gz: bool, limit: int = -1) -> bytes:
    """The first ``limit`` bytes of ``p`` (all with -1), gunzipped when ``gz``; a damaged gzip
    file or an OS error is a :class:`~edgewise.errors.QualityError` naming ``where``."""
    try:
        with (gzip.open if gz else open)(p, "rb") as f:
            return f.read(limit)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise QualityError(f"{where} is a damaged gzip file ({exc}).") from None
    except OSError as exc:
        raise QualityError(f"{where} cannot be read ({exc.strerror or exc}).") from None


def read_table(path: str | Path, name: str = "File") -> pd.DataFrame:
    """Read a comma- or semicolon-separated file, optionally gzipped (the separator is
    detected; in a semicolon file, numbers may have a decimal comma, as European
    spreadsheets write them). A file that is not UTF-8 is read as Windows-1252, as
    spreadsheets in Western Europe write it.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     f = Path(d) / "pump.csv"
    ...     _ = f.write_text("zeit;druck\\n2024-01-01 00:00:00;1,5\\n")
    ...     read_table(f)["druck"].tolist()
    [1.5]

    Raises :class:`~edgewise.errors.QualityError`, naming ``name`` and the path, when the
    file is missing, a directory, not text (:func:`check_csv_file`), empty or has no data
    rows.
    """
    p = check_csv_file(path, name)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt", encoding="utf-8-sig", errors="replace") as f:
        head = f.readline()
        sample = list(itertools.islice(f, _SAMPLE_LINES))
    where = f"{name} {str(p)!r}"
    if not head.strip():
        raise QualityError(f"{where} is empty; expected a header row and data rows.")
    sep = separator(head, sample)
    try:
        df = _read_csv(p, sep)
    except pd.errors.EmptyDataError:
        raise QualityError(f"{where} is empty; expected a header row and data rows.") from None
    except pd.errors.ParserError as exc:
        raise QualityError(f"{where} is not a valid CSV: {exc}".splitlines()[0]) from None
    if df.empty:
        raise QualityError(f"{where} has a header but no data rows.")
    df.columns = [str(c).strip() for c in df.columns]
    if sep == ";":
        _decimal_commas(df)
    return df


def _read_csv(p: Path, sep: str) -> pd.DataFrame:
    """``pd.read_csv`` in the first of :data:`_ENCODINGS` that decodes the whole file."""
    for encoding in _ENCODINGS[:-1]:
        try:
            return pd.read_csv(p, sep=sep, encoding=encoding, skipinitialspace=True)
        except UnicodeDecodeError:
            continue
    return pd.read_csv(p, sep=sep, encoding=_ENCODINGS[-1], skipinitialspace=True)


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
