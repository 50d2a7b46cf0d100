"""Session 49: a device read every 5 minutes had every anomalous reading of a lasting
fault raise an alert of its own (an alert storm).

A device's anomalous readings joined one alert only when at most ``merge_gap_s`` (60 s)
apart, and a device read every 300 s can never have two readings that close. The gap
is now about 2.5 of the typical intervals of the metrics driving the readings (the fast
gate's ``interval_s``), where that is longer than ``merge_gap_s``: 750 s there. Devices
read every 10 s or faster keep 60 s.

Through the real pipeline (one reading a message, as a slow device sends them) into a
real store, scored by the ``ewzscore`` detector (a setting, ``EDGEWISE_DETECTOR``).
"""

from __future__ import annotations

import json
import math
import random
import time

import pytest

from edgewise.alerts import AlertManager
from edgewise.config import Settings
from edgewise.errors import InvalidParameterError
from edgewise.gateway.pipeline import Pipeline, per_metric_factory
from edgewise.store import open_store

S = 10**9


def _device(step_s: int, faults: list[tuple[range, float]], n: int = 100,
            seed: int = 1) -> tuple[list[tuple[int, int]], list[object]]:
    """``n`` readings of one sensor (20 +- 0.5) ``step_s`` apart, each sent in its own
    message as it is read; within each fault's range the readings swing ever further off
    (``scale`` times 10, 20, 30 ... the other way each reading). Return its alerts' spans
    in readings from the first ``(start, end)``, oldest first, and the alerts."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings(), detect_async=False,
                 detector_factory=per_metric_factory("ewzscore"))
    rng = random.Random(seed)
    t0 = time.time_ns() // S - (n + 10) * step_s
    try:
        for i in range(n):
            v = 20 + rng.gauss(0, 0.5)
            for span, scale in faults:
                if i in span:
                    k = i - span.start
                    v += scale * (-1) ** k * (10 + 10 * k)
            body = json.dumps({"ts": t0 + i * step_s, "metrics": {"temp": round(v, 3)}})
            p.ingest_many([("dev", body.encode(), (t0 + i * step_s + 1) * S)], via="http")
        p.close()
        alerts = sorted(store.list_alerts("dev", limit=1000), key=lambda a: a.start_ns)
        spans = [((a.start_ns // S - t0) // step_s, (a.end_ns // S - t0) // step_s)
                 for a in alerts]
        return spans, list(alerts)
    finally:
        p.close()
        store.close()


def test_a_lasting_fault_of_a_device_read_every_5_minutes_is_one_alert() -> None:
    # six anomalous readings in a row, 300 s apart: six alerts before, one now, spanning
    # the first to the last of them
    spans, alerts = _device(300, [(range(60, 68), 1.0)])
    assert spans == [(60, 65)], spans
    (a,) = alerts
    assert a.kind == "anomaly" and a.merged_into is None and a.status == "open"


def test_two_faults_an_hour_apart_of_a_device_read_every_5_minutes_stay_two_alerts() -> None:
    # the second fault an hour after the first (12 readings): far past 2.5 intervals
    spans, _ = _device(300, [(range(60, 68), 1.0), (range(77, 85), 10.0)])
    assert len(spans) == 2, spans
    assert spans[0] == (60, 65) and spans[1][0] == 77, spans


def test_a_device_read_every_10_s_keeps_the_60_s_merge_gap() -> None:
    # two faults of a 10 s device 70 s apart (readings 63 and 70): two alerts, as before
    # (2.5 intervals is 25 s, under merge_gap_s); readings 10 s apart still join one
    spans, _ = _device(10, [(range(60, 64), 1.0), (range(70, 74), 10.0)])
    assert len(spans) == 2, spans
    assert spans[0][0] == 60 and spans[1][0] == 70 and spans[0][1] <= 63, spans


def test_the_alert_manager_takes_a_longer_gap_per_batch() -> None:
    # what the pipeline passes (gap_s): readings 300 s apart join where it is 750 s,
    # not where it is left out (60 s); an acknowledged alert stays acknowledged as it
    # grows; a gap that is no number is refused by name
    store = open_store("duckdb://:memory:")
    try:
        am, t = AlertManager(store, write_every_s=0.0), 10**18
        (a,) = am.observe_many("slow", [(t, 0.97, {"temp": 1.0})], gap_s=750.0)
        am.acknowledge(a.id, by="ops")
        (b,) = am.observe_many("slow", [(t + 300 * S, 0.98, {"temp": 1.0})], gap_s=750.0)
        assert b.id == a.id and b.status == "acknowledged"
        assert (store.get_alert(a.id).start_ns, store.get_alert(a.id).end_ns) == (t, t + 300 * S)
        (c,) = am.observe_many("slow", [(t + 600 * S + 1, 0.98, {"temp": 1.0})])  # 60 s
        assert c.id != a.id
        assert am.label(a.id, "true_alarm", by="ops").label == "true_alarm"
        for bad in (math.nan, math.inf, 0.0, -1.0, True):
            with pytest.raises(InvalidParameterError, match="gap_s"):
                am.observe_many("slow", [(t, 0.97, {"temp": 1.0})], gap_s=bad)
    finally:
        store.close()
