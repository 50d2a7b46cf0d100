"""Inputs an API fuzzer found: values that overflow a float or a datetime, lone UTF-16
surrogates, huge query values, and labels for devices that do not exist. Each used to
answer 500 (and the telemetry ones stalled the device's ack for ever, or answered
"nothing was acknowledged" after storing part of the message); now each is a 4xx or a
rejected entry that names the field, the value and what is accepted.

The tests whose requests are all refused share one app (``module_env``), and so do those
that store readings only as a device of their own (``device_env``); those that store labels
have an app of their own."""

from __future__ import annotations

import json
import time

import pytest

from edgewise.telemetry import Reading
from tests.server.conftest import Env, problem

HUGE = 10**400
HUGE_TEXT = "1" + "0" * 400


def _stored(env: Env, metric: str) -> list[float]:
    return [v for m, _, v in env.store.query(env.device, metric) if m == metric]


@pytest.mark.parametrize("bad, field, reason", [
    ({"ts": "NOW", "metrics": {"a": HUGE}}, "metrics.a", "not_finite"),
    ({"ts": HUGE, "metrics": {"a": 1.0}}, "ts", "future_ts"),
    ({"ts": "0001-01-01T00:00:00+14:00", "metrics": {"a": 1.0}}, "ts", "ancient_ts"),
    ({"ts": "9999-12-31T23:59:59-14:00", "metrics": {"a": 1.0}}, "ts", "future_ts"),
    ([{"bt": HUGE, "n": "a", "v": 1.0}], "bt", "not_finite"),
    ([{"bt": "NOW", "n": "a", "v": HUGE}], "v", "not_finite"),
    ([{"bt": "NOW", "n": "a", "v": 1.0, "t": HUGE}], "t", "not_finite"),
])
def test_an_overflowing_value_is_rejected_and_its_seq_still_acknowledged(
        device_env: Env, bad, field: str, reason: str) -> None:
    env = device_env
    now = time.time() - 60
    assert env.send({"ts": now - 2, "metrics": {"a": 1.0}, "seq": 1}).json()["ack_seq"] == 1
    text = json.dumps(bad).replace('"NOW"', str(int(now)))
    doc = json.loads(text)
    for rec in doc if isinstance(doc, list) else [doc]:
        rec["seq"] = 2
        break
    r = env.send(doc)
    assert r.status_code == 200, r.text  # was 500 (OverflowError)
    body = r.json()
    assert body["ack_seq"] == 2  # handled: the device may drop it
    (rej,) = [x for x in body["rejected"] if x["field"] == field]
    assert rej["reason"] == reason and rej["allowed"] and field in rej["detail"]
    assert len(rej["detail"]) < 400  # the value is named shortened
    r = env.send({"ts": now, "metrics": {"a": 3.0}, "seq": 3})
    assert r.json()["ack_seq"] == 3  # later messages are acknowledged again
    assert _stored(env, "a") == [1.0, 3.0]


def test_a_lone_surrogate_metric_name_is_rejected_escaped_and_the_rest_stored(
        device_env: Env) -> None:
    env = device_env
    r = env.send({"ts": time.time() - 60, "metrics": {"ok_metric": 5, "\ud800": 1}, "seq": 3})
    assert r.status_code == 200, r.text  # was 500 although ok_metric was stored
    body = r.json()
    assert body["accepted"] == 1 and body["ack_seq"] == 0  # seq 1, 2 never came
    (rej,) = body["rejected"]
    assert (rej["reason"], rej["field"], rej["value"]) == (
        "bad_metric", "metrics.\\ud800", "\\ud800")
    assert _stored(env, "ok_metric") == [5.0]
    assert {m for m, _, _ in env.store.query(env.device)} == {"ok_metric"}


def test_a_body_that_is_a_lone_surrogate_string_is_a_422(module_env: Env) -> None:
    env = module_env
    body = problem(env.send(b'"\\ud800"'), 422)  # was 500 (UnicodeEncodeError)
    assert (body["field"], body["value"], body["reason"]) == ("payload", "\\ud800", "bad_shape")


def _post_label(env: Env, body: dict) -> object:
    # json.dumps escapes the surrogate (httpx's json= cannot encode it)
    return env.client.post("/v1/labels", content=json.dumps(body).encode(),
                           headers={**env.auth("operator"), "Content-Type": "application/json"})


def test_surrogates_in_a_label_body_are_a_422_that_names_the_field(module_env: Env) -> None:
    env = module_env
    base = {"device_id": env.device, "start": "2024-01-01T00:00:00Z",
            "end": "2024-01-01T01:00:00Z", "label": "anomaly"}
    for extra, field in (({"note": "x\ud800"}, "note"), ({"label": "\udfff"}, "label"),
                         ({"start": "2024\ud800"}, "start")):
        body = problem(_post_label(env, {**base, **extra}), 422)  # note: was 500
        assert body["field"] == field and "\\ud" in body["value"] + body["detail"], body
    # a validation error (a surrogate where a number goes) echoes the input escaped
    body = problem(_post_label(env, {**base, "start": None, "start_ns": "\ud800"}), 422)
    assert (body["field"], body["value"]) == ("start_ns", "\\ud800")
    assert env.client.get("/v1/labels", headers=env.auth("viewer")).json() == []


@pytest.mark.parametrize("path, params, field, reason", [
    ("/v1/devices/pump-1/readings", {"start": HUGE_TEXT}, "start", "bad_time"),
    ("/v1/devices/pump-1/readings", {"start": "-" + "9" * 5000}, "start", "bad_time"),
    ("/v1/devices/pump-1/readings", {"start": "0001-01-01T00:00:00+14:00"}, "start",
     "bad_time"),
    ("/v1/devices/pump-1/readings", {"end": "9999-12-31T23:59:59-14:00"}, "end", "bad_time"),
    ("/v1/devices/pump-1/readings", {"step": HUGE_TEXT}, "step", "bad_duration"),
    ("/v1/devices/pump-1/readings", {"step": "1" + "0" * 20 + "d"}, "step", "bad_duration"),
    ("/v1/fleet", {"stale_after": HUGE_TEXT}, "stale_after", "bad_duration"),
    ("/v1/alerts", {"since": HUGE_TEXT}, "since", "bad_time"),
    ("/v1/alerts", {"since": "0001-01-01T00:00:00+14:00"}, "since", "bad_time"),
    ("/v1/devices/pump-1/quality", {"end": HUGE_TEXT}, "end", "bad_time"),
])
def test_out_of_range_query_values_are_a_422(module_env: Env, path, params, field, reason) -> None:
    env = module_env
    body = problem(env.client.get(path, params=params, headers=env.auth("viewer")), 422)
    assert (body["field"], body["reason"]) == (field, reason)  # was 500 (OverflowError)
    assert body["allowed"] and repr(field) in body["detail"]
    sent = params[field]
    assert body["value"] == sent or (len(sent) > 40 and body["value"].startswith(sent[:40])
                                     and f"({len(sent)} characters)" in body["value"])
    assert len(body["detail"]) < 400


def test_a_label_with_a_huge_start_is_a_422(module_env: Env) -> None:
    env = module_env
    r = env.client.post("/v1/labels", headers=env.auth("operator"), json={
        "device_id": env.device, "start": HUGE_TEXT, "end": "2024-01-01T01:00:00Z",
        "label": "anomaly"})
    body = problem(r, 422)  # was 500
    assert (body["field"], body["reason"]) == ("start", "bad_time")
    assert body["detail"].startswith("Body field 'start'") and "401 characters" in body["value"]


def test_a_label_for_an_unknown_device_is_a_404(env: Env) -> None:
    body = {"device_id": "ghost-7", "start": "2024-01-01T00:00:00Z",
            "end": "2024-01-01T01:00:00Z", "label": "anomaly"}
    r = env.client.post("/v1/labels", json=body, headers=env.auth("operator"))
    p = problem(r, 404)  # was 201: an orphan label a later 'ghost-7' would inherit
    assert (p["field"], p["value"], p["reason"]) == ("device_id", "ghost-7", "unknown_device")
    assert "ghost-7" in p["detail"]
    assert env.client.get("/v1/labels", headers=env.auth("viewer")).json() == []
    # a registered device, and one with stored data only, may be labelled
    r = env.client.post("/v1/labels", json={**body, "device_id": env.device},
                        headers=env.auth("operator"))
    assert r.status_code == 201, r.text
    env.store.append([Reading("data-only", "a", 1_700_000_000 * 10**9, 1.0)])
    r = env.client.post("/v1/labels", json={**body, "device_id": "data-only"},
                        headers=env.auth("operator"))
    assert r.status_code == 201, r.text
