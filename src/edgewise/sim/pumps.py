"""A fleet of centrifugal pumps whose sensors agree with each other, plus labelled faults.

Each pump runs at an operating point (speed set by a slowly wandering setpoint); the
pump affinity laws tie the sensors together: flow ~ speed, head ~ speed², shaft power
~ speed³, so discharge pressure, motor current, bearing temperature and vibration all
move with speed, with realistic sensor noise. Faults are injected with ground truth:

* ``spike``: one reading of one sensor far off (a glitch; 25 to 60 noise standard
  deviations, up or down, never below 0 on a sensor that cannot read below 0),
* ``drift``: a sensor's offset grows linearly (calibration drift),
* ``stuck``: a sensor repeats its last value,
* ``bearing_wear``: vibration and bearing temperature trend up for 20 minutes, then the
  bearing is replaced; the label (``metrics``: both sensors) stays open until the bearing
  has cooled back to within half a noise standard deviation of its no-wear temperature, so
  no reading outside a label carries the fault.

A fault's window ``[start_ns, end_ns]`` holds every reading it moves, on the sensors its
``metrics`` name (``metric`` is the first of them), and no reading after ``end_ns`` is
changed by it.

>>> fleet = PumpFleet(n_pumps=2, seed=1)
>>> rows = [fleet.step(1_700_000_000 * 10**9 + i * 10**9) for i in range(3)]
>>> sorted(rows[0][0][1])  # doctest: +NORMALIZE_WHITESPACE
['bearing_temp_c', 'discharge_pressure_bar', 'flow_m3h', 'motor_current_a', 'motor_temp_c',
 'speed_rpm', 'suction_pressure_bar', 'vibration_rms_mms']
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from edgewise.params import Interval, validate_params

__all__ = ["FAULT_KINDS", "NON_NEGATIVE", "SENSORS", "Fault", "Pump", "PumpFleet"]

#: sensor name -> (unit, noise standard deviation)
SENSORS: dict[str, tuple[str, float]] = {
    "speed_rpm": ("rpm", 3.0),
    "flow_m3h": ("m3/h", 0.6),
    "suction_pressure_bar": ("bar", 0.02),
    "discharge_pressure_bar": ("bar", 0.05),
    "motor_current_a": ("A", 0.25),
    "bearing_temp_c": ("Cel", 0.15),
    "motor_temp_c": ("Cel", 0.2),
    "vibration_rms_mms": ("mm/s", 0.05),
}
FAULT_KINDS = ("spike", "drift", "stuck", "bearing_wear")
#: sensors that cannot read below 0 (speed, flow, absolute pressures, current, an RMS): a
#: spike that would take one below 0 goes up instead, as far
NON_NEGATIVE = frozenset(m for m, (unit, _) in SENSORS.items() if unit != "Cel")
#: thermal time constant of the bearing and motor temperatures, seconds
THERMAL_TAU_S = 300.0
#: a worn bearing's label closes once its extra heat is below this share of the
#: bearing-temperature sensor's noise standard deviation
COOLED_NOISE_SD = 0.5
#: sensors a bearing_wear fault moves (the first is the label's ``metric``)
BEARING_WEAR_METRICS = ("vibration_rms_mms", "bearing_temp_c")
_WEAR_RAMP_S = 1200.0
_FLEET_PARAMS = {
    "n_pumps": Interval(int, 1, None),
    "seed": Interval(int, 0, None),
    "fault_rate_per_h": Interval(float, 0, 3600),
}


@dataclass
class Fault:
    """Ground truth of one injected fault (times in ns, inclusive).

    ``metrics`` names every sensor the fault moves (``metric`` is the first); it defaults
    to ``(metric,)``.

    >>> Fault("pump-01", "drift", "flow_m3h", 0, 10).metrics
    ('flow_m3h',)
    """

    device_id: str
    kind: str
    metric: str
    start_ns: int
    end_ns: int
    metrics: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.metrics:
            self.metrics = (self.metric,)


@dataclass
class Pump:
    """One pump's physical state."""

    device_id: str
    rng: np.random.Generator
    rated_rpm: float = 2950.0
    rated_flow: float = 120.0
    rated_head_bar: float = 4.5
    rated_current: float = 38.0
    setpoint: float = 0.85
    speed_frac: float = 0.85
    bearing_temp: float = 45.0
    motor_temp: float = 55.0
    ambient: float = 22.0
    wear: float = 0.0
    #: the bearing temperature's excess over its no-wear value (°C), part of bearing_temp
    wear_heat: float = 0.0
    stuck: dict[str, float] = field(default_factory=dict)
    offsets: dict[str, float] = field(default_factory=dict)

    def physics(self, dt_s: float) -> dict[str, float]:
        """Advance ``dt_s`` seconds and return the true (noise-free) sensor values."""
        if self.rng.random() < 0.002 * dt_s:  # an operator changes the setpoint
            self.setpoint = float(np.clip(self.rng.normal(0.82, 0.08), 0.55, 1.0))
        self.speed_frac += (self.setpoint - self.speed_frac) * min(1.0, 0.2 * dt_s)
        s = self.speed_frac
        flow = self.rated_flow * s
        head = self.rated_head_bar * s * s
        power_frac = s**3
        current = self.rated_current * (0.25 + 0.75 * power_frac)
        suction = 1.2 - 0.1 * s * s
        target_bt = self.ambient + 18.0 + 14.0 * power_frac
        target_mt = self.ambient + 20.0 + 30.0 * power_frac
        k = 1.0 - math.exp(-dt_s / THERMAL_TAU_S)
        # the wear's heat lags like the rest, kept apart so its decay after the bearing is
        # replaced is known (the sum is the same first-order lag on the summed target)
        base_bt = self.bearing_temp - self.wear_heat
        base_bt += (target_bt - base_bt) * k
        self.wear_heat += (25.0 * self.wear - self.wear_heat) * k
        self.bearing_temp = base_bt + self.wear_heat
        self.motor_temp += (target_mt - self.motor_temp) * k
        vib = 0.8 + 1.6 * s * s + 6.0 * self.wear**1.5
        return {
            "speed_rpm": self.rated_rpm * s,
            "flow_m3h": flow,
            "suction_pressure_bar": suction,
            "discharge_pressure_bar": suction + head,
            "motor_current_a": current,
            "bearing_temp_c": self.bearing_temp,
            "motor_temp_c": self.motor_temp,
            "vibration_rms_mms": vib,
        }


class PumpFleet:
    """``n_pumps`` pumps sampled together, with faults injected at random (seeded).

    Parameters
    ----------
    n_pumps
        Number of pumps (device ids ``pump-01`` …), at least 1.
    seed
        Random seed, an int >= 0: the same seed gives the same fleet, noise and faults.
        The fleet's fault stream and each pump's stream are spawned apart from it
        (:class:`numpy.random.SeedSequence`), so no two of them, in this fleet or in a
        fleet of another seed, share a stream.
    fault_rate_per_h
        Expected faults per pump per hour of simulated time, in [0, 3600].
    prefix
        Device id prefix.

    >>> PumpFleet(2, seed=-1)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'seed' parameter of PumpFleet must be an int in the range [0, inf). Got -1 instead.
    """  # noqa: E501

    def __init__(
        self, n_pumps: int = 20, seed: int = 0, fault_rate_per_h: float = 6.0,
        prefix: str = "pump",
    ) -> None:
        validate_params(_FLEET_PARAMS, {"n_pumps": n_pumps, "seed": seed,
                                            "fault_rate_per_h": fault_rate_per_h}, self)
        streams = np.random.SeedSequence(seed).spawn(n_pumps + 1)
        self.rng = np.random.default_rng(streams[0])
        self.pumps = [
            Pump(f"{prefix}-{i + 1:02d}", np.random.default_rng(streams[i + 1]),
                 rated_rpm=float(self.rng.choice([1450.0, 2950.0])),
                 rated_flow=float(self.rng.uniform(60, 200)),
                 rated_head_bar=float(self.rng.uniform(2.5, 8.0)),
                 rated_current=float(self.rng.uniform(15, 60)),
                 setpoint=float(self.rng.uniform(0.7, 0.95)))
            for i in range(n_pumps)
        ]
        for p in self.pumps:
            p.speed_frac = p.setpoint
        self.fault_rate_per_h = float(fault_rate_per_h)
        self.faults: list[Fault] = []
        self._active: dict[str, Fault] = {}
        self._wear_until: dict[str, int] = {}  # device -> end of its bearing's wear ramp
        self._last_ns: int | None = None

    @property
    def device_ids(self) -> list[str]:
        return [p.device_id for p in self.pumps]

    def _maybe_fault(self, p: Pump, ts_ns: int, dt_s: float) -> None:
        if p.device_id in self._active or self.rng.random() >= self.fault_rate_per_h * dt_s / 3600:
            return
        kind = str(self.rng.choice(FAULT_KINDS))
        if kind == "bearing_wear":
            # open-ended until the bearing is replaced and has cooled (see _replace_bearing)
            f = Fault(p.device_id, kind, BEARING_WEAR_METRICS[0], ts_ns,
                      ts_ns + int(_WEAR_RAMP_S * 1e9), metrics=BEARING_WEAR_METRICS)
            self._wear_until[p.device_id] = f.end_ns
        else:
            dur_s = {"spike": 0.0, "drift": 600.0, "stuck": 300.0}[kind]
            metric = str(self.rng.choice(list(SENSORS)))
            f = Fault(p.device_id, kind, metric, ts_ns, ts_ns + int(dur_s * 1e9))
        self.faults.append(f)
        self._active[p.device_id] = f

    def _replace_bearing(self, p: Pump, f: Fault, ts_ns: int) -> None:
        """The worn bearing is replaced at ``ts_ns``: vibration is back at once, the extra
        heat decays with the thermal lag; the label ends when it is below
        ``COOLED_NOISE_SD`` noise standard deviations (it decays by exp(-t/τ) exactly)."""
        del self._wear_until[p.device_id]
        p.wear = 0.0
        floor = COOLED_NOISE_SD * SENSORS["bearing_temp_c"][1]
        heat = abs(p.wear_heat)
        cool_s = THERMAL_TAU_S * math.log(heat / floor) if heat > floor else 0.0
        f.end_ns = ts_ns + math.ceil(cool_s) * 10**9

    def step(self, ts_ns: int) -> list[tuple[str, dict[str, float]]]:
        """Sample every pump at ``ts_ns``; return ``[(device_id, {metric: value})]``.

        A fault acts on the samples with ``start_ns <= ts_ns <= end_ns`` only, whatever the
        sampling period. A numpy integer ``ts_ns`` (from ``np.arange``) is taken as an int:
        the fault times it gives are plain ints, so :meth:`labels` go to JSON as they are.
        """
        if isinstance(ts_ns, numbers.Integral):
            ts_ns = int(ts_ns)  # an np.int64 start_ns made json.dumps(labels()) raise
        dt_s = 1.0 if self._last_ns is None else max((ts_ns - self._last_ns) / 1e9, 1e-3)
        self._last_ns = ts_ns
        out = []
        for p in self.pumps:
            f = self._active.get(p.device_id)
            wearing = p.device_id in self._wear_until  # its end is set at the replacement
            if f is not None and ts_ns > f.end_ns and not wearing:  # over: it changes nothing
                del self._active[p.device_id]
                p.stuck.clear()
            self._maybe_fault(p, ts_ns, dt_s)
            f = self._active.get(p.device_id)
            wear_until = self._wear_until.get(p.device_id)
            if f is not None and wear_until is not None:  # before physics: no tick late
                p.wear = min(1.0, (ts_ns - f.start_ns) / max(wear_until - f.start_ns, 1))
            true = p.physics(dt_s)
            obs = {m: v + float(p.rng.normal(0, SENSORS[m][1])) for m, v in true.items()}
            if f is not None:
                frac = (ts_ns - f.start_ns) / max(f.end_ns - f.start_ns, 1)
                if f.kind == "spike":
                    sign = float(self.rng.choice([-1, 1]))
                    size = SENSORS[f.metric][1] * float(self.rng.uniform(25, 60))
                    if true[f.metric] - size < 0 and f.metric in NON_NEGATIVE:
                        sign = 1.0  # no negative vibration, flow or absolute pressure
                    obs[f.metric] = true[f.metric] + sign * size
                elif f.kind == "drift":
                    obs[f.metric] += SENSORS[f.metric][1] * 40 * frac
                elif f.kind == "stuck":
                    obs[f.metric] = p.stuck.setdefault(f.metric, obs[f.metric])
                elif wear_until is not None and ts_ns >= wear_until:
                    self._replace_bearing(p, f, ts_ns)
            out.append((p.device_id, {m: round(v, 4) for m, v in obs.items()}))
        return out

    def fault_metrics(self, device_id: str, ts_ns: int) -> tuple[str, ...]:
        """The sensors a fault of ``device_id`` moves at ``ts_ns`` (the time :meth:`step`
        was last called with), ``()`` when no fault's window holds it.

        >>> fleet = PumpFleet(1, fault_rate_per_h=3600.0, seed=0)
        >>> _ = fleet.step(10**9)
        >>> fleet.fault_metrics("pump-01", 10**9) == fleet.faults[0].metrics
        True
        """
        f = self._active.get(device_id)
        return f.metrics if f is not None and f.start_ns <= ts_ns <= f.end_ns else ()

    def labels(self, until_ns: int | Mapping[str, int] | None = None
               ) -> list[dict[str, object]]:
        """Ground truth of every fault injected so far (``metrics`` as a list, for JSON).

        A bearing still wearing or cooling has its end as far as is known now. With
        ``until_ns`` (the last sample, when the run stops) a fault still running ends
        there and one that begins later is left out: a later run on the same data goes on
        from there with other samples, which the fault's planned end must not claim.
        ``until_ns`` may be a mapping ``{device_id: ns}``, a cut per device (the newest
        sample each device had stored); a device it does not name has no labels.

        >>> fleet = PumpFleet(1, fault_rate_per_h=3600.0, seed=0)
        >>> _ = fleet.step(10**9)
        >>> [f["end_ns"] for f in fleet.labels(until_ns=fleet.last_ns)] == [10**9]
        True
        >>> fleet.labels(until_ns={"pump-01": 10**9 - 1}), fleet.labels(until_ns={})
        ([], [])
        """
        out = [f.__dict__ | {"metrics": list(f.metrics)} for f in self.faults]
        if until_ns is None:
            return out
        cut = until_ns if isinstance(until_ns, Mapping) else dict.fromkeys(
            self.device_ids, until_ns)
        kept = []
        for f in out:
            end = cut.get(str(f["device_id"]))
            if end is not None and int(f["start_ns"]) <= end:
                kept.append(f | {"end_ns": min(int(f["end_ns"]), end)})
        return kept

    @property
    def last_ns(self) -> int | None:
        """The time of the last sample :meth:`step` made (``None`` before the first)."""
        return self._last_ns
