"""Payload validation holes found by a hunt (session 45): two regular expressions that took
quadratic time on text a client controls.

1. A payload nested too deep for the JSON parser is refused with how deep it nests
   (:func:`edgewise.telemetry._nesting_depth`), found by deleting its strings with a
   regular expression first. A string left open (a ``"`` followed by escaped quotes,
   ``\\"``, to the end) failed to match at its ``"`` and again at each escaped quote,
   each try scanning to the end: 66 KB took 27 s, a 256 KiB MQTT payload minutes, on the
   thread that commits every device's telemetry. Now an open string runs to the end of
   the text (one scan).
2. ``parse_time_text`` (HTTP query and body times, label and edge CSV cells) checked text
   for a decimal number with ``\\d+\\.?\\d*``, which splits a run of digits every way
   before it gives up: 16,000 digits and an ``x`` took 11 s. Now the fraction follows a
   dot only.
3. A record repeating a key is refused (``duplicate_key``) with every value the key was
   given, each written out whole: a key given 40,000 times made a 120 KB ``value`` in the
   dead letter (and the HTTP problem), two 100 KB strings a 200 KB one, where every other
   value shown is cut to 200 characters. Now at most four values are listed, each cut
   short, and the count says how many there were.
4. A gzipped payload is inflated member after member, and each member's rest of the input
   was copied whole (zlib's ``unused_data``): quadratic in the number of members. The
   seqs of a message refused whole (too large, or on another topic) are read from up to
   16 times the payload limit, on the thread that commits every device's telemetry: 4 MiB
   of empty gzip members (20 bytes each) took 29 s. Now each member is fed in pieces.
"""

from __future__ import annotations

import gzip
import json
import time

import pytest

from edgewise.errors import PayloadError
from edgewise.telemetry import (
    SEQ_SCAN_FACTOR,
    _inflate,
    _nesting_depth,
    decode,
    parse_time_text,
    payload_seqs,
)

NOW = 1_800_000_000 * 10**9


def test_a_deep_payload_with_a_string_left_open_is_refused_at_once() -> None:
    raw = b"[" * 2000 + b'"' + b'\\"' * 24_000  # 50 KB (the old scan: about 15 s)
    t0 = time.perf_counter()
    with pytest.raises(PayloadError) as caught:
        decode(raw, "pump-1", now_ns=NOW)
    took = time.perf_counter() - t0
    assert caught.value.reason == "bad_json"
    assert caught.value.value == "JSON nested 2000 levels deep"
    assert took < 1.5, f"refusing a 50 KB payload took {took:.1f} s"


def test_the_depth_still_skips_brackets_inside_strings() -> None:
    assert _nesting_depth(b'{"x": "[[[{", "y": [1, "]]]"]}') == 2
    assert _nesting_depth(b'{"a\\"[": [[2]], "b": "\\\\"}') == 3
    # a string left open runs to the end: its brackets are not counted
    assert _nesting_depth(b'[[{"x": "[[[[') == 3
    assert _nesting_depth(b'[["\\') == 2


def test_a_long_run_of_digits_that_is_no_number_is_refused_at_once() -> None:
    text = "1" * 12_000 + "x"  # (the old check: about 6 s)
    t0 = time.perf_counter()
    with pytest.raises(PayloadError) as caught:
        parse_time_text(text, now_ns=NOW)
    took = time.perf_counter() - t0
    assert caught.value.reason == "bad_ts"
    assert took < 1.0, f"refusing {len(text)} characters took {took:.1f} s"


@pytest.mark.parametrize(("text", "expected"), [
    ("1706702400", 1706702400 * 10**9),
    ("1706702400.", 1706702400 * 10**9),
    ("1706702400.5", 1706702400_500_000_000),
    ("+1706702400.25", 1706702400_250_000_000),
    ("1.7067024e9", 1706702400 * 10**9),
    ("1700000000.000000005", 1700000000_000_000_005),
])
def test_decimal_epoch_texts_read_as_before(text: str, expected: int) -> None:
    assert parse_time_text(text, now_ns=NOW) == expected


def test_a_lone_dot_is_still_no_number() -> None:
    with pytest.raises(PayloadError) as caught:
        parse_time_text(".", now_ns=NOW)
    assert caught.value.reason == "bad_ts"


def test_a_key_repeated_40000_times_is_refused_with_a_short_value() -> None:
    raw = b'{"ts": 1799999000, "metrics": {"a": 1' + b',"a":1' * 40_000 + b'}}'
    d = decode(raw, "pump-1", now_ns=NOW)
    [e] = d.rejected
    assert (e.reason, e.field) == ("duplicate_key", "metrics.a")
    assert e.value.startswith("40001 values: 1, 1, 1, 1, ")
    assert len(e.value) <= 300, len(e.value)
    assert len(json.dumps(e.to_problem())) <= 1000


def test_long_repeated_values_are_cut_short() -> None:
    long = "x" * 100_000
    raw = json.dumps({"ts": 1799999000, "metrics": {"a": 1}}).encode()[:-1] + (
        b', "note": "%s", "note": "%s"}' % (long.encode(), long.encode()))
    d = decode(raw, "pump-1", now_ns=NOW)
    [e] = d.rejected
    assert (e.reason, e.field) == ("duplicate_key", "note")
    assert e.value.startswith("2 values: 'xxx")
    assert len(e.value) <= 300, len(e.value)


def test_a_few_repeated_values_are_listed_as_before() -> None:
    d = decode(b'{"ts": 1799999000, "metrics": {"t": 1.5, "t": 2, "t": true}}', "pump-1",
               now_ns=NOW)
    assert [e.value for e in d.rejected] == ["3 values: 1.5, 2, True"]


EMPTY_MEMBER = gzip.compress(b"", mtime=0)  # 20 bytes
LIMIT = 256 * 1024


def test_the_seqs_of_4_mib_of_gzip_members_are_read_at_once() -> None:
    raw = EMPTY_MEMBER * (SEQ_SCAN_FACTOR * LIMIT // 20 - 10) + gzip.compress(b'{"seq": 3}')
    t0 = time.perf_counter()
    seqs = payload_seqs(raw, SEQ_SCAN_FACTOR * LIMIT)
    took = time.perf_counter() - t0
    assert seqs == [3]
    assert took < 5, f"reading the seqs of {len(raw)} bytes took {took:.1f} s"


@pytest.mark.parametrize("body", [b"", b"[1,", b"x" * 70_000, bytes(range(256)) * 900])
def test_members_inflate_as_before(body: bytes) -> None:
    one = gzip.compress(body)
    assert _inflate(one, "d", 10**6) == body
    assert _inflate(one + EMPTY_MEMBER + one, "d", 10**6) == body * 2
    assert _inflate(EMPTY_MEMBER * 500 + one, "d", 10**6) == body


def test_what_follows_the_members_is_refused_as_before() -> None:
    one = gzip.compress(b'{"seq": 1}')
    with pytest.raises(PayloadError) as caught:
        _inflate(one + b"trailing", "d", 1000)
    assert (caught.value.reason, caught.value.value) == (
        "bad_encoding", "8 bytes after the gzip stream: " + b"trailing".hex())
    with pytest.raises(PayloadError) as caught:
        _inflate(one + one[:-3], "d", 1000)  # a member cut short
    assert caught.value.reason == "bad_json"
    assert caught.value.value == one[:-3][:40].hex()
    with pytest.raises(PayloadError) as caught:
        _inflate(gzip.compress(b"x" * 5000) + one, "d", 1000)
    assert caught.value.reason == "too_large"
    with pytest.raises(PayloadError) as caught:  # past the limit in the second member
        _inflate(gzip.compress(b"x" * 600) + gzip.compress(b"y" * 600), "d", 1000)
    assert caught.value.reason == "too_large"
    assert len(_inflate(gzip.compress(b"x" * 500) * 2, "d", 1000)) == 1000


# SenML units as compact's: a unit that is not text rejects its reading ------------------

def test_a_senml_unit_that_is_not_text_rejects_the_reading_as_compact_does() -> None:
    """Check a SenML ``u`` that is no text rejects its reading (it was dropped and the
    reading stored without a unit, where compact's ``units`` rejects it), ``null`` is no
    unit, and a refused ``bu`` rejects the readings that would take it, not those with a
    ``u`` of their own."""
    from edgewise.telemetry import decode

    d = decode(b'[{"bn": "a", "bt": 1700000000}, {"n": "x", "v": 1, "u": 7}, '
               b'{"n": "y", "v": 2, "u": null}, {"n": "z", "v": 3, "u": "V"}]', "dev")
    assert [(r.metric, r.unit) for r in d.readings] == [("ay", None), ("az", "V")]
    assert [(e.field, e.reason, e.value) for e in d.rejected] == [("u", "bad_type", 7)]
    d = decode(b'[{"bn": "a", "bt": 1700000000, "bu": ["Cel"]}, {"n": "x", "v": 1}, '
               b'{"n": "y", "v": 2, "u": "Cel"}]', "dev")
    assert [(r.metric, r.unit) for r in d.readings] == [("ay", "Cel")]
    assert [(e.field, e.reason) for e in d.rejected] == [("bu", "bad_type"), ("u", "bad_type")]
    compact = decode(b'{"ts": 1700000000, "metrics": {"x": 1}, "units": {"x": 7}}', "dev")
    assert not compact.readings and compact.rejected[0].reason == "bad_type"
