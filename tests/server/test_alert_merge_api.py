"""Merged alerts over HTTP: only live alerts are listed; a merged one still answers by id,
naming the alert that covers it, and refuses an acknowledgement or label (409)."""

from __future__ import annotations

import time

from edgewise.store.base import Alert
from tests.server.conftest import Env, problem

S = 10**9


def test_a_merged_alert_is_not_listed_but_found_by_id(env: Env) -> None:
    """Check GET /v1/alerts lists only the surviving alert, GET of the absorbed id says
    which alert it was merged into, and ack/label of it answer 409 naming that alert."""
    t0 = time.time_ns() - 600 * S
    a = env.store.add_alert(Alert(env.device, t0, t0 + 10 * S, 0.9, drivers={"a": 1.0}))
    b = env.store.add_alert(Alert(env.device, t0 + 50 * S, t0 + 60 * S, 0.95,
                                  drivers={"a": 1.0}))
    env.store.merge_alert(b.id, a.id, end_ns=t0 + 60 * S, score=0.95)
    listed = env.client.get("/v1/alerts", headers=env.auth("viewer")).json()
    assert [x["id"] for x in listed] == [a.id]
    assert listed[0]["end_ns"] == t0 + 60 * S and listed[0]["merged_into"] is None
    got = env.client.get(f"/v1/alerts/{b.id}", headers=env.auth("viewer"))
    assert got.status_code == 200 and got.json()["merged_into"] == a.id
    for path, body in (("ack", None), ("label", {"label": "true_alarm"})):
        resp = env.client.post(f"/v1/alerts/{b.id}/{path}", json=body,
                               headers=env.auth("operator"))
        p = problem(resp, 409)
        assert p["reason"] == "merged_alert" and p["merged_into"] == a.id
        assert a.id in p["detail"] and "\n" not in p["detail"]
    assert env.store.get_alert(b.id).status == "open"
    ok = env.client.post(f"/v1/alerts/{a.id}/ack", headers=env.auth("operator"))
    assert ok.status_code == 200 and ok.json()["status"] == "acknowledged"
