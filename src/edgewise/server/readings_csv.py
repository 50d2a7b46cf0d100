"""A device's readings as CSV text, read from the store in bounded slices.

Each metric is read with :meth:`~edgewise.store.base.Store.query` a slice at a time (its
rows come in time order), and the next slice starts where the last one ended, so memory
holds at most one slice per metric whatever the history's length. ``long`` writes
``time,metric,value`` metric after metric; ``wide`` writes ``time,<metric>...``, one row per
timestamp (an empty cell where a metric has no reading then), merging the metrics'
slices in time order (a k-way merge).

>>> from edgewise.store import open_store
>>> from edgewise.telemetry import Reading
>>> s = open_store("duckdb://:memory:")
>>> _ = s.append([Reading("p", "a", 10**9, 1.5), Reading("p", "b", 2 * 10**9, 2.0)])
>>> print(b"".join(csv_chunks(s, "p", ["a", "b"], time_format="epoch_s")).decode(), end="")
time,a,b
1,1.5,
2,,2.0
>>> print(b"".join(csv_chunks(s, "p", ["a", "b"], form="long")).decode(), end="")
time,metric,value
1970-01-01T00:00:01.000000000Z,a,1.5
1970-01-01T00:00:02.000000000Z,b,2.0
>>> s.close()
"""

from __future__ import annotations

import csv
import heapq
import io
import itertools
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any, Literal

from edgewise.tables import TIME_NAMES, not_a_metric

__all__ = ["FORMATS", "TIME_FORMATS", "csv_chunks", "merge_wide", "metric_rows",
           "slice_rows_for", "time_formatter", "wide_header"]

FORMATS = ("wide", "long")
TIME_FORMATS = ("rfc3339", "epoch_ns", "epoch_s")

#: Rows one metric's slice holds at most (one ``Store.query``).
SLICE_ROWS = 20_000
#: Rows all metrics' slices hold together at most, as long as each keeps ``MIN_SLICE_ROWS``.
BUDGET_ROWS = 200_000
#: Rows a slice holds at least, however many metrics are merged.
MIN_SLICE_ROWS = 500
#: Rows formatted before a chunk is handed to the response.
CHUNK_ROWS = 2_000

_NS = 10**9
_INT64_MAX = 2**63 - 1
_EPOCH = date(1970, 1, 1)


def slice_rows_for(metrics: int) -> int:
    """Rows per slice when ``metrics`` metrics are read side by side (wide): the budget
    shared, between ``MIN_SLICE_ROWS`` and ``SLICE_ROWS``.

    >>> slice_rows_for(1), slice_rows_for(40), slice_rows_for(10_000)
    (20000, 5000, 500)
    """
    return max(MIN_SLICE_ROWS, min(SLICE_ROWS, BUDGET_ROWS // max(1, metrics)))


def metric_rows(store: Any, device_id: str, metric: str, start_ns: int | None = None,
                end_ns: int | None = None, step_ns: int | None = None,
                slice_rows: int = SLICE_ROWS,
                check: Callable[[], None] | None = None) -> Iterator[tuple[int, float]]:
    """``(ts_ns, value)`` of one metric in ``[start_ns, end_ns)`` in time order (per
    ``step_ns`` bucket, its start and mean, when given), read ``slice_rows`` at a time.

    Each slice starts where the last ended. Raw readings: a full slice's rows at its last
    timestamp are left for the next slice, which starts at that timestamp, so rows that
    share it are neither lost nor doubled however the slice cut them; a full slice all at
    one timestamp is followed by that timestamp's rows read whole. Buckets: each is one
    row, so the next slice starts at the last bucket's end. A raw slice after the first
    that comes back empty (the rows left for it are gone: the device deleted meanwhile)
    calls ``check``, which raises when the rows read are not whole.

    >>> from edgewise.store import open_store
    >>> from edgewise.telemetry import Reading
    >>> s = open_store("duckdb://:memory:")
    >>> _ = s.append([Reading("p", "t", i, float(i)) for i in range(5)])
    >>> list(metric_rows(s, "p", "t", start_ns=1, slice_rows=2))
    [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    >>> list(metric_rows(s, "p", "t", step_ns=2, slice_rows=2))
    [(0, 0.5), (2, 2.5), (4, 4.0)]
    >>> s.close()
    """
    if slice_rows < 2:
        raise ValueError(f"slice_rows must be at least 2. Got {slice_rows!r}.")
    lo, first = start_ns, True
    while True:
        rows = store.query(device_id, metric, lo, end_ns, step_ns, slice_rows)
        if not rows and not first and step_ns is None and check is not None:
            check()  # the rows at ``lo`` left for this slice are gone
        first = False
        if len(rows) < slice_rows:  # the last slice
            for _m, t, v in rows:
                yield t, v
            return
        last = rows[-1][1]
        if step_ns is not None:
            for _m, t, v in rows:
                yield t, v
            lo = last + step_ns
        else:
            cut = len(rows) - 1
            while cut > 0 and rows[cut - 1][1] == last:
                cut -= 1
            if cut == 0:  # a whole slice at one timestamp: that timestamp, read whole
                rows = store.query(device_id, metric, last, last + 1, None, None)
                if not rows and check is not None:
                    check()
                lo = last + 1
            else:
                del rows[cut:]
                lo = last
            for _m, t, v in rows:
                yield t, v
        del rows
        if lo > _INT64_MAX or (end_ns is not None and lo >= end_ns):
            return


def merge_wide(series: list[Iterator[tuple[int, float]]]
               ) -> Iterator[tuple[int, list[float | None]]]:
    """Rows ``(ts_ns, cells)`` of several time-ordered series merged in time order (a
    k-way merge): one row per timestamp, a cell per series, ``None`` where a series has no
    value then. A series with two values at one timestamp gets a second row there.

    >>> list(merge_wide([iter([(1, 1.0), (3, 3.0)]), iter([(2, 2.0), (3, 30.0)])]))
    [(1, [1.0, None]), (2, [None, 2.0]), (3, [3.0, 30.0])]
    >>> list(merge_wide([iter([(1, 1.0), (1, 1.5)]), iter([(1, 9.0)])]))
    [(1, [1.0, 9.0]), (1, [1.5, None])]
    """
    n = len(series)
    merged = heapq.merge(*(_tagged(i, it) for i, it in enumerate(series)))
    head = next(merged, None)
    if head is None:
        return
    now: int = head[0]
    pending: list[list[float | None]] = []
    for t, i, v in itertools.chain((head,), merged):
        if t != now:
            for cells in pending:
                yield now, cells
            now, pending = t, []
        for cells in pending:  # the first row at this time without a value of series i
            if cells[i] is None:
                cells[i] = v
                break
        else:
            extra: list[float | None] = [None] * n
            extra[i] = v
            pending.append(extra)
    for cells in pending:
        yield now, cells


def _tagged(i: int, rows: Iterator[tuple[int, float]]) -> Iterator[tuple[int, int, float]]:
    """``(ts_ns, i, value)`` of each row: merged by time, then by series."""
    for t, v in rows:
        yield t, i, v


def time_formatter(time_format: str) -> Callable[[int], str]:
    """Text of a time in ns: ``rfc3339`` (UTC, all nine digits of the store's ns kept),
    ``epoch_ns``, or ``epoch_s`` (exact decimal seconds).

    >>> [time_formatter(f)(1706702400_000_000_001) for f in TIME_FORMATS]
    ['2024-01-31T12:00:00.000000001Z', '1706702400000000001', '1706702400.000000001']
    >>> time_formatter("epoch_s")(-1), time_formatter("epoch_s")(5 * 10**9)
    ('-0.000000001', '5')
    >>> time_formatter("rfc3339")(-1), time_formatter("rfc3339")(2**63 - 1)
    ('1969-12-31T23:59:59.999999999Z', '2262-04-11T23:47:16.854775807Z')
    """
    if time_format == "epoch_ns":
        return str
    if time_format == "epoch_s":
        def epoch_s(ts: int) -> str:
            s, ns = divmod(abs(ts), _NS)
            text = f"{s}.{ns:09d}".rstrip("0").rstrip(".") if ns else str(s)
            return "-" + text if ts < 0 else text
        return epoch_s
    if time_format != "rfc3339":
        raise ValueError(f"time_format must be one of {', '.join(TIME_FORMATS)}. "
                         f"Got {time_format!r}.")
    days: dict[int, str] = {}  # a day's date text, made once per day of the history

    def rfc3339(ts: int) -> str:
        s, ns = divmod(ts, _NS)
        day, sec = divmod(s, 86_400)
        ymd = days.get(day)
        if ymd is None:
            if len(days) > 4096:
                days.clear()
            ymd = days[day] = (_EPOCH + timedelta(days=day)).isoformat()
        h, sec = divmod(sec, 3600)
        m, sec = divmod(sec, 60)
        return f"{ymd}T{h:02d}:{m:02d}:{sec:02d}.{ns:09d}Z"
    return rfc3339


def _read_as_no_metric(name: str) -> bool:
    """Whether ``detect``/``quality`` would read a column named ``name`` as other than a
    metric: a clock (:data:`~edgewise.tables.TIME_NAMES`, any case) or a label or score."""
    return name.strip().lower() in TIME_NAMES or bool(not_a_metric(name.strip()))


def _csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(cells)
    return buf.getvalue()


def wide_header(metrics: list[str]) -> list[str]:
    """The wide CSV's header: ``time`` (always: ``edgewise detect`` and ``edgewise
    quality`` take the column named so as the clock), then a column per metric, named
    as the metric, unless a CSV reader would take it for something else: a name before it
    (``time``, or an earlier metric's column: readers ignore the spaces around a name), or
    a name those readers give a meaning of their own, in any case: a clock
    (:data:`~edgewise.tables.TIME_NAMES`: a metric ``timestamp`` was taken for the clock
    before ``time``, and ``date`` beside ``time`` for the date of a date-and-time pair) or
    no metric (:func:`~edgewise.tables.not_a_metric`: ``label``, ``target``,
    ``anomaly_score``...). That metric's column is its name with ``_`` appended until it
    is taken for no other column and means nothing to the readers.

    >>> wide_header(["temp"]), wide_header(["time", "time_"]), wide_header(["temp", "temp "])
    (['time', 'temp'], ['time', 'time__', 'time_'], ['time', 'temp', 'temp _'])
    >>> wide_header(["Timestamp", "date", "target", "temp"])
    ['time', 'Timestamp_', 'date_', 'target_', 'temp']
    """
    reserved = {"time", *(m.strip() for m in metrics)}  # a renamed column takes none
    taken, out = {"time"}, ["time"]
    for metric in metrics:
        name = metric
        if name.strip() in taken or _read_as_no_metric(name):
            name += "_"
            while (name.strip() in taken or name.strip() in reserved
                   or _read_as_no_metric(name)):
                name += "_"
        taken.add(name.strip())
        out.append(name)
    return out


def csv_chunks(store: Any, device_id: str, metrics: list[str], *,
               start_ns: int | None = None, end_ns: int | None = None,
               step_ns: int | None = None, form: Literal["wide", "long"] | str = "wide",
               time_format: str = "rfc3339", keep_empty: bool = False,
               slice_rows: int | None = None,
               check: Callable[[], None] | None = None) -> Iterator[bytes]:
    """The CSV of ``metrics`` of ``device_id`` in ``[start_ns, end_ns)`` (per ``step_ns``
    bucket when given) as UTF-8 chunks of about ``CHUNK_ROWS`` rows, header first.

    Wide: a column per metric with a reading in the range (each of ``metrics`` when
    ``keep_empty``), in the order given. Long: ``time,metric,value`` in ``metrics``' order,
    each in time order. Values are written as Python's shortest round-trip text. Lazy: the
    store is read as the chunks are taken, never more than one slice per metric at once.

    ``check``, when given, is called after the last row is read (before the last chunk
    is handed over) and when a slice finds the rows left for it gone (:func:`metric_rows`):
    it raises when the rows read may not be whole (the device was deleted meanwhile), so
    that the stream fails instead of ending as if whole.
    """
    fmt = time_formatter(time_format)
    if form not in FORMATS:
        raise ValueError(f"form must be one of {', '.join(FORMATS)}. Got {form!r}.")
    if form == "long":
        rows = slice_rows or SLICE_ROWS

        def long_lines() -> Iterator[str]:
            for metric in metrics:
                name = _csv_line([metric])[:-1]
                for t, v in metric_rows(store, device_id, metric, start_ns, end_ns, step_ns,
                                        rows, check):
                    yield f"{fmt(t)},{name},{v!r}\n"

        yield b"time,metric,value\n"
        yield from _chunked(long_lines(), check)
        return
    rows = slice_rows or slice_rows_for(len(metrics))
    series, kept = [], []
    for metric in metrics:
        it = metric_rows(store, device_id, metric, start_ns, end_ns, step_ns, rows, check)
        first = next(it, None)  # a metric with no reading in the range gets no column
        if first is None and not keep_empty:
            continue
        kept.append(metric)
        series.append(_chain(first, it))
    yield _csv_line(wide_header(kept)).encode()
    yield from _chunked((fmt(t) + "," + ",".join("" if v is None else repr(v) for v in cells)
                         + "\n" for t, cells in merge_wide(series)), check)


def _chunked(lines: Iterator[str], check: Callable[[], None] | None) -> Iterator[bytes]:
    """``lines`` joined into UTF-8 chunks of ``CHUNK_ROWS``; ``check`` (when given) runs
    after the last line is read and before the last chunk is handed over."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= CHUNK_ROWS:
            yield "".join(chunk).encode()
            chunk = []
    if check is not None:
        check()
    if chunk:
        yield "".join(chunk).encode()


def _chain(first: tuple[int, float] | None,
           rest: Iterator[tuple[int, float]]) -> Iterator[tuple[int, float]]:
    if first is not None:
        yield first
        yield from rest
