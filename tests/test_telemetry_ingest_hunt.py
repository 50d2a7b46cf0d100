"""Decoding bugs found by the HTTP data-routes hunt: a bad first record turning a SenML pack
into compact JSON, a refused ``bn`` leaving the old base name in force, a gzip body read
only to its first member, and an unbounded list of rejections."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from edgewise.errors import PayloadError
from edgewise.telemetry import MAX_LISTED_REJECTIONS, decode

NOW = 1_800_000_000


def _decode(doc: object) -> object:
    return decode(json.dumps(doc).encode(), "pump-1", now_ns=NOW * 10**9)


@pytest.mark.parametrize("first", [None, {}, 5, "x", [], {"seq": 3}])
def test_a_bad_first_record_does_not_make_a_senml_pack_compact(first: object) -> None:
    pack = [first, {"bn": "pump-1/", "bt": NOW - 40, "n": "temp", "v": 21.6},
            {"n": "rpm", "t": 1, "v": 1452}]
    d = _decode(pack)
    assert [(r.metric, r.value) for r in d.readings] == [("temp", 21.6), ("rpm", 1452.0)]
    # only the bad record is rejected, as a SenML record, never 'unknown_field bn'
    assert all(e.index == 0 for e in d.rejected), [str(e) for e in d.rejected]
    assert {e.field for e in d.rejected} <= {"record", "seq"}


def test_many_bad_records_before_the_first_senml_one() -> None:
    d = _decode([None] * 5 + [{"bt": NOW - 5, "n": "temp", "v": 1}])
    assert [r.value for r in d.readings] == [1.0]
    assert [(e.index, e.reason) for e in d.rejected] == [(i, "bad_shape") for i in range(5)]


def test_a_compact_batch_with_a_bad_first_record_is_still_compact() -> None:
    d = _decode([None, {"ts": NOW - 5, "metrics": {"a": 1}}])
    assert [r.value for r in d.readings] == [1.0]
    assert [(e.index, e.reason) for e in d.rejected] == [(0, "bad_shape")]


@pytest.mark.parametrize("bad_bn", [b'"bn": 2', b'"bn": "x_", "bn": "y_"'])
def test_a_refused_bn_rejects_the_records_after_it(bad_bn: bytes) -> None:
    raw = (b'[{"bn": "line1_", "bt": %d, "n": "temp", "v": 20},'
           b' {%s, "n": "temp", "v": 80}, {"n": "rpm", "v": 3000},'
           b' {"bn": "line2_", "n": "rpm", "v": 5}]' % (NOW - 10, bad_bn))
    d = decode(raw, "pump-1", now_ns=NOW * 10**9)
    # 3000 is not stored as line1_rpm: its name is unknown; a valid bn applies again
    assert [(r.metric, r.value) for r in d.readings] == [("line1_temp", 20.0),
                                                         ("line2_rpm", 5.0)]
    assert [(e.index, e.field) for e in d.rejected][-1] == (2, "n")
    assert d.rejected[-1].reason == "bad_metric" and "'bn' was refused" in d.rejected[-1].allowed


def _rec(seq: int) -> bytes:
    return b'{"ts": %d, "seq": %d, "metrics": {"a": %d}}' % (NOW - 10 + seq, seq, seq)


def test_a_gzip_body_of_two_members_is_read_whole() -> None:
    arr = b"[" + _rec(1) + b"," + _rec(2) + b"]"
    d = decode(gzip.compress(arr[:30]) + gzip.compress(arr[30:]), "p", now_ns=NOW * 10**9)
    assert [r.value for r in d.readings] == [1.0, 2.0]


def test_a_second_gzip_member_is_never_dropped_silently() -> None:
    # gzip(a) + gzip(b) inflates to a + b, which is not JSON: refused whole, not b dropped
    with pytest.raises(PayloadError) as e:
        decode(gzip.compress(_rec(1)) + gzip.compress(_rec(2)), "p", now_ns=NOW * 10**9)
    assert e.value.reason == "bad_json"


def test_bytes_after_the_gzip_stream_are_refused() -> None:
    with pytest.raises(PayloadError) as e:
        decode(gzip.compress(_rec(1)) + b"garbage", "p", now_ns=NOW * 10**9)
    assert (e.value.reason, e.value.field) == ("bad_encoding", "payload")
    assert "7 bytes after the gzip stream" in str(e.value.value)


def test_the_inflate_limit_holds_over_all_members() -> None:
    part = gzip.compress(b" " * 60_000)
    with pytest.raises(PayloadError) as e:
        decode(part * 4 + gzip.compress(_rec(1)), "p", max_bytes=200_000)
    assert e.value.reason == "too_large"


def test_rejections_past_the_cap_are_counted_not_listed() -> None:
    t0 = time.perf_counter()
    d = decode(b"[" + b"0," * 130_000 + b"0]", "p")
    assert time.perf_counter() - t0 < 5
    assert len(d.rejected) == MAX_LISTED_REJECTIONS
    assert [e.index for e in d.rejected] == list(range(MAX_LISTED_REJECTIONS))  # the first
    assert (d.rejected_total, d.rejected_counts()) == (130_001, {"bad_shape": 130_001})
