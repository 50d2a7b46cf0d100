"""MQTT transport hunt of session 48 (external broker; the batcher).

1. A broker that closes the gateway's connection on a publish its ACL refuses (HiveMQ,
   EMQX with ``deny_action = disconnect``, AWS IoT; Mosquitto 2.0 drops it without a word)
   stopped ingest for every device: paho sent the refused ack again at every reconnect and
   was closed on it again, for ever (session 46 only named it in the log). After
   ``ACL_CUT_COUNT`` such closes in a row the gateway withholds that kind of publish (acks,
   or dead letters) for ``WITHHOLD_S`` and drops the unconfirmed ones from paho's queue:
   the connection stays up and telemetry is stored again, with one error saying so.
2. A broker closing the connection before it grants the gateway's SUBSCRIBE (the same
   brokers, for a subscription their ACL refuses) made ``start()`` fail with "(no answer)"
   and a running gateway warn of a session takeover: it is named as the subscription
   refused, with the topic and the ACL.
3. The limit on "cannot reconnect" lines started afresh at each reconnect: a broker
   restarting in a loop had the line logged at every outage (8 in 12 s), and after three
   restarts a session takeover (another gateway with this client id) was warned of.
4. A store outage logged every failed commit, each half of it and each message alone (817
   lines in 3 s with 3 devices publishing to the embedded broker): each kind of line is
   logged at most every 10 s, saying how many were left out.
5. A TLS broker requiring a client certificate (which the gateway has none of) was
   reported as closing the connection "without answering the MQTT CONNECT", and nothing
   more: that cause is named.
6. A running gateway whose subscription the broker refused at a reconnect (its ACL
   changed) asked once and stayed connected receiving nothing until a restart, whatever
   the ACL became: it asks again every ``RESUBSCRIBE_S`` and says when it is granted.

A private Mosquitto per test (skipped where the binary is absent).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edgewise.errors import BrokerUnavailableError, StoreError
from edgewise.transport.base import Message, Outcome
from edgewise.transport.batcher import Batcher
from edgewise.transport.client import ExternalBroker
from tests.conftest import free_port, port_answers, wait_until
from tests.sim.test_sim_device_fixes import _cert_for
from tests.transport.conftest import CutProxy, Mosquitto

LOGGER = "edgewise.transport.client"


@pytest.fixture
def cut_on_ack(mosquitto: Mosquitto) -> Iterator[CutProxy]:
    p = CutProxy(mosquitto.port, 3, b"/ack")
    yield p
    p.close()


def _device(port: int) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"d-{uuid.uuid4().hex[:6]}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def _records(caplog: pytest.LogCaptureFixture, part: str, level: int = logging.WARNING
             ) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= level and part in r.getMessage()]


# 1. a broker closing the connection on the gateway's acks ---------------------------------

def test_a_broker_closing_the_connection_on_acks_no_longer_stops_ingest(
        mosquitto: Mosquitto, cut_on_ack: CutProxy, caplog: pytest.LogCaptureFixture) -> None:
    """Check that after ``ACL_CUT_COUNT`` closes on its first ack the gateway stays
    connected (no more closes), stores what devices send next, each message once, and
    logs one error saying acks are withheld (before: closed at every reconnect for ever,
    each message committed again at each connection, nothing more for any device)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    commits: list[int] = []
    cuts: list[int] = []

    def handler(messages: list[Message]) -> list[Outcome]:
        seqs = [json.loads(m.payload)["seq"] for m in messages]
        commits.extend(seqs)
        return [Outcome(m.device_id, s) for m, s in zip(messages, seqs, strict=True)]

    async def main() -> None:
        ext = ExternalBroker(handler, f"mqtt://127.0.0.1:{cut_on_ack.port}"
                             f"?client_id=gw-{uuid.uuid4().hex[:8]}")
        ext.client.reconnect_delay_set(0.05, 0.1)
        await ext.start()
        dev = _device(mosquitto.port)
        try:
            dev.publish("edgewise/d1/telemetry", json.dumps({"seq": 1}), qos=1)
            assert await asyncio.to_thread(wait_until, lambda: _records(
                caplog, "publishes no ack messages", logging.ERROR), 10), cut_on_ack.cuts
            for seq in range(2, 6):
                dev.publish("edgewise/d1/telemetry", json.dumps({"seq": seq}), qos=1)
            assert await asyncio.to_thread(
                wait_until, lambda: set(range(1, 6)) <= set(commits), 5), commits
            cuts.append(cut_on_ack.cuts)
            await asyncio.sleep(0.5)
            assert ext.client.is_connected()
        finally:
            dev.disconnect()
            dev.loop_stop()
            await ext.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    # one more close where the first ack was closed on before it was recorded as sent
    assert cuts == [cut_on_ack.cuts] and cuts[0] <= ExternalBroker.ACL_CUT_COUNT + 1, (
        cuts, cut_on_ack.cuts)
    assert sorted(commits[-4:]) == [2, 3, 4, 5] and commits.count(5) == 1, commits
    errors = _records(caplog, "'edgewise/d1/ack'", logging.ERROR)
    assert len(errors) == 1, errors
    assert "ACL" in errors[0] and "publishes no ack messages" in errors[0], errors[0]
    assert _records(caplog, "client id") == [], caplog.text  # no session takeover


def test_a_broker_closing_the_connection_on_dead_letters_still_gets_acks(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """Only the kind the broker closes the connection on is withheld: with dead letters
    refused (an unknown device's), a known device's telemetry is stored and acked."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    proxy = CutProxy(mosquitto.port, 3, b"/deadletter")
    commits: list[int] = []
    acks: list[bytes] = []

    def handler(messages: list[Message]) -> list[Outcome]:
        seqs = [json.loads(m.payload)["seq"] for m in messages]
        commits.extend(seqs)
        return [Outcome(m.device_id, s) for m, s in zip(messages, seqs, strict=True)]

    async def main() -> None:
        ext = ExternalBroker(handler, f"mqtt://127.0.0.1:{proxy.port}"
                             f"?client_id=gw-{uuid.uuid4().hex[:8]}",
                             known_device=lambda d: d == "known")
        ext.client.reconnect_delay_set(0.05, 0.1)
        await ext.start()
        dev = _device(mosquitto.port)
        dev.on_message = lambda c, u, m: acks.append(m.payload)
        dev.subscribe("edgewise/known/ack", 1)
        try:
            dev.publish("edgewise/stranger/telemetry", json.dumps({"seq": 1}), qos=1)
            assert await asyncio.to_thread(wait_until, lambda: _records(
                caplog, "publishes no deadletter messages", logging.ERROR), 10), proxy.cuts
            dev.publish("edgewise/known/telemetry", json.dumps({"seq": 7}), qos=1)
            assert await asyncio.to_thread(wait_until, lambda: b'{"seq": 7}' in acks, 5), (
                commits, acks)
        finally:
            dev.disconnect()
            dev.loop_stop()
            await ext.stop()
            proxy.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert commits == [7] and proxy.cuts <= ExternalBroker.ACL_CUT_COUNT + 1, (
        commits, proxy.cuts)
    assert len(_records(caplog, "publishes no deadletter messages", logging.ERROR)) == 1


def test_withheld_acks_are_tried_again_after_a_while(
        mosquitto: Mosquitto, cut_on_ack: CutProxy, caplog: pytest.LogCaptureFixture) -> None:
    """After ``WITHHOLD_S`` an ack is published again (the broker's ACL may have been
    fixed meanwhile), and that is logged."""
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def main() -> None:
        ext = ExternalBroker(lambda ms: [Outcome(m.device_id, 1) for m in ms],
                             f"mqtt://127.0.0.1:{cut_on_ack.port}"
                             f"?client_id=gw-{uuid.uuid4().hex[:8]}")
        ext.client.reconnect_delay_set(0.05, 0.1)
        ext.WITHHOLD_S = 0.5
        await ext.start()
        dev = _device(mosquitto.port)
        try:
            dev.publish("edgewise/d1/telemetry", b"{}", qos=1)
            assert await asyncio.to_thread(wait_until, lambda: _records(
                caplog, "publishes no ack messages", logging.ERROR), 10)
            withheld_at = cut_on_ack.cuts
            await asyncio.sleep(0.7)
            dev.publish("edgewise/d1/telemetry", b"{}", qos=1)
            assert await asyncio.to_thread(
                wait_until, lambda: cut_on_ack.cuts > withheld_at, 5)
        finally:
            dev.disconnect()
            dev.loop_stop()
            await ext.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert len(_records(caplog, "publishing the gateway's ack messages again")) == 1


def test_clearing_a_deleted_devices_ack_on_such_a_broker_does_not_stop_ingest(
        mosquitto: Mosquitto, cut_on_ack: CutProxy, caplog: pytest.LogCaptureFixture) -> None:
    """``forget_device`` publishes on the ack topic too: on a broker closing the
    connection on it, that publish is withheld with the acks and the gateway stays
    connected (before: it was sent again at every reconnect, closed on for ever, with a
    session takeover warned of)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def main() -> tuple[bool, bool]:
        ext = ExternalBroker(lambda ms: [], f"mqtt://127.0.0.1:{cut_on_ack.port}"
                             f"?client_id=gw-{uuid.uuid4().hex[:8]}")
        ext.client.reconnect_delay_set(0.05, 0.1)
        await ext.start()
        try:
            cleared = await asyncio.to_thread(ext.forget_device, "d9", 0.5)
            assert await asyncio.to_thread(wait_until, lambda: _records(
                caplog, "publishes no ack messages", logging.ERROR), 10), cut_on_ack.cuts
            at = cut_on_ack.cuts
            again = await asyncio.to_thread(ext.forget_device, "d9", 0.5)
            await asyncio.sleep(0.5)
            assert cut_on_ack.cuts == at and ext.client.is_connected(), cut_on_ack.cuts
            return cleared, again
        finally:
            await ext.stop()

    assert asyncio.run(asyncio.wait_for(main(), 30)) == (False, False)
    assert len(_records(caplog, "not sent, the broker having closed")) == 1, caplog.text
    assert _records(caplog, "client id") == [], caplog.text


# 2. a broker closing the connection on the gateway's subscription -------------------------

def test_a_broker_closing_the_connection_on_the_subscribe_is_named(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """Check start()'s error names the subscription and the ACL (before: "no answer"),
    and that no session takeover is warned of."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    proxy = CutProxy(mosquitto.port, 8)

    async def main() -> str:
        ext = ExternalBroker(lambda ms: [], f"mqtt://127.0.0.1:{proxy.port}?client_id=gw-sub")
        ext.client.reconnect_delay_set(0.05, 0.1)
        with pytest.raises(BrokerUnavailableError) as exc:
            await ext.start(timeout=1.0)
        return str(exc.value)

    try:
        text = asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        proxy.close()
    assert proxy.cuts >= 3, proxy.cuts
    assert "subscription to 'edgewise/+/telemetry'" in text and "ACL" in text, text
    assert _records(caplog, "client id") == [], caplog.text


def test_a_subscription_refused_while_running_is_named_once(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """A broker whose ACL stops letting the gateway subscribe while it runs (the broker
    then closing each connection on the SUBSCRIBE) is named once as that, not as a
    session takeover."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    proxy = CutProxy(mosquitto.port, 0)  # 0: no packet is of that type, nothing is cut

    async def main() -> None:
        ext = ExternalBroker(lambda ms: [], f"mqtt://127.0.0.1:{proxy.port}?client_id=gw-sr")
        ext.client.reconnect_delay_set(0.05, 0.1)
        await ext.start()
        try:
            proxy.kind = 8
            mosquitto.stop()  # the gateway reconnects, and subscribes again
            mosquitto.start()
            assert await asyncio.to_thread(wait_until, lambda: proxy.cuts >= 8, 10)
        finally:
            await ext.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        proxy.close()
    named = _records(caplog, "subscription to 'edgewise/+/telemetry'")
    assert len(named) == 1 and "nothing is received" in named[0], caplog.text
    assert _records(caplog, "client id") == [], caplog.text


# 3. a broker restarting in a loop ---------------------------------------------------------

def test_a_broker_restarting_in_a_loop_is_logged_once_and_is_no_takeover(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """Three outages in a row, each ended by a reconnect: one "cannot reconnect" line
    (before: one per outage, the limit starting afresh at each reconnect) and no session
    takeover warning (before: warned at the third)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)

    async def main() -> None:
        b = ExternalBroker(lambda ms: [], f"mqtt://127.0.0.1:{mosquitto.port}?client_id=gw-fl")
        b.client.reconnect_delay_set(0.02, 0.05)
        await b.start()
        try:
            for _ in range(3):
                mosquitto.stop()
                assert await asyncio.to_thread(
                    wait_until, lambda: not b.client.is_connected(), 5)
                await asyncio.sleep(0.15)
                mosquitto.start()
                assert await asyncio.to_thread(wait_until, b.client.is_connected, 5)
        finally:
            await b.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert len(_records(caplog, "cannot reconnect")) == 1, caplog.text
    assert _records(caplog, "client id") == [], caplog.text


# 4. a store outage ------------------------------------------------------------------------

def test_a_store_outage_logs_each_kind_of_failed_commit_once(
        caplog: pytest.LogCaptureFixture) -> None:
    """A batch of 64 messages failing (a store that is down) is tried in halves down to each
    message, and each still reaches ``on_error``; the log gets one line of each kind, not
    127, and the next one says how many were left out."""
    caplog.set_level(logging.WARNING, logger="edgewise.transport.batcher")
    failed: list[Message] = []

    def down(messages: list[Message]) -> list[Outcome]:
        raise StoreError("connection to server failed: Connection refused")

    async def on_error(messages: list[Message], exc: BaseException) -> None:
        failed.extend(messages)

    async def done(messages: list[Message], outcomes: list[Outcome]) -> None:
        pass

    async def main() -> None:
        b = Batcher(down, done, on_error)
        for i in range(64):  # queued before the loop runs: one batch
            b.put(Message(f"d{i % 4}", b"{}"))
        await b.start()
        while len(failed) < 64:
            await asyncio.sleep(0.01)
        b.LOG_EVERY_S = 0.0  # the next failure is logged, with the count left out
        b.put(Message("d0", b"{}"))
        await b.stop()

    asyncio.run(asyncio.wait_for(main(), 20))
    assert len(failed) == 65
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "63 more such" in lines[2] and "'d0'" in lines[2], lines
    assert "Connection refused" in lines[2], lines


# 5. a TLS broker requiring a client certificate -------------------------------------------

@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto is not installed")
def test_a_broker_requiring_a_client_certificate_is_named(tmp_path: Path) -> None:
    cert, key = _cert_for(tmp_path, "localhost")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\ncafile {cert}\n"
                    f"certfile {cert}\nkeyfile {key}\nrequire_certificate true\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))
    with (tmp_path / "log").open("wb") as out:
        proc = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: port_answers("127.0.0.1", port), 10)
        b = ExternalBroker(lambda ms: [], f"mqtts://localhost:{port}?ca={cert}&client_id=c1")
        with pytest.raises(BrokerUnavailableError) as exc:
            asyncio.run(b.start(timeout=1.0))
    finally:
        proc.kill()
        proc.wait()
    assert "requires a client certificate" in str(exc.value), str(exc.value)


# 6. a subscription refused at a reconnect -------------------------------------------------

class ScriptedBroker:
    """Just enough MQTT 3.1.1 (which Mosquitto cannot be told to do): each connection is
    accepted, and its SUBSCRIBEs answered with the next of ``subacks`` (then granted);
    :meth:`cut` closes the current connection."""

    def __init__(self, subacks: list[int]) -> None:
        self.subacks = subacks
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.subscribes = 0
        self.conn: socket.socket | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conn = c
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    @staticmethod
    def _packet(c: socket.socket) -> tuple[int, bytes]:
        head = c.recv(1)
        if not head:
            raise ConnectionError
        length, mult = 0, 1
        while True:
            b = c.recv(1)[0]
            length += (b & 127) * mult
            mult *= 128
            if not b & 128:
                break
        body = b""
        while len(body) < length:
            chunk = c.recv(length - len(body))
            if not chunk:
                raise ConnectionError
            body += chunk
        return head[0] >> 4, body

    def _serve(self, c: socket.socket) -> None:
        try:
            while True:
                kind, body = self._packet(c)
                if kind == 1:
                    c.sendall(bytes([0x20, 2, 0, 0]))
                elif kind == 8:
                    self.subscribes += 1
                    code = self.subacks.pop(0) if self.subacks else 1
                    c.sendall(bytes([0x90, 3]) + body[:2] + bytes([code]))
                elif kind == 12:
                    c.sendall(bytes([0xD0, 0]))
                elif kind == 14:
                    return
        except (OSError, ConnectionError, IndexError):
            return

    def cut(self) -> None:
        if self.conn is not None:
            self.conn.shutdown(socket.SHUT_RDWR)
            self.conn.close()

    def close(self) -> None:
        self.srv.close()


def test_a_subscription_refused_at_a_reconnect_is_asked_for_again(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    broker = ScriptedBroker([1, 0x80, 0x80])  # granted; refused twice at the reconnect

    async def main() -> None:
        ext = ExternalBroker(lambda ms: [], f"mqtt://127.0.0.1:{broker.port}?client_id=rs")
        ext.client.reconnect_delay_set(0.05, 0.1)
        ext.RESUBSCRIBE_S = 0.2
        await ext.start(timeout=5)
        try:
            broker.cut()
            assert await asyncio.to_thread(wait_until, lambda: broker.subscribes >= 4, 5), (
                broker.subscribes)
            assert await asyncio.to_thread(wait_until, lambda: _records(
                caplog, "granted the gateway's subscription"), 5)
            await asyncio.sleep(0.5)
        finally:
            await ext.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        broker.close()
    assert broker.subscribes == 4, broker.subscribes  # none more once granted
    refused = _records(caplog, "refused the gateway's subscription")
    assert len(refused) == 1 and "asked again every 0.2 s" in refused[0], caplog.text
