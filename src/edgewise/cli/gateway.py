"""``edgewise serve`` and ``edgewise demo``: the gateway for real devices, or with a simulated fleet."""  # noqa: E501

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from typer.core import TyperCommand

from edgewise._private import restrict_umask, write_private
from edgewise.cli._app import DataDir, app, fail, out_path
from edgewise.store import shown_url

if TYPE_CHECKING:
    import asyncio


class _SettingType(click.ParamType):
    """The type of an option backed by an ``EDGEWISE_*`` variable that names a numeric or
    boolean setting: its value, from the command line or the variable, is converted and
    range-checked as :meth:`edgewise.config.Settings.load` checks the settings that have no
    option (:func:`edgewise.config.setting_value`), so a refusal names the setting, its
    variable and option, the value and what is allowed. Click's own type said ``Invalid
    value for '--port': 'abc' is not a valid integer`` for ``EDGEWISE_HTTP_PORT=abc``: no
    variable, no range.

    >>> _SettingType("http_port", click.INT).convert("8081", None, None)
    8081
    >>> _SettingType("http_port", click.INT).convert("abc", None, None)
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: Setting 'http_port' (EDGEWISE_HTTP_PORT, --port) has value 'abc'. It must be an int in the range [1, 65535].
    """  # noqa: E501

    def __init__(self, setting: str, shown: click.ParamType) -> None:
        self.setting = setting
        self.name = shown.name  # the metavar (INTEGER, FLOAT) as before

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        """``value`` as setting :attr:`setting` takes it; where it takes none, the
        :class:`~edgewise.errors.ConfigError` that :meth:`Settings.load` raises for a bad
        setting (one ``error:`` line, exit 2; Click passes it on, and swallows it while
        completing a command line)."""
        from edgewise.config import setting_value

        return setting_value(self.setting, value)


class _SettingBool(_SettingType, click.types.BoolParamType):
    """:class:`_SettingType` of a boolean setting (``--fleet-prior/--no-fleet-prior``): still
    a boolean type, as Click's on/off flag pairs need."""


def _setting_of(param: click.Parameter) -> str | None:
    """The numeric or boolean setting option ``param`` sets through its ``EDGEWISE_*``
    variable (``EDGEWISE_HTTP_PORT``: ``http_port``), else ``None`` (a text setting, which
    no type refuses; ``Settings`` checks it)."""
    import dataclasses

    from edgewise.config import Settings

    envvar = getattr(param, "envvar", None)
    if not (isinstance(param, click.Option) and isinstance(envvar, str)
            and envvar.startswith("EDGEWISE_")):
        return None
    name = envvar.removeprefix("EDGEWISE_").lower()
    types = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
    return name if types.get(name) in ("int", "float", "bool") else None


class SettingsCommand(TyperCommand):
    """``serve`` and ``demo``: each option backed by an ``EDGEWISE_*`` variable that holds a
    number or an on/off setting takes its value through :class:`_SettingType`, so a bad
    one is refused as every other setting is (README "Settings")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            setting = _setting_of(param)
            if setting is not None:
                kind = _SettingBool if isinstance(param.type, click.types.BoolParamType) \
                    else _SettingType
                param.type = kind(setting, param.type)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse as Click does; a value another type refuses (``EDGEWISE_DATA_DIR=' '``)
        is named by its variable too where it came from there, not by the option alone."""
        try:
            return super().parse_args(ctx, args)
        except click.BadParameter as exc:
            param = exc.param
            envvar = getattr(param, "envvar", None)
            if (param is None or not param.name or not isinstance(envvar, str)
                    or ctx.get_parameter_source(param.name)
                    is not click.core.ParameterSource.ENVIRONMENT):
                raise
            raise click.UsageError(f"{envvar} ({' / '.join(param.opts)}) is not valid: "
                                   f"{exc.message}", ctx) from None


Mqtt = Annotated[str, typer.Option("--mqtt", envvar="EDGEWISE_MQTT",
                                   help="'embedded' (in-process broker) or an external "
                                        "broker: mqtt://[USER:PASSWORD@]HOST:PORT, with "
                                        "?prefix=edgewise&client_id=NAME if wanted; for TLS "
                                        "mqtts://HOST:8883?ca=/path/ca.pem (ca=: the CA of "
                                        "the broker's certificate; the system's when left "
                                        "out); give a URL with a password in EDGEWISE_MQTT "
                                        "to keep it out of the process list.")]
StoreUrl = Annotated[str, typer.Option("--store", envvar="EDGEWISE_STORE",
                                       help="duckdb:///PATH or postgresql://… "
                                            "(default: DuckDB under the data dir).")]
Host = Annotated[str, typer.Option("--host", envvar="EDGEWISE_HOST", help="Address to listen on.")]
Port = Annotated[int, typer.Option("--port", envvar="EDGEWISE_HTTP_PORT", help="HTTP port.")]
MqttPort = Annotated[int, typer.Option("--mqtt-port", envvar="EDGEWISE_MQTT_PORT",
                                       help="Embedded MQTT broker port.")]
TlsCert = Annotated[str, typer.Option("--tls-cert", envvar="EDGEWISE_TLS_CERT",
                                      help="PEM certificate: serve HTTPS and MQTT over TLS.")]
TlsKey = Annotated[str, typer.Option("--tls-key", envvar="EDGEWISE_TLS_KEY",
                                     help="PEM private key for --tls-cert.")]
Detector = Annotated[str, typer.Option(
    "--detector", envvar="EDGEWISE_DETECTOR",
    help="Level detector each metric is scored with: context-likelihood (default; NAB-tuned, "
         "counters and slow trends handled), ewzscore (fewer false alerts on fast, noisy "
         "sensors: see `edgewise bench fleet`), context-art or river-hst. Two-state streams "
         "are scored as states either way.")]
FastStreamZ = Annotated[float, typer.Option(
    "--fast-stream-z", envvar="EDGEWISE_FAST_STREAM_Z",
    help="On a stream read more than once a minute, a metric alarms only this many running "
         "standard deviations off its running mean (more on a stream read so often that noise "
         "would pass it more than once in 10 hours), as many residual standard deviations "
         "off what the device's other sensors predict for it, and a stuck sensor alarms; 0 "
         "scores fast streams as slow ones (see `edgewise bench fleet --compare-gate "
         "--compare-cross`).")]
FleetPrior = Annotated[bool, typer.Option(
    "--fleet-prior/--no-fleet-prior", envvar="EDGEWISE_FLEET_PRIOR",
    help="Let the cross-sensor gate also explain a device's readings by what the fleet's "
         "devices with the same metrics agree on (how each sensor moves with its partner), "
         "so a new device's first operating changes are not alarms (see `edgewise bench "
         "fleet --compare-prior`).")]
AlertWebhook = Annotated[list[str] | None, typer.Option(
    "--alert-webhook",
    help="URL each new alert, and each acknowledgement and label of one (events "
         "alert.raised, alert.acknowledged, alert.labelled), is POSTed to as signed JSON "
         "(once per webhook; give the option "
         "once per URL, taken as it is; default: EDGEWISE_ALERT_WEBHOOKS, comma-separated "
         "(a comma inside a URL written %2C), else none). "
         "https://, or http:// to a loopback host; the secret is "
         "EDGEWISE_ALERT_WEBHOOK_SECRET, else one made in the data dir.",
    show_default=False)]
AlertWebhookAllowHttp = Annotated[bool, typer.Option(
    "--alert-webhook-allow-http",
    help="Allow plain http:// alert webhooks to hosts that are not loopback (alerts and "
         "their signatures then cross the network unencrypted; default: "
         "EDGEWISE_ALERT_WEBHOOK_ALLOW_HTTP, else off).")]
AlertWebhookCaFile = Annotated[str, typer.Option(
    "--alert-webhook-ca-file",
    help="PEM CA certificates the alert webhooks' TLS certificates are checked with "
         "(default: EDGEWISE_ALERT_WEBHOOK_CA_FILE, else the system's).", show_default=False)]
AuditSyslog = Annotated[str, typer.Option(
    "--audit-syslog", envvar="EDGEWISE_AUDIT_SYSLOG",
    help="Forward each audit log entry, as it is committed, to this syslog collector as one "
         "RFC 5424 message (facility authpriv, severity notice, JSON body): "
         "udp://HOST[:514], tcp://HOST[:601] or tls://HOST[:6514] (certificate checked), "
         "optionally ?facility=local0..local7|auth. Check the local log against what the "
         "collector wrote with 'edgewise audit verify --against FILE'. Default: none.",
    show_default=False)]
AuditSyslogCaFile = Annotated[str, typer.Option(
    "--audit-syslog-ca-file", envvar="EDGEWISE_AUDIT_SYSLOG_CA_FILE",
    help="PEM CA certificates a tls:// --audit-syslog collector's certificate is checked "
         "with (default: the system's).", show_default=False)]


def _settings(data_dir, mqtt, store, host, port, mqtt_port, tls_cert, tls_key, detector,  # type: ignore[no-untyped-def]
              fast_stream_z=None, fleet_prior=None, alert_webhooks=None,
              alert_webhook_allow_http=False, alert_webhook_ca_file="", audit_syslog="",
              audit_syslog_ca_file=""):
    from edgewise.config import Settings
    from edgewise.errors import ConfigError

    # a file, a path under a file or one that cannot be written: one line, before anything
    out_path("--data-dir (EDGEWISE_DATA_DIR)", str(data_dir), folder=True,
             example="~/.local/share/edgewise",
             what="the directory for the store, keys and registry")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together; give both or neither.")
    settings = Settings.load(data_dir=data_dir, mqtt=mqtt, store=store, host=host,
                             http_port=port, mqtt_port=mqtt_port, tls_cert=tls_cert,
                             tls_key=tls_key, detector=detector, fast_stream_z=fast_stream_z,
                             fleet_prior=fleet_prior,
                             # None (not given): EDGEWISE_ALERT_WEBHOOK* (Settings reads them)
                             alert_webhooks=alert_webhooks,
                             alert_webhook_allow_http=True if alert_webhook_allow_http else None,
                             alert_webhook_ca_file=alert_webhook_ca_file or None,
                             # None (not given): EDGEWISE_AUDIT_SYSLOG* (Settings reads them)
                             audit_syslog=audit_syslog or None,
                             audit_syslog_ca_file=audit_syslog_ca_file or None)
    _preflight(settings)
    return settings


def _preflight(settings) -> None:  # type: ignore[no-untyped-def]
    """Refuse, in one line before anything starts, what would otherwise end the start in a
    traceback from uvicorn or amqtt: a ``--detector`` that is no one-metric level detector
    (or cannot be built here), TLS files that are missing or no certificate and key (DER,
    a key with a passphrase, not the pair, a certificate out of its validity period),
    one port for both listeners, a port in use, a host that does not resolve, an audit
    syslog CA file that is no PEM CA certificate; and a ``--mqtt`` URL that is none (no
    ``mqtt://HOST``, a port out of range), before the data dir, store, keys and the first
    admin token are made."""
    import socket
    import ssl

    from edgewise.cli._gateway import check_mqtt_option
    from edgewise.errors import ConfigError

    s = settings
    check_mqtt_option(s.mqtt)
    from edgewise.gateway.pipeline import per_metric_factory

    per_metric_factory(s.detector)  # an unknown or unbuildable --detector, before the ports
    if s.tls_cert:  # unreadable, DER, a passphrase, not a pair, expired: one line
        from edgewise.security.certs import expiry_warning, server_files_error

        if (why := server_files_error(s.tls_cert, s.tls_key)) is not None:
            raise ConfigError(why)
        if (soon := expiry_warning(s.tls_cert)) is not None:
            typer.echo(f"warning: {soon}", err=True)
    if s.audit_syslog_ca_file:
        try:
            ssl.create_default_context(cafile=s.audit_syslog_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"--audit-syslog-ca-file {s.audit_syslog_ca_file!r} cannot be loaded as PEM CA "
                f"certificates: {getattr(exc, 'strerror', None) or exc}") from None
    ports = [("--port", s.http_port)]
    if s.mqtt == "embedded":
        if s.mqtt_port == s.http_port:
            raise ConfigError(f"--port and --mqtt-port are both {s.http_port}; HTTP and MQTT "
                              "need a port each.")
        ports.append(("--mqtt-port", s.mqtt_port))
    for flag, port in ports:
        try:
            with socket.socket(socket.AF_INET6 if ":" in s.host else socket.AF_INET) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((s.host, port))
        except socket.gaierror as exc:
            raise ConfigError(f"--host {s.host!r} does not resolve to an address to listen "
                              f"on ({exc.strerror}).") from None
        except OSError as exc:
            raise ConfigError(f"{flag} {port} on {s.host} cannot be listened on: "
                              f"{exc.strerror or exc}; choose another with {flag}.") from None


def _facility_name(number: int) -> str:
    """The name of syslog facility ``number`` (:data:`edgewise.config.SYSLOG_FACILITIES`).

    >>> _facility_name(10)
    'authpriv'
    """
    from edgewise.config import SYSLOG_FACILITIES

    return {v: k for k, v in SYSLOG_FACILITIES.items()}.get(number, str(number))


#: the embedded broker's ways of handing telemetry to the gateway (EDGEWISE_MQTT_CONSUMER)
CONSUMERS = ("plugin", "subscriber")


def _check_consumer(settings, env=None) -> None:  # type: ignore[no-untyped-def]
    """Refuse an ``EDGEWISE_MQTT_CONSUMER`` the embedded broker does not take, before
    anything (the admin token above all) is made.

    >>> from edgewise.config import Settings
    >>> _check_consumer(Settings(), {"EDGEWISE_MQTT_CONSUMER": "junk"})
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: Setting 'EDGEWISE_MQTT_CONSUMER' has value 'junk'. Use 'plugin' or 'subscriber'.
    """  # noqa: E501
    import os

    from edgewise.errors import ConfigError

    env = os.environ if env is None else env
    consumer = env.get("EDGEWISE_MQTT_CONSUMER", "plugin")
    if settings.mqtt == "embedded" and consumer not in CONSUMERS:
        raise ConfigError(f"Setting 'EDGEWISE_MQTT_CONSUMER' has value {consumer!r}. "
                          f"Use {' or '.join(repr(c) for c in CONSUMERS)}.")


async def _start(gw, token: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Start the gateway; if starting fails half-way, stop what did start, and show the
    admin token just made (it exists now and is shown nowhere else)."""
    try:
        await gw.start()
    except BaseException:
        if token:
            typer.echo(f"admin token (shown once, keep it; the gateway did not start): {token}",
                       err=True)
        await gw.stop()
        raise


def _no_admin_token_line(gw) -> str | None:  # type: ignore[no-untyped-def]
    """The line a start prints when the data dir has no admin token left (one is made only
    at its first start, so revoking the last one is not undone by a restart), saying how to
    make one; ``None`` while one exists.

    The command it names runs on the gateway's machine (it writes ``security.sqlite``).
    """
    if gw.security.has_admin_token():
        return None
    import shlex

    return ("no admin token (one is made only at a data dir's first start); make one on this "
            "machine with: edgewise token create --data-dir "
            f"{shlex.quote(str(gw.settings.data_dir))} --role admin --name NAME")


async def _stopped_while_starting(gw, stop: asyncio.Event,  # type: ignore[no-untyped-def]
                                  token: str | None) -> bool:
    """Whether SIGINT or SIGTERM came while the gateway started (``stop`` set); if so, stop
    it at once, showing the admin token just made (it exists now and is shown nowhere else:
    a ``docker stop`` during a first start left one no one had seen)."""
    if not stop.is_set():
        return False
    if token:
        typer.echo(f"admin token (shown once, keep it; stopped while starting): {token}",
                   err=True)
    await gw.stop()
    typer.echo("stopped", err=True)
    return True


def _stop_on_signal() -> asyncio.Event:
    """An event SIGINT or SIGTERM sets: both stop the gateway cleanly (state saved, store
    closed). Call it first thing in the event loop, before the gateway is made: a signal
    before the handlers ended the process with KeyboardInterrupt (exit 130, nothing saved),
    or, inside the gateway's start, was swallowed there (a Ctrl-C while starting left it
    running), and a SIGTERM then left an admin token made and never shown."""
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # the handlers stay in place through the stop: no second kill
            typer.echo("already stopping (saving state); wait for 'stopped'", err=True)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    return stop


#: Options of serve/demo whose empty value was silently taken, as (parameter, option, what is
#: right): an empty --store used the default DuckDB file even with EDGEWISE_STORE set; an
#: empty --audit-syslog or --alert-webhook forwarded nothing (or, for --audit-syslog, fell
#: back to EDGEWISE_AUDIT_SYSLOG), as a script's unset "$VAR" would give it.
_NOT_BLANK = (
    ("store", "--store", ("duckdb:///PATH or postgresql://…, or leave the option out for "
                          "DuckDB under the data dir (or EDGEWISE_STORE)")),
    ("alert_webhook", "--alert-webhook", ("an https:// URL (http:// to a loopback host), or "
                                          "leave the option out for none (or "
                                          "EDGEWISE_ALERT_WEBHOOKS)")),
    ("audit_syslog", "--audit-syslog", ("udp://HOST[:514], tcp://HOST[:601] or "
                                        "tls://HOST[:6514], or leave the option out for none "
                                        "(or EDGEWISE_AUDIT_SYSLOG)")),
)


def _refuse_blank_options() -> None:
    """Refuse, in one line naming the option (exit 2), a blank ``--store``,
    ``--alert-webhook`` or ``--audit-syslog`` given on the command line. An empty
    ``EDGEWISE_*`` variable still counts as unset (README "Settings"): Click never passes it."""
    ctx = click.get_current_context()
    for name, flag, right in _NOT_BLANK:
        if name not in ctx.params or (ctx.get_parameter_source(name)
                                      is not click.core.ParameterSource.COMMANDLINE):
            continue
        value = ctx.params[name]
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and not v.strip():
                raise fail(f"{flag} {v!r} is blank: give {right}.")


@app.command(cls=SettingsCommand)
def serve(
    data_dir: DataDir,
    mqtt: Mqtt = "embedded",
    store: StoreUrl = "",
    host: Host = "127.0.0.1",
    port: Port = 8080,
    mqtt_port: MqttPort = 1884,
    tls_cert: TlsCert = "",
    tls_key: TlsKey = "",
    detector: Detector = "context-likelihood",
    fast_stream_z: FastStreamZ = 3.0,
    fleet_prior: FleetPrior = True,
    alert_webhook: AlertWebhook = None,
    alert_webhook_allow_http: AlertWebhookAllowHttp = False,
    alert_webhook_ca_file: AlertWebhookCaFile = "",
    audit_syslog: AuditSyslog = "",
    audit_syslog_ca_file: AuditSyslogCaFile = "",
) -> None:
    """Run the gateway: MQTT in, store, detection, alerts (pushed to --alert-webhook URLs),
    HTTP API and dashboard."""
    import asyncio

    from edgewise.config import url_host
    from edgewise.errors import BrokerUnavailableError
    from edgewise.gateway.runtime import Gateway

    _refuse_blank_options()
    settings = _settings(data_dir, mqtt, store, host, port, mqtt_port, tls_cert, tls_key,
                         detector, fast_stream_z, fleet_prior,
                         # a tuple, never joined: a URL may hold a comma (?teams=a,b)
                         tuple(alert_webhook) if alert_webhook else None,
                         alert_webhook_allow_http, alert_webhook_ca_file, audit_syslog,
                         audit_syslog_ca_file)
    _check_consumer(settings)
    _check_duckdb_file(settings.store_url)
    restrict_umask()  # what the gateway creates (stores, their logs, state) is 0600

    async def main() -> None:
        stop = _stop_on_signal()  # from the start: a Ctrl-C while starting stops it too
        gw = Gateway(settings)
        token = gw.security.ensure_admin_token()
        await _start(gw, token)
        if await _stopped_while_starting(gw, stop, token):
            return
        scheme = "mqtts" if settings.tls_cert else "mqtt"
        where = (f"{scheme}://{url_host(settings.host)}:{settings.mqtt_port}"  # [::1]
                 if settings.mqtt == "embedded" else shown_url(settings.mqtt))  # no password
        typer.echo(f"edgewise gateway: MQTT {where}, store {gw.store.url}", err=True)
        if gw.http_url:
            typer.echo(f"dashboard: {gw.http_url}", err=True)
        if token:
            typer.echo(f"admin token (shown once): {token}", err=True)
        elif (line := _no_admin_token_line(gw)) is not None:
            typer.echo(line, err=True)
        if gw.webhooks is not None:
            typer.echo(f"alert webhooks: {', '.join(w.shown for w in gw.webhooks.webhooks)}",
                       err=True)
        if gw.audit_forwarder is not None:
            t = gw.audit_forwarder.target
            typer.echo(f"audit log forwarded to {t.shown} (syslog, facility "
                       f"{_facility_name(t.facility)})", err=True)
        if gw.webhook_secret_made is not None:
            typer.echo(f"alert webhook secret made: {gw.webhook_secret_made} (mode 0600; give "
                       "it to the receivers to check X-Edgewise-Signature)", err=True)
        from edgewise.config import is_loopback

        clear = [name for name, on in (("HTTP", gw.http_url is not None),
                                       ("MQTT", settings.mqtt == "embedded")) if on]
        if clear and not settings.tls_cert and not is_loopback(settings.host):
            # warned, not refused: a trusted LAN, or a TLS proxy in front, may be meant
            typer.echo(f"warning: listening on {settings.host or 'every address'} without "
                       f"--tls-cert: API tokens, device secrets and readings travel in clear "
                       f"({' and '.join(clear)}) for anyone on the network to read; give "
                       f"--tls-cert/--tls-key, or listen on 127.0.0.1 behind a TLS proxy",
                       err=True)
        typer.echo("ready", err=True)
        try:
            await stop.wait()
        finally:
            await gw.stop()
        typer.echo("stopped", err=True)

    try:
        asyncio.run(main())
    except BrokerUnavailableError as exc:
        if settings.mqtt == "embedded":  # the embedded broker's own subscriber: not --mqtt's
            raise
        raise fail(f"--mqtt (EDGEWISE_MQTT) {shown_url(settings.mqtt)!r} cannot be used: {exc} "
                   "Give the URL of a running broker that accepts the gateway "
                   "(mqtt://[USER:PASSWORD@]HOST:PORT, mqtts://…?ca=/path/ca.pem for TLS), "
                   "or 'embedded'.") from None


def _check_pumps_fit(pumps: int) -> None:
    """Refuse, in one line before anything is made, more ``--pumps`` than this process
    may open files for: each simulated pump is an MQTT client here, and the broker's end of
    its connection is here too (:func:`~edgewise.cli.bench_ingest.max_devices`, the bound
    `bench ingest --devices` has); past it the start died in a traceback, the admin token
    made but never shown."""
    from edgewise.cli.bench_ingest import too_many_devices
    from edgewise.errors import ConfigError

    why = too_many_devices(pumps, "--pumps", "simulated pump")
    if why is not None:
        raise ConfigError(why)


def _read_labels(path: Path) -> list[dict[str, Any]]:
    """The fault labels earlier demo runs wrote to ``path`` (none when it is absent)."""
    import json

    from edgewise.errors import ConfigError

    if not path.exists():
        return []
    try:
        labels = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} holds the demo's fault labels but cannot be read ({e}); "
                          f"move it away to start afresh.") from None
    if not isinstance(labels, list) or not all(
            isinstance(x, dict) and {"device_id", "start_ns"} <= x.keys() for x in labels):
        raise ConfigError(f"{path} is not a list of fault labels (each with device_id and "
                          f"start_ns); move it away to start afresh.")
    return labels


def _read_device_creds(path: Path) -> dict[str, str]:
    """The simulated pumps' MQTT secrets (device id -> secret) earlier demo runs wrote to
    ``path`` (none when it is absent), read before anything is made: a damaged file was a
    traceback after the shown-once admin token was made (and never shown)."""
    import json

    from edgewise.errors import ConfigError

    if not path.exists():
        return {}
    try:
        creds = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} holds the demo's device credentials but cannot be read "
                          f"({e}); move it away to start afresh (its pumps get new "
                          f"secrets).") from None
    if not isinstance(creds, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in creds.items()):
        raise ConfigError(f"{path} is not the demo's device credentials (a JSON object of "
                          f"device id to secret, e.g. {{\"pump-00\": \"...\"}}); move it "
                          f"away to start afresh (its pumps get new secrets).")
    return creds


def merge_labels(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier runs' labels with this run's, one per ``(device_id, start_ns)`` (this run's
    wins), in time order.

    >>> a = {"device_id": "p", "start_ns": 1, "end_ns": 2}
    >>> b = {"device_id": "p", "start_ns": 5, "end_ns": 9}
    >>> [x["start_ns"] for x in merge_labels([a], [b, a])]
    [1, 5]
    """
    merged = {(x["device_id"], x["start_ns"]): x for x in old}
    merged.update({(x["device_id"], x["start_ns"]): x for x in new})
    return sorted(merged.values(), key=lambda x: (x["start_ns"], x["device_id"]))


def _check_duckdb_file(store_url: str) -> None:
    """Refuse (one line, exit 2) a ``duckdb:///PATH`` store whose file is there but is no
    DuckDB database: DuckDB opens a CSV as a read-only view without an error, and the
    gateway took readings into it, acknowledged, that were gone at its next start."""
    from edgewise.errors import StoreError
    from edgewise.store import duckdb_file, shown_url
    from edgewise.store.duckdb import not_a_duckdb_file

    try:
        path = duckdb_file(store_url)
    except StoreError:  # opening the store says what is wrong with the URL
        return
    why = not_a_duckdb_file(path) if path is not None else None
    if why:
        raise fail(f"--store (EDGEWISE_STORE) {shown_url(store_url)!r}: {why}; the gateway "
                   "would keep no reading there. Give the store's file, e.g. "
                   "duckdb:///<data dir>/edgewise.duckdb, or leave --store out.")


def _stored_seqs(store_url: str, sent: Mapping[str, Iterable[int]]) -> dict[str, int]:
    """Each device of ``sent`` (``{device_id: seqs it sent}``) mapped to its newest seq
    the store at ``store_url`` holds: the highest of its ``sent`` seqs stored, or its seq
    watermark when higher; read once the gateway has stopped. ``{}`` when the store
    cannot be read (the demo's labels are then cut at the acks its pumps saw).

    Not the watermark alone: the stopping gateway stores what it read of each pump's
    stream, and a reading sent after the next one (a swap) can be left unread while the
    next one was stored, above a seq gap; labels cut at the watermark left that stored
    reading of a fault outside its label (2 s of a pump's fault, under load)."""
    from edgewise.store import open_store

    try:
        store = open_store(store_url, create=False)
    except Exception:  # any: the acks still cut the labels
        return {}
    try:
        asked = {d: list(seqs) for d, seqs in sent.items()}
        found = store.stored_seqs_many(asked)
        return {d: max([store.seq_watermark(d), *found.get(d, ())]) for d in asked}
    except Exception:  # any: the acks still cut the labels
        return {}
    finally:
        store.close()


def _tls_names(cert_file: str) -> str:
    """The names a PEM certificate holds, for a message (``"no names"`` when unreadable)."""
    from cryptography import x509

    from edgewise.security.certs import describe_names

    try:
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    except (OSError, ValueError):
        return "no names"
    return describe_names(cert)


def _demo_device_host(tls_cert: str, tls_key: str) -> str:
    """The name the demo's simulated pumps reach its broker by: ``127.0.0.1``, or
    ``localhost`` when the ``--tls-cert`` names that and not 127.0.0.1. The pumps trust
    the ``--tls-cert`` file only, so one they would refuse (another host's name, a leaf
    without the CA that signed it) is refused here in one line, before anything starts.

    >>> _demo_device_host("", "")
    '127.0.0.1'
    """
    from edgewise.errors import ConfigError
    from edgewise.security.certs import tls_verify_error

    if not tls_cert:
        return "127.0.0.1"
    errors: dict[str, str | None] = {}
    for host in ("127.0.0.1", "localhost"):
        errors[host] = tls_verify_error(tls_cert, tls_key, host)
        if errors[host] is None:
            return host
    other = [str(e) for e in errors.values() if "mismatch" not in str(e).lower()]
    names = _tls_names(tls_cert)
    why = other[0] if other else f"it names {names}, neither 127.0.0.1 nor localhost"
    raise ConfigError(
        f"--tls-cert {tls_cert!r} cannot serve the demo: its simulated pumps connect to "
        f"127.0.0.1 or localhost and trust that file only, and it does not verify there "
        f"({why}). Give a certificate whose subjectAltName names 127.0.0.1 or localhost, "
        f"self-signed or followed in the same file by the CA certificate that signed it "
        f"(`edgewise serve` takes this one for real devices).")


@app.command(cls=SettingsCommand)
def demo(
    data_dir: DataDir,
    store: StoreUrl = "",
    host: Host = "127.0.0.1",
    port: Port = 8080,
    mqtt_port: MqttPort = 1884,
    tls_cert: TlsCert = "",
    tls_key: TlsKey = "",
    pumps: Annotated[int, typer.Option("--pumps", help="Simulated pumps (>= 1).")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the fleet.")] = 0,
    detector: Detector = "context-likelihood",
    fast_stream_z: FastStreamZ = 3.0,
    fleet_prior: FleetPrior = True,
) -> None:
    """Broker, gateway, store, detection, dashboard and a simulated pump fleet, in one process.

    Restarted on the same data, it goes on after the newest stored reading (no history is
    sent back-dated over it) and adds its fault labels to the earlier runs' ones.
    """
    import asyncio
    import json

    from edgewise.errors import ConfigError
    from edgewise.gateway.runtime import Gateway
    from edgewise.label.store import labels_csv
    from edgewise.sim.fleet import FleetRunner
    from edgewise.sim.pumps import PumpFleet

    _refuse_blank_options()
    if pumps < 1:
        raise ConfigError(f"--pumps must be at least 1. Got {pumps} instead.")
    _check_pumps_fit(pumps)
    if seed < 0:
        raise ConfigError(f"--seed must be an int >= 0. Got {seed} instead.")
    settings = _settings(data_dir, "embedded", store, host, port, mqtt_port, tls_cert, tls_key,
                         detector, fast_stream_z, fleet_prior,
                         alert_webhooks="")  # a simulated fleet's alerts reach no real tool
    if os.environ.get("EDGEWISE_ALERT_WEBHOOKS", "").strip():
        typer.echo("note: EDGEWISE_ALERT_WEBHOOKS is set but the demo sends no alert webhooks "
                   "(its simulated pumps' alerts would reach real tools); `edgewise serve "
                   "--alert-webhook URL` sends them", err=True)
    _check_consumer(settings)
    # the simulated pumps connect to the embedded broker here, trusting --tls-cert only
    device_host = _demo_device_host(settings.tls_cert, settings.tls_key)
    restrict_umask()  # what the gateway creates (stores, their logs, state) is 0600
    labels_file = settings.data_dir / "demo-labels.json"
    labels_csv_file = settings.data_dir / "demo-labels.csv"
    earlier_labels = _read_labels(labels_file)  # a bad file stops us before anything is made
    creds_file = settings.data_dir / "demo-devices.json"
    creds = _read_device_creds(creds_file)  # so does this one
    fleet = PumpFleet(pumps, seed=seed)

    async def main() -> None:
        stop = _stop_on_signal()  # from the start: a Ctrl-C while starting stops it too
        gw = Gateway(settings)
        token = gw.security.ensure_admin_token()
        made: list[str] = []
        for dev in fleet.device_ids:
            if dev not in creds or not gw.security.has_device(dev):
                if gw.security.has_device(dev):
                    gw.security.delete_device(dev, actor="demo")
                creds[dev] = gw.security.add_device(dev, actor="demo")[1]
                made.append(dev)
        write_private(creds_file, json.dumps(creds, indent=1).encode())
        ids = set(fleet.device_ids)
        stored = [d.last_ns for d in gw.store.devices() if d.device_id in ids and d.last_ns]
        await _start(gw, token)
        if await _stopped_while_starting(gw, stop, token):
            return
        runner = FleetRunner(fleet, [(d, creds[d]) for d in fleet.device_ids], device_host,
                             settings.mqtt_port, tls_ca=settings.tls_cert or None, seed=seed,
                             start_after_ns=max(stored, default=None))
        try:
            try:
                await asyncio.to_thread(runner.start)
            except OSError as exc:  # the gateway is stopped below, its files closed
                if token:
                    typer.echo(f"admin token (shown once, keep it; the demo did not start): "
                               f"{token}", err=True)
                if isinstance(exc, ConnectionError):
                    raise fail(f"the demo's simulated pumps could not connect to its MQTT "
                               f"broker on {device_host}:{settings.mqtt_port}: {exc}") from None
                # no socket or thread for one more pump (the open-file limit checked at
                # the start is shared with the rest of this process)
                raise fail(f"the demo's {pumps} simulated pumps could not be started: "
                           f"{exc.strerror or exc}; give fewer --pumps (or raise "
                           f"`ulimit -n`).") from None
            typer.echo(f"dashboard: {gw.http_url or '(HTTP not available)'}")
            if token:
                typer.echo(f"admin token (shown once, keep it): {token}")
            elif (line := _no_admin_token_line(gw)) is not None:
                typer.echo(line)
            else:
                typer.echo("admin token: made at first start (see `edgewise token create`)")
            typer.echo(f"{pumps} simulated pumps on MQTT {device_host}:{settings.mqtt_port}; "
                       f"device credentials (id: secret) are in {creds_file} (owner-only)"
                       + (f"; made now for {len(made)} (shown once):" if made else "."))
            for dev in made:
                typer.echo(f"  {dev}: {creds[dev]}")
            if stored:
                typer.echo(f"data of an earlier run found: the fleet goes on after its newest "
                           f"reading; fault labels are added to {labels_file}")
            typer.echo("Ctrl-C stops.")
            await stop.wait()
        finally:
            await asyncio.to_thread(runner.stop)
            try:
                await gw.stop()  # it stores what the pumps sent after their last ack
            finally:
                _write_demo_labels(runner)
        typer.echo(f"stopped; {runner.sent} messages sent; fault ground truth in {labels_file}"
                   f" (as labels to import: {labels_csv_file})")

    def _write_demo_labels(runner: FleetRunner) -> None:
        # each pump's labels end at its newest stored reading (by the newest of its seqs
        # the store holds, read now the gateway has stopped, else by the acks): a restart goes
        # on after the newest stored one, so its readings fall outside them, and what the
        # gateway stored after the last ack a pump saw is inside them
        stored_seq = _stored_seqs(settings.store_url, runner.unacked_seqs())
        faults = merge_labels(earlier_labels, runner.labels(stored_seq))
        write_private(labels_file, json.dumps(faults, indent=1).encode())
        # the same faults as labels `edgewise label import` takes: a fault's window
        # [start_ns, end_ns] holds its last reading, a label's [start, end) does not,
        # so each ends 1 ns later (a spike's single reading at t is [t, t + 1 ns))
        rows = []
        for f in faults:
            try:
                row = (str(f["device_id"]), int(f["start_ns"]), int(f["end_ns"]) + 1,
                       str(f["kind"]), "demo fault on " + " ".join(
                           map(str, f.get("metrics") or [f["metric"]])))
                labels_csv([row])
            except (KeyError, TypeError, ValueError):
                continue  # not a label (an entry edited by hand): the JSON keeps it
            rows.append(row)
        write_private(labels_csv_file, labels_csv(rows).encode())

    asyncio.run(main())
