"""Repeated JSON keys in telemetry (API bug hunt 2, bug 1): a record whose ``metrics`` (or
any of its objects) repeats a key is rejected, naming the key, instead of keeping the last
value silently. Decoding is shared by HTTP and MQTT (both call the pipeline)."""

from __future__ import annotations

import json

import pytest

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from edgewise.telemetry import decode

NOW_NS = 1_800_000_000 * 10**9
TS = 1_769_860_814


def _rejected(payload: bytes) -> list[tuple[int | None, str, str, object]]:
    d = decode(payload, "pump-1", now_ns=NOW_NS)
    return [(e.index, e.field, e.reason, e.value) for e in d.rejected]


def test_a_repeated_metric_rejects_its_record_and_names_the_key() -> None:
    """Check {"t": 1.0, "t": 2.0} is no longer stored as 2.0 with nothing rejected."""
    d = decode(b'{"ts":%d,"metrics":{"t":1.0,"t":2.0},"seq":14}' % TS, "pump-1", now_ns=NOW_NS)
    assert d.readings == []
    (err,) = d.rejected
    assert (err.field, err.reason, err.value) == ("metrics.t", "duplicate_key",
                                                  "2 values: 1.0, 2.0")
    assert "once per object" in str(err) and "'metrics.t'" in str(err)
    assert d.seqs == [14]  # handled: its seq still counts towards the ack


def test_the_other_records_of_the_message_are_kept() -> None:
    body = json.dumps([{"ts": TS, "metrics": {"t": 1.0}, "seq": 1},
                       {"ts": TS + 1, "metrics": {"t": 3.0}, "seq": 3}]).encode()
    body = body.replace(b'{"t": 1.0}', b'{"t": 1.0, "u": 5, "t": 2.0}')
    d = decode(body, "pump-1", now_ns=NOW_NS)
    assert [(r.metric, r.value) for r in d.readings] == [("t", 3.0)]
    assert [(e.index, e.field, e.reason) for e in d.rejected] == [(0, "metrics.t",
                                                                    "duplicate_key")]
    assert d.seqs == [1, 3]


@pytest.mark.parametrize(("payload", "field"), [
    # a colon in a string must not hide the repeat: an RFC 3339 time, a SenML urn name
    (b'{"ts":"2026-01-31T12:00:14Z","metrics":{"t":1,"t":2}}', "metrics.t"),
    (rb'{"ts":%d,"metrics":{"t":1,"t":2,"x\u003a":3}}' % TS, "metrics.t"),  # an escaped colon
    (rb'{"ts":%d,"metrics":{"t":1,"t":2,"a:b":3}}' % TS, "metrics.t"),
    (b'{"ts":%d,"ts":%d,"metrics":{"t":1}}' % (TS, TS + 1), "ts"),
    (b'{"ts":%d,"metrics":{"t":1},"units":{"t":"C","t":"F"}}' % TS, "units.t"),
    (b'[{"bn":"urn:dev:mac:0024be:","bt":%d,"n":"t","v":1,"v":2}]' % TS, "v"),
])
def test_a_repeated_key_is_found_wherever_it_is(payload: bytes, field: str) -> None:
    assert [(f, r) for _, f, r, _ in _rejected(payload)] == [(field, "duplicate_key")]


@pytest.mark.parametrize("payload", [
    b'{"ts":"2026-01-31T12:00:14Z","metrics":{"a":1,"b":2},"seq":1}',
    b'{"ts":%d,"metrics":{"modbus:40001":1,"b":2},"units":{"b":"C"}}' % TS,
    b'[{"bn":"urn:dev:mac:0024be:","bt":%d,"n":"t","v":1},{"n":"u","v":2}]' % TS,
    rb'{"ts":%d,"metrics":{"t\u003a1":1}}' % TS,
])
def test_colons_in_strings_are_not_taken_for_repeated_keys(payload: bytes) -> None:
    assert _rejected(payload) == []
    assert decode(payload, "pump-1", now_ns=NOW_NS).readings


def test_a_repeated_base_time_leaves_the_pack_without_time() -> None:
    """Check a SenML pack whose bt repeats does not date its later records by either bt."""
    got = _rejected(b'[{"bt":%d,"bt":%d,"n":"a","v":1},{"n":"b","v":2}]' % (TS, TS + 9))
    assert [(i, f, r) for i, f, r, _ in got] == [(0, "bt", "duplicate_key"), (1, "t", "bad_ts")]


@pytest.mark.parametrize("via", ["http", "mqtt"])
def test_the_pipeline_rejects_and_counts_it_for_both_transports(tmp_path, via: str) -> None:
    store = open_store(f"duckdb:///{tmp_path / 'p.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0)
    try:
        body = (b'[{"ts":1700000000,"metrics":{"t":1.0,"t":2.0},"seq":1},'
                b'{"ts":1700000001,"metrics":{"t":3.0},"seq":2}]')
        r = p.ingest("pump-1", body, via=via)
        assert (r.accepted, r.ack_seq) == (1, 2)
        assert [(e.field, e.reason) for e in r.rejected] == [("metrics.t", "duplicate_key")]
        assert p.metrics.get("edgewise_readings_rejected_total", reason="duplicate_key") == 1
        assert [v for *_, v in store.query("pump-1", "t")] == [3.0]
    finally:
        p.close()
        store.close()


def test_a_text_time_that_is_no_time_names_epoch_digits_too() -> None:
    """A text cell (an agent's CSV, a query parameter) may be epoch digits as well as RFC
    3339: the refusal says both (it named RFC 3339 only)."""
    from edgewise.errors import PayloadError
    from edgewise.telemetry import parse_time_text

    with pytest.raises(PayloadError) as err:
        parse_time_text("not-a-time")
    assert "RFC 3339" in err.value.allowed and "epoch time in s, ms, us or ns" in \
        err.value.allowed and err.value.reason == "bad_ts"
