"""RFC 3339 times keep their nanoseconds (Go's RFC3339Nano sends nine fraction digits),
as epoch nanoseconds do; a leap second is refused with a reason."""

from __future__ import annotations

import pytest

from edgewise.errors import PayloadError
from edgewise.telemetry import decode, parse_time

NOW = 1_800_000_000 * 10**9


@pytest.mark.parametrize(("text", "ns"), [
    ("2024-01-31T12:00:00.000000100Z", 1706702400000000100),
    ("2024-01-31T12:00:00.000000600Z", 1706702400000000600),
    ("2024-01-31T12:00:00.123456789Z", 1706702400123456789),
    ("2024-01-31T12:00:00.123456789z", 1706702400123456789),
    ("2024-01-31T12:00:00,1234567Z", 1706702400123456700),
    ("2024-01-31T12:00:00.12345678-05:00", 1706720400123456780),
    ("2024-01-31T12:00:00.1234567891234Z", 1706702400123456789),  # past 9: cut
    ("2024-01-31T12:00:00.123Z", 1706702400123000000),
    ("2024-01-31T12:00:00Z", 1706702400000000000),
    # a fraction of the offset's seconds is the offset's, not the time's
    ("2024-01-31T12:00:00+05:00:00.1234567", 1706684399876544000),
])
def test_rfc3339_keeps_nanoseconds(text: str, ns: int) -> None:
    """Check that an RFC 3339 time is read to the nanosecond (datetime alone keeps six
    fraction digits, so ...00.000000100Z and ...00.000000600Z fell on one key)."""
    assert parse_time(text, now_ns=NOW) == ns


def test_two_readings_500ns_apart_are_two_readings() -> None:
    """Check that two readings 500 ns apart in RFC 3339 decode to two distinct times."""
    d = decode(b'[{"ts": "2024-01-31T12:00:00.000000100Z", "metrics": {"v": 1}},'
               b' {"ts": "2024-01-31T12:00:00.000000600Z", "metrics": {"v": 2}}]', "vib-1")
    assert [r.ts_ns for r in d.readings] == [1706702400000000100, 1706702400000000600]


def test_leap_second_is_refused_with_a_reason() -> None:
    """Check that a leap second (23:59:60) is refused as bad_ts, saying why."""
    with pytest.raises(PayloadError, match=r"not a leap second \(':60'\)") as e:
        parse_time("2016-12-31T23:59:60Z", now_ns=NOW, device_id="pump-7")
    assert e.value.reason == "bad_ts"
    with pytest.raises(PayloadError, match=r"RFC 3339 timestamp with a UTC offset, e\.g\. "
                       r"'2024-01-31T12:00:00Z'\. Got") as e:
        parse_time("2024-13-01T00:00:00Z", now_ns=NOW, device_id="pump-7")
    assert e.value.reason == "bad_ts"
