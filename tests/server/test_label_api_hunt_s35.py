"""Labels API fixes of session 35: a label file held by another writer is a 503 with
nothing written (the alert route committed the verdict, then failed on its window label),
``GET /v1/labels`` pages with a cursor and a Link header, and notes stay out of the audit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from edgewise.label.store import LabelStore
from edgewise.store.base import Alert
from tests.conftest import write_locked
from tests.server.conftest import Env, problem

S = 10**9


@contextmanager
def _label_file_held(env: Env) -> Iterator[None]:
    """The app's label file write-locked by another connection (an ``edgewise label
    import`` in another process), the app's label store waiting 0.3 s for it, not 10."""
    labels = LabelStore(env.settings.data_dir, security=env.security)
    labels._db.execute("PRAGMA busy_timeout=300")
    env.client.app.state.labels = labels
    with write_locked(labels.path):
        yield


def _anomaly_alert(env: Env) -> Alert:
    t0 = (int(time.time()) - 3600) * S
    return env.store.add_alert(Alert(env.device, t0, t0 + 120 * S, 0.99,
                                     drivers={"temp_c": 0.99}))


def _busy(resp: object, path: Path) -> None:
    body = problem(resp, 503)
    assert body["reason"] == "labels_busy" and str(path) in body["detail"], body
    assert resp.headers["Retry-After"] == "10"  # type: ignore[attr-defined]


def test_an_alert_verdict_with_the_label_file_held_is_a_503_that_writes_nothing(
        env: Env) -> None:
    """Check the verdict is not committed (nor its webhook event queued) when its window
    label cannot be written: it was a 500 after 11 s, the alert said false_alarm and its
    webhook fired, and training never saw the label. Once the file is free, it labels."""
    alert = _anomaly_alert(env)
    events = len(env.store.alert_events())
    op = env.auth("operator")
    with _label_file_held(env):
        r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=op,
                            json={"label": "false_alarm", "note": "valve test"})
        _busy(r, env.settings.data_dir / "labels.sqlite")
    got = env.client.get(f"/v1/alerts/{alert.id}", headers=env.auth("viewer")).json()
    assert (got["label"], got["status"]) == (None, "open")
    assert len(env.store.alert_events()) == events  # no webhook event
    assert not [e for e in env.security.audit_log(50) if e.action == "alert.label"]
    r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=op,
                        json={"label": "false_alarm", "note": "valve test"})
    assert r.status_code == 200, r.text
    assert r.json()["window_label"]["label"] == "normal"
    with LabelStore(env.settings.data_dir) as labels:
        assert [(x.label, x.source) for x in labels.labels(env.device)] == [
            ("normal", f"alert:{alert.id}")]


def test_a_seq_gap_verdict_does_not_wait_for_the_label_file(env: Env) -> None:
    """Check a verdict that writes no window label (seq gap) is not held up by it."""
    t0 = (int(time.time()) - 3600) * S
    gap = env.store.add_alert(Alert(env.device, t0, t0 + 60 * S, 1.0, kind="seq_gap"))
    with _label_file_held(env):
        r = env.client.post(f"/v1/alerts/{gap.id}/label", headers=env.auth("operator"),
                            json={"label": "true_alarm"})
    assert r.status_code == 200 and r.json()["window_label"] is None, r.text


def test_a_verdict_refused_by_a_merge_meanwhile_leaves_no_window_label(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check the window label written under the held lock is rolled back when the verdict
    is refused (a merge landed while the request ran: 409)."""
    a, b = _anomaly_alert(env), _anomaly_alert(env)
    acknowledge = env.store.acknowledge_alert

    def merge_first(alert_id: str, by: str, **changes: object) -> object:
        env.store.merge_alert(b.id, a.id)
        return acknowledge(alert_id, by, **changes)

    monkeypatch.setattr(env.store, "acknowledge_alert", merge_first)
    r = env.client.post(f"/v1/alerts/{b.id}/label", headers=env.auth("operator"),
                        json={"label": "true_alarm"})
    assert problem(r, 409)["reason"] == "merged_alert"
    with LabelStore(env.settings.data_dir) as labels:
        assert labels.history() == []


def test_a_label_posted_with_the_label_file_held_is_a_503(env: Env) -> None:
    """Check POST /v1/labels names the held label file (503, Retry-After), not a 500."""
    body = {"device_id": "pump-1", "start": "2024-01-01T00:00:00Z",
            "end": "2024-01-01T00:10:00Z", "label": "normal"}
    with _label_file_held(env):
        r = env.client.post("/v1/labels", json=body, headers=env.auth("operator"))
        _busy(r, env.settings.data_dir / "labels.sqlite")
    assert env.client.get("/v1/labels", headers=env.auth("viewer")).json() == []
    r = env.client.post("/v1/labels", json=body, headers=env.auth("operator"))
    assert r.status_code == 201, r.text


def _pages(env: Env, url: str) -> tuple[list[dict], int]:
    """Every label of ``url`` following its Link headers, and the number of pages."""
    found: list[dict] = []
    pages = 0
    while url:
        r = env.client.get(url, headers=env.auth("viewer"))
        assert r.status_code == 200, r.text
        found += r.json()
        pages += 1
        link = r.headers.get("Link")
        url = link[1:link.index(">")] if link else ""
        if link:  # relative to the request's URL: resolved against it
            assert link.endswith('>; rel="next"') and url.startswith("labels?")
            url = str(r.request.url.join(url))
    return found, pages


def test_labels_are_listed_a_page_at_a_time_with_a_link_to_the_next(env: Env) -> None:
    """Check limit and cursor: following Link lists every label once, in the unpaged
    order, with the request's filters; small sets come whole, without a Link."""
    env.security.add_device("pump-2")
    with LabelStore(env.settings.data_dir) as labels:
        labels.add_many([(d, t * S, t * S + 1, "normal", "") for d in ("pump-1", "pump-2")
                         for t in range(12)])
        labels.add_many([("pump-1", t * S, t * S + 1, "anomaly", "") for t in range(5)])
    v = env.auth("viewer")
    whole = env.client.get("/v1/labels", headers=v)
    assert len(whole.json()) == 24 and "Link" not in whole.headers
    found, pages = _pages(env, "/v1/labels?limit=5")
    assert (found, pages) == (whole.json(), 5)
    found, pages = _pages(env, "/v1/labels?device=pump-1&limit=4")
    assert found == [x for x in whole.json() if x["device_id"] == "pump-1"] and pages == 3
    history = env.client.get("/v1/labels?history=true", headers=v).json()
    assert len(history) == 29
    assert _pages(env, "/v1/labels?history=true&limit=10") == (history, 3)
    r = env.client.get("/v1/labels?limit=10", headers=v)
    cursor = parse_qs(urlsplit(r.headers["Link"][1:].split(">")[0]).query)["cursor"][0]
    for bad in ("nope", cursor):  # not a cursor; one of the current list, for history
        r = env.client.get("/v1/labels", params={"history": "true", "cursor": bad},
                           headers=v)
        assert problem(r, 422)["reason"] == "bad_cursor"
    assert problem(env.client.get("/v1/labels?limit=10001", headers=v), 422)["field"] \
        == "limit"


def test_an_alert_verdicts_note_is_audited_as_its_length_only(env: Env) -> None:
    """Check a note given over the API (a label's, an alert verdict's) is kept in the
    labels but not in the audit log, which outlives the device's deletion."""
    alert = _anomaly_alert(env)
    op = env.auth("operator")
    note = "operator Jane saw smoke at valve V-12"
    assert env.client.post(f"/v1/alerts/{alert.id}/label", headers=op,
                           json={"label": "true_alarm", "note": note}).status_code == 200
    r = env.client.post("/v1/labels", headers=op, json={
        "device_id": "pump-1", "start": "2024-01-01T00:00:00Z",
        "end": "2024-01-01T00:10:00Z", "label": "normal", "note": note})
    assert r.status_code == 201 and r.json()["note"] == note
    added = [e for e in env.security.audit_log(50) if e.action == "label.add"]
    assert len(added) == 2
    assert not any(note in json.dumps(e.detail) for e in env.security.audit_log(50))
    # its length only: an unsalted hash of a short note is undone by a word list
    assert len(note) in {e.detail.get("note_chars") for e in added}
    assert not any("note_sha256" in e.detail for e in added)


def test_a_device_deleted_while_its_label_file_is_held_is_a_503_then_finished(
        env: Env) -> None:
    """Check DELETE /v1/devices/{id} with the label file held by another writer answers a
    503 ``labels_busy`` saying the readings went and the labels did not, keeps the id
    refused, and a later DELETE deletes the labels (it was a 500 with the id refused and
    nothing said)."""
    with LabelStore(env.settings.data_dir, security=env.security) as labels:
        labels.add(env.device, 1_000 * S, 2_000 * S, "anomaly")
    admin = env.auth("admin")
    with _label_file_held(env):
        r = env.client.delete(f"/v1/devices/{env.device}", headers=admin)
        body = problem(r, 503)
        assert body["reason"] == "labels_busy" and body["data_kept"] is True, body
        assert "labels were NOT deleted" in body["detail"]
        assert r.headers["Retry-After"] == "10"
    again = env.client.post("/v1/devices", headers=admin, json={"name": env.device})
    assert again.status_code == 409, again.text  # refused until its labels are deleted
    r = env.client.delete(f"/v1/devices/{env.device}", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["labels_deleted"] == 1
    with LabelStore(env.settings.data_dir) as labels:
        assert labels.labels(env.device) == []
