"""Labelling an alert on the dashboard also labels its window in the label store."""

from __future__ import annotations

import time

import numpy as np

from edgewise.label.store import LabelStore
from edgewise.label.workflow import history_from_store, train_with_labels
from edgewise.store.base import Alert
from tests.server.conftest import Env


def test_alert_verdicts_become_audited_window_labels_used_by_training(env: Env) -> None:
    """Check true alarm -> 'anomaly', then false alarm -> 'normal' (version 2) over the alert's
    span, audited as label.add, counted by train --with-labels; seq gaps get no label."""
    t0 = int(time.time()) - 600
    rng = np.random.default_rng(0)
    batch = [{"ts": t0 + i, "seq": i + 1,
              "metrics": {"temp_c": float(40 + rng.normal(0, 0.2) + (8 if 400 <= i < 404 else 0)),
                          "vib_mm_s": float(2.0 + rng.normal(0, 0.02))}} for i in range(600)]
    assert env.send(batch).status_code == 200
    alert = env.store.add_alert(Alert(env.device, (t0 + 400) * 10**9, (t0 + 403) * 10**9, 0.99,
                                      drivers={"temp_c": 0.99}))
    r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                        json={"label": "true_alarm", "note": "bearing"})
    assert r.status_code == 200, r.text
    assert r.json()["window_label"]["label"] == "anomaly"
    labels = LabelStore(env.settings.data_dir)
    try:
        (lab,) = labels.labels(env.device)
        assert (lab.label, lab.version, lab.who) == ("anomaly", 1, env.actor("operator"))
        assert lab.start_ns == alert.start_ns and lab.end_ns > alert.end_ns
        assert alert.id in lab.note and "bearing" in lab.note
        audit = [(e.action, e.actor) for e in env.security.audit_log(20)]
        assert ("label.add", env.actor("operator")) in audit

        out = train_with_labels(history_from_store(env.store, env.device), env.device, labels,
                                env.settings.data_dir)
        assert out["n_labels"] >= 1

        r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                            json={"label": "false_alarm"})
        assert r.json()["window_label"] == {**r.json()["window_label"], "label": "normal",
                                            "version": 2}
        (lab,) = labels.labels(env.device)
        assert (lab.label, lab.version) == ("normal", 2)
        assert len(labels.history(env.device)) == 2

        gap = env.store.add_alert(Alert(env.device, t0 * 10**9, t0 * 10**9, 1.0, kind="seq_gap",
                                        message="messages seq 5..6 missing (2)"))
        r = env.client.post(f"/v1/alerts/{gap.id}/label", headers=env.auth("operator"),
                            json={"label": "true_alarm"})
        assert r.status_code == 200 and r.json()["window_label"] is None
        assert len(labels.history(env.device)) == 2
    finally:
        labels.close()


def test_relabelling_an_alert_whose_span_grew_supersedes_its_earlier_verdict(env: Env) -> None:
    """Check the newest verdict on an alert is its only current window label after the
    alert's span grew: the first verdict's window ([start, old end]) stayed current beside
    the new one, so the alert was both 'anomaly' and 'normal'."""
    t0 = (int(time.time()) - 600) * 10**9
    alert = env.store.add_alert(Alert(env.device, t0, t0 + 3 * 10**9, 0.99))
    r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                        json={"label": "true_alarm"})
    assert r.status_code == 200, r.text
    env.store.update_alert(alert.id, end_ns=t0 + 30 * 10**9)   # the alert went on
    r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                        json={"label": "false_alarm"})
    assert r.status_code == 200, r.text
    assert (r.json()["window_label"]["label"], r.json()["window_label"]["version"]) == (
        "normal", 2)
    with LabelStore(env.settings.data_dir) as labels:
        assert [(x.start_ns, x.end_ns, x.label, x.source) for x in labels.labels()] == [
            (t0, t0 + 30 * 10**9 + 1, "normal", f"alert:{alert.id}")]
        assert [(x.label, x.current) for x in labels.history()] == [
            ("anomaly", False), ("normal", True)]
    r = env.client.get("/v1/labels", headers=env.auth("viewer"))
    assert [x["source"] for x in r.json()] == [f"alert:{alert.id}"]


def test_relabelling_an_alert_without_a_note_keeps_its_note(env: Env) -> None:
    """Check a verdict given without a note keeps the note given before (it was wiped to
    null), and the window label still carries it; an explicit note replaces it."""
    t0 = (int(time.time()) - 600) * 10**9
    alert = env.store.add_alert(Alert(env.device, t0, t0 + 3 * 10**9, 0.99))
    r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                        json={"label": "true_alarm", "note": "bearing noise"})
    assert r.json()["note"] == "bearing noise"
    r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                        json={"label": "false_alarm"})
    assert r.status_code == 200, r.text
    assert (r.json()["label"], r.json()["note"]) == ("false_alarm", "bearing noise")
    assert env.store.get_alert(alert.id).note == "bearing noise"
    with LabelStore(env.settings.data_dir) as labels:
        (lab,) = labels.labels()
        assert lab.note == f"alert {alert.id} labelled false_alarm: bearing noise"
    r = env.client.post(f"/v1/alerts/{alert.id}/label", headers=env.auth("operator"),
                        json={"label": "false_alarm", "note": "a test run"})
    assert r.json()["note"] == "a test run"
