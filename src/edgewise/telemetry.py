"""Readings, their JSON codecs, and validation: the one door to "trusted".

Two payload forms are accepted, each as one object or a JSON array of them:

* **Compact**: ``{"ts": <RFC 3339 or epoch s>, "metrics": {"name": number, …}, "seq": <int>}``.
  ``seq`` is optional; devices that want exactly-once delivery number their messages
  with a per-device monotonic counter and resend until the gateway acknowledges it.
  An optional ``"units": {"temp_c": "Cel"}`` gives metrics their units: one that is no
  object rejects the record (``bad_shape``), a unit that is not text its metric's reading.
* **SenML** (RFC 8428): a JSON array of records with base fields ``bn``/``bt``/``bu``/``bv``
  and ``n``/``t``/``u``/``v``/``vb``. Times below 2**28 are relative to now, as the RFC says.
  Numbers (``v``) and booleans (``vb``) are stored; ``vs``/``vd`` records are rejected with
  a reason. An extension field ``seq`` (on any record) numbers the pack, as in compact.
  A pack of base records only, no value in it (``{"t": 1.7e9, "temp": 21.5}``, a compact
  record mistyped), is rejected (``missing_field``, field ``v``), never stored as nothing.

A boolean (a door open, a pump running, an alarm contact: compact ``true``/``false``,
SenML ``vb``) is stored as 1.0 / 0.0, so it is charted, cleaned, scored and exported as
any other metric; the quality report knows a two-state series and does not call its long
runs "stuck". Strings are refused: ``"on"`` could mean anything.

A record that repeats a key (``{"metrics": {"t": 1.0, "t": 2.0}}``) is rejected whole
(reason ``duplicate_key``, field ``metrics.t``): which value was meant is unknowable, and a
JSON parser would silently keep the last one.

Decoding never raises for one bad record: it returns the good readings and a
:class:`~edgewise.errors.PayloadError` for each rejected part, so a batch loses only
what was wrong. Whole-payload problems (too large, not JSON, not an object or array)
raise :class:`~edgewise.errors.PayloadError`.

>>> d = decode(b'{"ts": 1700000000, "metrics": {"temp_c": 21.5, "rpm": 1450}, "seq": 7}',
...            device_id="pump-1")
>>> [(r.metric, r.value, r.seq) for r in d.readings]
[('temp_c', 21.5, 7), ('rpm', 1450.0, 7)]
>>> d = decode(b'[{"ts": 1700000000, "metrics": {"temp_c": "hot"}}]', device_id="pump-1")
>>> d.readings, d.rejected[0].reason
([], 'bad_type')
>>> [r.value for r in decode(b'{"ts": 1700000000, "metrics": {"running": true}}', "pump-1").readings]
[1.0]
"""  # noqa: E501

from __future__ import annotations

import json
import math
import re
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from edgewise.errors import PayloadError, _shown_value

__all__ = [
    "DEFAULT_MAX_FUTURE_S",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "GZIP_MAGIC",
    "MAX_LISTED_REJECTIONS",
    "METRIC_NAME_RE",
    "Decoded",
    "Reading",
    "decode",
    "encode_compact",
    "encode_senml",
    "epoch_ns",
    "epoch_unit_ns",
    "parse_time",
    "parse_time_text",
    "retention_cut_ns",
    "validate_device_id",
]

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
#: The first bytes of a gzip stream (never of JSON): a payload starting so is inflated.
GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_FUTURE_S = 300.0
#: A payload's rejections listed one by one (in order; :attr:`Decoded.rejected`): the
#: rest are counted by reason only, so 100,000 bad records cost no 40 MB answer.
MAX_LISTED_REJECTIONS = 100
#: Earliest accepted time (2000-01-01T00:00:00Z); anything before is a clock that was never set.
MIN_EPOCH_S = 946_684_800
METRIC_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,63}$")
DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SENML_RELATIVE_LIMIT = 2**28
#: An epoch number from here on is read as nanoseconds (:func:`epoch_unit_ns`).
_NS_EPOCH_FROM = 10**17
_INT64_END = 2**63
_INT_RE = re.compile(r"[+-]?\d+")
#: one way only to read a run of digits (``\d+\.?\d*`` split it every way before it
#: gave up: 16,000 digits and an "x" took 11 s)
_DECIMAL_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_SEQ = 2**62
#: A SenML pack's ``bu`` that was refused: the records after it that rely on it are too.
_REFUSED_UNIT: Any = object()
#: Values of a repeated key a ``duplicate_key`` rejection lists (:func:`_repeated_key`).
_LISTED_REPEATS = 4
#: Bytes of a gzip member :func:`_inflate` feeds zlib first, and at most at a time.
_INFLATE_PIECE = 256
_INFLATE_PIECE_MAX = 64 * 1024
#: An RFC 3339 fraction of a second with digits past the microsecond (Go's RFC3339Nano
#: sends nine), followed by the offset: ``datetime`` keeps six and drops the rest, so
#: :func:`parse_time` adds digits seven to nine itself. The offset must follow, so that a
#: fraction of the offset's own seconds (``+05:00:00.1234567``, at the end) is not taken.
_SUB_MICROSECOND_RE = re.compile(r"[.,]([0-9]{6})([0-9]{1,3})[0-9]*[Zz+-]")
#: A seconds field of 60 (a leap second), which ``datetime`` refuses.
_LEAP_SECOND_RE = re.compile(r"[Tt ][0-9]{2}:[0-9]{2}:60(?![0-9])")
#: The time text :func:`parse_time` reads (``datetime.fromisoformat`` then reads it): an RFC
#: 3339 time, or one of ISO 8601's other forms that cannot be misread: a basic-format
#: (``20240131T120000Z``) or week date (``2024-W05-3``), a time without its seconds or
#: minutes, a decimal comma, an offset without its colon or minutes (``+0100``, ``+01``).
#: Anything else fromisoformat would take is refused: a fraction of an hour or a minute
#: (``T12.5Z`` was read as 12:00:00.5, not 12:30), any character as the date-time
#: separator (``2024-01-31X12:00Z``), an empty fraction (``12:00:00.Z``). An offset may
#: have seconds (``+05:00:00.5``, as ``datetime`` prints one): it is read, never misread.
_TIME_TEXT_RE = re.compile(
    r"(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}|[0-9]{4}-W[0-9]{2}-[0-9]|[0-9]{4}W[0-9]{3})"
    r"(?:[Tt ][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?)?"
    r" ?(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?)?)?)?")
#: A fraction on the hour or the minute (ISO 8601 allows one on the last field given).
_HOUR_MINUTE_FRACTION_RE = re.compile(r"[Tt ][0-9]{2}(?::?[0-9]{2})?[.,][0-9]")
#: The end of a day written as 24:00 (ISO 8601 before 2019), which ``datetime`` refuses.
_HOUR_24_RE = re.compile(r"[Tt ]24(?::?00){0,2}(?:[.,]0*)?(?![0-9.,:])")
# a number written as a string ("1706702400", "1.7e9"): an epoch time sent quoted
_QUOTED_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
#: Epoch numbers this large or larger are past any time in range in every unit (int64
#: nanoseconds end at ~9.2e18); they are refused before any arithmetic that could overflow.
_EPOCH_LIMIT = 2**64


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one metric of one device at one instant (UTC nanoseconds)."""

    device_id: str
    metric: str
    ts_ns: int
    value: float
    seq: int | None = None
    unit: str | None = None


@dataclass(slots=True)
class Decoded:
    """What a payload held: good readings, rejected parts, and the message seqs seen.

    ``seqs`` holds the seq of every message that carried a valid one, including messages
    whose content was rejected: those are handled (reported or dead-lettered), and their
    seqs must count towards the acknowledgement watermark.

    ``relative_times`` is True when the payload was SenML, gave at least one reading, and
    every record time it read was relative to the arrival (no time, or a base time plus
    time below 2**28 s, RFC 8428 4.5.3; an absolute time counts even in a record then
    refused, as too far in the future): such readings are stamped anew at each delivery,
    so the store's (device, metric, time) dedup cannot tell a re-delivery from new ones.

    >>> decode(b'[{"n": "t", "v": 1}, {"n": "u", "t": -5, "v": 2}]', "d").relative_times
    True
    >>> decode(b'[{"bt": 1.7e9, "n": "t", "v": 1}]', "d").relative_times
    False
    """

    readings: list[Reading] = field(default_factory=list)
    rejected: list[PayloadError] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    relative_times: bool = False
    #: Rejections past the first :data:`MAX_LISTED_REJECTIONS` (see :meth:`reject`), by reason.
    unlisted: dict[str, int] = field(default_factory=dict)

    def reject(self, exc: PayloadError) -> None:
        """Record a rejection: listed in ``rejected`` while it holds fewer than
        :data:`MAX_LISTED_REJECTIONS`, else only counted (``unlisted``, by reason).

        >>> d = decode(b"[" + b"0," * 150 + b"0]", "d")
        >>> len(d.rejected), d.rejected_total, d.rejected_counts()
        (100, 151, {'bad_shape': 151})
        """
        if len(self.rejected) < MAX_LISTED_REJECTIONS:
            self.rejected.append(exc)
        else:
            self.unlisted[exc.reason] = self.unlisted.get(exc.reason, 0) + 1

    @property
    def rejected_total(self) -> int:
        """Every rejection, listed in ``rejected`` or not."""
        return len(self.rejected) + sum(self.unlisted.values())

    def rejected_counts(self) -> dict[str, int]:
        """Every rejection's count by reason, listed in ``rejected`` or not."""
        counts: dict[str, int] = {}
        for exc in self.rejected:
            counts[exc.reason] = counts.get(exc.reason, 0) + 1
        for reason, n in self.unlisted.items():
            counts[reason] = counts.get(reason, 0) + n
        return counts


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is a valid id, else raise :class:`PayloadError`.

    >>> validate_device_id("pump-07")
    'pump-07'
    >>> validate_device_id("a/b")
    Traceback (most recent call last):
    ...
    edgewise.errors.PayloadError: Reading: field 'device' must be 1-64 characters of letters, digits, '_', '.', '-', starting with a letter or digit. Got 'a/b' instead.
    """  # noqa: E501
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise PayloadError(
            field="device",
            value=device_id,
            allowed="1-64 characters of letters, digits, '_', '.', '-', "
            "starting with a letter or digit",
            reason="bad_device",
        )
    return device_id


def epoch_unit_ns(magnitude: float) -> int:
    """Nanoseconds per unit of an epoch number this large: seconds, or (told apart by
    size: 1e11 s would lie past the year 5000) milliseconds from 1e11, microseconds from
    1e14 and nanoseconds from 1e17.

    >>> [epoch_unit_ns(x) for x in (1.7e9, 1.7e12, 1.7e15, 1.7e18)]
    [1000000000, 1000000, 1000, 1]
    """
    if magnitude < 1e11:
        return 10**9
    return 10**6 if magnitude < 1e14 else 10**3 if magnitude < 1e17 else 1


def epoch_ns(value: float | Decimal) -> int:
    """UTC nanoseconds of a finite epoch number in the unit :func:`epoch_unit_ns` tells:
    a float to the microsecond (what a float64 holds of a time in seconds), a
    :class:`~decimal.Decimal` (digits as written) to the nanosecond.

    >>> epoch_ns(1706702400.5) == epoch_ns(1706702400500) == epoch_ns(1706702400500000000)
    True
    >>> epoch_ns(Decimal("1700000000.000000005"))
    1700000000000000005
    """
    per = epoch_unit_ns(abs(float(value)))
    if isinstance(value, Decimal):  # written digits: exact, half away from zero past the ns
        with localcontext() as ctx:  # enough digits that the product is exact
            ctx.prec = max(28, len(value.as_tuple().digits) + 20)
            return int((value * per).to_integral_value(ROUND_HALF_UP))
    if per == 10**9:  # seconds, to the microsecond
        return round(value * 1_000_000) * 1000
    whole = int(value)  # exact: a float holds whole numbers up to 2**53 exactly
    return whole * per + round((value - whole) * per)


def parse_time(
    value: Any,
    *,
    field_name: str = "ts",
    now_ns: int | None = None,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
    earliest_ns: int = MIN_EPOCH_S * 1_000_000_000,
    device_id: str | None = None,
    index: int | None = None,
) -> int:
    """Parse an RFC 3339 string or an epoch time into UTC nanoseconds, checking bounds.

    An epoch number is in seconds; one of 1e11 or more (which in seconds would lie past
    the year 5000) is read as milliseconds, 1e14 or more as microseconds and 1e17 or more
    as nanoseconds, as devices and platforms send them (JavaScript's ``Date.now()``,
    ThingsBoard, InfluxDB). The ranges do not overlap for any time this accepts.

    Bounds: not before ``earliest_ns`` (2000-01-01 by default: earlier is a clock that
    was never set; a query or a file of history may pass 0, 1970), not more than
    ``max_future_s`` ahead of ``now_ns`` (``math.inf``: no such bound), and always before
    2262-04-11, where int64 nanoseconds end.

    >>> parse_time("2024-01-31T12:00:00Z", now_ns=1_800_000_000 * 10**9)
    1706702400000000000
    >>> parse_time(1706702400.5, now_ns=1_800_000_000 * 10**9)
    1706702400500000000
    >>> parse_time(1706702400500, now_ns=1_800_000_000 * 10**9)  # milliseconds
    1706702400500000000
    """
    now_ns = time.time_ns() if now_ns is None else now_ns

    def bad(allowed: str, reason: str) -> PayloadError:
        return PayloadError(
            device_id=device_id, field=field_name, value=_short(value), allowed=allowed,
            reason=reason, index=index,
        )

    before_end = _BEFORE_END
    if isinstance(value, bool):
        raise bad("an RFC 3339 UTC timestamp or an epoch time (s, ms, us or ns)", "bad_ts")
    if isinstance(value, int | float | Decimal):
        # an int is never passed to math.isfinite: one past 1.8e308 overflows a float
        if isinstance(value, float | Decimal) and not math.isfinite(value):
            raise bad("a finite epoch time (s, ms, us or ns)", "bad_ts")
        if value >= _EPOCH_LIMIT:
            raise bad(before_end, "future_ts")
        if value <= -_EPOCH_LIMIT:
            raise bad(f"a time after {_iso(earliest_ns)}", "ancient_ts")
        ts_ns = epoch_ns(value)
    elif isinstance(value, str):
        text = value.strip()
        rfc = "an RFC 3339 timestamp with a UTC offset, e.g. '2024-01-31T12:00:00Z'"
        if len(text) > 40:
            raise bad(rfc, "bad_ts")
        if _QUOTED_NUMBER_RE.fullmatch(text):
            raise bad(f"{rfc}, or an epoch time sent as an unquoted JSON number (s, ms, us "
                      "or ns), e.g. 1706702400, not a string", "bad_ts")
        if not _TIME_TEXT_RE.fullmatch(text):
            if _HOUR_MINUTE_FRACTION_RE.search(text):
                raise bad(f"{rfc}, with a decimal fraction on the seconds only "
                          "('12:30:00.5', not ISO 8601's fraction of an hour '12.5' or "
                          "of a minute '12:30.5')", "bad_ts")
            if _LEAP_SECOND_RE.search(text):
                raise bad(f"{rfc}, and not a leap second (':60'): epoch time has none",
                          "bad_ts")
            raise bad(rfc, "bad_ts")
        if _HOUR_24_RE.search(text):
            raise bad(f"{rfc}, with the end of a day as 00:00:00 of the next day, not "
                      "24:00", "bad_ts")
        try:
            dt = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            if _LEAP_SECOND_RE.search(text):
                raise bad(f"{rfc}, and not a leap second (':60'): epoch time has none",
                          "bad_ts") from None
            raise bad(rfc, "bad_ts") from None
        if dt.tzinfo is None:
            raise bad("an RFC 3339 timestamp with a UTC offset (e.g. a trailing 'Z')", "bad_ts")
        # datetime keeps microseconds: the nanoseconds past them are read here
        sub_us = 0
        dot = text.find(".")
        if dot < 0:
            dot = text.find(",")
        if dot >= 0 and len(text) - dot > 8:  # room for 7 digits and an offset
            m = _SUB_MICROSECOND_RE.search(text, dot)
            # the fraction datetime read (its first six digits), not the offset's
            if m is not None and int(m[1]) == dt.microsecond:
                sub_us = int(m[2].ljust(3, "0"))
        try:
            dt = dt.astimezone(UTC)
        except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00: UTC is before year 1
            if dt.year < 5000:
                raise bad(f"a time after {_iso(earliest_ns)}", "ancient_ts") from None
            raise bad(before_end, "future_ts") from None
        ts_ns = (
            int(dt.replace(microsecond=0).timestamp()) * 1_000_000_000 + dt.microsecond * 1000
            + sub_us
        )
    else:
        raise bad("an RFC 3339 UTC timestamp or an epoch time (s, ms, us or ns)", "bad_ts")
    if ts_ns < earliest_ns:
        raise bad(f"a time after {_iso(earliest_ns)}", "ancient_ts")
    if ts_ns >= _INT64_END:
        raise bad(before_end, "future_ts")
    if math.isfinite(max_future_s) and ts_ns > now_ns + int(max_future_s * 1e9):
        raise bad(f"no more than {max_future_s:g} s in the future", "future_ts")
    return ts_ns


def _short(value: Any) -> Any:
    """``value`` as an error may show it: an integer too long to read (or to print:
    Python refuses ``str`` of one over 4300 digits) becomes text with its first digits and
    its length; anything else is returned as it is.

    >>> _short(10**400)
    '100000000000000000000... (401 digits)'
    >>> _short(12)
    12
    """
    if isinstance(value, bool) or not isinstance(value, int) or value.bit_length() <= 128:
        return value
    try:
        text = str(value)
    except ValueError:
        digits = math.floor(value.bit_length() * math.log10(2)) + 1
        return f"an integer of about {digits} digits"
    sign = "-" if text.startswith("-") else ""
    digits = text.lstrip("-")
    return f"{sign}{digits[:21]}... ({len(digits)} digits)"


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns // 10**9, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_BEFORE_END = f"a time before {_iso(_INT64_END)} (where int64 nanoseconds end)"


def parse_time_text(text: str, **bounds: Any) -> int:
    """:func:`parse_time` of a text cell (a CSV field, a query parameter): digits are an
    integer epoch, a decimal number an epoch read from its digits, both exact to the
    nanosecond (as a CSV's time column is read: ``1700000000.000000005``, as
    ``readings.csv?time_format=epoch_s`` writes it, is 5 ns past the second); any other
    text is RFC 3339. ``bounds`` are :func:`parse_time`'s keyword arguments.

    >>> parse_time_text("1706702400123456789", now_ns=1_800_000_000 * 10**9)
    1706702400123456789
    >>> parse_time_text(" 1706702400.5 ", now_ns=1_800_000_000 * 10**9)
    1706702400500000000
    >>> parse_time_text("1700000000.000000005", now_ns=1_800_000_000 * 10**9)
    1700000000000000005
    >>> parse_time_text("0", earliest_ns=0, max_future_s=math.inf)
    0
    """
    raw = text.strip() if isinstance(text, str) else text
    value: Any = raw
    huge = False
    if isinstance(raw, str):
        if _INT_RE.fullmatch(raw):
            # past 40 digits it is out of range in any unit; Python refuses int() of
            # over 4300 digits, so a stand-in of the same sign is checked instead
            huge = len(raw.lstrip("+-")) > 40
            value = (-1 if raw.startswith("-") else 1) * 10**40 if huge else int(raw)
        elif _DECIMAL_RE.fullmatch(raw):
            value = Decimal(raw)
    try:
        return parse_time(value, **bounds)
    except PayloadError as exc:
        if isinstance(value, Decimal):  # shown as written, never as Decimal('...')
            raise PayloadError(
                device_id=exc.device_id, field=exc.field, value=raw, allowed=exc.allowed,
                reason=exc.reason, index=exc.index) from None
        if exc.reason == "bad_ts" and isinstance(value, str):  # text may be epoch digits too
            raise PayloadError(
                device_id=exc.device_id, field=exc.field, value=exc.value,
                allowed=f"{exc.allowed}, or an epoch time in s, ms, us or ns (digits)",
                reason=exc.reason, index=exc.index) from None
        if not huge:
            raise
        raise PayloadError(
            device_id=exc.device_id, field=exc.field, value=f"{raw[:21]}... ({len(raw)} "
            "characters)", allowed=exc.allowed, reason=exc.reason, index=exc.index,
        ) from None


def _check_value(
    value: Any, field_name: str, device_id: str | None, index: int | None,
    allowed: str = "a finite number",
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadError(
            device_id=device_id, field=field_name, value=value,
            allowed=allowed, reason="bad_type", index=index,
        )
    try:
        v = float(value)
    except OverflowError:  # an integer past a float's range (about 1.8e308)
        v = math.inf
    if not math.isfinite(v):
        raise PayloadError(
            device_id=device_id, field=field_name, value=_short(value),
            allowed="a finite number within a float64's range, +-1.8e308 (NaN and "
            "infinity are not readings)",
            reason="not_finite", index=index,
        )
    return v


def _check_metric(name: Any, field_name: str, device_id: str | None, index: int | None) -> str:
    # fullmatch: '$' would let a trailing newline through; the ASCII classes refuse
    # anything else, lone UTF-16 surrogates ('\ud800', which UTF-8 cannot encode) too
    if not isinstance(name, str) or not METRIC_NAME_RE.fullmatch(name):
        raise PayloadError(
            device_id=device_id, field=field_name, value=_shown_key(name),
            allowed="a metric name of 1-64 letters, digits, '_', '.', ':', '/', '-'",
            reason="bad_metric", index=index,
        )
    return name


#: The longest key (a metric name, a field) a rejection shows whole.
_SHOWN_KEY_CHARS = 80


def _shown_key(key: Any) -> Any:
    """``key`` (a JSON key: a metric name, a field) as a rejection shows it, in its field
    and its value: whole up to :data:`_SHOWN_KEY_CHARS` characters, else its first 40 and
    its length (a 200,000-character name was shown whole in the field, the value and the
    detail of its rejection: a 600 KB dead letter of a 200 KB message).

    >>> _shown_key("temp"), _shown_key("x" * 100)
    ('temp', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (100 characters)')
    """
    if isinstance(key, str) and len(key) > _SHOWN_KEY_CHARS:
        return f"{key[:40]}... ({len(key)} characters)"
    return key


def _check_seq(seq: Any, device_id: str | None, index: int | None) -> int:
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < _MAX_SEQ:
        raise PayloadError(
            device_id=device_id, field="seq", value=seq,
            allowed="an integer in [0, 2**62)", reason="bad_seq", index=index,
        )
    return seq


def _valid_seqs(values: Iterable[Any]) -> list[int]:
    """The valid seqs among the values a repeated ``seq`` key was given, each once, in order.

    >>> _valid_seqs([1, 2, "x", 2, -1, True])
    [1, 2]
    """
    seqs: list[int] = []
    for v in values:
        if type(v) is int and 0 <= v < _MAX_SEQ and v not in seqs:
            seqs.append(v)
    return seqs


def _inflate(raw: bytes, device_id: str, max_bytes: int) -> bytes:
    """A gzipped payload inflated, member after member as ``gzip.decompress`` does (a
    stream may hold several, e.g. two files concatenated), stopping one byte past
    ``max_bytes`` in all (a small gzip can expand a thousandfold). Bytes after the last
    member that are not another member are refused (reason ``bad_encoding``).

    Each member is fed in pieces (from :data:`_INFLATE_PIECE` bytes, doubling): zlib copies
    what follows a member's end out of the input it was given, and given the whole rest,
    4 MiB of 20-byte empty members took 29 s (copied once per member).

    >>> import gzip
    >>> _inflate(gzip.compress(b"[1,") + gzip.compress(b"2]"), "d", 100)
    b'[1,2]'
    """
    out = bytearray()
    data = memoryview(raw)
    pos = 0  # where the next member starts
    while True:
        inflate = zlib.decompressobj(wbits=31)
        start, piece = pos, _INFLATE_PIECE
        try:
            while not inflate.eof and pos < len(data) and len(out) <= max_bytes:
                chunk = data[pos:pos + piece]
                pos += len(chunk)
                piece = min(2 * piece, _INFLATE_PIECE_MAX)
                out += inflate.decompress(chunk, max_bytes + 1 - len(out))
            complete = inflate.eof
            pos -= len(inflate.unused_data)  # the next member's first bytes, if any
        except zlib.error:
            complete = False
        if len(out) > max_bytes:
            raise PayloadError(
                device_id=device_id, field="payload",
                value=f"more than {max_bytes} bytes inflated",
                allowed=f"at most {max_bytes} bytes once inflated", reason="too_large",
            )
        if not complete:
            raise PayloadError(
                device_id=device_id, field="payload", value=data[start:start + 40].hex(),
                allowed="a complete gzip stream (it starts with gzip's magic bytes)",
                reason="bad_json",
            )
        if pos >= len(data):
            return bytes(out)
        rest = data[pos:]
        if rest[:2] != GZIP_MAGIC:
            raise PayloadError(
                device_id=device_id, field="payload",
                value=f"{len(rest)} bytes after the gzip stream: {rest[:20].hex()}",
                allowed="gzip members only (Content-Encoding gzip: nothing after the "
                "last member)", reason="bad_encoding",
            )


def _json_int(text: str) -> int | float:
    """A JSON integer as a Python int. One past Python's 4,300-digit conversion limit is far
    beyond a double (1.8e308) and becomes +-inf, so the field holding it is rejected as an
    overflow and its message's seq still counts; as a ``ValueError`` it failed the whole
    message as bad JSON, whose seq never counts, and the device resent it for ever.

    >>> _json_int("12"), _json_int("-" + "9" * 5000)
    (12, -inf)
    """
    try:
        return int(text)
    except ValueError:
        return float("-inf") if text.startswith("-") else float("inf")


def _parse_keeping_repeats(raw: bytes) -> tuple[Any, dict[int, dict[str, list[Any]]]]:
    """``raw`` parsed, and for each object that repeated a key (by ``id``; the document holds
    them alive) every repeated key with all the values it was given, in order.

    >>> doc, repeated = _parse_keeping_repeats(b'{"metrics": {"t": 1.0, "t": 2.0}}')
    >>> doc, repeated[id(doc["metrics"])]
    ({'metrics': {'t': 2.0}}, {'t': [1.0, 2.0]})
    """
    repeated: dict[int, dict[str, list[Any]]] = {}

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d = dict(pairs)
        if len(d) != len(pairs):
            values: dict[str, list[Any]] = {}
            for key, value in pairs:
                values.setdefault(key, []).append(value)
            repeated[id(d)] = {k: v for k, v in values.items() if len(v) > 1}
        return d

    return json.loads(raw, parse_int=_json_int, object_pairs_hook=pairs_hook), repeated


def _nesting_depth(raw: bytes) -> int:
    """How deep the objects and arrays of the JSON text ``raw`` nest (brackets inside
    strings not counted); for an error message, so only read once parsing has failed.

    >>> _nesting_depth(b'{"ts": 1, "metrics": {"a": 1}, "x": "{[["}'), _nesting_depth(b"1")
    (2, 0)
    """
    brackets = _JSON_STRING_RE.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for c in brackets:
        depth += 1 if c in b"[{" else -1
        deepest = max(deepest, depth)
    return deepest


#: a JSON string, or one left open: to the end of the text (a string that had to close
#: was tried again at each escaped quote in it, to the end each time: quadratic)
_JSON_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")


def _too_deep(raw: bytes, device_id: str) -> PayloadError:
    """The rejection of a payload nested too deep for the JSON parser (``RecursionError``):
    what would have been accepted and how deep it nests, not only "must be JSON"
    (valid JSON, it was: a parser reads some thousand levels at most, fewer the deeper
    its caller's own stack).

    >>> e = _too_deep(b'{"x": ' + b'[' * 3000 + b']' * 3000 + b'}', "p")
    >>> e.reason, e.value
    ('bad_json', 'JSON nested 3001 levels deep')
    """
    return PayloadError(
        device_id=device_id, field="payload", value=f"JSON nested {_nesting_depth(raw)} "
        "levels deep", allowed="UTF-8 JSON (compact or SenML) whose objects and arrays nest "
        "fewer levels (the JSON parser stops short of a thousand; a compact record nests 2, "
        "a batch of them 3)", reason="bad_json",
    )


def _may_repeat_keys(raw: bytes, records: list[Any]) -> bool:
    """Whether the parser may have dropped a repeated key from ``records`` (parsed from
    ``raw``): ``False`` is certain, ``True`` means "parse again, keeping repeats, and see".

    Every key in the text is followed by a ``:``, and a key the parser dropped is one it no
    longer counts, so the text's colons always outnumber the keys (and colons in strings)
    found in the parsed records when one was dropped. Found are: the keys of the records
    and of their ``metrics`` (enough for the usual payload), then, if the counts differ,
    also the colons in the records' text values (an RFC 3339 time, a SenML ``urn:`` name)
    and in metric names (``modbus:40001``) and the keys of ``units``, while the text's side
    counts a colon spelled ``\\u003a`` too. Equal counts prove that nothing was dropped.
    The usual payload pays for a ``bytes.count`` and a loop over its records, not for a
    Python hook on every object the parser makes; one with a colon elsewhere (in a unit) is
    parsed twice: correct, only slower.

    >>> _may_repeat_keys(b'{"metrics": {"t": 1}}', [{"metrics": {"t": 1}}])
    False
    >>> _may_repeat_keys(b'{"metrics": {"t": 1, "t": 2}}', [{"metrics": {"t": 2}}])
    True
    >>> raw = b'{"ts": "2024-01-31T12:00:00Z", "metrics": {"a": 1}}'
    >>> _may_repeat_keys(raw, [json.loads(raw)])
    False
    """
    colons = raw.count(b":")
    keys = 0
    for rec in records:  # the usual payload: as many colons as keys
        if type(rec) is dict:
            keys += len(rec)
            metrics = rec.get("metrics")
            if type(metrics) is dict:
                keys += len(metrics)
    if keys == colons:
        return False
    if b"\\u" in raw:  # a colon in a string may be spelled \u003a
        colons += raw.count(b"\\u003a") + raw.count(b"\\u003A")
    for rec in records:  # else colons in strings (an RFC 3339 time, 'urn:dev:mac:…'),
        if type(rec) is dict:  # and the keys of units
            for value in rec.values():
                if type(value) is str:
                    keys += value.count(":")
            units = rec.get("units")
            if type(units) is dict:
                keys += len(units)
    if keys == colons:
        return False
    for rec in records:  # else colons in metric names ('modbus:40001')
        if type(rec) is dict:
            metrics = rec.get("metrics")
            if type(metrics) is dict:
                keys += "".join(metrics).count(":")
    return keys != colons


def _repeated_key(repeated: dict[str, list[Any]], prefix: str, device_id: str,
                  idx: int | None) -> PayloadError:
    """The rejection of a record with an object that repeated a key (``repeated``: each
    such key with its values); ``prefix`` is where the object sits (``"metrics."``).

    The value lists the first :data:`_LISTED_REPEATS` values, each cut short as a problem
    shows a value (every one of a key given 40,000 times, and each whole, made a 120 KB
    dead letter).

    >>> e = _repeated_key({"t": [1.0, 2.0]}, "metrics.", "p", 0)
    >>> e.field, e.value, e.reason
    ('metrics.t', '2 values: 1.0, 2.0', 'duplicate_key')
    >>> _repeated_key({"t": [1, "x" * 50, 3, 4, 5]}, "", "p", None).value
    "5 values: 1, 'xxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxx', 3, 4, ..."
    """
    key, values = next(iter(repeated.items()))
    shown = ", ".join(_shown_value(_short(v)) for v in values[:_LISTED_REPEATS])
    more = ", ..." if len(values) > _LISTED_REPEATS else ""
    return PayloadError(
        device_id=device_id, field=f"{prefix}{_shown_key(key)}",
        value=f"{len(values)} values: {shown}{more}",
        allowed="a key given once per object (the record was left out: which of the values "
        "was meant is unknown)", reason="duplicate_key", index=idx,
    )


def decode(
    payload: bytes | str,
    device_id: str,
    *,
    now_ns: int | None = None,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    max_future_s: float = DEFAULT_MAX_FUTURE_S,
    retention_days: int = 0,
) -> Decoded:
    """Decode and validate a compact or SenML payload from ``device_id``.

    With ``retention_days`` > 0, a record whose time is older than that (by this host's
    clock) is rejected (``expired``, with its index), as the retention pass would delete
    it: a re-sent one was stored again until then (no longer held, it was no duplicate).
    Its seq still counts.

    A gzipped payload (it starts with gzip's magic bytes, which JSON never does) is
    inflated first, so a device on a metered link may compress over MQTT as over HTTP;
    ``max_bytes`` holds for the inflated payload too.

    Raises :class:`PayloadError` only when nothing in the payload can be used; otherwise
    returns a :class:`Decoded` whose ``rejected`` list names every part left out.

    >>> import gzip
    >>> d = decode(gzip.compress(b'{"ts": 1.7e9, "metrics": {"a": 1}}'), "d1",
    ...            now_ns=1_800_000_000 * 10**9)
    >>> [(r.metric, r.value) for r in d.readings]
    [('a', 1.0)]
    """
    raw = payload.encode() if isinstance(payload, str) else payload
    if len(raw) > max_bytes:
        raise PayloadError(
            device_id=device_id, field="payload", value=f"{len(raw)} bytes",
            allowed=f"at most {max_bytes} bytes", reason="too_large",
        )
    if raw.startswith(GZIP_MAGIC):
        raw = _inflate(raw, device_id, max_bytes)
    # json.loads reads UTF-16 and UTF-32 bytes too, whose colons _may_repeat_keys cannot
    # count: a repeated key would pass unseen
    encoding = json.detect_encoding(raw)
    if encoding not in ("utf-8", "utf-8-sig"):
        raise PayloadError(
            device_id=device_id, field="payload",
            value=f"{encoding.upper()} text ({len(raw)} bytes)",
            allowed="UTF-8 JSON (compact or SenML)", reason="bad_json",
        )
    try:
        doc = json.loads(raw, parse_int=_json_int)
    except (UnicodeDecodeError, ValueError):
        raise PayloadError(
            device_id=device_id, field="payload", value=raw[:40].decode("utf-8", "replace"),
            allowed="UTF-8 JSON (compact or SenML)", reason="bad_json",
        ) from None
    except RecursionError:
        raise _too_deep(raw, device_id) from None
    now_ns = time.time_ns() if now_ns is None else now_ns
    out = Decoded()
    if isinstance(doc, dict):
        records: list[Any] = [doc]
    elif isinstance(doc, list):
        records = doc
    else:
        raise PayloadError(
            device_id=device_id, field="payload", value=doc,
            allowed="a JSON object or array", reason="bad_shape",
        )
    if not records:
        return out
    repeated: dict[int, dict[str, list[Any]]] = {}
    if _may_repeat_keys(raw, records):  # look again, slowly, keeping repeated keys
        try:
            doc, repeated = _parse_keeping_repeats(raw)
        except RecursionError:  # its hook costs stack: one parse may pass, this one not
            raise _too_deep(raw, device_id) from None
        records = [doc] if isinstance(doc, dict) else doc
    expiry = (retention_cut_ns(retention_days), retention_days) if retention_days > 0 else None
    if _looks_senml(records):
        _decode_senml(records, device_id, now_ns, max_future_s, out, repeated, expiry)
    else:
        for i, rec in enumerate(records):
            idx = i if isinstance(doc, list) else None
            try:
                _decode_compact(rec, device_id, now_ns, max_future_s, idx, out, repeated,
                                expiry)
            except PayloadError as exc:
                out.reject(exc)
            except Exception as exc:  # a bug here must cost one record, never the device
                out.reject(_undecodable(exc, device_id, idx))
    return out


def _undecodable(exc: Exception, device_id: str, index: int | None,
                 what: str = "record", field: str = "record") -> PayloadError:
    """The rejection of a ``what`` (a record; the pipeline: a whole message) whose decoding
    failed unexpectedly (a gateway bug): it is left out, and its seq, if already read,
    still counts towards the ack.

    >>> _undecodable(OverflowError("too big"), "p", 0).reason
    'undecodable'
    """
    return PayloadError(
        device_id=device_id, field=field, value=None,
        allowed=f"a {what} the gateway can decode (decoding failed with "
        f"{type(exc).__name__}: {str(exc)[:120]}; the {what} was left out)",
        reason="undecodable", index=index,
    )


_SENML_KEYS = frozenset({"bn", "bt", "bu", "bv", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t"})


def _looks_senml(records: list[Any]) -> bool:
    """Whether ``records`` are a SenML pack, told by the first record that is an object with
    a field of either form (``metrics``/``ts``: compact; a SenML field: SenML): records
    before it that are no object or hold neither (``null``, ``{}``) are judged in the form
    it tells, and can no longer make a SenML pack decode as compact JSON.

    >>> _looks_senml([None, {}, {"bn": "p/", "n": "t", "v": 1}])
    True
    >>> _looks_senml([{"seq": 1}, {"ts": 1.7e9, "metrics": {"a": 1}}])
    False
    """
    for rec in records:
        if isinstance(rec, dict):
            if "metrics" in rec or "ts" in rec:
                return False
            if not _SENML_KEYS.isdisjoint(rec):
                return True
    return False


def retention_cut_ns(days: int, now_ns: int | None = None) -> int:
    """The time before which a retention of ``days`` deletes readings (and ingest refuses
    them as ``expired``), at ``now_ns`` (this host's clock by default); a retention longer
    than the int64 nanosecond range (``EDGEWISE_RETENTION_DAYS=999999``) cuts before every
    storable time, clamped to that range (a store refused the cut: "bigint out of range").

    >>> retention_cut_ns(1, now_ns=86_400 * 10**9), retention_cut_ns(999_999, now_ns=0)
    (0, -9223372036854775808)
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    return max(now_ns - days * 86_400 * 10**9, -(2**63))


def _expired(ts_ns: int, expiry: tuple[int, int] | None, field_name: str, device_id: str,
             index: int | None) -> PayloadError | None:
    """The rejection of a record whose time ``ts_ns`` is before ``expiry``'s cut (``(cut
    ns, retention days)``; ``None``: no retention), else ``None``.

    >>> _expired(0, (10, 30), "ts", "p", 2).reason, _expired(10, (10, 30), "ts", "p", 2)
    ('expired', None)
    """
    if expiry is None or ts_ns >= expiry[0]:
        return None
    return PayloadError(
        device_id=device_id, field=field_name, value=_iso(ts_ns),
        allowed=f"a time within the retention of {expiry[1]} days "
        "(EDGEWISE_RETENTION_DAYS): the record was left out, as retention would delete it",
        reason="expired", index=index,
    )


def _decode_compact(
    rec: Any, device_id: str, now_ns: int, max_future_s: float, idx: int | None, out: Decoded,
    repeated: dict[int, dict[str, list[Any]]] | None = None,
    expiry: tuple[int, int] | None = None,
) -> None:
    if not isinstance(rec, dict):
        raise PayloadError(
            device_id=device_id, field="record", value=rec,
            allowed='an object {"ts": …, "metrics": {…}}', reason="bad_shape", index=idx,
        )
    # The seq is read first: a message that is rejected is still *handled* (its reasons go
    # back to the device), so its seq must count towards the acknowledgement, or one bad
    # message would hold every later one unacknowledged for ever.
    repeats = repeated.get(id(rec)) if repeated else None
    if repeats is not None and "seq" in repeats:
        # which seq was meant is unknown: the record is refused under every seq it gave
        # (its dead letter names them all), so none of them is left unacknowledged for
        # ever, nor reported as a seq gap (only the last one, a JSON parser's pick, was)
        out.seqs.extend(_valid_seqs(repeats["seq"]))
        raise _repeated_key({"seq": repeats["seq"]}, "", device_id, idx)
    seq = _check_seq(rec["seq"], device_id, idx) if rec.get("seq") is not None else None
    if seq is not None:
        out.seqs.append(seq)
    if repeated:  # only after the slow parse, and only when some object repeated a key
        for obj, at in ((rec, ""), (rec.get("metrics"), "metrics."), (rec.get("units"), "units.")):
            if id(obj) in repeated:
                raise _repeated_key(repeated[id(obj)], at, device_id, idx)
    unknown = set(rec) - {"ts", "metrics", "seq", "units"}
    if unknown:
        name = sorted(unknown)[0]
        raise PayloadError(
            device_id=device_id, field=_shown_key(name), value=rec[name],
            allowed="only the fields 'ts', 'metrics', 'seq' and 'units'",
            reason="unknown_field", index=idx,
        )
    if "ts" not in rec:
        raise PayloadError(
            device_id=device_id, field="ts", value=None,
            allowed="present: an RFC 3339 UTC timestamp or an epoch time (s, ms, us or ns)",
            reason="missing_field", index=idx,
        )
    ts_ns = parse_time(
        rec["ts"], now_ns=now_ns, max_future_s=max_future_s, device_id=device_id, index=idx
    )
    if (old := _expired(ts_ns, expiry, "ts", device_id, idx)) is not None:
        raise old
    metrics = rec.get("metrics")
    if not isinstance(metrics, dict) or not metrics:
        raise PayloadError(
            device_id=device_id, field="metrics", value=metrics,
            allowed='a non-empty object of name to number, e.g. {"temp_c": 21.5}',
            reason="bad_shape" if metrics is not None else "missing_field", index=idx,
        )
    units = rec.get("units")
    if units is None:
        units = {}
    elif not isinstance(units, dict):  # was dropped without a word, as a unit not text was
        raise PayloadError(
            device_id=device_id, field="units", value=units,
            allowed='an object of metric name to unit text, e.g. {"temp_c": "Cel"} (or '
            "no 'units' field)", reason="bad_shape", index=idx,
        )
    for name, value in metrics.items():
        try:
            metric = _check_metric(name, f"metrics.{_shown_key(name)}", device_id, idx)
            v = float(value) if isinstance(value, bool) else _check_value(
                value, f"metrics.{name}", device_id, idx, "a finite number or a boolean")
            unit = units.get(name)
            if unit is not None and not isinstance(unit, str):
                raise PayloadError(
                    device_id=device_id, field=f"units.{name}", value=unit,
                    allowed='the unit as text, e.g. "Cel" (or null: no unit); the '
                    "metric's reading was left out", reason="bad_type", index=idx,
                )
        except PayloadError as exc:
            out.reject(exc)
            continue
        out.readings.append(Reading(device_id, metric, ts_ns, v, seq, unit))


def _decode_senml(
    records: list[Any], device_id: str, now_ns: int, max_future_s: float, out: Decoded,
    repeated: dict[int, dict[str, list[Any]]] | None = None,
    expiry: tuple[int, int] | None = None,
) -> None:
    bn: str | None = ""  # None: refused, so the records after it have no name (bad_metric)
    bu, bv = None, 0.0
    bt: int | float = 0  # an int as sent (an integer ns bt keeps every digit)
    seq: int | None = None
    absolute = False  # a value record's time was absolute (even if the record was refused)
    for i, rec in enumerate(records):
        try:
            if not isinstance(rec, dict):
                raise PayloadError(
                    device_id=device_id, field="record", value=rec,
                    allowed="a SenML record object", reason="bad_shape", index=i,
                )
            # The seq is read first: a record rejected for its base fields is handled too,
            # and its seq must count towards the ack (else the device resends it for ever).
            bad_seq: PayloadError | None = None
            repeats = repeated.get(id(rec)) if repeated else None
            if repeats is not None and "seq" in repeats:  # refused under each seq it gave
                given = _valid_seqs(repeats["seq"])
                out.seqs.extend(given)
                if given and given[-1] == rec["seq"]:  # the records after it: as before
                    seq = given[-1]
            elif "seq" in rec:
                try:
                    seq = _check_seq(rec["seq"], device_id, i)
                    out.seqs.append(seq)
                except PayloadError as exc:
                    bad_seq = exc
            # a base field given twice is refused (the records after it lack it, as after
            # any refused base field); the others are applied, as in a record refused for
            # its value: skipped, the records after it were stored under the bare name at
            # now (a repeated "v" or "seq" and the pack's "bn"/"bt" in one record)
            given_twice = repeats if repeats is not None else {}
            if "bn" in given_twice:
                bn = None
            if "bt" in given_twice:
                bt = math.nan
            if "bu" in given_twice:
                bu = _REFUSED_UNIT
            if "bv" in given_twice:
                bv = math.nan
            try:
                if "bn" in rec and "bn" not in given_twice:
                    bn = None  # refused: the records after it have no name (bad_metric)
                    if not isinstance(rec["bn"], str):
                        raise PayloadError(
                            device_id=device_id, field="bn", value=rec["bn"],
                            allowed="a string", reason="bad_type", index=i,
                        )
                    bn = rec["bn"]
                if "bt" in rec and "bt" not in given_twice:
                    bt = math.nan  # refused: the records after it have no time, not now
                    bt = _check_value(rec["bt"], "bt", device_id, i)
                    if isinstance(rec["bt"], int):
                        bt = rec["bt"]
                if "bu" in rec and "bu" not in given_twice:
                    bu = _REFUSED_UNIT  # refused: the records after it lack their unit
                    if rec["bu"] is not None and not isinstance(rec["bu"], str):
                        raise PayloadError(
                            device_id=device_id, field="bu", value=rec["bu"],
                            allowed='the base unit as text, e.g. "Cel" (or null: no unit)',
                            reason="bad_type", index=i,
                        )
                    bu = rec["bu"]
                if "bv" in rec and "bv" not in given_twice:
                    bv = math.nan  # refused: the values after it are not readings
                    bv = _check_value(rec["bv"], "bv", device_id, i)
            except PayloadError:
                if not given_twice:
                    raise
            if given_twice:
                raise _repeated_key(given_twice, "", device_id, i)
            if bad_seq is not None:
                raise bad_seq
            if "metrics" in rec or "ts" in rec:
                raise _compact_in_senml(rec, device_id, i)
            must_understand = [k for k in rec if isinstance(k, str) and k.endswith("_")]
            if must_understand:
                raise PayloadError(
                    device_id=device_id, field=_shown_key(must_understand[0]),
                    value=rec[must_understand[0]],
                    allowed="no must-understand ('_'-suffixed) fields", reason="unknown_field",
                    index=i,
                )
            for k in ("vs", "vd", "s"):
                if k in rec:
                    raise PayloadError(
                        device_id=device_id, field=k, value=rec[k],
                        allowed="a number in 'v' or a boolean in 'vb' (Edgewise stores "
                        "numbers; a boolean as 1 or 0)",
                        reason="unsupported_value", index=i,
                    )
            if "v" in rec and "vb" in rec:
                raise PayloadError(
                    device_id=device_id, field="vb", value=rec["vb"],
                    allowed="one value per record: 'v' or 'vb', not both",
                    reason="bad_shape", index=i,
                )
            if "vb" in rec and not isinstance(rec["vb"], bool):
                raise PayloadError(
                    device_id=device_id, field="vb", value=rec["vb"],
                    allowed="true or false", reason="bad_type", index=i,
                )
            if "v" not in rec and "vb" not in rec:
                if "n" in rec:  # a named record with no value at all
                    raise PayloadError(
                        device_id=device_id, field="v", value=None,
                        allowed="present: a number in 'v' or a boolean in 'vb'",
                        reason="missing_field", index=i,
                    )
                continue  # a pure base record
            if bn is None:
                raise PayloadError(
                    device_id=device_id, field="n", value=rec.get("n"),
                    allowed="a record after a valid base name (the pack's 'bn' was refused)",
                    reason="bad_metric", index=i,
                )
            name = bn + (rec.get("n") or "") if isinstance(rec.get("n", ""), str) else None
            if name is not None:
                for prefix in (f"{device_id}/", f"{device_id}:", f"{device_id}."):
                    if name.startswith(prefix):
                        name = name[len(prefix):]
                        break
            metric = _check_metric(name, "n", device_id, i)
            # the base value adds to numbers only (RFC 8428, 4.5.1), never to a boolean
            value = float(rec["vb"]) if "vb" in rec else bv + _check_value(
                rec["v"], "v", device_id, i, "a finite number (a boolean goes in 'vb')")
            if not math.isfinite(value):  # two finite numbers can overflow: 1e308 + 1e308
                raise PayloadError(
                    device_id=device_id, field="v", value=rec["v"],
                    allowed=f"a value whose sum with the base value bv={bv!r} is finite",
                    reason="not_finite", index=i,
                )
            if math.isnan(bt):
                raise PayloadError(
                    device_id=device_id, field="t", value=rec.get("t"),
                    allowed="a record after a valid base time (the pack's 'bt' was refused)",
                    reason="bad_ts", index=i,
                )
            t: int | float = 0
            if "t" in rec:
                t = _check_value(rec["t"], "t", device_id, i)
                if isinstance(rec["t"], int):  # as sent: an integer (ns) t keeps every digit
                    t = rec["t"]
            if bt >= _SENML_RELATIVE_LIMIT and _finite_sum(bt, t):  # else bad_ts below
                # an absolute base time: its unit (s, ms, us or ns) told from bt alone, bt
                # made nanoseconds exactly, and t (seconds, RFC 8428) added to it
                ts_ns = _senml_time_ns(bt, t)
                if ts_ns < _SENML_RELATIVE_LIMIT * 1_000_000_000:  # bt + t relative after all
                    ts_ns += now_ns
                else:
                    absolute = True
                try:
                    ts_ns = parse_time(
                        ts_ns if ts_ns >= _NS_EPOCH_FROM else ts_ns / 1e9, field_name="t",
                        now_ns=now_ns, max_future_s=max_future_s, device_id=device_id,
                        index=i,
                    )
                except PayloadError as exc:
                    raise _senml_time_refused(exc, rec, bt) from None
            else:
                t = _senml_sum(bt, t)  # no base time, or a relative one: seconds
                if t < _SENML_RELATIVE_LIMIT:
                    # now plus t, in whole nanoseconds: every record of a pack delivered
                    # again moves by exactly the gap between the two arrivals (rounding
                    # each sum of floats to the microsecond moved some by 1 us more, and
                    # the copy was stored twice: see Pipeline._redelivered)
                    t = _relative_ns(now_ns, t)
                    if isinstance(t, int):
                        t = t if t >= _NS_EPOCH_FROM else t / 1e9  # as the branch above
                else:
                    absolute = True
                try:
                    ts_ns = parse_time(
                        t, field_name="t", now_ns=now_ns, max_future_s=max_future_s,
                        device_id=device_id, index=i,
                    )
                except PayloadError as exc:
                    raise _senml_time_refused(exc, rec, bt) from None
            if (old := _expired(ts_ns, expiry, "t", device_id, i)) is not None:
                raise old
            # a unit that is not text rejects the reading, as in compact's "units" (it
            # was dropped without a word, and the reading stored unitless)
            unit = rec.get("u", bu)
            if unit is _REFUSED_UNIT:
                raise PayloadError(
                    device_id=device_id, field="u", value=None,
                    allowed="a record after a valid base unit (the pack's 'bu' was refused), "
                    "or a 'u' of its own", reason="bad_type", index=i,
                )
            if unit is not None and not isinstance(unit, str):
                raise PayloadError(
                    device_id=device_id, field="u", value=unit,
                    allowed='the unit as text, e.g. "Cel" (or null: no unit); the reading '
                    "was left out", reason="bad_type", index=i,
                )
            out.readings.append(Reading(device_id, metric, ts_ns, value, seq, unit))
        except PayloadError as exc:
            out.reject(exc)
        except Exception as exc:  # a bug here must cost one record, never the device
            out.reject(_undecodable(exc, device_id, i))
    out.relative_times = bool(out.readings) and not absolute
    if not out.readings and not out.rejected_total:
        # base records only: nothing stored and nothing said, while the seq was counted
        # ({"t": 1.7e9, "temp": 21.5}: a compact record mistyped, read as SenML)
        fields = sorted({k for rec in records if isinstance(rec, dict) for k in rec})
        out.reject(PayloadError(
            device_id=device_id, field="v",
            value=f"{len(records)} record(s) of base fields only: "
            + ", ".join(repr(_shown_key(k)) for k in fields[:8])
            + (", ..." if len(fields) > 8 else ""),
            allowed="a SenML pack with a value ('v': a number, 'vb': a boolean) named by "
            "'n', or a compact record {\"ts\": …, \"metrics\": {…}}: nothing was stored",
            reason="missing_field",
        ))


def _senml_time_refused(exc: PayloadError, rec: dict[str, Any], bt: int | float) -> PayloadError:
    """The rejection ``exc`` of a SenML record's time (by :func:`parse_time`, of the time
    ``bt + t`` resolved to, often in nanoseconds) told as the device sent it: the field it
    gave, ``t`` (or ``bt``, for a record without one), with that field's value, and what
    the time was made of. It named ``t`` with a nanosecond number the device never sent
    (``{"bt": 1869860800, ...}``: "field 't' ... Got 1869860800000000000").

    >>> e = PayloadError(field="t", value=1869860800000000000, reason="future_ts",
    ...                  allowed="no more than 300 s in the future", device_id="p", index=0)
    >>> r = _senml_time_refused(e, {"n": "a", "v": 1}, 1869860800)
    >>> r.field, r.value, r.reason
    ('bt', 1869860800, 'future_ts')
    >>> _senml_time_refused(e, {"n": "a", "v": 1, "t": 5}, 1869860800).allowed
    'no more than 300 s in the future (the time is the base time bt=1869860800 plus t seconds)'
    """
    if "t" not in rec:
        field_name, value, how = "bt", bt, "(the pack's base time, the record giving no 't')"
    else:
        field_name, value = "t", rec["t"]
        how = (f"(the time is the base time bt={_short(bt)!r} plus t seconds)" if bt != 0 else
               "(t: seconds from now below 2**28, RFC 8428; an epoch time from it on)")
    return PayloadError(
        device_id=exc.device_id, field=field_name, value=_short(value),
        allowed=f"{exc.allowed} {how}", reason=exc.reason, index=exc.index,
    )


def _compact_in_senml(rec: dict[str, Any], device_id: str, index: int) -> PayloadError:
    """The rejection of a record of a SenML pack holding a compact field: ``metrics`` (a
    compact record: read as SenML it was a pure base record, skipped with nothing said
    while its seq was acknowledged) or ``ts`` (compact's time: a reading with it was
    stamped at its arrival).

    >>> _compact_in_senml({"ts": 1.7e9, "metrics": {"a": 1}}, "p", 1).field
    'metrics'
    >>> e = _compact_in_senml({"n": "a", "v": 1, "ts": 1.7e9}, "p", 0)
    >>> e.field, e.reason
    ('ts', 'unknown_field')
    """
    if "metrics" in rec:
        return PayloadError(
            device_id=device_id, field="metrics", value=rec["metrics"],
            allowed="absent from a SenML pack (its first record is SenML): a compact "
            "record ('ts', 'metrics') goes in a message of its own",
            reason="unknown_field", index=index,
        )
    return PayloadError(
        device_id=device_id, field="ts", value=rec["ts"],
        allowed="absent: a SenML record's time is 't' (seconds, added to 'bt'; RFC 8428), "
        "not compact's 'ts'", reason="unknown_field", index=index,
    )


def _senml_time_ns(bt: int | float, t: int | float) -> int:
    """Nanoseconds of a SenML record's time ``bt + t``, for an absolute base time ``bt``:
    its unit (s, ms, us or ns) is told from ``bt`` alone (:func:`epoch_unit_ns`), an
    integer ``bt`` is converted exactly, and ``t`` is in seconds (RFC 8428), whatever the
    unit of ``bt`` (an integer ``t`` exactly too).

    >>> _senml_time_ns(1706702400000, 5) == _senml_time_ns(1706702400, 5) == 1706702405 * 10**9
    True
    >>> _senml_time_ns(1706702400123456789, 0)
    1706702400123456789
    """
    if isinstance(bt, int):
        base = bt * epoch_unit_ns(abs(bt))
    else:
        base = epoch_ns(bt)
    if isinstance(t, int) and abs(t) < _EPOCH_LIMIT:
        return base + t * 1_000_000_000
    step = t * 1e9
    if not math.isfinite(step):  # t past 1.8e299 s: far out of range either way
        step = math.copysign(2.0**80, t)
    return base + round(step)


def _relative_ns(now_ns: int, t: int | float) -> int | float:
    """The time ``t`` seconds (RFC 8428: a time below 2**28 is relative) from ``now_ns``:
    whole nanoseconds, now's exactly and ``t`` rounded to the nanosecond (an integer ``t``
    exactly), so the records of one pack stamped at two arrivals differ by the arrivals'
    gap, all of them; a ``t`` too far out for that (past 1e299 s) as seconds, as before,
    for :func:`parse_time` to refuse.

    >>> _relative_ns(1_800_000_000_123_456_789, -0.1), _relative_ns(1_800_000_000 * 10**9, -5)
    (1800000000023456789, 1799999995000000000)
    >>> a, b = 1_700_000_000_000_000_400, 1_700_000_002_279_419_893
    >>> {_relative_ns(b, t) - _relative_ns(a, t) for t in (-0.2, -0.1, 0, 0.3)} == {b - a}
    True
    >>> _relative_ns(10**18, -1e300)
    -1e+300
    """
    if isinstance(t, int):
        return now_ns + t * 1_000_000_000
    step = t * 1e9
    if not math.isfinite(step):
        return now_ns / 1e9 + t
    return now_ns + round(step)


def _finite_sum(a: int | float, b: int | float) -> bool:
    """Whether ``a + b`` is finite as a float (two integers can sum past a float's range).

    >>> _finite_sum(1, 2.5), _finite_sum(10**308, 10**308), _finite_sum(1e308, 1e308)
    (True, False, False)
    """
    try:
        return math.isfinite(a + b)
    except OverflowError:
        return False


def _senml_sum(bt: int | float, t: int | float) -> int | float:
    """A SenML record's time ``bt + t`` with no absolute base time: an integer when both
    are (or ``bt`` is a whole float, ``"bt": 0.0``), so an integer nanosecond ``t`` keeps
    every digit as compact's integer ``ts`` does; a float as before past the range of any
    time (an integer sum there could overflow the float arithmetic that follows).

    >>> _senml_sum(0, 1796550001123456789), _senml_sum(0.0, 1796550001123456789)
    (1796550001123456789, 1796550001123456789)
    >>> _senml_sum(-5, 1.5), _senml_sum(10**308, 10**308)
    (-3.5, inf)
    """
    if isinstance(t, int) and isinstance(bt, float) and bt.is_integer():
        bt = int(bt)
    total = bt + t
    if isinstance(total, int) and not -_EPOCH_LIMIT < total < _EPOCH_LIMIT:
        try:
            return float(total)
        except OverflowError:
            return math.inf if total > 0 else -math.inf
    return total


def _ts_out(ts_ns: int) -> float | int:
    """A reading's time as an encoder writes it, read back by :func:`decode` exactly: whole
    seconds as such, else integer nanoseconds (a float of seconds kept the microsecond
    only: 1700000000123456789 came back as 1700000000123457000), or, before 1973 (which
    would be read as seconds or ms), a float of seconds.

    >>> _ts_out(1_700_000_000 * 10**9), _ts_out(1_700_000_000_123_456_789), _ts_out(10**9 + 5 * 10**8)
    (1700000000, 1700000000123456789, 1.5)
    """  # noqa: E501
    if ts_ns % 1_000_000_000 == 0:
        return ts_ns // 1_000_000_000
    return ts_ns if ts_ns >= _NS_EPOCH_FROM else ts_ns / 1e9


def encode_compact(readings: Iterable[Reading]) -> bytes:
    """Encode readings as a compact JSON array, one record per (ts, seq).

    >>> r = [Reading("p", "a", 1_700_000_000 * 10**9, 1.0, 3), Reading("p", "b", 1_700_000_000 * 10**9, 2.0, 3)]
    >>> encode_compact(r)
    b'[{"ts":1700000000,"metrics":{"a":1.0,"b":2.0},"seq":3}]'
    """  # noqa: E501
    groups: dict[tuple[int, int | None], dict[str, float]] = {}
    for r in readings:
        groups.setdefault((r.ts_ns, r.seq), {})[r.metric] = r.value
    out = []
    for (ts_ns, seq), metrics in groups.items():
        rec: dict[str, Any] = {"ts": _ts_out(ts_ns), "metrics": metrics}
        if seq is not None:
            rec["seq"] = seq
        out.append(rec)
    return json.dumps(out, separators=(",", ":")).encode()


def encode_senml(readings: Sequence[Reading]) -> bytes:
    """Encode readings as a SenML pack (absolute times, base time on the first record).

    >>> encode_senml([Reading("p", "a", 1_700_000_000 * 10**9, 1.5, None, "Cel")])
    b'[{"bt":1700000000,"n":"a","v":1.5,"u":"Cel"}]'
    """
    out: list[dict[str, Any]] = []
    if not readings:
        return b"[]"
    bt = readings[0].ts_ns
    seqs = {r.seq for r in readings}
    for i, r in enumerate(readings):
        rec: dict[str, Any] = {}
        if i == 0:
            rec["bt"] = _ts_out(bt)
            if len(seqs) == 1 and r.seq is not None:
                rec["seq"] = r.seq
        rec["n"] = r.metric
        rec["v"] = r.value
        if r.unit:
            rec["u"] = r.unit
        if r.ts_ns != bt:
            rec["t"] = (r.ts_ns - bt) / 1e9
        out.append(rec)
    return json.dumps(out, separators=(",", ":")).encode()


#: A telemetry message refused whole (over ``EDGEWISE_MAX_PAYLOAD_BYTES``, or on a topic
#: not the device's) is still read for its seqs (:func:`payload_seqs`), so that it is
#: dead-lettered *and* acknowledged, up to this many times the payload limit (a 256 KiB
#: limit: 4 MiB); a larger one is dropped unread. The embedded broker's packet limit
#: follows from it.
SEQ_SCAN_FACTOR = 16

def payload_seqs(payload: bytes, max_bytes: int) -> list[int]:
    """The valid seqs of a JSON payload's records, best effort (``[]`` when none): what a
    message refused whole (too large, or published to a topic not the device's) still
    tells of the seqs it held. A gzipped payload is inflated first, but never past
    ``max_bytes`` (a small gzip can inflate a thousandfold), member after member as
    :func:`decode` reads it: one that inflates to more, or is not complete gzip, gives
    ``[]``.

    >>> import gzip
    >>> payload_seqs(b'[{"seq": 3}, {"seq": -1}, {"seq": true}, 5]', 100), payload_seqs(b"\\x1f\\x8b", 100)
    ([3], [])
    >>> payload_seqs(gzip.compress(b'{"seq": 7}'), 100), payload_seqs(gzip.compress(b" " * 200), 100)
    ([7], [])
    >>> payload_seqs(gzip.compress(b'[{"seq": 1},') + gzip.compress(b'{"seq": 2}]'), 100)
    [1, 2]
    """  # noqa: E501
    try:
        if payload.startswith(GZIP_MAGIC):  # every member, as decode reads it
            payload = _inflate(payload, "", max_bytes)
        doc = json.loads(payload)
        records = doc if isinstance(doc, list) else [doc]
        repeated: dict[int, dict[str, list[Any]]] = {}
        # a record that gave "seq" twice counts each value, as decode counts them: parsed
        # again, slowly, only when the text has more "seq" than the records kept
        kept = sum(1 for r in records if isinstance(r, dict) and "seq" in r)
        if payload.count(b'"seq"') != kept or b"\\u" in payload:
            doc, repeated = _parse_keeping_repeats(payload)
            records = doc if isinstance(doc, list) else [doc]
        return [s for r in records if isinstance(r, dict)
                for s in _valid_seqs(repeated.get(id(r), {}).get("seq", [r.get("seq")]))]
    except Exception:
        return []
