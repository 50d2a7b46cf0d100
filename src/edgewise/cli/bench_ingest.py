"""``edgewise bench ingest``: MQTT QoS 1 devices into gateway + store + detection."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edgewise.cli._app import Json, bench_app, fail

#: open files each simulated device takes in this process at the peak (measured: 5 n + 6
#: for n devices): its MQTT socket and the pair of sockets paho wakes its network thread
#: with, and the pair its client in the run before holds until collected
FILES_PER_DEVICE = 5
#: open files kept for the rest: standard streams, the raw run's subscriber, the HTTP
#: client, the gateway's log and its pipes, the credentials database
FILES_RESERVED = 64


def max_devices() -> int | None:
    """The most ``--devices`` this process can connect at once: what its open-file limit
    (``ulimit -n``, the soft RLIMIT_NOFILE) leaves after :data:`FILES_RESERVED`, at
    :data:`FILES_PER_DEVICE` each; ``None`` where there is no such limit."""
    try:
        import resource
    except ImportError:  # not on a POSIX system
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max((soft - FILES_RESERVED) // FILES_PER_DEVICE, 0)


def too_many_devices(devices: int, option: str = "--devices", what: str = "simulated device",
                     ) -> str | None:
    """Why ``devices`` simulated clients cannot run in this process (fewer than 1, or more
    than :func:`max_devices`: past it a run dies half-way with "Too many open files"), as
    one line naming ``option`` and the range this process allows; ``None`` when they fit."""
    top = max_devices()
    if top is None or 1 <= devices <= top:
        return None
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    most = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    return (f"{option} must be an int in [1, {top}], e.g. 20: each {what} takes up to "
            f"{FILES_PER_DEVICE} open files in this process, which may open {soft} (`ulimit "
            f"-n`, at most {most}; raise it for more). Got {devices}.")


def check_devices(devices: int) -> None:
    """Fail in one line, before any run, where ``devices`` is more than
    :func:`max_devices` (:func:`too_many_devices`)."""
    why = too_many_devices(devices)
    if why is not None:
        raise fail(why)


def check_mosquitto(port: int, timeout_s: float = 3.0) -> None:
    """Fail in one line, before any run, unless an MQTT broker on 127.0.0.1:``port`` lets an
    anonymous client connect, as the bench's devices and gateway then do."""
    import time
    import uuid

    import paho.mqtt.client as mqtt

    def refuse(why: str) -> typer.Exit:
        return fail(f"--mosquitto must be the port of a running Mosquitto on 127.0.0.1 that "
                    f"lets an anonymous client connect, or 0 for the embedded amqtt. Got "
                    f"{port}: {why}.")

    answer: list[Any] = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"edgewise-probe-{uuid.uuid4().hex[:8]}")
    client.on_connect = lambda c, u, flags, reason, props: answer.append(reason)
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except OSError as exc:
        raise refuse(f"nothing answers there ({exc.strerror or exc})") from None
    try:
        end = time.monotonic() + timeout_s
        while not answer and time.monotonic() < end:
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break  # the other end closed or spoke no MQTT
    finally:
        client.disconnect()  # sends DISCONNECT where it can, and closes the socket
    if not answer:
        raise refuse("what listens there does not answer an MQTT CONNECT")
    if answer[0].is_failure:
        raise refuse(f"the broker refused the connection ({answer[0]})")


@bench_app.command("ingest")
def ingest(
    devices: Annotated[int, typer.Option("--devices", help="Simulated devices.")] = 20,
    seconds: Annotated[float, typer.Option("--seconds", help="Seconds per run.")] = 10.0,
    window: Annotated[int, typer.Option("--window",
                                        help="Unacked messages a device may have.")] = 200,
    mosquitto: Annotated[int, typer.Option(
        "--mosquitto", help="Port of a Mosquitto on 127.0.0.1 to use instead of amqtt "
                            "(gateway in external-broker mode); 0 = embedded amqtt.")] = 0,
    consumer: Annotated[str, typer.Option(
        "--consumer", help="How the embedded broker hands telemetry to the gateway: "
                           "'plugin' (default) or 'subscriber' (internal MQTT client)."),
    ] = "plugin",
    detect_wait: Annotated[float, typer.Option(
        "--detect-wait", help="Seconds detection gets, after each gateway run's load, to "
                              "score what was stored before the alerts are read.")] = 60.0,
    json_out: Json = False,
) -> None:
    """Sustained readings/s (stored and acked), whether detection kept up, spikes alerted,
    publish->stored and publish->alert latency, and the raw broker ceiling."""
    import json

    from edgewise.bench.ingest import check_ingest_options, run_ingest_bench

    check_devices(devices)  # first: its line names the upper bound too, not "[1, inf)"
    check_ingest_options(devices, seconds, window, mosquitto=mosquitto or None,
                         consumer=consumer, detect_wait_s=detect_wait)
    if mosquitto:
        check_mosquitto(mosquitto)
    say = (lambda s: None) if json_out else (lambda s: typer.echo(s, err=True))
    r = run_ingest_bench(devices=devices, seconds=seconds, window=window, progress=say,
                         mosquitto=mosquitto or None, consumer=consumer,
                         detect_wait_s=detect_wait)
    if json_out:
        typer.echo(json.dumps(r))
        return
    from edgewise.bench._machine import machine_line

    for line in text_lines(r):
        typer.echo(line)
    typer.echo(machine_line())  # where the rates above were measured, as --json says


def _n(value: Any) -> str:
    """A count as printed: thousands separated, "n/a" where the run has none."""
    return "n/a" if value is None else f"{value:,.0f}"


def _detection_line(run: dict[str, Any]) -> str:
    """What detection did in one gateway run: scored of stored when the load stopped, and
    whether (and when) it caught up afterwards."""
    stored_end, scored_end = run.get("stored_at_load_end"), run.get("scored_at_load_end")
    share = (f" ({scored_end / stored_end:.0%})" if stored_end and scored_end is not None
             else "")
    line = (f"  detection: {_n(scored_end)} of {_n(stored_end)} readings stored when the "
            f"load stopped were scored by then{share}; ")
    scored = (f"{_n(run.get('readings_scored'))} of {_n(run.get('readings_stored'))} stored "
              f"readings scored")
    if run.get("detection_caught_up"):
        return line + f"caught up {run.get('detection_caught_up_after_s')} s later: {scored}"
    return line + f"did NOT catch up within the wait: {scored}"


def _spike_line(run: dict[str, Any]) -> str:
    """Spikes sent, alerted and missed in one gateway run, and the alert latency over the
    alerted ones (the only ones it can cover)."""
    spikes, alerted = run.get("spikes"), run.get("spike_alerts")
    missed = run.get("spikes_missed", None if spikes is None or alerted is None
                     else spikes - alerted)
    return (f"  spikes: {_n(spikes)} sent, {_n(alerted)} alerted, {_n(missed)} never "
            f"alerted; p50/p99 publish->alert {run.get('p50_alert_ms')}/"
            f"{run.get('p99_alert_ms')} ms over the alerted ones")


def text_lines(r: dict[str, Any]) -> list[str]:
    """``bench ingest``'s text output for its result ``r``: the rates, what detection did
    with what was stored, and the spikes sent, alerted and missed, for both gateway runs.

    >>> run = {"readings_per_s": 800.0, "p50_stored_ms": 5.0, "p99_stored_ms": 9.0,
    ...        "p50_alert_ms": 40.0, "p99_alert_ms": 90.0, "spikes": 10, "spike_alerts": 9,
    ...        "spikes_missed": 1, "stored_at_load_end": 800.0, "scored_at_load_end": 600.0,
    ...        "readings_stored": 880.0, "readings_scored": 880.0, "readings_unscored": 0.0,
    ...        "detection_caught_up": True, "detection_caught_up_after_s": 1.5}
    >>> raw = {"readings_per_s": 1600.0, "p50_ms": 1.0, "p99_ms": 2.0}
    >>> for line in text_lines({"broker": "amqtt (embedded)", "consumer": "plugin", "raw": raw,
    ...                         "max": run, "half": run, "gateway_vs_raw": 0.5})[2:5]:
    ...     print(line)
    gateway max:  800 readings/s stored and acked (detection runs after the ack) = 50% of raw; p50/p99 publish->stored 5.0/9.0 ms
      detection: 600 of 800 readings stored when the load stopped were scored by then (75%); caught up 1.5 s later: 880 of 880 stored readings scored
      spikes: 10 sent, 9 alerted, 1 never alerted; p50/p99 publish->alert 40.0/90.0 ms over the alerted ones
    """  # noqa: E501
    raw, full, half = r["raw"], r["max"], r["half"]
    ratio = r["gateway_vs_raw"]
    return [
        f"broker: {r['broker']}, consumer: {r['consumer']}",
        (f"raw broker (no gateway): {raw['readings_per_s']:,.0f} readings/s "
         f"(p50 {raw['p50_ms']} ms, p99 {raw['p99_ms']} ms publish->subscribe)"),
        (f"gateway max:  {full['readings_per_s']:,.0f} readings/s stored and acked (detection "
         f"runs after the ack) = {'n/a' if ratio is None else f'{ratio:.0%}'} of raw; "
         f"p50/p99 publish->stored {full['p50_stored_ms']}/{full['p99_stored_ms']} ms"),
        _detection_line(full),
        _spike_line(full),
        (f"gateway half: {half['readings_per_s']:,.0f} readings/s; p50/p99 "
         f"publish->stored {half['p50_stored_ms']}/{half['p99_stored_ms']} ms"),
        _detection_line(half),
        _spike_line(half),
    ]
