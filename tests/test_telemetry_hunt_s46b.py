"""Telemetry ingest hunt s46b: time text beyond RFC 3339, and a repeated ``seq`` key.

1. ``parse_time`` handed every text to ``datetime.fromisoformat``, which reads more than
   the ISO 8601 forms the README names, and misreads some: ``2026-01-31T12.5Z`` (ISO 8601:
   12:30) was stored as 12:00:00.5, ``12:30.5`` (12:30:30) as 12:30:00.5; any character
   stood for the ``T`` (``2026-01-31X12:00:00Z``), and an empty fraction (``12:00:00.Z``)
   passed. They are refused now, naming the field, the value and the RFC 3339 form; 24:00
   (refused before with no word why) says to write 00:00:00 of the next day.
2. A record giving ``seq`` twice (``{"seq": 1, "seq": 2, ...}``) was refused
   (``duplicate_key``, naming both values) but counted under the last one only: the seq
   before it became a gap (a false ``seq_gap``), the ack stayed below the refused message
   and the device resent it for ever. The record is now refused under every seq it gave, so
   the ack covers it, as for any refused message.
"""

from __future__ import annotations

import pytest

from edgewise.config import Settings
from edgewise.errors import PayloadError
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from edgewise.telemetry import decode, parse_time, parse_time_text, payload_seqs

NOW = 1_800_000_000 * 10**9
NOON = 1_769_860_800 * 10**9  # 2026-01-31T12:00:00Z


@pytest.mark.parametrize(("text", "meant"), [
    ("2026-01-31T12.5Z", "2026-01-31T12:30:00Z"),  # fraction of an hour: 12:30
    ("2026-01-31T12,5Z", "2026-01-31T12:30:00Z"),
    ("2026-01-31T12:30.5Z", "2026-01-31T12:30:30Z"),  # fraction of a minute: 12:30:30
    ("2026-01-31T1230.5Z", "2026-01-31T12:30:30Z"),
])
def test_a_fraction_of_an_hour_or_minute_is_refused_not_misread(text: str, meant: str) -> None:
    """Check ``12.5`` is no longer stored as 12:00:00.5 (ISO 8601 means 12:30), and the
    time written with its seconds is read as meant."""
    with pytest.raises(PayloadError) as err:
        parse_time(text, now_ns=NOW)
    e = err.value
    assert (e.field, e.value, e.reason) == ("ts", text, "bad_ts")
    assert "fraction on the seconds only" in e.allowed and "RFC 3339" in e.allowed
    assert parse_time(meant, now_ns=NOW) == parse_time_text(meant, now_ns=NOW)
    assert parse_time(meant, now_ns=NOW) > NOON  # 12:30 or later, never 12:00:00.5


def test_a_misread_time_rejects_its_record_over_the_wire() -> None:
    d = decode(b'[{"ts": "2026-01-31T12.5Z", "metrics": {"t": 1}, "seq": 1},'
               b' {"ts": "2026-01-31T12:30:00Z", "metrics": {"t": 2}, "seq": 2}]',
               "pump-1", now_ns=NOW)
    assert [(r.ts_ns, r.value) for r in d.readings] == [(NOON + 1800 * 10**9, 2.0)]
    assert [(e.index, e.field, e.value, e.reason) for e in d.rejected] == [
        (0, "ts", "2026-01-31T12.5Z", "bad_ts")]
    assert d.seqs == [1, 2]


@pytest.mark.parametrize("text", [
    "2026-01-31X12:00:00Z",  # any character was taken for the T
    "2026-01-31_12:00:00Z",
    "2026-01-31/12:00:00Z",
    "2026-01-31T12:00:00.Z",  # a decimal point with no digit
    "2026-01-31T12:00:00,Z",
])
def test_text_that_is_no_iso_8601_form_is_refused(text: str) -> None:
    with pytest.raises(PayloadError) as err:
        parse_time(text, now_ns=NOW)
    assert (err.value.field, err.value.value, err.value.reason) == ("ts", text, "bad_ts")
    assert "'2024-01-31T12:00:00Z'" in err.value.allowed
    # the same instant in the forms that are read (RFC 3339, its note's space, ISO 8601's)
    for ok in ("2026-01-31T12:00:00Z", "2026-01-31 12:00:00Z", "2026-01-31t12:00:00z",
               "20260131T120000Z", "2026-W05-6T12:00Z", "2026-01-31T12Z",
               "2026-01-31T13:00:00+0100", "2026-01-31T13:00:00+01",
               "2026-01-31T12:00:00,000Z"):
        assert parse_time(ok, now_ns=NOW) == NOON, ok


@pytest.mark.parametrize("text", ["2026-01-31T24:00:00Z", "2026-01-31T24:00Z",
                                  "2026-01-31T24Z", "20260131T240000Z"])
def test_24_00_says_to_write_the_next_days_midnight(text: str) -> None:
    """It was refused with the generic wording only (so the device was not told how)."""
    with pytest.raises(PayloadError) as err:
        parse_time(text, now_ns=NOW)
    assert (err.value.field, err.value.value, err.value.reason) == ("ts", text, "bad_ts")
    assert "00:00:00 of the next day" in err.value.allowed


def test_a_repeated_seq_counts_every_seq_it_gave() -> None:
    d = decode(b'{"seq": 1, "seq": 2, "ts": 1769860800, "metrics": {"t": 1}}', "pump-1",
               now_ns=NOW)
    assert d.readings == []
    (e,) = d.rejected
    assert (e.field, e.reason, e.value) == ("seq", "duplicate_key", "2 values: 1, 2")
    assert d.seqs == [1, 2]  # was [2]: seq 1, named in the dead letter too, never handled
    senml = decode(b'[{"bn": "p:", "bt": 1769860800, "seq": 3, "seq": 4, "n": "a", "v": 1},'
                   b' {"n": "b", "v": 2}]', "pump-1", now_ns=NOW)
    assert senml.seqs == [3, 4]
    assert [(r.metric, r.seq) for r in senml.readings] == [("p:b", 4)]
    assert payload_seqs(b'[{"seq": 1, "seq": 2}, {"seq": 3}, {"seq": "x", "seq": 5}]',
                        1000) == [1, 2, 3, 5]  # what a message refused whole counts
    assert payload_seqs(rb'{"s\u0065q": 7, "seq": 8}', 1000) == [7, 8]


@pytest.mark.parametrize("fields", [b'"n": "a", "v": 1, "v": 2',
                                    b'"n": "a", "seq": 3, "seq": 4, "v": 1',
                                    b'"n": "a", "n": "c", "v": 1'])
def test_a_senml_record_refused_for_a_repeat_still_names_and_dates_the_pack(
        fields: bytes) -> None:
    """Its bn and bt (each given once) were skipped with it: the records after it were
    stored under the bare name, at now (years off here), with nothing said."""
    d = decode(b'[{"bn": "p:", "bt": 1769860800, %s}, {"n": "b", "v": 2}]' % fields,
               "pump-1", now_ns=NOW)
    assert [(r.metric, r.ts_ns, r.value) for r in d.readings] == [("p:b", NOON, 2.0)]
    assert [(e.index, e.reason) for e in d.rejected] == [(0, "duplicate_key")]
    # a repeated base unit is refused as a bad one is: the records after it are left out
    d = decode(b'[{"bn": "p:", "bu": "Cel", "bu": "K", "n": "a", "v": 1}, {"n": "b", "v": 2}]',
               "pump-1", now_ns=NOW)
    assert d.readings == []
    assert [(e.index, e.field, e.reason) for e in d.rejected] == [
        (0, "bu", "duplicate_key"), (1, "u", "bad_type")]


@pytest.mark.parametrize("via", ["http", "mqtt"])
def test_the_ack_covers_a_message_refused_for_a_repeated_seq(tmp_path, via: str) -> None:
    """Before: ack 0 with seq gap (1, 1) for the first message, ack 1 with gap (2, 2) for
    the second, so each was resent for ever and raised a false seq_gap alert."""
    store = open_store(f"duckdb:///{tmp_path / 'p.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), gap_grace_s=0.0)
    try:
        r = p.ingest("pump-1", b'{"seq":1,"seq":2,"ts":1700000000,"metrics":{"a":1}}',
                     via=via)
        assert (r.accepted, r.ack_seq) == (0, 2)
        assert [(e.field, e.reason) for e in r.rejected] == [("seq", "duplicate_key")]
        r = p.ingest("pump-1", b'{"seq":3,"ts":1700000001,"metrics":{"a":3}}', via=via)
        assert (r.accepted, r.ack_seq) == (1, 3)
        r = p.ingest("pump-1", b'{"seq":5,"seq":4,"ts":1700000002,"metrics":{"a":4}}',
                     via=via)
        assert (r.accepted, r.ack_seq) == (0, 5)
        assert store.seq_gaps("pump-1") == []
        assert [v for *_, v in store.query("pump-1", "a")] == [3.0]
    finally:
        p.close()
        store.close()
