"""Tests for the telemetry codecs and validation: the one door to trusted readings."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.errors import PayloadError
from edgewise.telemetry import Reading, decode, encode_compact, encode_senml, parse_time

NOW = 1_800_000_000 * 10**9


def test_compact_single_and_batch() -> None:
    """Check that compact objects and arrays decode to one reading per metric."""
    one = decode(b'{"ts": "2026-01-01T00:00:00Z", "metrics": {"a": 1, "b": 2.5}, "seq": 4}',
                 "d1", now_ns=NOW)
    assert [(r.metric, r.value, r.seq) for r in one.readings] == [("a", 1.0, 4), ("b", 2.5, 4)]
    assert one.seqs == [4]
    batch = decode(json.dumps([{"ts": 1.7e9, "metrics": {"a": 1}, "seq": i} for i in (1, 2)]),
                   "d1", now_ns=NOW)
    assert len(batch.readings) == 2 and batch.seqs == [1, 2]


def test_senml_base_fields_and_relative_time() -> None:
    """Check that SenML base name/time/unit/value apply and small times are relative to now."""
    pack = [
        {"bn": "d1/", "bt": 1.7e9, "bu": "Cel", "n": "temp", "v": 20.0},
        {"n": "temp", "t": 10, "v": 21.0},
        {"n": "rpm", "u": "1/min", "v": 1450},
    ]
    d = decode(json.dumps(pack), "d1", now_ns=NOW)
    assert [(r.metric, r.ts_ns, r.value, r.unit) for r in d.readings] == [
        ("temp", 1_700_000_000 * 10**9, 20.0, "Cel"),
        ("temp", 1_700_000_010 * 10**9, 21.0, "Cel"),
        ("rpm", 1_700_000_000 * 10**9, 1450.0, "1/min"),
    ]
    rel = decode(b'[{"n": "x", "v": 1, "t": -5}]', "d1", now_ns=NOW)
    assert rel.readings[0].ts_ns == NOW - 5 * 10**9


@pytest.mark.parametrize(
    ("payload", "reason", "field"),
    [
        ('{"ts": 1.7e9, "metrics": {"a": "x"}}', "bad_type", "metrics.a"),
        ('{"ts": 1.7e9, "metrics": {"a": NaN}}', "not_finite", "metrics.a"),
        ('{"ts": 1.7e9, "metrics": {"a": Infinity}}', "not_finite", "metrics.a"),
        ('{"ts": 1.7e9, "metrics": {"a": {"b": 1}}}', "bad_type", "metrics.a"),
        ('{"ts": 1.7e9, "metrics": {"a": "true"}}', "bad_type", "metrics.a"),
        ('{"ts": "yesterday", "metrics": {"a": 1}}', "bad_ts", "ts"),
        ('{"ts": "2024-01-01T00:00:00", "metrics": {"a": 1}}', "bad_ts", "ts"),
        ('{"ts": 4e9, "metrics": {"a": 1}}', "future_ts", "ts"),
        ('{"ts": 5, "metrics": {"a": 1}}', "ancient_ts", "ts"),
        ('{"metrics": {"a": 1}}', "missing_field", "ts"),
        ('{"ts": 1.7e9, "metrics": []}', "bad_shape", "metrics"),
        ('{"ts": 1.7e9, "metrics": {"a": 1}, "seq": -1}', "bad_seq", "seq"),
        ('{"ts": 1.7e9, "metrics": {"a b": 1}}', "bad_metric", "metrics.a b"),
        ('{"ts": 1.7e9, "metrics": {"a": 1}, "extra": 1}', "unknown_field", "extra"),
        ('[{"n": "a", "vs": "on"}]', "unsupported_value", "vs"),
        ('[{"n": "a", "vd": "AQ"}]', "unsupported_value", "vd"),
        ('[{"n": "a", "vb": 1}]', "bad_type", "vb"),
        ('[{"n": "a", "vb": "true"}]', "bad_type", "vb"),
        ('[{"n": "a", "v": true}]', "bad_type", "v"),
        ('[{"n": "a", "v": 1, "vb": true}]', "bad_shape", "vb"),
        ('[{"n": "a", "t": 1.7e9}]', "missing_field", "v"),
        ('[{"bv": 1e308, "n": "a", "v": 1e308}]', "not_finite", "v"),
        ('[{"bt": 1e308, "n": "a", "v": 1, "t": 1e308}]', "bad_ts", "t"),
        ('[{"n": "a", "v": 1, "x_": 1}]', "unknown_field", "x_"),
    ],
)
def test_bad_records_are_rejected_with_field_and_reason(payload: str, reason: str,
                                                        field: str) -> None:
    """Check that each bad record names its field and reason, and nothing is kept from it."""
    d = decode(payload, "d1", now_ns=NOW)
    assert d.readings == []
    assert [(e.reason, e.field) for e in d.rejected] == [(reason, field)]
    assert "d1" in str(d.rejected[0])


def test_booleans_are_readings_of_one_and_zero() -> None:
    """Check a boolean metric (compact true/false, SenML vb) is a reading of 1.0 / 0.0; the
    SenML base value adds to numbers only (RFC 8428), so it leaves a vb alone."""
    d = decode(b'{"ts": 1.7e9, "metrics": {"running": true, "door": false, "rpm": 1450}}',
               "d1", now_ns=NOW)
    assert [(r.metric, r.value) for r in d.readings] == [
        ("running", 1.0), ("door", 0.0), ("rpm", 1450.0)]
    assert all(type(r.value) is float for r in d.readings)
    pack = [{"bn": "d1/", "bt": 1.7e9, "bv": 10.0, "n": "door", "vb": True},
            {"n": "door", "t": 1, "vb": False}, {"n": "temp", "v": 1.5}]
    d = decode(json.dumps(pack), "d1", now_ns=NOW)
    assert [(r.metric, r.value) for r in d.readings] == [
        ("door", 1.0), ("door", 0.0), ("temp", 11.5)]
    assert d.rejected == []


def test_one_bad_record_keeps_the_good_ones() -> None:
    """Check that a batch loses only what is wrong and says which index was rejected."""
    payload = json.dumps([
        {"ts": 1.7e9, "metrics": {"a": 1.0}, "seq": 1},
        {"ts": "nope", "metrics": {"a": 2.0}, "seq": 2},
        {"ts": 1.7e9 + 1, "metrics": {"a": 3.0, "b": "bad"}, "seq": 3},
    ])
    d = decode(payload, "d1", now_ns=NOW)
    assert [r.value for r in d.readings] == [1.0, 3.0]
    assert [(e.index, e.field) for e in d.rejected] == [(1, "ts"), (2, "metrics.b")]
    assert d.seqs == [1, 2, 3]  # the rejected message is handled too: its seq is acked


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"x" * 300_000, "too_large"), (b"{not json", "bad_json"), (b"42", "bad_shape"),
     (b"\xff\xfe", "bad_json")],
)
def test_whole_payload_errors_raise(payload: bytes, reason: str) -> None:
    """Check that unusable payloads raise PayloadError with a reason."""
    with pytest.raises(PayloadError, match="Got") as info:
        decode(payload, "d1", now_ns=NOW)
    assert info.value.reason == reason


def test_parse_time_offsets_are_utc() -> None:
    """Check that RFC 3339 offsets are converted to UTC."""
    assert parse_time("2024-01-31T14:00:00+02:00", now_ns=NOW) == parse_time(
        "2024-01-31T12:00:00Z", now_ns=NOW)


@pytest.mark.parametrize("ts", [
    1_706_702_400.25, 1_706_702_400_250, 1_706_702_400_250.0, 1_706_702_400_250_000,
    1_706_702_400_250_000_000, "2024-01-31T12:00:00.25Z",
])
def test_epoch_times_in_s_ms_us_and_ns_are_the_same_time(ts: object) -> None:
    """Check a device sending Date.now() milliseconds (or us, ns) is read right, not
    rejected as 'in the future' nor stored 1000x off."""
    assert parse_time(ts, now_ns=NOW) == 1_706_702_400_250_000_000
    d = decode(json.dumps({"ts": ts, "metrics": {"a": 1.0}}), "d1", now_ns=NOW)
    assert [r.ts_ns for r in d.readings] == [1_706_702_400_250_000_000]


def test_a_future_time_in_milliseconds_is_still_refused() -> None:
    """Check the unit rule does not open a door: an hour ahead in ms is future_ts."""
    with pytest.raises(PayloadError) as info:
        parse_time(NOW // 10**6 + 3_600_000, now_ns=NOW)
    assert info.value.reason == "future_ts"


readings_st = st.lists(
    st.builds(
        Reading,
        device_id=st.just("dev"),
        metric=st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
        ts_ns=st.integers(1_000_000_000, 1_700_000_000).map(lambda s: s * 10**9),
        value=st.floats(allow_nan=False, allow_infinity=False, width=64),
        seq=st.none(),
        unit=st.none(),
    ),
    max_size=20,
).map(lambda rs: list({(r.metric, r.ts_ns): r for r in rs}.values()))


@given(readings_st)
@settings(max_examples=100, deadline=None)
def test_compact_round_trip(readings: list[Reading]) -> None:
    """Check that decode(encode_compact(r)) gives back the same readings."""
    got = decode(encode_compact(readings), "dev", now_ns=NOW).readings
    key = lambda r: (r.metric, r.ts_ns)  # noqa: E731
    assert sorted(got, key=key) == sorted(readings, key=key)


@given(readings_st)
@settings(max_examples=100, deadline=None)
def test_senml_round_trip(readings: list[Reading]) -> None:
    """Check that decode(encode_senml(r)) gives back the same readings (to the microsecond)."""
    got = decode(encode_senml(readings), "dev", now_ns=NOW).readings
    assert len(got) == len(readings)
    for a, b in zip(got, readings, strict=True):
        assert (a.metric, a.value) == (b.metric, b.value)
        assert abs(a.ts_ns - b.ts_ns) <= 1000


@given(st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
    max_leaves=20,
))
@settings(max_examples=300, deadline=None)
def test_arbitrary_json_never_crashes(doc: object) -> None:
    """Check that any JSON gives readings or PayloadErrors, never another exception."""
    try:
        raw = json.dumps(doc)
    except ValueError:
        return
    try:
        d = decode(raw, "dev", now_ns=NOW)
    except PayloadError:
        return
    assert all(math.isfinite(r.value) for r in d.readings)


def test_a_gzipped_payload_is_inflated_within_the_limit() -> None:
    """Check a gzipped payload (MQTT has no header for it: the magic bytes tell) decodes
    as the plain one, a gzip bomb is too_large and a truncated stream is named."""
    import gzip

    plain = json.dumps([{"ts": 1.7e9 + i, "metrics": {"a": i}, "seq": i + 1} for i in range(5)])
    got = decode(gzip.compress(plain.encode()), "d1", now_ns=NOW)
    assert got.readings == decode(plain, "d1", now_ns=NOW).readings and len(got.readings) == 5
    with pytest.raises(PayloadError) as info:
        decode(gzip.compress(b" " * 2001), "d1", now_ns=NOW, max_bytes=2000)
    assert info.value.reason == "too_large"
    with pytest.raises(PayloadError, match="complete gzip stream"):
        decode(gzip.compress(plain.encode())[:-8], "d1", now_ns=NOW)


@pytest.mark.parametrize("text", [
    "1706702400.25", "1706702400250", "1706702400250000",
    "1706702400250000001", "2024-01-31T12:00:00.25Z", "2024-01-31T14:00:00.25+02:00",
    " 1.70670240025e9 ",
])
def test_every_text_reader_reads_a_time_alike(text: str) -> None:
    """Check the API's query instants, the label CSV and --failures (one helper now) read
    the same cell as the same nanosecond, integers exact."""
    from edgewise.label.store import _csv_time
    from edgewise.server.query import parse_instant
    from edgewise.telemetry import parse_time_text

    want = parse_time_text(text)
    assert want // 10**7 == 170_670_240_025
    assert parse_instant(text, "start") == _csv_time(text, "start", 2, 300.0) == want


@pytest.mark.parametrize(("text", "bounds", "reason"), [
    ("-5", {}, "ancient_ts"),
    ("0", {}, "ancient_ts"),                                    # before 2000 by default
    ("19999999999999999999", {"max_future_s": math.inf}, "future_ts"),  # past int64 ns
    ("1e400", {}, "bad_ts"),
    ("nan", {}, "bad_ts"),
    ("1706702400x", {}, "bad_ts"),
])
def test_parse_time_text_bounds(text: str, bounds: dict, reason: str) -> None:
    """Check out-of-bounds and malformed cells are refused with a reason."""
    from edgewise.telemetry import parse_time_text

    with pytest.raises(PayloadError) as info:
        parse_time_text(text, now_ns=NOW, **bounds)
    assert info.value.reason == reason
    assert parse_time_text("0", earliest_ns=0) == 0


@pytest.mark.parametrize("text", [
    "1700000000.000000005", "1700000000.0000000049", "1700000000000.000005", "-1.0000000005",
    "1700000000.123456789",
])
def test_decimal_epoch_text_reads_to_the_ns_as_a_csv_time_column_does(text: str) -> None:
    """Check a decimal epoch cell (as ``readings.csv?time_format=epoch_s`` writes it) is
    the same nanosecond in a query instant, a label CSV and a CSV's time column: read as a
    float it lost what lies past the microsecond, so ``from=`` a downloaded time missed its
    own reading."""
    import pandas as pd

    from edgewise.label.store import _csv_time
    from edgewise.server.query import parse_instant
    from edgewise.tables import time_ns
    from edgewise.telemetry import parse_time_text

    column = int(time_ns(pd.Series([text, text], name="time"))[0])
    assert parse_time_text(text, earliest_ns=-10**10) == column
    if not text.startswith("-"):  # the API and label files take no time before 1970
        assert parse_instant(text, "start") == _csv_time(text, "start", 2, 300.0) == column


def test_decimal_epoch_text_refusals_show_the_text_as_written() -> None:
    """Check a refused decimal cell is shown as written, not as a Decimal."""
    from edgewise.telemetry import parse_time_text

    with pytest.raises(PayloadError) as info:
        parse_time_text("99999999999999999999.5", now_ns=NOW)
    assert info.value.reason == "future_ts" and info.value.value == "99999999999999999999.5"
    with pytest.raises(PayloadError) as info:
        parse_time_text("1e400", now_ns=NOW)
    assert info.value.value == "1e400"
