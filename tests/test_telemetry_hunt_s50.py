"""Hunt (ht): a SenML record's time refused as out of range is told as the device sent it.

It was refused by the time it resolved to: field 't' (even for a record that gave none,
its base time 'bt' out of range) with a nanosecond number the device never sent
("Got 1869860800000000000 instead" for ``{"bt": 1869860800, ...}``)."""

from __future__ import annotations

import pytest

from edgewise.telemetry import decode

NOW = 1_800_000_000 * 10**9


@pytest.mark.parametrize(("raw", "field", "value", "reason"), [
    # a base time too far ahead, no t: the pack's bt, as sent (s, ms, a float)
    (b'[{"bt": 1869860800, "n": "a", "v": 1}]', "bt", 1869860800, "future_ts"),
    (b'[{"bt": 1869860800000, "n": "a", "v": 1}]', "bt", 1869860800000, "future_ts"),
    (b'[{"bt": 1869860800.5, "n": "a", "v": 1}]', "bt", 1869860800.5, "future_ts"),
    # a valid bt plus a t that puts the record too far ahead: t as sent
    (b'[{"bt": 1769860800000, "n": "a", "v": 1, "t": 40000000}]', "t", 40000000,
     "future_ts"),
    (b'[{"bt": 1769860800, "n": "a", "v": 1, "t": 1e300}]', "t", 1e300, "future_ts"),
    # a relative t (below 2**28 s: from now) too far ahead, and an epoch t too far back
    (b'[{"n": "a", "v": 1, "t": 268435455}]', "t", 268435455, "future_ts"),
    (b'[{"n": "a", "v": 1, "t": 268435456}]', "t", 268435456, "ancient_ts"),
])
def test_senml_time_out_of_range_names_the_field_and_value_sent(
        raw: bytes, field: str, value: float, reason: str) -> None:
    d = decode(raw, "pump-1", now_ns=NOW)
    assert d.readings == []
    (e,) = d.rejected
    assert (e.index, e.field, e.value, e.reason) == (0, field, value, reason)
    assert repr(value) in str(e)


def test_senml_time_refusal_says_what_the_time_was_made_of() -> None:
    d = decode(b'[{"bt": 1769860800, "n": "a", "v": 1},'
               b' {"n": "b", "v": 2, "t": 40000000}, {"n": "c", "v": 3}]', "pump-1",
               now_ns=NOW)
    assert [r.metric for r in d.readings] == ["a", "c"]
    (e,) = d.rejected
    assert (e.index, e.field, e.value) == (1, "t", 40000000)
    assert "bt=1769860800 plus t seconds" in str(e)
    assert "no more than 300 s in the future" in str(e)


@pytest.mark.parametrize("raw", [
    b'{"t": 1700000000, "temp": 21.5, "seq": 4}',  # a compact record mistyped ('t')
    b'[{"bt": 1700000000, "temp": 21.5, "rpm": 3, "seq": 4}]',
    b'[{"bn": "pump-1/", "bt": 1700000000, "seq": 4}, {"bu": "Cel"}]',
])
def test_a_senml_pack_of_base_fields_only_is_refused_not_dropped_unsaid(raw: bytes) -> None:
    """A pack whose every record gives base fields only stored nothing and said nothing,
    while its seq was acknowledged: the data was lost unseen. It is refused (the seq
    still counts, as for any refused message)."""
    d = decode(raw, "pump-1", now_ns=NOW)
    assert d.readings == []
    (e,) = d.rejected
    assert (e.field, e.reason) == ("v", "missing_field")
    assert "'bt'" in e.value or "'t'" in e.value
    assert "'v'" in str(e) and '"metrics"' in str(e)
    assert d.seqs == [4]


def test_base_records_beside_a_value_stay_silent() -> None:
    d = decode(b'[{"bn": "pump-1/", "bt": 1700000000}, {"n": "a", "v": 1}, {"bu": "K"}]',
               "pump-1", now_ns=NOW)
    assert [(r.metric, r.value) for r in d.readings] == [("a", 1.0)]
    assert d.rejected == []
    d = decode(b'[{"bt": 1700000000}, {"n": "a", "v": "x"}]', "pump-1", now_ns=NOW)
    assert [(e.field, e.reason) for e in d.rejected] == [("v", "bad_type")]


def test_encoders_keep_the_nanoseconds_decode_reads() -> None:
    """A reading time past the microsecond was written as a float of seconds, and came
    back from decode moved (1700000000123456789 as 1700000000123457000): a different
    reading time, stored beside the original as a new reading."""
    from edgewise.telemetry import Reading, encode_compact, encode_senml

    readings = [Reading("p", "a", 1_700_000_000_123_456_789, 1.0, 3),
                Reading("p", "b", 1_700_000_000_123_457_789, 2.0, 3),
                Reading("p", "c", 1_700_000_005 * 10**9, 3.0, 3)]
    for encode in (encode_compact, encode_senml):
        d = decode(encode(readings), "p", now_ns=NOW)
        assert d.rejected == []
        assert [(r.metric, r.ts_ns) for r in d.readings] == [
            (r.metric, r.ts_ns) for r in readings], encode.__name__


@pytest.mark.parametrize(("doc", "kept"), [
    (b'{"ts": 1700000000, "metrics": {"%s": 1, "ok": 2}}', ["ok"]),  # a name too long
    (b'{"ts": 1700000000, "metrics": {"ok": 2}, "%s": 1}', []),  # an unknown field
    (b'[{"bt": 1700000000, "n": "%s", "v": 1}, {"n": "ok", "v": 2}]', ["ok"]),
])
def test_a_huge_name_is_shown_shortened_in_its_rejection(doc: bytes, kept: list[str]) -> None:
    """A 200,000-character key was shown whole in the rejection's field and value (and the
    field again in its detail): a 600 KB problem (dead letter, 422 body) for a 200 KB
    message. Its first characters and its length name it."""
    import json

    d = decode(doc % (b"x" * 200_000), "pump-1", now_ns=NOW)
    assert [r.metric for r in d.readings] == kept
    (e,) = d.rejected
    problem = json.dumps(e.to_problem())
    assert len(problem) < 2000, len(problem)
    assert "(200000 characters)" in problem
