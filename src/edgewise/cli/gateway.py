"""``edgewise serve`` and ``edgewise demo``: the gateway for real devices, or with a simulated fleet."""  # noqa: E501

from __future__ import annotations

from typing import Annotated

import typer

from edgewise.cli._app import DataDir, app

Mqtt = Annotated[str, typer.Option("--mqtt", envvar="EDGEWISE_MQTT",
                                   help="'embedded' (in-process broker) or mqtt://HOST:PORT.")]
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
         "standard deviations off its running mean, and a stuck sensor alarms; 0 scores fast "
         "streams as slow ones (see `edgewise bench fleet --compare-gate`).")]


def _settings(data_dir, mqtt, store, host, port, mqtt_port, tls_cert, tls_key, detector,  # type: ignore[no-untyped-def]
              fast_stream_z=None):
    from edgewise.config import Settings
    from edgewise.errors import ConfigError

    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together; give both or neither.")
    return Settings.load(data_dir=data_dir, mqtt=mqtt, store=store, host=host, http_port=port,
                         mqtt_port=mqtt_port, tls_cert=tls_cert, tls_key=tls_key,
                         detector=detector, fast_stream_z=fast_stream_z)


async def _start(gw) -> None:  # type: ignore[no-untyped-def]
    """Start the gateway; if starting fails half-way, stop what did start."""
    try:
        await gw.start()
    except BaseException:
        await gw.stop()
        raise


async def _until_signalled() -> None:
    """Wait for SIGINT or SIGTERM: both stop the gateway cleanly (state saved, store closed)."""
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


@app.command()
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
) -> None:
    """Run the gateway: MQTT in, store, detection, alerts, HTTP API and dashboard."""
    import asyncio

    from edgewise.gateway.runtime import Gateway

    settings = _settings(data_dir, mqtt, store, host, port, mqtt_port, tls_cert, tls_key,
                         detector, fast_stream_z)

    async def main() -> None:
        gw = Gateway(settings)
        token = gw.security.ensure_admin_token()
        await _start(gw)
        scheme = "mqtts" if settings.tls_cert else "mqtt"
        where = (f"{scheme}://{settings.host}:{settings.mqtt_port}" if settings.mqtt == "embedded"
                 else settings.mqtt)
        typer.echo(f"edgewise gateway: MQTT {where}, store {gw.store.url}", err=True)
        if gw.http_url:
            typer.echo(f"dashboard: {gw.http_url}", err=True)
        if token:
            typer.echo(f"admin token (shown once): {token}", err=True)
        typer.echo("ready", err=True)
        try:
            await _until_signalled()
        finally:
            await gw.stop()
        typer.echo("stopped", err=True)

    asyncio.run(main())


@app.command()
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
) -> None:
    """Broker, gateway, store, detection, dashboard and a simulated pump fleet, in one process."""
    import asyncio
    import json
    import os

    from edgewise.errors import ConfigError
    from edgewise.gateway.runtime import Gateway
    from edgewise.sim.fleet import FleetRunner
    from edgewise.sim.pumps import PumpFleet

    if pumps < 1:
        raise ConfigError(f"--pumps must be at least 1. Got {pumps} instead.")
    settings = _settings(data_dir, "embedded", store, host, port, mqtt_port, tls_cert, tls_key,
                         detector, fast_stream_z)

    async def main() -> None:
        gw = Gateway(settings)
        token = gw.security.ensure_admin_token()
        fleet = PumpFleet(pumps, seed=seed)
        creds_file = settings.data_dir / "demo-devices.json"
        creds: dict[str, str] = json.loads(creds_file.read_text()) if creds_file.exists() else {}
        for dev in fleet.device_ids:
            if dev not in creds or not gw.security.has_device(dev):
                if gw.security.has_device(dev):
                    gw.security.delete_device(dev, actor="demo")
                creds[dev] = gw.security.add_device(dev, actor="demo")[1]
        creds_file.write_text(json.dumps(creds, indent=1))
        os.chmod(creds_file, 0o600)
        await _start(gw)
        runner = FleetRunner(fleet, [(d, creds[d]) for d in fleet.device_ids], "127.0.0.1",
                             settings.mqtt_port, tls_ca=settings.tls_cert or None, seed=seed)
        await asyncio.to_thread(runner.start)
        typer.echo(f"dashboard: {gw.http_url or '(HTTP not available)'}")
        if token:
            typer.echo(f"admin token (shown once, keep it): {token}")
        else:
            typer.echo("admin token: made at first start (see `edgewise token create`)")
        typer.echo(f"{pumps} simulated pumps on MQTT 127.0.0.1:{settings.mqtt_port}; "
                   f"device credentials (id: secret) are in {creds_file}:")
        for dev in fleet.device_ids:
            typer.echo(f"  {dev}: {creds[dev]}")
        typer.echo("Ctrl-C stops.")
        try:
            await _until_signalled()
        finally:
            await asyncio.to_thread(runner.stop)
            labels = settings.data_dir / "demo-labels.json"
            labels.write_text(json.dumps(fleet.labels(), indent=1))
            await gw.stop()
        typer.echo(f"stopped; {runner.sent} messages sent; fault ground truth in {labels}")

    asyncio.run(main())
