"""Labels over HTTP: POST/GET /v1/labels and the label queue, with roles and the audit log.

The tests of refused labels share one app (``module_env``: nothing is stored); those that
store labels or readings have one of their own (``lenv``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgewise.label.store import LabelStore
from tests.server.conftest import Env, build_env, problem


def _send_history(env: Env, n: int = 600) -> int:
    now = int(time.time())
    t0 = now - n
    rng = np.random.default_rng(0)
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {"temp_c": float(40 + rng.normal(0, 0.2) + (8 if 400 <= i < 404 else 0)),
                          "vib_mm_s": float(2.0 + rng.normal(0, 0.02))}}
             for i in range(n)]
    assert env.send(batch).json()["accepted"] == 2 * n
    return t0


@pytest.fixture
def lenv(data_dir: Path) -> Iterator[Env]:
    gen = build_env(data_dir)
    env = next(gen)
    yield env
    gen.close()


def test_post_and_list_labels_with_roles_and_audit(lenv: Env) -> None:
    c = lenv.client
    body = {"device_id": "pump-1", "start": "2024-01-01T00:00:00Z",
            "end": "2024-01-01T00:10:00Z", "label": "cavitation", "note": "noisy"}
    r = c.post("/v1/labels", json=body, headers=lenv.auth("viewer"))
    assert r.status_code == 403
    r = c.post("/v1/labels", json=body, headers=lenv.auth("operator"))
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1 and r.json()["who"] == lenv.actor("operator")
    r = c.post("/v1/labels", json={**body, "label": "normal"}, headers=lenv.auth("operator"))
    assert r.json()["version"] == 2
    r = c.post("/v1/labels", json={**body, "label": "Bad Label!"}, headers=lenv.auth("operator"))
    assert r.status_code == 422 and r.json()["reason"] == "bad_label"
    r = c.get("/v1/labels", params={"device": "pump-1"}, headers=lenv.auth("viewer"))
    assert [x["label"] for x in r.json()] == ["normal"]
    r = c.get("/v1/labels", params={"history": "true"}, headers=lenv.auth("viewer"))
    assert [x["label"] for x in r.json()] == ["cavitation", "normal"]
    audited = [e for e in lenv.security.audit_log(50) if e.action == "label.add"]
    assert len(audited) == 2
    assert LabelStore(lenv.settings.data_dir).labels("pump-1")[0].label == "normal"


@pytest.mark.parametrize("extra, field, value", [
    ({"start_ns": 5}, "start", "2024-01-01T00:00:00Z"),          # both forms: they disagree
    ({"device_id": "bad dev!"}, "device_id", "bad dev!"),
    ({"start": None, "start_ns": -1}, "start", -1),
    ({"end": None, "end_ns": 99999999999999999999}, "end", 99999999999999999999),
])
def test_a_bad_label_names_the_field_that_is_wrong(module_env: Env, extra: dict, field: str,
                                                   value: object) -> None:
    """Check each bad label body names its own field and value (a bad device id or time
    named 'label' with the label's value, and start plus start_ns silently took start_ns:
    a label from 1970), and stores nothing."""
    lenv = module_env
    body = {"device_id": "pump-1", "start": "2024-01-01T00:00:00Z",
            "end": "2024-01-01T01:00:00Z", "label": "anomaly", **extra}
    r = lenv.client.post("/v1/labels", json=body, headers=lenv.auth("operator"))
    assert r.status_code == 422, r.text
    assert (r.json()["field"], r.json()["value"]) == (field, value)
    assert lenv.client.get("/v1/labels", headers=lenv.auth("viewer")).json() == []


def test_a_bad_time_in_a_label_body_is_called_a_body_field(module_env: Env) -> None:
    """Check a bad 'start' in the body is not called a query parameter."""
    lenv = module_env
    r = lenv.client.post("/v1/labels", headers=lenv.auth("operator"), json={
        "device_id": "pump-1", "start": "yesterday", "end": "2024-01-01T01:00:00Z",
        "label": "anomaly"})
    assert r.status_code == 422 and r.json()["field"] == "start"
    assert r.json()["detail"].startswith("Body field 'start'")


def test_label_queue_proposes_windows_with_context(lenv: Env) -> None:
    _send_history(lenv)
    c = lenv.client
    r = c.get("/v1/label-queue", params={"device": "pump-1", "k": 3},
              headers=lenv.auth("viewer"))
    assert r.status_code == 200, r.text
    q = r.json()
    assert len(q["items"]) == 3 and q["snapshot_id"].startswith("ls-")
    first = q["items"][0]
    assert set(first["context"]["values"]) == {"temp_c", "vib_mm_s"}
    ts = first["context"]["ts_ns"]
    assert ts[0] <= first["start_ns"] < first["end_ns"] <= ts[-1] + 10**9
    # the spike window is proposed, and once labelled it leaves the queue
    spikes = [it for it in q["items"] if it["alarm"]]
    assert spikes
    r = c.post("/v1/labels", json={"device_id": "pump-1", "start_ns": spikes[0]["start_ns"],
                                   "end_ns": spikes[0]["end_ns"], "label": "normal"},
               headers=lenv.auth("operator"))
    assert r.status_code == 201
    r = c.get("/v1/label-queue", params={"device": "pump-1", "k": 3},
              headers=lenv.auth("viewer"))
    assert spikes[0]["start_ns"] not in {it["start_ns"] for it in r.json()["items"]}
    r = c.get("/v1/label-queue", params={"device": "ghost"}, headers=lenv.auth("viewer"))
    assert r.status_code == 404 and r.json()["reason"] == "no_history"
    r = c.get("/v1/label-queue", params={"device": "pump-1", "strategy": "x"},
              headers=lenv.auth("viewer"))
    assert r.status_code == 422


def test_a_label_value_with_a_trailing_newline_is_a_422(lenv: Env) -> None:
    """Check 'normal\\n' is a 422 naming the field and value, on POST /v1/labels and on an
    alert's verdict: it was stored, and read as an anomaly class."""
    from edgewise.store.base import Alert

    body = {"device_id": "pump-1", "start": "2024-01-01T00:00:00Z",
            "end": "2024-01-01T00:10:00Z", "label": "normal\n"}
    p = problem(lenv.client.post("/v1/labels", json=body, headers=lenv.auth("operator")), 422)
    assert (p["field"], p["value"], p["reason"]) == ("label", "normal\n", "bad_label")
    assert "Got 'normal\\n' instead" in p["detail"]
    alert = lenv.store.add_alert(Alert("pump-1", 10**18, 10**18 + 10**9, 0.99))
    p = problem(lenv.client.post(f"/v1/alerts/{alert.id}/label", headers=lenv.auth("operator"),
                                 json={"label": "true_alarm\n"}), 422)
    assert (p["field"], p["value"]) == ("label", "true_alarm\n")
    assert "'true_alarm' or 'false_alarm'" in p["detail"]
    assert lenv.client.get("/v1/labels", params={"history": "true"},
                           headers=lenv.auth("viewer")).json() == []
    assert lenv.store.get_alert(alert.id).label is None


@pytest.mark.parametrize("end", ["2262-01-01T00:00:00Z", 9_000_000_000_000_000_000,
                                 "an hour from now"])
def test_a_label_window_ending_in_the_future_is_a_422(module_env: Env, end: str | int) -> None:
    """Check a window ending later than now plus the allowed clock skew is a 422 naming
    'end' and its value: a 'normal' label from 2000 to 2262 was stored, silenced every
    fault, emptied the label queue and applied to readings that arrived later."""
    lenv = module_env
    if end == "an hour from now":
        end = str(int(time.time()) + 3600)
    given = {"end_ns": end} if isinstance(end, int) else {"end": end}
    body = {"device_id": "pump-1", "start": "2000-01-01T00:00:00Z", "label": "normal", **given}
    p = problem(lenv.client.post("/v1/labels", json=body, headers=lenv.auth("operator")), 422)
    assert (p["field"], p["value"], p["reason"]) == ("end", end, "future_label")
    assert "300 s" in p["detail"] and "EDGEWISE_MAX_FUTURE_S" in p["detail"]
    assert lenv.client.get("/v1/labels", params={"history": "true"},
                           headers=lenv.auth("viewer")).json() == []


def test_a_label_window_ending_within_the_clock_skew_is_stored(data_dir: Path) -> None:
    """Check the bound is the gateway's own skew setting (max_future_s), not a constant."""
    gen = build_env(data_dir, max_future_s=7200.0)
    env = next(gen)
    try:
        soon = int(time.time()) + 3600
        body = {"device_id": "pump-1", "start": str(soon - 60), "end": str(soon),
                "label": "anomaly"}
        r = env.client.post("/v1/labels", json=body, headers=env.auth("operator"))
        assert r.status_code == 201, r.text
    finally:
        gen.close()


@pytest.mark.parametrize("times", [
    {"start_ns": False, "end_ns": True}, {"start_ns": 0, "end_ns": True},
    {"start_ns": 5.0, "end_ns": 10},
])
def test_json_booleans_are_no_label_times(module_env: Env, times: dict) -> None:
    """Check true/false (or 5.0) as start_ns/end_ns is a 422 naming the field: they were
    taken as 0 and 1, a label on [0, 1)."""
    lenv = module_env
    body = {"device_id": "pump-1", "label": "anomaly", **times}
    p = problem(lenv.client.post("/v1/labels", json=body, headers=lenv.auth("operator")), 422)
    bad = next(k for k, v in times.items() if type(v) is not int)
    assert (p["field"], p["value"]) == (bad, times[bad])
    assert lenv.client.get("/v1/labels", headers=lenv.auth("viewer")).json() == []


@pytest.mark.parametrize("params", [{"device": "bad id!"},
                                    {"device": "bad id!", "history": "true"}])
def test_listing_labels_of_a_device_id_no_device_can_have_is_a_422(module_env: Env,
                                                                   params: dict) -> None:
    """Check GET /v1/labels?device= refuses an id no device could have, naming the field,
    as /v1/label-queue does (it answered 200 [], as for a device without labels)."""
    lenv = module_env
    r = lenv.client.get("/v1/labels", params=params, headers=lenv.auth("viewer"))
    body = problem(r, 422)
    assert (body["field"], body["value"], body["reason"]) == ("device", "bad id!", "bad_device")
    r = lenv.client.get("/v1/labels", params={"device": "pump-9"}, headers=lenv.auth("viewer"))
    assert (r.status_code, r.json()) == (200, [])  # a good id without labels: none
