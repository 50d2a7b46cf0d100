"""Alert lifecycle hunt (session 48): what the audit log says of a verdict.

A verdict's ``alert.label`` audit entry said only the label given: relabelling a true alarm
a false alarm left no trace of what it replaced, a note given or changed left none, and
the acknowledgement a verdict makes of an open alert (written in the same transaction,
never audited as ``alert.ack``) was not in the audit log at all, so an auditor could not
tell who acknowledged an alert that was labelled first.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from edgewise.store.base import Alert
from tests.server.conftest import Env

S = 10**9


def _alert(env: Env) -> Alert:
    t0 = time.time_ns() - 600 * S
    return env.store.add_alert(Alert(env.device, t0, t0 + 10 * S, 0.9, drivers={"x": 1.0}))


def _label_entries(env: Env, alert_id: str) -> list[dict[str, Any]]:
    return [e.detail for e in reversed(env.security.audit_log(100))
            if e.action == "alert.label" and e.target == alert_id]


def test_a_verdict_audit_entry_says_what_it_replaced_and_acknowledged(any_env: Env) -> None:
    """Check each verdict's audit entry names the verdict it replaced, whether it
    acknowledged the alert, and a note's length (not its text)."""
    env = any_env
    a = _alert(env)
    url = f"/v1/alerts/{a.id}/label"
    r = env.client.post(url, headers=env.auth("operator"),
                        json={"label": "true_alarm", "note": "bearing worn"})
    assert r.status_code == 200, r.text
    r = env.client.post(url, headers=env.auth("admin"), json={"label": "false_alarm"})
    assert r.status_code == 200, r.text
    first, second = _label_entries(env, a.id)
    assert first["label"] == "true_alarm" and first["previous_label"] is None, first
    assert first["acknowledged"] is True and first["note_chars"] == len("bearing worn"), first
    assert "bearing worn" not in str(first)  # the note's text stays out of the audit log
    assert second["label"] == "false_alarm", second
    assert second["previous_label"] == "true_alarm", second
    assert second["acknowledged"] is False and "note_chars" not in second, second
    assert env.client.get("/v1/audit/verify", headers=env.auth("admin")).json()["ok"] is True


def test_a_verdict_on_an_alert_acknowledged_before_does_not_claim_the_ack(env: Env) -> None:
    """Check a verdict on an alert another operator acknowledged says it acknowledged
    nothing: every acknowledgement is audited once, by whoever made it."""
    a = _alert(env)
    r = env.client.post(f"/v1/alerts/{a.id}/ack", headers=env.auth("admin"))
    assert r.status_code == 200, r.text
    r = env.client.post(f"/v1/alerts/{a.id}/label", headers=env.auth("operator"),
                        json={"label": "true_alarm"})
    assert r.status_code == 200 and r.json()["acked_by"] == "test-admin", r.text
    (entry,) = _label_entries(env, a.id)
    assert entry["acknowledged"] is False and entry["previous_label"] is None, entry
    acks = [e.actor for e in env.security.audit_log(100)
            if e.action == "alert.ack" and e.target == a.id]
    assert acks == [env.actor("admin")], acks



def test_an_ack_landing_just_before_a_verdict_is_audited_once(
    any_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Check an acknowledgement that lands after a verdict read the open alert and before
    it wrote is audited as that ack's alone: the verdict's entry does not claim it too."""
    env = any_env
    a = _alert(env)
    real = env.store.last_alert_event_id

    def ack_lands(*args: Any) -> int:
        mark = real(*args)
        r = env.client.post(f"/v1/alerts/{a.id}/ack", headers=env.auth("admin"))
        assert r.status_code == 200, r.text
        return mark

    monkeypatch.setattr(env.store, "last_alert_event_id", ack_lands)
    r = env.client.post(f"/v1/alerts/{a.id}/label", headers=env.auth("operator"),
                        json={"label": "true_alarm"})
    assert r.status_code == 200 and r.json()["acked_by"] == "test-admin", r.text
    (entry,) = _label_entries(env, a.id)
    assert entry["acknowledged"] is False, entry
