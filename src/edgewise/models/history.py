"""A device's stored readings as the table a RUL model reads: one row per time, one column
per metric.

The store keeps readings long (``metric, ts_ns, value``); :class:`~edgewise.models.rul.RULModel`
reads wide histories (a unit column, a time column, one column per sensor).
:func:`device_frame` pivots one device's rows on their time (the last value wins when a
metric has two readings at one time), carries each metric's last value forward over the
times it did not report, leaves it empty (NaN) over the times before it first reported
(never back: :class:`~edgewise.models.rul.RULModel` scores those rows at the regime's
mean, as a device scoring rows as they come does, so server and edge agree), and numbers
the rows ``1 … n``: the time column counts *readings*, so a RUL is in
readings, like C-MAPSS cycles. The device id becomes the unit. ``until_ns`` keeps only the
readings at or before a known failure time, for training. A metric named like the unit or
the time column is refused (:class:`~edgewise.errors.InvalidParameterError`): the table
cannot hold both, and neither may silently replace the other.

A device whose old readings were deleted (retention, ``EDGEWISE_RETENTION_DAYS``, or the
store's ``delete_before``; the store records it: ``Store.trimmed_before``) has a history
that no longer starts at its beginning, but its rows are numbered from 1 all the same: a
RUL model would score it as a young unit. :func:`trimmed_reason` says why it is refused.

>>> rows = [("temp", 10, 1.0), ("temp", 20, 2.0), ("rpm", 20, 900.0), ("temp", 30, 3.0)]
>>> device_frame(rows, "pump-1").to_dict("list")
{'unit': ['pump-1', 'pump-1', 'pump-1'], 'cycle': [1, 2, 3], 'rpm': [nan, 900.0, 900.0], 'temp': [1.0, 2.0, 3.0]}
>>> device_frame(rows, "pump-1", until_ns=20)["cycle"].tolist()
[1, 2]
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from edgewise.errors import InvalidParameterError

__all__ = ["device_frame", "reading_step_s", "trimmed_reason", "wide_readings"]


def device_frame(
    rows: Sequence[tuple[str, int, float]],
    device_id: str,
    unit_column: str = "unit",
    time_column: str = "cycle",
    until_ns: int | None = None,
) -> pd.DataFrame:
    """One device's ``(metric, ts_ns, value)`` rows as a wide history (see the module doc).

    Returns an empty frame (with the unit and time columns) when no row is left. Raises
    :class:`~edgewise.errors.InvalidParameterError` when a metric of the device has the
    name of the unit or the time column.

    >>> device_frame([("cycle", 10, 1.0)], "pump-1")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: Device 'pump-1' has a metric named 'cycle', the name of the history's time column; rename the metric, or name the time column otherwise.
    """  # noqa: E501
    for column, role in ((unit_column, "unit"), (time_column, "time")):
        if any(r[0] == column for r in rows):
            raise InvalidParameterError(
                f"Device {device_id!r} has a metric named {column!r}, the name of the "
                f"history's {role} column; rename the metric, or name the {role} column "
                "otherwise.",
                field=role + "_column", value=column,
            )
    if until_ns is not None:
        rows = [r for r in rows if r[1] <= until_ns]
    if not rows:
        return pd.DataFrame(columns=[unit_column, time_column])
    wide = wide_readings(rows).reset_index(drop=True)
    wide.insert(0, time_column, range(1, len(wide) + 1))
    wide.insert(0, unit_column, device_id)
    return wide


def trimmed_reason(before_ns: int, *, why: bool = True) -> str:
    """Why a RUL model must not score a device whose stored readings before ``before_ns``
    (what ``Store.trimmed_before`` gives) were deleted; it speaks of the device as "its".
    ``why=False`` leaves out the explanation and the way out (:data:`TRIMMED_WHY`), for a
    list of devices that says them once.

    >>> trimmed_reason(1_700_000_000_500_000_000, why=False)
    "its readings before 2023-11-14T22:13:20.5Z were deleted by retention (EDGEWISE_RETENTION_DAYS) or Store.delete_before(), and the RUL model needs a unit's whole history"
    """  # noqa: E501
    from datetime import UTC, datetime

    sec, ns = divmod(int(before_ns), 10**9)
    when = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    when += (f".{ns:09d}".rstrip("0") if ns else "") + "Z"
    short = (f"its readings before {when} were deleted by retention (EDGEWISE_RETENTION_DAYS) "
             "or Store.delete_before(), and the RUL model needs a unit's whole "
             "history")
    return f"{short}: {TRIMMED_WHY}" if why else short


#: Why a RUL model needs a unit's whole history, and what to do where the store's was trimmed.
TRIMMED_WHY = (
    "it takes the unit's age and whole-history trends from the stored rows, numbered from "
    "the first one kept, so the rest would be scored as a younger unit's, silently wrong. "
    "Score such a device from its whole history (a CSV of it: 'edgewise predict rul --data "
    "FILE.csv'), and keep whole the histories of devices scored for RUL "
    "(EDGEWISE_RETENTION_DAYS=0)")


def reading_step_s(rows: Sequence[tuple[str, int, float]]) -> float | None:
    """The mean seconds between a device's distinct reading times (``None`` with fewer
    than two): a RUL from :func:`device_frame` counts readings (rows), so ``rul * step`` is
    about the seconds left. The mean, not the median: where metrics arrive at different
    instants (temp every 10 s, vibration 0.5 s after each) the gaps alternate 0.5 s and
    9.5 s, and their median was either, by the count's parity, 10x off for one of them.

    >>> reading_step_s([("temp", 0, 1.0), ("rpm", 0, 2.0), ("temp", 2_000_000_000, 1.0)])
    2.0
    >>> reading_step_s([("t", 0, 1.0), ("v", 500_000_000, 1.0), ("t", 10_000_000_000, 1.0),
    ...                 ("v", 10_500_000_000, 1.0)])
    3.5
    """
    import numpy as np

    times = np.unique(np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)))
    if len(times) < 2:
        return None
    return round((int(times[-1]) - int(times[0])) / (len(times) - 1) / 1e9, 6)


def wide_readings(rows: Sequence[tuple[str, int, float]], agg: str = "last") -> pd.DataFrame:
    """Long ``(metric, ts_ns, value)`` rows as one row per reading time (the index, sorted)
    and one column per metric; ``agg`` merges two readings of a metric at one time, and a
    metric's last value carries forward over the times it did not report.

    >>> wide = wide_readings([("b", 2, 5.0), ("a", 1, 1.0), ("a", 2, 3.0), ("a", 2, 4.0)], "mean")
    >>> wide.index.tolist(), wide["a"].tolist(), wide["b"].tolist()
    ([1, 2], [1.0, 3.5], [nan, 5.0])
    """
    frame = pd.DataFrame(list(rows), columns=["metric", "ts_ns", "value"])
    wide = frame.pivot_table(index="ts_ns", columns="metric", values="value", aggfunc=agg)
    wide.columns = [str(c) for c in wide.columns]
    return wide.sort_index().ffill()
