"""An alert's window label follows the alert's span as the gateway grows or merges it.

An operator's verdict on an anomaly alert (``POST /v1/alerts/{id}/label``) writes a window
label (source ``alert:<id>``) over the alert's span as stored then. The gateway's alert
manager kept extending the alert while the fault lasted, and merged alerts (the survivor
taking over an absorbed alert's verdict), but the window label stayed over the span of
the moment of the verdict: training saw the rest of the fault unlabelled, and the
labelling queue could ask about it again. Now the gateway rewrites the window label over
the span as stored (a new version under the same source, by ``gateway``), off the
detection path: a label file held by another writer leaves it queued, a restart checks
it again, and a deleted device's labels are not brought back.

Each test runs the real pipeline (detection inline, a fixed-limit detector), the real
alert route, a real ``labels.sqlite`` in the data dir and a real audit log.
"""

from __future__ import annotations

import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.label.store import LabelStore
from edgewise.security import Security
from edgewise.server.app import create_app
from edgewise.store import open_store
from edgewise.store.base import Alert, Store
from edgewise.telemetry import Reading
from tests.test_alerts_hunt import Limit

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

S = 10**9


@dataclass
class Gw:
    """A gateway's parts: store, audit log, pipeline and the HTTP app over them."""

    store: Store
    security: Security
    pipeline: Pipeline
    client: TestClient
    op: dict[str, str]
    admin: dict[str, str]
    data_dir: Path
    t0: int

    def fault(self, secs: Iterable[float]) -> list[Alert]:
        """pump-1's readings at ``t0 + k`` s, anomalous (500 > the limit of 100), scored
        and their alerts written (``flush``: the label sync runs too)."""
        out = self.pipeline.detect([Reading("pump-1", "temp", self.t0 + int(k * S), 500.0)
                                    for k in secs])
        self.pipeline.flush()
        return out

    def label(self, alert_id: str, verdict: str, note: str | None = None) -> dict:
        body = {"label": verdict, **({"note": note} if note else {})}
        r = self.client.post(f"/v1/alerts/{alert_id}/label", json=body, headers=self.op)
        assert r.status_code == 200, r.text
        return r.json()["window_label"]

    def windows(self) -> list[tuple[str, float, float, str, str]]:
        """pump-1's current labels: (source, start s, end s past t0, label, who)."""
        with LabelStore(self.data_dir) as labels:
            return [(x.source, (x.start_ns - self.t0) / S, (x.end_ns - self.t0) / S,
                     x.label, x.who) for x in labels.labels("pump-1")]


def _pipeline(store: Store, data_dir: Path, security: Security) -> Pipeline:
    return Pipeline(store, Settings.load(env={}, data_dir=data_dir), security,
                    detect_async=False, detector_factory=Limit, multivariate_factory=None,
                    fast_gate=None, cleaner=None)


@pytest.fixture
def gw(data_dir: Path) -> Iterator[Gw]:
    settings = Settings.load(env={}, data_dir=data_dir)
    security = Security(data_dir)
    store = open_store("duckdb://:memory:")  # a restart here: a new pipeline on it
    pipeline = _pipeline(store, data_dir, security)
    app = create_app(store=store, security=security, pipeline=pipeline, settings=settings)
    op = {"Authorization": f"Bearer {security.create_token('operator', 'test-operator')}"}
    admin = {"Authorization": f"Bearer {security.create_token('admin', 'test-admin')}"}
    security.add_device("pump-1")
    try:
        with TestClient(app) as client:
            yield Gw(store, security, pipeline, client, op, admin, data_dir,
                     (int(time.time()) - 3600) * S)
    finally:
        pipeline.close()
        store.close()
        security.close()


E = 1 / S  # a window ends 1 ns after the alert's last reading


def test_a_labelled_alert_that_grows_is_labelled_over_all_of_it(gw: Gw) -> None:
    """Check a true alarm's window label is rewritten over the alert's span once the
    fault goes on (it stayed over the first 10 s of a 31 s alert), by the gateway, as a
    new version under the same source, audited; once, not again at every flush."""
    (a,) = gw.fault(range(10))
    win = gw.label(a.id, "true_alarm", note="seal leak")
    assert (win["start_ns"], win["end_ns"]) == (gw.t0, gw.t0 + 9 * S + 1)
    gw.fault(range(10, 31))  # the fault goes on
    assert gw.store.get_alert(a.id).end_ns == gw.t0 + 30 * S
    assert gw.windows() == [(f"alert:{a.id}", 0.0, 30 + E, "anomaly", "gateway")]
    gw.pipeline.flush()
    gw.fault([30])  # a reading again at the end: the span does not move
    with LabelStore(gw.data_dir) as labels:
        versions = [(x.version, x.current) for x in labels.history("pump-1")]
        newest = labels.labels("pump-1")[0]
    assert versions == [(1, False), (2, True)], "a version per flush"
    assert "follows the alert's span" in newest.note and "seal leak" in newest.note
    assert [e.actor for e in gw.security.audit_log(100)
            if e.action == "label.add"].count("gateway") == 1


def test_a_merge_gives_the_survivor_a_window_label_over_both(gw: Gw) -> None:
    """Check a late run that bridges a false alarm to an earlier alert (merged into it,
    which takes over its verdict) labels the survivor's whole span ``normal`` in place of
    the absorbed alert's window (which stayed over its own 5 s, the rest unlabelled)."""
    (a,) = gw.fault(range(5))
    (b,) = gw.fault(range(200, 205))
    assert a.id != b.id
    gw.label(b.id, "false_alarm")
    gw.fault(range(5, 200, 30))  # resent late: one run from a to b
    assert gw.store.get_alert(b.id).merged_into == a.id
    assert gw.store.get_alert(a.id).label == "false_alarm"
    assert gw.windows() == [(f"alert:{a.id}", 0.0, 204 + E, "normal", "gateway")]


def test_a_busy_label_file_never_holds_detection_and_is_tried_again(gw: Gw) -> None:
    """Check a label import holding ``labels.sqlite`` neither holds up scoring nor loses
    the rewrite: the alert grows and is stored at once, its window label is queued, and
    written once the file is free."""
    (a,) = gw.fault(range(10))
    gw.label(a.id, "true_alarm")
    gw.pipeline.label_sync.timeout_s = 0.2  # opened at its first write, below
    holder = sqlite3.connect(gw.data_dir / "labels.sqlite", isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")  # an 'edgewise label import' of many rows
    try:
        started = time.monotonic()
        gw.pipeline.detect([Reading("pump-1", "temp", gw.t0 + k * S, 500.0)
                            for k in range(10, 31)])
        gw.pipeline.alerts.flush(force=True)
        took = time.monotonic() - started
        assert gw.store.get_alert(a.id).end_ns == gw.t0 + 30 * S
        gw.pipeline.flush()  # a pass: the label file is held
        assert gw.pipeline.label_sync.pending() == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert took < 0.5, took
    assert [w[:4] for w in gw.windows()] == [(f"alert:{a.id}", 0.0, 9 + E, "anomaly")]
    gw.pipeline.flush()
    assert gw.pipeline.label_sync.pending() == 0
    assert gw.windows() == [(f"alert:{a.id}", 0.0, 30 + E, "anomaly", "gateway")]


def test_a_rewrite_pending_at_a_crash_is_made_at_the_next_start(gw: Gw) -> None:
    """Check the next start rewrites the window label of an alert that grew before a
    crash while the rewrite was still queued, and rewrites none that matches."""
    (a,) = gw.fault(range(10))
    gw.label(a.id, "true_alarm")
    again = _pipeline(gw.store, gw.data_dir, gw.security)  # a start with nothing to mend
    again.flush()
    again.close()
    with LabelStore(gw.data_dir) as labels:
        assert len(labels.history("pump-1")) == 1
    gw.pipeline.detect([Reading("pump-1", "temp", gw.t0 + k * S, 500.0)
                        for k in range(10, 31)])
    gw.pipeline.alerts.flush(force=True)  # the grown span is stored ...
    assert gw.pipeline.label_sync.pending() == 1
    gw.pipeline.label_sync.forget("pump-1")  # ... and the process dies: the queue is lost
    again = _pipeline(gw.store, gw.data_dir, gw.security)
    try:
        again.flush()
    finally:
        again.close()
    assert gw.windows() == [(f"alert:{a.id}", 0.0, 30 + E, "anomaly", "gateway")]


def test_a_deleted_devices_window_label_is_not_brought_back(gw: Gw) -> None:
    """Check a device deleted with its data while a rewrite of its alert's window label
    is queued leaves no label of it, though the queue is told of the alert again."""
    (a,) = gw.fault(range(10))
    gw.label(a.id, "true_alarm")
    grown = gw.pipeline.detect([Reading("pump-1", "temp", gw.t0 + k * S, 500.0)
                                for k in range(10, 31)])
    gw.pipeline.alerts.flush(force=True)
    assert gw.pipeline.label_sync.pending() == 1
    r = gw.client.delete("/v1/devices/pump-1", headers=gw.admin)
    assert r.status_code == 200 and r.json()["labels_deleted"] == 1, r.text
    gw.pipeline.label_sync.note(grown[0])  # told again, late
    gw.pipeline.flush()
    with LabelStore(gw.data_dir) as labels:
        assert labels.history("pump-1") == []
