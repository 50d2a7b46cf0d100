"""POST /v1/telemetry, bugs of the HTTP data-routes hunt: a SenML pack with a bad first record
answered 200 with nothing stored, an unbounded ``rejected`` list that cost no rate-limit
tokens, and gzip bodies read only to their first member.

The tests that send only as a device of their own share one app (``device_env``); the
others have an app of their own (``env``, ``slow_env``)."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.telemetry import MAX_LISTED_REJECTIONS
from tests.server.conftest import Env, build_env, problem


def _post(env: Env, body: bytes, **headers: str):
    return env.client.post("/v1/telemetry", content=body, headers={
        **env.device_headers(), "Content-Type": "application/json", **headers})


def test_a_senml_pack_with_a_null_first_record_stores_the_rest(env: Env) -> None:
    now = int(time.time())
    pack = [None, {"bn": "pump-1/", "bt": now - 40, "n": "temp", "v": 21.6},
            {"n": "rpm", "t": 1, "v": 1452}]
    resp = _post(env, json.dumps(pack).encode(), **{"Content-Type": "application/senml+json"})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in out["rejected"]] == [(0, "bad_shape")]
    assert [v for *_, v in env.store.query(env.device, "rpm")] == [1452.0]


def test_a_huge_list_of_rejections_is_capped_and_counted(device_env: Env) -> None:
    env = device_env
    resp = env.send(b"[" + b"0," * 130_000 + b"0]")
    assert resp.status_code == 200, resp.text
    assert len(resp.content) < 100_000  # was 44 MB
    out = resp.json()
    assert [r["index"] for r in out["rejected"]] == list(range(MAX_LISTED_REJECTIONS))
    assert out["rejected_total"] == 130_001
    assert out["rejected_by_reason"] == {"bad_shape": 130_001}


def test_a_few_rejections_are_all_listed_and_counted(device_env: Env) -> None:
    env = device_env
    now = int(time.time())
    out = env.send([{"ts": now - 5, "metrics": {"a": 1, "b": "x"}}, "junk"]).json()
    assert [(r["field"], r["reason"]) for r in out["rejected"]] == [("metrics.b", "bad_type"),
                                                                    ("record", "bad_shape")]
    assert (out["rejected_total"], out["rejected_by_reason"]) == (2, {"bad_type": 1,
                                                                      "bad_shape": 1})


@pytest.fixture
def slow_env(data_dir: Path) -> Iterator[Env]:
    """An app whose devices may send 3 readings at once, then one every 1000 s."""
    yield from build_env(data_dir, rate_limit_per_s=0.001, rate_limit_burst=3.0)


def test_rejected_records_are_charged_to_the_rate_limit(slow_env: Env) -> None:
    bad = b"[" + b"0," * 999 + b"0]"
    assert slow_env.send(bad).status_code == 200
    resp = slow_env.send(bad)  # was 200 with 1000 problems, for ever
    assert problem(resp, 429)["reason"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) > 0 and len(resp.content) < 2000


def test_a_device_sending_valid_readings_pays_as_before(slow_env: Env) -> None:
    now = int(time.time())
    resp = slow_env.send([{"ts": now - 9 + i, "metrics": {"a": i}} for i in range(3)])
    assert resp.status_code == 200 and resp.json()["accepted"] == 3  # the whole burst
    problem(slow_env.send({"ts": now, "metrics": {"a": 9}}), 429)


def _rec(ts: int, seq: int) -> bytes:
    return b'{"ts": %d, "seq": %d, "metrics": {"a": %d}}' % (ts, seq, seq)


def test_a_gzip_body_of_two_members_is_stored_whole(device_env: Env) -> None:
    env = device_env
    now = int(time.time())
    arr = b"[" + _rec(now - 9, 1) + b"," + _rec(now - 8, 2) + b"]"
    resp = _post(env, gzip.compress(arr[:30]) + gzip.compress(arr[30:]),
                 **{"Content-Encoding": "gzip"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 2
    assert [v for *_, v in env.store.query(env.device, "a")] == [1.0, 2.0]


def test_a_second_gzip_member_is_not_dropped_silently(device_env: Env) -> None:
    env = device_env
    now = int(time.time())
    resp = _post(env, gzip.compress(_rec(now - 9, 1)) + gzip.compress(_rec(now - 8, 2)),
                 **{"Content-Encoding": "gzip"})
    assert resp.status_code == 422 and resp.json()["reason"] == "bad_json"
    assert env.store.query(env.device, "a") == []


def test_bytes_after_the_gzip_stream_are_refused_naming_content_encoding(device_env: Env) -> None:
    env = device_env
    resp = _post(env, gzip.compress(_rec(int(time.time()) - 9, 1)) + b"garbage",
                 **{"Content-Encoding": "gzip"})
    body = problem(resp, 400)
    assert (body["field"], body["reason"], body["value"]) == ("Content-Encoding",
                                                              "bad_encoding", "gzip")
    assert "7 bytes after the gzip stream" in body["detail"]
    assert env.store.query(env.device, "a") == []


def test_the_openapi_description_tells_the_cap(module_env: Env) -> None:
    env = module_env
    op = env.client.get("/openapi.json").json()["paths"]["/v1/telemetry"]["post"]
    assert f"the first {MAX_LISTED_REJECTIONS}" in op["description"]
    assert "rate limit" in op["description"]
