"""A held (swapped) seq sent after a newer one (telemetry hunt s38): ``pending`` lost its
seq order, which the ack loop and the stall resend rely on, so an acknowledged seq stayed
pending behind an unacknowledged one, the stall resent it instead of the one missing, and
``wait_acked`` never saw the device done."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from edgewise.sim.device import MqttDevice
from edgewise.sim.fleet import FleetRunner
from edgewise.sim.pumps import PumpFleet
from tests.conftest import free_port

T0 = 1_700_000_000 * 10**9


class _Info:
    rc = 0

    def is_published(self) -> bool:
        return True


def _recording(d: MqttDevice) -> list[int]:
    """Make ``d`` believe it is connected and record each telemetry seq it publishes."""
    d._connected.set()
    sent: list[int] = []

    def publish(topic: str, payload: bytes, qos: int = 1) -> _Info:
        sent.append(json.loads(payload)["seq"])
        return _Info()

    d.client.publish = publish  # type: ignore[method-assign]
    return sent


def _ack(d: MqttDevice, seq: int) -> None:
    d._on_message(d.client, None, SimpleNamespace(  # type: ignore[arg-type]
        topic=d.ack_topic, payload=json.dumps({"seq": seq}).encode()))


def test_a_held_seq_acked_leaves_pending_and_the_stall_resends_the_missing_one() -> None:
    d = MqttDevice("pump-01", "s", port=free_port(), resend_after_s=0.05,
                   max_resend_after_s=0.05)
    sent = _recording(d)
    d.send(1.0, {"a": 1.0})
    with d._lock:  # as FleetRunner took a seq to hold (reserve_seq() now)
        held = d.next_seq
        d.next_seq += 1
    d.send(3.0, {"a": 3.0})
    d.send(2.0, {"a": 2.0}, held)
    assert list(d.pending) == [1, 2, 3]
    _ack(d, 2)  # the gateway stored 1 and 2; 3 was lost on the way
    assert list(d.pending) == [3]
    sent.clear()
    deadline = time.monotonic() + 2.0
    while not sent and time.monotonic() < deadline:
        time.sleep(0.06)
        d.tick()
    assert sent and set(sent) == {3}, sent
    _ack(d, 3)
    assert d.wait_acked(timeout=0.5) and not d.pending


def test_fleet_swaps_keep_pending_in_seq_order() -> None:
    """Check FleetRunner's swap (a reserved seq sent after the next one): an ack covering
    the held seq popped it only when no newer seq stood before it."""
    r = FleetRunner(PumpFleet(1, seed=0), [("pump-01", "s")], port=free_port(),
                    p_gap=0, p_dropout=0, p_duplicate=0, p_swap=1.0)
    (d,) = r.devices
    sent = _recording(d)
    for i in range(4):  # 1 held; 2, then 1; 3 held; 4, then 3
        r._emit(T0 + i * 10**9)
    assert sent == [2, 1, 4, 3]
    assert list(d.pending) == [1, 2, 3, 4]
    _ack(d, 3)  # 4 lost on the way
    assert list(d.pending) == [4]
