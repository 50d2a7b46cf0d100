"""Record-level DP for the normaliser's sufficient statistics (count, sum, sum of squares).

Before a federated run trains, each device sends the per-condition count, sum and sum of
squares of its readings so that the server can fit the fleet's normaliser
(:class:`~edgewise.federated.data.ConditionNormaliser`). Sent in the clear, one reading
more or less changes them exactly; here each device releases them through one Gaussian
mechanism instead, whose ε composes with its DP-SGD under the same per-device budget
(:func:`edgewise.federated.client_app.dp_sgd_budget`):

1. every reading's sensor values are clipped to public per-sensor bounds
   ``[lower, upper]`` (per operating condition, or one range for all), then centred on the
   bounds' midpoint ``c`` and scaled by their half-width ``h``: ``v = (clip(x) - c) / h``
   lies in ``[-1, 1]`` per sensor;
2. one reading (in one condition) adds 1 to that condition's count, ``v`` to its sums and
   ``v² - 1/2`` (in ``[-1/2, 1/2]``) to its centred sums of squares, so the whole vector of
   counts, sums and centred squares over all conditions moves by at most
   ``sqrt(1 + 1.25 F)`` in L2 norm for ``F`` sensors (:func:`stats_sensitivity`). Centring
   is what keeps the noise small: on the bounds' midpoint, the sum of squares moves by
   ``h²`` per reading instead of ``max|x|²``; the squares on 1/2 (the count carries the
   offset), by half of that again;
3. Gaussian noise of standard deviation ``z · sqrt(1 + 1.25 F)`` is added to every one of
   them (``z``, the noise multiplier, from :func:`stats_noise_for_epsilon`), drawn from a
   generator seeded from the OS's entropy on every call, as DP-SGD's noise is;
4. post-processing (free under DP): a condition whose noisy count is below
   :func:`count_threshold` (``max(1, 3σ)``) is reported as absent (count, sums and squares
   0), so the device neither claims a condition it does not hold nor sends a mean that is
   mostly noise; otherwise the sum of squares is ``centred + count / 2``, the mean is
   clipped into the bounds and the variance to at least :data:`MIN_VARIANCE` × ``h²``, and
   the statistics go back to the sensors' units. What leaves the device is then always
   consistent: counts of 0 or >= 1, ``sumsq > sum² / count``, so the server's screen
   passes it.

The privacy unit is one reading (one row of sensor values) of one device; the mechanism
is one Gaussian step (sampling rate 1, one step) for the RDP accountant
(:func:`stats_mechanism`). Bounds must be public: they set the sensitivity, so bounds read
off the private data would leak it. They also set the accuracy: the noise on a
condition's mean is about ``σ h / n`` and on its variance about ``σ h² / n`` for ``n``
readings (σ the noise's standard deviation), so an operating envelope a few standard
deviations wide (the alarm limits of a commissioned machine) costs far less than a
datasheet range (:class:`StatsBounds`).

>>> b = StatsBounds.from_doc({"lower": [0.0], "upper": [10.0]}, n_conditions=1)
>>> X = np.linspace(2.0, 8.0, 1000)[:, None]; cond = np.zeros(1000, dtype=np.int64)
>>> n, s, q = noisy_stats(X, cond, b, noise_multiplier=1.0, seed=0)
>>> bool(abs(n[0] - 1000) < 20 and abs(s[0, 0] / n[0] - 5.0) < 0.2)
True
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.errors import InvalidParameterError
from edgewise.federated.privacy import Mechanism, noise_for_epsilon

__all__ = ["DEFAULT_STATS_SHARE", "MIN_VARIANCE", "StatsBounds", "clipped_unit_stats",
           "count_threshold", "noisy_stats", "post_process", "stats_mechanism",
           "stats_noise_for_epsilon", "stats_sensitivity"]

#: Share of the per-device budget ``--dp-epsilon`` given to the normaliser statistics: their
#: Gaussian mechanism alone costs this share of ε; DP-SGD is then calibrated so that both
#: together, composed by the RDP accountant, stay within ε (at ε = 8 the statistics' z is
#: 4.97 and DP-SGD's noise rises by about 0.4 % on the C-MAPSS bench).
DEFAULT_STATS_SHARE = 0.1
#: Smallest variance a released condition keeps, as a fraction of the bounds' half-width
#: squared (a standard deviation of 1 % of it): a noisy variance at or below 0 is raised to
#: it, so no channel is divided by a standard deviation of 0.
MIN_VARIANCE = 1e-4


@dataclass(frozen=True)
class StatsBounds:
    """Public per-sensor bounds readings are clipped to before their statistics are released.

    ``lower`` and ``upper`` have shape ``(conditions, sensors)``: one range per sensor and
    operating condition (a range given per sensor only is the same for every condition).
    ``channels`` names the sensors in the devices' column order, when known.

    Where they come from is the operator's: the operating envelope of each sensor (the
    commissioned range or alarm limits of the machine, or the range seen on a public
    reference fleet), never the devices' own data. The JSON form
    (:meth:`load`, ``federate server --stats-bounds FILE``)::

        {"channels": ["speed_rpm", "flow_m3h"],
         "lower": [1000, 20], "upper": [2000, 90]}

    with ``lower``/``upper`` either one list of sensors or one list per condition.

    >>> b = StatsBounds.from_doc({"lower": [0, 1], "upper": [2, 5]}, n_conditions=2)
    >>> b.lower.shape, b.centre[1].tolist(), b.half_width[0].tolist()
    ((2, 2), [1.0, 3.0], [1.0, 2.0])
    """

    lower: np.ndarray
    upper: np.ndarray
    channels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        lo = np.asarray(self.lower, dtype=np.float64)
        hi = np.asarray(self.upper, dtype=np.float64)
        if lo.ndim != 2 or lo.shape != hi.shape or 0 in lo.shape:
            raise InvalidParameterError(
                f"Sensor bounds need 'lower' and 'upper' of the same shape (conditions, "
                f"sensors). Got {lo.shape} and {hi.shape}.")
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise InvalidParameterError("Sensor bounds must be finite numbers; got NaN or Inf "
                                        "in 'lower' or 'upper'.")
        bad = np.argwhere(~(hi > lo))
        if len(bad):
            j, f = (int(x) for x in bad[0])
            name = self.channels[f] if self.channels and f < len(self.channels) else f"#{f}"
            raise InvalidParameterError(
                f"Sensor bounds: sensor {name} (condition {j}) has lower {lo[j, f]:g} >= "
                f"upper {hi[j, f]:g}; each upper bound must be above its lower bound.")
        if self.channels is not None and len(self.channels) != lo.shape[1]:
            raise InvalidParameterError(
                f"Sensor bounds name {len(self.channels)} channels but give ranges for "
                f"{lo.shape[1]} sensors; name one channel per range.")
        with np.errstate(over="ignore"):  # finite bounds whose width or squares overflow
            half = (hi - lo) / 2.0
            huge = np.argwhere(~(np.isfinite(hi - lo) & np.isfinite(half * half)
                                 & np.isfinite(lo * lo) & np.isfinite(hi * hi)))
        if len(huge):
            j, f = (int(x) for x in huge[0])
            name = self.channels[f] if self.channels else f"#{f}"
            raise InvalidParameterError(
                f"Sensor bounds: sensor {name} (condition {j}) has the range "
                f"[{lo[j, f]:g}, {hi[j, f]:g}], too large to compute with (its width, "
                "half-width squared or a bound squared overflows to Inf, and so would every "
                "release); give the sensor's operating envelope, bounds within about ±1e150.")
        object.__setattr__(self, "lower", lo)
        object.__setattr__(self, "upper", hi)

    @property
    def n_conditions(self) -> int:
        """Operating conditions the bounds cover."""
        return int(self.lower.shape[0])

    @property
    def n_features(self) -> int:
        """Sensors the bounds cover."""
        return int(self.lower.shape[1])

    @property
    def centre(self) -> np.ndarray:
        """Midpoint of each range, ``(conditions, sensors)``."""
        return (self.lower + self.upper) / 2.0

    @property
    def half_width(self) -> np.ndarray:
        """Half the width of each range, ``(conditions, sensors)``."""
        return (self.upper - self.lower) / 2.0

    @classmethod
    def from_doc(cls, doc: Any, n_conditions: int) -> StatsBounds:
        """Bounds from their JSON form (see the class docstring) for ``n_conditions``.

        >>> StatsBounds.from_doc({"lower": [0], "upper": [1]}, 3).lower.shape
        (3, 1)
        """
        if not isinstance(doc, dict) or "lower" not in doc or "upper" not in doc:
            raise InvalidParameterError(
                "Sensor bounds must be a JSON object with 'lower' and 'upper' (and "
                f"optionally 'channels'). Got {type(doc).__name__} "
                f"{sorted(doc) if isinstance(doc, dict) else ''}.".rstrip())
        try:
            lo = np.asarray(doc["lower"], dtype=np.float64)
            hi = np.asarray(doc["upper"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(
                f"Sensor bounds 'lower' and 'upper' must be lists of numbers: {exc}.") from None
        shapes = {lo.shape, hi.shape}
        if lo.ndim == 1 and hi.ndim == 1:
            lo, hi = np.tile(lo, (n_conditions, 1)), np.tile(hi, (n_conditions, 1))
        elif lo.ndim != 2 or hi.ndim != 2 or lo.shape[0] != n_conditions:
            raise InvalidParameterError(
                f"Sensor bounds 'lower'/'upper' must be one list of sensors or one list per "
                f"operating condition ({n_conditions}). Got shapes {sorted(shapes)}.")
        channels = doc.get("channels")
        if channels is not None and (not isinstance(channels, list)
                                     or not all(isinstance(c, str) for c in channels)):
            raise InvalidParameterError(
                f"Sensor bounds 'channels' must be a list of names. Got {channels!r}.")
        return cls(lo, hi, tuple(channels) if channels is not None else None)

    @classmethod
    def load(cls, path: str | Path, n_conditions: int) -> StatsBounds:
        """Read bounds from a JSON file (see the class docstring)."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InvalidParameterError(
                f"Sensor bounds file {path} cannot be read as JSON: {exc}.") from None
        return cls.from_doc(doc, n_conditions)

    def to_doc(self) -> dict[str, Any]:
        """The JSON form, one range per condition (what the signed manifest records).

        >>> StatsBounds.from_doc({"lower": [0], "upper": [1]}, 1).to_doc()
        {'lower': [[0.0]], 'upper': [[1.0]]}
        """
        doc: dict[str, Any] = {"lower": self.lower.tolist(), "upper": self.upper.tolist()}
        if self.channels is not None:
            doc["channels"] = list(self.channels)
        return doc

    def check_width(self, n_features: int, channels: tuple[str, ...] | None = None) -> None:
        """Refuse bounds that do not cover ``n_features`` sensors (or name other
        ``channels``), naming both."""
        if self.n_features != n_features:
            raise InvalidParameterError(
                f"Sensor bounds give ranges for {self.n_features} sensors; the data has "
                f"{n_features}" + (f" ({', '.join(channels)})" if channels else "") + ".")
        if channels is not None and self.channels is not None and self.channels != channels:
            raise InvalidParameterError(
                f"Sensor bounds name the channels {list(self.channels)}; the data's are "
                f"{list(channels)} (same order).")


def stats_sensitivity(n_features: int) -> float:
    """L2 sensitivity to one reading of the count, the sums of ``v`` and the sums of
    ``v² - 1/2`` (``v`` the reading centred and scaled into ``[-1, 1]``):
    ``sqrt(1 + 1.25 F)``, the largest ``sqrt(1 + sum(v² + (v² - 1/2)²))``, at ``|v| = 1``.

    >>> stats_sensitivity(14)
    4.301162633521313
    """
    if n_features < 1:
        raise InvalidParameterError(f"stats_sensitivity needs n_features >= 1. Got {n_features}.")
    return math.sqrt(1.0 + 1.25 * n_features)


def stats_noise_for_epsilon(epsilon: float, delta: float = 1e-5) -> float:
    """Noise multiplier of the statistics' Gaussian mechanism that costs ``epsilon`` alone
    (one Gaussian step, by the RDP accountant).

    >>> round(stats_noise_for_epsilon(0.8), 2)
    4.97
    """
    return noise_for_epsilon(epsilon, sampling_rate=1.0, steps=1, delta=delta)


def stats_mechanism(noise_multiplier: float) -> Mechanism:
    """The statistics' release in the accountant's history form: one Gaussian step.

    >>> stats_mechanism(4.97)
    (4.97, 1.0, 1)
    >>> stats_mechanism(float("nan"))
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The normaliser statistics' noise multiplier must be a finite number > 0. Got nan instead.
    """  # noqa: E501
    z = float(noise_multiplier)
    if not 0 < z < math.inf:  # a NaN one composed to epsilon 0 in a ledger
        raise InvalidParameterError(
            "The normaliser statistics' noise multiplier must be a finite number > 0. Got "
            f"{noise_multiplier!r} instead.")
    return (z, 1.0, 1)


def count_threshold(noise_sd: float) -> float:
    """Noisy count under which a condition is reported as absent: ``max(1, 3 σ)``. A
    condition the device does not hold shows up with probability 0.13 %.

    >>> count_threshold(0.1), count_threshold(10.0)
    (1.0, 30.0)
    """
    return max(1.0, 3.0 * noise_sd)


def clipped_unit_stats(X: np.ndarray, cond: np.ndarray, bounds: StatsBounds
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per condition: the count, the sum of ``v`` and the sum of ``v² - 1/2``, where ``v``
    is each reading clipped to ``bounds``, centred on their midpoint and scaled by their
    half-width (in ``[-1, 1]``): what one reading moves by at most
    :func:`stats_sensitivity`.

    A reading with any NaN or Inf value is left out (it is not counted): clipping keeps a
    NaN, which would make the release NaN whatever the noise. Whether a reading is left
    out depends on that reading alone, so one reading still moves the statistics by at most
    the sensitivity.

    >>> b = StatsBounds.from_doc({"lower": [0.0], "upper": [4.0]}, 1)
    >>> n, s, q = clipped_unit_stats(np.array([[1.0], [9.0], [np.nan]]),
    ...                              np.array([0, 0, 0]), b)
    >>> n.tolist(), s.tolist(), q.tolist()
    ([2.0], [[0.5]], [[0.25]])
    """
    X = np.asarray(X, dtype=np.float64)
    cond = np.asarray(cond, dtype=np.int64)
    bounds.check_width(X.shape[1])
    if X.ndim == 2 and len(X) == len(cond):
        finite = np.isfinite(X).all(axis=1)
        if not finite.all():
            X, cond = X[finite], cond[finite]
    if len(cond) and (cond.min() < 0 or cond.max() >= bounds.n_conditions):
        raise InvalidParameterError(
            f"Readings of condition {int(cond.max())} but the sensor bounds cover "
            f"{bounds.n_conditions} condition(s).")
    clipped = np.clip(X, bounds.lower[cond], bounds.upper[cond])
    v = (clipped - bounds.centre[cond]) / bounds.half_width[cond]
    c, f = bounds.n_conditions, bounds.n_features
    count = np.bincount(cond, minlength=c).astype(np.float64)
    total, squares = np.zeros((c, f)), np.zeros((c, f))
    np.add.at(total, cond, v)
    np.add.at(squares, cond, v * v - 0.5)
    return count, total, squares


def post_process(count: np.ndarray, total: np.ndarray, squares: np.ndarray,
                 bounds: StatsBounds, noise_sd: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy scaled statistics (:func:`clipped_unit_stats` plus noise of standard deviation
    ``noise_sd``) to consistent ones in the sensors' units (free under DP).

    A condition whose noisy count is below :func:`count_threshold` becomes absent (all 0);
    otherwise its count stays (>= 1), its mean is clipped into the bounds and its variance
    to at least :data:`MIN_VARIANCE` × half-width², and ``sum = n·mean``,
    ``sumsq = n·(var + mean²)``.

    >>> b = StatsBounds.from_doc({"lower": [0.0], "upper": [2.0]}, 2)
    >>> n, s, q = post_process(np.array([-3.0, 50.0]), np.array([[1.0], [80.0]]),
    ...                        np.array([[1.0], [-29.0]]), b, noise_sd=1.0)
    >>> n.tolist(), s.tolist(), q[0].tolist(), round(float(q[1, 0] / n[1]), 4)
    ([0.0, 50.0], [[0.0], [100.0]], [0.0], 4.0001)
    """
    count = np.asarray(count, dtype=np.float64)
    keep = count >= count_threshold(noise_sd)
    n = np.where(keep, count, 1.0)[:, None]
    mean_v = np.clip(np.asarray(total, dtype=np.float64) / n, -1.0, 1.0)
    second = np.clip(np.asarray(squares, dtype=np.float64) / n + 0.5, 0.0, 1.0)
    var_v = np.maximum(second - mean_v * mean_v, MIN_VARIANCE)
    h, c = bounds.half_width, bounds.centre
    mean = c + h * mean_v
    var = h * h * var_v
    k = keep[:, None]
    return (np.where(keep, count, 0.0), np.where(k, n * mean, 0.0),
            np.where(k, n * (var + mean * mean), 0.0))


def noisy_stats(X: np.ndarray, cond: np.ndarray, bounds: StatsBounds,
                noise_multiplier: float, *, seed: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The device's DP release of its normaliser statistics (see the module docstring):
    count ``(C,)``, sum and sum of squares ``(C, F)`` in the sensors' units.

    ``seed`` is for tests only; by default the noise comes from a generator seeded from
    the OS's entropy on every call (noise anyone could replay would protect nothing).
    """
    if not 0 < noise_multiplier < math.inf:
        raise InvalidParameterError(
            f"noisy_stats needs a finite noise_multiplier > 0. Got {noise_multiplier!r}.")
    count, total, squares = clipped_unit_stats(X, cond, bounds)
    sd = noise_multiplier * stats_sensitivity(bounds.n_features)
    if seed is None:
        import secrets

        seed = secrets.randbits(128)
    rng = np.random.default_rng(seed)
    return post_process(count + rng.normal(0.0, sd, count.shape),
                        total + rng.normal(0.0, sd, total.shape),
                        squares + rng.normal(0.0, sd, squares.shape), bounds, sd)
