"""Crash test: the gateway is kill -9ed at random moments while 20 devices send; nothing is lost.

20 devices × 500 messages with unique (device, seq), 5 SIGKILL/restart cycles of a real
``edgewise serve`` process, real MQTT clients that keep every message until acked and
resend after reconnecting. At the end the store must hold exactly what was sent.
"""

from __future__ import annotations

import random
import threading
import time

from edgewise.security.credentials import Security
from edgewise.sim.device import MqttDevice
from edgewise.store import open_store

N_DEVICES, N_MESSAGES, N_KILLS = 20, 500, 5
T0 = 1_700_000_000


def _value(i: int, seq: int) -> dict[str, float]:
    return {"flow": float(seq), "temp": i + seq / 1000.0}


def test_kill_9_loses_and_duplicates_nothing(gateway_factory) -> None:
    # each restart's process is launched ahead and has done its imports by the kill: a
    # restart is the gateway's own recovery (store, state, broker, HTTP), not Python's
    gw = gateway_factory(prestart=True)
    sec = Security(gw.data_dir)
    creds = [sec.add_device(f"crash-{i:02d}") for i in range(N_DEVICES)]
    sec.close()
    gw.start()
    devices = [MqttDevice(d, s, port=gw.mqtt_port, resend_after_s=3.0).start(resume=False)
               for d, s in creds]
    rnd = random.Random(1234)
    done = threading.Event()

    def produce() -> None:
        for seq in range(1, N_MESSAGES + 1):
            for i, d in enumerate(devices):
                d.send(T0 + seq, _value(i, seq))
            time.sleep(0.02)  # ~1000 messages/s in all: the stream spans every kill
        done.set()

    t = threading.Thread(target=produce, daemon=True)
    t.start()
    try:
        for k in range(N_KILLS):
            time.sleep(rnd.uniform(0.3, 2.0))
            gw.kill()
            time.sleep(rnd.uniform(0.0, 0.3))
            # after the last restart nothing is launched ahead (its imports would take CPU
            # from the gateway catching up with the devices' resends)
            gw.prestart = k < N_KILLS - 1
            gw.start()
        t.join(120)
        assert done.is_set()
        assert all(d.wait_acked(60) for d in devices), [len(d.pending) for d in devices]
        resends = sum(d.resends for d in devices)
    finally:
        for d in devices:
            d.stop()
    assert gw.stop() == 0
    assert gw.starts == N_KILLS + 1
    store = open_store(f"duckdb:///{gw.data_dir / 'edgewise.duckdb'}")
    try:
        lost = dup = unexpected = 0
        for i, (dev, _) in enumerate(creds):
            rows = store.query(dev)
            got: dict[tuple[str, int], list[float]] = {}
            for metric, ts_ns, v in rows:
                got.setdefault((metric, ts_ns), []).append(v)
            for seq in range(1, N_MESSAGES + 1):
                for metric, v in _value(i, seq).items():
                    vals = got.pop((metric, (T0 + seq) * 10**9), [])
                    lost += not vals
                    dup += max(len(vals) - 1, 0)
                    unexpected += any(x != v for x in vals)
            unexpected += len(got)
            assert store.seq_watermark(dev) == N_MESSAGES
            assert store.seq_gaps(dev) == []
        assert (lost, dup, unexpected) == (0, 0, 0)
        assert store.count_readings() == N_DEVICES * N_MESSAGES * 2
        assert store.conflicts() == []
    finally:
        store.close()
    assert resends > 0  # the kills really interrupted unacknowledged traffic
