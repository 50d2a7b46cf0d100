"""A message a device publishes outside its own telemetry topic is refused (PUBACKed, dead
letter ``topic_not_allowed``) and its seqs still count as handled for *that* device, as a
message refused as too large does: before, its seq never counted, so the device's ack
stayed at the seq before it for good (the device resent everything after it for ever) and a
``seq_gap`` alert followed. A real gateway (pipeline, DuckDB store, embedded broker) in this
process, its loop on a thread, and raw MQTT sockets (to publish to topics paho refuses)."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgewise.config import Settings
from edgewise.gateway.runtime import Gateway
from tests.conftest import free_port, wait_until
from tests.gateway.test_broker_limits import _bye, _connect, _length, _s

T0 = int(time.time()) - 3600


class _Gateway:
    """A started :class:`Gateway` (embedded broker, no HTTP) on an event loop thread."""

    def __init__(self, data_dir: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = free_port()
        self.gw = Gateway(Settings(data_dir=data_dir, mqtt_port=self.port), gap_grace_s=0.0)
        self.run(self.gw.start(http=False))

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def device(self, name: str) -> str:
        return self.gw.security.add_device(name)[1]

    def stop(self) -> None:
        self.run(self.gw.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Gateway]:
    g = _Gateway(tmp_path_factory.mktemp("refused") / "ew")
    yield g
    g.stop()


def _publish(so: socket.socket, name: str, payload: bytes, mid: int) -> None:
    body = _s(name.encode()) + mid.to_bytes(2, "big") + payload  # QoS 1
    so.sendall(b"\x32" + _length(len(body)) + body)


def _record(seq: int) -> dict[str, Any]:
    return {"ts": T0 + seq, "metrics": {"x": float(seq)}, "seq": seq}


def _read_until(so: socket.socket, want: bytes, timeout: float = 8.0) -> bytes:
    """What ``so`` received until ``want`` is in it (all of it, when ``timeout`` ends first)."""
    got, deadline = b"", time.monotonic() + timeout
    so.settimeout(0.2)
    while want not in got and time.monotonic() < deadline:
        try:
            chunk = so.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        got += chunk
    return got


@pytest.mark.parametrize(("case", "topic", "payload"), [
    ("other_device", "edgewise/{other}/telemetry", lambda s: json.dumps(_record(s))),
    ("own_ack", "edgewise/{dev}/ack", lambda s: json.dumps([_record(s)])),
    ("dollar", "$SYS/x", lambda s: gzip.compress(json.dumps(_record(s)).encode())),
    ("wildcard", "edgewise/+/telemetry", lambda s: json.dumps(_record(s))),
    ("empty", "", lambda s: json.dumps(_record(s))),
])
def test_seq_of_a_message_refused_for_its_topic_is_acked(
        gateway: _Gateway, case: str, topic: str, payload: Any) -> None:
    """Seqs 1, 2 to the device's own topic, 3 refused for its topic, 4 and 5 own again:
    the ack reaches 5 (it stayed at 2), the device's store watermark is 5, the refused
    message is stored nowhere, its device gets only ``topic_not_allowed`` for it, and no
    ``seq_gap`` is reported."""
    dev, other = f"p-{case}", f"o-{case}"
    secret = gateway.device(dev)
    gateway.device(other)
    store = gateway.gw.store
    so, connack = _connect(gateway.port, dev, secret, dev)
    assert connack == b"\x20\x02\x00\x00"
    try:
        for mid, kind in enumerate(("ack", "deadletter"), 1):
            body = mid.to_bytes(2, "big") + _s(f"edgewise/{dev}/{kind}".encode()) + b"\x01"
            so.sendall(b"\x82" + _length(len(body)) + body)
        # the ack of a subscriber may come before its SUBACK
        assert b"\x90\x03\x00\x02\x01" in _read_until(so, b"\x90\x03\x00\x02\x01")
        own = f"edgewise/{dev}/telemetry"
        for seq in (1, 2):
            _publish(so, own, json.dumps(_record(seq)).encode(), seq)
        assert wait_until(lambda: store.seq_watermark(dev) == 2, 8)
        refused = payload(3)
        _publish(so, topic.format(dev=dev, other=other), refused if isinstance(
            refused, bytes) else refused.encode(), 3)
        for seq in (4, 5):
            _publish(so, own, json.dumps(_record(seq)).encode(), seq)
        got = _read_until(so, b'{"seq": 5}')
        assert b'{"seq": 5}' in got, (
            f"the ack did not pass the refused seq 3: watermark {store.seq_watermark(dev)}, "
            f"received {got[-300:]!r}")
        assert store.seq_watermark(dev) == 5
        assert store.seq_gaps(dev) == []
        assert b"topic_not_allowed" in got
        assert b"missing_field" not in got, "the seq-only records' rejections reached it"
        assert b"\x40\x02\x00\x03" in got, "the refused PUBLISH (id 3) got no PUBACK"
    finally:
        _bye(so)
    assert store.seq_watermark(other) == 0  # its stream is untouched
    assert store.query(other) == []
    assert sorted(v for _, _, v in store.query(dev)) == [1.0, 2.0, 4.0, 5.0], \
        "the refused message was stored"
    pipe = gateway.gw.pipeline
    pipe.check_gaps(now=time.monotonic() + 120)
    assert [a for a in store.list_alerts(kind="seq_gap") if a.device_id == dev] == []
