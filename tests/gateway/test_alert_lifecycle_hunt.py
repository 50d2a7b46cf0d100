"""Alert lifecycle across restarts, silences and resent messages: a fault that spans a
gateway restart stays one alert, an alert's last growth is stored though the device falls
silent, a seq gap filled later does not stay an open alert, and a driver at 0% is not
named."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from edgewise.alerts import AlertManager
from edgewise.config import Settings
from edgewise.gateway.pipeline import Pipeline
from edgewise.store import open_store
from edgewise.store.base import Store
from edgewise.telemetry import Reading
from tests.server.conftest import build_env
from tests.test_alerts_hunt import Limit

S = 10**9


def _pipe(store: Store, tmp_path: Path, state: bool = True, **kw: object) -> Pipeline:
    return Pipeline(store, Settings.load(env={}, data_dir=tmp_path), detect_async=False,
                    detector_factory=Limit, multivariate_factory=None, fast_gate=None,
                    cleaner=None, state_path=tmp_path / "detectors.pickle" if state else None,
                    **kw)  # type: ignore[arg-type]


def _fault(t0: int, ks: Iterator[float] | list[float], rpm: float = 50.0) -> list[Reading]:
    """pump-1's readings at ``t0 + k`` s: temp anomalous (500 > the limit of 100), rpm
    anomalous too where ``rpm`` is above it."""
    return [r for k in ks for r in (Reading("pump-1", "temp", t0 + int(k * S), 500.0),
                                     Reading("pump-1", "rpm", t0 + int(k * S), rpm))]


def _listed(store: Store, t0: int) -> list[tuple[float, float]]:
    return sorted(((a.start_ns - t0) / S, (a.end_ns - t0) / S)
                  for a in store.list_alerts("pump-1", None, None, None, 100))


def _uninterrupted_drivers(tmp_path: Path, t0: int, late: list[float]) -> dict[str, float]:
    """The drivers of the same fault on a gateway that was never restarted."""
    store = open_store("duckdb://:memory:")
    p = _pipe(store, tmp_path, state=False)
    p.detect(_fault(t0, range(10)))
    p.detect(_fault(t0, [10], rpm=500.0))
    for k in late:
        p.detect(_fault(t0, [k]))
    p.flush()
    (a,) = store.list_alerts("pump-1", None, None, None, 100)
    p.close()
    store.close()
    return a.drivers


def test_a_clean_restart_mid_fault_keeps_one_alert(tmp_path: Path) -> None:
    """Check a fault that goes on after a clean stop and start extends its stored alert:
    the alert being extended was held only in memory, so the next reading raised a second
    alert and a resent reading from inside the first moved the second's start into it
    ([(0, 9), (5.5, 10)] for one fault). Its readings weigh as before the restart."""
    t0 = (int(time.time()) - 3600) * S
    store = open_store(f"duckdb:///{tmp_path / 'ew.duckdb'}")
    p = _pipe(store, tmp_path)
    p.detect(_fault(t0, range(10)))  # 0..9 s: temp only
    p.close()  # a clean stop: detector state saved
    again = _pipe(store, tmp_path)
    again.detect(_fault(t0, [10], rpm=500.0))  # the fault goes on: rpm too now
    again.detect(_fault(t0, [5.5]))  # and a resent message from inside the first span
    again.flush()
    assert _listed(store, t0) == [(0.0, 10.0)]
    (a,) = store.list_alerts("pump-1", None, None, None, 100)
    assert a.drivers == _uninterrupted_drivers(tmp_path / "x", t0, [5.5])
    assert a.drivers["temp"] > 0.9  # ten readings of temp alone still weigh ten
    again.close()
    store.close()


def test_a_crash_mid_fault_keeps_one_alert(tmp_path: Path) -> None:
    """Check the same after a crash (no state saved): the stored alert is taken up again,
    weighing the readings stored over its span."""
    t0 = int(time.time()) - 3600
    store = open_store(f"duckdb:///{tmp_path / 'ew.duckdb'}")

    def msg(k: int, rpm: float = 50.0) -> tuple[str, bytes]:
        return "pump-1", json.dumps({"ts": t0 + k, "seq": k + 1,
                                     "metrics": {"temp": 500.0, "rpm": rpm}}).encode()

    crashed = _pipe(store, tmp_path, state=False)
    crashed.ingest_many([msg(k) for k in range(10)])  # one batch: the alert is stored
    # ... and the process dies: nothing closed, nothing saved
    again = _pipe(store, tmp_path, state=False)
    again.ingest_many([msg(10, rpm=500.0)])
    again.flush()
    assert _listed(store, t0 * S) == [(0.0, 10.0)]
    (a,) = store.list_alerts("pump-1", None, None, None, 100)
    assert a.drivers == _uninterrupted_drivers(tmp_path / "x", t0 * S, [])
    again.close()
    store.close()


def test_a_silent_device_gets_its_alert_tail_written(tmp_path: Path) -> None:
    """Check an alert's last growth is stored within about two seconds when the device
    falls silent right after it: updates held back (written at most once a second) were
    written only when a later batch was scored, so the store, the API and the dashboard
    showed the alert ending at its first reading until the gateway stopped."""
    store = open_store("duckdb://:memory:")
    p = Pipeline(store, Settings.load(env={}, data_dir=tmp_path), detect_async=True,
                 detector_factory=Limit, multivariate_factory=None, fast_gate=None,
                 cleaner=None)
    try:
        t = int(time.time()) - 100
        for k, v in enumerate([500.0, 900.0, 950.0]):  # three anomalous messages, 0.1 s apart
            p.ingest("pump-1", json.dumps({"ts": t + k, "metrics": {"temp": v},
                                           "seq": k + 1}).encode())
            time.sleep(0.1)
        deadline = time.monotonic() + 4.0
        end = None
        while time.monotonic() < deadline:  # the device is silent now
            (a,) = store.list_alerts("pump-1", None, None, None, 10)
            end = (a.end_ns - t * S) // S
            if end == 2:
                break
            time.sleep(0.1)
        assert end == 2
    finally:
        p.close()
        store.close()


def _gap_alert(env: object) -> object:
    (a,) = env.store.list_alerts("pump-1", None, "seq_gap", None, 10)  # type: ignore[attr-defined]
    return a


def test_a_filled_seq_gap_is_acknowledged_by_the_gateway(tmp_path: Path) -> None:
    """Check a reported seq gap whose messages arrive later: partly filled, the alert says
    what is still missing; filled, the gateway acknowledges it (audited), its message says
    the messages arrived, and the fleet view no longer shows the device alerting. The
    alert stayed open saying the messages were missing though every one was stored."""
    gen = build_env(tmp_path)
    env = next(gen)
    try:
        t = int(time.time()) - 100

        def send(k: int) -> None:
            r = env.send({"ts": t + k, "metrics": {"a": 1.0}, "seq": k})
            assert r.status_code == 200, r.text

        def check(after_s: float) -> None:
            assert env.pipeline.flush()
            env.pipeline.check_gaps(now=time.monotonic() + after_s)

        for k in (1, 2, 7):
            send(k)
        check(60)  # grace over: 3..6 reported
        gap = _gap_alert(env)
        assert (gap.status, gap.message) == ("open", "messages seq 3..6 missing (4)")
        for k in (3, 5):  # some of them are resent
            send(k)
        check(61)
        gap = _gap_alert(env)
        assert (gap.status, gap.message) == (
            "open", "messages seq 3..6 missing (4); 4..4, 6..6 still missing (2)")
        for k in (4, 6):  # the rest
            send(k)
        check(62)
        assert env.store.seq_gaps("pump-1") == []
        gap = _gap_alert(env)
        assert (gap.status, gap.acked_by, gap.message) == (
            "acknowledged", "gateway", "messages seq 3..6 missing (4), all arrived later")
        acks = [e for e in env.security.audit_log(50) if e.action == "alert.ack"]
        assert [(e.actor, e.target) for e in acks] == [("gateway", gap.id)]
        fleet = env.client.get("/v1/fleet", headers=env.auth("viewer")).json()
        (row,) = [d for d in fleet["devices"] if d["id"] == "pump-1"]
        assert (row["open_alerts"], row["health"]) == (0, "ok")
    finally:
        gen.close()


def test_a_gap_filled_while_the_gateway_was_down_is_acknowledged_at_start(
        tmp_path: Path) -> None:
    """Check an open seq_gap alert whose messages were stored after it was reported (the
    gateway then stopped before it looked again) is acknowledged by the next gateway's
    first gap check."""
    store = open_store(f"duckdb:///{tmp_path / 'ew.duckdb'}")
    p = Pipeline(store, Settings.load(env={}, data_dir=tmp_path), detect_async=False)
    t = int(time.time()) - 100
    for k in (1, 2, 5):
        p.ingest("pump-1", json.dumps({"ts": t + k, "metrics": {"a": 1.0}, "seq": k}).encode())
    p.check_gaps(now=time.monotonic() + 60)
    for k in (3, 4):
        p.ingest("pump-1", json.dumps({"ts": t + k, "metrics": {"a": 1.0}, "seq": k}).encode())
    # stopped before its next gap check; the next gateway looks after the grace period
    again = Pipeline(store, Settings.load(env={}, data_dir=tmp_path), detect_async=False)
    assert again.check_gaps(now=time.monotonic() + 60) == []
    (gap,) = store.list_alerts("pump-1", None, "seq_gap", None, 10)
    assert (gap.status, gap.acked_by, gap.message) == (
        "acknowledged", "gateway", "messages seq 3..4 missing (2), all arrived later")
    again.close()
    p.close()
    store.close()


def test_a_driver_at_0_percent_is_not_named() -> None:
    """Check the message leaves out a driver whose share rounds to 0%: it said
    "Anomalous temp_c (98%), rpm (1%), vib (0%)." with vib at a share of 0.0047."""
    store = open_store("duckdb://:memory:")
    am = AlertManager(store)
    a = am.observe("pump-1", 1_700_000_000 * S, 0.99,
                   {"temp_c": 0.9811, "rpm": 0.0142, "vib": 0.0047})
    assert a is not None and a.drivers["vib"] > 0
    assert a.message == "Anomalous temp_c (98%), rpm (1%)."
    store.close()
