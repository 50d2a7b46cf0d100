"""A fleet of centrifugal pumps whose sensors agree with each other, plus labelled faults.

Each pump runs at an operating point (speed set by a slowly wandering setpoint); the
pump affinity laws tie the sensors together: flow ~ speed, head ~ speed², shaft power
~ speed³, so discharge pressure, motor current, bearing temperature and vibration all
move with speed, with realistic sensor noise. Faults are injected with ground truth:

* ``spike``: one reading of one sensor far off (a glitch),
* ``drift``: a sensor's offset grows linearly (calibration drift),
* ``stuck``: a sensor repeats its last value,
* ``bearing_wear``: vibration and bearing temperature trend up over the fault window.

>>> fleet = PumpFleet(n_pumps=2, seed=1)
>>> rows = [fleet.step(1_700_000_000 * 10**9 + i * 10**9) for i in range(3)]
>>> sorted(rows[0][0][1])  # doctest: +NORMALIZE_WHITESPACE
['bearing_temp_c', 'discharge_pressure_bar', 'flow_m3h', 'motor_current_a', 'motor_temp_c',
 'speed_rpm', 'suction_pressure_bar', 'vibration_rms_mms']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FAULT_KINDS", "SENSORS", "Fault", "Pump", "PumpFleet"]

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


@dataclass
class Fault:
    """Ground truth of one injected fault (times in ns, inclusive)."""

    device_id: str
    kind: str
    metric: str
    start_ns: int
    end_ns: int


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
        target_bt = self.ambient + 18.0 + 14.0 * power_frac + 25.0 * self.wear
        target_mt = self.ambient + 20.0 + 30.0 * power_frac
        k = 1.0 - math.exp(-dt_s / 300.0)
        self.bearing_temp += (target_bt - self.bearing_temp) * k
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
        Number of pumps (device ids ``pump-01`` …).
    seed
        Random seed: the same seed gives the same fleet, noise and faults.
    fault_rate_per_h
        Expected faults per pump per hour of simulated time.
    prefix
        Device id prefix.
    """

    def __init__(
        self, n_pumps: int = 20, seed: int = 0, fault_rate_per_h: float = 6.0,
        prefix: str = "pump",
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.pumps = [
            Pump(f"{prefix}-{i + 1:02d}", np.random.default_rng(seed * 1000 + i),
                 rated_rpm=float(self.rng.choice([1450.0, 2950.0])),
                 rated_flow=float(self.rng.uniform(60, 200)),
                 rated_head_bar=float(self.rng.uniform(2.5, 8.0)),
                 rated_current=float(self.rng.uniform(15, 60)),
                 setpoint=float(self.rng.uniform(0.7, 0.95)))
            for i in range(n_pumps)
        ]
        for p in self.pumps:
            p.speed_frac = p.setpoint
        self.fault_rate_per_h = fault_rate_per_h
        self.faults: list[Fault] = []
        self._active: dict[str, Fault] = {}
        self._last_ns: int | None = None

    @property
    def device_ids(self) -> list[str]:
        return [p.device_id for p in self.pumps]

    def _maybe_fault(self, p: Pump, ts_ns: int, dt_s: float) -> None:
        if p.device_id in self._active or self.rng.random() >= self.fault_rate_per_h * dt_s / 3600:
            return
        kind = str(self.rng.choice(FAULT_KINDS))
        metric = {"bearing_wear": "vibration_rms_mms"}.get(
            kind, str(self.rng.choice(list(SENSORS))))
        dur_s = {"spike": 0.0, "drift": 600.0, "stuck": 300.0, "bearing_wear": 1200.0}[kind]
        f = Fault(p.device_id, kind, metric, ts_ns, ts_ns + int(dur_s * 1e9))
        self.faults.append(f)
        self._active[p.device_id] = f

    def step(self, ts_ns: int) -> list[tuple[str, dict[str, float]]]:
        """Sample every pump at ``ts_ns``; return ``[(device_id, {metric: value})]``."""
        dt_s = 1.0 if self._last_ns is None else max((ts_ns - self._last_ns) / 1e9, 1e-3)
        self._last_ns = ts_ns
        out = []
        for p in self.pumps:
            self._maybe_fault(p, ts_ns, dt_s)
            true = p.physics(dt_s)
            obs = {m: v + float(p.rng.normal(0, SENSORS[m][1])) for m, v in true.items()}
            f = self._active.get(p.device_id)
            if f is not None:
                frac = (ts_ns - f.start_ns) / max(f.end_ns - f.start_ns, 1)
                if f.kind == "spike":
                    obs[f.metric] = true[f.metric] + SENSORS[f.metric][1] * float(
                        self.rng.choice([-1, 1])) * float(self.rng.uniform(25, 60))
                elif f.kind == "drift":
                    obs[f.metric] += SENSORS[f.metric][1] * 40 * frac
                elif f.kind == "stuck":
                    obs[f.metric] = p.stuck.setdefault(f.metric, obs[f.metric])
                elif f.kind == "bearing_wear":
                    p.wear = min(1.0, frac)
                if ts_ns >= f.end_ns:
                    del self._active[p.device_id]
                    p.stuck.clear()
                    if f.kind == "bearing_wear":
                        p.wear = 0.0  # the bearing was replaced
            out.append((p.device_id, {m: round(v, 4) for m, v in obs.items()}))
        return out

    def labels(self) -> list[dict[str, object]]:
        """Ground truth of every fault injected so far."""
        return [f.__dict__.copy() for f in self.faults]
