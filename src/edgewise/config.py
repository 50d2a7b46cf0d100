"""Settings: CLI flags > ``EDGEWISE_*`` environment > defaults that work out of the box.

>>> s = Settings.load(env={"EDGEWISE_HTTP_PORT": "9000"}, data_dir="/tmp/ew")
>>> s.http_port, str(s.data_dir)
(9000, '/tmp/ew')
>>> Settings.load(env={"EDGEWISE_HTTP_PORT": "ten"})
Traceback (most recent call last):
...
edgewise.errors.ConfigError: Setting 'http_port' (EDGEWISE_HTTP_PORT, --port) has value 'ten'. It must be an int in the range [1, 65535].
>>> Settings.load(env={"EDGEWISE_RATE_LIMIT_PER_S": "nan"})
Traceback (most recent call last):
...
edgewise.errors.ConfigError: Setting 'rate_limit_per_s' (EDGEWISE_RATE_LIMIT_PER_S) has value 'nan'. It must be a finite float in the range [1e-06, inf).
"""  # noqa: E501

from __future__ import annotations

import dataclasses
import ipaddress
import math
import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgewise.errors import ConfigError
from edgewise.params import Interval

__all__ = ["MAX_BYTES", "MAX_FUTURE_S", "MAX_READINGS", "MAX_WAIT_S", "MIN_RATE_PER_S",
           "SYSLOG_FACILITIES", "Settings", "SyslogTarget", "default_data_dir", "is_loopback",
           "parse_syslog_url", "scrubbed", "setting_value", "shown_url", "url_host", "userinfo_end"]


def default_data_dir() -> Path:
    """Where Edgewise keeps its store, keys and registry when nothing else is said."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "edgewise"


@dataclass(frozen=True)
class Settings:
    """Every knob of a running Edgewise, with its default.

    Attributes mirror the ``EDGEWISE_<NAME>`` environment variables, e.g.
    ``EDGEWISE_DATA_DIR``, ``EDGEWISE_STORE``, ``EDGEWISE_MQTT``.
    """

    data_dir: Path = field(default_factory=default_data_dir)
    store: str = ""  # "" means duckdb:///<data_dir>/edgewise.duckdb
    host: str = "127.0.0.1"
    http_port: int = 8080
    mqtt: str = "embedded"  # or mqtt://host:port
    mqtt_port: int = 1884
    tls_cert: str = ""
    tls_key: str = ""
    max_payload_bytes: int = 256 * 1024  # telemetry, once decompressed
    max_body_bytes: int = 64 * 1024  # every other request body (JSON of the API)
    max_future_s: float = 300.0
    rate_limit_per_s: float = 2000.0  # readings per second per device, sustained
    rate_limit_burst: float = 20000.0
    # how long a stopping gateway waits for HTTP requests in flight to end (an upload that
    # stalls half sent held the stop, and the saving of the detector state, for ever: a
    # service manager then killed it, 10 s under docker stop); past it they are cancelled
    http_shutdown_timeout_s: float = 5.0
    # seconds an HTTP connection may stay open with no request under way, and an HTTPS one
    # may take for its TLS handshake, before the gateway closes it (edgewise.gateway.
    # http_guard); a reverse proxy that keeps idle connections open longer needs more
    http_idle_s: float = 10.0
    # metric names a device may have (edgewise.gateway.metric_cap): a reading of a name new
    # to a device that has this many already is refused (reason too_many_metrics), as each
    # name costs the gateway a detector of its own; names it has keep being taken
    max_metrics_per_device: int = 256
    # embedded MQTT broker: connections not yet logged in (CONNECT, TLS handshake) from one
    # source address (an IPv6 one by its /64; 0: 128, or half the second where that is
    # less), and in all (0: a quarter of the open-file limit, 16 to 4096); past either a new
    # one is closed at once, so idle sockets cannot take the gateway's files
    # (edgewise.transport.broker). A site whose devices share one NAT address and reconnect
    # together needs the first at least its device count
    mqtt_max_pending_per_source: int = 0
    mqtt_max_pending: int = 0
    # embedded MQTT broker: logged-in connections one device may hold at once (0: 8; one
    # more is answered CONNACK 3), and telemetry payload bytes that may wait for the store
    # (0: 64 MiB, a quarter of it per device; past it no PUBACK until there is room)
    mqtt_max_connections_per_device: int = 0
    mqtt_max_queued_bytes: int = 0
    throttle_after_failures: int = 100
    # proxies whose X-Forwarded-For / X-Forwarded-Proto the HTTP server believes (the
    # client address wrong secrets are counted by): "" trusts none (the default), else
    # comma-separated addresses or networks of the reverse proxies, or "*" for any peer
    forwarded_allow_ips: str = ""
    retention_days: int = 0  # 0 keeps everything
    alert_threshold: float = 0.9
    # the level detector each metric is scored with (two-state streams stay states):
    # one of edgewise.detect.LEVEL_DETECTORS
    detector: str = "context-likelihood"
    # a per-metric alarm on a stream read more than once a minute needs its reading this
    # many running standard deviations off the stream's running mean (more on a stream read
    # so often that noise would pass it more than once in 10 hours), and a stuck sensor
    # alarms (edgewise.gateway.fast_streams), and as many residual standard deviations
    # off what the device's other sensors predict for it (edgewise.gateway.cross_sensor);
    # 0 turns all three off
    fast_stream_z: float = 3.0
    # the cross-sensor gate also explains a device's readings by what its fleet's devices
    # with the same metrics agree on (edgewise.gateway.cross_sensor), so a new device's
    # first operating changes are not alarms
    fleet_prior: bool = True
    # put a device's rows together again where it sends each metric in its own message, so
    # its multivariate detector (T²) runs (edgewise.gateway.split_rows), judged by the
    # cross-sensor gate as rows of one time; off: such a device gets per-metric detectors
    # only (4 fault-free simulated pumps sending their metrics 3 ms apart: 4 alerts in an
    # hour either way, as sent together; a relation break is caught only with it)
    assemble_split_rows: bool = True
    # outgoing alert webhooks (edgewise.gateway.webhooks): the URLs that each new alert is
    # POSTed to, signed; "" sends none. Text (EDGEWISE_ALERT_WEBHOOKS) is comma-separated
    # (a comma inside a URL written %2C); a tuple (--alert-webhook, once per URL) is taken
    # as it is. https://, or http:// to a loopback host (or anywhere with
    # alert_webhook_allow_http)
    alert_webhooks: str | tuple[str, ...] = ""
    # the HMAC-SHA256 key every POST is signed with ("": made at first use and kept in
    # <data_dir>/alert_webhook_secret, mode 0600); never printed
    alert_webhook_secret: str = field(default="", repr=False)
    alert_webhook_allow_http: bool = False  # plain http:// to a host that is not loopback
    alert_webhook_ca_file: str = ""  # PEM CA bundle the receivers' certificates are checked with
    alert_webhook_timeout_s: float = 5.0  # per POST
    alert_webhook_poll_s: float = 60.0  # how often the store's alert list is read for missed ones
    alert_webhook_retry_s: float = 1.0  # first wait after a failed POST, doubled each time
    alert_webhook_max_retry_s: float = 300.0  # the longest wait between tries
    # how long a seq gap may stay open before it is reported (a ``seq_gap`` alert)
    seq_gap_grace_s: float = 30.0
    # live false-alarm feedback (edgewise.alerts.AlertManager.note_verdict): an alert
    # labelled a false alarm raises the bar for the next anomaly of its device led by the
    # same metric to its peak score (decaying over a week); a true alarm removes it
    alert_feedback: bool = False
    # the audit log forwarded off the box (edgewise.security.audit_syslog): each entry, as it
    # is committed, sent as one RFC 5424 syslog message to udp://HOST[:514],
    # tcp://HOST[:601] or tls://HOST[:6514] (RFC 6587 octet counting on TCP and TLS);
    # "" forwards nothing (:attr:`audit_syslog_target` checks it)
    audit_syslog: str = ""
    # PEM CA certificates a tls:// collector's certificate is checked with ("": the system's)
    audit_syslog_ca_file: str = ""

    def __repr__(self) -> str:
        """Every setting but the secrets: the alert webhooks by their host and id only
        (their path or query may hold a token, as logs show them), the store and MQTT
        broker URLs with their passwords masked (:func:`shown_url`).

        >>> r = repr(Settings(alert_webhooks="https://hooks.example.org/T0/XyZ?k=s3cret",
        ...                   store="postgresql://ew:pa55@db.example.org:5432/ew",
        ...                   mqtt="mqtts://gw:m9tt@broker.example.org:8883"))
        >>> "XyZ" in r or "s3cret" in r or "pa55" in r or "m9tt" in r
        False
        >>> r[r.index("store="):r.index(", host=")]
        "store='postgresql://ew:***@db.example.org:5432/ew'"
        >>> r[r.index("mqtt="):r.index(", mqtt_port=")]
        "mqtt='mqtts://gw:***@broker.example.org:8883'"
        >>> r[r.index("alert_webhooks="):r.index(", alert_webhook_allow")]
        "alert_webhooks='https://hooks.example.org/… (webhook 080f1367; its path is not shown)'"
        """
        parts = []
        for f in dataclasses.fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name == "alert_webhooks":
                urls = value.split(",") if isinstance(value, str) else value
                shown = [_shown_webhook(u.strip()) for u in urls if u.strip()]
                value = ", ".join(shown) if isinstance(value, str) else tuple(shown)
            elif f.name in ("store", "mqtt"):
                value = shown_url(value)
            parts.append(f"{f.name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    @property
    def alert_webhook_urls(self) -> list[str]:
        """The alert webhook URLs of :attr:`alert_webhooks`, each checked: ``https://``,
        or ``http://`` to a loopback host unless :attr:`alert_webhook_allow_http`.

        >>> Settings(alert_webhooks="https://ops.example.org/hook, http://127.0.0.1:9000/"
        ...          ).alert_webhook_urls
        ['https://ops.example.org/hook', 'http://127.0.0.1:9000/']
        >>> Settings(alert_webhooks=("https://relay.example.org/h?teams=ops,infra",)
        ...          ).alert_webhook_urls
        ['https://relay.example.org/h?teams=ops,infra']
        >>> Settings(alert_webhooks="http://ops.example.org/hook/T0k3n").alert_webhook_urls
        Traceback (most recent call last):
        ...
        edgewise.errors.ConfigError: Setting 'alert_webhooks' (EDGEWISE_ALERT_WEBHOOKS, --alert-webhook) has value http://ops.example.org/… (webhook fe5f0ed3; its path is not shown). Plain http:// is allowed only to a loopback host (127.0.0.1, ::1, localhost): use https://ops.example.org/…, or allow plain HTTP with EDGEWISE_ALERT_WEBHOOK_ALLOW_HTTP=1 (--alert-webhook-allow-http).
        """  # noqa: E501
        urls = (self.alert_webhooks.split(",") if isinstance(self.alert_webhooks, str)
                else self.alert_webhooks)
        return [_check_webhook_url(u.strip(), self.alert_webhook_allow_http)
                for u in urls if u.strip()]

    @property
    def audit_syslog_target(self) -> SyslogTarget | None:
        """Where the audit log is forwarded (:attr:`audit_syslog` parsed by
        :func:`parse_syslog_url`), ``None`` when it is not; :class:`ConfigError` naming a bad
        URL, or a CA file given for a collector that is not ``tls://``.

        >>> Settings(audit_syslog="tcp://siem.example.org").audit_syslog_target.shown
        'tcp://siem.example.org:601'
        """
        if not self.audit_syslog.strip():
            if self.audit_syslog_ca_file:
                raise ConfigError(
                    f"Setting 'audit_syslog_ca_file' (EDGEWISE_AUDIT_SYSLOG_CA_FILE, "
                    f"--audit-syslog-ca-file) has value {self.audit_syslog_ca_file!r}, but no "
                    f"audit log collector is set: give --audit-syslog tls://HOST[:6514] too, "
                    f"or leave the CA file out.")
            return None
        target = parse_syslog_url(self.audit_syslog)
        if self.audit_syslog_ca_file and target.scheme != "tls":
            raise ConfigError(
                f"Setting 'audit_syslog_ca_file' (EDGEWISE_AUDIT_SYSLOG_CA_FILE, "
                f"--audit-syslog-ca-file) has value {self.audit_syslog_ca_file!r}, but the "
                f"audit log collector {target.shown} is not tls://: a CA file checks a TLS "
                f"collector's certificate. Use tls://{target.bracketed_host}:6514, or leave "
                f"the CA file out.")
        return target

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first numeric setting out of its range
        (:data:`LIMITS`); :meth:`load` calls it, so a bad value stops before anything starts.

        >>> Settings(http_port=99999).check()
        Traceback (most recent call last):
        ...
        edgewise.errors.ConfigError: Setting 'http_port' (EDGEWISE_HTTP_PORT, --port) has value 99999. It must be an int in the range [1, 65535].
        """  # noqa: E501
        for name in LIMITS:
            _check_limit(name, getattr(self, name), getattr(self, name))
        _check_forwarded_allow_ips(self.forwarded_allow_ips)
        _ = self.alert_webhook_urls  # a bad webhook URL stops the start, named
        _ = self.audit_syslog_target  # and so does a bad audit log collector URL
        if not self.host.strip():  # uvicorn and amqtt take "" for every interface
            raise ConfigError(
                f"Setting 'host' (EDGEWISE_HOST, --host) has value {self.host!r}, which "
                f"would listen on every network interface. Name the address: 127.0.0.1 "
                f"(this machine, the default) or 0.0.0.0 (every interface; then with "
                f"--tls-cert/--tls-key).")

    @property
    def store_url(self) -> str:
        """The store URL, defaulting to a DuckDB file under the data directory (made
        absolute: ``duckdb:///`` + a relative path would name a file under ``/``).

        >>> import os
        >>> Settings(data_dir=Path("ew")).store_url == (
        ...     f"duckdb:///{os.getcwd()}/ew/edgewise.duckdb")
        True
        """
        return self.store or f"duckdb:///{(self.data_dir / 'edgewise.duckdb').absolute()}"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Build settings from flags (not None), then ``EDGEWISE_*`` env, then defaults.

        An empty variable (``EDGEWISE_HOST=``) counts as unset, as the CLI's options take
        it (click), so the default applies rather than a refusal of ``''``.

        >>> Settings.load(env={"EDGEWISE_HOST": "", "EDGEWISE_HTTP_PORT": ""}).host
        '127.0.0.1'
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            key = f"EDGEWISE_{f.name.upper()}"
            if flags.get(f.name) is not None:
                # named by the setting, its variable and its flag (a keyword given here is
                # no flag: "--fleet_prior" named an option no command has)
                values[f.name] = _cast(f.name, flags[f.name], f.type)
            elif env.get(key, "") != "":  # an empty variable is unset, as the CLI has it
                values[f.name] = _cast(f.name, env[key], f.type, source=key)
        unknown = set(flags) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"Unknown setting(s): {', '.join(sorted(unknown))}.")
        for name, value in values.items():  # the value as given, in the message
            raw = flags[name] if flags.get(name) is not None else env[f"EDGEWISE_{name.upper()}"]
            _check_limit(name, value, raw)
        settings = cls(**values)
        settings.check()
        return settings


#: the longest wait a duration setting may ask for (a day): far below
#: ``threading.TIMEOUT_MAX`` (a thread's join or an event's wait past that raises
#: OverflowError), and a timeout or retry wait longer than a day is a mistake
MAX_WAIT_S = 86_400.0
#: the most clock skew ``max_future_s`` may allow short of none (inf): 1e9 s (31 years)
#: keeps now + skew in nanoseconds inside int64 (1e300 overflowed to a float inf and
#: refused every reading)
MAX_FUTURE_S = 1e9
#: the largest ``max_payload_bytes`` and ``max_body_bytes`` (1 GiB): a body is read whole
#: into memory, and from 2**63 (past ``sys.maxsize``) zlib refused every gzip'd message
MAX_BYTES = 2**30
#: the smallest ``rate_limit_per_s`` (one reading in about 11.6 days): a subnormal rate
#: (1e-320) made a refused reading's retry wait inf, and its HTTP 429 a 500
MIN_RATE_PER_S = 1e-6
#: the most readings one HTTP request reads from the store: the JSON readings route's
#: points, the quality report and its plots (the newest that many of their range) and
#: the label queue's history; one constant, so the three caps cannot drift apart
MAX_READINGS = 200_000

#: numeric settings: (allowed range, whether infinity is allowed beyond the range's
#: upper bound); NaN never is
LIMITS: dict[str, tuple[Interval, bool]] = {
    "http_port": (Interval(int, 1, 65535), False),
    "mqtt_port": (Interval(int, 1, 65535), False),
    "max_payload_bytes": (Interval(int, 1, MAX_BYTES), False),
    "max_body_bytes": (Interval(int, 1, MAX_BYTES), False),
    "max_future_s": (Interval(float, 0, MAX_FUTURE_S), True),  # inf: no bound on future times
    "rate_limit_per_s": (Interval(float, MIN_RATE_PER_S, None, closed="left"), False),
    "rate_limit_burst": (Interval(float, 1, None), False),
    "max_metrics_per_device": (Interval(int, 1, None), False),
    "mqtt_max_pending_per_source": (Interval(int, 0, None), False),
    "mqtt_max_pending": (Interval(int, 0, None), False),
    "mqtt_max_connections_per_device": (Interval(int, 0, None), False),
    "mqtt_max_queued_bytes": (Interval(int, 0, None), False),
    "throttle_after_failures": (Interval(int, 1, None), False),
    "retention_days": (Interval(int, 0, None), False),
    "alert_threshold": (Interval(float, 0, 1, closed="right"), False),
    "fast_stream_z": (Interval(float, 0, None), False),
    "alert_webhook_timeout_s": (Interval(float, 0, MAX_WAIT_S, closed="right"), False),
    "alert_webhook_poll_s": (Interval(float, 0, MAX_WAIT_S, closed="right"), False),
    "alert_webhook_retry_s": (Interval(float, 0, MAX_WAIT_S, closed="right"), False),
    "alert_webhook_max_retry_s": (Interval(float, 0, MAX_WAIT_S, closed="right"), False),
    "seq_gap_grace_s": (Interval(float, 0, MAX_WAIT_S), False),
    "http_shutdown_timeout_s": (Interval(float, 0, MAX_WAIT_S), False),
    "http_idle_s": (Interval(float, 0, MAX_WAIT_S, closed="right"), False),
}
#: the CLI flag of a setting, where one has a flag
_FLAGS = {"http_port": "--port", "mqtt_port": "--mqtt-port", "fast_stream_z": "--fast-stream-z",
          "fleet_prior": "--fleet-prior", "alert_webhook_allow_http": "--alert-webhook-allow-http"}


def _where(name: str) -> str:
    """How a refusal names setting ``name``'s sources: its variable, and its flag if any.

    >>> _where("http_port"), _where("alert_feedback")
    ('EDGEWISE_HTTP_PORT, --port', 'EDGEWISE_ALERT_FEEDBACK')
    """
    return ", ".join([f"EDGEWISE_{name.upper()}"] + ([_FLAGS[name]] if name in _FLAGS else []))


def setting_value(name: str, raw: Any) -> Any:
    """``raw`` (text from an option or a variable, or a value) as setting ``name`` takes
    it: converted and range-checked as :meth:`Settings.load` does, so that an option
    backed by an ``EDGEWISE_*`` variable refuses a bad value in the settings' words
    (the setting, its variable and option, the value and what is allowed), not as Click
    would (``'abc' is not a valid integer``, naming the option only).

    >>> setting_value("http_port", "9000"), setting_value("fleet_prior", "off")
    (9000, False)
    >>> setting_value("mqtt_port", "1.5")
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: Setting 'mqtt_port' (EDGEWISE_MQTT_PORT, --mqtt-port) has value '1.5'. It must be an int in the range [1, 65535].
    >>> setting_value("fleet_prior", "maybe")
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: Setting 'fleet_prior' (EDGEWISE_FLEET_PRIOR, --fleet-prior) has value 'maybe'. Use one of 1, true, t, yes, y, on (on) or 0, false, f, no, n, off (off).
    """  # noqa: E501
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    if name not in fields:
        raise ConfigError(f"Unknown setting: {name!r}.")
    value = _cast(name, raw, fields[name].type)
    _check_limit(name, value, value)  # a number out of range shown as read (-2.0), as load
    return value


def _check_limit(name: str, value: Any, raw: Any) -> None:
    """Refuse ``value`` of setting ``name`` (given as ``raw``) outside :data:`LIMITS`."""
    if name not in LIMITS:
        return
    interval, inf_ok = LIMITS[name]
    finite = not isinstance(value, float) or math.isfinite(value)
    if interval.accepts(value) and finite:
        return
    if inf_ok and isinstance(value, float) and value == math.inf:
        return
    raise _limit_error(name, raw)


def _limit_error(name: str, raw: Any) -> ConfigError:
    """The refusal of ``raw`` for setting ``name`` of :data:`LIMITS`, naming its range.

    >>> print(_limit_error("rate_limit_burst", "lots"))
    Setting 'rate_limit_burst' (EDGEWISE_RATE_LIMIT_BURST) has value 'lots'. It must be a finite float in the range [1, inf).
    """  # noqa: E501
    interval, inf_ok = LIMITS[name]
    where = _where(name)
    allowed = str(interval)
    if interval.type is float:
        allowed = allowed.replace("a float", "a finite float", 1)
    if inf_ok:
        allowed += ", or inf (no bound)"
    return ConfigError(f"Setting {name!r} ({where}) has value {raw!r}. It must be {allowed}.")


def _check_forwarded_allow_ips(value: str) -> None:
    """Refuse a ``forwarded_allow_ips`` that is not "", "*" or comma-separated IP
    addresses or networks.

    >>> _check_forwarded_allow_ips("10.0.0.5, 192.168.0.0/16")
    >>> _check_forwarded_allow_ips("proxy.local")
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: Setting 'forwarded_allow_ips' (EDGEWISE_FORWARDED_ALLOW_IPS) has value 'proxy.local'. It must be '' (trust no proxy), '*' or comma-separated IP addresses or networks; 'proxy.local' is neither.
    """  # noqa: E501
    if value.strip() in ("", "*"):
        return
    for part in value.split(","):
        try:
            ipaddress.ip_network(part.strip(), strict=False)
        except ValueError:
            raise ConfigError(
                f"Setting 'forwarded_allow_ips' (EDGEWISE_FORWARDED_ALLOW_IPS) has value "
                f"{value!r}. It must be '' (trust no proxy), '*' or comma-separated IP "
                f"addresses or networks; {part.strip()!r} is neither.") from None


#: where the alert webhook URLs are set, for messages
_WEBHOOKS = "Setting 'alert_webhooks' (EDGEWISE_ALERT_WEBHOOKS, --alert-webhook)"


def _shown_webhook(url: str) -> str:
    """Alert webhook ``url`` as a message shows it: scheme, host and port, and its webhook
    id (as logs and ``/metrics`` name it); never its user part, path or query, which may
    hold a token. Never raises, even on a malformed URL.

    >>> _shown_webhook("https://ops:s3cret@relay.example.org:8443/hook/T0k3n?x=1")
    'https://relay.example.org:8443/… (webhook 95bc7a0c; its path is not shown)'
    >>> _shown_webhook("https://relay.example.org:99999/hook/T0k3n")
    'https://relay.example.org/… (webhook adddf1d5; its path is not shown)'
    """
    import hashlib
    from urllib.parse import urlsplit

    wid = hashlib.sha256(url.encode("utf-8", "replace")).hexdigest()[:8]  # as webhook_id
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname or ""
    except ValueError:  # e.g. an unclosed [ of an IPv6 host
        scheme, host = url.partition("://")[0] if "://" in url else "", ""
    try:
        port = f":{parts.port}" if host and parts.port else ""
    except ValueError:  # no number, or out of range: the message says which
        port = ""
    host = f"[{host}]" if ":" in host else host
    scheme = scheme if scheme and scheme.isascii() and scheme.isalnum() else "?"
    host = host if host.isprintable() and not any(c.isspace() for c in host) else "?"
    where = f"{scheme}://{host}{port}/…" if scheme != "?" else "…"
    return f"{where} (webhook {wid}; its path is not shown)"


def userinfo_end(rest: str) -> int:
    """Where the ``USER[:PASSWORD]`` of a URL's part after ``://`` ends (the index of its
    ``@``), or ``-1`` for none: the last ``@`` before the first ``/`` that follows an ``@``,
    so that a ``#``, ``?``, ``/`` or ``@`` written raw in the password (libpq takes a raw
    ``#`` or ``?`` there) stays in it. An ``@`` in a query with no path before it makes the
    whole of that span the user info: more is masked, never less.

    >>> [userinfo_end(r) for r in ("ew:pw@db/ew", "ew:a/b@db/ew", "db/ew?x=a", "e:p@d/e?a=b@c")]
    [5, 6, -1, 3]
    """
    first = rest.find("@")
    if first < 0:
        return -1
    slash = rest.find("/", first)
    return rest.rfind("@", 0, slash if slash >= 0 else len(rest))


#: The libpq connection parameters that hold a secret (libpq's list of parameters marks
#: them "*" for "password": ``password``, ``sslpassword`` (the passphrase of the client's
#: TLS key) and, from PostgreSQL 18, ``oauth_client_secret``), as :func:`shown_url` masks
#: them in a URL's query; lower case.
SECRET_URL_PARAMS = frozenset({"password", "sslpassword", "oauth_client_secret"})


def shown_url(url: str) -> str:
    """``url`` safe to print: a password in it (``user:PASSWORD@host``) and the value of
    every secret query parameter (:data:`SECRET_URL_PARAMS`: ``?password=…``,
    ``&sslpassword=…``, their names percent-encoded too, ``%70assword``, as libpq decodes
    them) become ``***``, whatever they hold (a raw ``#``, ``?``, ``/``, ``@``). Never
    raises, even on a malformed URL.

    >>> shown_url("postgresql://ew:s3cret@db:5432/ew?schema=a&password=x")
    'postgresql://ew:***@db:5432/ew?schema=a&password=***'
    >>> shown_url("postgresql://ew@db/ew?sslpassword=k3y&%70assword=x&schema=a")
    'postgresql://ew@db/ew?sslpassword=***&%70assword=***&schema=a'
    >>> shown_url("postgresql://ew:s3cret@[::1/db")
    'postgresql://ew:***@[::1/db'
    >>> shown_url("postgresql://ew:Se#cr3t@db/ew?schema=a")
    'postgresql://ew:***@db/ew?schema=a'
    >>> shown_url("mqtt://gw:P@ssw0rd/2024-plant7@broker.local:1883?prefix=p")
    'mqtt://gw:***@broker.local:1883?prefix=p'
    """
    if not isinstance(url, str):
        return repr(url)
    scheme, sep, rest = url.partition("://")
    if sep:
        at = max(userinfo_end(rest), _last_at_before_query(rest))
        user, colon, _ = rest[:max(at, 0)].partition(":")
        if colon:
            rest = f"{user}:***{rest[at:]}"
        url = f"{scheme}{sep}{rest}"
    head, mark, query = url.partition("?")
    if not mark:
        return url
    # each '&'-separated parameter to the end, a '#' in it too: the store passes what
    # urlsplit takes for a fragment on to libpq, which takes it as part of the value
    params = []
    for param in query.split("&"):
        name, eq, _ = param.partition("=")
        if eq and _param_name(name) in SECRET_URL_PARAMS:
            param = f"{name}=***"
        params.append(param)
    return f"{head}?{'&'.join(params)}"


def scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's error about ``url``) with every secret of ``url`` (as
    :func:`shown_url` masks them: the password, a secret query parameter's value, each as
    written and percent-decoded) replaced by ``***``: libpq repeats a part of the URL it
    cannot parse whole ("unexpected spaces found in \"my secret pass\""), which reached the
    terminal and the logs past the masked URL. A secret under 4 characters is replaced only
    where quoted (it could be any word of the message).

    >>> scrubbed('unexpected spaces found in "my secret pass", use %20',
    ...          "postgresql://u:my secret pass@db/ew")
    'unexpected spaces found in "***", use %20'
    >>> scrubbed('bad "pw" and pw', "postgresql://u:pw@db/ew?password=s%40fe99")
    'bad "***" and pw'
    >>> scrubbed("x s@fe99 s%40fe99", "postgresql://u@db/ew?password=s%40fe99")
    'x *** ***'
    """
    from urllib.parse import unquote

    if not isinstance(url, str) or not isinstance(text, str):
        return text
    secrets: set[str] = set()
    _, sep, rest = url.partition("://")
    if sep:
        at = max(userinfo_end(rest), _last_at_before_query(rest))
        _, colon, password = rest[:max(at, 0)].partition(":")
        if colon:
            secrets.add(password)
    _, mark, query = url.partition("?")
    for param in query.split("&") if mark else ():
        name, eq, value = param.partition("=")
        if eq and _param_name(name) in SECRET_URL_PARAMS:
            secrets.add(value)
    secrets |= {unquote(s) for s in secrets}
    for secret in sorted(secrets, key=len, reverse=True):  # the longest first
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        elif secret:
            for q in ('"', "'"):
                text = text.replace(f"{q}{secret}{q}", f"{q}***{q}")
    return text


def _last_at_before_query(rest: str) -> int:
    """The last ``@`` of a URL's part after ``://`` before its query (the first ``?NAME=``
    after its first ``@``), or ``-1`` for none: with :func:`userinfo_end`, where
    :func:`shown_url` ends the masked user info. A password holding an ``@`` and then a
    ``/`` (``P@ssw0rd/2024@broker``) ends there, not at its own ``@`` (which showed the
    rest of it), and an ``@`` in a query value (``?application_name=a@b``) stays shown.

    >>> [_last_at_before_query(r) for r in ("u:a@b/c@h:1", "u:p@h/d?x=a@b", "h?x=1", "u:a@b?c@h")]
    [7, 3, -1, 7]
    """
    import re

    first = rest.find("@")
    if first < 0:
        return -1
    query = re.compile(r"\?[\w.%-]+=").search(rest, first)
    return rest.rfind("@", 0, query.start() if query else len(rest))


def _param_name(raw: str) -> str:
    """A URL query parameter's name as libpq (and the store's ``parse_qsl``) takes it:
    percent-decoded (``+`` as a space), lower case, stripped.

    >>> _param_name("%70ass%77ord"), _param_name("SSLPassword ")
    ('password', 'sslpassword')
    """
    from urllib.parse import unquote_plus

    return unquote_plus(raw).strip().lower()


def _check_webhook_url(url: str, allow_http: bool) -> str:
    """Return alert webhook ``url`` when it may be used; else raise :class:`ConfigError`
    naming it as :func:`_shown_webhook` does (never its path or user part) and what is
    allowed (``https://HOST[:PORT]/PATH``; ``http://`` only to a loopback host, or
    anywhere with ``allow_http``).

    >>> _check_webhook_url("http://[::1]:8000/alerts", False)
    'http://[::1]:8000/alerts'
    >>> _check_webhook_url("http://10.0.0.7/alerts", True)
    'http://10.0.0.7/alerts'
    """
    from urllib.parse import urlsplit

    shown = _shown_webhook(url)
    allowed = ("Use an https://HOST[:PORT]/PATH URL (several: --alert-webhook once each, "
               "or comma-separated in EDGEWISE_ALERT_WEBHOOKS, a comma inside a URL "
               "written %2C)")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError(f"{_WEBHOOKS} has value {shown}, which holds a space or a control "
                          f"character. {allowed}.")
    try:
        parts = urlsplit(url)
        port = parts.port  # a port that is no number, or out of range, raises here
    except ValueError as exc:
        raise ConfigError(f"{_WEBHOOKS} has value {shown}, which is no URL ({exc}). "
                          f"{allowed}.") from None
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in ("https", "http") or not host:
        raise ConfigError(f"{_WEBHOOKS} has value {shown}. {allowed}.")
    if port == 0:
        raise ConfigError(f"{_WEBHOOKS} has value {shown}: port 0 cannot be sent to. "
                          f"{allowed}.")
    if scheme == "http" and not allow_http and not is_loopback(host):
        https = "https" + url[len("http"):]
        raise ConfigError(
            f"{_WEBHOOKS} has value {shown}. Plain http:// is allowed only to a loopback "
            f"host (127.0.0.1, ::1, localhost): use {_shown_webhook(https).split(' (')[0]}, "
            f"or allow plain HTTP with EDGEWISE_ALERT_WEBHOOK_ALLOW_HTTP=1 "
            f"(--alert-webhook-allow-http).")
    return url


#: the syslog facilities the audit log may be sent as (RFC 5424 numbers); authpriv is
#: the default: the entries are security and authorisation events, which collectors keep
#: apart (auth.log / secure, readable by root only) and SIEMs collect as such
SYSLOG_FACILITIES = {"auth": 4, "authpriv": 10, **{f"local{i}": 16 + i for i in range(8)}}
#: each forwarding scheme's default port: RFC 5426 (UDP), RFC 6587 (TCP, IANA
#: syslog-conn), RFC 5425 (TLS)
SYSLOG_PORTS = {"udp": 514, "tcp": 601, "tls": 6514}
#: where the audit log collector is set, for messages
_AUDIT_SYSLOG = "Setting 'audit_syslog' (EDGEWISE_AUDIT_SYSLOG, --audit-syslog)"


@dataclass(frozen=True)
class SyslogTarget:
    """A syslog collector: ``scheme`` (``udp``, ``tcp`` or ``tls``), host, port and the
    facility number messages are sent with (:data:`SYSLOG_FACILITIES`)."""

    scheme: str
    host: str
    port: int
    facility: int = SYSLOG_FACILITIES["authpriv"]

    @property
    def bracketed_host(self) -> str:
        """The host as a URL writes it (an IPv6 address in brackets)."""
        return url_host(self.host)

    @property
    def shown(self) -> str:
        """``scheme://host:port``, as messages and the cursor file name the collector."""
        return f"{self.scheme}://{self.bracketed_host}:{self.port}"


def url_host(host: str) -> str:
    """``host`` as a URL writes it: an IPv6 address (any host with a ``:``) in brackets,
    unless it has them already.

    >>> url_host("::1"), url_host("[::1]"), url_host("127.0.0.1"), url_host("gw.local")
    ('[::1]', '[::1]', '127.0.0.1', 'gw.local')
    """
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def parse_syslog_url(url: str) -> SyslogTarget:
    """The collector of ``udp://HOST[:PORT]``, ``tcp://HOST[:PORT]`` or
    ``tls://HOST[:PORT]`` (default ports 514, 601, 6514), optionally ending in
    ``?facility=NAME`` (``auth``, ``authpriv``, the default, or ``local0`` … ``local7``);
    else :class:`ConfigError` saying what is wrong (scheme, host, port, facility) in one
    line.

    >>> parse_syslog_url("udp://[::1]?facility=local0")
    SyslogTarget(scheme='udp', host='::1', port=514, facility=16)
    >>> parse_syslog_url("tcp://siem:0")
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: Setting 'audit_syslog' (EDGEWISE_AUDIT_SYSLOG, --audit-syslog) has value 'tcp://siem:0': port 0 cannot be sent to. Use udp://HOST[:514], tcp://HOST[:601] or tls://HOST[:6514] (tls checks the collector's certificate), optionally with ?facility=auth, authpriv (the default) or local0..local7.
    """  # noqa: E501
    from urllib.parse import parse_qsl, urlsplit

    use = ("Use udp://HOST[:514], tcp://HOST[:601] or tls://HOST[:6514] (tls checks the "
           "collector's certificate), optionally with ?facility=auth, authpriv (the default) "
           "or local0..local7.")
    shown = url
    if "@" in url.partition("?")[0]:  # no password of a mistaken URL in a message
        scheme, sep, rest = url.partition("://")
        shown = f"{scheme}{sep}…@{rest.rpartition('@')[2]}"
    where = f"{_AUDIT_SYSLOG} has value {shown!r}"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigError(f"{where}, which holds a space or a control character. {use}")
    try:
        parts = urlsplit(url)
        port = parts.port  # no number, or out of range: raises here
    except ValueError as exc:
        raise ConfigError(f"{where}, which is no URL ({exc}). {use}") from None
    scheme = parts.scheme.lower()
    if scheme not in SYSLOG_PORTS:
        raise ConfigError(f"{where}: the scheme {parts.scheme or '(none)'!r} is not one "
                          f"Edgewise sends syslog over. {use}")
    if "@" in parts.netloc:
        raise ConfigError(f"{where}: syslog has no user or password; leave them out. {use}")
    host = parts.hostname or ""
    if not host:
        raise ConfigError(f"{where}, which names no host. {use}")
    if port == 0:
        raise ConfigError(f"{where}: port 0 cannot be sent to. {use}")
    if parts.path not in ("", "/") or parts.fragment:
        raise ConfigError(f"{where}: a collector's URL has no path. {use}")
    facility = SYSLOG_FACILITIES["authpriv"]
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "facility" or value.lower() not in SYSLOG_FACILITIES:
            raise ConfigError(f"{where}: {key}={value!r} is not a facility this URL can "
                              f"set. {use}")
        facility = SYSLOG_FACILITIES[value.lower()]
    return SyslogTarget(scheme, host, port or SYSLOG_PORTS[scheme], facility)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, with or without IPv6 brackets) is this machine
    only: ``localhost`` or a loopback address (the wildcard addresses and other names are not).

    >>> [is_loopback(h) for h in ("localhost", "LocalHost.", "127.0.0.2", "::1", "[::1]",
    ...                           "0.0.0.0", "10.0.0.1", "example.org")]
    [True, True, True, True, True, False, False, False]
    """
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]")).is_loopback
    except ValueError:
        return False


#: the words a boolean setting takes from the environment
_TRUE = ("1", "true", "t", "yes", "y", "on")  # as the CLI's flags take them from the env
_FALSE = ("0", "false", "f", "no", "n", "off")


def _cast(name: str, raw: Any, typ: Any, source: str | None = None) -> Any:
    """``raw`` (text from an option or a variable, or a value) as the type ``typ`` of
    setting ``name``; :class:`ConfigError` where it is none, naming ``source`` (the
    variable or flag it came from), else the setting with its variable and flag."""
    shown = repr(source) if source else f"{name!r} ({_where(name)})"
    typ = str(typ)
    if typ == "bool":
        if isinstance(raw, bool):
            return raw
        word = str(raw).strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigError(f"Setting {shown} has value {raw!r}. Use one of "
                          f"{', '.join(_TRUE)} (on) or {', '.join(_FALSE)} (off).")
    if isinstance(raw, (list, tuple)) and "tuple" in typ:  # alert_webhooks from the CLI
        return tuple(str(u) for u in raw)
    if typ in ("int", "float") and not isinstance(raw, str) and (
            isinstance(raw, bool) or not isinstance(raw, numbers.Real) or (
                typ == "int" and not isinstance(raw, numbers.Integral)
                and not float(raw).is_integer())):
        # a value, not text: int() cut 0.5 days of retention to 0 (keep everything) and
        # 8080.7 to port 8080, and took True for 1, all without a word
        if name in LIMITS:
            raise _limit_error(name, raw)
        raise ConfigError(f"Setting {shown} has value {raw!r}. Not a valid {typ}.")
    try:
        if typ == "Path":  # absolute: a relative data dir in duckdb:///{dir} became root's
            return Path(raw).expanduser().absolute()
        if typ == "int":
            return int(raw)
        if typ == "float":
            return float(raw)
    except (TypeError, ValueError):
        if name in LIMITS:  # the range too, as a value out of it is told
            raise _limit_error(name, raw) from None
        # (a Path setting given no text, e.g. data_dir=5: the lookup of its kind among
        # "int" and "float" raised KeyError: 'Path')
        kind = {"Path": "path (text)"}.get(typ, typ)
        raise ConfigError(f"Setting {shown} has value {raw!r}. Not a valid {kind}.") from None
    return str(raw)
