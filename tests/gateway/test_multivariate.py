"""The gateway's per-device detector is edgewise.detect's default multivariate one, and its
per-metric attribution reaches the alert's drivers."""

from __future__ import annotations

import json

import numpy as np

from edgewise.config import Settings
from edgewise.detect import default_multivariate
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store

T0 = 1_700_000_000


def test_relation_break_alert_names_the_metrics_that_drove_it(tmp_path) -> None:
    """Check a reading normal per metric but off the flow/current relation raises an alert
    whose top driver is one of the two related metrics (temp, unrelated, is not)."""
    store = open_store(f"duckdb:///{tmp_path / 'mv.duckdb'}")
    p = Pipeline(store, Settings(data_dir=tmp_path), detect_async=False)
    try:
        rng = np.random.default_rng(0)
        q = rng.normal(100, 5, 600)
        rows = np.column_stack([q, 0.3 * q + rng.normal(0, 0.2, 600), rng.normal(50, 0.5, 600)])
        msgs = [("pump-1", json.dumps({"ts": T0 + i, "seq": i + 1, "metrics": {
            "flow": float(f), "current": float(c), "temp": float(t)}}).encode())
            for i, (f, c, t) in enumerate(rows)]
        # in batches of 50 messages, one store commit each, as the MQTT transport commits
        # them (one DuckDB commit per message was 95% of this test's time); detection still
        # scores every reading in arrival order
        for k in range(0, len(msgs), 50):
            assert all(not isinstance(r, Exception) for r in p.ingest_many(msgs[k:k + 50]))
        assert type(p._mv["pump-1"]) is type(default_multivariate())
        before = {a.id for a in store.list_alerts(device_id="pump-1")}
        assert len(before) <= 3  # few false alarms on normal data
        # current 2 sd below its mean given flow = 105 (31.5 expected): in range alone
        body = {"ts": T0 + 700, "seq": 601,  # 100 s later: not merged into an earlier alert
                "metrics": {"flow": 105.0, "current": 28.5, "temp": 50.0}}
        p.ingest("pump-1", json.dumps(body).encode())
        p.flush()
        (alert,) = [a for a in store.list_alerts(device_id="pump-1") if a.id not in before]
        assert alert.start_ns == (T0 + 700) * 10**9
        top = max(alert.drivers, key=alert.drivers.get)
        assert top in ("current", "flow"), alert.drivers
        assert alert.drivers.get("temp", 0.0) < alert.drivers[top]
    finally:
        p.close()
        store.close()
