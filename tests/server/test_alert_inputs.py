"""What the alert routes answer for input no store could hold or no alert has: a NUL
character in a note (422 naming ``note``), an id (404) or a device filter (no alert), the
same on DuckDB and PostgreSQL, never a 503; a ``kind`` that is no alert kind (422
``bad_kind``); a long bad ``status`` echoed cut short."""

from __future__ import annotations

import time

from edgewise.store.base import Alert
from tests.server.conftest import Env, problem

S = 10**9



def test_a_nul_in_a_note_an_id_or_a_filter_is_refused_or_unknown_never_a_503(
        any_env: Env) -> None:
    env, op, viewer = any_env, any_env.auth("operator"), any_env.auth("viewer")
    t0 = time.time_ns() - 600 * S
    a = env.store.add_alert(Alert(env.device, t0, t0 + 10 * S, 0.9, drivers={"x": 1.0}))
    body = problem(env.client.post(f"/v1/alerts/{a.id}/label", headers=op,
                                   json={"label": "true_alarm", "note": "a\u0000b"}), 422)
    assert (body["field"], body["reason"]) == ("note", "bad_note")
    assert "NUL" in body["detail"] and "NUL" in body["allowed"]
    stored = env.store.get_alert(a.id)  # nothing was written
    assert (stored.status, stored.label, stored.note) == ("open", None, None)
    for method, path in (("POST", "/v1/alerts/a%00b/ack"), ("GET", "/v1/alerts/a%00b"),
                         ("POST", "/v1/alerts/a%00b/label")):
        r = env.client.request(method, path, headers=op,
                               json={"label": "false_alarm"} if path.endswith("label") else None)
        body = problem(r, 404)
        assert (body["reason"], body["value"]) == ("unknown_alert", "a\x00b")
    r = env.client.get("/v1/alerts?device=a%00b", headers=viewer)
    assert (r.status_code, r.json()) == (200, [])
    body = problem(env.client.get("/v1/alerts?kind=%00", headers=viewer), 422)
    assert (body["field"], body["reason"]) == ("kind", "bad_kind")
    # a note without one is stored as it is
    r = env.client.post(f"/v1/alerts/{a.id}/label", headers=op,
                        json={"label": "true_alarm", "note": "bearing, é"})
    assert r.status_code == 200, r.text
    assert env.store.get_alert(a.id).note == "bearing, é"


def test_kind_must_be_an_alert_kind(env: Env) -> None:
    t0 = time.time_ns() - 600 * S
    gap = env.store.add_alert(Alert(env.device, t0, t0, 1.0, kind="seq_gap"))
    viewer = env.auth("viewer")
    for bad in ("bogus", "seqgap", "Anomaly"):
        body = problem(env.client.get("/v1/alerts", params={"kind": bad}, headers=viewer), 422)
        assert (body["field"], body["value"], body["reason"]) == ("kind", bad, "bad_kind")
        assert body["allowed"] == "anomaly or seq_gap" and "anomaly, seq_gap" in body["detail"]
    assert [a["id"] for a in env.client.get("/v1/alerts?kind=seq_gap",
                                            headers=viewer).json()] == [gap.id]
    assert env.client.get("/v1/alerts?kind=anomaly", headers=viewer).json() == []
    assert len(env.client.get("/v1/alerts?kind=", headers=viewer).json()) == 1  # no filter
    from edgewise.alerts import KINDS  # what the route allows: the kinds alerts have

    assert KINDS == ("anomaly", "seq_gap")


def test_a_long_bad_status_or_kind_is_echoed_cut_short(env: Env) -> None:
    for name in ("status", "kind"):
        r = env.client.get("/v1/alerts", params={name: "x" * 60_000},
                           headers=env.auth("viewer"))
        body = problem(r, 422)
        assert body["field"] == name and body["reason"] == f"bad_{name}"
        assert body["value"] == "x" * 40 + "... (60000 characters)"
        assert len(r.content) < 2000, len(r.content)
