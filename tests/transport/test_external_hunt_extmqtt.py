"""External-broker (Mosquitto) hunt fixes.

1. One publish on ``edgewise/<65,516 characters>/telemetry`` stopped ingest for good: the
   ``unknown_device`` dead letter's topic is one byte too long, paho's publish raised
   inside ``on_message``, paho re-raised it and its network thread ended (the gateway up,
   nothing received), and the message, never acknowledged, came back at every start. A
   topic whose device level no device id can be is acknowledged and dropped; nothing raised
   while a message is handled reaches paho.
2. ``device delete`` with a bad ``?ca=`` in an ``mqtts://`` URL ended in a traceback after
   the device was revoked (and every retry the same): ``tls_set`` raised outside the
   ``ConnectionError`` path. 4. ``serve`` printed a 60-line traceback for it, the data dir
   made first. A bad ``ca=`` is one line before anything is done, and ``tls_set``'s errors
   are a ``ConnectionError`` for ``clear_retained_ack``.
3. The port error quoted the password's text when it held an unencoded ``/``, ``#`` or ``?``.
5. Every message was queued whole for its commit, however large (8 x 100 MB: 241 MB ->
   1.2 GB); one the pipeline would refuse whole is refused on arrival. The README's
   ``mosquitto.conf`` bounds what the broker lets through (checked on a real Mosquitto).
6. Two gateways on one data dir with an external broker took its kept client id both
   and the session from each other (168 takeovers in 15 s): the second is refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from edgewise.errors import ConfigError
from edgewise.transport.base import Message, Outcome
from edgewise.transport.client import ExternalBroker, clear_retained_ack, parse_mqtt_url
from tests.conftest import REPO, free_port, port_answers, wait_until
from tests.transport.conftest import Mosquitto


class Sink:
    """A gateway's handler and counter: the seqs committed, and the counts by reason."""

    def __init__(self) -> None:
        self.got: list[tuple[str, int]] = []
        self.counts: list[tuple[str, str]] = []

    def handler(self, msgs: list[Message]) -> list[Outcome]:
        self.got.extend((m.device_id, json.loads(m.payload)["seq"]) for m in msgs)
        return [Outcome(m.device_id, None) for m in msgs]

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        self.counts.append((name, labels.get("reason", "")))


class Client:
    """A plain MQTT client on the private Mosquitto; records what it receives."""

    def __init__(self, port: int, subscribe: str | None = None) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{uuid.uuid4().hex[:8]}")
        c.on_message = lambda cl, u, m: self.got.append((m.topic, bytes(m.payload)))
        c.on_subscribe = lambda *a: self.ready.set()
        c.connect("127.0.0.1", port)
        c.loop_start()
        if subscribe is not None:
            c.subscribe(subscribe, 1)
            assert self.ready.wait(10)
        self.c = c

    def publish(self, topic: str, payload: bytes | str) -> None:
        self.c.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def _reading(seq: int) -> str:
    return json.dumps({"ts": 1.7e9 + seq, "metrics": {"t": seq}, "seq": seq})


# 1. a topic no device id fits, and any exception while handling a message ---------------

def test_a_topic_too_long_to_dead_letter_is_dropped_and_ingest_goes_on(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    sink = Sink()
    url = f"mqtt://127.0.0.1:{mosquitto.port}"
    long_topic = "edgewise/" + "x" * 65516 + "/telemetry"  # 65,535 bytes: the most MQTT has
    assert len(long_topic) == 65535

    def broker() -> ExternalBroker:
        return ExternalBroker(sink.handler, url, data_dir=tmp_path / "d", count=sink.count,
                              known_device=lambda d: d == "pump-a")

    async def run() -> None:
        dev = Client(mosquitto.port)
        try:
            b = broker()
            await b.start()
            try:
                await asyncio.to_thread(dev.publish, long_topic, b"{}")
                await asyncio.to_thread(dev.publish, "edgewise/pump-a/telemetry", _reading(1))
                await asyncio.to_thread(wait_until, lambda: ("pump-a", 1) in sink.got, 5)
            finally:
                await b.stop()
            # the broker keeps the session: a message not acknowledged would come again
            b = broker()
            await b.start()
            try:
                await asyncio.to_thread(dev.publish, "edgewise/pump-a/telemetry", _reading(2))
                await asyncio.to_thread(wait_until, lambda: ("pump-a", 2) in sink.got, 5)
                await asyncio.sleep(0.3)
            finally:
                await b.stop()
        finally:
            dev.close()

    asyncio.run(asyncio.wait_for(run(), 40))
    assert sink.got == [("pump-a", 1), ("pump-a", 2)], sink.got
    # refused once, and acknowledged: not sent again to the restarted gateway
    assert sink.counts.count(("edgewise_messages_refused_total", "bad_device")) == 1, sink.counts


@pytest.mark.parametrize("topic", ["edgewise/a b/telemetry", "edgewise/-x/telemetry",
                                   "edgewise/" + "y" * 65 + "/telemetry"])
def test_a_topic_whose_device_level_is_no_device_id_gets_no_dead_letter(
        mosquitto: Mosquitto, topic: str) -> None:
    sink = Sink()
    b = ExternalBroker(sink.handler, f"mqtt://127.0.0.1:{mosquitto.port}?client_id=gw-bad",
                       count=sink.count, known_device=lambda d: True)
    watcher = Client(mosquitto.port, subscribe="edgewise/+/deadletter")

    async def run() -> None:
        await b.start()
        dev = Client(mosquitto.port)
        try:
            await asyncio.to_thread(dev.publish, topic, _reading(1))
            await asyncio.to_thread(dev.publish, "edgewise/ok-1/telemetry", _reading(2))
            await asyncio.to_thread(wait_until, lambda: ("ok-1", 2) in sink.got, 5)
        finally:
            dev.close()
            await b.stop()

    try:
        asyncio.run(asyncio.wait_for(run(), 30))
    finally:
        watcher.close()
    assert sink.got == [("ok-1", 2)], sink.got
    assert ("edgewise_messages_refused_total", "bad_device") in sink.counts, sink.counts
    assert watcher.got == [], watcher.got


def test_an_error_while_handling_a_message_is_acked_and_ingest_goes_on(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """``known_device`` raising (the credentials database locked, say) ended paho's thread;
    now that message is acknowledged, counted, logged and dead-lettered ``internal``, and
    the next ones are received."""
    sink = Sink()
    calls = {"n": 0}

    def known(device: str) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("database is locked")
        return True

    b = ExternalBroker(sink.handler, f"mqtt://127.0.0.1:{mosquitto.port}?client_id=gw-err",
                       count=sink.count, known_device=known)
    dev = Client(mosquitto.port, subscribe="edgewise/pump-a/deadletter")

    async def run() -> None:
        await b.start()
        try:
            for seq in (1, 2, 3):
                await asyncio.to_thread(dev.publish, "edgewise/pump-a/telemetry", _reading(seq))
            await asyncio.to_thread(wait_until, lambda: len(sink.got) >= 2 and dev.got, 5)
        finally:
            await b.stop()
        assert b.client.suppress_exceptions  # the backstop for the other callbacks

    with caplog.at_level(logging.ERROR, logger="edgewise.transport.client"):
        try:
            asyncio.run(asyncio.wait_for(run(), 30))
        finally:
            dev.close()
    assert sink.got == [("pump-a", 2), ("pump-a", 3)], sink.got
    assert ("edgewise_messages_refused_total", "internal") in sink.counts, sink.counts
    assert [json.loads(p)["reason"] for _, p in dev.got] == ["internal"], dev.got
    assert any("database is locked" in r.getMessage() for r in caplog.records), caplog.text


# 2. and 4. a bad ca= ----------------------------------------------------------------------

def _edgewise(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin",
            "NUMBA_CACHE_DIR": "/tmp/nbc"}
    return subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, timeout=120, check=False)


def _bad_cas(tmp_path: Path) -> list[str]:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    return [str(tmp_path / "missing-ca.pem"), str(junk)]


def test_a_bad_ca_is_a_config_error_naming_it(tmp_path: Path) -> None:
    for ca in _bad_cas(tmp_path):
        with pytest.raises(ConfigError) as exc:
            parse_mqtt_url(f"mqtts://gw:s3cret@broker:8883?ca={ca}")
        text = str(exc.value)
        assert f"ca= {ca!r}" in text and "PEM" in text and "s3cret" not in text, text
    # a good one, and none (the system's), pass
    system = ssl.get_default_verify_paths().openssl_cafile
    if Path(system).is_file():
        assert parse_mqtt_url(f"mqtts://broker?ca={system}")["ca"] == system
    assert parse_mqtt_url("mqtts://broker")["ca"] is None


def test_clear_retained_ack_with_a_bad_ca_is_a_connection_error(tmp_path: Path) -> None:
    for ca in _bad_cas(tmp_path):
        with pytest.raises(ConnectionError) as exc:
            clear_retained_ack(f"mqtts://127.0.0.1:{free_port()}?ca={ca}", "pump-a", timeout=2)
        assert "edgewise/pump-a/ack" in str(exc.value) and "not cleared" in str(exc.value)


@pytest.mark.parametrize("command", ["serve", "device delete"])
def test_serve_and_device_delete_refuse_a_bad_ca_in_one_line_before_anything(
        tmp_path: Path, command: str) -> None:
    d = tmp_path / "d"
    for i, ca in enumerate(_bad_cas(tmp_path)):
        env = {"EDGEWISE_MQTT": f"mqtts://gw:s3cret@127.0.0.1:{free_port()}?ca={ca}"}
        if command == "serve":
            p = _edgewise("serve", "--data-dir", str(d), "--port", str(free_port()), env=env)
        else:
            if i == 0:
                assert _edgewise("device", "add", "pump-a", "--data-dir", str(d)).returncode == 0
            p = _edgewise("device", "delete", "pump-a", "--data-dir", str(d), env=env)
        errors = [x for x in p.stderr.splitlines() if x.startswith("error: ")]
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert len(errors) == 1 and errors[0] == p.stderr.strip().splitlines()[-1], p.stderr
        assert repr(ca) in errors[0] and "s3cret" not in p.stderr, p.stderr
    if command == "serve":
        assert not d.exists(), sorted(x.name for x in d.iterdir())  # nothing made
    else:  # nothing deleted: the device is still registered
        listed = _edgewise("device", "list", "--data-dir", str(d))
        assert "pump-a" in listed.stdout, (listed.stdout, listed.stderr)


# 3. a password with an unencoded '/', '#' or '?' ------------------------------------------

@pytest.mark.parametrize("cut", ["/", "#", "?"])
def test_a_password_that_cuts_the_url_is_refused_without_quoting_it(cut: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_mqtt_url(f"mqtt://edgewise-gateway:Hunter2secret{cut}xyz@127.0.0.1:1883")
    text = str(exc.value)
    assert "Hunter2" not in text and "secret" not in text and "xyz" not in text, text
    assert "ercent-encode" in text and "%2F" in text, text


def test_an_at_sign_in_a_query_value_is_still_a_url() -> None:
    assert parse_mqtt_url("mqtt://b:1884?client_id=gw@site&prefix=p")["client_id"] == "gw@site"


# 5. large messages ------------------------------------------------------------------------

def test_a_message_the_pipeline_would_refuse_whole_is_refused_on_arrival(
        mosquitto: Mosquitto) -> None:
    """Over 16 x max_payload_bytes the pipeline reads no seqs and refuses the message
    whole: it is dead-lettered too_large and acknowledged on arrival, never queued (the
    queue held each whole until its commit). Up to that it still goes to the pipeline."""
    sink = Sink()
    b = ExternalBroker(sink.handler, f"mqtt://127.0.0.1:{mosquitto.port}?client_id=gw-big",
                       count=sink.count, known_device=lambda d: True, max_payload_bytes=1000)
    dev = Client(mosquitto.port, subscribe="edgewise/pump-a/deadletter")
    big = json.dumps({"seq": 1, "ts": 1.7e9, "metrics": {"t": 1}, "pad": "x" * 20_000})
    fits = json.dumps({"seq": 2, "ts": 1.7e9, "metrics": {"t": 1}, "pad": "x" * 10_000})

    async def run() -> None:
        await b.start()
        try:
            for payload in (big, fits):
                await asyncio.to_thread(dev.publish, "edgewise/pump-a/telemetry", payload)
            await asyncio.to_thread(wait_until, lambda: sink.got and dev.got, 5)
        finally:
            await b.stop()

    try:
        asyncio.run(asyncio.wait_for(run(), 30))
    finally:
        dev.close()
    assert sink.got == [("pump-a", 2)], sink.got  # the big one never reached the handler
    letters = [json.loads(p) for _, p in dev.got]
    assert [x["reason"] for x in letters] == ["too_large"], letters
    assert letters[0]["value"] == f"{len(big)} bytes", letters
    assert ("edgewise_messages_deadlettered_total", "too_large") in sink.counts, sink.counts


def _readme_mosquitto_conf() -> str:
    """The ``mosquitto.conf`` block the README gives for an external broker."""
    text = (REPO / "README.md").read_text()
    found = re.search(r"```\n# /etc/mosquitto/mosquitto.conf\n(.*?)```", text, re.S)
    assert found, "the README gives no mosquitto.conf block"
    return found.group(1)


@pytest.mark.skipif(shutil.which("mosquitto") is None or shutil.which("mosquitto_passwd")
                    is None, reason="mosquitto and mosquitto_passwd are not installed")
def test_the_readme_mosquitto_conf_refuses_a_packet_over_the_payload_limit(
        tmp_path: Path) -> None:
    """On a real Mosquitto with the README's mosquitto.conf (its listener on a free port of
    127.0.0.1, its files here): a 200 KB message goes through, a 300 KB one is refused by
    the broker (the device disconnected), so the gateway never reads it."""
    conf = _readme_mosquitto_conf()
    lines = conf.splitlines()
    assert "allow_anonymous false" in lines, conf
    listeners = [x for x in lines if x.startswith("listener ")]
    assert listeners == ["listener 1883"], conf  # Mosquitto 2.0: else loopback only
    limit = int(next(x.split()[1] for x in lines if x.startswith("max_packet_size ")))
    assert 256 * 1024 < limit <= 256 * 1024 + 8192, limit
    pw = tmp_path / "passwd"
    for i, user in enumerate(("gw", "pump-a")):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(pw), user,
                        "pw"], check=True, capture_output=True)
    (tmp_path / "acl").write_text("pattern readwrite #\n")  # every user
    port = free_port()
    conf = (conf.replace("listener 1883", f"listener {port} 127.0.0.1")
            .replace("/etc/mosquitto/passwd", str(pw))
            .replace("/etc/mosquitto/acl", str(tmp_path / "acl")))
    # as root, Mosquitto would drop to user 'mosquitto', who cannot read the files here
    conf += "user root\n" if os.geteuid() == 0 else ""
    (tmp_path / "mosquitto.conf").write_text(conf)
    with (tmp_path / "log").open("wb") as out:
        proc = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto.conf")],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_until(lambda: port_answers("127.0.0.1", port), 10), (tmp_path / "log"
                                                                       ).read_text()
        got: list[int] = []
        gw = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="gw-conf")
        gw.username_pw_set("gw", "pw")
        gw.on_message = lambda c, u, m: got.append(len(m.payload))
        subscribed = threading.Event()
        gw.on_subscribe = lambda *a: subscribed.set()
        gw.connect("127.0.0.1", port)
        gw.loop_start()
        gw.subscribe("edgewise/+/telemetry", 1)
        assert subscribed.wait(10)
        cut = threading.Event()
        dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pump-a-conf")
        dev.username_pw_set("pump-a", "pw")
        dev.on_disconnect = lambda *a: cut.set()
        dev.connect("127.0.0.1", port)
        dev.loop_start()
        dev.publish("edgewise/pump-a/telemetry", b"x" * 200_000, qos=1).wait_for_publish(10)
        assert wait_until(lambda: got == [200_000], 5), got
        dev.publish("edgewise/pump-a/telemetry", b"x" * 300_000, qos=1)
        assert cut.wait(10), "the broker let a 300 KB packet through"
        time.sleep(0.5)
        assert got == [200_000], got
        dev.loop_stop()
        gw.disconnect()
        gw.loop_stop()
    finally:
        proc.kill()
        proc.wait()


# 6. two gateways on one data dir ------------------------------------------------------------

def test_a_second_gateway_on_the_data_dir_is_refused_before_it_connects(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    url = f"mqtt://127.0.0.1:{mosquitto.port}"
    first, second = Sink(), Sink()
    a = ExternalBroker(first.handler, url, data_dir=tmp_path, count=first.count)
    b = ExternalBroker(second.handler, url, data_dir=tmp_path, count=second.count)
    assert a.client_id == b.client_id  # the data dir's kept id

    async def run() -> None:
        await a.start()
        try:
            with pytest.raises(ConfigError) as exc:
                await b.start()
            text = str(exc.value)
            assert a.client_id in text and "one gateway per external broker" in text, text
            dev = Client(mosquitto.port)
            try:
                for seq in range(1, 11):
                    await asyncio.to_thread(dev.publish, "edgewise/pump-a/telemetry",
                                            _reading(seq))
            finally:
                dev.close()
            await asyncio.to_thread(wait_until, lambda: len(first.got) >= 10, 5)
        finally:
            await a.stop()
        # once the first stopped, a gateway on the data dir starts
        await b.start()
        await b.stop()

    asyncio.run(asyncio.wait_for(run(), 30))
    assert [s for _, s in first.got] == list(range(1, 11)), first.got
    assert second.got == []
    log = mosquitto.log.read_text() if mosquitto.log.exists() else ""
    assert "already connected" not in log, log


def test_gateways_given_their_own_client_ids_are_not_refused(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    base = f"mqtt://127.0.0.1:{mosquitto.port}"
    brokers: list[Any] = [
        ExternalBroker(lambda m: [], f"{base}?client_id=gw-{n}&prefix=site{n}",
                       data_dir=tmp_path) for n in (1, 2)]

    async def run() -> None:
        for x in brokers:
            await x.start()
        for x in brokers:
            await x.stop()

    asyncio.run(asyncio.wait_for(run(), 30))
