"""Sort a series by time, counting readings that arrived out of order.

>>> ts, v, n_late = sort_by_time([3, 1, 2], [30.0, 10.0, 20.0])
>>> ts.tolist(), v.tolist(), n_late
([1, 2, 3], [10.0, 20.0, 30.0], 2)
"""

from __future__ import annotations

import numpy as np

from edgewise.quality.base import as_series

__all__ = ["count_out_of_order", "newest_first", "sort_by_time"]


def count_out_of_order(ts: object) -> int:
    """Readings whose time is earlier than the latest time seen before them and new: a
    late re-delivery of a time already seen is that time's duplicate or conflict
    (:func:`~edgewise.quality.duplicates.deduplicate`), one fault, not out of order too.

    >>> count_out_of_order([1, 5, 2, 6, 3]), count_out_of_order([0, 1, 2, 3, 4, 2])
    (2, 0)
    """
    t = np.asarray(ts, dtype=np.int64)
    if len(t) < 2:
        return 0
    first = np.zeros(len(t), dtype=bool)  # the first reading of each time
    first[np.unique(t, return_index=True)[1]] = True
    return int(np.sum((t[1:] < np.maximum.accumulate(t)[:-1]) & first[1:]))


def newest_first(ts: object) -> bool:
    """Whether times ``ts``, in the order given (a file's rows), run newest first: more of
    them step back in time from the one before than forward. Such an order (an export
    sorted descending) is no arrival order: read in reverse, a reading out of place in it
    is out of order, where read as given every reading but the first was.

    >>> newest_first([5, 4, 3, 2, 1]), newest_first([5, 4, 1, 3, 2]), newest_first([1, 2, 1])
    (True, True, False)
    """
    t = np.asarray(ts, dtype=np.int64).reshape(-1)
    return bool(np.sum(t[1:] < t[:-1]) > np.sum(t[1:] > t[:-1]))


def sort_by_time(ts: object, values: object) -> tuple[np.ndarray, np.ndarray, int]:
    """Stable sort by time; returns sorted times, values, and the out-of-order count."""
    t, v = as_series(ts, values)
    order = np.argsort(t, kind="stable")
    return t[order], v[order], count_out_of_order(t)
