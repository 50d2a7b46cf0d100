"""Telemetry decoding hunt (session 36).

* In a batch whose first record is SenML, compact records (``ts``/``metrics``/``seq``)
  were skipped as pure base records, with nothing said, while their seqs were
  acknowledged; a SenML record with ``ts`` for ``t`` was stamped at its arrival.
* A UTF-16 or UTF-32 body was parsed (``json.loads`` of bytes detects them), and the
  duplicate-key check, which counts the raw body's ``:`` bytes, let a repeated key pass.
* ``"ts": "1706702400"`` (an epoch quoted) was told only of RFC 3339.
"""

from __future__ import annotations

import time

import pytest

from edgewise.errors import PayloadError
from edgewise.telemetry import decode

NOW_NS = 1_800_000_000 * 10**9


def test_compact_records_in_a_senml_pack_are_rejected_one_by_one() -> None:
    """Check each compact record after a SenML one is a rejection naming 'metrics' with
    its index (its seq still counted), not skipped unseen."""
    now = NOW_NS // 10**9
    d = decode(f'[{{"n": "temp", "v": 21.5, "seq": 1}}, '
               f'{{"ts": {now}, "metrics": {{"rpm": 1450, "temp": 30.0}}, "seq": 2}}, '
               f'{{"ts": {now + 1}, "metrics": {{"rpm": 1460}}, "seq": 3}}]', "pump-1",
               now_ns=NOW_NS)
    assert [(r.metric, r.value) for r in d.readings] == [("temp", 21.5)]
    assert [(e.reason, e.field, e.index) for e in d.rejected] == [
        ("unknown_field", "metrics", 1), ("unknown_field", "metrics", 2)]
    assert d.seqs == [1, 2, 3]


def test_a_senml_record_with_ts_for_t_is_refused_naming_ts() -> None:
    """Check a SenML record timed with compact's 'ts' is refused naming 'ts', not stored
    at its arrival time; the pack's other records are kept."""
    d = decode(b'[{"n": "b", "v": 2}, {"n": "a", "v": 1, "ts": 1706702400}]', "pump-1",
               now_ns=NOW_NS)
    assert [(r.metric, r.ts_ns) for r in d.readings] == [("b", NOW_NS)]
    ((e,),) = [d.rejected]
    assert (e.reason, e.field, e.index, e.value) == ("unknown_field", "ts", 1, 1706702400)
    assert "'t'" in e.allowed


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "utf-32-be"])
def test_a_body_not_in_utf8_is_refused_naming_its_encoding(encoding: str) -> None:
    """Check a UTF-16/32 body is refused whole as bad_json naming the encoding: parsed, its
    repeated key passed the duplicate-key check and the second value was stored."""
    text = '{"ts": "2027-01-15T08\\u003a00:00Z", "metrics": {"t": 1.0, "t": 99.0}, "seq": 1}'
    with pytest.raises(PayloadError) as err:
        decode(text.encode(encoding), "pump-1", now_ns=NOW_NS)
    assert (err.value.reason, err.value.field) == ("bad_json", "payload")
    assert encoding.upper().split("-")[0] in str(err.value.value), err.value.value
    assert "UTF-8" in err.value.allowed


def test_utf8_with_or_without_a_bom_is_still_read() -> None:
    """Check a UTF-8 body (also with a byte order mark) still decodes."""
    body = '{"ts": 1706702400, "metrics": {"t": 1.5}, "units": {"t": "°C"}}'.encode()
    for raw in (body, b"\xef\xbb\xbf" + body):
        d = decode(raw, "pump-1", now_ns=NOW_NS)
        assert [(r.metric, r.value, r.unit) for r in d.readings] == [("t", 1.5, "°C")]


@pytest.mark.parametrize("ts", ["1706702400", "1706702400000", "1.7064e9"])
def test_an_epoch_sent_as_a_string_says_to_send_a_number(ts: str) -> None:
    """Check a quoted epoch is refused saying an epoch goes as an unquoted JSON number."""
    d = decode(f'{{"ts": "{ts}", "metrics": {{"a": 1}}}}', "pump-1", now_ns=time.time_ns())
    ((e,),) = [d.rejected]
    assert (e.reason, e.field, e.value) == ("bad_ts", "ts", ts)
    assert "unquoted JSON number (s, ms, us or ns)" in e.allowed, e.allowed
    assert "RFC 3339" in e.allowed
