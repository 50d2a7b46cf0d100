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
        assert (lab.label, lab.version, lab.who) == ("anomaly", 1, "token:test-operator")
        assert lab.start_ns == alert.start_ns and lab.end_ns > alert.end_ns
        assert alert.id in lab.note and "bearing" in lab.note
        audit = [(e.action, e.actor) for e in env.security.audit_log(20)]
        assert ("label.add", "token:test-operator") in audit

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
