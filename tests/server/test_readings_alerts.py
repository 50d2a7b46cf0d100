"""Readings over a range (RFC 3339 / epoch, steps), and the alert lifecycle over HTTP.

The tests that only read share one app (``module_env``; ``seeded``: its readings, sent
once); those that add, ack or label alerts have one of their own (``env``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from edgewise.store.base import Alert
from tests.server.conftest import Env, problem


@pytest.fixture(scope="module")
def seeded(module_env: Env) -> tuple[Env, int]:
    """pump-1 with 120 one-second readings of 'a' (0..119) and 'b' (constant 5), scored."""
    env = module_env
    t0 = (int(time.time()) // 60) * 60 - 600
    batch = [{"ts": t0 + i, "metrics": {"a": float(i), "b": 5.0}, "seq": i + 1}
             for i in range(120)]
    resp = env.send(batch)
    assert resp.json()["accepted"] == 240, resp.text
    assert env.pipeline.flush(), "the readings were not scored in 30 s"
    return env, t0


def _rfc(ts: int) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_readings_by_epoch_and_rfc3339_agree(seeded: tuple[Env, int]) -> None:
    """Check the same range in both time forms gives the same [start, end) points."""
    env, t0 = seeded
    url = f"/v1/devices/{env.device}/readings"
    by_epoch = env.client.get(url, params={"metric": "a", "start": t0 + 10, "end": t0 + 20},
                              headers=env.auth("viewer")).json()
    by_rfc = env.client.get(url, params={"metric": "a", "start": _rfc(t0 + 10),
                                         "end": _rfc(t0 + 20)},
                            headers=env.auth("viewer")).json()
    assert by_epoch["series"] == by_rfc["series"]
    by_ms = env.client.get(url, params={"metric": "a", "start": (t0 + 10) * 1000,
                                        "end": (t0 + 20) * 1000},
                           headers=env.auth("viewer")).json()  # Date.now() style
    assert by_ms["series"] == by_rfc["series"]
    assert by_epoch["series"]["a"]["v"] == [float(i) for i in range(10, 20)]
    assert by_epoch["series"]["a"]["t"][0] == t0 + 10
    assert list(by_epoch["series"]) == ["a"]


@pytest.mark.parametrize("step", ["60s", "1m", "60", "60000ms"])
def test_readings_downsample_by_step(seeded: tuple[Env, int], step: str) -> None:
    """Check every step spelling averages per 60 s bucket."""
    env, t0 = seeded
    body = env.client.get(f"/v1/devices/{env.device}/readings",
                          params={"start": t0, "end": t0 + 120, "step": step},
                          headers=env.auth("viewer")).json()
    assert body["step_s"] == 60
    assert body["series"]["a"] == {"t": [t0, t0 + 60], "v": [29.5, 89.5]}
    assert body["series"]["b"]["v"] == [5.0, 5.0]


@pytest.mark.parametrize("params, field, reason", [
    ({"step": "5x"}, "step", "bad_duration"),
    ({"step": "0s"}, "step", "bad_duration"),
    ({"start": "yesterday"}, "start", "bad_time"),
    ({"start": "2024-01-31T12:00:00"}, "start", "bad_time"),  # no offset: ambiguous
    ({"end": "nan"}, "end", "bad_time"),
    ({"start": "-99999999999"}, "start", "bad_time"),   # year -1199: was a 500
    ({"end": "19999999999999999999"}, "end", "bad_time"),  # past int64 ns: was year 2603
    ({"start": "1e400"}, "start", "bad_time"),
    ({"start": "1700000100", "end": "1700000000"}, "end", "bad_range"),
    ({"limit": "0"}, "limit", "invalid"),
])
def test_bad_query_parameters_are_named(module_env: Env, params: dict, field: str,
                                        reason: str) -> None:
    """Check each bad query parameter is a 422 naming it and its value."""
    env = module_env
    resp = env.client.get(f"/v1/devices/{env.device}/readings", params=params,
                          headers=env.auth("viewer"))
    body = problem(resp, 422)
    assert (body["field"], body["reason"]) == (field, reason)
    assert body["value"] == params[field]


def test_an_instant_out_of_range_is_a_422_on_every_route(module_env: Env) -> None:
    """Check the quality report and a posted label read start/end by the same rule as
    readings, and a label's start_ns past int64 is a 422 too, not a 500."""
    env = module_env
    body = problem(env.client.get("/v1/devices/pump-1/quality", params={"start": "-99999999999"},
                                  headers=env.auth("viewer")), 422)
    assert (body["field"], body["reason"]) == ("start", "bad_time")
    assert "1970 to 2262" in body["allowed"]
    for window in ({"start": "-99999999999", "end": "1700000000"},
                   {"start_ns": -(10**20), "end_ns": 1_700_000_000 * 10**9},
                   {"start_ns": 0, "end_ns": 10**20}):
        resp = env.client.post("/v1/labels", headers=env.auth("operator"), json={
            "device_id": "pump-1", "label": "anomaly", **window})
        assert resp.status_code == 422, (window, resp.text)
    assert env.client.get("/v1/labels", headers=env.auth("viewer")).json() == []


def test_readings_of_unknown_device_is_404(module_env: Env) -> None:
    """Check the 404 problem for readings of a device nobody knows."""
    env = module_env
    body = problem(env.client.get("/v1/devices/ghost/readings", headers=env.auth("viewer")), 404)
    assert body["value"] == "ghost"


def test_a_metric_the_device_never_had_is_404_naming_its_metrics(
        seeded: tuple[Env, int]) -> None:
    """Check a mistyped metric is a 404 ``unknown_metric`` listing the device's metrics,
    not a 200 with empty series, while a metric it has with no reading in the range is
    still an empty 200; and that ``metric`` given twice is a 422 naming it, not the last
    one answered alone."""
    env, t0 = seeded
    url = f"/v1/devices/{env.device}/readings"
    body = problem(env.client.get(url, params={"metric": "nope"}, headers=env.auth("viewer")),
                   404)
    assert (body["field"], body["value"], body["reason"]) == ("metric", "nope",
                                                              "unknown_metric")
    assert body["detail"] == (f"Device {env.device!r} has no readings of metric 'nope'; its "
                              "metrics: 'a', 'b'.")
    empty = env.client.get(url, params={"metric": "a", "start": t0 + 3600},
                           headers=env.auth("viewer"))
    assert empty.status_code == 200 and empty.json()["series"] == {}, empty.text
    body = problem(env.client.get(f"{url}?metric=a&metric=b", headers=env.auth("viewer")), 422)
    assert (body["field"], body["value"], body["reason"]) == ("metric", "'a', 'b'",
                                                              "repeated_parameter")


def _alert(env: Env, device: str = "pump-1", kind: str = "anomaly", score: float = 0.95) -> Alert:
    now = time.time_ns()
    return env.store.add_alert(Alert(device, now - 10**10, now, score, kind=kind,
                                     drivers={"a": 0.8, "b": 0.2}, message="test"))


def test_alerts_list_and_filter(env: Env) -> None:
    """Check filtering by device, status, kind and since."""
    a1 = _alert(env)
    _alert(env, device="pump-2", kind="seq_gap")
    get = lambda **p: env.client.get("/v1/alerts", params=p,  # noqa: E731
                                     headers=env.auth("viewer")).json()
    assert len(get()) == 2
    assert [a["id"] for a in get(device="pump-1")] == [a1.id]
    assert [a["device_id"] for a in get(kind="seq_gap")] == ["pump-2"]
    assert len(get(status="open")) == 2 and get(status="acknowledged") == []
    assert get(since=time.time() + 3600) == []
    assert len(get(since=_rfc(int(time.time()) - 3600))) == 2
    one = get(device="pump-1")[0]
    assert one["drivers"] == {"a": 0.8, "b": 0.2} and one["start"].endswith("Z")
    body = problem(env.client.get("/v1/alerts", params={"status": "closed"},
                                  headers=env.auth("viewer")), 422)
    assert (body["field"], body["value"], body["allowed"]) == ("status", "closed",
                                                               "open or acknowledged")


def test_operator_acknowledges_and_labels(env: Env) -> None:
    """Check ack and label change the stored alert, keep who did it, and are audited."""
    alert = _alert(env)
    resp = env.client.post(f"/v1/alerts/{alert.id}/ack", headers=env.auth("operator"))
    assert resp.status_code == 200, resp.text
    stored = env.store.get_alert(alert.id)
    assert (stored.status, stored.acked_by) == ("acknowledged", "test-operator")
    resp = env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                           json={"label": "false_alarm", "note": "valve test"})
    assert resp.json()["label"] == "false_alarm"
    stored = env.store.get_alert(alert.id)
    assert (stored.label, stored.labelled_by, stored.note) == ("false_alarm", "test-operator",
                                                               "valve test")
    actions = [(e.action, e.target) for e in env.security.audit_log(10)]
    assert ("alert.ack", alert.id) in actions and ("alert.label", alert.id) in actions


@pytest.mark.parametrize("content, content_type, value", [
    (b"notjson", "application/json", None),
    (b'{"label": "true_alarm"}', "application/x-www-form-urlencoded", '{"label": "true_alarm"}'),
])
def test_a_label_body_that_is_not_json_names_the_body(env: Env, content: bytes,
                                                      content_type: str, value: str | None) -> None:
    """Check a broken body or JSON sent as a form is a 422 naming 'body' and saying what
    it must be (it named field '0' with value '{}', or a Python bytes repr)."""
    alert = _alert(env)
    resp = env.client.post(f"/v1/alerts/{alert.id}/label", content=content,
                           headers={**env.auth("operator"), "Content-Type": content_type})
    body = problem(resp, 422)
    assert (body["field"], body["reason"], body["value"]) == ("body", "bad_json", value)
    assert "Content-Type: application/json" in body["allowed"]
    assert env.store.get_alert(alert.id).label is None


def test_labelling_an_open_alert_acknowledges_it(env: Env) -> None:
    """Check a label on an open alert also acknowledges it."""
    alert = _alert(env)
    env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("admin"),
                    json={"label": "true_alarm"})
    stored = env.store.get_alert(alert.id)
    assert (stored.status, stored.label, stored.acked_by) == ("acknowledged", "true_alarm",
                                                              "test-admin")


def test_alert_errors_are_named(env: Env) -> None:
    """Check a bad label and an unknown alert id are problems naming field and value."""
    alert = _alert(env)
    body = problem(env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                                   json={"label": "maybe"}), 422)
    assert (body["field"], body["value"]) == ("label", "maybe")
    assert "true_alarm" in body["allowed"]
    assert env.store.get_alert(alert.id).label is None
    body = problem(env.client.post("/v1/alerts/nope/ack", headers=env.auth("operator")), 404)
    assert (body["field"], body["value"]) == ("alert_id", "nope")


def test_a_small_limit_reads_no_more_than_it_needs(seeded: tuple[Env, int],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ?limit=10 reads 11 rows from the store, not the device's whole history (a
    device with 3 M readings took 6.5 s and 0.7 GB for 10 points), and an empty metric=
    means every metric, as an empty start= means no bound."""
    env, _ = seeded
    read: list[int] = []
    real = env.store._read

    def counted(sql, params=None):
        rows = real(sql, params)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(env.store, "_read", counted)
    got = env.client.get(f"/v1/devices/{env.device}/readings", params={"limit": 10},
                         headers=env.auth("viewer")).json()
    assert (got["points"], got["truncated"]) == (10, True)
    assert max(read) == 11
    every = env.client.get(f"/v1/devices/{env.device}/readings", params={"metric": ""},
                           headers=env.auth("viewer")).json()
    assert every["points"] > 0 and every["series"]
