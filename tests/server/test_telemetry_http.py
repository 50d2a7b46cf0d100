"""HTTP ingest: answers after commit, rejects what is wrong, keeps what is right.

The tests whose messages are refused whole share one app (``module_env``), and so do those
that send only as a device of their own (``device_env``); the others have an app of their
own."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.server.conftest import PROBLEM_KEYS, Env, build_env, problem, serve_in_thread


def _stored(env: Env, metric: str | None = None) -> list[tuple[str, int, float]]:
    return env.store.query(env.device, metric)


def test_telemetry_is_stored_before_the_answer(env: Env) -> None:
    """Check that a 200 means the readings are already in the store, with the ack seq."""
    ts = int(time.time()) - 10
    resp = env.send({"ts": ts, "metrics": {"temp_c": 21.5, "rpm": 1450}, "seq": 1})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body == {"accepted": 2, "duplicates": 0, "conflicts": 0, "rejected": [],
                    "rejected_total": 0, "rejected_by_reason": {}, "ack_seq": 1}
    assert sorted(_stored(env)) == [("rpm", ts * 10**9, 1450.0), ("temp_c", ts * 10**9, 21.5)]


def test_device_id_in_path_works_and_must_match_header(env: Env) -> None:
    """Check the /v1/devices/{id}/telemetry form, and that a mismatched X-Device-Id is 403."""
    ts = int(time.time()) - 5
    payload = json.dumps({"ts": ts, "metrics": {"a": 1.0}, "seq": 1}).encode()
    auth = {"Authorization": f"Bearer {env.secret}"}
    ok = env.client.post(f"/v1/devices/{env.device}/telemetry", content=payload, headers=auth)
    assert ok.status_code == 200, ok.text
    assert ok.json()["ack_seq"] == 1
    bad = env.client.post(f"/v1/devices/{env.device}/telemetry", content=payload,
                          headers={**auth, "X-Device-Id": "pump-2"})
    body = problem(bad, 403)
    assert (body["field"], body["value"], body["reason"]) == ("X-Device-Id", "pump-2",
                                                               "wrong_device")


def test_one_bad_record_does_not_lose_the_good_ones(env: Env) -> None:
    """Check that a batch answers 200 listing the rejected record, and stores the rest."""
    ts = int(time.time()) - 30
    batch = [
        {"ts": ts, "metrics": {"temp_c": 20.0}, "seq": 1},
        {"ts": ts + 1, "metrics": {"temp_c": "hot"}, "seq": 2},
        {"ts": "2024-13-01T00:00:00Z", "metrics": {"temp_c": 20.2}, "seq": 3},
        {"ts": ts + 3, "metrics": {"temp_c": 20.3}, "seq": 4},
    ]
    resp = env.send(batch)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["accepted"] == 2
    rejected = {(r["index"], r["field"], r["reason"]): r for r in body["rejected"]}
    assert (1, "metrics.temp_c", "bad_type") in rejected
    assert rejected[(1, "metrics.temp_c", "bad_type")]["value"] == "hot"
    assert (2, "ts", "bad_ts") in rejected
    assert rejected[(2, "ts", "bad_ts")]["value"] == "2024-13-01T00:00:00Z"
    for r in body["rejected"]:
        assert PROBLEM_KEYS <= r.keys()
    assert [v for _, _, v in _stored(env, "temp_c")] == [20.0, 20.3]


def test_not_finite_and_future_values_are_named(env: Env) -> None:
    """Check that NaN and a far-future time are rejected with field and value."""
    ts = int(time.time()) - 5
    raw = (b'[{"ts": %d, "metrics": {"a": NaN, "b": 1.0}, "seq": 1},'
           b' {"ts": %d, "metrics": {"a": 2.0}, "seq": 2}]') % (ts, ts + 10**7)
    body = env.send(raw).json()
    by_reason = {r["reason"]: r for r in body["rejected"]}
    assert by_reason["not_finite"]["field"] == "metrics.a"
    assert by_reason["not_finite"]["value"] == "NaN"
    assert by_reason["future_ts"]["field"] == "ts"
    assert by_reason["future_ts"]["value"] == ts + 10**7
    assert body["accepted"] == 1


def test_bad_json_is_422_and_keeps_what_was_accepted(env: Env) -> None:
    """Check that an unusable payload is a 422 problem and earlier readings stay stored."""
    ts = int(time.time()) - 20
    assert env.send({"ts": ts, "metrics": {"a": 1.0}, "seq": 1}).status_code == 200
    body = problem(env.send(b'{"ts": 1, "metrics": '), 422)
    assert (body["field"], body["reason"]) == ("payload", "bad_json")
    body = problem(env.send(b'"just a string"'), 422)
    assert (body["field"], body["value"], body["reason"]) == ("payload", "just a string",
                                                              "bad_shape")
    assert _stored(env) == [("a", ts * 10**9, 1.0)]
    again = env.send({"ts": ts + 1, "metrics": {"a": 2.0}, "seq": 2})
    assert again.json()["ack_seq"] == 2


def test_redelivery_is_a_duplicate_not_a_second_copy(env: Env) -> None:
    """Check that resending a message is counted as duplicates and stored once."""
    ts = int(time.time()) - 20
    msg = {"ts": ts, "metrics": {"a": 1.0, "b": 2.0}, "seq": 1}
    assert env.send(msg).json()["accepted"] == 2
    again = env.send(msg).json()
    assert (again["accepted"], again["duplicates"], again["ack_seq"]) == (0, 2, 1)
    assert len(_stored(env)) == 2


def test_payload_over_the_limit_is_413_before_reading(data_dir: Path) -> None:
    """Check 413 from Content-Length, and from a chunked body as soon as it passes the limit."""
    gen = build_env(data_dir, max_payload_bytes=1000)
    env = next(gen)
    try:
        big = json.dumps({"ts": int(time.time()), "metrics": {f"m{i}": i for i in range(200)}})
        body = problem(env.send(big.encode()), 413)
        assert (body["field"], body["reason"]) == ("payload", "too_large")
        assert body["value"] == f"{len(big)} bytes"
        assert body["allowed"] == "at most 1000 bytes"

        sent = []

        def chunks():  # no Content-Length: the server must stop reading by itself
            for i in range(100):
                sent.append(i)
                yield b" " * 100

        resp = env.client.post("/v1/telemetry", content=chunks(), headers=env.device_headers())
        body = problem(resp, 413)
        assert body["value"] == "more than 1000 bytes"
        assert env.store.count_readings() == 0
        metrics = env.client.get("/metrics").text
        assert 'edgewise_readings_rejected_total{reason="too_large"} 2' in metrics
    finally:
        gen.close()


def test_wrong_content_type_is_415(module_env: Env) -> None:
    """Check that a non-JSON content type is refused and named."""
    env = module_env
    resp = env.client.post("/v1/telemetry", content=b"<x/>",
                           headers={**env.device_headers(), "Content-Type": "application/xml"})
    body = problem(resp, 415)
    assert (body["field"], body["value"]) == ("Content-Type", "application/xml")


def test_oversized_stream_is_refused_before_it_ends(env: Env) -> None:
    """Check over a real socket: a chunked body gets 413 as soon as it passes the limit,
    while the client has not even finished sending it."""
    limit = env.settings.max_payload_bytes
    with serve_in_thread(env.client.app) as port, socket.create_connection(
        ("127.0.0.1", port), timeout=10
    ) as sock:
        sock.sendall(
            f"POST /v1/telemetry HTTP/1.1\r\nHost: x\r\nX-Device-Id: {env.device}\r\n"
            f"Authorization: Bearer {env.secret}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b" " * 4096
        for _ in range(limit // len(chunk) + 2):  # just past the limit; never the last chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        head = sock.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head[:200]
    assert "application/problem+json" in head
    assert env.store.count_readings() == 0


@pytest.mark.parametrize("record, field, reason", [
    ({"metrics": {"a": 1.0}}, "ts", "missing_field"),
    ({"ts": True, "metrics": {"a": 1.0}}, "ts", "bad_ts"),
    ({"ts": 1.0, "metrics": {"a": 1.0}}, "ts", "ancient_ts"),
    ({"ts": "TS", "metrics": [1.0, 2.0]}, "metrics", "bad_shape"),
    ({"ts": "TS", "metrics": {}}, "metrics", "bad_shape"),
    ({"ts": "TS", "metrics": {"a": {"x": 1}}}, "metrics.a", "bad_type"),
    ({"ts": "TS", "metrics": {"a": "on"}}, "metrics.a", "bad_type"),
    ({"ts": "TS", "metrics": {"a b": 1.0}}, "metrics.a b", "bad_metric"),
    ({"ts": "TS", "metrics": {"a": 1.0}, "seq": -1}, "seq", "bad_seq"),
    ({"ts": "TS", "metrics": {"a": 1.0}, "extra": 1}, "extra", "unknown_field"),
    ([{"bn": "x", "n": "a", "vs": "on"}], "vs", "unsupported_value"),
    ([{"bn": "x", "n": "a", "vb": "on"}], "vb", "bad_type"),
    ([{"bn": "x", "n": "a", "v": True}], "v", "bad_type"),
])
def test_each_bad_record_is_named(device_env: Env, record: object, field: str, reason: str) -> None:
    """Check each kind of bad record is rejected naming its field, next to a good record."""
    env = device_env
    ts = int(time.time()) - 5
    good = {"ts": ts - 1, "metrics": {"ok": 1.0}}
    if isinstance(record, dict):
        rec = {k: (ts if v == "TS" else v) for k, v in record.items()}
        batch: object = [good, rec]
    else:  # SenML: its own pack, with one good record first
        batch = [{"bn": "", "bt": ts, "n": "ok", "v": 1.0}, *record]
    resp = env.send(batch)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [(r["field"], r["reason"]) for r in body["rejected"]] == [(field, reason)]
    assert body["rejected"][0]["index"] == 1
    assert body["accepted"] == 1
    assert [m for m, _, _ in env.store.query(env.device)] == ["ok"]


def test_booleans_are_stored_as_one_and_zero(env: Env) -> None:
    """Check a pump's 'running' flag (compact true/false, SenML vb) is stored as 1/0, next
    to its numbers, and shows in the quality report as a two-state series, not 'stuck'."""
    ts = int(time.time()) - 100
    resp = env.send([{"ts": ts + i, "metrics": {"running": i >= 50, "rpm": 1450.0 * (i >= 50)},
                      "seq": i + 1} for i in range(80)])
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 160 and resp.json()["rejected"] == []
    senml = env.send([{"bn": "", "bt": ts + 80, "n": "running", "vb": False},
                      {"n": "door_open", "vb": True, "bv": 5.0}])
    assert senml.status_code == 200, senml.text
    running = [v for _, _, v in env.store.query(env.device, "running")]
    assert running == [0.0] * 50 + [1.0] * 30 + [0.0]
    assert [v for _, _, v in env.store.query(env.device, "door_open")] == [1.0]  # bv: v only
    rep = env.client.get(f"/v1/devices/{env.device}/quality", headers=env.auth("viewer"))
    assert rep.status_code == 200, rep.text
    fig = rep.json()["metrics"]["running"]
    assert (fig["binary"], fig["stuck"], fig["drift"], fig["transitions"]) == (True, 0, None, 2)
    assert fig["spikes"] == 0 and fig["counter"] is False
    # the gateway's stream cleaner: stuck until the flag first switched (a flag that sat
    # at 0 for 50 readings cannot yet be told from a stuck sensor: the whole run of 50, as
    # the cleaner and the batch report count a run), then never; no spike
    assert rep.json()["ingest"]["metrics"]["running"]["flagged"] == {"stuck": 50}


def test_a_gzipped_body_is_read_and_its_limits_hold(env: Env) -> None:
    """Check a device on a metered link may gzip its body; a gzip bomb gets 413, a broken
    stream 422, a body that is not the gzip its header says 400 and another encoding 415,
    each storing nothing of that message."""
    import gzip

    ts = int(time.time()) - 5
    headers = {**env.device_headers(), "Content-Type": "application/json"}
    body = json.dumps([{"ts": ts + i, "seq": i + 1, "metrics": {"a": float(i)}}
                       for i in range(50)]).encode()
    ok = env.client.post("/v1/telemetry", content=gzip.compress(body),
                         headers={**headers, "Content-Encoding": "gzip"})
    assert ok.status_code == 200, ok.text
    assert (ok.json()["accepted"], ok.json()["ack_seq"]) == (50, 50)
    limit = env.settings.max_payload_bytes
    bomb = gzip.compress(b" " * (limit + 1))  # a few hundred bytes on the wire
    assert len(bomb) < limit
    body = problem(env.client.post("/v1/telemetry", content=bomb,
                                   headers={**headers, "Content-Encoding": "gzip"}), 413)
    assert body["reason"] == "too_large"
    broken = gzip.compress(b'[{"ts": 1}]')[:-6]
    body = problem(env.client.post("/v1/telemetry", content=broken,
                                   headers={**headers, "Content-Encoding": "gzip"}), 422)
    assert (body["field"], body["reason"]) == ("payload", "bad_json")
    assert "complete gzip stream" in body["allowed"]
    body = problem(env.client.post("/v1/telemetry", content=b"{}",
                                   headers={**headers, "Content-Encoding": "gzip"}), 400)
    assert (body["field"], body["reason"]) == ("Content-Encoding", "bad_encoding")
    plain = env.client.post("/v1/telemetry", content=gzip.compress(json.dumps(
        {"ts": ts + 60, "seq": 51, "metrics": {"a": 51.0}}).encode()), headers=headers)
    assert plain.json()["accepted"] == 1  # gzip without the header: its magic bytes tell
    body = problem(env.client.post("/v1/telemetry", content=b"{}",
                                   headers={**headers, "Content-Encoding": "br"}), 415)
    assert (body["field"], body["value"]) == ("Content-Encoding", "br")
    assert env.store.count_readings() == 51


def test_curl_without_a_content_type_is_told_how_to_send_json(module_env: Env) -> None:
    """Check `curl -d` without -H (form-urlencoded) gets a 415 that says what to add, and
    lists every type the route takes (text/plain was taken but not listed)."""
    env = module_env
    resp = env.client.post("/v1/telemetry", content=b'{"ts": 1769860800, "metrics": {"a": 1}}',
                           headers={**env.device_headers(),
                                    "Content-Type": "application/x-www-form-urlencoded"})
    body = problem(resp, 415)
    assert "-H 'Content-Type: application/json'" in body["detail"]
    assert "text/plain" in body["allowed"] and body["field"] == "Content-Type"
    assert env.store.query(env.device) == []
