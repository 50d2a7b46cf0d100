"""SenML record times against an absolute base time ``bt`` in ms, us or ns.

``bt + t`` was summed in one unit and the unit then guessed from the total: with ``bt``
in milliseconds a record's relative ``t`` (seconds, RFC 8428) was taken as milliseconds,
so records 5 s apart were stored 5 ms apart; and an integer ``bt`` in nanoseconds went
through a float and lost its last digits. Now the unit is told from ``bt`` alone, ``bt``
is made nanoseconds exactly and ``t`` is added in seconds.
"""

from __future__ import annotations

import pytest

from edgewise.telemetry import decode

NOW = 1_800_000_000 * 10**9
BASE_NS = 1_706_702_400 * 10**9


def _ts(payload: bytes) -> list[int]:
    d = decode(payload, "pump-1", now_ns=NOW)
    assert d.rejected == [], d.rejected
    return [r.ts_ns for r in d.readings]


@pytest.mark.parametrize("bt", ["1706702400", "1706702400.0", "1706702400000",
                                "1706702400000000", "1706702400000000000"])
def test_relative_t_is_seconds_whatever_the_unit_of_bt(bt: str) -> None:
    payload = (f'[{{"bt":{bt},"n":"a","v":1}},{{"n":"a","t":5,"v":2}},'
               f'{{"n":"a","t":0.5,"v":3}},{{"n":"a","t":-1.25,"v":4}}]').encode()
    assert _ts(payload) == [BASE_NS, BASE_NS + 5 * 10**9, BASE_NS + 500_000_000,
                            BASE_NS - 1_250_000_000]


def test_integer_nanosecond_bt_keeps_every_digit() -> None:
    assert _ts(b'[{"bt":1706702400123456789,"n":"a","v":1},{"n":"a","t":1,"v":2}]') == [
        1_706_702_400_123_456_789, 1_706_702_401_123_456_789]
    # the same instant as the compact format stores it
    c = decode(b'{"ts":1706702400123456789,"metrics":{"a":1}}', "pump-1", now_ns=NOW)
    assert c.readings[0].ts_ns == 1_706_702_400_123_456_789


def test_relative_and_absolute_t_without_bt_unchanged() -> None:
    # no bt: t alone, its unit told from t (ms here); a small t is relative to now
    assert _ts(b'[{"n":"a","t":1706702400500,"v":1}]') == [BASE_NS + 500_000_000]
    assert _ts(b'[{"n":"a","t":-10,"v":1}]') == [NOW - 10 * 10**9]
    d = decode(b'[{"bt":1706702400,"n":"a","v":1}]', "pump-1", now_ns=NOW)
    assert d.relative_times is False


def test_out_of_range_time_after_ms_bt_is_refused_by_name() -> None:
    d = decode(b'[{"bt":1706702400000,"n":"a","t":1e300,"v":1},'
               b'{"n":"a","t":-1e9,"v":2}]', "pump-1", now_ns=NOW)
    assert d.readings == []
    assert [(e.field, e.reason) for e in d.rejected] == [("t", "future_ts"), ("t", "ancient_ts")]
