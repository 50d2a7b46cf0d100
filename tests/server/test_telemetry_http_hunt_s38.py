"""POST /v1/telemetry with a record holding an unknown field nested deep (telemetry hunt
s38): a 500 saying "nothing of this request was acknowledged" for a seq handled and
acknowledged (the problem body's repr of the value raised RecursionError); JSON nested
too deep to parse is refused naming its depth, not only "must be UTF-8 JSON"."""

from __future__ import annotations

import time

from tests.server.conftest import Env


def _deep(ts: int, seq: int, depth: int) -> bytes:
    inner = '{"a":' * depth + "1" + "}" * depth
    return f'{{"ts": {ts}, "metrics": {{"a": 1}}, "seq": {seq}, "x": {inner}}}'.encode()


def test_a_deep_unknown_field_is_rejected_with_a_bounded_value(env: Env) -> None:
    ts = int(time.time()) - 60
    # up to as deep as this stack's parse reads (960 over a real server): the deepest
    # the parser reads is the one whose repr had the least stack left
    handled = []
    for depth in range(700, 1000, 20):
        resp = env.send(_deep(ts, 1, depth))
        if resp.status_code == 422:  # past what the parser reads below the test client
            assert resp.json()["reason"] == "bad_json", resp.text
            continue
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert (out["accepted"], out["ack_seq"]) == (0, 1), out
        (rej,) = out["rejected"]
        assert (rej["field"], rej["reason"]) == ("x", "unknown_field")
        handled.append(rej["value"])
    assert handled, "every depth was past the parser"
    assert set(handled) == {"{'a': {'a': {'a': {...}}}}"}, handled
    resp = env.send(b'{"ts": %d, "metrics": {"q": 1}, "seq": 2}' % (ts + 1))
    assert resp.status_code == 200 and resp.json()["ack_seq"] == 2, resp.text


def test_json_too_deep_is_refused_naming_its_depth(env: Env) -> None:
    ts = int(time.time()) - 60
    resp = env.send(_deep(ts, 1, 3000))
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert (body["field"], body["reason"]) == ("payload", "bad_json")
    assert body["value"] == "JSON nested 3001 levels deep"
    assert "nest fewer levels" in body["allowed"] and "3001 levels" in body["detail"]
