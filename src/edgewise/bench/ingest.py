"""Ingest benchmark: simulated devices over MQTT QoS 1 into gateway + store + detection.

Three runs, each against a fresh broker process on this machine:

1. **raw**: the same amqtt broker with no gateway: devices publish, one subscriber
   receives; this is the ceiling (publish -> subscribe).
2. **max**: the gateway (``edgewise serve``, embedded broker, DuckDB, detection on):
   devices send as fast as acks allow (a window of unacked messages per device);
   sustained rate = readings covered by the gateway's durable acks per second.
3. **half**: the same at half the max rate, paced, for latency.

Each gateway runs in a temporary folder with its own DuckDB store there (``--store``
given), and with none of this process's ``EDGEWISE_*`` variables: only the settings of
:func:`gateway_settings` (recorded in the result, with the names of those left out), so a
shell's ``EDGEWISE_STORE`` never receives the bench's readings and alerts, and its
``EDGEWISE_DETECTOR`` and the like never change what is measured.

Latency publish -> stored is the time from ``publish()`` to the ack that covers the
message (the ack is sent after the commit). Publish -> alert: every ``spike_every``-th
message of each device carries an anomalous value; the alert's ``created`` time minus
the spike's publish time (one clock: same machine). Its percentiles cover the spikes that
raised an alert; the result counts those (``spike_alerts``) and the rest
(``spikes_missed``) beside them.

The rate is what was stored and acked: detection runs after the ack, on a worker of its
own, and may fall behind. So each gateway run also reports what detection did:
readings scored against readings stored when the load stopped (``scored_at_load_end`` /
``stored_at_load_end``), and, after waiting at most ``detect_wait_s`` for it to catch up
(alerts are read only then), whether and when it did and how many stored readings it never
scored (``readings_unscored``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from edgewise.bench._machine import machine_fields
from edgewise.sim.device import MqttDevice

__all__ = ["check_ingest_options", "gateway_settings", "run_ingest_bench"]

METRICS = ("flow", "pressure", "current", "bearing_temp", "motor_temp", "vibration",
           "speed", "suction")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log_tail(log: Path | None, lines: int = 3) -> str:
    """The last ``lines`` non-empty lines of ``log`` on one line ('' without a log)."""
    if log is None or not log.is_file():
        return ""
    text = log.read_text(errors="replace").splitlines()
    tail = [ln.strip() for ln in text if ln.strip()][-lines:]
    return "; its log ends: " + " | ".join(tail) if tail else ""


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0,
               log: Path | None = None) -> None:
    """Wait until ``port`` answers; if ``proc`` exits first, say why (its ``log``'s tail)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"benchmark server exited with {proc.returncode}"
                               + _log_tail(log))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered on port {port} within {timeout:g} s")


def _inherited() -> list[str]:
    """The ``EDGEWISE_*`` variables of this process that the bench's servers do not get:
    all of them (the bench's own ``EDGEWISE_BENCH_*`` switches are read here, not there)."""
    return sorted(k for k in os.environ if k.startswith("EDGEWISE_"))


def _env(settings: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a server the bench starts: this process's, less every
    ``EDGEWISE_*`` variable (:func:`_inherited`; a shell's ``EDGEWISE_STORE`` would send
    the bench's readings into that store, ``EDGEWISE_DETECTOR`` and the like would change
    what is measured unrecorded), plus ``settings``, the only ones the bench sets."""
    src = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWISE_")}
    env["PYTHONPATH"] = src + os.pathsep + os.environ.get("PYTHONPATH", "")
    return env | (settings or {})


def gateway_settings(consumer: str = "plugin") -> dict[str, str]:
    """The ``EDGEWISE_*`` settings the bench's gateway runs with, and no others: rate
    limits raised past what the devices send, and the embedded broker's ``consumer``.

    >>> gateway_settings()["EDGEWISE_MQTT_CONSUMER"]
    'plugin'
    """
    return {"EDGEWISE_RATE_LIMIT_PER_S": "1e9", "EDGEWISE_RATE_LIMIT_BURST": "1e9",
            "EDGEWISE_MQTT_CONSUMER": consumer}


def _gateway_args(data: Path, mport: int, hport: int, extra: list[str]) -> list[str]:
    """``edgewise serve``'s arguments for the bench: everything in the run's temporary
    ``data`` folder, the store too, named explicitly (a DuckDB file made for the run and
    removed with the folder).

    >>> _gateway_args(Path("/t"), 1883, 8080, [])[-2:]
    ['--store', 'duckdb:////t/bench.duckdb']
    """
    return ["serve", "--data-dir", str(data), "--mqtt-port", str(mport), "--port", str(hport),
            *extra, "--store", f"duckdb:///{(data / 'bench.duckdb').absolute()}"]


_RAW_BROKER = """
import asyncio, sys, logging
from amqtt.broker import Broker
logging.getLogger("amqtt").setLevel(logging.WARNING)
async def main():
    b = Broker({"listeners": {"default": {"type": "tcp", "bind": "127.0.0.1:" + sys.argv[1]}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                            {"allow_anonymous": True}}})
    await b.start()
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _payload(seq: int, ts: float, rng: np.random.Generator, spike: bool) -> dict[str, float]:
    vals = 50.0 + rng.normal(0, 1, len(METRICS))
    m = {k: round(float(v), 3) for k, v in zip(METRICS, vals, strict=True)}
    if spike:
        m["bearing_temp"] = 500.0
    return m


class _Load:
    """N device threads publishing 8-metric messages; window- or rate-limited."""

    def __init__(self, devices: list[MqttDevice], seconds: float, rate_per_device: float | None,
                 window: int, spike_every: int, ts0: float) -> None:
        if rate_per_device is not None and not rate_per_device > 0:
            raise ValueError(f"rate_per_device must be above 0 (None: unpaced). "
                             f"Got {rate_per_device!r} instead.")
        self.devices = devices
        self.seconds = seconds
        self.rate = rate_per_device  # None: as fast as the window allows
        self.window = window
        self.spike_every = spike_every
        self.ts0 = ts0
        self.pub_t: dict[str, dict[int, float]] = {d.device_id: {} for d in devices}
        self.spikes: dict[tuple[str, int], float] = {}  # (device, ts_ns) -> publish time
        self.sent = 0

    def run(self) -> tuple[float, float]:
        start = time.monotonic()
        stop_at = start + self.seconds
        threads = [threading.Thread(target=self._device, args=(d, i, stop_at), daemon=True)
                   for i, d in enumerate(self.devices)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return start, time.monotonic()

    def _device(self, d: MqttDevice, i: int, stop_at: float) -> None:
        rng = np.random.default_rng(i)
        pubs = self.pub_t[d.device_id]
        period = 1.0 / self.rate if self.rate is not None else 0.0
        nxt = time.monotonic()
        seq = 0
        while True:
            now = time.monotonic()
            if now >= stop_at:
                return
            if self.rate is not None:
                if now < nxt:
                    time.sleep(min(nxt - now, 0.01))
                    continue
                nxt += period
            elif len(d.pending) >= self.window:
                time.sleep(0.0005)
                continue
            seq += 1
            spike = self.spike_every > 0 and seq % self.spike_every == 0
            ts = self.ts0 + seq * 0.5  # device time: spikes land > 60 s apart
            t = time.monotonic()
            pubs[seq] = t
            if spike:
                self.spikes[(d.device_id, round(ts * 1e6) * 1000)] = time.time()
            d.send(ts, _payload(seq, ts, rng, spike), seq=seq)
            self.sent += 1


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)) * 1000, 1) if xs else None


def _raw(n_devices: int, seconds: float, window: int, mosquitto: int | None = None
         ) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    if mosquitto:
        port, proc = mosquitto, None
    else:
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-c", _RAW_BROKER, str(port)], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if proc is not None:
            _wait_port(port, proc)
        got = [0]
        lat: list[float] = []
        pubs: dict[str, dict[int, float]] = {}
        done: dict[str, int] = {}

        def on_msg(c: Any, u: Any, m: mqtt.MQTTMessage) -> None:
            t = time.monotonic()
            rec = json.loads(m.payload)
            dev = m.topic.split("/")[1]
            got[0] += 1
            p = pubs.get(dev, {}).pop(rec["seq"], None)
            if p is not None:
                lat.append(t - p)
            done[dev] = max(done.get(dev, 0), rec["seq"])

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-sub")
        sub.on_message = on_msg
        sub.max_inflight_messages_set(1000)
        sub.connect("127.0.0.1", port)
        sub.subscribe(f"{prefix}/+/telemetry", qos=1)
        sub.loop_start()
        time.sleep(0.3)
        devs = [_RawDevice(f"d{i:03d}", port, done, prefix) for i in range(n_devices)]
        load = _Load(devs, seconds, None, window, 0, time.time() - 3600)  # type: ignore[arg-type]
        pubs.update(load.pub_t)
        got0 = got[0]
        t0, t1 = load.run()
        received = got[0] - got0
        for d in devs:
            d.stop()
        sub.disconnect()
        sub.loop_stop()
        rate = received / (t1 - t0)
        return {"messages_per_s": round(rate, 1), "readings_per_s": round(rate * 8, 1),
                "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99), "messages": received}
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


class _RawDevice:
    """Publisher for the raw run: 'pending' is what the subscriber has not yet received."""

    def __init__(self, device_id: str, port: int, done: dict[str, int], prefix: str) -> None:
        self.device_id = device_id
        self._done = done
        self._sent = 0
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-{device_id}")
        c.max_inflight_messages_set(1000)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        self.topic = f"{prefix}/{device_id}/telemetry"

    @property
    def pending(self) -> range:
        return range(self._sent - self._done.get(self.device_id, 0))

    def send(self, ts: float, metrics: dict[str, float], seq: int) -> None:
        self._sent = seq
        self.client.publish(self.topic, json.dumps({"ts": ts, "metrics": metrics, "seq": seq},
                                                   separators=(",", ":")), qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _metric_sum(text: str, name: str) -> float:
    """The sum of every series of ``name`` (labelled or not) in Prometheus ``text``.

    >>> _metric_sum('a_total{reason="x"} 2\\na_total{reason="y"} 3\\nab_total 7', "a_total")
    5.0
    """
    return sum((float(line.split()[-1]) for line in text.splitlines()
                if line.startswith((name + " ", name + "{"))), 0.0)


def detection_counts(text: str) -> dict[str, float]:
    """What detection did with the readings a gateway stored, from its ``/metrics`` ``text``:
    readings ``stored``, ``scored``, left ``late_unscored`` (too old, or past the backlog's
    bound), ``removed`` by the stream cleaner (stored, never scored), ``unscored`` (stored
    less scored, whatever the reason) and the batches waiting (``backlog``).

    >>> from edgewise.gateway.metrics import Metrics
    >>> m = Metrics()
    >>> m.inc("edgewise_readings_stored_total", 80); m.inc("edgewise_readings_scored_total", 64)
    >>> detection_counts(m.render())["unscored"]
    16.0
    """
    stored = _metric(text, "edgewise_readings_stored_total")
    scored = _metric(text, "edgewise_readings_scored_total")
    return {"stored": stored, "scored": scored,
            "late_unscored": _metric(text, "edgewise_readings_late_unscored_total"),
            "removed": _metric_sum(text, "edgewise_quality_removed_total"),
            "unscored": max(stored - scored, 0.0),
            "backlog": _metric(text, "edgewise_detection_backlog")}


def caught_up(counts: dict[str, float]) -> bool:
    """Whether detection has dealt with every stored reading in ``counts``
    (:func:`detection_counts`): nothing waits, and each is scored, left late-unscored or
    removed by the cleaner.

    >>> caught_up({"stored": 8, "scored": 8, "late_unscored": 0, "removed": 0, "backlog": 0})
    True
    >>> caught_up({"stored": 8, "scored": 7, "late_unscored": 0, "removed": 0, "backlog": 0})
    False
    """
    done = counts["scored"] + counts["late_unscored"] + counts["removed"]
    return counts["backlog"] == 0 and done >= counts["stored"]


def wait_detection(read_metrics: Callable[[], str], timeout_s: float, poll_s: float = 0.1,
                   ) -> tuple[dict[str, float], float | None]:
    """Poll a gateway's ``/metrics`` (``read_metrics``) until detection has caught up
    (:func:`caught_up`), for at most ``timeout_s`` seconds: never forever. Return the last
    counts (:func:`detection_counts`) and the seconds it took, ``None`` where it had not
    caught up by then.

    >>> from edgewise.gateway.metrics import Metrics
    >>> m = Metrics()
    >>> m.inc("edgewise_readings_stored_total", 8)
    >>> wait_detection(m.render, timeout_s=0.2)[1] is None
    True
    """
    start = time.monotonic()
    while True:
        counts = detection_counts(read_metrics())
        spent = time.monotonic() - start
        if caught_up(counts):
            return counts, round(spent, 2)
        if spent >= timeout_s:
            return counts, None
        time.sleep(min(poll_s, max(timeout_s - spent, 0.0)))


def _gateway(n_devices: int, seconds: float, rate_per_device: float | None, window: int,
             spike_every: int, progress: Callable[[str], None], mosquitto: int | None = None,
             consumer: str = "plugin", detect_wait_s: float = 60.0) -> dict[str, Any]:
    import httpx

    from edgewise.security.credentials import Security

    with tempfile.TemporaryDirectory(prefix="ew-bench-") as tmp:
        data = Path(tmp)
        sec = Security(data)
        creds = [sec.add_device(f"bench-{i:03d}") for i in range(n_devices)]
        token = sec.create_token("viewer", "bench")
        sec.close()
        mport, hport = _free_port(), _free_port()
        prefix = f"bench{uuid.uuid4().hex[:8]}"
        extra = (["--mqtt", f"mqtt://127.0.0.1:{mosquitto}?prefix={prefix}&client_id={prefix}"]
                 if mosquitto else [])
        env = _env(gateway_settings(consumer))
        log = open(data / "gateway.log", "wb")
        prof = os.environ.get("EDGEWISE_BENCH_PROFILE")  # cProfile the gateway into this file
        wrap = ["-m", "cProfile", "-o", prof] if prof else []
        try:
            proc = subprocess.Popen(
                [sys.executable, *wrap, "-m", "edgewise",
                 *_gateway_args(data, mport, hport, extra)],
                env=env, stdout=log, stderr=subprocess.STDOUT)
        except BaseException:
            log.close()
            raise
        try:
            log.flush()
            if not mosquitto:
                _wait_port(mport, proc, log=data / "gateway.log")
            _wait_port(hport, proc, log=data / "gateway.log")
            lat: list[float] = []
            acked_total = [0]
            load_ref: list[_Load] = []
            last: dict[str, int] = {}
            lock = threading.Lock()

            def on_ack(dev: str, seq: int, t: float) -> None:
                with lock:
                    prev = last.get(dev, 0)
                    if seq <= prev:
                        return
                    last[dev] = seq
                    acked_total[0] += seq - prev
                    pubs = load_ref[0].pub_t[dev] if load_ref else {}
                    for s in range(prev + 1, seq + 1):
                        p = pubs.pop(s, None)
                        if p is not None:
                            lat.append(t - p)

            devs = [MqttDevice(d, s, port=mosquitto or mport, on_ack=on_ack, resend_after_s=30,
                               topic_prefix=prefix if mosquitto else "edgewise").start(
                resume=False) for d, s in creds]
            load = _Load(devs, seconds, rate_per_device, window, spike_every,
                         time.time() - 3 * 3600)
            load_ref.append(load)
            t0, t1 = load.run()
            acked_in_run = acked_total[0]

            def read_metrics() -> str:
                return httpx.get(f"http://127.0.0.1:{hport}/metrics", timeout=30).text

            # whether detection kept up with the load: what it had scored when the load
            # stopped, against what had been stored by then
            at_end = detection_counts(read_metrics())
            for d in devs:
                d.wait_acked(30)
            for d in devs:
                d.stop()
            # alerts come after detection; read them once it has caught up, or given up on
            # it: a spike not yet scored is no missed alert
            waited_from = time.monotonic()
            done, caught_up_s = wait_detection(read_metrics, detect_wait_s)
            if caught_up_s is None:
                progress(f"detection had not caught up {detect_wait_s:g} s after the acks: "
                         f"{done['unscored']:,.0f} of {done['stored']:,.0f} stored readings "
                         f"unscored")
            caught_up_after_s = (None if caught_up_s is None
                                 else round(waited_from - t1 + caught_up_s, 2))
            r = httpx.get(f"http://127.0.0.1:{hport}/v1/alerts",
                          params={"kind": "anomaly", "limit": 10000},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
            alert_lat = []
            for a in r.json():
                p = load.spikes.get((a["device_id"], a["start_ns"]))
                if p is not None:
                    alert_lat.append(a["created_ns"] / 1e9 - p)
            metrics = httpx.get(f"http://127.0.0.1:{hport}/metrics", timeout=30).text
        finally:
            proc.terminate()
            proc.wait(60)
            log.close()
        final = detection_counts(metrics)
        rate = acked_in_run / (t1 - t0)
        return {
            "messages_per_s": round(rate, 1), "readings_per_s": round(rate * 8, 1),
            "offered_messages_per_s": round(load.sent / (t1 - t0), 1),
            "p50_stored_ms": _pct(lat, 50), "p99_stored_ms": _pct(lat, 99),
            # over the spikes that raised an alert only: spikes_missed says how many did not
            "p50_alert_ms": _pct(alert_lat, 50), "p99_alert_ms": _pct(alert_lat, 99),
            "spikes": len(load.spikes), "spike_alerts": len(alert_lat),
            "spikes_missed": len(load.spikes) - len(alert_lat),
            "readings_stored": final["stored"], "readings_scored": final["scored"],
            "readings_unscored": final["unscored"],
            "readings_late_unscored": final["late_unscored"],
            "readings_removed_by_cleaner": final["removed"],
            "stored_at_load_end": at_end["stored"], "scored_at_load_end": at_end["scored"],
            # seconds from the load's end until detection had dealt with every stored
            # reading (an upper bound: acks are waited for first); None: not within the wait
            "detection_caught_up": caught_up_s is not None,
            "detection_caught_up_after_s": caught_up_after_s,
            "acked_messages": acked_in_run,
            "commits": _metric(metrics, "edgewise_commit_seconds_count"),
            "detect_s": round(_metric(metrics, "edgewise_detect_seconds_sum"), 2),
        }


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def check_ingest_options(devices: int, seconds: float, window: int, spike_every: int = 200,
                         mosquitto: int | None = None, consumer: str = "plugin",
                         detect_wait_s: float = 60.0) -> None:
    """Raise :class:`~edgewise.errors.ConfigError` naming the first bad option.

    >>> check_ingest_options(20, 10.0, 200, consumer="junk")
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: --consumer must be one of 'plugin', 'subscriber'. Got 'junk' instead.
    """  # noqa: E501
    import math

    from edgewise.errors import ConfigError
    from edgewise.params import Interval, OneOf

    checks: list[tuple[str, Any, Interval | OneOf]] = [
        ("--devices", devices, Interval(int, 1, None)),
        ("--seconds", seconds, Interval(float, 0, 86400, closed="right")),
        ("--window", window, Interval(int, 1, None)),
        ("spike_every", spike_every, Interval(int, 0, None)),
        ("--mosquitto", mosquitto or 1, Interval(int, 1, 65535)),
        ("--consumer", consumer, OneOf(("plugin", "subscriber"))),
        ("--detect-wait", detect_wait_s, Interval(float, 0, 3600)),
    ]
    for name, value, allowed in checks:
        if not allowed.accepts(value) or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{name} must be {allowed}. Got {value!r} instead.")


def run_ingest_bench(
    devices: int = 20, seconds: float = 10.0, window: int = 200, spike_every: int = 200,
    progress: Callable[[str], None] = lambda s: None, mosquitto: int | None = None,
    consumer: str = "plugin", detect_wait_s: float = 60.0,
) -> dict[str, Any]:
    """Run raw, max and half-load runs; return every figure as one dict.

    With ``mosquitto`` (a port on 127.0.0.1) the broker is that Mosquitto instead of
    amqtt, and the gateway runs in external-broker mode. ``consumer`` picks how the
    embedded broker hands telemetry to the gateway: ``"plugin"`` or ``"subscriber"``.
    After each gateway run's load, detection gets at most ``detect_wait_s`` seconds to
    score what was stored before the alerts are read (the result says whether it did).

    Every argument is checked before anything runs
    (:class:`~edgewise.errors.ConfigError`); a max-rate run that gets no ack in its
    ``seconds`` leaves no half rate to pace at, and is refused the same way.

    >>> r = run_ingest_bench(devices=1, seconds=0.5)  # doctest: +SKIP
    >>> run_ingest_bench(devices=0)
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: --devices must be an int in the range [1, inf). Got 0 instead.
    """
    check_ingest_options(devices, seconds, window, spike_every, mosquitto, consumer,
                         detect_wait_s)
    ignored = _inherited()
    if ignored:
        progress(f"not passed to the bench's servers (they run with a temporary store and "
                 f"their defaults): {', '.join(ignored)}")
    progress(f"raw broker ceiling: {devices} publishers, {seconds:g} s")
    raw = _raw(devices, seconds, window, mosquitto)
    progress(f"gateway at max rate: {devices} devices, {seconds:g} s")
    full = _gateway(devices, seconds, None, window, spike_every, progress, mosquitto, consumer,
                    detect_wait_s)
    if not full["messages_per_s"] > 0:
        from edgewise.errors import ConfigError

        raise ConfigError(
            f"The gateway acked no message in the {seconds:g} s max-rate run, so there is no "
            f"half rate to measure latency at; give a longer --seconds (10 is the default) "
            f"or run on a less loaded machine.")
    half_rate = full["messages_per_s"] / 2 / devices
    progress(f"gateway at half load: {half_rate * devices:.0f} messages/s")
    half = _gateway(devices, seconds, half_rate, window, spike_every, progress, mosquitto,
                    consumer, detect_wait_s)
    return {
        "broker": f"mosquitto 127.0.0.1:{mosquitto}" if mosquitto else "amqtt (embedded)",
        "consumer": "external subscriber" if mosquitto else consumer,
        "devices": devices, "seconds": seconds, "metrics_per_message": 8, "qos": 1,
        "detect_wait_s": detect_wait_s,
        "raw": raw, "max": full, "half": half,
        "gateway_vs_raw": round(full["readings_per_s"] / raw["readings_per_s"], 3)
        if raw["readings_per_s"] else None,
        "goal_readings_per_s": 50_000, "goal_ratio": 0.5, "goal_p99_stored_ms": 250,
        "gateway_settings": gateway_settings(consumer), "environment_ignored": ignored,
        **machine_fields(),
    }
