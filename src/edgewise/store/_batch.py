"""What every backend does to a batch before it touches storage: columns, keys, classification.

Both backends look up which (device, metric, ts) keys of a batch are already stored, then
call :func:`classify`, which decides, reading by reading in arrival order, what is new,
what is a duplicate and what is a conflict. Keeping this in one place keeps the two
backends' counts identical, which the contract suite checks.

>>> from edgewise.telemetry import Reading
>>> rs = [Reading("d", "t", 1, 1.0), Reading("d", "t", 1, 1.0), Reading("d", "t", 1, 2.0)]
>>> c = classify(rs, existing={}, known_conflicts=set())
>>> c.new, c.duplicates, [(x.stored_value, x.new_value) for x in c.conflicts]
([0], 1, [(1.0, 2.0)])
"""

from __future__ import annotations

import bisect
import numbers
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from edgewise.errors import StoreError
from edgewise.store.base import Conflict
from edgewise.telemetry import Reading

__all__ = [
    "NAME_MAX_BYTES",
    "Classified",
    "Columns",
    "Prepared",
    "SeqTracker",
    "asked_seqs",
    "asked_seqs_many",
    "check_readings",
    "check_text_args",
    "classify",
    "classify_batch",
    "normalise_seqs",
    "prepare",
]

Key = tuple[str, str, int]


@dataclass(slots=True)
class Classified:
    """Positions of the readings to insert, the duplicate count and the new conflicts."""

    new: list[int] = field(default_factory=list)
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)


@dataclass(slots=True)
class Columns:
    """A batch as columns, built once per append (both backends need them).

    >>> c = Columns.of([Reading("d", "t", 1, 1.0, seq=3), Reading("d", "u", 1, 2.0, seq=3)])
    >>> c.unique_keys, c.seqs_by_device()
    (True, {'d': {3}})
    """

    device_id: list[str]
    metric: list[str]
    ts_ns: list[int]
    value: list[float]
    seq: list[int | None]
    unique_keys: bool

    @classmethod
    def of(cls, readings: Sequence[Reading]) -> Columns:
        """Columns of ``readings``; ``unique_keys`` says no (device, metric, ts) repeats."""
        devs = [r.device_id for r in readings]
        metrics = [r.metric for r in readings]
        ts = [r.ts_ns for r in readings]
        unique = len(set(zip(devs, metrics, ts, strict=True))) == len(ts)
        return cls(devs, metrics, ts, [float(r.value) for r in readings],
                   [r.seq for r in readings], unique)

    def seqs_by_device(self) -> dict[str, set[int]]:
        """The seqs (>= 1) carried by the readings themselves, per device."""
        out: dict[str, set[int]] = {}
        for d, q in set(zip(self.device_id, self.seq, strict=True)):
            if q is not None and q >= 1:
                out.setdefault(d, set()).add(q)
        return out


def check_readings(readings: Sequence[Reading]) -> list[Reading]:
    """Raise :class:`StoreError` (before anything is written) if a reading cannot be stored;
    else give the readings, each whose numbers were of another numeric type (a numpy
    ``int64`` time, a ``float32`` value) as a copy holding them as ``int`` and ``float``.

    Validation proper happens in :mod:`edgewise.telemetry`; this guards the store against a
    caller that bypasses it, so that a bad row fails the whole call instead of half of it.

    >>> import numpy as np
    >>> check_readings([Reading("d", "t", np.int64(5), np.float32(0.5))])
    [Reading(device_id='d', metric='t', ts_ns=5, value=0.5, seq=None, unit=None)]
    >>> check_readings([Reading("d", "t", 1, float("nan"))])
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Cannot store reading 0 (device 'd', metric 't'): value must be a finite number. Got nan instead.
    """  # noqa: E501
    lo, hi, top = -(2**63), 2**63, 2**62
    big = _INT_FLOAT_MAX
    cap = NAME_MAX_BYTES  # an ASCII name's length is its UTF-8 size
    out: list[Reading] | None = None  # a copy, from the first reading converted on
    for i, r in enumerate(readings):
        # fast path for the common exact types; anything else gets the careful checks below
        if type(r) is Reading:
            v, t, q = r.value, r.ts_ns, r.seq
            if (
                ((type(v) is float and v - v == 0.0) or (type(v) is int and -big <= v <= big))
                and type(t) is int and lo <= t < hi
                and (q is None or (type(q) is int and 0 <= q < top))
                and type(r.device_id) is str and r.device_id and r.device_id.isascii()
                and "\x00" not in r.device_id and len(r.device_id) <= cap
                and type(r.metric) is str and r.metric and r.metric.isascii()
                and "\x00" not in r.metric and len(r.metric) <= cap
            ):
                if out is not None:
                    out.append(r)
                continue
        if not isinstance(r, Reading):
            raise StoreError(
                f"Cannot store item {i}: it must be an edgewise.telemetry.Reading. "
                f"Got {type(r).__name__} instead."
            )
        problem, fixed = _reading_problem(r)
        if problem:
            raise StoreError(
                f"Cannot store reading {i} (device {_shown_name(r.device_id)}, metric "
                f"{_shown_name(r.metric)}): {problem}"
            )
        if fixed is not r and out is None:
            out = list(readings[:i])
        if out is not None:
            out.append(fixed)
    if out is None:
        return readings if isinstance(readings, list) else list(readings)
    return out


#: The most UTF-8 bytes a device id or a metric name may take in a store: PostgreSQL
#: refuses a key over about 2.7 KB in its indexes (``readings``' primary key holds both,
#: ``index row size 3024 exceeds btree version 4 maximum 2704``), and failed the whole
#: batch there, where DuckDB stored it. The gateway allows 64 characters of ASCII.
NAME_MAX_BYTES = 1024


def _name_problem(name: str, text: str) -> str | None:
    r"""Why ``text`` (a device id or metric) cannot be a key in a store, or None:
    :func:`_text_problem`'s reasons, or more than :data:`NAME_MAX_BYTES` bytes of UTF-8.

    >>> print(_name_problem("metric", "é" * 600))
    metric must be at most 1,024 bytes of UTF-8. Got 1,200 bytes instead ('éééééééééééééééééééé'...).
    >>> _name_problem("metric", "a" * 1024) is None
    True
    """  # noqa: E501
    bad = _text_problem(name, text)
    if bad:
        return bad
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > NAME_MAX_BYTES:
        return (f"{name} must be at most {NAME_MAX_BYTES:,} bytes of UTF-8. Got {size:,} "
                f"bytes instead ({text[:20]!r}...).")
    return None


def _shown_name(name: object) -> str:
    """``repr(name)``, cut to its first 40 characters where longer (a name too long to
    store is named in the error by its start and size).

    >>> _shown_name("d"), _shown_name("x" * 50)
    ("'d'", "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'... (50 characters)")
    """
    if isinstance(name, str) and len(name) > 40:
        return f"{name[:40]!r}... ({len(name):,} characters)"
    return repr(name)


def _reading_problem(r: Reading) -> tuple[str | None, Reading]:
    """Why the reading ``r`` cannot be stored (or None), and ``r`` itself or, where its
    time, value or seq is a number of another type (``numbers.Integral`` such as numpy's
    ``int64``, ``numbers.Real`` such as ``float32``), a copy holding ``int`` and ``float``.
    A bool is refused where it was, whatever its type.

    >>> import numpy as np
    >>> _reading_problem(Reading("d", "t", np.int64(5), 1.0, seq=np.uint8(3)))[1].seq
    3
    >>> _reading_problem(Reading("d", "t", True, 1.0))[0]
    'ts_ns must be an int64 of nanoseconds. Got True instead.'
    """
    if not isinstance(r.device_id, str) or not r.device_id:
        return f"device_id must be a non-empty str. Got {r.device_id!r} instead.", r
    if not isinstance(r.metric, str) or not r.metric:
        return f"metric must be a non-empty str. Got {r.metric!r} instead.", r
    bad = _name_problem("device_id", r.device_id) or _name_problem("metric", r.metric)
    if bad:
        return bad, r
    t, v, q = _as_int(r.ts_ns), r.value, _as_int(r.seq)
    if t is None or not -(2**63) <= t < 2**63:
        return f"ts_ns must be an int64 of nanoseconds. Got {r.ts_ns!r} instead.", r
    if isinstance(v, numbers.Integral) and not isinstance(v, int):
        v = _as_int(v)
    elif isinstance(v, numbers.Real) and not isinstance(v, bool | int | float):
        v = float(v)
    if v is None or isinstance(v, bool) or not isinstance(v, int | float) or not _finite(v):
        return f"value must be a finite number. Got {_shown_value(r.value)} instead.", r
    if r.seq is not None and (q is None or not 0 <= q < 2**62):
        return f"seq must be None or an int in [0, 2**62). Got {r.seq!r} instead.", r
    if t is r.ts_ns and v is r.value and q is r.seq:
        return None, r
    return None, replace(r, ts_ns=t, value=v, seq=q)


def _as_int(x: object) -> int | None:
    """``x`` as an ``int`` when it is an integer of any type (numpy's too) other than a
    bool; else None (``None`` stays None).

    >>> import numpy as np
    >>> _as_int(np.int64(7)), _as_int(7.0), _as_int(True), _as_int(np.bool_(True))
    (7, None, None, None)
    """
    if type(x) is int:
        return x
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        return None
    return int(x)


#: The largest int a Reading's value may be without a check of its conversion (a larger one
#: may still round to a finite float, or overflow it: :func:`_finite` says which).
_INT_FLOAT_MAX = int(sys.float_info.max)


def _finite(value: float) -> bool:
    """Whether ``value`` (an int or float) is a finite float once converted: an int past
    the float range (``10**400``) overflows, and is not.

    >>> _finite(1), _finite(2.5), _finite(10**400), _finite(float("nan"))
    (True, True, False, False)
    """
    try:
        v = float(value)
    except OverflowError:
        return False
    return v - v == 0.0


def _shown_value(value: object) -> str:
    """``repr(value)``, but an int past the float range by its size (its digits may run to
    thousands, past what ``repr`` of an int will write).

    >>> _shown_value(2.5), _shown_value(-(10**400))
    ('2.5', '-(an int of 1329 bits, beyond the float range)')
    """
    if isinstance(value, int) and not isinstance(value, bool) and not _finite(value):
        shown = f"an int of {value.bit_length()} bits, beyond the float range"
        return f"-({shown})" if value < 0 else shown
    return repr(value)


def _text_problem(name: str, text: str) -> str | None:
    r"""Why ``text`` (a device id or metric) cannot be stored, or None: a NUL character
    (PostgreSQL refuses it in text, DuckDB kept it) or one UTF-8 cannot encode (a lone
    surrogate), which both backends must refuse alike, before anything is written.

    >>> print(_text_problem("metric", "temp\x00c"))
    metric must not hold a NUL character ('\x00'). Got 'temp\x00c' instead.
    >>> _text_problem("metric", "température") is None
    True
    """
    if "\x00" in text:
        return f"{name} must not hold a NUL character ('\\x00'). Got {text!r} instead."
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{name} must be text UTF-8 can encode; {text[exc.start:exc.end]!r} at "
                f"position {exc.start} cannot be (a lone surrogate). Got {text!r} instead.")
    return None


def check_text_args(what: str, **args: str | Iterable[str] | None) -> None:
    r"""Raise :class:`StoreError` naming the argument, for a text argument of a store call
    (a device id, a metric, an alert id; a list or tuple of them) that no store can hold:
    a NUL character or a lone surrogate (:func:`_text_problem`). Asked as it was, PostgreSQL
    failed (a StoreError, or a raw UnicodeEncodeError for a surrogate) where DuckDB
    answered "none": both refuse it alike, before any SQL. None and non-text values pass
    (their own checks, where any, are the caller's).

    >>> check_text_args("query", device_id="pump-1", metric=None)
    >>> check_text_args("query_many", device_ids=["a", "b\x00"])
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: query_many: device_ids[1] must not hold a NUL character ('\x00'). Got 'b\x00' instead.
    """  # noqa: E501
    for name, value in args.items():
        if isinstance(value, str):
            bad = _text_problem(name, value)
        elif isinstance(value, list | tuple):
            bad = next((p for i, x in enumerate(value) if isinstance(x, str)
                        and (p := _text_problem(f"{name}[{i}]", x))), None)
        else:
            continue
        if bad:
            raise StoreError(f"{what}: {bad}")


def normalise_seqs(seqs: Mapping[str, Iterable[int]] | None) -> dict[str, set[int]]:
    """Seqs per device as sets of ints >= 1, checking types (seq 0 is kept out of watermarks).

    >>> normalise_seqs({"d": [3, 1, 1]})
    {'d': {1, 3}}
    >>> normalise_seqs({"d": 5})
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Cannot store the seqs of device 'd': they must be an iterable of ints (a set, a list). Got 5 instead.
    """  # noqa: E501
    out: dict[str, set[int]] = {}
    if not seqs:
        return out
    if not isinstance(seqs, Mapping):  # a list of pairs was a raw AttributeError
        shown = repr(seqs)
        shown = shown if len(shown) <= 80 else f"{shown[:77]}..."
        raise StoreError("Cannot store seqs: seqs must be a mapping of device id to its "
                         f"seqs ({{'pump-1': [1, 2]}}). Got {shown} instead.")
    for device_id, values in seqs.items():
        if not isinstance(device_id, str) or not device_id:
            raise StoreError(f"Cannot store seqs: device id must be a non-empty str. "
                             f"Got {device_id!r} instead.")
        bad = _name_problem("device id", device_id)
        if bad:
            raise StoreError(f"Cannot store seqs: {bad}")
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            # one seq given bare (5, None) was a raw TypeError, "not iterable"
            raise StoreError(f"Cannot store the seqs of device {device_id!r}: they must be "
                             f"an iterable of ints (a set, a list). Got {values!r} instead.")
        got: set[int] = set()
        for s in values:
            q = _as_int(s)
            if q is None or not 0 <= q < 2**62:
                raise StoreError(
                    f"Cannot store seq {s!r} of device {device_id!r}: a seq must be an int "
                    "in [0, 2**62)."
                )
            if q >= 1:
                got.add(q)
        if got:
            out[device_id] = got
    return out


def asked_seqs(device_id: str, seqs: Iterable[int]) -> set[int]:
    """The seqs of a ``stored_seqs`` question as a set, checked as :func:`normalise_seqs`
    checks them (seq 0 is allowed: it is never recorded, so never the answer).

    >>> sorted(asked_seqs("d", [3, 0, 3]))
    [0, 3]
    >>> asked_seqs("d", [-1])
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Cannot look up seq -1 of device 'd': a seq must be an int in [0, 2**62).
    """  # noqa: E501
    if not isinstance(device_id, str) or not device_id:
        raise StoreError(f"Cannot look up seqs: device id must be a non-empty str. "
                         f"Got {device_id!r} instead.")
    check_text_args("Cannot look up seqs", device_id=device_id)
    if isinstance(seqs, str | bytes) or not isinstance(seqs, Iterable):
        raise StoreError(f"Cannot look up the seqs of device {device_id!r}: seqs must be an "
                         f"iterable of ints (a set, a list). Got {seqs!r} instead.")
    out: set[int] = set()
    for s in seqs:
        q = _as_int(s)
        if q is None or not 0 <= q < 2**62:
            raise StoreError(f"Cannot look up seq {s!r} of device {device_id!r}: a seq must "
                             "be an int in [0, 2**62).")
        out.add(q)
    return out


def asked_seqs_many(seqs: Mapping[str, Iterable[int]]) -> dict[str, set[int]]:
    """The seqs of a ``stored_seqs_many`` question, per device, as sets, each checked as
    :func:`asked_seqs` checks one device's.

    >>> {d: sorted(s) for d, s in asked_seqs_many({"a": [2, 2], "b": ()}).items()}
    {'a': [2], 'b': []}
    >>> asked_seqs_many([("a", [1])])
    Traceback (most recent call last):
    ...
    edgewise.errors.StoreError: Cannot look up seqs: seqs must be a mapping of device id to its seqs ({'pump-1': {1, 2}}). Got [('a', [1])] instead.
    """  # noqa: E501
    if not isinstance(seqs, Mapping):
        shown = repr(seqs)
        shown = shown if len(shown) <= 80 else f"{shown[:77]}..."
        raise StoreError("Cannot look up seqs: seqs must be a mapping of device id to its "
                         f"seqs ({{'pump-1': {{1, 2}}}}). Got {shown} instead.")
    return {device_id: asked_seqs(device_id, values) for device_id, values in seqs.items()}


@dataclass(slots=True)
class Prepared:
    """One ``append`` call, checked and ready for a backend's transaction."""

    readings: list[Reading]
    cols: Columns
    seq_sets: dict[str, set[int]]
    received_ns: int


def prepare(readings: Iterable[Reading], seqs: Mapping[str, Iterable[int]] | None) -> Prepared:
    """Check an ``append`` call's arguments and build its columns, before any storage.

    Gives the readings as a list, their columns, the seqs per device (the ``seqs`` argument
    together with the seqs the readings carry themselves: a reading's seq counts too) and
    the time it was received. Raises :class:`StoreError` for anything that cannot be stored.

    >>> p = prepare([Reading("d", "t", 1, 1.0, seq=2)], {"d": [1]})
    >>> len(p.readings), p.cols.unique_keys, p.seq_sets
    (1, True, {'d': {1, 2}})
    """
    readings = check_readings(list(readings))
    seq_sets = normalise_seqs(seqs)
    cols = Columns.of(readings)
    for device_id, own in cols.seqs_by_device().items():
        seq_sets.setdefault(device_id, set()).update(own)
    return Prepared(readings, cols, seq_sets, time.time_ns())


def classify(
    readings: Sequence[Reading],
    existing: Mapping[Key, float],
    known_conflicts: set[tuple[str, str, int, float]],
    received_ns: int = 0,
    unique_keys: bool = False,
) -> Classified:
    """Decide per reading: new (insert), duplicate, or conflict.

    ``existing`` maps already stored keys to their value; ``known_conflicts`` holds the
    (device, metric, ts, new value) conflicts already recorded, so that re-delivering a
    conflicting reading does not record it twice (it counts as a duplicate).
    ``unique_keys`` (no key repeats inside the batch) allows a fast path.
    """
    if unique_keys and not existing:  # the common case: every reading is new
        return Classified(new=list(range(len(readings))))
    out = Classified()
    first: dict[Key, float] = {}
    seen_conflicts: set[tuple[str, str, int, float]] = set()
    for i, r in enumerate(readings):
        key = (r.device_id, r.metric, r.ts_ns)
        value = float(r.value)
        stored = existing.get(key)
        if stored is None:
            stored = first.get(key)
            if stored is None:
                first[key] = value
                out.new.append(i)
                continue
        if stored == value:
            out.duplicates += 1
            continue
        ckey = (r.device_id, r.metric, r.ts_ns, value)
        if ckey in known_conflicts or ckey in seen_conflicts:
            out.duplicates += 1
            continue
        seen_conflicts.add(ckey)
        out.conflicts.append(
            Conflict(r.device_id, r.metric, r.ts_ns, stored, value, r.seq, received_ns)
        )
    return out


def classify_batch(
    readings: Sequence[Reading],
    existing: Mapping[Key, float],
    received_ns: int,
    unique_keys: bool,
    known_conflicts: Callable[[list[Conflict]], set[tuple[str, str, int, float]]],
) -> Classified:
    """:func:`classify` a batch, asking storage about recorded conflicts only when needed.

    The first pass assumes no conflict is recorded yet; only if it finds conflicts is
    ``known_conflicts`` called (one query) with them, and the batch classified again so
    that a re-delivered conflicting reading counts as a duplicate.

    >>> rs = [Reading("d", "t", 1, 2.0)]
    >>> classify_batch(rs, {("d", "t", 1): 1.0}, 0, True, lambda cs: {("d", "t", 1, 2.0)})
    Classified(new=[], duplicates=1, conflicts=[])
    """
    c = classify(readings, existing, set(), received_ns, unique_keys)
    if c.conflicts:
        known = known_conflicts(c.conflicts)
        if known:
            c = classify(readings, existing, known, received_ns)
    return c


class SeqTracker:
    """Per-device seq watermark and the stored seqs above it, kept in memory.

    The stored seqs above the watermark are kept as runs (sorted, disjoint, inclusive
    ranges, not separated by one missing seq), so memory and :meth:`gaps` grow with the
    number of holes, not of seqs: a device that lost seq 5 for good and sent 6..1,000,000
    since holds one run, not a million seqs sorted again at every gap check.

    Every method holds the tracker's own lock while it reads or changes the dicts, so
    readers (:meth:`watermark`, :meth:`gaps`) never wait for the store's write lock,
    which is held for a whole transaction; writers still call :meth:`fresh` and
    :meth:`add` under that write lock, so a batch's seqs are added only after its commit.

    >>> t = SeqTracker()
    >>> t.add("d", {1, 2, 4, 7})
    >>> t.watermark("d"), t.gaps("d")
    (2, [(3, 3), (5, 6)])
    >>> t.add("d", {3}); t.watermark("d")
    4
    >>> t.add("d", range(8, 1000)); t.gaps("d"), t.new_seqs("d", {6, 7, 999, 1000})
    ([(5, 6)], {1000, 6})
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _wm and _above (held only for dict work)
        self._wm: dict[str, int] = {}
        # device -> (starts, ends) of its runs of stored seqs above the watermark
        self._above: dict[str, tuple[list[int], list[int]]] = {}

    def load(self, device_id: str, watermark: int, above: Iterable[int],
             runs: Iterable[tuple[int, int]] = ()) -> None:
        """Set a device's state from storage: its folded ``watermark``, the seqs stored
        ``above`` it one by one, and the ``runs`` of seqs stored above it as inclusive
        ranges ``(first, last)`` (any order; overlapping, touching or reaching below the
        watermark allowed).

        >>> t = SeqTracker(); t.load("d", 3, [2, 4, 6]); t.watermark("d"), t.gaps("d")
        (4, [(5, 5)])
        >>> t.load("d", 2, [9], runs=[(4, 6), (1, 3), (11, 20)]); t.watermark("d"), t.gaps("d")
        (6, [(7, 8), (10, 10)])
        """
        new = sorted({s for s in above if s > watermark})
        with self._lock:
            self._wm[device_id] = watermark
            self._above[device_id] = ([], [])
            self._insert(device_id, new)
            self._insert_runs(device_id, runs, watermark)
            self._advance(device_id, ())

    def _has(self, device_id: str, s: int) -> bool:
        starts, ends = self._above.get(device_id, ((), ()))
        i = bisect.bisect_right(starts, s) - 1
        return i >= 0 and ends[i] >= s

    def _new(self, device_id: str, seqs: Iterable[int]) -> set[int]:
        """:meth:`new_seqs` without taking the lock (the caller holds it)."""
        wm = self._wm.get(device_id, 0)
        return {s for s in seqs if s > wm and not self._has(device_id, s)}

    def new_seqs(self, device_id: str, seqs: set[int]) -> set[int]:
        """The seqs of ``seqs`` not stored yet."""
        with self._lock:
            return self._new(device_id, seqs)

    def stored(self, device_id: str, seqs: Iterable[int]) -> set[int]:
        """The seqs of ``seqs`` recorded here as stored (seq 0 and below never are).

        >>> t = SeqTracker(); t.add("d", {1, 2, 5})
        >>> sorted(t.stored("d", {0, 2, 3, 5, 6}))
        [2, 5]
        """
        with self._lock:
            wm = self._wm.get(device_id, 0)
            return {s for s in seqs if s >= 1 and (s <= wm or self._has(device_id, s))}

    def fresh(self, seq_sets: Mapping[str, set[int]]) -> dict[str, set[int]]:
        """Per device, the seqs of ``seq_sets`` not stored yet (devices with none left out).

        >>> t = SeqTracker(); t.add("d", {1, 2})
        >>> t.fresh({"d": {2, 3}, "e": set()})
        {'d': {3}}
        """
        out: dict[str, set[int]] = {}
        with self._lock:
            for device_id, values in seq_sets.items():
                new = self._new(device_id, values)
                if new:
                    out[device_id] = new
        return out

    def _insert(self, device_id: str, seqs: Iterable[int]) -> None:
        """Add seqs (any order, repeats allowed) to the device's runs, merging neighbours
        (the caller holds the lock)."""
        starts, ends = self._above.setdefault(device_id, ([], []))
        new = sorted(set(seqs))
        j = 0
        while j < len(new):  # each run of consecutive new seqs a..b at once
            a = b = new[j]
            j += 1
            while j < len(new) and new[j] == b + 1:
                b = new[j]
                j += 1
            self._insert_run(starts, ends, a, b)

    @staticmethod
    def _insert_run(starts: list[int], ends: list[int], a: int, b: int) -> None:
        """Add the run ``a..b`` to the sorted, disjoint runs ``starts``/``ends``, merging
        those it overlaps or touches."""
        lo = bisect.bisect_left(ends, a - 1)
        hi = bisect.bisect_right(starts, b + 1)
        if lo < hi:
            a, b = min(a, starts[lo]), max(b, ends[hi - 1])
        starts[lo:hi] = [a]
        ends[lo:hi] = [b]

    def _insert_runs(self, device_id: str, runs: Iterable[tuple[int, int]],
                     floor: int) -> None:
        """Add inclusive runs (any order, overlaps allowed), each cut to the seqs above
        ``floor``, to the device's runs (the caller holds the lock)."""
        starts, ends = self._above.setdefault(device_id, ([], []))
        for a, b in runs:
            a, b = max(int(a), floor + 1), int(b)
            if a <= b:
                self._insert_run(starts, ends, a, b)

    def _advance(self, device_id: str, seqs: Iterable[int]) -> None:
        """:meth:`add` without taking the lock (the caller holds it)."""
        wm = self._wm.get(device_id, 0)
        self._insert(device_id, (s for s in seqs if s > wm))
        starts, ends = self._above[device_id]
        if starts and starts[0] == wm + 1:
            wm = ends[0]
            del starts[0], ends[0]
        self._wm[device_id] = wm

    def add(self, device_id: str, seqs: Iterable[int],
            runs: Iterable[tuple[int, int]] = ()) -> None:
        """Record committed seqs (and ``runs`` of them, inclusive ranges ``(first,
        last)``) and advance the watermark.

        >>> t = SeqTracker(); t.add("d", [1], runs=[(3, 1000), (2, 2)]); t.watermark("d")
        1000
        """
        with self._lock:
            self._insert_runs(device_id, runs, self._wm.get(device_id, 0))
            self._advance(device_id, seqs)

    def state(self, device_id: str) -> tuple[int, list[tuple[int, int]]]:
        """The device's watermark and its runs of stored seqs above it, ``(first,
        last)`` inclusive, ascending, disjoint and never touching (what a store folds
        its seqs into).

        >>> t = SeqTracker(); t.add("d", {1, 2, 4, 5, 6, 9}); t.state("d")
        (2, [(4, 6), (9, 9)])
        """
        with self._lock:
            starts, ends = self._above.get(device_id, ((), ()))
            return self._wm.get(device_id, 0), list(zip(starts, ends, strict=True))

    def top(self, device_id: str) -> int:
        """The highest seq stored (the watermark where none is above it; 0 for none)."""
        with self._lock:
            _starts, ends = self._above.get(device_id, ((), ()))
            return ends[-1] if ends else self._wm.get(device_id, 0)

    def watermark(self, device_id: str) -> int:
        """Highest ``w`` with 1..w all stored."""
        with self._lock:
            return self._wm.get(device_id, 0)

    def watermarks(self) -> dict[str, int]:
        """Every device's watermark."""
        with self._lock:
            return dict(self._wm)

    def gaps(self, device_id: str) -> list[tuple[int, int]]:
        """Missing ranges between the watermark and the highest stored seq."""
        with self._lock:
            starts, ends = self._above.get(device_id, ((), ()))
            out: list[tuple[int, int]] = []
            prev = self._wm.get(device_id, 0)
            for a, b in zip(starts, ends, strict=True):
                out.append((prev + 1, a - 1))  # runs never touch: a > prev + 1
                prev = b
        return out

    def forget(self, device_id: str) -> None:
        """Drop a device (after delete_device)."""
        with self._lock:
            self._wm.pop(device_id, None)
            self._above.pop(device_id, None)
