"""The same verdict again on an alert that absorbed others adds no window-label version.

The alert route passes the absorbed alerts' sources as ``supersedes`` for every verdict on
a surviving alert; a repeat of the same verdict wrote a new version each time (the
snapshot id moved, the audit log grew), where a plain alert's repeat added none.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgewise.label.store import LabelStore
from edgewise.store.base import Alert
from tests.server.conftest import Env

S = 10**9


def _verdict(env: Env, alert_id: str, label: str = "true_alarm") -> dict:
    r = env.client.post(f"/v1/alerts/{alert_id}/label", headers=env.auth("operator"),
                        json={"label": label, "note": "same"})
    assert r.status_code == 200, r.text
    return r.json()["window_label"]


def test_repeating_a_surviving_alerts_verdict_adds_no_version(henv: Env) -> None:
    """Check the same verdict three times on an alert that absorbed another returns its
    one window label each time (same id, version 1), as a plain alert's repeat does: the
    label set's snapshot id stays, and one ``label.add`` is audited per alert."""
    t0 = time.time_ns() - 600 * S
    a = henv.store.add_alert(Alert(henv.device, t0, t0 + 3 * S, 0.99))
    b = henv.store.add_alert(Alert(henv.device, t0 + 10 * S, t0 + 12 * S, 0.99))
    c = henv.store.add_alert(Alert(henv.device, t0 + 100 * S, t0 + 103 * S, 0.99))
    henv.store.merge_alert(b.id, a.id, end_ns=t0 + 12 * S)
    with LabelStore(henv.settings.data_dir) as labels:
        for alert in (c, a):
            first = _verdict(henv, alert.id)
            snap = labels.snapshot_id(record=False)
            assert [_verdict(henv, alert.id) for _ in range(2)] == [first, first]
            assert first["version"] == 1 and labels.snapshot_id(record=False) == snap
            assert [(x.version, x.current) for x in labels.history()
                    if x.source == f"alert:{alert.id}"] == [(1, True)]
    added = [x for x in henv.security.audit_log(100) if x.action == "label.add"]
    assert len(added) == 2


def test_a_verdict_whose_merged_alert_is_still_labelled_supersedes_it(henv: Env) -> None:
    """Check the same answer is still written as a new version while an absorbed alert's
    own verdict is current (merged after the survivor's verdict): it supersedes that
    verdict, and a repeat after adds nothing."""
    t0 = time.time_ns() - 600 * S
    a = henv.store.add_alert(Alert(henv.device, t0, t0 + 3 * S, 0.99))
    b = henv.store.add_alert(Alert(henv.device, t0 + 10 * S, t0 + 12 * S, 0.99))
    first = _verdict(henv, a.id)
    _verdict(henv, b.id)  # b's own verdict, then b is merged into a (a's span kept)
    henv.store.merge_alert(b.id, a.id)
    again = _verdict(henv, a.id)
    assert again["id"] != first["id"] and again["version"] == 2
    with LabelStore(henv.settings.data_dir) as labels:
        assert [x.source for x in labels.labels(henv.device)] == [f"alert:{a.id}"]
    assert _verdict(henv, a.id) == again


def test_add_with_supersedes_returns_the_same_answer_when_none_is_current(
        tmp_path: Path) -> None:
    """Check ``LabelStore.add`` with ``supersedes``: the same label and note again return
    the stored label (no version) when none of those sources has a current label; a
    source with one is superseded by a new version."""
    with LabelStore(tmp_path) as labels:
        one = labels.add("p", 0, 10, "anomaly", note="n", source="alert:a",
                         supersedes=["alert:b"])
        assert labels.add("p", 0, 10, "anomaly", note="n", source="alert:a",
                          supersedes=["alert:b"]) == one
        labels.add("p", 20, 30, "normal", source="alert:b")
        two = labels.add("p", 0, 10, "anomaly", note="n", source="alert:a",
                         supersedes=["alert:b"])
        assert two.version == 2 and [x.id for x in labels.labels("p")] == [two.id]
