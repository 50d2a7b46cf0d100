"""The embedded broker's per-device connection cap and store queue bound are settings like
its other limits: ``Settings`` fields read from ``EDGEWISE_<NAME>``, checked at load, and
passed by the gateway to the broker it makes."""

from __future__ import annotations

import pytest

from edgewise.config import Settings
from edgewise.errors import ConfigError
from edgewise.gateway.runtime import Gateway


def _broker_of(settings: Settings):
    gw = Gateway(settings)
    try:  # made, not started: no port is opened
        broker = gw.make_transport()
        return broker.max_connections_per_device, broker.batcher.max_queued_bytes, \
            broker.batcher.max_device_bytes
    finally:
        gw._close_opened()


def test_settings_reach_the_embedded_broker(tmp_path, monkeypatch):
    """Check the two limits set in Settings (not the environment) reach the broker, and
    0 keeps the defaults (8 connections, 64 MiB, a quarter per device)."""
    monkeypatch.delenv("EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE", raising=False)
    monkeypatch.delenv("EDGEWISE_MQTT_MAX_QUEUED_BYTES", raising=False)
    s = Settings.load(env={}, data_dir=tmp_path / "a", mqtt_max_connections_per_device=2,
                      mqtt_max_queued_bytes=4096)
    assert _broker_of(s) == (2, 4096, 1024)
    assert _broker_of(Settings.load(env={}, data_dir=tmp_path / "b")) == (
        8, 64 * 1024 * 1024, 16 * 1024 * 1024)


def test_the_environment_names_them_and_bad_values_are_refused_at_load(tmp_path):
    """Check EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE / _MAX_QUEUED_BYTES load into
    Settings, and a bad value is refused naming the setting and its range."""
    env = {"EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE": "3",
           "EDGEWISE_MQTT_MAX_QUEUED_BYTES": "100000"}
    s = Settings.load(env=env, data_dir=tmp_path)
    assert (s.mqtt_max_connections_per_device, s.mqtt_max_queued_bytes) == (3, 100000)
    with pytest.raises(ConfigError, match=r"'mqtt_max_queued_bytes' "
                       r"\(EDGEWISE_MQTT_MAX_QUEUED_BYTES\) has value '-5'"):
        Settings.load(env={"EDGEWISE_MQTT_MAX_QUEUED_BYTES": "-5"})
    with pytest.raises(ConfigError, match="mqtt_max_connections_per_device"):
        Settings.load(env={"EDGEWISE_MQTT_MAX_CONNECTIONS_PER_DEVICE": "many"})
