"""The labelling loop for one device: read its history, suggest windows, train with labels.

These are what ``edgewise label suggest`` and ``edgewise train --with-labels`` call.

* :func:`load_history_csv` / :func:`history_from_store`: a device's readings as a
  ``(ts_ns, X, metrics)`` triple (one column per metric, aligned on time).
* :func:`suggest`: the next ``k`` windows to label, from a strategy over the windows the
  current label-aware model sees.
* :func:`train_with_labels`: fit the per-device :class:`WindowFeedbackModel` and, when
  there are fault-class labels, a semi-supervised :class:`FaultClassifier`; save both in a
  versioned model file that records the label snapshot they were trained with.

>>> import tempfile, pathlib
>>> import numpy as np
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> rng = np.random.default_rng(0)
>>> v = rng.normal(20, 0.3, 2000); v[1500:1504] += 5
>>> ts = (1_700_000_000 + 60 * np.arange(2000)) * 10**9
>>> hist = (ts, v[:, None], ["temp_c"])
>>> store = LabelStore(d)
>>> [s["start_ns"] > 0 for s in suggest(hist, "pump-1", store, k=2, window=50)]
[True, True]
>>> out = train_with_labels(hist, "pump-1", store, d, window=50)
>>> out["version"], out["n_labels"]
(1, 0)
"""

from __future__ import annotations

import copy
import json
import pickle
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from edgewise import config
from edgewise._private import write_private
from edgewise.errors import InvalidParameterError, QualityError
from edgewise.label.feedback import WindowFeedbackModel
from edgewise.label.store import Deletions, LabelStore
from edgewise.label.strategies import DefaultMix, Pool, make_strategy
from edgewise.label.windows import WindowSet, window_labels, windows_from_series
from edgewise.store.newest import newest_rows
from edgewise.tables import LABEL_NAMES, TIME_NAMES, not_a_metric, plain

__all__ = ["MAX_METRICS", "MAX_READINGS", "TRAINED_BY_KIND", "History",
           "delete_models", "delete_trained_models",
           "forget_trained_by", "history_from_store", "history_from_table",
           "load_history_csv", "load_model", "model_files", "on_metrics",
           "predict_with_labels", "record_trained_by", "suggest", "train_with_labels",
           "trained_by", "trained_by_file", "window_length"]

History = tuple[np.ndarray, np.ndarray, list[str]]

#: The label of an anomaly whose cause is not known: the fault classifier learns it as a
#: class of its own, and an alarm it gives that class has ``fault`` ``None``.
UNCLASSIFIED = "anomaly"

#: The most readings :func:`history_from_store` reads of a device by default
#: (:data:`edgewise.config.MAX_READINGS`, the JSON readings route's cap): the newest that
#: many, so one label-queue request is bounded (a whole history was read and pivoted:
#: 5,000 metrics took 85 s of CPU).
MAX_READINGS = config.MAX_READINGS
#: The most metrics :func:`history_from_store` keeps by default: more than any real
#: device the project reads has (C-MAPSS: 24), few enough that a label-queue answer
#: (every metric's readings around each window) stays small.
MAX_METRICS = 32

_DEVICE_COLUMN = "device_id"


def load_history_csv(path: Path | str, *, device_id: str | None = None,
                     time_column: str | None = None) -> History:
    """A device's history from a wide CSV: a time column (RFC 3339, or epoch s, ms, us or ns
    told apart by size) and one column per metric, read by ``edgewise detect``'s rules.

    * The time column is ``time_column``, else the first column named ``timestamp``,
      ``time``, ``ts``, ``datetime`` or ``date`` (:data:`TIME_NAMES`, any case). Rows are
      put in time order; two rows of one time are refused, naming them.
    * Metrics are the other columns with a number in them, except ``device_id``, columns
      named like labels (:data:`LABEL_NAMES`: ``label``, ``anomaly``, ...) and the columns
      ``edgewise detect`` writes (``anomaly_score``, ``top_column``). A cell of a metric
      that is no number is refused in one line naming the column, row and value; an empty
      cell is a missing reading (NaN).
    * A column whose every cell is empty (of ``device_id``'s rows, when given: a sensor that
      never reported) is left out of the metrics, as ``edgewise detect`` leaves it out, and
      named in a :class:`UserWarning` (``edgewise detect`` prints "left out (every cell is
      empty)"); the other columns are read. A file with no other metric is refused.
    * A ``device_id`` column may name one device; with ``device_id`` given, only that
      device's rows are read.

    >>> import tempfile
    >>> f = Path(tempfile.mkdtemp()) / "h.csv"
    >>> _ = f.write_text("Time,temp,label\\n60,20.5,0\\n0,20.0,1\\n")
    >>> ts, X, metrics = load_history_csv(f)
    >>> ts.tolist(), X.tolist(), metrics
    ([0, 60000000000], [[20.0], [20.5]], ['temp'])
    >>> _ = f.write_text("timestamp,temp\\n0,20.0\\n60,n/a?\\n")
    >>> load_history_csv(f)
    Traceback (most recent call last):
    ...
    edgewise.errors.QualityError: Column 'temp' must hold numbers; row 2 has 'n/a?'.
    >>> _ = f.write_text("timestamp,temp,vib\\n0,20.0,\\n60,20.5,\\n")
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     load_history_csv(f)[2]
    ['temp']
    >>> print(caught[0].message)  # doctest: +ELLIPSIS
    History CSV '...h.csv': column 'vib' left out of the metrics (every cell is empty), ...

    Raises :class:`~edgewise.errors.QualityError` for a file or cell that cannot be read so,
    :class:`~edgewise.errors.InvalidParameterError` when the file has no time column, no
    metric, or not exactly one device's rows.
    """
    from edgewise.tables import read_tables

    df, cells = read_tables(path)
    return history_from_table(df, f"History CSV {str(path)!r}", device_id=device_id,
                              time_column=time_column, cells=cells, _stacklevel=4)


def history_from_table(df: pd.DataFrame, where: str, *, device_id: str | None = None,
                       time_column: str | None = None,
                       cells: pd.DataFrame | None = None, _stacklevel: int = 3) -> History:
    """:func:`load_history_csv` on a table already read (``where`` names it in messages):
    a fleet file is read once, and each device's history taken from it. ``cells``, the
    text view of :func:`~edgewise.tables.read_tables`, gives the device ids as written
    (``007`` is not ``7``); without it they are read from ``df``.

    >>> df = pd.DataFrame({"ts": [0, 60, 0], "device_id": ["a", "a", "b"], "v": [1, 2, 3]})
    >>> history_from_table(df, "fleet.csv", device_id="b")[1].tolist()
    [[3.0]]
    """
    from edgewise.tables import (
        clock_column,
        date_and_clock,
        find_time_column,
        number_column,
        time_cells,
    )

    if time_column is None:
        time_column = find_time_column(df)
        if time_column is None:
            raise InvalidParameterError(
                f"{where} has no time column: none is named "
                f"{', '.join(map(repr, TIME_NAMES[:-1]))} or {TIME_NAMES[-1]!r} (any case), "
                f"as edgewise detect finds it. Got columns {list(df.columns)!r}."
            )
    elif time_column not in df.columns:
        raise InvalidParameterError(
            f"{where} has no time column {time_column!r}. Got columns {list(df.columns)!r}.")
    clock = clock_column(df, time_column)  # date,time: one time together, as detect reads it
    if cells is not None and _DEVICE_COLUMN in cells.columns:
        df = df.assign(**{_DEVICE_COLUMN: cells[_DEVICE_COLUMN].to_numpy()})
    if clock is None:  # epoch seconds to the ns (1700000000.000000005) read as written
        df = df.assign(**{time_column: time_cells(df, cells, time_column)})
    df = _one_device(df, where, device_id)
    times = df[time_column] if clock is None else date_and_clock(df, time_column, clock)
    ts = _history_time(times)
    metrics = [c for c in df.columns if c not in (time_column, clock, _DEVICE_COLUMN)
               and not not_a_metric(c) and pd.to_numeric(df[c], errors="coerce").notna().any()]
    _warn_empty_columns(df, [time_column, clock, _DEVICE_COLUMN, *metrics], where, device_id,
                        _stacklevel)
    if not metrics:
        raise InvalidParameterError(
            f"{where} has no metric column: a metric is a column with numbers other than the "
            f"time column {time_column!r}, {_DEVICE_COLUMN!r} and label columns "
            f"({', '.join(LABEL_NAMES)}). Got columns {list(df.columns)!r}.")
    rows = df.index.to_numpy() + 1  # the file's rows, where one device's are picked
    X = np.column_stack([number_column(df, c, rows) for c in metrics])
    order = np.argsort(ts, kind="stable")
    _refuse_repeated_times(df, times, ts, order, device_id)
    return ts[order], X[order], metrics


def _warn_empty_columns(df: pd.DataFrame, read: list[str | None], where: str,
                        device_id: str | None, stacklevel: int) -> None:
    """Name, in a :class:`UserWarning`, each column not in ``read`` whose every cell is
    empty: left out of the metrics as ``edgewise detect`` leaves it out (and says so), not
    silently (a sensor that never reported got no word)."""
    for c in df.columns:
        if c in read or not_a_metric(c):
            continue
        text = df[c].astype(object).where(df[c].notna(), "").astype(str).str.strip()
        if (text == "").all():
            of = f" of device {device_id!r}" if device_id is not None else ""
            warnings.warn(f"{where}: column {c!r} left out of the metrics (every cell{of} is "
                          "empty), as edgewise detect leaves it out.", UserWarning,
                          stacklevel=stacklevel)


def _one_device(df: pd.DataFrame, where: str, device_id: str | None) -> pd.DataFrame:
    """The rows of ``df`` of one device: those of ``device_id`` when given (the index kept,
    so messages name rows of the file); a file whose ``device_id`` column names several
    devices is refused without it."""
    if _DEVICE_COLUMN not in df.columns:
        return df
    ids = df[_DEVICE_COLUMN].astype(object).where(df[_DEVICE_COLUMN].notna(), "").astype(str)
    ids = ids.str.strip()
    seen = list(dict.fromkeys(ids))
    if device_id is not None:
        if device_id not in seen:
            raise InvalidParameterError(
                f"{where} has no rows of device {device_id!r} in column {_DEVICE_COLUMN!r}; "
                f"it holds {', '.join(map(repr, seen[:5]))}{' ...' if len(seen) > 5 else ''}.")
        return df[(ids == device_id).to_numpy()]
    if len(seen) > 1:
        raise InvalidParameterError(
            f"{where} holds the readings of {len(seen)} devices in column {_DEVICE_COLUMN!r} "
            f"({', '.join(map(repr, seen[:5]))}{' ...' if len(seen) > 5 else ''}); a history "
            "is one device's: keep only its rows in the file.")
    return df


def _history_time(raw: pd.Series) -> np.ndarray:
    """The times (the time column, or a date and a time-of-day column joined) as UTC ns
    (:func:`edgewise.tables.time_ns`), as ``edgewise detect`` reads them."""
    from edgewise.tables import time_ns

    return time_ns(raw.astype(str) if pd.api.types.is_bool_dtype(raw) else raw)


def _refuse_repeated_times(df: pd.DataFrame, times: pd.Series, ts: np.ndarray,
                           order: np.ndarray, device_id: str | None) -> None:
    """Refuse two rows of one time, as ``edgewise detect`` does: windows of the history are
    cut by reading, and readings at one time have no duration between them to label.
    ``times`` is the time column (or the joined date and time of day), named in the
    message."""
    same = np.flatnonzero(np.diff(ts[order]) == 0)
    if not len(same):
        return
    i, j = sorted(int(r) for r in order[same[0]:same[0] + 2])
    a, b = int(df.index[i]) + 1, int(df.index[j]) + 1
    of = f" of device {device_id!r}" if device_id is not None else ""
    raise QualityError(
        f"Time column {times.name!r} has a duplicate timestamp {plain(times.iloc[i])!r}{of} "
        f"(rows {a} and {b}): readings at one time would have no duration between them to "
        "label. Remove or merge duplicates first.")


def history_from_store(store: Any, device_id: str, *,
                       max_readings: int | None = MAX_READINGS,
                       max_metrics: int | None = MAX_METRICS) -> History:
    """A device's readings from a :class:`~edgewise.store.Store`, one column per metric.

    Bounded, as ``GET /v1/label-queue`` reads it: of a device with more than
    ``max_metrics`` metrics, those with the most readings are kept (ties: by name), and
    of a history of more than ``max_readings`` readings the newest (the newest span holding
    at most ``max_readings`` of the device's readings, then the newest times whose table
    of the kept metrics has at most ``max_readings`` cells). ``None`` lifts a cap (the
    whole history, as before the caps).

    >>> from edgewise.store import open_store
    >>> from edgewise.telemetry import Reading
    >>> st = open_store("duckdb://:memory:")
    >>> _ = st.append([Reading("p", m, i, float(i)) for i in range(50) for m in "abc"])
    >>> _ = st.append([Reading("p", "junk", 7, 0.0)])
    >>> ts, X, metrics = history_from_store(st, "p", max_readings=60, max_metrics=2)
    >>> metrics, X.shape[1], X.size <= 60, int(ts[-1])
    (['a', 'b'], 2, True, 49)
    >>> st.close()
    """
    from edgewise.models.history import wide_readings

    if max_readings is None:
        rows = store.query(device_id)
    else:
        rows, _, _ = newest_rows(store, device_id, None, None, None, max_readings)
    if not rows:
        # not the store's URL: the label queue shows this to any viewer
        raise InvalidParameterError(f"Device {device_id!r} has no stored readings.")
    rows = _bounded(rows, max_readings, max_metrics)
    wide = wide_readings(rows, "mean")
    return wide.index.to_numpy(np.int64), wide.to_numpy(float), list(wide.columns)


def _bounded(rows: list[tuple[str, int, float]], max_readings: int | None,
             max_metrics: int | None) -> list[tuple[str, int, float]]:
    """``rows`` of at most ``max_metrics`` metrics (those with the most rows; ties by
    name) at the newest times whose table (times by kept metrics) has at most
    ``max_readings`` cells (at least 4 times), so the pivot is bounded.

    >>> _bounded([("b", 1, 0.0), ("a", 1, 0.0), ("a", 2, 0.0), ("c", 3, 0.0)], None, 2)
    [('b', 1, 0.0), ('a', 1, 0.0), ('a', 2, 0.0)]
    """
    if max_metrics is not None:
        counts: dict[str, int] = {}
        for m, _, _ in rows:
            counts[m] = counts.get(m, 0) + 1
        if len(counts) > max_metrics:
            keep = set(sorted(counts, key=lambda m: (-counts[m], m))[:max_metrics])
            rows = [r for r in rows if r[0] in keep]
    if max_readings is not None:
        times = np.unique(np.fromiter((t for _, t, _ in rows), dtype=np.int64, count=len(rows)))
        n_metrics = len({r[0] for r in rows})
        most = max(4, max_readings // max(n_metrics, 1))
        if len(times) > most:
            cut = int(times[-most])
            rows = [r for r in rows if r[1] >= cut]
    return rows


def window_length(n: int, window: int | None, device_id: str | None = None) -> int:
    """Readings per window of a history of ``n``: ``window``, else ``n // 100`` (at least
    10, and at most half of ``n``, so there are at least two windows). A ``window`` over
    half of ``n`` is refused rather than cut (a window the user did not ask for would be
    used, and recorded in the model, silently); ``device_id`` names the device in the
    message.

    >>> [window_length(n, w) for n, w in [(5000, None), (5000, 40), (14, None), (14, 7)]]
    [50, 40, 7, 7]
    >>> window_length(14, 40, "pump-1")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: window=40 is more than half of device 'pump-1''s \
14 readings; give at most 7 (windows are cut from its history, and at least two are needed).
    """
    if window and window > n // 2:
        of = f"device {device_id!r}'s" if device_id is not None else "the history's"
        raise InvalidParameterError(
            f"window={window} is more than half of {of} {n} readings; give at most "
            f"{n // 2} (windows are cut from its history, and at least two are needed).",
            field="window", value=window)
    length = window if window else max(10, n // 100)
    return min(length, max(2, n // 2))


def _windows(history: History, device_id: str, window: int | None) -> WindowSet:
    ts, X, _ = history
    if len(ts) < 4:
        raise InvalidParameterError(
            f"Device {device_id!r} has {len(ts)} readings; at least 4 are needed."
        )
    return windows_from_series(X, ts, device_id,
                               length=window_length(len(ts), window, device_id))


def suggest(history: History, device_id: str, labels: LabelStore, *, k: int = 10,
            strategy: str = "mix", window: int | None = None,
            seed: int | None = 0, record: bool = True,
            since: Deletions | None = None) -> list[dict[str, Any]]:
    """The next ``k`` windows of ``device_id`` a person should label, best first.

    Each item: ``start_ns``, ``end_ns``, ``score`` (the primary detector's highest score in
    the window), ``margin`` (z units above the device's current threshold) and ``alarm``.
    With ``strategy="mix"`` the mix's state (which strategy asked what, and how often its
    questions found the model wrong) is kept per device in ``label-mix.json`` beside the
    label store, so it keeps learning across calls as answers arrive. An open question is
    kept with its window's span ``[start_ns, end_ns]``, and answered by the labels on that
    span (as :func:`~edgewise.label.windows.window_labels` maps labels onto windows), so
    the answer reaches the strategy that asked even when the grown history is cut into
    windows with other edges (windows are ``len(history) // 100`` readings long).

    ``record=False`` answers from the saved state without saving anything: the questions
    are not recorded as asked, so the same call gives the same answer until an answer or a
    recording call changes the state (``GET /v1/label-queue`` with a viewer token: a viewer
    reads, and does not change what the next caller is offered).

    A window with no finite reading (inside a gap of the history) is never proposed:
    there is nothing in it to label, whatever a strategy makes of its features.

    ``since``: the label store's :meth:`~edgewise.label.store.LabelStore.deletions`,
    noted by the caller before it read ``history`` (default: noted as this call begins).
    A device deleted after it (``device delete``, ``DELETE /v1/devices/{id}``) gets no
    mix state saved (a device registered again under the id would inherit it); the
    windows are returned all the same, as for a deletion that dropped a state read.
    """
    since = labels.deletions() if since is None else since
    ws = _windows(history, device_id, window)
    current = labels.labels(device_id)
    y, _ = window_labels(ws, current)
    model = WindowFeedbackModel().fit(ws, y)
    # the pool every strategy chooses from: the windows holding a reading (Diversity
    # proposed windows lying wholly in a gap, whose features are all 0: a cluster of its own)
    keep = _has_reading(history[1], window_length(len(history[0]), window, device_id),
                        len(ws))
    ws, y = ws.subset(keep), y[keep]
    margin = model.decision_function(ws)
    pool = Pool(margin=margin, member_margins=model.member_margins(ws),
                features=ws.features, groups=None, labels=y)
    strat = make_strategy(strategy, seed=seed)
    keys = [[int(a), int(b)] for a, b in zip(ws.start_ns, ws.end_ns, strict=True)]
    state = labels.mix_state(device_id) if isinstance(strat, DefaultMix) else None
    if isinstance(strat, DefaultMix) and state is not None:
        # take up what the mix learned from this device's earlier questions and answers
        try:
            strat.set_state(copy.deepcopy(state), keys, place=lambda asked: _place_questions(
                asked, ws, device_id, current))
        except InvalidParameterError as exc:
            if exc.field != "strategies":  # not a state the mix wrote: say where it is
                raise labels.mix_state_error(
                    f"device {device_id!r}'s state is not one the query mix wrote: "
                    f"{str(exc).rstrip('.')}") from None
            # the mix's strategies changed since: start afresh
    picks = strat.select(pool, k)
    if record and isinstance(strat, DefaultMix):
        # only over the state as read, and only if the device was not deleted since
        # ``since``: a 'device delete' (or another suggest of this device) meanwhile wins;
        # the next suggest starts from what is stored then
        labels.save_mix_state(device_id, strat.get_state(keys), expected=state,
                              since=since)
    return [{"device_id": device_id, "start_ns": int(ws.start_ns[i]),
             "end_ns": int(ws.end_ns[i]), "score": round(float(ws.scores[i, 0]), 6),
             "margin": round(float(margin[i]), 4), "alarm": bool(margin[i] >= 0)}
            for i in picks]


def _has_reading(X: np.ndarray, length: int, n: int) -> np.ndarray:
    """Which of the ``n`` windows of ``length`` readings that
    :func:`~edgewise.label.windows.windows_from_series` cuts from the readings ``X`` hold
    at least one finite reading (the last window runs to the end of ``X``).

    >>> X = np.array([1.0, np.nan, np.nan, np.nan, 2.0, np.nan, np.nan])
    >>> _has_reading(X, 2, 3).tolist()
    [True, False, True]
    """
    rows = np.isfinite(np.asarray(X, dtype=float).reshape(len(X), -1)).any(axis=1)
    if n == 0:
        return np.zeros(0, dtype=bool)
    starts = np.arange(n) * length  # the last window's end is the end of X
    return np.add.reduceat(rows.astype(int), starts) > 0


def _place_questions(asked: list[Any], ws: WindowSet, device_id: str,
                     current: list[Any]) -> list[tuple[int, int | None]]:
    """Per open question of the query mix (its key: the ``(start_ns, end_ns)`` of the window
    asked about), ``(answer, index)``: the answer the labels ``current`` give that window
    (1 anomaly, 0 normal, -1 none yet; :func:`window_labels`'s rule), and the window of
    ``ws`` that now holds it (the one it overlaps most, of those that would take a label
    on it; ``None``: none). A key of an older state, a window's start alone, has no span:
    it is found only among windows of the same start, and answered through them.

    >>> ws = WindowSet(np.array(["d"] * 2, dtype=object), np.array([0, 15]),
    ...                np.array([15, 30]), np.zeros((2, 1)), np.zeros((2, 1)), ["f"])
    >>> from types import SimpleNamespace as L
    >>> _place_questions([(0, 10), (12, 27), 15], ws, "d",
    ...                  [L(device_id="d", start_ns=0, end_ns=10, label="normal")])
    [(0, 0), (-1, 1), (-1, 1)]
    """
    starts = {int(t): i for i, t in enumerate(ws.start_ns)}
    spans = [key for key in asked if isinstance(key, tuple) and len(key) == 2]
    answers: dict[tuple[int, int], int] = {}
    if spans:
        mine = [lab for lab in current if lab.device_id == device_id]
        q = WindowSet(np.array([device_id] * len(spans), dtype=object),
                      np.array([a for a, _ in spans], dtype=np.int64),
                      np.array([b for _, b in spans], dtype=np.int64),
                      np.zeros((len(spans), 1)), np.zeros((len(spans), 1)), ["none"])
        answers = dict(zip(spans, (int(v) for v in window_labels(q, mine)[0]), strict=True))
    out: list[tuple[int, int | None]] = []
    for key in asked:
        if key in answers:
            out.append((answers[key], _window_holding(ws, int(key[0]), int(key[1]))))
        else:  # an older state's key: a window start
            out.append((-1, starts.get(key) if isinstance(key, int) else None))
    return out


def _window_holding(ws: WindowSet, start: int, end: int) -> int | None:
    """The window of ``ws`` that ``[start, end)`` overlaps most, of those that would take a
    label on that span (it covers at least half of the window, or the window holds at
    least half of it; see :func:`window_labels`); ``None`` when none would."""
    hit = np.flatnonzero((ws.start_ns < end) & (ws.end_ns > start))
    best, most = None, 0
    for i in hit:
        a, b = int(ws.start_ns[i]), int(ws.end_ns[i])
        overlap = min(b, end) - max(a, start)
        if (2 * overlap >= b - a or 2 * overlap >= end - start) and overlap > most:
            best, most = int(i), overlap
    return best


def train_with_labels(history: History, device_id: str, labels: LabelStore, data_dir: Path,
                      *, window: int | None = None,
                      since: Deletions | None = None) -> dict[str, Any]:
    """Fit the label-aware models of a device and save them as the next model version.

    Returns a summary: ``path``, ``version``, ``snapshot_id``, ``n_labels``, ``classes``,
    ``alarms_before`` / ``alarms_after`` (windows alarming without / with the labels).

    The file is written holding the label file's write lock, unless the device was deleted
    after ``since`` (the label store's
    :meth:`~edgewise.label.store.LabelStore.deletions`, noted by the caller before it read
    ``history``; default: as this call begins): then nothing is written and
    :class:`~edgewise.label.store.DeviceDeletedError` names the device, as a device
    registered again under the id would inherit the model.
    """
    from edgewise.label.semi_supervised import FaultClassifier

    since = labels.deletions() if since is None else since
    ws = _windows(history, device_id, window)
    snapshot = labels.snapshot_id(device_id)
    current = labels.labels_at(snapshot)
    y, kind = window_labels(ws, current)
    model = WindowFeedbackModel().fit(ws, y)
    before = WindowFeedbackModel().fit(ws, np.full(len(ws), -1)).predict(ws)
    classes: list[str] = []
    fault_classes: list[str] = []
    clf = None
    faulty = (y == 1) & (kind != UNCLASSIFIED)
    if faulty.any():
        # classify alarming / labelled-anomalous windows into fault types. A window a
        # person called plain "anomaly" (cause unknown) is a target of its own, not an
        # unlabelled one: with one fault class the classifier knew nothing else and gave
        # that class to every alarm, the "anomaly" windows among them
        alarm = model.predict(ws) | (y == 1)
        # the classifier learns class indices, not names: it takes the text "nan" (how
        # numpy writes NaN among text) for no label, and a fault class named "nan" made
        # training fail, or those windows unlabelled beside other classes
        fault_classes = sorted({str(k) for k in kind[y == 1]})
        index = {c: i for i, c in enumerate(fault_classes)}
        target = np.array([index[str(k)] if v == 1 else -1 for v, k in zip(y, kind,
                                                                           strict=True)])
        clf = FaultClassifier(random_state=0).fit(ws.features[alarm], target[alarm])
        classes = [c for c in fault_classes if c != UNCLASSIFIED]
    record = {
        "kind": "edgewise.label", "device_id": device_id, "version": None,  # set below
        "created_ns": time.time_ns(), "label_snapshot_id": snapshot,
        "n_labels": int((y >= 0).sum()), "window_length": window_length(len(history[0]), window),
        "metrics": list(history[2]), "feedback_model": model, "fault_classifier": clf,
        # the class names of the classifier's class indices, in index order
        "fault_classes": fault_classes,
        # the answers the classifier learned from, so a window a person answered keeps
        # that answer's class when scored (see predict_with_labels)
        "fault_labels": [(int(lab.id), int(lab.start_ns), int(lab.end_ns), str(lab.label))
                         for lab in current if lab.device_id == device_id]
        if clf is not None else [],
    }
    # written holding the label file's write lock, which a device's deletion takes to
    # delete its labels (then its model files): a deletion landing since ``since`` was
    # noted refuses the file here, and one landing after finds and deletes it
    with labels.hold() as held:
        held.check_not_deleted([device_id], since, "the label model was")
        version = max(model_files(data_dir, device_id), default=0) + 1
        path = Path(data_dir) / "models" / f"label-{device_id}-v{version}.pkl"
        record["version"] = version
        # features of the device's data: private, as the labels they came from
        write_private(path, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
    return {"path": str(path), "version": version, "snapshot_id": snapshot,
            "n_labels": record["n_labels"], "classes": classes,
            "alarms_before": int(before.sum()), "alarms_after": int(model.predict(ws).sum())}


def model_files(data_dir: Path | str, device_id: str, *, kind: str = "label",
                ) -> dict[int, Path]:
    """The model files of ``kind`` written for ``device_id``, by version: ``label`` ones by
    :func:`train_with_labels`, ``transfer`` ones by
    :func:`~edgewise.label.fleet_transfer.train_transfer`
    (``<data dir>/models/<kind>-<device>-v<N>.pkl``; another device whose id extends this
    one, such as ``pump-1-v2`` for ``pump-1``, is not matched).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "models").mkdir()
    >>> for name in ("label-pump-1-v1.pkl", "label-pump-1-v2-v1.pkl"):
    ...     _ = (d / "models" / name).write_bytes(b"")
    >>> sorted(model_files(d, "pump-1"))
    [1]
    """
    prefix = f"{kind}-{device_id}-v"
    models = Path(data_dir) / "models"
    if not models.is_dir():
        return {}
    # names compared as text, never as a glob pattern: an id given to 'device delete' is
    # not checked, and '*' must not match the files of every device
    return {int(p.stem[len(prefix):]): p for p in models.glob(f"{kind}-*.pkl")
            if p.stem.startswith(prefix) and p.stem[len(prefix):].isascii()
            and p.stem[len(prefix):].isdigit()}


def delete_models(data_dir: Path | str, device_id: str) -> int:
    """Delete ``device_id``'s model files (they hold features of its data): its label
    models, the transfer models its labels trained (its own, and other devices' whose
    fleet it was part of), and the models ``edgewise train rul`` / ``train forecast``
    wrote under ``<data dir>/models`` from its stored data (:func:`delete_trained_models`,
    which names them); how many. Part of deleting a device and all its data: a device
    registered again under the same id starts again at version 1.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()); (d / "models").mkdir()
    >>> for name in ("label-a-v1.pkl", "rul-v1.ewm", "rul-v2.ewm"):
    ...     _ = (d / "models" / name).write_bytes(b"")
    >>> _ = record_trained_by(d / "models" / "rul-v1.ewm", ["a", "b"])
    >>> _ = record_trained_by(d / "models" / "rul-v2.ewm", ["b"])
    >>> delete_models(d, "a"), sorted(p.name for p in (d / "models").iterdir())
    (2, ['.rul-v2.ewm.trained-by.json', 'rul-v2.ewm'])
    """
    from edgewise.label.fleet_transfer import delete_transfer_models

    paths = model_files(data_dir, device_id).values()
    for p in paths:
        p.unlink(missing_ok=True)
    return (len(paths) + delete_transfer_models(data_dir, device_id)
            + len(delete_trained_models(data_dir, device_id)))


#: ``kind`` of the JSON file beside a model file trained on a store's device data
#: (:func:`record_trained_by`).
TRAINED_BY_KIND = "edgewise.trained_by"
_TRAINED_BY_SUFFIX = ".trained-by.json"


def trained_by_file(model: Path | str) -> Path:
    """The JSON file beside the model file ``model`` naming the devices whose stored data
    trained it: ``.<name>.trained-by.json``, hidden, so that no glob for the models
    themselves (the gateway's ``rul*``) picks it up as a model.

    >>> trained_by_file("/srv/ew/models/rul-v1.ewm").as_posix()
    '/srv/ew/models/.rul-v1.ewm.trained-by.json'
    """
    model = Path(model)
    return model.with_name(f".{model.name}{_TRAINED_BY_SUFFIX}")


def record_trained_by(model: Path | str, devices: list[str], *, keep: bool = False) -> Path:
    """Write the file naming the ``devices`` whose stored data trained ``model`` (what
    ``edgewise train rul`` and ``train forecast`` write beside a model trained from a
    store), so that deleting one of them deletes the model when it lies under
    ``<data dir>/models`` (:func:`delete_trained_models`). With ``keep`` the devices the
    file named already are kept in it too: written before a new model replaces the old
    one, it then names every device of either until the new one is saved. Written
    atomically, private (mode 0600). Returns its path.

    >>> import tempfile
    >>> m = Path(tempfile.mkdtemp()) / "forecast-pump-1.ewm"
    >>> _ = record_trained_by(m, ["pump-1"]); _ = record_trained_by(m, ["pump-2"], keep=True)
    >>> sorted(trained_by(m))
    ['pump-1', 'pump-2']
    """
    from edgewise._private import replace_atomically

    model = Path(model)
    named = set(map(str, devices))
    if keep:
        named |= trained_by(model) or set()
    path = trained_by_file(model)
    replace_atomically(path, json.dumps({"kind": TRAINED_BY_KIND, "model": model.name,
                                         "devices": sorted(named)}).encode())
    return path


def forget_trained_by(model: Path | str) -> None:
    """Remove the file naming the devices that trained ``model`` (when a model trained on
    no stored device data, e.g. from a CSV, replaces it)."""
    trained_by_file(model).unlink(missing_ok=True)


def trained_by(model: Path | str) -> set[str] | None:
    """The devices whose stored data trained ``model``, from the file beside it
    (:func:`record_trained_by`); ``None`` when there is none or it is not readable."""
    try:
        meta = json.loads(trained_by_file(model).read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(meta, dict) or meta.get("kind") != TRAINED_BY_KIND
            or not isinstance(meta.get("devices"), list)):
        return None
    return {str(d) for d in meta["devices"]}


def delete_trained_models(data_dir: Path | str, device_id: str) -> list[str]:
    """Delete the model files under ``<data dir>/models`` whose :func:`record_trained_by`
    file names ``device_id`` (``edgewise train rul`` / ``train forecast`` from a store),
    with that file; the names of the model files, sorted. A file naming it whose model is
    gone already is removed too. A model written elsewhere (``--out`` outside the data
    dir) is not known here: ``train`` says so when it writes one."""
    models = Path(data_dir) / "models"
    if not models.is_dir():
        return []
    gone = []
    for meta in models.glob(f".*{_TRAINED_BY_SUFFIX}"):
        # the model's name from the file's own name, never from its text: a name there
        # must not reach a file outside the folder
        model = meta.with_name(meta.name[1:-len(_TRAINED_BY_SUFFIX)])
        devices = trained_by(model)
        if devices is None or device_id not in devices:
            continue  # an unreadable file is not ours to judge; left for the user
        try:
            model.unlink()
            gone.append(model.name)
        except FileNotFoundError:
            pass
        meta.unlink(missing_ok=True)
    return sorted(gone)


def load_model(path: Path | str) -> dict[str, Any]:
    """Read a model file written by :func:`train_with_labels`. Only load files you trust.

    Raises :class:`InvalidParameterError` naming the file when it cannot be read or is not
    a whole label model file."""
    try:
        record = pickle.loads(Path(path).read_bytes())
    except Exception as exc:  # corrupt bytes raise almost anything
        # (TypeError, OverflowError, MemoryError ...): each is the file's fault, named here
        raise InvalidParameterError(
            f"{str(path)!r} is not a readable Edgewise label model file: "
            f"{type(exc).__name__}: {exc}.") from None
    if not isinstance(record, dict) or record.get("kind") != "edgewise.label":
        raise InvalidParameterError(f"{str(path)!r} is not an Edgewise label model file.")
    bad = [k for k, ok in _FIELDS.items() if k not in record or not ok(record[k])]
    if bad:
        raise InvalidParameterError(
            f"{str(path)!r} is not a whole Edgewise label model file: field(s) "
            f"{', '.join(bad)} missing or of the wrong kind.")
    return record


#: What each field of a label model file must hold.
_FIELDS: dict[str, Any] = {
    "device_id": lambda v: isinstance(v, str) and bool(v),
    "version": lambda v: isinstance(v, int) and v >= 1,
    "metrics": lambda v: isinstance(v, list) and bool(v) and all(isinstance(m, str) for m in v),
    "window_length": lambda v: isinstance(v, int) and v >= 2,
    "feedback_model": lambda v: isinstance(v, WindowFeedbackModel),
}


def on_metrics(history: History, metrics: list[str], device_id: str) -> History:
    """``history`` with its columns in the order of ``metrics`` (those a model was trained
    on); a missing one is refused, naming it and those the history has.

    >>> ts, X = np.arange(2), np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> on_metrics((ts, X, ["a", "b"]), ["b", "a"], "p")[1].tolist()
    [[2.0, 1.0], [4.0, 3.0]]
    """
    ts, X, have = history
    missing = [m for m in metrics if m not in have]
    if missing:
        raise InvalidParameterError(
            f"Device {device_id!r} has no readings of metric(s) {', '.join(map(repr, missing))}; "
            f"it has {', '.join(map(repr, have))}.", field="metrics", value=missing)
    return ts, X[:, [list(have).index(m) for m in metrics]], list(metrics)


def predict_with_labels(history: History, model: Path | str | dict[str, Any], *,
                        device_id: str | None = None) -> list[dict[str, Any]]:
    """Score each window of a device's ``history`` with a label model saved by
    :func:`train_with_labels`, the history cut into windows as training cut it (the
    model's window length, on its metrics in its order).

    With ``device_id`` (the device whose history it is), a model of another device is
    refused in one line naming both: its thresholds and pattern memory are that device's,
    and the windows would be cut and scored as that device's.

    A list in time order of ``{"start_ns", "end_ns", "score", "margin", "alarm",
    "fault"}``: ``score`` is the primary detector's highest score in the window,
    ``margin`` its z units above the device's learned threshold (after the pattern memory
    and classifier of the answers), ``alarm`` whether that is an alarm, and ``fault`` the
    fault class the model's classifier gives an alarming window (``None`` when it is no
    alarm or no fault class was labelled).

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> v = np.random.default_rng(0).normal(20, 0.3, 2000); v[1500:1504] += 5
    >>> hist = ((1_700_000_000 + 60 * np.arange(2000)) * 10**9, v[:, None], ["temp_c"])
    >>> out = train_with_labels(hist, "pump-1", LabelStore(d), d, window=50)
    >>> wins = predict_with_labels(hist, out["path"])
    >>> len(wins), [i for i, w in enumerate(wins) if w["alarm"]]
    (40, [30])
    """
    record = model if isinstance(model, dict) else load_model(model)
    dev, length = record["device_id"], record["window_length"]
    if device_id is not None and dev != device_id:
        what = "The label model" if isinstance(model, dict) else repr(str(model))
        raise InvalidParameterError(f"{what} is {dev!r}'s label model, not {device_id!r}'s.",
                                    field="device_id", value=device_id)
    ts, X, _ = on_metrics(history, record["metrics"], dev)
    if len(ts) < max(length, 4):
        raise InvalidParameterError(
            f"Device {dev!r} has {len(ts)} readings, fewer than one window of "
            f"{max(length, 4)} (the window length its label model was trained with).",
            field="history", value=len(ts))
    ws = windows_from_series(X, ts, dev, length=length)
    margin = record["feedback_model"].decision_function(ws)
    alarm = margin >= 0
    fault = np.full(len(ws), None, dtype=object)
    clf = record.get("fault_classifier")
    if clf is not None and alarm.any():
        predicted = clf.predict(ws.features[alarm])
        names = record.get("fault_classes")  # none in a file saved before: classes by name
        kinds = np.array([names[int(c)] if names else str(c) for c in predicted], dtype=object)
        # a window a person answered keeps that answer: the classifier (label spreading,
        # which lets a labelled window drift to its neighbours' class) gave a window
        # labelled "anomaly" beside look-alikes labelled with a fault class that class
        answered = record.get("fault_labels") or []
        if answered:
            y_ans, kind_ans = window_labels(ws, [
                SimpleNamespace(id=i, device_id=dev, start_ns=a, end_ns=b, label=lab)
                for i, a, b, lab in answered])
            own = (y_ans == 1)[alarm]
            kinds[own] = kind_ans[alarm][own]
        # a window like those a person called plain "anomaly" has no known fault class
        fault[alarm] = [None if c == UNCLASSIFIED else c for c in kinds]
    return [{"start_ns": int(ws.start_ns[i]), "end_ns": int(ws.end_ns[i]),
             "score": round(float(ws.scores[i, 0]), 6), "margin": round(float(margin[i]), 4),
             "alarm": bool(alarm[i]), "fault": fault[i]} for i in range(len(ws))]
