"""``repr(Settings)`` hides the secrets a setting may hold: an alert webhook URL's path
and query (a token, as Slack's and Teams' are) and the password of a store or MQTT broker
URL; it shows their hosts, as logs do."""

from __future__ import annotations

from edgewise.config import Settings


def test_repr_hides_webhook_tokens_and_store_passwords() -> None:
    s = Settings(alert_webhooks=("https://hooks.example.org/services/T0/B0/XyZtoken",
                                 "https://ops:pw1@relay.example.org:8443/h?key=qs-secret"),
                 store="postgresql://ew:s3cret@db.example.org:5432/ew?password=also",
                 mqtt="mqtts://gw:m9tt-pass@broker.example.org:8883",
                 alert_webhook_secret="0123456789abcdef-key")
    r = repr(s)
    for secret in ("XyZtoken", "services", "pw1", "qs-secret", "s3cret", "also",
                   "m9tt-pass", "0123456789abcdef-key"):
        assert secret not in r, f"repr(Settings) shows {secret!r}: {r}"
    for host in ("hooks.example.org", "relay.example.org:8443", "db.example.org:5432",
                 "broker.example.org:8883"):
        assert host in r, f"repr(Settings) does not name the host {host!r}: {r}"


def test_repr_shows_what_holds_no_secret() -> None:
    s = Settings(alert_webhooks="https://a.example.org/x, https://b.example.org/y",
                 store="duckdb:///srv/ew/edgewise.duckdb", http_port=9000)
    r = repr(s)
    assert "store='duckdb:///srv/ew/edgewise.duckdb'" in r
    assert "http_port=9000" in r
    assert r.count("(webhook ") == 2
    assert r.startswith("Settings(data_dir=")
