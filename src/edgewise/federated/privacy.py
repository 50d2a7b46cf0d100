"""Differential privacy: which unit is protected, and the (ε, δ) it costs.

Two units, two mechanisms, one accountant (Google's ``dp-accounting`` RDP accountant;
Flower itself reports no ε for a run):

* **Device-level** (a whole device's data may be added or removed): Flower's
  ``DifferentialPrivacyServerSideFixedClipping`` clips each device's update to norm C and
  adds Gaussian noise of standard deviation z·C/m to the equal-weight average of the m
  devices sampled that round. With all n devices in every round (no amplification) R rounds
  cost :func:`device_level_epsilon` (z, R); with m < n sampled per round (Flower's fixed-size
  sampling without replacement) the accountant uses the matching subsampled bound.
  Meaningful only for large fleets: the noise is z·C/m per coordinate against a signal of
  at most C.
* **Record-level** (one reading/window of one device): DP-SGD on each device with Opacus
  (per-sample clipping, noise multiplier z, Poisson sampling rate q = batch/len). Each
  device's ε is :func:`dp_sgd_epsilon` (z, q, local steps summed over rounds).

>>> round(rdp_epsilon(noise_multiplier=1.5, sampling_rate=0.04, steps=2250, delta=1e-5), 3)
7.329
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

from edgewise.errors import InvalidParameterError

__all__ = [
    "PrivacyReport",
    "device_level_epsilon",
    "device_noise_for_epsilon",
    "dp_sgd_epsilon",
    "dp_sgd_noise_for_epsilon",
    "noise_for_epsilon",
    "rdp_epsilon",
]

_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [80, 128, 256, 512]


def rdp_epsilon(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float = 1e-5
) -> float:
    """ε after ``steps`` Poisson-subsampled Gaussian steps, by the RDP accountant.

    Parameters
    ----------
    noise_multiplier
        z: noise standard deviation divided by the clipping norm (sensitivity).
    sampling_rate
        q: probability that a unit takes part in a step (1.0 = every step).
    steps
        Number of compositions.
    delta
        Target δ.
    """
    if noise_multiplier <= 0 or not 0 < sampling_rate <= 1 or steps < 0 or not 0 < delta < 1:
        raise InvalidParameterError(
            "rdp_epsilon needs noise_multiplier > 0, sampling_rate in (0, 1], steps >= 0 and "
            f"delta in (0, 1). Got {noise_multiplier}, {sampling_rate}, {steps}, {delta} instead."
        )
    if steps == 0:
        return 0.0
    import dp_accounting

    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    return _composed_epsilon(event, steps, delta)


def _composed_epsilon(event: object, count: int, delta: float,
                      replace_one: bool = False) -> float:
    """ε after ``count`` compositions of ``event``, by the RDP accountant over ``_ORDERS``
    (add/remove neighbours, or replace-one)."""
    import dp_accounting
    from dp_accounting import rdp

    relation = (dp_accounting.NeighboringRelation.REPLACE_ONE if replace_one
                else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
    accountant = rdp.RdpAccountant(_ORDERS, relation)
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, count))
    return float(accountant.get_epsilon(delta))


def device_level_epsilon(
    noise_multiplier: float, rounds: int, delta: float = 1e-5, *,
    num_devices: int | None = None, sample_size: int | None = None,
) -> float:
    """ε of device-level DP (Flower's fixed-clipping wrapper) after ``rounds`` rounds.

    With every device in every round (``sample_size`` None or equal to ``num_devices``) each
    round is one Gaussian mechanism of noise multiplier z (sensitivity C/m of the mean of m
    clipped updates, a device added or removed). When Flower samples ``sample_size`` of the
    ``num_devices`` per round (fixed size, without replacement, as ``FedAvg`` does) the
    accountant uses the sampled-without-replacement RDP bound, which is stated for
    replace-one neighbours: replacing a device moves the mean by up to 2C/m, so the
    accountant sees z/2. Conservative, and exact about what Flower does.

    >>> device_level_epsilon(noise_multiplier=5.0, rounds=10) < device_level_epsilon(2.0, 10)
    True
    >>> full = device_level_epsilon(2.0, 50, num_devices=260, sample_size=260)
    >>> full > device_level_epsilon(2.0, 50, num_devices=260, sample_size=26)
    True
    """
    if num_devices is None or sample_size is None or sample_size >= num_devices:
        return rdp_epsilon(noise_multiplier, 1.0, rounds, delta)
    if not 1 <= sample_size or noise_multiplier <= 0 or rounds < 0:
        raise InvalidParameterError(
            "device_level_epsilon needs sample_size >= 1, noise_multiplier > 0 and "
            f"rounds >= 0. Got {sample_size}, {noise_multiplier}, {rounds} instead."
        )
    if rounds == 0:
        return 0.0
    import dp_accounting

    event = dp_accounting.SampledWithoutReplacementDpEvent(
        num_devices, sample_size, dp_accounting.GaussianDpEvent(noise_multiplier / 2.0))
    return _composed_epsilon(event, rounds, delta, replace_one=True)


def device_noise_for_epsilon(
    target_epsilon: float, rounds: int, delta: float = 1e-5, *,
    num_devices: int | None = None, sample_size: int | None = None,
) -> float:
    """Smallest noise multiplier whose :func:`device_level_epsilon` is at most the target.

    >>> z = device_noise_for_epsilon(8.0, 20)
    >>> device_level_epsilon(z, 20) <= 8.0
    True
    """
    return _bisect(target_epsilon, lambda z: device_level_epsilon(
        z, rounds, delta, num_devices=num_devices, sample_size=sample_size))


def dp_sgd_epsilon(
    noise_multiplier: float, batch_size: int, n_records: int, epochs: float,
    delta: float = 1e-5,
) -> float:
    """ε of record-level DP-SGD on one device: q = batch/records, steps = epochs/q.

    >>> round(dp_sgd_epsilon(1.5, batch_size=40, n_records=1000, epochs=90), 3)
    7.329
    """
    q = min(1.0, batch_size / max(n_records, 1))
    return rdp_epsilon(noise_multiplier, q, round(epochs / q), delta)


def dp_sgd_noise_for_epsilon(
    target_epsilon: float, batch_size: int, n_records: int, epochs: float,
    delta: float = 1e-5,
) -> float:
    """Smallest noise multiplier whose :func:`dp_sgd_epsilon` is at most the target.

    What a device calls to calibrate its own DP-SGD from its own record count.

    >>> z = dp_sgd_noise_for_epsilon(8.0, batch_size=32, n_records=600, epochs=3)
    >>> dp_sgd_epsilon(z, 32, 600, 3) <= 8.0
    True
    """
    q = min(1.0, batch_size / max(n_records, 1))
    return noise_for_epsilon(target_epsilon, q, round(epochs / q), delta)


def noise_for_epsilon(
    target_epsilon: float, sampling_rate: float, steps: int, delta: float = 1e-5
) -> float:
    """Smallest noise multiplier z whose ε is at most ``target_epsilon`` (bisection).

    >>> z = noise_for_epsilon(8.0, sampling_rate=1.0, steps=20)
    >>> rdp_epsilon(z, 1.0, 20) <= 8.0 < rdp_epsilon(z * 0.95, 1.0, 20)
    True
    """
    return _bisect(target_epsilon, lambda z: rdp_epsilon(z, sampling_rate, steps, delta))


def _bisect(target_epsilon: float, epsilon_of: Callable[[float], float]) -> float:
    if target_epsilon <= 0:
        raise InvalidParameterError(
            f"The 'target_epsilon' parameter must be > 0. Got {target_epsilon!r} instead."
        )
    lo, hi = 1e-2, 1.0
    while epsilon_of(hi) > target_epsilon:
        hi *= 2
        if hi > 1e4:
            raise InvalidParameterError(f"No noise multiplier reaches epsilon={target_epsilon}.")
    for _ in range(40):
        mid = math.sqrt(lo * hi)
        if epsilon_of(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.001:
            break
    return hi


@dataclass(frozen=True)
class PrivacyReport:
    """The privacy guarantee of one federated run, stored with the model."""

    unit: str  # "device" or "record" or "none"
    epsilon: float | None
    delta: float
    noise_multiplier: float  # record-level: the devices' mean (each calibrates its own)
    clipping_norm: float
    num_devices: int
    rounds: int
    sample_size: int | None = None  # devices sampled per round (None: all)
    record_epsilon: float | None = None  # record-level ε (largest of the devices), if any

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form (ε ``None`` means no DP: unbounded)."""
        return asdict(self)
