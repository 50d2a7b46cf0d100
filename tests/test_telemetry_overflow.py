"""Values past what a float or a datetime holds are rejected entries, never exceptions:
an OverflowError out of decode used to fail the whole commit (HTTP 500, no MQTT
dead-letter) and, since the message's seq was never handled, stall the device's ack for
ever."""

from __future__ import annotations

import json
import math

import pytest

import edgewise.telemetry as telemetry
from edgewise.errors import PayloadError
from edgewise.telemetry import decode, parse_time, parse_time_text

NOW_NS = 1_800_000_000 * 10**9
HUGE = 10**400


def _decode(doc: object) -> telemetry.Decoded:
    return decode(json.dumps(doc).encode(), "pump-1", now_ns=NOW_NS)


@pytest.mark.parametrize("doc, field, reasons", [
    ({"ts": 1_700_000_000, "metrics": {"a": HUGE, "ok": 5}, "seq": 2},
     "metrics.a", {"not_finite"}),
    ({"ts": 1_700_000_000, "metrics": {"a": -HUGE, "ok": 5}, "seq": 2},
     "metrics.a", {"not_finite"}),
    ({"ts": HUGE, "metrics": {"ok": 5}, "seq": 2}, "ts", {"future_ts"}),
    ({"ts": -HUGE, "metrics": {"ok": 5}, "seq": 2}, "ts", {"ancient_ts"}),
    ({"ts": "0001-01-01T00:00:00+14:00", "metrics": {"ok": 5}, "seq": 2}, "ts",
     {"ancient_ts"}),
    ({"ts": "9999-12-31T23:59:59-14:00", "metrics": {"ok": 5}, "seq": 2}, "ts",
     {"future_ts"}),
    # a refused base time leaves the records after it without a time, not at "now"
    ([{"bt": HUGE, "seq": 2}, {"n": "ok", "v": 5}], "bt", {"not_finite", "bad_ts"}),
    ([{"bv": -HUGE, "seq": 2}, {"n": "ok", "v": 5}], "bv", {"not_finite"}),
    ([{"bt": 1_700_000_000, "seq": 2, "n": "a", "v": HUGE}, {"n": "ok", "v": 5}], "v",
     {"not_finite"}),
    ([{"bt": 1_700_000_000, "seq": 2, "n": "a", "v": 1, "t": HUGE}, {"n": "ok", "v": 5}], "t",
     {"not_finite"}),
    ([{"bt": 1e308, "seq": 2, "n": "a", "v": 1, "t": 1e308}, {"n": "ok", "v": 5}], "t",
     {"bad_ts", "future_ts"}),
])
def test_overflowing_values_are_rejected_with_their_seq_counted(doc, field, reasons) -> None:
    d = _decode(doc)  # raised OverflowError before
    if field in ("bt", "bv"):  # the base is refused: nothing after it is stored
        assert not d.readings
    assert d.seqs == [2]  # handled: counts towards the ack
    assert {e.reason for e in d.rejected} == reasons
    bad = d.rejected[0]
    assert bad.field == field
    assert bad.to_problem()["detail"]  # names field, value and what is allowed
    shown = bad.to_problem()["value"]
    assert not isinstance(shown, int) or abs(shown) < 2**129  # a huge value is shortened


def test_a_huge_value_is_named_shortened_in_the_error() -> None:
    (bad,) = _decode({"ts": 1_700_000_000, "metrics": {"a": HUGE}, "seq": 2}).rejected
    assert bad.value == "100000000000000000000... (401 digits)"
    assert "metrics.a" in str(bad) and "401 digits" in str(bad) and "1.8e308" in str(bad)


def test_parse_time_of_out_of_range_values_raises_payload_error() -> None:
    for value in (HUGE, -HUGE, 10**5000, 2**64, "0001-01-01T00:00:00+14:00",
                  "9999-12-31T23:59:59-14:00"):
        with pytest.raises(PayloadError):
            parse_time(value, now_ns=NOW_NS, earliest_ns=0, max_future_s=math.inf)
    for text in ("1" + "0" * 400, "-" + "9" * 400, "1" * 5000, "1e999",
                 "0001-01-01T00:00:00+14:00"):
        with pytest.raises(PayloadError) as e:
            parse_time_text(text, field_name="start", earliest_ns=0, max_future_s=math.inf)
        assert e.value.field == "start"
        assert len(str(e.value)) < 400


def test_an_unexpected_error_in_one_record_rejects_only_that_record(monkeypatch) -> None:
    """A decoder bug costs the record it hit, with a clear reason; its seq still counts."""
    real = telemetry._check_value

    def boom(value, *a, **kw):
        if value == 13:
            raise RuntimeError("decoder bug")
        return real(value, *a, **kw)

    monkeypatch.setattr(telemetry, "_check_value", boom)
    d = _decode([{"ts": 1_700_000_000, "metrics": {"a": 13}, "seq": 1},
                 {"ts": 1_700_000_001, "metrics": {"a": 1}, "seq": 2}])
    assert d.seqs == [1, 2]
    assert [(r.metric, r.value) for r in d.readings] == [("a", 1.0)]
    (bad,) = d.rejected
    assert (bad.reason, bad.index) == ("undecodable", 0)
    assert "RuntimeError: decoder bug" in str(bad)
    d = decode(json.dumps([{"bt": 1_700_000_000, "seq": 3, "n": "a", "v": 13},
                           {"n": "b", "v": 1}]).encode(), "pump-1", now_ns=NOW_NS)
    assert d.seqs == [3] and [r.metric for r in d.readings] == ["b"]
    assert [e.reason for e in d.rejected] == ["undecodable"]


def test_metric_names_with_lone_surrogates_or_a_newline_are_rejected() -> None:
    d = decode(b'{"ts": 1700000000, "metrics": {"ok_metric": 5, "\\ud800": 1, "a\\n": 2},'
               b' "seq": 3}', "pump-1", now_ns=NOW_NS)
    assert [r.metric for r in d.readings] == ["ok_metric"]
    assert sorted(e.field for e in d.rejected) == ["metrics.a\n", "metrics.\ud800"]
    assert {e.reason for e in d.rejected} == {"bad_metric"}


def test_a_value_past_pythons_digit_limit_is_rejected_not_the_message() -> None:
    """Check a 5,000-digit integer (valid JSON, past Python's 4,300-digit int conversion
    limit) rejects its own field, with the message's other readings kept and its seq
    counted; it failed the whole message as bad JSON, so the device resent it for ever."""
    raw = (b'[{"ts": 1700000000, "metrics": {"a": ' + b"7" * 5000 + b', "b": 2}, "seq": 4},'
           b' {"ts": 1700000001, "metrics": {"a": -' + b"7" * 5000 + b'}, "seq": 5}]')
    d = decode(raw, "pump-1", now_ns=NOW_NS)
    assert d.seqs == [4, 5]
    assert [(r.metric, r.value) for r in d.readings] == [("b", 2.0)]
    assert [e.field for e in d.rejected] == ["metrics.a", "metrics.a"]
