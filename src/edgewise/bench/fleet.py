"""Alert quality of the gateway on a simulated pump fleet, per level detector.

The fleet (:class:`~edgewise.sim.pumps.PumpFleet`: eight sensors per pump read once a
second, operators changing setpoints, spikes, drifts, stuck sensors and bearing wear
injected with ground truth) goes through the gateway's own detection: the same
:class:`~edgewise.gateway.pipeline.Pipeline` (stream cleaner, one
:class:`~edgewise.detect.StateAware` per metric over the level detector, the device's
multivariate detector, alert merging), without the transports. Every detector sees the same
readings. Beside the fleet, the gateway's per-metric scoring alone (the level detector and
the fast-stream gate) scores white noise read once a second (one stream per pump), the
floor of its false alarms. An alert is true when it
overlaps a fault of its device (or starts within ``tolerance_s`` after one ends); a fault
is found when a true alert overlaps it, and named when such an alert's drivers include a
sensor the fault moves (bearing wear moves two).

>>> r = bench_fleet(["ewzscore"], pumps=2, hours=0.1, seed=1, fault_rate_per_h=6.0)
>>> row = r["detectors"][0]
>>> row["detector"], row["device_hours"], row["faults"] >= row["found"] >= row["named"]
('ewzscore', 0.2, True)
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LABEL_DELAY_S", "MAX_HOURS", "MAX_PUMPS", "MAX_PUMP_HOURS", "bench_fleet",
           "check_fleet_options"]


def _simulate(pumps: int, steps: int, seed: int, fault_rate_per_h: float,
              t0_ns: int) -> tuple[list[str], list[str], np.ndarray, list[Any]]:
    """The fleet's readings as an array (step, pump, sensor) and its faults."""
    from edgewise.sim.pumps import SENSORS, PumpFleet

    fleet = PumpFleet(pumps, seed=seed, fault_rate_per_h=fault_rate_per_h)
    metrics = list(SENSORS)
    data = np.empty((steps, pumps, len(metrics)))
    for i in range(steps):
        for j, (_, row) in enumerate(fleet.step(t0_ns + i * 10**9)):
            data[i, j] = [row[m] for m in metrics]
    return fleet.device_ids, metrics, data, fleet.faults


#: how long after an alert starts the simulated operator of ``feedback`` labels it
LABEL_DELAY_S = 600.0


def _overlaps(alert: Any, faults: list[Any], tol_ns: int) -> bool:
    """Whether ``alert`` overlaps a fault of its device (or starts within ``tol_ns`` after
    one ends): a true alarm, as :func:`_grade` counts it."""
    return any(f.device_id == alert.device_id and alert.start_ns <= f.end_ns + tol_ns
               and alert.end_ns >= f.start_ns for f in faults)


def _run(detector: str, devices: list[str], metrics: list[str], data: np.ndarray,
         t0_ns: int, fast_gate: bool = True, cross_gate: bool = True,
         fleet_prior: bool = True, feedback: bool = False, faults: list[Any] | None = None,
         tol_ns: int = 120 * 10**9,
         label_delay_s: float = LABEL_DELAY_S) -> tuple[list[Any], float, dict[str, int]]:
    """Alerts raised by the gateway's detection over ``data``; seconds it took; what the
    simulated operator did (``feedback``: live false-alarm feedback on, and an operator
    who labels each alert ``label_delay_s`` of device time after it starts, through
    :meth:`~edgewise.alerts.AlertManager.label`: ``false_alarm`` when it overlaps none of
    ``faults``, else ``true_alarm``)."""
    from edgewise.config import Settings
    from edgewise.gateway.pipeline import Pipeline
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    ops = {"labelled_false": 0, "labelled_true": 0, "suppressed": 0}
    with tempfile.TemporaryDirectory(prefix="edgewise-fleet-") as tmp:
        store = open_store(f"duckdb:///{Path(tmp) / 'fleet.duckdb'}")
        settings = Settings(data_dir=Path(tmp), detector=detector, fleet_prior=fleet_prior,
                            alert_feedback=feedback)
        pipe = Pipeline(store, settings,
                        gap_grace_s=0.0, detect_async=False, fast_gate=fast_gate,
                        cross_gate=True if cross_gate else None)
        to_label: list[Any] = []  # new alerts, in the order raised (so by start, nearly)
        if feedback:
            counted = pipe.alerts.on_alert

            def on_alert(alert: Any) -> None:
                if callable(counted):
                    counted(alert)
                if alert.kind == "anomaly":
                    to_label.append(alert)

            pipe.alerts.on_alert = on_alert
        delay_ns = int(label_delay_s * 1e9)
        try:
            t = time.perf_counter()
            for i in range(data.shape[0]):
                ts = t0_ns + i * 10**9
                pipe.detect([Reading(d, m, ts, float(data[i, j, k]))
                             for j, d in enumerate(devices) for k, m in enumerate(metrics)])
                while to_label and to_label[0].start_ns + delay_ns <= ts:
                    alert = to_label.pop(0)  # the held alert: its span as it stands now
                    if alert.merged_into is not None:
                        continue  # the alert it joined is labelled on its own turn
                    verdict = ("true_alarm" if _overlaps(alert, faults or [], tol_ns)
                               else "false_alarm")
                    pipe.alerts.label(alert.id, verdict, by="bench-operator")
                    ops["labelled_" + verdict.split("_")[0]] += 1
            pipe.alerts.flush(force=True)
            seconds = time.perf_counter() - t
            alerts = store.list_alerts(kind="anomaly", limit=10**9)
            ops["suppressed"] = int(pipe.metrics.get("edgewise_alerts_suppressed_total"))
        finally:
            pipe.close()
            store.close()
    return alerts, seconds, ops


def _covered(alerts: list[Any]) -> float:
    """Seconds of device time inside an alert, overlaps counted once, each alert at least
    its one reading (1 s).

    >>> from types import SimpleNamespace as A
    >>> _covered([A(device_id="p", start_ns=0, end_ns=9 * 10**9),
    ...           A(device_id="p", start_ns=5 * 10**9, end_ns=5 * 10**9),
    ...           A(device_id="q", start_ns=0, end_ns=0)])
    11.0
    """
    total = 0
    spans: dict[str, list[tuple[int, int]]] = {}
    for a in alerts:
        spans.setdefault(a.device_id, []).append((a.start_ns, a.end_ns + 10**9))
    for items in spans.values():
        end = None
        for a, b in sorted(items):
            if end is None or a > end:
                total += b - a
                end = b
            elif b > end:
                total += b - end
                end = b
    return total / 1e9


def _by_hour(starts_ns: list[int], t0_ns: int, steps: int, devices: int) -> list[float]:
    """Alerts starting in each hour of the run (a last partial hour pro rata), per
    device-hour.

    >>> _by_hour([0, 10**9, 3600 * 10**9], 0, 5400, 2)
    [1.0, 1.0]
    """
    hours = -(-steps // 3600)
    counts = [0] * hours
    for t in starts_ns:
        counts[min(hours - 1, (t - t0_ns) // (3600 * 10**9))] += 1
    span = [min(3600, steps - 3600 * h) / 3600 for h in range(hours)]
    return [round(c / (devices * s), 3) for c, s in zip(counts, span, strict=True)]


def _grade(alerts: list[Any], faults: list[Any], tol_ns: int) -> dict[str, Any]:
    true = 0
    false_alerts: list[Any] = []
    false_drivers: Counter[str] = Counter()
    found: set[int] = set()
    named: set[int] = set()
    delays: list[float] = []
    for a in alerts:
        hit = [i for i, f in enumerate(faults) if f.device_id == a.device_id
               and a.start_ns <= f.end_ns + tol_ns and a.end_ns >= f.start_ns]
        true += bool(hit)
        if not hit:
            false_alerts.append(a)
            if a.drivers:
                false_drivers[max(a.drivers, key=a.drivers.get)] += 1
        for i in hit:
            found.add(i)
            if any(m in a.drivers for m in faults[i].metrics):  # bearing wear moves two
                named.add(i)
    for f in faults:
        starts = [a.start_ns for a in alerts if a.device_id == f.device_id
                  and a.start_ns <= f.end_ns + tol_ns and a.end_ns >= f.start_ns]
        if starts:
            delays.append(max(min(starts) - f.start_ns, 0) / 1e9)
    return {"alerts": len(alerts), "true_alerts": true, "false_alerts": len(alerts) - true,
            # device-seconds under an alert (a reading's alert counts 1 s): what merging
            # false alarms into long alerts would hide from the counts above
            "alert_seconds": _covered(alerts),
            # ... of which under false alerts: a fault's own alert may rightly last as long
            # as the fault (the bench's faults cover about 38 % of device time)
            "false_alert_seconds": _covered(false_alerts),
            "false_starts_ns": [a.start_ns for a in false_alerts],
            "faults": len(faults), "found": len(found), "named": len(named),
            "median_delay_s": float(np.median(delays)) if delays else None,
            # what the false alerts blamed most: the top driver of each, counted
            "false_top_drivers": dict(false_drivers.most_common(3))}


def _noise_alarms(detector: str, streams: int, steps: int, seed: int, gap: int = 60,
                  fast_gate: bool = True) -> int:
    """Alarms (runs of scores at or above the threshold, apart by more than ``gap``
    readings, as alerts merge) of the gateway's per-metric scoring on white noise read once
    a second: the level detector, then the fast-stream gate, as in the pipeline."""
    from edgewise.detect.base import DEFAULT_THRESHOLD
    from edgewise.gateway.fast_streams import FastStreamGate
    from edgewise.gateway.pipeline import per_metric_factory

    rng = np.random.default_rng(seed)
    n = 0
    for _ in range(streams):
        x = rng.standard_normal((steps, 1))
        s = per_metric_factory(detector)().score_many(x)
        if fast_gate:
            gate = FastStreamGate(threshold=DEFAULT_THRESHOLD)
            s = [gate.observe(("noise", "x"), i * 10**9, float(x[i, 0]), float(v))
                 for i, v in enumerate(s)]
        on = np.flatnonzero(np.asarray(s) >= DEFAULT_THRESHOLD)
        n += int(on.size > 0) + int((np.diff(on) > gap).sum())
    return n


#: the longest simulation bench_fleet runs: the readings are held in memory
MAX_HOURS = 1000.0
#: the most pumps bench_fleet simulates (each one a random stream and a detector per sensor)
MAX_PUMPS = 10_000
#: the most pump-hours (pumps x hours) bench_fleet simulates: the readings (8 a pump a
#: second) are held in memory, so as many as one pump for :data:`MAX_HOURS` (230 MB)
MAX_PUMP_HOURS = 1000.0


def check_fleet_options(detectors: Sequence[str], *, pumps: int, hours: float, seed: int,
                        fault_rate_per_h: float, tolerance_s: float = 120.0) -> None:
    """Raise :class:`~edgewise.errors.ConfigError` naming the first bad option, before
    anything is simulated.

    >>> check_fleet_options(["ewzscore"], pumps=2, hours=1.0, seed=3,
    ...                     fault_rate_per_h=float("nan"))
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: --fault-rate must be a finite number in [0, 3600] faults per pump-hour. Got nan instead.
    """  # noqa: E501
    import math

    from edgewise.detect import LEVEL_DETECTORS, StateAware
    from edgewise.errors import ConfigError

    if not detectors:
        raise ConfigError("--detectors must name at least one level detector (as `edgewise "
                          "serve --detector`). Got none.")
    for name in detectors:  # named here: per_metric_factory names serve's --detector
        if name not in LEVEL_DETECTORS:
            raise ConfigError(f"--detectors names {name!r}, which is not a level detector "
                              "`edgewise serve --detector` takes. Use one of the one-metric "
                              f"level detectors: {', '.join(LEVEL_DETECTORS)}.")
    if isinstance(pumps, bool) or not isinstance(pumps, int) or pumps < 1:
        raise ConfigError(f"pumps must be at least 1. Got {pumps} instead.")
    if pumps > MAX_PUMPS:
        raise ConfigError(f"pumps must be at most {MAX_PUMPS}. Got {pumps} instead.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be an int >= 0. Got {seed!r} instead.")
    if not hours > 0:  # NaN too
        raise ConfigError(f"hours must be above 0. Got {hours} instead.")
    if not 0.5 / 3600 <= hours <= MAX_HOURS:
        raise ConfigError(f"hours must give at least one reading (one a second) and at most "
                          f"{MAX_HOURS:g} h, held in memory: a number in "
                          f"[{0.5 / 3600:.6f}, {MAX_HOURS:g}]. Got {hours} instead.")
    if pumps * hours > MAX_PUMP_HOURS:
        raise ConfigError(f"pumps x hours must be at most {MAX_PUMP_HOURS:g} pump-hours, held "
                          f"in memory. Got {pumps} x {hours:g} = {pumps * hours:g} instead.")
    for name in detectors:  # one built now: a package it needs that is missing fails here
        try:
            StateAware(base=name)
        except ImportError as exc:
            others = ", ".join(d for d in LEVEL_DETECTORS if d != name)
            raise ConfigError(f"--detectors names {name!r}, which cannot be built here "
                              f"({exc}); or use another one-metric level detector: "
                              f"{others}.") from None
    if not 0 <= fault_rate_per_h <= 3600:
        raise ConfigError(f"--fault-rate must be a finite number in [0, 3600] faults per "
                          f"pump-hour. Got {fault_rate_per_h} instead.")
    if not (0 <= tolerance_s and math.isfinite(tolerance_s)):
        raise ConfigError(f"tolerance_s must be a finite number >= 0. Got {tolerance_s} "
                          f"instead.")


def bench_fleet(
    detectors: Sequence[str] = ("context-likelihood", "ewzscore"),
    *,
    pumps: int = 20,
    hours: float = 2.0,
    seed: int = 3,
    fault_rate_per_h: float = 2.0,
    tolerance_s: float = 120.0,
    fast_gate: Sequence[bool] = (True,),
    cross_gate: Sequence[bool] = (True,),
    fleet_prior: Sequence[bool] = (True,),
    feedback: Sequence[bool] = (False,),
    on_detector: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Alerts, false alerts per device-hour and faults found, for each level detector.

    ``pumps`` pumps read once a second for ``hours`` hours, with ``fault_rate_per_h``
    faults per pump-hour (seeded by ``seed``); each detector runs once per value of
    ``fast_gate`` (the gateway's fast-stream gate on or off, see
    :mod:`edgewise.gateway.fast_streams`) and, where the fast gate is on, of ``cross_gate``
    (the cross-sensor gate, :mod:`edgewise.gateway.cross_sensor`; it needs the fast gate)
    and, where that is on, of ``fleet_prior`` (the cross-sensor gate's fleet prior), and
    of ``feedback`` (live false-alarm feedback, with an operator who labels each alert
    :data:`LABEL_DELAY_S` after it starts: false alarm when it overlaps no fault);
    ``on_detector`` gets each row as it is done.
    Raises :class:`~edgewise.errors.ConfigError` for a name the gateway does not take (see
    :data:`edgewise.detect.LEVEL_DETECTORS`), before simulating anything.
    """
    check_fleet_options(detectors, pumps=pumps, hours=hours, seed=seed,
                        fault_rate_per_h=fault_rate_per_h, tolerance_s=tolerance_s)
    steps = round(hours * 3600)
    t0_ns = 1_700_000_000 * 10**9
    devices, metrics, data, faults = _simulate(pumps, steps, seed, fault_rate_per_h, t0_ns)
    device_hours = pumps * steps / 3600
    rows = []
    for name in detectors:
        runs = [(g, c, p, f) for g in fast_gate for c in (cross_gate if g else (False,))
                for p in (fleet_prior if c else (False,)) for f in feedback]
        for gate, cross, prior, fb in runs:
            alerts, seconds, ops = _run(name, devices, metrics, data, t0_ns, fast_gate=gate,
                                        cross_gate=cross, fleet_prior=prior, feedback=fb,
                                        faults=faults, tol_ns=int(tolerance_s * 1e9))
            row = {"detector": name, "fast_gate": gate, "cross_gate": cross,
                   "fleet_prior": prior, "feedback": fb,
                   "device_hours": round(device_hours, 3),
                   **_grade(alerts, faults, int(tolerance_s * 1e9)),
                   "seconds": round(seconds, 1)}
            if fb:  # what the simulated operator labelled, and the anomalies held back
                row.update(ops)
            row["false_alerts_per_device_hour"] = round(row["false_alerts"] / device_hours, 3)
            # the same by the fleet's hour of age (a new fleet's first hour is its worst:
            # nothing has been learned yet)
            false_starts = row.pop("false_starts_ns")
            row["false_alerts_per_device_hour_by_hour"] = _by_hour(
                false_starts, t0_ns, steps, pumps)
            later = [t for t in false_starts if t >= t0_ns + 3600 * 10**9]
            row["false_alerts_per_device_hour_after_first_hour"] = (
                round(len(later) / (pumps * (steps - 3600) / 3600), 3) if steps > 3600 else None)
            row["recall"] = round(row["found"] / row["faults"], 3) if row["faults"] else None
            row["alert_time_share"] = round(row.pop("alert_seconds") / (device_hours * 3600), 4)
            row["false_alert_time_share"] = round(
                row.pop("false_alert_seconds") / (device_hours * 3600), 4)
            # the same scoring on white noise, one stream per pump: what a fault-free sensor
            # read once a second costs in alarms
            row["noise_alarms_per_stream_hour"] = round(
                _noise_alarms(name, pumps, steps, seed, fast_gate=gate) / device_hours, 3)
            rows.append(row)
            if on_detector is not None:
                on_detector(row)
    return {"pumps": pumps, "hours": hours, "seed": seed, "fault_rate_per_h": fault_rate_per_h,
            "tolerance_s": tolerance_s, "readings": int(data.size), "detectors": rows}
