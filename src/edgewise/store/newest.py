"""Reading a device's newest rows under a bound, for the requests that must not read a
whole history (:func:`newest_rows`): the label queue's history and the quality report."""

from __future__ import annotations

from typing import Any

from edgewise.config import MAX_READINGS

__all__ = ["newest_rows"]

#: The fewest rounds :func:`newest_rows` allows its search. It was the bound: a range
#: wider than 2**40 times the newest span (a device with one reading from a clock at 1970
#: and the rest dense, now) ran out of rounds and got the range's oldest rows back, the
#: first metric's. :func:`_probes` gives as many as halving the range to one nanosecond
#: takes (at most 66 look-ups for int64 times), so the search always ends at its span.
_MAX_PROBES = 40


def _probes(lo: int, hi: int) -> int:
    """Rounds of :func:`newest_rows`'s search over ``[lo, hi)``: a look-up for each
    halving down to one nanosecond, one for the first guess, and the round that stops.

    >>> _probes(0, 2**64)
    67
    """
    return max(_MAX_PROBES, (hi - lo).bit_length() + 2)


def newest_rows(store: Any, device_id: str, metric: str | None, start_ns: int | None,
                end_ns: int | None, limit: int = MAX_READINGS,
                ) -> tuple[list[tuple[str, int, float]], int, bool]:
    """The device's rows ``(metric, ts_ns, value)`` (of ``metric``, or all) in
    ``[start_ns, end_ns)`` (``None``: unbounded) when they are at most ``limit``; else
    those of the newest span ``[s, end_ns)`` holding at most ``limit`` (and at least half
    of it, where the readings allow). Returns ``(rows, s, truncated)``; ``s`` is
    ``start_ns`` when not truncated. The label queue reads a device's history so, and the
    quality report its range: one helper of the store's for both (it lived in the label
    workflow, and the quality route imported it from there).

    Each look-up reads at most ``limit + 1`` rows (the store's ``limit``), so memory stays
    bounded however long the range; the span is found by halving it, from a first guess by
    the device's reading rate, in at most one look-up per bit of the range's width (66
    for int64 times; :func:`_probes`). Only more than ``limit`` readings at the newest
    instant give rows that are not the newest span's: that instant's first ``limit``.

    >>> from edgewise.store import open_store
    >>> from edgewise.telemetry import Reading
    >>> st = open_store("duckdb://:memory:")
    >>> _ = st.append([Reading("p", "t", i * 10**9, float(i)) for i in range(100)])
    >>> rows, s, cut = newest_rows(st, "p", None, 0, None, limit=30)
    >>> cut, 15 <= len(rows) <= 30, rows[-1][1] == 99 * 10**9, s <= rows[0][1]
    (True, True, True, True)
    >>> st.close()
    """
    rows = store.query(device_id, metric, start_ns, end_ns, None, limit + 1)
    if len(rows) <= limit:
        return rows, start_ns, False
    summary = store.device(device_id)  # that device's alone, not the fleet's
    hi = end_ns
    if hi is None:  # up to the device's newest reading
        newest = summary.last_ns if summary is not None and summary.last_ns is not None else (
            max(t for _, t, _ in rows))
        hi = max(newest, max(t for _, t, _ in rows)) + 1
    # [lo, hi) holds more than limit: nothing is before the device's first reading
    lo = min(0, min(t for _, t, _ in rows)) if start_ns is None else start_ns
    if summary is not None and summary.first_ns is not None:
        lo = max(lo, summary.first_ns)
    best: list[tuple[str, int, float]] | None = None
    good = hi  # [good, hi) holds at most limit: best
    guess = None
    if summary is not None and summary.readings and summary.last_ns is not None and (
            summary.first_ns is not None and summary.last_ns > summary.first_ns):
        # the span the device's mean rate fills with 90 % of the limit, as a first try
        per_ns = summary.readings / (summary.last_ns - summary.first_ns)
        if metric is not None and summary.metrics:
            per_ns /= len(summary.metrics)
        guess = hi - int(0.9 * limit / per_ns)
    for _ in range(_probes(lo, hi)):
        mid = guess if guess is not None and lo < guess < good else lo + (good - lo) // 2
        guess = None
        if not lo < mid < good:
            break
        got = store.query(device_id, metric, mid, hi, None, limit + 1)
        if len(got) <= limit:
            good, best = mid, got
            if 2 * len(got) >= limit:
                break
        else:
            lo = mid
    if best is None:  # more than limit at the newest instant, [hi - 1, hi): its first rows
        best = store.query(device_id, metric, lo, hi, None, limit)
        good = lo
    return best, good, True
