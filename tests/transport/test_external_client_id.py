"""The external-broker gateway's MQTT client id, and a bad port in its URL.

The client id was ``edgewise-gateway-<sha256(data dir path)>``: two gateways whose data
dirs had the same path (two hosts or containers, even with different ``?prefix=``) shared
one broker session, took it from each other, and site A's gateway received site B's
telemetry, dead-lettered it as ``unknown_device`` and PUBACKed it, so B never stored it.
Now it is random and kept in the data dir; a data dir an earlier gateway ran on keeps the
derived id (its session holds what was queued while the gateway was down). A broker taking
the session over is logged. A bad port (``:99999``, ``:abc``) raised urllib's ValueError
(a 64-line traceback from ``serve`` and ``device delete``); it is a one-line ConfigError.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edgewise.errors import ConfigError
from edgewise.transport.base import Message, Outcome
from edgewise.transport.client import ExternalBroker, parse_mqtt_url
from tests.conftest import REPO, free_port, wait_until
from tests.transport.conftest import Mosquitto

DERIVED_PREFIX = "edgewise-gateway-"
ID_FILE = "mqtt_client_id"  # the file the id is kept in


def derived_id(data_dir: Path | str) -> str:
    """The id earlier versions derived from the data dir's path (computed here, not
    imported: the test must not lean on the code under test)."""
    import hashlib

    return DERIVED_PREFIX + hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]


class Site:
    """A gateway's handler and dead-letter counter: the seqs it committed, per device."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.got: list[int] = []
        self.deadlettered = 0

    def handler(self, msgs: list[Message]) -> list[Outcome]:
        self.got.extend(json.loads(m.payload)["seq"] for m in msgs)
        return [Outcome(m.device_id, None) for m in msgs]

    def count(self, name: str, value: float = 1.0, **labels: str) -> None:
        if name == "edgewise_messages_deadlettered_total":
            self.deadlettered += 1


def _publish(port: int, topic: str, seqs: range, gap: float) -> None:
    dev = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"dev-{time.time_ns()}")
    dev.connect("127.0.0.1", port)
    dev.loop_start()
    try:
        for i in seqs:
            info = dev.publish(topic, json.dumps({"ts": 1.7e9 + i, "metrics": {"t": 1},
                                                  "seq": i}), qos=1)
            info.wait_for_publish(5)
            time.sleep(gap)
    finally:
        dev.disconnect()
        dev.loop_stop()


# 1. two gateways whose data dirs have the same path -----------------------------------

def test_gateways_whose_data_dirs_have_one_path_do_not_share_a_broker_session(
        mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the same relative path "edgewise" under two working directories: two hosts' data
    # dirs at the same path (the old id hashed that path alone)
    for host in ("hostA", "hostB"):
        (tmp_path / host / "edgewise").mkdir(parents=True)
    same = Path("edgewise")
    sites = {"A": Site("plantA"), "B": Site("plantB")}
    brokers = {}
    for name, host, own in (("A", "hostA", "a-"), ("B", "hostB", "b-")):
        monkeypatch.chdir(tmp_path / host)
        site = sites[name]
        brokers[name] = ExternalBroker(
            site.handler, f"mqtt://127.0.0.1:{mosquitto.port}?prefix={site.prefix}",
            data_dir=same, count=site.count, known_device=lambda d, own=own: d.startswith(own))
    monkeypatch.chdir(tmp_path)

    async def run() -> None:
        await brokers["A"].start()
        await brokers["B"].start()
        try:
            await asyncio.to_thread(_publish, mosquitto.port, "plantB/b-dev1/telemetry",
                                    range(1, 21), 0.05)
            await asyncio.to_thread(wait_until, lambda: len(set(sites["B"].got)) >= 20, 5)
            await asyncio.sleep(0.3)  # anything A would still get
        finally:
            await brokers["A"].stop()
            await brokers["B"].stop()

    asyncio.run(asyncio.wait_for(run(), 30))
    # every message of site B's device stored by site B's gateway, none taken by A's
    assert sorted(set(sites["B"].got)) == list(range(1, 21)), sites["B"].got
    assert sites["A"].deadlettered == 0 and sites["A"].got == []
    a_id, b_id = brokers["A"].client_id, brokers["B"].client_id
    assert a_id != b_id and derived_id(same) not in (a_id, b_id), (a_id, b_id)
    # each kept in its own data dir
    assert (tmp_path / "hostA/edgewise" / ID_FILE).read_text() == a_id + "\n"
    assert (tmp_path / "hostB/edgewise" / ID_FILE).read_text() == b_id + "\n"


# 2. the id is made once and kept --------------------------------------------------------

def test_a_new_data_dir_gets_a_random_client_id_kept_private_for_every_start(
        tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    url = "mqtt://127.0.0.1:1883"
    first = ExternalBroker(lambda m: [], url, data_dir=d).client_id
    assert first.startswith(DERIVED_PREFIX) and len(first) == len(derived_id(d)), first
    assert first != derived_id(d)
    f = d / ID_FILE
    assert f.read_text() == first + "\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert [p.name for p in d.iterdir()] == [ID_FILE]  # no temporary file left behind
    assert ExternalBroker(lambda m: [], url, data_dir=d).client_id == first  # kept
    other = tmp_path / "e"
    other.mkdir()
    assert ExternalBroker(lambda m: [], url, data_dir=other).client_id != first
    # client_id= in the URL wins (the data dir's own is kept all the same)
    assert ExternalBroker(lambda m: [], f"{url}?client_id=gw-7", data_dir=d).client_id \
        == "gw-7"
    assert (d / ID_FILE).read_text() == first + "\n"


def test_a_first_start_refused_for_its_url_does_not_make_the_next_one_an_upgrade(
        tmp_path: Path) -> None:
    # serve with a typo in --mqtt: the gateway made its store, lock and detector state,
    # then the URL was refused; the next start is still a new gateway's (random id)
    from edgewise.config import Settings
    from edgewise.gateway.runtime import Gateway

    d = tmp_path / "d"
    gw = Gateway(Settings(data_dir=d, mqtt="mqtt://127.0.0.1:abc"))
    try:
        with pytest.raises(ConfigError):
            gw.make_transport()
    finally:
        asyncio.run(gw.stop())
    old = time.time() - 3600  # as if the next start came an hour later
    for p in d.rglob("*"):
        os.utime(p, (old, old))
    gw = Gateway(Settings(data_dir=d, mqtt="mqtt://127.0.0.1:1883"))
    try:
        cid = gw.make_transport().client_id  # type: ignore[attr-defined]
    finally:
        asyncio.run(gw.stop())
    assert cid != derived_id(d) and cid.startswith(DERIVED_PREFIX), cid


def test_a_damaged_client_id_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / ID_FILE).write_bytes(b"\n")
    with pytest.raises(ConfigError) as exc:
        ExternalBroker(lambda m: [], "mqtt://127.0.0.1:1883", data_dir=tmp_path)
    assert str(tmp_path / ID_FILE) in str(exc.value) and "b'\\n'" in str(exc.value)


# 3. the upgrade: a data dir an earlier gateway ran on keeps the derived id ---------------

def _age(data_dir: Path, *names: str) -> None:
    """Make gateway files in ``data_dir`` as an earlier gateway left them (a day old)."""
    old = time.time() - 86_400
    for name in names:
        p = data_dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
        os.utime(p, (old, old))


def test_an_upgraded_gateway_keeps_its_derived_id_and_what_the_broker_queued(
        mosquitto: Mosquitto, tmp_path: Path) -> None:
    d = tmp_path / "data"
    _age(d, "edgewise.duckdb", "detectors.pickle")
    legacy = derived_id(d)
    # the earlier gateway's persistent session: subscribed, then down
    old = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=legacy, clean_session=False)
    subscribed = threading.Event()
    old.on_subscribe = lambda *a: subscribed.set()
    old.connect("127.0.0.1", mosquitto.port)
    old.loop_start()
    old.subscribe("edgewise/+/telemetry", qos=1)
    assert subscribed.wait(5)
    old.disconnect()
    old.loop_stop()
    # the device goes on sending while the gateway is down: the broker queues it
    _publish(mosquitto.port, "edgewise/pump-1/telemetry", range(1, 6), 0.0)

    site = Site("edgewise")
    broker = ExternalBroker(site.handler, f"mqtt://127.0.0.1:{mosquitto.port}", data_dir=d,
                            count=site.count)

    async def run() -> None:
        await broker.start()
        try:
            await asyncio.to_thread(wait_until, lambda: len(site.got) >= 5, 5)
        finally:
            await broker.stop()

    asyncio.run(asyncio.wait_for(run(), 20))
    assert broker.client_id == legacy
    assert (d / ID_FILE).read_text() == legacy + "\n"  # recorded, so it stays so
    assert sorted(site.got) == [1, 2, 3, 4, 5]  # nothing queued was lost at the upgrade


def test_a_gateway_started_on_a_new_data_dir_gets_a_random_id_and_keeps_it(
        tmp_path: Path) -> None:
    # through the Gateway, whose start makes its store, lock and registry before the
    # transport: files this process made do not count as an earlier gateway's
    from edgewise.config import Settings
    from edgewise.gateway.runtime import Gateway

    d = tmp_path / "d"
    url = "mqtt://127.0.0.1:1883?prefix=plantA"
    ids = []
    for _ in range(2):
        gw = Gateway(Settings(data_dir=d, mqtt=url))
        try:
            assert (d / "gateway.lock").exists() and (d / "edgewise.duckdb").exists()
            ids.append(gw.make_transport().client_id)  # type: ignore[attr-defined]
        finally:
            asyncio.run(gw.stop())
    assert ids[0] == ids[1] and ids[0] != derived_id(d), ids
    assert (d / ID_FILE).read_text() == ids[0] + "\n"


def test_a_gateway_data_dir_from_before_gets_the_derived_id_through_the_gateway(
        tmp_path: Path) -> None:
    from edgewise.config import Settings
    from edgewise.gateway.runtime import Gateway

    d = tmp_path / "d"
    _age(d, "gateway.lock")
    gw = Gateway(Settings(data_dir=d, mqtt="mqtt://127.0.0.1:1883"))
    try:
        assert gw.make_transport().client_id == derived_id(d)  # type: ignore[attr-defined]
    finally:
        asyncio.run(gw.stop())
    assert (d / ID_FILE).read_text() == derived_id(d) + "\n"


# 4. a session taken over is warned of ---------------------------------------------------

def test_a_session_taken_over_by_another_client_is_warned_of(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    url = f"mqtt://127.0.0.1:{mosquitto.port}?client_id=gw-twice"
    a = ExternalBroker(lambda m: [], url)
    b = ExternalBroker(lambda m: [], url)

    def warned() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.levelno == logging.WARNING
                and "gw-twice" in r.getMessage() and "client id" in r.getMessage()]

    async def run() -> None:
        await a.start()
        await b.start()
        try:
            await asyncio.to_thread(wait_until, lambda: warned(), 8)
        finally:
            await a.stop()
            await b.stop()

    with caplog.at_level(logging.WARNING, logger="edgewise.transport.client"):
        asyncio.run(asyncio.wait_for(run(), 30))
    found = warned()
    assert found, [r.getMessage() for r in caplog.records]
    text = found[0].getMessage()
    assert f"127.0.0.1:{mosquitto.port}" in text and "client_id=" in text, text
    assert len(found) <= 2, [r.getMessage() for r in found]  # once per gateway, not a flood


def test_a_gateway_that_stops_and_starts_again_is_not_warned_of(
        mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"mqtt://127.0.0.1:{mosquitto.port}"

    async def run() -> None:
        for _ in range(4):
            b = ExternalBroker(lambda m: [], url, data_dir=tmp_path)
            await b.start()
            await b.stop()

    with caplog.at_level(logging.WARNING, logger="edgewise.transport.client"):
        asyncio.run(asyncio.wait_for(run(), 30))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# 5. a bad port in the URL -----------------------------------------------------------------

@pytest.mark.parametrize("port", ["99999", "abc", "0", "-1", ""])
def test_a_bad_port_in_the_mqtt_url_is_a_config_error_with_the_password_masked(
        port: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_mqtt_url(f"mqtt://gw:s3cret@broker:{port}?prefix=p")
    text = str(exc.value)
    assert "s3cret" not in text and f"'mqtt://gw:***@broker:{port}?prefix=p'" in text, text
    assert f"port {port!r}" in text and "1 to 65535" in text, text


def test_good_ports_and_none_still_parse() -> None:
    assert parse_mqtt_url("mqtt://b:65535")["port"] == 65535
    assert parse_mqtt_url("mqtt://b")["port"] == 1883
    assert parse_mqtt_url("mqtts://b")["port"] == 8883
    assert parse_mqtt_url("mqtt://[::1]:1884")["port"] == 1884


def _edgewise(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin",
           "NUMBA_CACHE_DIR": "/tmp/nbc"}
    return subprocess.run([sys.executable, "-m", "edgewise", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


@pytest.mark.parametrize("command", ["serve", "device delete"])
def test_serve_and_device_delete_refuse_a_bad_port_in_one_line(
        tmp_path: Path, command: str) -> None:
    url = "mqtt://gw:s3cret@broker:99999"
    d = tmp_path / "d"
    if command == "serve":
        p = _edgewise("serve", "--data-dir", str(d), "--port", str(free_port()),
                      "--mqtt", url)
    else:
        d.mkdir()
        p = _edgewise("device", "delete", "pump-1", "--data-dir", str(d), "--mqtt", url)
    errors = [x for x in p.stderr.splitlines() if x.startswith("error: ")]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert len(errors) == 1 and errors[0] == p.stderr.strip().splitlines()[-1], p.stderr
    assert "mqtt://gw:***@broker:99999" in errors[0] and "s3cret" not in p.stderr, p.stderr
