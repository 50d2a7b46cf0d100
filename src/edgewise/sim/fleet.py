"""Run a simulated pump fleet against a gateway: one real MQTT client per pump.

Besides the faults of :class:`~edgewise.sim.pumps.PumpFleet`, the transport is imperfect
the way field devices are: samples go missing (a sensor drops out, a tick is skipped),
messages are sent twice, and some are sent out of order. Ground truth of the faults is
kept in ``fleet.labels()``; a reading of a sensor inside its fault's window is never
skipped or dropped, so every label holds a sent reading of the sensors it names.
:meth:`FleetRunner.labels` cuts each device's labels at its newest reading the gateway
acknowledged (committed), so no label reaches past what was stored.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence

from edgewise.errors import InvalidParameterError
from edgewise.sim.device import MqttDevice
from edgewise.sim.pumps import PumpFleet

__all__ = ["FleetRunner"]


class FleetRunner:
    """Drive ``fleet`` through MQTT devices in a background thread.

    Parameters
    ----------
    fleet
        The pumps to simulate.
    credentials
        ``[(device_id, secret)]`` of the fleet's pumps, each at most once, in any order:
        each pump's samples go out under its own id (a pump not named is stepped, not
        sent, and has no labels); an id that is no pump of the fleet, or one given twice,
        is an :class:`~edgewise.errors.InvalidParameterError`.
    host, port, tls_ca
        The broker.
    period_s
        Seconds between samples (real time), kept to the whole microsecond (the gateway
        stores times to the microsecond, so a fault's times are stored ones): 1/3 runs
        every 0.333333 s; one under a microsecond is refused.
    backfill_s
        History sent at start (fast), so charts and detectors have something at once: a
        finite number of seconds, 0 or more.
    start_after_ns
        The newest reading time the gateway already holds for these devices (a restart on
        the same data): the history starts after it, so nothing is sent back-dated over
        what is stored; when it is less than ``backfill_s`` old only the gap since is
        filled. ``None``: nothing is stored.
    p_gap, p_dropout, p_duplicate, p_swap
        Probabilities per message: skip the sample, drop one sensor, send twice, send
        after the next one. A sample inside a fault's window is not skipped (it is sent
        as it is) and a sensor the fault names is not dropped: the random draws are made
        all the same, so the rest of the stream is what it was. Each in [0, 1].
    """

    def __init__(
        self,
        fleet: PumpFleet,
        credentials: Sequence[tuple[str, str]],
        host: str = "127.0.0.1",
        port: int = 1884,
        *,
        tls_ca: str | None = None,
        period_s: float = 1.0,
        backfill_s: float = 600.0,
        p_gap: float = 0.01,
        p_dropout: float = 0.01,
        p_duplicate: float = 0.01,
        p_swap: float = 0.01,
        seed: int = 0,
        start_after_ns: int | None = None,
    ) -> None:
        step_us = round(period_s * 1e6) if math.isfinite(period_s) else 0
        if step_us < 1:
            raise InvalidParameterError(
                f"period_s must be at least 1e-06 (a whole microsecond). Got {period_s!r} "
                f"instead.", field="period_s", value=period_s)
        if not (math.isfinite(backfill_s) and backfill_s >= 0):
            raise InvalidParameterError(
                f"backfill_s must be a finite number of seconds, 0 or more (e.g. 600). Got "
                f"{backfill_s!r} instead.", field="backfill_s", value=backfill_s)
        for name, p in (("p_gap", p_gap), ("p_dropout", p_dropout),
                        ("p_duplicate", p_duplicate), ("p_swap", p_swap)):
            if not 0.0 <= p <= 1.0:  # NaN too
                raise InvalidParameterError(
                    f"{name} must be a probability in [0, 1] (e.g. 0.01). Got {p!r} "
                    f"instead.", field=name, value=p)
        pumps = fleet.device_ids
        given = [str(d) for d, _ in credentials]
        unknown = [d for d in given if d not in set(pumps)]
        twice = sorted({d for d in given if given.count(d) > 1})
        if unknown or twice:
            bad = unknown[0] if unknown else twice[0]
            why = ("is no pump of the fleet" if unknown else "is given twice")
            raise InvalidParameterError(
                f"credentials name device {bad!r}, which {why}. Give each of the fleet's "
                f"pumps ({', '.join(pumps[:3])}{', ...' if len(pumps) > 3 else ''}) at "
                f"most once: its samples go out under that id.",
                field="credentials", value=bad)
        secret_of = dict(credentials)
        self.fleet = fleet
        # in the fleet's order, each pump under its own id (credentials in another order
        # sent one pump's samples in another's name, where its labels did not say)
        self.devices = [MqttDevice(d, secret_of[d], host, port, tls_ca=tls_ca)
                        for d in pumps if d in secret_of]
        self._by_id = {d.device_id: d for d in self.devices}
        #: nanoseconds between samples: ``period_s`` to the whole microsecond
        self.step_ns = step_us * 1000
        self.period_s = self.step_ns / 1e9
        self.backfill_s = backfill_s
        self.start_after_ns = start_after_ns
        self.p = (p_gap, p_dropout, p_duplicate, p_swap)
        self.rng = random.Random(seed)
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held: dict[str, tuple[float, dict[str, float], int]] = {}
        self._sent_lock = threading.Lock()
        #: per device, ``(seq, sample time in ns)`` of each sent reading, in seq order,
        #: until the gateway's ack covers it; then its time counts in ``_acked_ns``
        self._unacked: dict[str, deque[tuple[int, int]]] = {
            d.device_id: deque() for d in self.devices}
        self._acked_ns: dict[str, int] = {}

    def start(self) -> FleetRunner:
        """Connect every device and start sending. When one cannot connect, those already
        connected are stopped and its :class:`ConnectionError` (naming the reason) raised."""
        started: list[MqttDevice] = []
        try:
            for d in self.devices:
                d.start()
                started.append(d)
        except BaseException:
            for d in started:
                d.stop()
            raise
        self._thread = threading.Thread(target=self._run, name="edgewise-fleet", daemon=True)
        self._thread.start()
        return self

    def _emit(self, ts_ns: int) -> None:
        p_gap, p_dropout, p_dup, p_swap = self.p
        for pump, metrics in self.fleet.step(ts_ns):
            d = self._by_id.get(pump)
            if d is None:  # no credentials given for it: stepped, not sent
                continue
            # the ground truth must hold what is sent: a fault's reading (a spike's only
            # one) is neither skipped nor stripped of its sensor; the draws are made anyway
            faulty = self.fleet.fault_metrics(d.device_id, ts_ns)
            ts = ts_ns / 1e9
            if self.rng.random() < p_gap:
                if not faulty:
                    continue
                # as it is, without the later draws a gap skipped
                self._note_sent(d, d.send(ts, metrics), ts_ns)
                self.sent += 1
                continue
            if self.rng.random() < p_dropout:
                dropped = self.rng.choice(sorted(metrics))
                if dropped not in faulty:
                    metrics.pop(dropped)
            held = self._held.pop(d.device_id, None)
            if held is None and self.rng.random() < p_swap:
                seq = d.reserve_seq()
                self._note_sent(d, seq, ts_ns)  # noted in seq order: its seq comes first
                self._held[d.device_id] = (ts, metrics, seq)  # goes out after the next one
                continue
            seq = d.send(ts, metrics)
            self._note_sent(d, seq, ts_ns)
            self.sent += 1
            if held is not None:
                d.send(*held)
                self.sent += 1
            if self.rng.random() < p_dup:
                with d._lock:
                    payload = d.pending.get(seq)
                if payload is not None:
                    d.publish_raw(d.telemetry_topic, payload)

    def _note_sent(self, d: MqttDevice, seq: int, ts_ns: int) -> None:
        """Keep ``seq``'s sample time until the gateway acknowledges it (seqs come in
        order, a held one's when it is taken)."""
        with self._sent_lock:
            self._note_acked(d)
            self._unacked[d.device_id].append((seq, ts_ns))

    def _note_acked(self, d: MqttDevice, stored_seq: int = 0) -> None:
        """Move the sample times the ack of ``d`` (or ``stored_seq``, when higher) now
        covers into ``_acked_ns`` (under ``_sent_lock``)."""
        acked = max(d.acked, stored_seq)
        sent = self._unacked[d.device_id]
        newest = self._acked_ns.get(d.device_id)
        while sent and sent[0][0] <= acked:
            ts_ns = sent.popleft()[1]
            newest = ts_ns if newest is None else max(newest, ts_ns)
        if newest is not None:
            self._acked_ns[d.device_id] = newest

    def unacked_seqs(self) -> dict[str, list[int]]:
        """Each device's sent seqs no ack it saw covers, oldest first (a device with none
        is left out): what the gateway may have stored after the last ack a device saw,
        to ask its store about once it has stopped (:meth:`labels`).

        >>> FleetRunner(PumpFleet(1), [("pump-01", "s")]).unacked_seqs()
        {}
        """
        with self._sent_lock:
            for d in self.devices:
                self._note_acked(d)
            return {d: [seq for seq, _ in sent] for d, sent in self._unacked.items() if sent}

    def acked_ns(self, stored_seq: Mapping[str, int] | None = None) -> dict[str, int]:
        """Each device's newest sample time (ns) the gateway has acknowledged, so
        committed; a device none of whose readings of this run were acknowledged is left
        out. ``stored_seq`` (see :meth:`labels`) counts as acknowledged too.

        >>> FleetRunner(PumpFleet(1), [("pump-01", "s")]).acked_ns()
        {}
        """
        stored_seq = stored_seq or {}
        with self._sent_lock:
            for d in self.devices:
                self._note_acked(d, int(stored_seq.get(d.device_id, 0)))
            return dict(self._acked_ns)

    def labels(self, stored_seq: Mapping[str, int] | None = None
               ) -> list[dict[str, object]]:
        """The fleet's fault labels (:meth:`PumpFleet.labels`), each device's cut at its
        newest acknowledged reading (:meth:`acked_ns`); a device's fault that began after
        it is left out. What was sent and never acknowledged (the last acks wait at most
        2 s in :meth:`stop`) was not stored: a later run on the same data goes on after
        the newest stored reading, and its readings must not fall inside these labels.

        ``stored_seq`` ``{device_id: seq}``: each device's newest seq the gateway's store
        holds (the highest of :meth:`unacked_seqs` it stored, or its seq watermark), read
        once the gateway has stopped; the readings up to it count as acknowledged. The
        gateway goes on storing what was sent after the last ack a device saw (a demo
        stopped during its history stored some 15 s of readings more), and a label cut at
        that ack left those readings of its fault unlabelled. Not the watermark alone: a
        reading sent after the next one (a swap) may be left unread by the stopping
        gateway while the next one was stored, and that stored reading, above the seq
        gap, was left outside its fault's label. The reading of the gap was not stored,
        so a label over its time holds no stored reading that is not of its fault.

        >>> r = FleetRunner(PumpFleet(1, fault_rate_per_h=3600.0), [("pump-01", "s")])
        >>> _ = r.fleet.step(10**9)  # a fault begins, and nothing is acknowledged
        >>> len(r.fleet.labels()), r.labels()
        (1, [])
        """
        return self.fleet.labels(until_ns=self.acked_ns(stored_seq))

    def _send_held(self) -> None:
        """Send the readings held back to go after the next one (a swap): at a stop there
        is no next one, and their seqs are taken, so without them nothing after is acked."""
        for d in self.devices:
            held = self._held.pop(d.device_id, None)
            if held is not None:
                d.send(*held)
                self.sent += 1

    def first_ns(self, now_ns: int) -> int:
        """Time of the first sample sent when started at ``now_ns``: ``backfill_s`` back,
        but never at or before ``start_after_ns``; rounded up to a whole millisecond.

        >>> r = FleetRunner(PumpFleet(1), [("pump-01", "s")], backfill_s=600,
        ...                 start_after_ns=10**12)
        >>> r.first_ns(10**12 + 60 * 10**9) == 10**12 + 10**9  # 1 s after the stored data
        True
        >>> r.first_ns(10**12 + 3600 * 10**9) == 10**12 + 3000 * 10**9  # 600 s back
        True
        """
        t = now_ns - int(self.backfill_s * 1e9)
        if self.start_after_ns is not None:
            t = max(t, self.start_after_ns + self.step_ns)
        # whole milliseconds: readings go out as float seconds, which the gateway keeps to
        # the microsecond, so a fault's ground-truth times (in ns) are the stored ones
        return -(-t // 10**6) * 10**6

    def _run(self) -> None:
        now = time.time_ns()
        step = self.step_ns
        t = self.first_ns(now)
        while t < now and not self._stop.is_set():  # history, as fast as acks allow
            self._emit(t)
            t += step
            if sum(len(d.pending) for d in self.devices) > 5000:
                time.sleep(0.05)
        # stored data newer than this clock (clocks differ): wait, never send ahead of time
        self._stop.wait(max(0.0, (t - time.time_ns()) / 1e9))
        while not self._stop.is_set():
            self._emit(t)
            for d in self.devices:
                d.tick()
            t += step
            self._stop.wait(max(0.0, (t - time.time_ns()) / 1e9))

    def stop(self) -> None:
        """Stop sending, give the last acks a moment, disconnect."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._thread is None or not self._thread.is_alive():
            self._send_held()
        # one shared moment for the last acks: two seconds per device, one after the other,
        # kept a stopped 200-pump demo waiting up to 400 s
        deadline = time.monotonic() + 2.0
        for d in self.devices:
            d.wait_acked(max(0.0, deadline - time.monotonic()))
            d.stop()
