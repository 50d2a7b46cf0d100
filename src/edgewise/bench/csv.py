"""Run a detector online over any CSV file, and score it against a label column.

The library side of ``edgewise detect FILE.csv``: read and check the file
(:func:`read_table`), run the detector over the rows in time order (:func:`detect_table`)
and, given labels, compute alarm metrics (:func:`alarm_metrics`).

>>> import pandas as pd
>>> df = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=400, freq="min", tz="UTC"),
...                    "temp": [20.0] * 399 + [90.0]})
>>> res = detect_table(df, columns=["temp"], time_column="t", detector="ewzscore")
>>> bool(res.frame["is_anomaly"].iloc[-1]), int(res.frame["is_anomaly"].sum())
(True, 1)
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgewise.detect import (
    DEFAULT_DETECTOR,
    DEFAULT_MULTIVARIATE,
    DEFAULT_THRESHOLD,
    DETECTORS,
    ContextLikelihood,
    Detector,
    DriftResidual,
    EWZScore,
    Mahalanobis,
    RiverHalfSpaceTrees,
    StateAware,
    get_detector,
)
from edgewise.detect.drift_residual import MIN_SPAN_READINGS
from edgewise.detect.mahalanobis import warm_count
from edgewise.errors import InvalidParameterError, QualityError
from edgewise.tables import (
    SCORE_COLUMNS,
    TIME_NAMES,
    date_and_clock,
    find_time_column,
    is_unnamed,
    named_clock,
    not_a_metric,
    number_column,
    read_table,
    read_tables,
    time_cells,
    time_ns,
)
from edgewise.tables import plain as _plain

__all__ = [
    "MIN_TRAINED_ROWS",
    "OUTPUT_COLUMNS",
    "DetectResult",
    "alarm_metrics",
    "bench_folder",
    "check_threshold",
    "detect_table",
    "label_notes",
    "rate_text",
    "read_table",
    "scored_rows",
]

#: Detectors that take all columns at once (the rest run one per column).
_MULTIVARIATE = (Mahalanobis, DriftResidual)
#: The default for several columns when the first rows are known normal.
DEFAULT_TRAINED_MULTIVARIATE = "drift-residual"
#: Fewest training rows for which several columns get :data:`DEFAULT_TRAINED_MULTIVARIATE`
#: (else :data:`DEFAULT_MULTIVARIATE`): six memories of its score's smoothing (1 / smooth =
#: 33 readings), so that the alarm level it takes from the span's largest smoothed score
#: has seen the normal range. Shorter spans set the level so low that on noise 10-99% of
#: the later rows were flagged (3 columns, 2000 rows; 20 rows: 95%).
MIN_TRAINED_ROWS = round(6 / inspect.signature(DriftResidual).parameters["smooth"].default)
#: Columns :func:`detect_table` writes: never metrics unless named (a scored file rerun).
OUTPUT_COLUMNS = SCORE_COLUMNS
#: Files that :func:`bench_folder` leaves out: ``edgewise detect``'s own outputs.
_SCORED_SUFFIX = "_scored.csv"
_CHUNK = 20_000


def check_threshold(threshold: float | None) -> None:
    """Refuse a threshold that is not a finite number in (0, 1]: scores lie in [0, 1], so 0
    or less would flag every row and more than 1 none.

    >>> check_threshold(0.9)
    >>> check_threshold(float("nan"))
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --threshold must be a number in (0, 1] ...
    """
    if threshold is None:
        return
    ok = isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
    if not ok or not np.isfinite(threshold) or not 0 < threshold <= 1:
        raise InvalidParameterError(
            "--threshold must be a number in (0, 1] (scores lie in [0, 1]; rows scoring at or "
            f"above it are flagged). Got {_plain(threshold)!r} instead."
        )


#: Weight of each new reading in :func:`_top_columns`' running mean and variance per column.
_TIE_ALPHA = 0.01


def _top_columns(X: np.ndarray, per_col: np.ndarray) -> np.ndarray:
    """Per row, the index of the column that scored highest among those read (``X`` not
    NaN); where several tie (scores clip at 1.0: a column 15 sd off and one 10,000 sd off
    both score 1), the one whose reading lies farthest from its own readings before it, in
    their standard deviations (an exponentially weighted mean and variance, weight
    :data:`_TIE_ALPHA`, of the earlier rows only: no look-ahead), so the blame does not
    follow the order of the columns.

    >>> X = np.array([[0.0, 0.0], [1.0, 10.0], [0.0, 0.0], [1.0, 1.0], [0.0, 0.0],
    ...               [5.0, 100.0]])
    >>> per_col = np.array([[0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [1.0, 1.0]])
    >>> int(_top_columns(X, per_col)[-1]), int(_top_columns(X[:, ::-1], per_col)[-1])
    (1, 0)
    """
    read = np.where(np.isnan(X), -np.inf, per_col)
    best = read.argmax(axis=1)
    high = read.max(axis=1)
    tied = (read >= high[:, None] - 1e-12) & ~np.isnan(X)
    # rows scoring 0 name no column (the caller blanks them): no tie of theirs to break,
    # and the running means are worked out only where a tie at a score above 0 needs them
    rows = np.flatnonzero((tied.sum(axis=1) > 1) & (high > 0))
    if not len(rows):
        return best
    frame = pd.DataFrame(X)
    ew = frame.ewm(alpha=_TIE_ALPHA, ignore_na=True)
    mean, sd = ew.mean().shift(1).to_numpy(), ew.std().shift(1).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        far = np.abs(X - mean) / sd
    # no spread yet (one earlier reading, or a flat column): any move is farthest; none, 0
    far = np.where(np.isnan(far), 0.0, far)
    far = np.where(tied, far, -1.0)
    best[rows] = far[rows].argmax(axis=1)
    return best


@dataclass
class DetectResult:
    """The input rows with ``anomaly_score``, ``is_anomaly`` and ``top_column`` added
    (:func:`scored_rows`), and how they were scored."""

    frame: pd.DataFrame
    detector: str
    columns: list[str]
    threshold: float
    train_rows: int
    counters: list[str] = field(default_factory=list)  # columns scored by their increments
    why: str = ""  # why this detector: named, or which default and why
    left_out: dict[str, str] = field(default_factory=dict)  # column -> why it is no metric
    label_column: str | None = None
    #: a ground-truth ``is_anomaly`` with no ``anomaly_score`` beside it (so no earlier
    #: run's flags) and no ``--label-column``: kept in the frame as ``is_anomaly_label``
    truth: str | None = None
    #: the last row (from 1) of the detector's warm-up, in which it learns and scores 0
    #: (:func:`_warmup_rows`); 0 for none
    warmup: int = 0
    #: what the run could not do, in words, for the user (a warm-up past ``train_rows``)
    notes: list[str] = field(default_factory=list)


def _time_ns(df: pd.DataFrame, col: str) -> np.ndarray:
    """The time column as UTC ns (:func:`edgewise.tables.time_ns`): numbers are epoch s,
    ms, us or ns told apart by size, text is ISO 8601 / RFC 3339 or one layout throughout."""
    raw = df[col]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        x = raw.to_numpy(dtype=float)
        bad = ~np.isfinite(x)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            shown = "an empty cell" if np.isnan(x[i]) else repr(_plain(raw.iloc[i]))
            raise QualityError(
                f"Time column {col!r} must hold timestamps; row {i + 1} has {shown}."
            )
        return time_ns(raw)  # integers exact to the ns
    # ISO 8601 / RFC 3339 text, or one layout for the whole column (never guessed cell by
    # cell, which read 12/03 month-first and 13/03 day-first)
    return time_ns(raw.astype(str) if pd.api.types.is_bool_dtype(raw) else raw)


def _check_time(df: pd.DataFrame, col: str, clock: bool = False,
                times: pd.Series | None = None, others: Sequence[str] = ()) -> None:
    """Refuse a time column (``clock``: a date joined to a time of day) that is not sorted or
    repeats a time; repeated dates without a time of day point to another time column of
    the file (``others``: ``--time-column timestamp``), else to --clock-column. ``times``:
    the column to read, where not ``df[col]`` (its cells as written).

    >>> _check_time(pd.DataFrame({"Datum": ["2024-03-01", "2024-03-01"]}), "Datum")
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: Time column 'Datum' has a duplicate timestamp '2024-03-01' (rows 1 and 2). Remove or merge duplicates first, or, if it holds dates only and the time of day is in another column, name that column with --clock-column.
    >>> _check_time(pd.DataFrame({"date": ["2024-03-01", "2024-03-01"]}), "date",
    ...             others=["timestamp"])
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: Time column 'date' has a duplicate timestamp '2024-03-01' (rows 1 and 2). Remove or merge duplicates first, or, as it holds dates only, read the times from column 'timestamp' with --time-column timestamp.
    """  # noqa: E501
    frame = df if times is None else times.to_frame(col)
    ns = _time_ns(frame, col)
    def shown(i: int) -> Any:
        return _plain(frame[col].iloc[i])

    # neighbours compared, never subtracted: a step over 292 years wraps round int64
    back = ns[1:] < ns[:-1]
    if back.any():
        i = int(np.flatnonzero(back)[0]) + 1
        raise QualityError(
            f"Time column {col!r} must be sorted; row {i + 1} ({shown(i)!r}) comes "
            f"before row {i} ({shown(i - 1)!r}). Sort the file by time first."
        )
    same = ns[1:] == ns[:-1]
    if same.any():
        i = int(np.flatnonzero(same)[0]) + 1
        dates = not clock and bool((ns % (86_400 * 10**9) == 0).all())  # midnights only
        hint = "."
        if dates and others:
            hint = (f", or, as it holds dates only, read the times from column {others[0]!r} "
                    f"with --time-column {others[0]}.")
        elif dates:
            hint = (", or, if it holds dates only and the time of day is in another column, "
                    "name that column with --clock-column.")
        raise QualityError(
            f"Time column {col!r} has a duplicate timestamp {shown(i)!r} "
            f"(rows {i} and {i + 1}). Remove or merge duplicates first" + hint
        )


def detect_table(
    df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    time_column: str | None = None,
    label_column: str | None = None,
    detector: str | None = None,
    train_rows: int = 0,
    threshold: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    *,
    clock_column: str | None = None,
    cells: pd.DataFrame | None = None,
) -> DetectResult:
    """Run a detector online over the rows of ``df`` (already in time order).

    Parameters
    ----------
    df
        The table; it is not modified.
    columns
        Metric columns; default: every numeric column except the time and label columns
        and columns named like labels (``anomaly``, ``label``, ``changepoint``, ...) or
        written by this function (``anomaly_score``, ``is_anomaly``, ``top_column``: a
        scored file run again is scored afresh, its old scores overwritten). Columns with
        no number in them, and columns with an empty header cell (``Unnamed: 0``, a saved
        pandas index), are left out, each named in ``left_out``. Named columns may not be
        the time, time-of-day or label column, nor be named twice. A cell of a metric that
        is ``inf`` or ``-inf`` is refused (an empty cell is a missing reading).
    time_column
        Must hold sorted, unique timestamps. Default: a column named ``timestamp``,
        ``time``, ``ts``, ``datetime`` or ``date`` if there is one. A ``date`` column, found
        or named, with a ``time`` column beside it (``date,time,value``) makes the time with
        it.
    label_column
        Excluded from the metrics (1/true marks an anomaly). If it has the name of an
        output column (``is_anomaly``), the frame keeps it as ``NAME_label``.
    detector
        Registry name. Default: ``context-likelihood`` for one column; for several,
        ``drift-residual`` with at least :data:`MIN_TRAINED_ROWS` ``train_rows`` (it learns
        normal from them) in which every column varies, else ``mahalanobis``. A
        univariate detector on several columns runs one detector per column and reports
        the highest score. ``why`` in the result says which and why.
    train_rows
        The first rows are known normal: learned, never flagged; a detector with a
        ``train_rows`` parameter learns its normal span from exactly them. With
        ``threshold`` unset they raise it to their 99th percentile score if that is above
        the default.
    threshold
        Score at or above which a row is flagged (default ``DEFAULT_THRESHOLD``).
    on_progress
        Called with the number of rows done after each chunk.
    clock_column
        The time-of-day column that, joined to the date in ``time_column``, makes the time
        (``Datum,Zeit,value``: ``time_column="Datum", clock_column="Zeit"``); default: a
        ``time`` column beside a ``date`` one. It is no metric.
    cells
        ``df``'s cells as written (:func:`~edgewise.tables.read_tables`), from which a time
        column of epoch numbers with decimals is read exactly (``1700000000.000000005``).
    """
    check_threshold(threshold)
    for name, col in (("--time-column", time_column), ("--label-column", label_column)):
        if col is not None and col not in df.columns:
            raise InvalidParameterError(
                f"{name} {col!r} is not a column of the file. Columns: {_listed(df)}."
            )
    found = time_column is None
    if time_column is None:
        time_column = find_time_column(df)
    clock = named_clock(df, time_column, clock_column, "the file")
    if clock is not None:  # a date column and a time-of-day column: one time together
        both = date_and_clock(df, time_column, clock)
        _check_time(both.to_frame(), str(both.name), clock=True)
    elif time_column is not None:
        others = [c for c in df.columns if c != time_column and str(c).lower() in TIME_NAMES
                  and str(c).lower() != "date"]
        _check_time(df, time_column, others=others,
                    times=time_cells(df, cells, time_column) if cells is not None else None)
    skip = {time_column, label_column, clock}
    left_out: dict[str, str] = {}
    if columns is None:
        columns = []
        for c in df.columns:
            if c in skip:
                continue
            if why := not_a_metric(c):
                if is_unnamed(c):  # a saved index: said, as it is where a metric would be
                    left_out[c] = f"({why}; --columns {c!r} scores it)"
                continue
            if pd.to_numeric(df[c], errors="coerce").notna().any():
                columns.append(c)
            else:
                left_out[c] = _no_number(df[c])
        if not columns:
            shown = "; ".join(f"{c!r} {why}" for c, why in left_out.items())
            raise QualityError("The file has no numeric column to run a detector on"
                               + (f" (left out: {shown})." if shown else "."))
    else:
        _check_named(df, columns, time_column, label_column, found, clock)
        columns = _drop_empty(df, columns, left_out)
    columns = list(columns)
    X = np.column_stack([number_column(df, c) for c in columns])
    if not isinstance(train_rows, int) or not 0 <= train_rows <= len(df):
        raise InvalidParameterError(
            f"--train-rows must be an int in the range [0, {len(df)}]. Got {train_rows!r} instead."
        )
    if detector is None:
        detector, why = _default_detector(X, columns, train_rows)
    else:
        why = "--detector"
    if detector not in DETECTORS:
        raise InvalidParameterError(
            f"Unknown detector {detector!r}. Choose one of: {', '.join(sorted(DETECTORS))}."
        )
    multivariate = issubclass(DETECTORS[detector], _MULTIVARIATE)
    params: dict[str, Any] = {}
    # param_names, not the class's own signature: a variant that only changes defaults
    # (per-metric-residual) takes **params and would otherwise never get --train-rows.
    if train_rows >= 2 and "train_rows" in DETECTORS[detector].param_names():
        params["train_rows"] = train_rows
    span = getattr(get_detector(detector, **params), "train_rows", None) if multivariate else None
    if span is not None:  # it ignores metrics read fewer than twice in its span: say so
        need = MIN_SPAN_READINGS
        unseen = [j for j in range(len(columns)) if np.isfinite(X[:span, j]).sum() < need]
        for j in unseen:
            left_out[columns[j]] = (f"(fewer than {need} readings in the first {span} rows, "
                                    f"which {detector} learns normal from; it ignores "
                                    "metrics it cannot learn a spread for)")
        if len(unseen) == len(columns):
            raise QualityError(
                f"No column has {need} readings in the first {span} rows, which {detector} "
                "learns normal from; give --train-rows the rows of a normal span that has "
                "readings, or choose --detector mahalanobis.")
        columns = [c for j, c in enumerate(columns) if j not in unseen]
        X = np.delete(X, unseen, axis=1)
    if "max_metrics" in DETECTORS[detector].param_names():  # mahalanobis: track them all
        most = _most_metrics(detector)
        for c in columns[most:]:
            left_out[c] = (f"(past the first {most} columns, the most {detector} tracks; "
                           "--columns picks which it scores)")
        columns, X = columns[:most], X[:, :most]
        params["max_metrics"] = len(columns)
    n = len(X)
    scores = np.zeros(n)
    top = np.empty(n, dtype=object)
    if multivariate or len(columns) == 1:
        det = get_detector(detector, **params)
        dets: list[Detector] = [det]
    else:
        dets = [get_detector(detector, **params) for _ in columns]
    per_col = np.zeros((n, len(dets)))
    first: list[int] = []  # mahalanobis: per column, the first row scored on it
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        if len(dets) == 1 and multivariate:
            # compiled where the detector has it (drift-residual): score, name, learn
            scores[start:stop], top[start:stop] = dets[0].score_explain_many(
                X[start:stop], columns=columns)
        else:
            for j, det in enumerate(dets):
                col = X[start:stop, j : j + 1] if len(dets) > 1 else X[start:stop]
                per_col[start:stop, j] = det.score_many(col, columns=[columns[j]])
        if on_progress is not None:
            on_progress(stop)
    if not multivariate:
        scores = per_col.max(axis=1)
        # the column with the highest score among those read; none where the row scores 0
        best = _top_columns(X, per_col)
        top = np.array([columns[j] for j in best], dtype=object)
        top[np.isnan(X).all(axis=1) | (np.round(scores, 6) <= 0)] = ""
        warm = min(_warmup_rows(d, ~np.isnan(X[:, j]), per_col[:, j]) for j, d in enumerate(dets))
    elif isinstance(dets[0], Mahalanobis):  # each metric warms up on its own readings
        first = _first_scored(dets[0], X)
        warm = _warmup_rows(dets[0], np.ones(n, dtype=bool), scores, min(first, default=n))
    else:
        warm = _warmup_rows(dets[0], ~np.isnan(X).all(axis=1), scores)
    # the scores as written (6 decimals; + 0.0 makes -0.0, a score rounded from just under
    # 0, 0.0): a row is flagged by the score the file shows, and a threshold raised from
    # the training rows is one such score, so that the run line shows it as used
    written = np.round(scores, 6) + 0.0
    if threshold is None:
        threshold = DEFAULT_THRESHOLD
        if train_rows > 0:
            threshold = max(threshold, round(float(np.quantile(written[:train_rows], 0.99)), 6))
            threshold = min(threshold, 1.0)
    flagged = written >= threshold
    flagged[:train_rows] = False
    counters = [] if multivariate else [
        columns[j] for j, d in enumerate(dets) if getattr(d, "is_counter", False)]
    truth = None
    if (label_column is None and "is_anomaly" in df.columns and "anomaly_score" not in df.columns
            and "is_anomaly" not in columns):
        truth = "is_anomaly"
        _kept_label(truth, df, "a ground-truth column")
    res = DetectResult(df, detector, columns, float(threshold), train_rows, counters, why,
                       left_out, label_column, truth, warm)
    if warm > train_rows:
        res.notes.append(_warmup_note(res, len(dets) > 1))
    if multivariate and isinstance(dets[0], Mahalanobis):
        late = _late_note(dets[0], X, columns, first, max(warm, train_rows))
        if late:
            res.notes.append(late)
    res.frame = scored_rows(df, res, written, flagged, top)
    return res


def scored_rows(
    table: pd.DataFrame, result: DetectResult, scores: Any = None, flagged: Any = None,
    top: Any = None,
) -> pd.DataFrame:
    """``table`` (the rows :func:`detect_table` ran on, or the same rows as read,
    :func:`~edgewise.tables.read_table` with ``text=True``) with ``anomaly_score``,
    ``is_anomaly`` and ``top_column`` of ``result`` set, added at the end where new. A
    label column with the name of one of them is kept as ``NAME_label``, so the ground
    truth is never overwritten by the flags.

    >>> df = pd.DataFrame({"v": [1.0, 2.0], "is_anomaly": [0, 1]})
    >>> res = detect_table(df, label_column="is_anomaly", detector="ewzscore")
    >>> list(res.frame.columns)
    ['v', 'is_anomaly_label', 'anomaly_score', 'is_anomaly', 'top_column']
    """
    out = table.copy()
    for label in (result.label_column, result.truth):
        if label is not None and label in OUTPUT_COLUMNS:
            out = out.rename(columns={label: _kept_label(label, table)})
    values = (scores, flagged, top)
    for name, new in zip(OUTPUT_COLUMNS, values, strict=True):
        out[name] = result.frame[name].to_numpy() if new is None else new
    return out


def _kept_label(label: str, table: pd.DataFrame, what: str = "") -> str:
    """The name a label column called like an output column is kept under."""
    kept = f"{label}_label"
    if kept in table.columns:
        raise InvalidParameterError(
            f"{what or '--label-column'} {label!r} has the name of an output column, and "
            f"{kept!r}, where it would be kept, is taken too; rename the label column in "
            "the file."
        )
    return kept


def _no_number(col: pd.Series) -> str:
    """Why a column is no metric: it is empty, or its first value is no number.

    >>> _no_number(pd.Series([None, "1.234,5"]))
    "(no value is a number: row 2 has '1.234,5')"
    """
    filled = _filled(col)
    if not len(filled):
        return "(every cell is empty)"
    i = int(filled[0])
    return f"(no value is a number: row {i + 1} has {_plain(col.iloc[i])!r})"


def _filled(col: pd.Series) -> np.ndarray:
    """The positions of the cells of ``col`` that are not empty (NaN or blank)."""
    text = col.astype(object).where(col.notna(), "").astype(str).str.strip()
    return np.flatnonzero((text != "").to_numpy())


def _check_named(
    df: pd.DataFrame, columns: Sequence[str], time_column: str | None,
    label_column: str | None, found: bool, clock: str | None = None,
) -> None:
    """Refuse ``--columns`` that names no column, a column twice, a column not in ``df``,
    the label column (the ground truth as a reading), the time column or the time-of-day
    column ``clock`` joined to it.

    >>> _check_named(pd.DataFrame(columns=["t", "a"]), ["a", "a"], "t", None, False)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --columns names 'a' twice; name each metric column once, e.g. --columns a.
    """  # noqa: E501
    if not columns:
        raise InvalidParameterError(
            "--columns names no column; give comma-separated metric columns, e.g. "
            f"--columns {','.join(map(str, df.columns[:2]))}."
        )
    twice = next((c for i, c in enumerate(columns) if c in columns[:i]), None)
    if twice is not None:
        once = ",".join(dict.fromkeys(map(str, columns)))
        raise InvalidParameterError(
            f"--columns names {twice!r} twice; name each metric column once, e.g. "
            f"--columns {once}.")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InvalidParameterError(
            f"Column {missing[0]!r} is not in the file. Columns: {_listed(df)}."
        )
    for c in columns:
        if c == label_column:
            raise InvalidParameterError(
                f"--columns names {c!r}, the --label-column: the labels are what the run is "
                "scored against, not a reading; leave it out of --columns."
            )
        if c == time_column:
            how = " (found by its name; name another with --time-column)" if found else ""
            raise InvalidParameterError(
                f"--columns names {c!r}, the time column{how}: times order the rows, they "
                "are not a reading; leave it out of --columns."
            )
        if c == clock:
            raise InvalidParameterError(
                f"--columns names {c!r}, the time of day joined to the date column "
                f"{time_column!r}: times order the rows, they are not a reading; leave it "
                "out of --columns."
            )


def _default_detector(X: np.ndarray, columns: list[str], train_rows: int) -> tuple[str, str]:
    """The default detector for ``X`` and why: one column, several with a training span
    :data:`DEFAULT_TRAINED_MULTIVARIATE` can learn from, or several without."""
    if len(columns) == 1:
        return DEFAULT_DETECTOR, "the default for one column"
    several = f"the default for {len(columns)} columns"
    if train_rows == 0:
        return DEFAULT_MULTIVARIATE, f"{several} without --train-rows"
    if train_rows < MIN_TRAINED_ROWS:
        return DEFAULT_MULTIVARIATE, (
            f"{several}; not {DEFAULT_TRAINED_MULTIVARIATE}: --train-rows {train_rows} is "
            f"under the {MIN_TRAINED_ROWS} rows it needs to learn an alarm level")
    span = X[:train_rows]
    unseen = [c for j, c in enumerate(columns) if not np.isfinite(span[:, j]).any()]
    if unseen:
        return DEFAULT_MULTIVARIATE, (
            f"{several}; not {DEFAULT_TRAINED_MULTIVARIATE}: column {unseen[0]!r} has no "
            f"reading in the {train_rows} training rows, so it could not learn its normal")
    with np.errstate(invalid="ignore"):
        flat = [c for j, c in enumerate(columns)
                if np.isfinite(span[:, j]).any() and np.nanmax(span[:, j]) == np.nanmin(span[:, j])]
    if flat:
        return DEFAULT_MULTIVARIATE, (
            f"{several}; not {DEFAULT_TRAINED_MULTIVARIATE}: column {flat[0]!r} does not vary "
            f"in the {train_rows} training rows, so any later change would be an alarm")
    return DEFAULT_TRAINED_MULTIVARIATE, f"{several} with --train-rows {train_rows}"


def rate_text(rate: float | None) -> str:
    """A rate of :func:`alarm_metrics` as ``edgewise detect`` and ``bench csv`` print it:
    three decimals, or ``-`` where it is undefined (``None``: its denominator is 0).

    >>> rate_text(0.25), rate_text(None)
    ('0.250', '-')
    """
    return "-" if rate is None else f"{rate:.3f}"


def alarm_metrics(flagged: np.ndarray, labels: Any,
                  skip: int = 0) -> dict[str, float | int | None]:
    """Precision, recall, F1, false-alarm and missed-alarm rates of ``flagged`` vs labels;
    a rate whose denominator is 0 is ``None`` (:func:`_rates`).

    ``labels`` and ``flagged`` may be 0/1, booleans or 'true'/'false' strings (an empty
    cell or NaN is 0: normal, not flagged; anything else is refused, naming it), one per
    row; the first ``skip`` rows (training rows) are left out.

    >>> m = alarm_metrics(np.array([1, 0, 1, 0]), [1, 0, 0, 1])
    >>> m["precision"], m["recall"], m["false_alarm_rate"]
    (0.5, 0.5, 0.5)
    >>> alarm_metrics(np.array(["True", "False", np.nan], dtype=object), [1, 1, 0])["tp"]
    1
    """
    y = _labels(labels)
    f = _labels(flagged, "The flags (is_anomaly)")
    if len(f) != len(y):
        raise InvalidParameterError(
            f"alarm_metrics got {len(f)} flags but {len(y)} labels; give one flag per labelled "
            "row.", field="flagged", value=len(f))
    y, f = y[skip:], f[skip:]
    tp = int((f & y).sum())
    fp = int((f & ~y).sum())
    fn = int((~f & y).sum())
    tn = int((~f & ~y).sum())
    return _rates(tp, fp, fn, tn)


def label_notes(labels: Any, train_rows: int, warmup: int = 0,
                detector: str = "the detector") -> list[str]:
    """What :func:`alarm_metrics` with ``skip=train_rows`` leaves out or cannot catch, said
    in words: every row is a training row (the counts are all 0), labelled anomalies lie
    among the training rows (learned as normal, never flagged, not counted), or after them
    in the ``detector``'s warm-up, which ends at row ``warmup`` (:attr:`DetectResult.warmup`:
    scored 0, so counted as missed).

    >>> label_notes([0, 1, 0, 0], 2)
    ['1 labelled anomaly lies in the 2 training rows (--train-rows): learned as normal, never flagged, left out of the metrics']
    >>> label_notes([0, 0], 2)
    ['all 2 rows are training rows (--train-rows 2): no row is left to score against the labels']
    >>> label_notes([0, 0, 1, 1, 0], 1, 4, "context-likelihood")
    ["2 labelled anomalies lie in rows 2-4, context-likelihood's warm-up: scored 0, never flagged, counted as missed"]
    """  # noqa: E501
    y = _labels(labels)
    notes = []
    if train_rows >= len(y):
        notes.append(f"all {len(y)} rows are training rows (--train-rows {train_rows}): "
                     "no row is left to score against the labels")
    k = int(y[:train_rows].sum())
    if k:
        notes.append(f"{_anomalies(k)} in the {min(train_rows, len(y))} training rows "
                     "(--train-rows): learned as normal, never flagged, left out of the metrics")
    end = min(warmup, len(y))
    k = int(y[train_rows:end].sum())
    if k:
        notes.append(f"{_anomalies(k)} in rows {train_rows + 1}-{end}, {detector}'s warm-up: "
                     "scored 0, never flagged, counted as missed")
    return notes


def _anomalies(k: int) -> str:
    """``k`` labelled anomalies, with the verb: ``1 labelled anomaly lies``."""
    return f"{k} labelled anomaly lies" if k == 1 else f"{k} labelled anomalies lie"


def _warmup_readings(det: Detector) -> int:
    """How many readings ``det`` learns before it scores above 0, by its parameters (0 for
    none): context-likelihood's shorter member warm-up (twice that for a stream it scores as
    a counter, which starts afresh on its increments), mahalanobis' and ewzscore's
    ``warmup``, drift-residual's ``train_rows``, river-hst's ``window_size``; state-aware's
    level detector's.

    >>> _warmup_readings(ContextLikelihood()), _warmup_readings(Mahalanobis())
    (280, 50)
    """
    if isinstance(det, StateAware):
        det = det.base_
    if isinstance(det, ContextLikelihood):
        return min(det.member_warmups()) * (2 if det.is_counter else 1)
    if isinstance(det, (Mahalanobis, EWZScore)):
        return int(det.warmup)
    if isinstance(det, DriftResidual):
        return int(det.train_rows)
    if isinstance(det, RiverHalfSpaceTrees):
        return int(det.window_size)
    return 0


def _warmup_rows(det: Detector, read: np.ndarray, scores: np.ndarray,
                 last: int | None = None) -> int:
    """The last row (from 1) of ``det``'s warm-up (:func:`_warmup_readings`) over rows that
    hold a reading where ``read`` (a row without one is not learned), or ``last`` where
    given, at most the row before its first score above 0 (``scores``); 0 where it has no
    warm-up.

    >>> _warmup_rows(Mahalanobis(warmup=2), np.array([True, False, True, True]), np.zeros(4))
    3
    """
    w = _warmup_readings(det)
    if w <= 0:
        return 0
    if last is None:
        rows = np.flatnonzero(read)
        last = int(rows[w - 1]) + 1 if len(rows) >= w else len(read)
    above = np.flatnonzero(scores[:last] > 0)
    return int(above[0]) if len(above) else last


def _most_metrics(detector: str) -> int:
    """The most metrics ``detector`` can be made to track (its ``max_metrics`` bound).

    >>> _most_metrics("mahalanobis")
    4096
    """
    bound = getattr(DETECTORS[detector], "_constraints", {}).get("max_metrics")
    return int(getattr(bound, "high", None) or
               inspect.signature(DETECTORS[detector]).parameters["max_metrics"].default)


def _readings_to_warm(det: Mahalanobis, columns: int) -> float:
    """The readings of its own a column needs before ``det`` scores it, with ``columns``
    tracked (:func:`~edgewise.detect.mahalanobis.warm_count`): ``warmup`` up to a third of
    it in columns, 3 per column past that (90 for 30), ``inf`` past what the window holds.

    >>> [_readings_to_warm(Mahalanobis(), d) for d in (4, 30, 300)]
    [50.0, 90.0, inf]
    """
    return warm_count(columns, float(det.alpha), int(det.warmup))


def _first_scored(det: Mahalanobis, X: np.ndarray) -> list[int]:
    """Per column of ``X``, the row (from 0) of the first reading ``det`` scores it on: the
    one after its :func:`_readings_to_warm` readings of that column, for the columns read
    before it (``len(X)`` where none). A row is scored on the warm columns it holds, so the
    warm-up ends before the first of these.

    >>> X = np.c_[np.arange(16.0), np.where(np.arange(16) % 2, np.arange(16.0), np.nan)]
    >>> _first_scored(Mahalanobis(warmup=2), X)  # 2 columns: 6 readings of each
    [6, 13]
    >>> _first_scored(Mahalanobis(warmup=10), X)
    [10, 16]
    """
    read = np.isfinite(X)
    before = np.cumsum(read, axis=0) - read  # each column's readings learned before a row
    # the readings a column needs at a row, by the columns tracked then (those read before)
    tracked = (before > 0).sum(axis=1)
    need = np.array([_readings_to_warm(det, int(d)) for d in range(X.shape[1] + 1)])[tracked]
    first = []
    for j in range(X.shape[1]):
        rows = np.flatnonzero(read[:, j] & (before[:, j] >= need))
        first.append(int(rows[0]) if len(rows) else len(X))
    return first


def _late_note(det: Mahalanobis, X: np.ndarray, columns: Sequence[str], first: list[int],
               start: int) -> str:
    """The note naming the columns that ``det`` does not yet score in rows past ``start``
    (the warm-up, or the training rows) where they hold a reading: each is scored from its
    row in ``first`` (:func:`_first_scored`) on, or in no row; ``""`` where none is. With
    more columns than ``det``'s window can score, it says so.

    >>> X = np.c_[np.arange(8.0) % 3, [np.nan] * 6 + [1.0, 2.0]]
    >>> _late_note(Mahalanobis(warmup=6), X, ["a", "b"], [6, 8], 6)
    "mahalanobis scores a column after 6 readings of it: column 'b' in no row (2 readings)"
    """
    n, d = X.shape
    w = _readings_to_warm(det, d)
    if not math.isfinite(w):
        most = max((k for k in range(1, d) if math.isfinite(_readings_to_warm(det, k))),
                   default=0)
        return (f"mahalanobis scores no column while it tracks more than {most} ({d} "
                f"here): its window (alpha {det.alpha}) holds too few readings for so many; "
                "give it fewer columns (--columns)")
    late = []
    for j, c in enumerate(columns):
        if first[j] > start and np.isfinite(X[start:first[j], j]).any():
            if first[j] < n:
                late.append(f"{c!r} from row {first[j] + 1} on")
            else:
                late.append(f"{c!r} in no row ({int(np.isfinite(X[:, j]).sum())} readings)")
    if not late:
        return ""
    shown = ", ".join(late[:5]) + (f", and {len(late) - 5} more columns" if len(late) > 5
                                   else "")
    what = "column" if len(late) == 1 else "columns"
    return f"mahalanobis scores a column after {int(w)} readings of it: {what} {shown}"


def _warmup_note(res: DetectResult, per_column: bool) -> str:
    """The note that rows ``1-res.warmup`` are the detector's warm-up, past --train-rows."""
    rows = f"all {res.warmup} rows are" if res.warmup == len(res.frame) else (
        f"rows 1-{res.warmup} are")
    where = " on every column" if per_column else ""
    past = f" (--train-rows {res.train_rows} covers rows 1-{res.train_rows})" if (
        res.train_rows) else ""
    return f"{rows} {res.detector}'s warm-up{where}: scored 0, not flagged{past}"


def _listed(df: pd.DataFrame) -> str:
    """The columns of ``df`` for a message, each quoted (a name may hold a comma).

    >>> _listed(pd.DataFrame(columns=["Zeit", "Temp, °C"]))
    "'Zeit', 'Temp, °C'"
    """
    return ", ".join(repr(str(c)) for c in df.columns)


def _drop_empty(df: pd.DataFrame, columns: Sequence[str], left_out: dict[str, str]) -> list[str]:
    """``columns`` (named with --columns) but those whose every cell is empty, each noted in
    ``left_out`` as the default choice notes it; refused where that leaves none.

    >>> left: dict[str, str] = {}
    >>> _drop_empty(pd.DataFrame({"a": [1.0], "c": [None]}), ["a", "c"], left), left
    (['a'], {'c': '(every cell is empty)'})
    """
    kept = []
    for c in columns:
        if not len(_filled(df[c])):
            left_out[c] = _no_number(df[c])
        else:
            kept.append(c)
    if not kept:
        shown = "; ".join(f"{c!r} {why}" for c, why in left_out.items())
        raise QualityError(f"No column named in --columns has a reading to run a detector on "
                           f"(left out: {shown}).")
    return kept


def _rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, float | int | None]:
    """Precision, recall, F1, false- and missed-alarm rates of the counts, with the counts;
    a rate whose denominator is 0 is ``None`` (undefined: ``-`` in text, ``null`` in JSON),
    not 0: with no row flagged, precision is undefined; with no labelled anomaly scored,
    recall and the missed-alarm rate are (both 0.000 read as "every anomaly missed" and
    "none missed" at once); with no normal row scored, the false-alarm rate is. F1 is
    undefined only when nothing was flagged or labelled (tp, fp and fn all 0); with
    anomalies missed or false alarms it is 0.

    >>> r = _rates(0, 0, 0, 250)
    >>> [r[k] for k in ("precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate")]
    [None, None, None, 0.0, None]
    >>> r = _rates(0, 0, 3, 5)
    >>> [r[k] for k in ("precision", "recall", "f1", "false_alarm_rate", "missed_alarm_rate")]
    [None, 0.0, 0.0, 0.0, 1.0]
    >>> _rates(1, 1, 1, 1)["f1"]
    0.5
    """
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1: float | None
    if precision is not None and recall is not None and precision + recall:
        f1 = 2 * precision * recall / (precision + recall)
    else:  # no anomaly caught: 0 where anything was flagged or labelled, else undefined
        f1 = 0.0 if fp + fn else None
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarm_rate": fp / (fp + tn) if fp + tn else None,
        "missed_alarm_rate": fn / (fn + tp) if fn + tp else None,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def bench_folder(
    folder: str | Path,
    label_column: str,
    time_column: str | None = None,
    columns: Sequence[str] | None = None,
    detector: str | None = None,
    train_rows: int = 0,
    threshold: float | None = None,
    on_file: Callable[[Path, dict[str, Any]], None] | None = None,
    *,
    clock_column: str | None = None,
) -> dict[str, Any]:
    """Run :func:`detect_table` on every ``*.csv`` and ``*.csv.gz`` under ``folder``
    (recursively), except ``edgewise detect``'s own outputs (``*_scored.csv``), which are
    listed in the returned ``"skipped"``.

    Each file is an independent run (a fresh detector, its own first ``train_rows`` rows
    as normal). Counts are pooled over files, as SKAB scores its binary leaderboard: the
    returned ``"total"`` holds precision, recall, F1 and the false- and missed-alarm rates
    of all evaluated rows together; ``"files"`` the same per file. ``clock_column`` is
    :func:`detect_table`'s, for every file.
    """
    root = Path(folder)
    if not root.exists():
        raise QualityError(f"Folder {str(root)!r} does not exist.")
    if not root.is_dir():
        raise QualityError(
            f"Folder {str(root)!r} is a file, expected a folder of labelled *.csv files "
            "(edgewise detect FILE --label-column NAME scores one file).")
    found = sorted(p for p in root.rglob("*") if p.name.lower().endswith((".csv", ".csv.gz"))
                   and p.is_file())
    files = [p for p in found if not p.name.lower().endswith(_SCORED_SUFFIX)]
    skipped = [str(p.relative_to(root)) for p in found
               if p.name.lower().endswith(_SCORED_SUFFIX)]
    if not files:
        also = (f" ({len(skipped)} *{_SCORED_SUFFIX}, edgewise detect's outputs, are left out)"
                if skipped else "")
        raise QualityError(f"Folder {str(root)!r} holds no *.csv or *.csv.gz file to "
                           f"benchmark{also}.")
    check_threshold(threshold)
    per_file: list[dict[str, Any]] = []
    for path in files:
        name = str(path.relative_to(root))
        try:
            row = _bench_file(path, name, label_column, time_column, columns, detector,
                              train_rows, threshold, clock_column)
        except (QualityError, InvalidParameterError) as exc:  # say which file failed
            raise type(exc)(f"{name}: {exc}") from None
        per_file.append(row)
        if on_file is not None:
            on_file(path, row)
    counts = {k: sum(int(r[k]) for r in per_file) for k in ("tp", "fp", "fn", "tn")}
    return {"files": per_file, "total": {"files": len(per_file), **_rates(**counts)},
            "skipped": skipped}


def _bench_file(
    path: Path, name: str, label_column: str, time_column: str | None,
    columns: Sequence[str] | None, detector: str | None, train_rows: int,
    threshold: float | None, clock_column: str | None = None,
) -> dict[str, Any]:
    """One file of :func:`bench_folder`: its row of counts and rates."""
    df, cells = read_tables(path)  # as `edgewise detect` reads it: exact epoch times too
    if label_column not in df.columns:
        raise InvalidParameterError(
            f"--label-column {label_column!r} is not a column. Columns: {_listed(df)}."
        )
    res = detect_table(df, columns, time_column, label_column, detector, train_rows, threshold,
                       clock_column=clock_column, cells=cells)
    m = alarm_metrics(res.frame["is_anomaly"].to_numpy(), df[label_column], train_rows)
    return {"file": name, "rows": len(df), "detector": res.detector, **m,
            "notes": res.notes + label_notes(df[label_column], train_rows, res.warmup,
                                             res.detector)}


def _labels(labels: Any, what: str | None = None) -> np.ndarray:
    """0/1, booleans or 'true'/'false' text (empty or NaN: 0) as booleans; anything else
    is refused, naming ``what`` held it (default: the label column, by its name where
    ``labels`` has one), the row and the value.

    >>> _labels(pd.Series(["1", "N"], name="label"))
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: Label column 'label' must hold 0/1 or true/false (empty is 0); row 2 has 'N'.
    """  # noqa: E501
    s = pd.Series(labels)
    if what is None:
        what = "Label column" + ("" if s.name is None else f" {str(s.name)!r}")
    if s.dtype == bool:
        return s.to_numpy()
    # an empty cell is normal; astype(str) alone keeps NaN as NaN under pandas 3
    text = s.astype(object).where(s.notna(), "").astype(str).str.strip().str.lower()
    truthy = text.isin(["1", "1.0", "true", "yes", "anomaly"])
    falsy = text.isin(["0", "0.0", "false", "no", "normal", "nan", ""])
    if not (truthy | falsy).all():
        i = int(np.flatnonzero(~(truthy | falsy).to_numpy())[0])
        raise QualityError(
            f"{what} must hold 0/1 or true/false (empty is 0); row {i + 1} has "
            f"{_plain(s.iloc[i])!r}."
        )
    return truthy.to_numpy()
