"""External-broker client hunt of session 39 (``edgewise.transport.client``).

1. A password holding an ``@`` and then a ``/`` was masked only up to its own ``@``:
   ``mqtt://gw:P@ssw0rd/2024-plant7@broker.local:1883`` was shown as
   ``gw:***@ssw0rd/2024-plant7@broker.local`` (``shown_url``, PostgreSQL URLs too).
2. ``?ca=`` on ``mqtt://`` was dropped: the gateway connected in clear, password and all.
3. Every connect failure read "no connection could be made to it": a certificate that
   does not verify, one that names another host, a name that does not resolve, a refused
   port, a plain URL at a TLS port. The cause is named.
4. A broker lost while running was not logged at all, and one back refusing the gateway
   logged a warning at every try (every 2 s, for ever): one line for the loss, one for
   the return, refusals at most once a minute per reason.
5. A URL path, unknown or misspelt query keys were dropped without a word, and
   ``client_id=gw+plant7`` became ``'gw plant7'``.
7. A prefix holding ``+``, ``#`` or a NUL was taken (a subscription to another topic, or a
   late failure); ``MqttDevice(tls_ca=missing)`` raised a bare ``FileNotFoundError``.
6. ``serve --help`` never said how to give the broker's CA.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgewise.errors import BrokerUnavailableError, ConfigError
from edgewise.store import shown_url
from edgewise.transport.client import ExternalBroker, clear_retained_ack, parse_mqtt_url
from tests.conftest import free_port, wait_until
from tests.sim.test_sim_device_fixes import _cert_for, tls_listener
from tests.transport.conftest import Mosquitto

LOGGER = "edgewise.transport.client"


# 1. a password holding '@' and '/' ------------------------------------------------------

@pytest.mark.parametrize("url", [
    "mqtt://edgewise-gateway:P@ssw0rd/2024-plant7@broker.local:1883",
    "mqtts://gw:P@ssw0rd/2024-plant7@broker.local?prefix=p",
    "postgresql://ew:P@ssw0rd/2024-plant7@db:5432/ew?schema=a",
    "mqtt://gw:a@b@c/2024-plant7@broker:1883",
])
def test_a_password_holding_an_at_sign_and_a_slash_is_masked_whole(url: str) -> None:
    """Check nothing of the password is shown, by ``shown_url`` or in the refusal."""
    shown = shown_url(url)
    assert "ssw0rd" not in shown and "2024-plant7" not in shown, shown
    assert ":***@" in shown and ("@broker" in shown or "@db:5432/ew?schema=a" in shown)
    if url.startswith("mqtt"):
        with pytest.raises(ConfigError) as exc:
            parse_mqtt_url(url)
        assert "ssw0rd" not in str(exc.value) and "2024-plant7" not in str(exc.value)


def test_an_at_sign_in_a_query_value_is_still_shown() -> None:
    """Check the masking stops before the query (libpq's ``application_name=a@b``)."""
    assert (shown_url("postgresql://ew:pw@db/ew?application_name=a@b")
            == "postgresql://ew:***@db/ew?application_name=a@b")


# 2. ca= on mqtt:// ----------------------------------------------------------------------

def test_ca_on_a_plain_mqtt_url_is_refused_before_connecting(tmp_path: Path) -> None:
    """Check ``mqtt://...?ca=`` is a ConfigError naming ca= and mqtts:// (it connected in
    clear and sent the password), raised by the constructor: nothing is dialled."""
    ca = tmp_path / "ca.pem"
    ca.write_text("not read\n")
    url = f"mqtt://gw:s3cretPW@127.0.0.1:{free_port()}?ca={ca}&client_id=gw1"
    for call in (lambda: parse_mqtt_url(url), lambda: ExternalBroker(lambda m: [], url)):
        with pytest.raises(ConfigError) as exc:
            call()
        text = str(exc.value)
        assert "ca=" in text and "mqtts://" in text and "s3cretPW" not in text, text
    with pytest.raises(ConfigError, match="mqtts://"):
        clear_retained_ack(url, "pump-1", timeout=1)


def test_a_missing_ca_file_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_mqtt_url("mqtts://gw:pw@broker?ca=/no/such/ca.pem")
    assert "'/no/such/ca.pem'" in str(exc.value) and "No such file" in str(exc.value)


# 3. the cause of a failed connection ------------------------------------------------------

def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA certificate naming only DNS ``name``, and its key."""
    return _cert_for(folder, name)


@pytest.fixture
def tls_port(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """A TLS listener on 127.0.0.1 whose certificate names 'localhost' only (it speaks no
    MQTT: the handshake is what is tried); its port, its CA and another CA."""
    cert, key = _self_signed(tmp_path, "localhost")
    other, _ = _self_signed(tmp_path, "other.example")
    with tls_listener(cert, key) as port:
        yield port, cert, other


def _start_error(url: str, timeout: float = 1.0) -> str:
    b = ExternalBroker(lambda m: [], url)
    with pytest.raises(BrokerUnavailableError) as exc:
        asyncio.run(b.start(timeout=timeout))
    return str(exc.value)


@pytest.mark.parametrize(("case", "named"), [
    ("hostname", ["TLS", "does not name '127.0.0.1'", "mismatch"]),
    ("wrong ca", ["TLS", "does not verify against ca=", "other.example.pem"]),
    ("plain to tls", ["without answering the MQTT CONNECT", "mqtts://"]),
    ("refused", ["Connection refused", "is a broker listening"]),
    ("no such host", ["host name 'no-such-host.invalid' cannot be resolved"]),
])
def test_a_connect_failure_names_its_cause(tls_port: tuple[int, Path, Path], case: str,
                                           named: list[str]) -> None:
    """Check the start error names why (each read "no connection could be made to it",
    and serve added "Give the URL of a running broker" to a certificate error)."""
    port, ca, other = tls_port
    url = {
        "hostname": f"mqtts://127.0.0.1:{port}?ca={ca}&client_id=h1",
        "wrong ca": f"mqtts://localhost:{port}?ca={other}&client_id=h2",
        "plain to tls": f"mqtt://127.0.0.1:{port}?client_id=h3",
        "refused": f"mqtt://127.0.0.1:{free_port()}?client_id=h4",
        "no such host": "mqtt://no-such-host.invalid:1883?client_id=h5",
    }[case]
    text = _start_error(url)
    assert all(n in text for n in named), text


# 4. a broker lost while running, back refusing, back accepting ----------------------------

def _warned(caplog: pytest.LogCaptureFixture, part: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == LOGGER and r.levelno >= logging.WARNING and part in r.getMessage()]


def test_a_lost_broker_is_logged_once_and_refusals_are_rate_limited(
        mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """Check losing the broker logs one warning (it logged nothing), a broker back that
    refuses the gateway one (it logged one per try, every 2 s for ever), and the return
    one, with the outage's length."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    url = f"mqtt://127.0.0.1:{mosquitto.port}?client_id=gw-loss"
    accepting = mosquitto.conf.read_text()

    async def run() -> None:
        b = ExternalBroker(lambda m: [], url)
        b.client.reconnect_delay_set(0.05, 0.2)  # a try every 0.2 s, not 2 s
        await b.start(timeout=10)
        try:
            caplog.clear()
            mosquitto.stop()
            await asyncio.sleep(1.5)
            assert len(_warned(caplog, "connection was lost")) == 1, caplog.text
            assert len(_warned(caplog, "cannot reconnect: Connection refused")) == 1, \
                caplog.text
            mosquitto.conf.write_text(f"listener {mosquitto.port} 127.0.0.1\n"
                                      "allow_anonymous false\n")
            mosquitto.start()
            await asyncio.sleep(2.0)  # some 10 refusals
            refused = _warned(caplog, "refused the gateway")
            assert len(refused) == 1 and "Not authorized" in refused[0], caplog.text
            assert not b.client.is_connected()
            mosquitto.stop()
            mosquitto.conf.write_text(accepting)
            mosquitto.start()
            assert await asyncio.to_thread(
                wait_until, lambda: _warned(caplog, "reconnected after"), 10), caplog.text
            assert len(_warned(caplog, "connection was lost")) == 1, caplog.text
        finally:
            await b.stop()
        assert len(_warned(caplog, "reconnected after")) == 1, caplog.text

    asyncio.run(run())


def test_clear_retained_ack_names_a_refusal_at_once(tmp_path: Path) -> None:
    """Check a broker that refuses the admin client is named as such, without waiting
    out the timeout (it waited, then said "did not accept the connection")."""
    m = Mosquitto(tmp_path)
    m.conf.write_text(f"listener {m.port} 127.0.0.1\nallow_anonymous false\n")
    m.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(ConnectionError) as exc:
            clear_retained_ack(f"mqtt://gw:pw@127.0.0.1:{m.port}", "pump-1", timeout=5)
        assert time.monotonic() - t0 < 4
        assert "refused the connection: Not authorized" in str(exc.value), exc.value
        assert "not cleared" in str(exc.value)
    finally:
        m.stop()


# 5. and 7. what the URL holds ------------------------------------------------------------

@pytest.mark.parametrize(("url", "named"), [
    ("mqtt://broker:1883/plant7", ["path '/plant7'", "?prefix=plant7"]),
    ("mqtt://broker:1883?topic_prefix=plant7", ["'topic_prefix'", "'prefix'"]),
    ("mqtt://broker:1883?Prefix=plant7", ["'Prefix'", "'prefix'"]),
    ("mqtt://broker:1883?prefix=plant7&clientid=gw-a", ["'clientid'", "'client_id'"]),
    ("mqtt://broker:1883?insecure=1", ["'insecure'", "prefix=, client_id=, ca="]),
    ("mqtt://broker:1883?prefix=a&prefix=b", ["prefix= twice"]),
    ("mqtt://broker:1883?prefix=", ["prefix= has no value"]),
    ("mqtt://broker:1883?client_id=gw%20a", ["client_id= 'gw a'"]),
    ("mqtt://broker:1883?prefix=plant%2B7", ["prefix= 'plant+7'", "'+'"]),
    ("mqtt://broker:1883?prefix=site%23", ["prefix= 'site#'", "'#'"]),
    ("mqtt://broker:1883?prefix=plant7%00x", ["'\\x00'"]),
    ("mqtt://broker:1883?prefix=plant/%2B", ["'+'"]),
    ("mqtt://broker:1883?prefix=site#", ["'#'", "fragment"]),
    ("mqtt://broker:1883?prefix=%2F", ["only '/'"]),
])
def test_what_the_url_would_drop_or_misread_is_refused(url: str, named: list[str]) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_mqtt_url(url)
    assert all(n in str(exc.value) for n in named), str(exc.value)


def test_a_plus_in_a_query_value_is_kept_and_a_trailing_slash_taken() -> None:
    p = parse_mqtt_url("mqtt://broker:1883/?client_id=gw+plant7&prefix=%2Fplant%207%2F")
    assert (p["client_id"], p["prefix"]) == ("gw+plant7", "plant 7")
    assert parse_mqtt_url("mqtt://b:1884?client_id=gw@site&prefix=p")["client_id"] == "gw@site"


def test_a_device_with_a_missing_ca_file_is_told_which() -> None:
    from edgewise.errors import InvalidParameterError
    from edgewise.sim.device import MqttDevice

    with pytest.raises(InvalidParameterError) as exc:
        MqttDevice("pump-1", "s3cret", tls_ca="/no/ca.pem")
    assert "'/no/ca.pem'" in str(exc.value) and exc.value.field == "tls_ca"


# 6. --help --------------------------------------------------------------------------------

def test_serve_help_says_how_to_give_the_brokers_ca() -> None:
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    out = CliRunner(mix_stderr=False).invoke(app, ["serve", "--help"],
                                             env={"COLUMNS": "200"}).stdout
    helped = " ".join(re.sub("[│╭╮╰╯─]", " ", out).split())
    assert "mqtts://HOST:8883?ca=/path/ca.pem" in helped, helped
