"""Cross-sensor gate: on a device read more than once a minute, an alarm must also be a
break from what the device's other sensors say, so an operating change that moves them
all together is not a fault.

On a pump, an operator's setpoint change moves speed, flow, pressures and current at once,
and the temperatures after them. Each sensor alone leaves its running level by far more
than 3 standard deviations, so the fast-stream gate's magnitude test
(:mod:`edgewise.gateway.fast_streams`) lets the per-metric detectors' alarms through, and
the device's Hotelling T² alarms as well. What sets a fault apart is that it breaks the
sensors' agreement: a glitch, a drifting sensor, a flow that drops while the speed holds.

Each device keeps, over its fast level metrics (one row per reading time; a metric
missing from a row counts at its last value), exponentially weighted moments of the
readings and of their fast moves (a reading minus a moving average of about 10 rows).

* **Partners.** Two metrics are partners when their fast moves correlate (at least
  ``partner_corr``): they respond to the same cause at once. A temperature that follows
  the load over minutes is not a partner of the speed, so it cannot make a speed change
  look broken while it catches up. A device that has not yet changed its operating point
  has no partners: its moves are noise.
* **Per-metric scores.** A metric with partners is predicted from them and their squares
  (head ~ speed² over a wide range of operating points) by least squares on the level
  moments; its residual is the reading's distance from the prediction, in residual
  standard deviations. Where that is under ``min_z`` the metric's score is capped at
  ``threshold * z / min_z``, as the fast-stream gate caps a score on the metric's own
  level.
* **A lasting break alarms.** Where the exponentially weighted mean of a metric's
  residual (about 10 rows) is ``break_z`` or more, the metric scores at least the
  threshold: a flow drifting away from what the speed says, a bearing whose vibration
  grows at a steady load. A per-metric level detector, built for level changes, takes a
  slow ramp for normal creep; a ramp away from the partners is not creep. Only the metric
  furthest from its prediction alarms: its partners, predicted from it, are pulled off too.
  Not while that metric and one of its partners read beyond the operating points the
  device has settled at (the range of a moving average of about 100 learned rows, with a
  margin): the prediction there is an extrapolation (a pump run at a speed it never ran
  at), and the score is left as it was.
* **The device's score.** When less than half of a device-wide alarm's attribution is on
  metrics the gate did not explain in that row, it is capped the same way
  (:meth:`CrossSensorGate.cap_device_score`).
* **The fleet's prior.** A device learns its partners from its own operating changes, so
  its first changes, and its first ramps between operating points, would be alarms. The
  gate's devices with the same metrics (the device itself among them, once it has seen
  changes of its own) have seen such changes: where at least 3 of them show the same pair
  as partners (the partner explaining at least half the metric's log variance there, and
  both read above 0 in at least 90 % of their rows, those rows only), the pair's
  elasticity (the slope of the log readings, the same for
  a small pump as for a large one under the affinity laws) is their median, unless they
  disagree (a robust spread over a quarter of it). Each metric gets the partner that
  predicts it best across the fleet. From its 60th row on, a device's reading is also
  explained where it is within ``min_z`` of what that predicts from its partner's reading
  and the device's own log levels; the standard deviation is the device's own noise (from
  second differences, which a change of operating point hardly moves) of both, plus the
  elasticities' spread times the partner's distance from its level. A lasting break
  alarms only where it also lasts under the prior (its running residual at 2 sd or more).

A device is modelled over at most ``max_metrics`` fast level metrics (256), the first
it read: the moments grow with the square of their number (2,000 metrics took 360 MB, a
row of 20,000 asked for a 12 GB array), so metrics past them are left out of the gate,
their scores as the per-metric detectors gave them (as :class:`~edgewise.detect.Mahalanobis`
leaves a device's metrics past its ``max_metrics`` out). A model restored from a state
saved with more is dropped, and the gate learns the device afresh over the first
``max_metrics``.

A metric without partners (at most the 8 most correlated are used), one that has not
moved yet (a constant, a coarse sensor on one value) and a stuck run the fast-stream gate
flagged are left as they are. The gateway teaches the gate every row but those holding a
reading the cleaner flagged as a spike (:meth:`CrossSensorGate.learn`); such a row moves
no running residual either (the spike would move its partners' through their
predictions), and the spike is not kept as the metric's last value. A reading a thousand
times the range its metric was learned over off its running mean is not learned: its
square would swamp the moments (a range, unlike a running sd, does not shrink while a
metric holds one value, as a stopped pump's speed does for hours); rows that stay so far
off for more than 10 rows in a row are the device's new state and are learned, so the gate
never locks itself out of a device. A fault is learned, slowly (about ``1/alpha`` rows of
memory, far longer than it takes to alarm), so a lasting change of the device becomes its
new agreement instead of alarming for good. A metric new to a device that has warmed up
does not reset it: a wider model warms up beside it and takes over, running alarms
included. Until ``warmup`` rows are learned, the device's own model changes no score;
with the fleet's prior on, the prior alone may cap one from the device's 60th row on. The
gate needs a device's metrics read together: a row is learned, and moves the running
residuals, only when more than half the device's metrics (and at least 2) were read at
its timestamp, so a device whose metrics arrive one at a time (each at its own timestamp,
or in two halves) is left to the other detectors, unless the gateway assembles its rows
(``assemble_split_rows``, :mod:`edgewise.gateway.split_rows`): it then observes, caps
and learns each assembled row as a row of one time.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> gate = CrossSensorGate(warmup=50)
>>> both = {"speed", "flow"}
>>> for i in range(1000):                     # speed and flow change setpoint together
...     s = 0.8 + 0.1 * (i // 100 % 2)
...     row = {"speed": 2950 * s + rng.normal(0, 3), "flow": 120 * s + rng.normal(0, 0.6)}
...     _ = gate.observe("p", row, {"speed": 0.0, "flow": 0.0}, both)
...     gate.learn("p")
>>> row = {"speed": 2950 * 0.95, "flow": 120 * 0.95}      # a new setpoint: explained
>>> gate.observe("p", row, {"speed": 1.0, "flow": 1.0}, both)["speed"] < 0.5
True
>>> row = {"speed": 2950 * 0.95, "flow": 120 * 0.8}       # the flow alone drops: a break
>>> gate.observe("p", row, {"speed": 0.0, "flow": 1.0}, both)["flow"]
1.0
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np

from edgewise.detect.base import DEFAULT_THRESHOLD
from edgewise.params import Interval, validate_params

__all__ = ["DEFAULT_MAX_METRICS", "STATE_VERSION", "CrossSensorGate"]

#: the layout of ``CrossSensorGate.devices_`` (saved with the gateway's detector state): a
#: state saved under another is not read, the gate learns afresh
STATE_VERSION = 5

#: the most metrics of a device the gate models (as Mahalanobis's and the gateway's
#: default cap of a device's metric names, EDGEWISE_MAX_METRICS_PER_DEVICE)
DEFAULT_MAX_METRICS = 256
#: relative ridge on the standardised covariance: perfectly collinear sensors still invert
_RIDGE = 1e-6
#: relative ridge on the squares: a curvature the data do not show (two operating points
#: seen) is not extrapolated to a third
_SQUARE_RIDGE = 0.1
#: weight of the moving average whose residual is a row's fast move (about 10 rows)
_FAST = 0.1
#: a device-wide alarm stands when at least this share of it is on unexplained metrics
_DEVICE_SHARE = 0.5
#: a metric is predicted from at most this many partners, the most correlated
_MAX_PARTNERS = 8
#: a reading this many times the range its metric was learned over off its running mean is
#: not learned (a glitch)
_GLITCH_SD = 1e3
#: ... unless the rows stay so off for more than this many rows in a row: the device's new
#: state (a sensor that held one value for its whole life and moves), learned
_GLITCH_RUN = 10
_TINY = 1e-20
#: weight of the exponentially weighted mean of each metric's residual (about 10 rows)
_SMOOTH = 0.1
#: rows a device needs (for its log levels and noise) before the fleet's prior is used
_PRIOR_ROWS = 60
#: devices of the fleet a prior's pair needs: each with the pair as partners of its own
_PRIOR_PEERS = 3
#: rows learned across the fleet between two recomputations of its priors: at least this,
#: and this many per device the gate holds
_PRIOR_REFRESH = 500
_PRIOR_REFRESH_PER_DEVICE = 25
#: weight of the running mean absolute second difference (the noise; plain at first)
_NOISE = 0.01
#: mean |second difference| of white noise, in its standard deviations (sqrt(6) sqrt(2/pi))
_D2_ABS = 1.9544
#: a second difference over this many times the running mean is a move, not noise
_D2_CLIP = 5.0
#: a pair the fleet's devices disagree on (elasticities spread more than this share of
#: their median, robustly) is not a prior
_PRIOR_SPREAD = 0.25
#: share of a metric's log variance its partner must explain on a device for the pair to
#: count there: the device has seen its operating point change, not only noise
_PRIOR_R2 = 0.5
#: share of a device's rows a metric may be read at 0 or below in and still be in the prior
_LOG_BAD = 0.1
#: running prior residual (in its sd) at which a lasting break is lasting for the prior too
_PRIOR_BREAK = 2.0
#: weight of the slow moving average of the learned rows (about 100 rows) whose range per
#: metric is the operating points the device has settled at
_SLOW = 0.01
#: a reading is beyond the operating points seen when it is off that range by more than this
#: share of it plus ``_RANGE_SD`` of the metric's residual sd (its noise)
_RANGE_MARGIN = 0.1
_RANGE_SD = 4.0


@dataclass(slots=True)
class _Device:
    metrics: list[str]
    index: dict[str, int]
    n: int = 0
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    dmom: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # of increments
    last: np.ndarray = field(default_factory=lambda: np.zeros(0))  # last value per metric
    ref: np.ndarray | None = None  # the first learned row: the squares' centre
    fast: np.ndarray | None = None  # a fast moving average of the learned rows
    coef: np.ndarray | None = None  # (d, d): each metric's regression on its partners
    sd: np.ndarray | None = None  # each metric's conditional sd (inf: no partners)
    since: int = 0  # rows learned since coef was computed
    explained: set[str] = field(default_factory=set)  # of the last row observed
    pending: np.ndarray | None = None  # the last row observed, until learned
    smooth: np.ndarray = field(default_factory=lambda: np.zeros(0))  # EW mean residuals
    shadow: _Device | None = None  # a wider model warming up after a new metric came
    # the fleet prior's view: logs of the readings (power laws are straight lines there)
    lcnt: np.ndarray = field(default_factory=lambda: np.zeros(0))  # rows read positive
    lbad: np.ndarray = field(default_factory=lambda: np.zeros(0))  # share read <= 0
    lmean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lcov: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    lprev: np.ndarray | None = None  # the two last learned log rows (NaN: not > 0)
    lprev2: np.ndarray | None = None
    lnoise: np.ndarray = field(default_factory=lambda: np.zeros(0))  # mean |2nd diff|
    nd2: np.ndarray = field(default_factory=lambda: np.zeros(0))  # 2nd differences seen
    psmooth: np.ndarray = field(default_factory=lambda: np.zeros(0))  # EW mean prior z
    key: frozenset[str] = frozenset()  # the metrics: devices with the same are its fleet
    lo: np.ndarray = field(default_factory=lambda: np.zeros(0))  # min learned reading
    hi: np.ndarray = field(default_factory=lambda: np.zeros(0))  # max learned reading
    odd: int = 0  # rows in a row off as glitches (see _stage)
    slow: np.ndarray | None = None  # a slow moving average of the learned rows
    slo: np.ndarray = field(default_factory=lambda: np.zeros(0))  # its min per metric
    shi: np.ndarray = field(default_factory=lambda: np.zeros(0))  # its max per metric


def _together(read: int, metrics: int) -> bool:
    """Whether a row with ``read`` of a device's ``metrics`` read at its timestamp is
    learned and moves the running residuals: more than half of them, and at least 2 (a
    two-metric device needs both)."""
    return read >= 2 and 2 * read > metrics


def _log_ok(dev: _Device) -> np.ndarray:
    """The metrics whose log readings the fleet prior may use: read above 0 in all but
    ``_LOG_BAD`` of the device's rows, and at least twice."""
    return (dev.lbad < _LOG_BAD) & (dev.lcnt >= 2)


def _features(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The readings and their squares about ``ref``: a partner's square lets a quadratic
    law (head ~ speed²) be fitted over a wide range of operating points."""
    with np.errstate(over="ignore"):  # a glitch near the float limits: inf, not learned
        c = x - ref
        return np.concatenate([x, c * c])


class CrossSensorGate:
    """Per device: cap each fast level metric's score where the device's other sensors
    explain its reading, and alarm where it lastingly breaks from them.

    Parameters
    ----------
    min_z
        Residual standard deviations a reading needs to keep its score.
    alpha
        Weight of the running moments after the warm-up (about ``1/alpha`` rows of
        memory: long enough to hold several operating points).
    warmup
        Rows of plain moments before the device's own model changes a score (the fleet's
        prior may cap one from the device's 60th row on).
    partner_corr
        Two metrics are partners when their fast moves (a reading minus a moving average
        of about 10 rows) correlate at least this much: they move together, at once. A
        metric is predicted from its partners only, so a slow sensor (a temperature that
        follows the load over minutes) does not make a fast one look broken while it
        catches up.
    break_z
        Residual (exponentially weighted mean, in residual standard deviations) that
        alarms on its own.
    refresh
        Rows learned between two refits of the regressions.
    threshold
        The alert threshold the capped scores are read against.
    fleet_prior
        Also explain a device's readings by what its fleet's devices with the same metrics
        agree on (see above); ``False`` judges each device on its own model only.
    max_metrics
        The most metrics of a device modelled, the first it read; the gate leaves the
        others' scores as they are (its memory and work per row grow with the square).

    Attributes
    ----------
    devices_
        What is learned per device (saved with the gateway's detector state).
    """

    def __init__(self, min_z: float = 3.0, alpha: float = 0.001, warmup: int = 300,
                 partner_corr: float = 0.2, refresh: int = 50,
                 threshold: float = DEFAULT_THRESHOLD, break_z: float = 3.0,
                 fleet_prior: bool = True, max_metrics: int = DEFAULT_MAX_METRICS) -> None:
        validate_params({"min_z": Interval(float, 0.0, None, closed="neither"),
                         "alpha": Interval(float, 0.0, 1.0, closed="right"),
                         "warmup": Interval(int, 2, None),
                         "partner_corr": Interval(float, 0.0, 1.0, closed="neither"),
                         "refresh": Interval(int, 1, None),
                         "threshold": Interval(float, 0.0, 1.0, closed="neither"),
                         "break_z": Interval(float, 0.0, None, closed="neither"),
                         "max_metrics": Interval(int, 2, None)},
                        {"min_z": min_z, "alpha": alpha, "warmup": warmup,
                         "partner_corr": partner_corr, "refresh": refresh,
                         "threshold": threshold, "break_z": break_z,
                         "max_metrics": max_metrics}, self)
        self.min_z = min_z
        self.alpha = alpha
        self.warmup = warmup
        self.partner_corr = partner_corr
        self.refresh = refresh
        self.threshold = threshold
        self.break_z = break_z
        self.fleet_prior = fleet_prior
        self.max_metrics = max_metrics
        self.devices_: dict[str, _Device] = {}
        self._rows = 0  # rows learned, all devices
        # metric set -> (rows when computed, the fleet's prior for such devices)
        self._priors: dict[frozenset[str], tuple[int, dict[str, tuple[str, float, float]]]] = {}

    def observe(self, device_id: str, row: dict[str, float], scores: dict[str, float],
                eligible: Collection[str], *, keep: Collection[str] = (),
                skip: Collection[str] = ()) -> dict[str, float]:
        """The scores to alert on for one reading time of ``device_id``.

        ``row`` holds the readings at that time, ``scores`` their per-metric scores, and
        ``eligible`` the metrics that are fast level streams (the only ones modelled and
        capped); scores of metrics in ``keep`` (a stuck run) are not capped, and readings
        of metrics in ``skip`` (flagged spikes) do not move their residual's running mean.
        Nothing is learned until :meth:`learn` is called for the row.
        """
        names = [m for m in row if m in eligible and math.isfinite(row[m])]
        dev = self.devices_.get(device_id)
        if dev is not None and len(dev.metrics) > self.max_metrics:
            self.forget(device_id)  # restored from a state saved before the cap: afresh
            dev = None
        names = self._within_cap(dev, names)
        if not names:
            if dev is not None:
                dev.pending, dev.explained = None, set()
                if dev.shadow is not None:
                    dev.shadow.pending = None
            return scores
        if dev is None or (dev.n < self.warmup and any(m not in dev.index for m in names)):
            dev = self._grow(device_id, dev, names)  # nothing worth keeping is lost
        elif any(m not in dev.index for m in names):
            # a metric new to a working model: the model goes on over the metrics it
            # knows while a wider one warms up beside it (see learn)
            shadow = dev.shadow
            if shadow is None or any(m not in shadow.index for m in names):
                dev.shadow = self._new_device(shadow or dev, names)
        if dev.shadow is not None:
            self._stage(dev.shadow, row, names, skip)
        known = [m for m in names if m in dev.index]
        x = self._stage(dev, row, known, skip)
        complete = bool(np.isfinite(x).all())
        together = _together(len(known), len(dev.metrics))  # see _stage
        out = scores
        dev.explained = set()
        if len(dev.metrics) < 2 or not complete:
            return out
        e = self._residuals(dev, x) if dev.n >= self.warmup else None
        # the fleet's prior: what devices with the same metrics agree on, for a device
        # that has not yet seen enough operating points of its own
        prior = (self._prior_z(dev, x, known) if self.fleet_prior and dev.n >= _PRIOR_ROWS
                 else {})
        if e is None and not prior:
            return out
        out = dict(scores)
        moves = together and not any(m in skip for m in known)
        if moves:  # the prior's running residuals, as the model's below
            for m in known:
                j = dev.index[m]
                z = prior.get(m)
                # a metric out of the prior (for now) starts again from 0 when it is back
                dev.psmooth[j] = 0.0 if z is None else dev.psmooth[j] + _SMOOTH * (
                    z - dev.psmooth[j])
        if e is not None and moves:
            # a row holding a flagged spike moves no running residual: the spike would
            # move its partners' too, through their predictions
            fresh = np.zeros(len(e), dtype=bool)
            fresh[[dev.index[m] for m in known]] = True
            fresh &= np.isfinite(e)
            step = _SMOOTH * (np.where(fresh, e, 0.0) - dev.smooth)
            dev.smooth = np.where(fresh, dev.smooth + step, dev.smooth)
            dev.smooth[np.isnan(dev.sd)] = 0.0  # not judged: no break
        for m in known:
            # the nearer of the two predictions; inf where neither judges the metric
            own = math.inf if e is None else abs(e[dev.index[m]])
            zj = min(math.inf if math.isnan(own) else own, abs(prior.get(m, math.inf)))
            if zj < self.min_z and m not in keep:
                dev.explained.add(m)
                if m in out:
                    out[m] = min(out[m], float(self.threshold * zj / self.min_z))
        if e is not None:
            # a lasting break: only the metric furthest from its partners' prediction
            # alarms (its partners' predictions, made from it, are off as well), unless
            # the fleet's prior explains it
            r = np.abs(dev.smooth)
            i = int(np.argmax(r))
            m = dev.metrics[i]
            lasting = m not in prior or abs(dev.psmooth[i]) >= _PRIOR_BREAK
            if (r[i] >= self.break_z and m in known and lasting
                    and not self._beyond_seen(dev, x, i)):
                dev.explained.discard(m)
                out[m] = max(out.get(m, 0.0), min(1.0, float(self.threshold * r[i]
                                                               / self.break_z)))
        return out

    @staticmethod
    def _beyond_seen(dev: _Device, x: np.ndarray, i: int) -> bool:
        """Whether metric ``i`` and one of its partners read beyond the operating points
        the device has settled at (the range of a slow moving average of its learned rows,
        with a margin): the model's prediction there is an extrapolation, so a residual is
        no lasting break (a pump run at a speed it never ran at). A metric that leaves its
        range alone, its partners where they were, is a break still."""
        if dev.coef is None or dev.sd is None:
            return False
        k = len(x)
        with np.errstate(over="ignore"):  # a range of +-1e308: inf, nothing beyond it
            margin = (_RANGE_MARGIN * (dev.shi - dev.slo)
                      + _RANGE_SD * np.nan_to_num(dev.sd, nan=0.0))
        out = (x < dev.slo - margin) | (x > dev.shi + margin)
        if not out[i]:
            return False
        partners = (dev.coef[i, :k] != 0) | (dev.coef[i, k:] != 0)
        return bool(out[partners].any())

    def _within_cap(self, dev: _Device | None, names: list[str]) -> list[str]:
        """``names`` less the metrics the device's model has no room for: those it (or the
        wider model warming up beside it) holds, and new ones while it holds fewer than
        ``max_metrics``, first come first."""
        model = None if dev is None else (dev.shadow or dev)
        room = self.max_metrics - (0 if model is None else len(model.metrics))
        if model is None and len(names) <= room:
            return names
        out = []
        for m in names:
            if model is not None and m in model.index:
                out.append(m)
            elif room > 0:
                out.append(m)
                room -= 1
        return out

    def _stage(self, dev: _Device, row: dict[str, float], names: list[str],
               skip: Collection[str]) -> np.ndarray:
        """The device's row (a metric missing from it at its last value), kept as the row
        to learn when it is complete and no reading is a glitch; remembers the readings
        as last values, but not flagged spikes."""
        x = dev.last.copy()
        for m in names:
            x[dev.index[m]] = row[m]
        ok = bool(np.isfinite(x).all())
        if ok and dev.n >= self.warmup:
            # a reading a thousand times its learned range off is a glitch, not an
            # operating point: its square would swamp the moments for good. The range
            # seen, unlike the running sd, does not shrink while a metric holds one value
            # (a pump stopped overnight, a stuck or silent sensor), so the device's next
            # move is not taken for a glitch; and rows off for more than _GLITCH_RUN rows
            # in a row (a metric that held one value all along now moves) are its new
            # state: the gate never locks itself out of a device
            with np.errstate(over="ignore"):  # a reading near +-1e308: inf, off
                span = dev.hi - dev.lo
                off = not bool((np.abs(x - dev.mean[: len(x)]) <= _GLITCH_SD * span + _TINY)
                               .all())
            dev.odd = dev.odd + 1 if off else 0
            ok = dev.odd == 0 or dev.odd > _GLITCH_RUN
        # a row is learned only when more than half the device's metrics (and at least
        # 2) were read in it: a device whose metrics arrive one at a time, each at its own
        # timestamp (or in two halves), would otherwise be learned from rows half or more
        # stale, out of step at every change; such a device is left to the other detectors
        ok = ok and _together(len(names), len(dev.metrics))
        dev.pending = x if ok else None
        for m in names:
            if m not in skip:
                dev.last[dev.index[m]] = row[m]
        return x

    def learn(self, device_id: str) -> None:
        """Learn the row last observed for ``device_id`` (the gateway skips a row holding a
        flagged spike)."""
        dev = self.devices_.get(device_id)
        if dev is None:
            return
        shadow = dev.shadow
        for model in (dev, shadow):
            if model is not None and model.pending is not None:
                # a row near the float limits overflows the moments: no RuntimeWarning (an
                # error where warnings are), the model starts again just below
                with np.errstate(over="ignore", invalid="ignore"):
                    self._learn(model, model.pending)
                model.pending = None
        if shadow is not None and shadow.n >= self.warmup:  # it takes over, alarms and all
            for m, i in dev.index.items():
                shadow.smooth[shadow.index[m]] = dev.smooth[i]
                shadow.psmooth[shadow.index[m]] = dev.psmooth[i]
            self.devices_[device_id] = shadow
        if not np.isfinite(self.devices_[device_id].cov).all():
            # moments no longer finite (readings near the float limits): start again
            self.devices_[device_id] = self._new_device(self.devices_[device_id], [])

    def cap_device_score(self, device_id: str, score: float, shares: dict[str, float]) -> float:
        """The device-wide detector's ``score`` for the row last observed, capped
        when it rests on readings the device's own sensors explain.

        ``shares`` is that detector's attribution (metric -> share of the score). A move of
        the operating point is far from the device's recent state in every metric, so a
        Hotelling T² alarms on it; when less than half of the score's weight is on
        metrics whose readings their partners do not explain, the score is capped at
        ``threshold * unexplained / 0.5``.

        >>> gate = CrossSensorGate()
        >>> gate.cap_device_score("nobody", 1.0, {"a": 1.0})   # nothing known: unchanged
        1.0
        """
        dev = self.devices_.get(device_id)
        if dev is None or not dev.explained or score < self.threshold:
            return score
        unexplained = sum(v for m, v in shares.items() if m not in dev.explained)
        if unexplained >= _DEVICE_SHARE:
            return score
        return min(score, self.threshold * unexplained / _DEVICE_SHARE)

    def _grow(self, device_id: str, dev: _Device | None, names: list[str]) -> _Device:
        new = self._new_device(dev, names)
        self.devices_[device_id] = new
        return new

    @staticmethod
    def _new_device(dev: _Device | None, names: list[str]) -> _Device:
        """A fresh model over ``dev``'s metrics and ``names``, keeping the last values."""
        metrics = list(dev.metrics) if dev is not None else []
        metrics += [m for m in names if m not in metrics]
        new = _Device(metrics=metrics, index={m: i for i, m in enumerate(metrics)},
                      key=frozenset(metrics))
        d = len(metrics)
        new.mean = np.zeros(2 * d)
        new.cov = np.zeros((2 * d, 2 * d))
        new.dmom = np.zeros((d, d))
        new.last = np.full(d, np.nan)
        new.smooth = np.zeros(d)
        new.lcnt = np.zeros(d)
        new.lbad = np.zeros(d)
        new.nd2 = np.zeros(d)
        new.lmean = np.zeros(d)
        new.lcov = np.zeros((d, d))
        new.lnoise = np.zeros(d)
        new.psmooth = np.zeros(d)
        new.lo = np.full(d, np.inf)
        new.hi = np.full(d, -np.inf)
        new.slo = np.full(d, np.inf)
        new.shi = np.full(d, -np.inf)
        if dev is not None:
            new.last[: len(dev.metrics)] = dev.last
        return new

    def _learn(self, dev: _Device, x: np.ndarray) -> None:
        # the fast part of the move: what the readings do in the last few seconds
        step = None if dev.fast is None else x - dev.fast
        dev.fast = x.copy() if dev.fast is None else dev.fast + _FAST * (x - dev.fast)
        dev.n += 1
        if dev.ref is None:
            dev.ref = x.copy()
        dev.lo, dev.hi = np.minimum(dev.lo, x), np.maximum(dev.hi, x)
        dev.slow = x.copy() if dev.slow is None else dev.slow + _SLOW * (x - dev.slow)
        dev.slo, dev.shi = np.minimum(dev.slo, dev.slow), np.maximum(dev.shi, dev.slow)
        f = _features(x, dev.ref)
        d = f - dev.mean
        if dev.n <= self.warmup:  # plain moments over the warm-up
            dev.mean += d / dev.n
            dev.cov += (np.outer(d, f - dev.mean) - dev.cov) / dev.n
            if step is not None:
                dev.dmom += (np.outer(step, step) - dev.dmom) / (dev.n - 1)
        else:
            a = self.alpha
            dev.mean += a * d
            dev.cov = (1.0 - a) * (dev.cov + a * np.outer(d, d))
            if step is not None:
                dev.dmom += a * (np.outer(step, step) - dev.dmom)
        dev.since += 1
        self._learn_logs(dev, x)

    def _learn_logs(self, dev: _Device, x: np.ndarray) -> None:
        """The log readings' moments and noise (what the fleet's prior is read with).

        A metric's reading that is not above 0 (a stopped pump's flow) is left out of them,
        row by row; a metric read so too often (:func:`_log_ok`) is not used."""
        pos = x > 0
        dev.lbad += (~pos - dev.lbad) * max(self.alpha, 1.0 / dev.n)
        lx = np.log(np.where(pos, x, 1.0))
        dev.lcnt += pos
        # plain moments over each metric's first rows, as _learn's, then weighted; a pair
        # moves only when both were read above 0, by the weight of the newer of the two
        w = np.where(dev.lcnt <= self.warmup, 1.0 / np.maximum(dev.lcnt, 1.0), self.alpha)
        w = np.where(pos, w, 0.0)
        d = np.where(pos, lx - dev.lmean, 0.0)
        wp = np.maximum.outer(w, w) * np.outer(pos, pos)
        dev.lcov = (1.0 - wp) * (dev.lcov + wp * np.outer(d, d))
        dev.lmean += w * d
        lx = np.where(pos, lx, np.nan)
        if dev.lprev is not None and dev.lprev2 is not None:
            # the noise from second differences: a ramp's are small, a step's one or two
            # are clipped, so an operating change does not pass for noise (not clipped
            # while the estimate is still 0: a sensor that held one value at first)
            d2 = np.abs(lx - 2.0 * dev.lprev + dev.lprev2)
            seen = np.isfinite(d2)
            dev.nd2 += seen
            clip = (dev.nd2 > 20) & (dev.lnoise > 0)
            d2 = np.where(clip, np.minimum(d2, _D2_CLIP * dev.lnoise), d2)
            rate = np.maximum(_NOISE, 1.0 / np.maximum(dev.nd2, 1.0))
            dev.lnoise += np.where(seen, (d2 - dev.lnoise) * rate, 0.0)
        dev.lprev2, dev.lprev = dev.lprev, lx
        self._rows += 1

    def _fleet_prior(self, dev: _Device) -> dict[str, tuple[str, float, float]]:
        """What the devices with ``dev``'s metrics agree on: for each metric, the
        partner that predicts it best in most of them, the elasticity (slope of the log
        readings) and its spread across them."""
        key = dev.key
        cached = self._priors.get(key)
        # as often in rows learned as the fleet is large: a device's row costs the same in
        # a fleet of 20 as of 20,000 (each recomputation reads every device)
        every = max(_PRIOR_REFRESH, _PRIOR_REFRESH_PER_DEVICE * len(self.devices_))
        if cached is not None and self._rows - cached[0] < every:
            return cached[1]
        pairs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        live = set()
        for peer in self.devices_.values():
            live.add(peer.key)
            if peer.n < _PRIOR_ROWS or peer.key != key:
                continue
            moving, dcorr = self._move_corr(peer)
            v = np.diag(peer.lcov)
            with np.errstate(divide="ignore", invalid="ignore"):
                e = peer.lcov / v  # e[j, i]: the slope of metric j's log on partner i's
                rv = v[:, None] - e * peer.lcov  # the residual variance of j given i
            usable = _log_ok(peer)
            ok = ((dcorr >= self.partner_corr) & (moving & usable)[:, None]
                  & usable & (v > 0)
                  # moves that were noise, not a change it has seen, do not count
                  & (rv <= (1.0 - _PRIOR_R2) * v[:, None]))
            for j, i in zip(*np.nonzero(ok), strict=True):
                pairs.setdefault((peer.metrics[j], peer.metrics[i]), []).append(
                    (float(e[j, i]), float(rv[j, i])))
        best: dict[str, tuple[float, str, float, float]] = {}
        for (m, p), got in pairs.items():
            if len(got) < _PRIOR_PEERS:
                continue
            es = np.array([g[0] for g in got])
            rv = float(np.median([g[1] for g in got]))
            e = float(np.median(es))
            spread = 1.4826 * float(np.median(np.abs(es - e)))  # a worn peer is an outlier
            if spread > _PRIOR_SPREAD * abs(e):
                continue  # the fleet does not agree on it
            if m not in best or rv < best[m][0]:
                best[m] = (rv, p, e, spread)
        prior = {m: (p, e, spread) for m, (_, p, e, spread) in best.items()}
        # metric sets no device has any more (a model that grew, a device forgotten) go
        for gone in [k for k in self._priors if k not in live]:
            del self._priors[gone]
        self._priors[key] = (self._rows, prior)
        return prior

    def _prior_z(self, dev: _Device, x: np.ndarray, names: list[str]) -> dict[str, float]:
        """Each metric's distance, in its standard deviations, from what the fleet's
        prior predicts from its partner's reading on this device."""
        prior = self._fleet_prior(dev)
        if not prior:
            return {}
        # plain floats: a handful of metrics per row, numpy's per-item cost would dominate
        sd = (dev.lnoise / _D2_ABS).tolist()
        pos, lmean, xs = _log_ok(dev).tolist(), dev.lmean.tolist(), x.tolist()
        out: dict[str, float] = {}
        for m in names:
            got = prior.get(m)
            if got is None or got[0] not in dev.index:
                continue
            p, e, spread = got
            j, i = dev.index[m], dev.index[p]
            if not (pos[j] and pos[i] and xs[j] > 0 and xs[i] > 0):
                continue
            di = math.log(xs[i]) - lmean[i]
            r = math.log(xs[j]) - lmean[j] - e * di
            var = sd[j] ** 2 + (e * sd[i]) ** 2 + (spread * di) ** 2
            if var > 0:
                out[m] = r / math.sqrt(var)
        return out

    @staticmethod
    def _move_corr(dev: _Device) -> tuple[np.ndarray, np.ndarray]:
        """Which metrics have moved, and the correlations of their fast moves (0 for a
        metric that has not moved and on the diagonal)."""
        k = len(dev.metrics)
        var, dvar = np.diag(dev.cov), np.diag(dev.dmom)
        # a metric that has not moved (a constant, a coarse sensor still on one value) is
        # nobody's partner and is not judged; the others still are
        moving = ((var[:k] > _TINY * dev.mean[:k] ** 2) & (var[:k] > 0) & (var[k:] > 0)
                  & (dvar > 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            dcorr = np.abs(dev.dmom / np.sqrt(np.outer(dvar, dvar)))
        dcorr[~moving, :] = 0.0
        dcorr[:, ~moving] = 0.0
        np.fill_diagonal(dcorr, 0.0)
        return moving, dcorr

    def _fit(self, dev: _Device) -> bool:
        """Each metric's least-squares regression on its partners, from the moments."""
        k = len(dev.metrics)
        var = np.diag(dev.cov)
        moving, dcorr = self._move_corr(dev)
        coef = np.zeros((k, 2 * k))
        sd = np.full(k, np.nan)
        for j in np.flatnonzero(moving):
            order = np.argsort(-dcorr[j], kind="stable")[:_MAX_PARTNERS]
            near = [int(i) for i in order if dcorr[j, i] >= self.partner_corr]
            if not near:
                continue
            part = near + [i + k for i in near]  # each partner and its square
            s_pp = dev.cov[np.ix_(part, part)]
            ridge = np.r_[np.full(len(near), _RIDGE), np.full(len(near), _SQUARE_RIDGE)]
            s_pp = s_pp + np.diag(ridge * np.diag(s_pp))
            try:
                beta = np.linalg.solve(s_pp, dev.cov[part, j])
            except np.linalg.LinAlgError:
                continue
            resid = var[j] - float(dev.cov[j, part] @ beta)
            if resid > 0:
                coef[j, part] = beta
                sd[j] = math.sqrt(resid)
        dev.coef, dev.sd, dev.since = coef, sd, 0
        return True

    def _residuals(self, dev: _Device, x: np.ndarray) -> np.ndarray | None:
        """Each metric's signed residual from its partners' prediction, in residual
        standard deviations; NaN for a metric without partners."""
        if (dev.coef is None or dev.since >= self.refresh) and not self._fit(dev):
            return None
        u = _features(x, dev.ref) - dev.mean
        k = len(x)
        e = np.full(k, np.nan)
        judged = ~np.isnan(dev.sd)
        with np.errstate(over="ignore", invalid="ignore"):
            e[judged] = (u[:k] - dev.coef @ u)[judged] / dev.sd[judged]
        return e

    def forget(self, device_id: str) -> None:
        """Drop what was learned of ``device_id``, and the fleet prior it was part of."""
        dev = self.devices_.pop(device_id, None)
        if dev is not None:
            self._priors.pop(dev.key, None)
