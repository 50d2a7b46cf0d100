"""Telemetry hunt s38: a value nested hundreds of levels deep is shown bounded (its repr
raised RecursionError where the problem body was built, after the message was handled),
JSON nested too deep is refused as such by every parse (the second, keeping repeated keys,
raised RecursionError out of ``decode``), an integer nanosecond SenML ``t`` keeps every
digit, and a malformed compact ``units`` is refused instead of dropped without a word."""

from __future__ import annotations

import pytest

from edgewise.errors import PayloadError
from edgewise.telemetry import decode

NOW = 1_800_000_000 * 10**9


def _deep(depth: int) -> bytes:
    inner = '{"a":' * depth + "1" + "}" * depth
    return ('{"ts": 1700000000, "metrics": {"a": 1}, "seq": 1, "x": ' + inner + "}").encode()


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def test_to_problem_of_a_deeply_nested_value_is_bounded() -> None:
    """Check ``to_problem`` showed ``repr(value)[:200]``: the repr walked the whole value
    first, and one nested past the stack (a few kilobytes of JSON) raised RecursionError."""
    e = PayloadError(device_id="p", field="x", value=_nested(5000),
                     allowed="only the fields 'ts', 'metrics', 'seq' and 'units'",
                     reason="unknown_field")
    p = e.to_problem()
    assert p["value"] == "{'a': {'a': {'a': {...}}}}", p["value"]
    assert p["field"] == "x" and "got 'dict'" in p["detail"].lower()
    wide = PayloadError(field="x", value=list(range(10_000)), allowed="-").to_problem()
    assert wide["value"] == "[0, 1, 2, 3, ...]"
    huge = PayloadError(field="x", value=["y" * 10_000] * 3, allowed="-").to_problem()
    assert len(huge["value"]) <= 200, huge["value"]


def test_a_deep_unknown_field_decodes_and_its_rejection_is_shown() -> None:
    """Check the hunt's record (an unknown field nested deep, 960 levels over HTTP; fewer
    here, below pytest's frames): rejected with its seq counted, and its problem built
    below a handler's stack (HTTP answered 500 after acknowledging the seq)."""
    d = decode(_deep(800), "pump-9", now_ns=NOW)
    assert d.seqs == [1] and d.readings == []
    (e,) = d.rejected
    assert (e.field, e.reason) == ("x", "unknown_field")

    def deeper(n: int) -> dict:  # the request handler's frames
        return deeper(n - 1) if n else e.to_problem()

    assert deeper(250)["value"] == "{'a': {'a': {'a': {...}}}}"


def test_decode_refuses_json_too_deep_at_every_depth_with_a_payload_error() -> None:
    """Check depths where the first parse passed and the second (keeping repeated keys,
    its hook costs stack) raised RecursionError out of ``decode``; and that the refusal
    names the nesting depth, not only "must be UTF-8 JSON"."""
    refused = []
    for depth in range(900, 1060):
        try:
            d = decode(_deep(depth), "pump-1", now_ns=NOW)
        except PayloadError as exc:
            assert exc.reason == "bad_json" and exc.field == "payload"
            assert exc.value == f"JSON nested {depth + 1} levels deep", exc.value
            assert "nest fewer levels" in exc.allowed
            refused.append(depth)
        else:
            assert [x.reason for x in d.rejected] == ["unknown_field"]
    assert refused and refused[-1] == 1059


def test_json_too_deep_names_its_depth_in_a_batch_and_in_arrays() -> None:
    raw = b'[{"ts": 1700000000, "metrics": {"a": 1}}, ' + b"[" * 5000 + b"]" * 5000 + b"]"
    with pytest.raises(PayloadError, match="JSON nested 5001 levels deep") as info:
        decode(raw, "pump-1", now_ns=NOW)
    assert info.value.to_problem()["value"] == "JSON nested 5001 levels deep"
    # brackets in strings are not nesting
    raw = b'{"ts": 1700000000, "metrics": {"a": 1}, "x": "[[[{{{", "y": ' + b"[" * 3000
    raw += b"]" * 3000 + b"}"
    with pytest.raises(PayloadError, match="JSON nested 3001 levels deep"):
        decode(raw, "pump-1", now_ns=NOW)


@pytest.mark.parametrize("pack", [
    b'[{"n":"s","v":1,"t":1796550001123456789},{"n":"s","v":2,"t":1796550001123456800}]',
    b'[{"bt":0,"n":"s","v":1,"t":1796550001123456789},{"n":"s","v":2,"t":1796550001123456800}]',
    b'[{"bt":0.0,"n":"s","v":1,"t":1796550001123456789},{"n":"s","v":2,"t":1796550001123456800}]',
], ids=["no-bt", "bt-0", "bt-0.0"])
def test_an_integer_nanosecond_senml_t_keeps_every_digit(pack: bytes) -> None:
    """Check ``t`` went through a float (a 256 ns grid): two readings 11 ns apart got one
    time, where compact's integer ``ts`` (as the README says ``t`` is read) kept both."""
    d = decode(pack, "pump-1", now_ns=NOW)
    assert [r.ts_ns for r in d.readings] == [1796550001123456789, 1796550001123456800]
    assert not d.relative_times


def test_integer_senml_times_elsewhere_are_read_as_before() -> None:
    # an integer t (seconds) on an absolute base time, ms and ns, exact
    d = decode(b'[{"bt":1796550001123456789,"n":"s","v":1,"t":2},'
               b'{"bt":1796550001123,"n":"s","v":1,"t":-1}]', "pump-1", now_ns=NOW)
    assert [r.ts_ns for r in d.readings] == [1796550003123456789, 1796550000123000000]
    # integer seconds and milliseconds without bt, and a relative integer t
    d = decode(b'[{"n":"s","v":1,"t":1796550001},{"n":"s","v":1,"t":1796550001123},'
               b'{"n":"s","v":1,"t":-5}]', "pump-1", now_ns=NOW)
    assert [r.ts_ns for r in d.readings] == [1796550001 * 10**9, 1796550001123 * 10**6,
                                            NOW - 5 * 10**9]
    # integers past any time: refused with a reason, never undecodable
    big = 10**308
    d = decode(b'[{"n":"s","v":1,"t":%d},{"bt":%d,"n":"s","v":1,"t":%d},'
               b'{"n":"s","v":1,"bt":-%d,"t":-%d},{"bt":1796550001,"n":"s","v":1,"t":%d}]'
               % (big, big, big, big, big, 2**70), "pump-1", now_ns=NOW)
    assert d.readings == []
    assert [(e.field, e.reason) for e in d.rejected] == [
        ("t", "future_ts"), ("t", "bad_ts"), ("t", "bad_ts"), ("t", "future_ts")]


def test_a_malformed_units_field_is_refused_not_dropped() -> None:
    """Check ``"units": "Cel"`` and a unit that is not text were dropped without a word,
    where every other malformed field is refused with a reason."""
    d = decode(b'{"ts":1700000000,"metrics":{"a":1},"units":"Cel","seq":4}', "p", now_ns=NOW)
    assert d.readings == [] and d.seqs == [4]
    (e,) = d.rejected
    assert (e.field, e.reason, e.value) == ("units", "bad_shape", "Cel")
    assert "metric name to unit text" in str(e)
    d = decode(b'{"ts":1700000000,"metrics":{"a":1,"b":2,"c":3},'
               b'"units":{"a":{"x":5},"b":"K","c":null}}', "p", now_ns=NOW)
    assert [(r.metric, r.unit) for r in d.readings] == [("b", "K"), ("c", None)]
    (e,) = d.rejected
    assert (e.field, e.reason) == ("units.a", "bad_type") and "unit as text" in e.allowed
    assert e.to_problem()["value"] == "{'x': 5}"
    # units absent or null: no unit, as before
    for body in (b'{"ts":1700000000,"metrics":{"a":1}}',
                 b'{"ts":1700000000,"metrics":{"a":1},"units":null}'):
        (r,) = decode(body, "p", now_ns=NOW).readings
        assert r.unit is None
