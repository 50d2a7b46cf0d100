"""Differential privacy: which unit is protected, and the (ε, δ) it costs.

Two units, two mechanisms, one accountant (Google's ``dp-accounting`` RDP accountant;
Flower itself reports no ε for a run):

* **Device-level** (a whole device's data may be replaced by any other: the devices taking
  part are known to the server): Flower's ``DifferentialPrivacyServerSideFixedClipping``
  clips each device's update to norm C, divides the sum of the clipped updates by m, the
  devices sampled for the round (fixed, whatever number k of updates arrive or pass the
  screen: a refused or dropped device is a 0 update), and adds Gaussian noise of standard
  deviation z·C/m. Replacing one device's update moves that mean by up to 2C/m, so each
  round is a Gaussian mechanism of noise multiplier z/2 for replace-one neighbours. With
  all n devices in every round (no amplification) R rounds cost
  :func:`device_level_epsilon` (z, R); with m < n sampled per round (Flower's fixed-size
  sampling without replacement) the accountant uses the matching subsampled bound, never
  above the unsampled one. Meaningful only for large fleets: the
  noise is z·C/m per coordinate against a signal of at most C.
* **Record-level** (one reading/window of one device): DP-SGD on each device with Opacus
  (per-sample clipping, noise multiplier z). Opacus's ``DPDataLoader`` samples each record
  with probability q = 1/⌈records/batch⌉ (Poisson) and takes ⌊1/q⌋ steps per epoch, not
  q = batch/records: :func:`opacus_sampling` gives exactly those numbers, and each
  device's ε is :func:`dp_sgd_epsilon` (z, that q, local steps summed over rounds), so the
  ε reported is the ε spent. A device composes the rounds it really trained in with
  :func:`composed_epsilon` (its privacy ledger, :mod:`edgewise.federated.ledger`).
* **Record-level, normaliser statistics** (opt-in, with DP-SGD): each device releases its
  per-condition count, sum and sum of squares through one Gaussian mechanism over readings
  clipped to public bounds (:mod:`edgewise.federated.stats_privacy`), costing a share of
  the same per-device budget; it is one more ``(z, 1.0, 1)`` step in the device's history,
  so the record-level ε composes it with DP-SGD and covers both (:func:`dp_scope`).

>>> round(rdp_epsilon(noise_multiplier=1.5, sampling_rate=0.04, steps=2250, delta=1e-5), 3)
7.329
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from edgewise.errors import InvalidParameterError

__all__ = [
    "MAX_DEVICE_NOISE",
    "MAX_DP_SGD_NOISE",
    "NOT_COVERED",
    "STATS_COVERED",
    "Mechanism",
    "PrivacyReport",
    "ceil_significant",
    "check_device_dp",
    "composed_epsilon",
    "countable_mechanism",
    "device_level_epsilon",
    "device_noise_for_epsilon",
    "dp_sgd_epsilon",
    "dp_sgd_epsilon_floor",
    "dp_sgd_history",
    "dp_sgd_noise_for_epsilon",
    "noise_for_epsilon",
    "not_covered",
    "opacus_sampling",
    "rdp_epsilon",
    "rdp_orders",
    "rdp_to_epsilon",
    "reported_epsilon",
    "scalar_metric",
    "worst_case_epsilon",
    "worst_case_rdp",
]

#: The largest noise multiplier a device uses for record-level DP-SGD. Beyond it the noise on
#: the averaged gradient is over 100·C/batch per coordinate (3x the largest possible signal at
#: the default batch of 32): the model would learn nothing, so a budget that needs more is
#: refused instead (:func:`dp_sgd_epsilon_floor` is the smallest ε it reaches).
MAX_DP_SGD_NOISE = 100.0
#: The same bound for device-level DP (large fleets average the noise over many devices).
MAX_DEVICE_NOISE = 1e4
#: The smallest noise multiplier a calibration returns.
MIN_NOISE = 1e-2

#: One step kind of a DP-SGD history, as Opacus's accountants keep it:
#: (noise multiplier, sampling rate, number of steps).
Mechanism = tuple[float, float, int]

_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [80, 128, 256, 512]


def check_device_dp(noise_multiplier: float, clipping_norm: float, delta: float = 1e-5, *,
                    names: tuple[str, str, str] = ("dp_noise", "dp_clip", "dp_delta")) -> None:
    """Refuse device-level DP parameters out of range, in one line naming the parameter (as
    ``names`` spells it: ``dp_noise`` for the Python API, ``dp-noise`` for a run config,
    ``--dp-noise`` for the CLI), its value and the range allowed, before anything runs.

    The noise multiplier must be a finite number >= 0 (0: no device-level DP; a NaN or a
    negative one ran silently without DP), the clipping norm a finite number > 0 when the
    noise is > 0 (a NaN or an infinite one left every update unclipped: Flower's scale is
    ``min(1, C / norm)``, and the noise's sd ``z * C / m`` was NaN or inf, so the published
    model was all NaN), and delta a number in (0, 1) (checked otherwise only when the ε is
    computed, after the rounds ran).

    >>> check_device_dp(1.0, 0.5)
    >>> check_device_dp(1.0, float("nan"), names=("--dp-noise", "--dp-clip", "--dp-delta"))
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: --dp-clip must be a finite number > 0 with --dp-noise > 0. Got nan.
    """  # noqa: E501
    noise, clip, d = names
    if not 0 <= noise_multiplier < math.inf:
        raise InvalidParameterError(f"{noise} must be a finite number >= 0 (0: no device-level "
                                    f"DP). Got {noise_multiplier}.")
    if noise_multiplier > 0 and not 0 < clipping_norm < math.inf:
        raise InvalidParameterError(f"{clip} must be a finite number > 0 with {noise} > 0. "
                                    f"Got {clipping_norm}.")
    if not 0 < delta < 1:
        raise InvalidParameterError(f"{d} must be a number between 0 and 1, both excluded. "
                                    f"Got {delta}.")


def rdp_epsilon(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float = 1e-5
) -> float:
    """ε after ``steps`` Poisson-subsampled Gaussian steps, by the RDP accountant
    (:func:`composed_epsilon` of that one mechanism).

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
    if not countable_mechanism(noise_multiplier, sampling_rate, steps) or not 0 < delta < 1:
        raise InvalidParameterError(
            "rdp_epsilon needs a finite noise_multiplier > 0, sampling_rate in (0, 1], "
            f"steps >= 0 and delta in (0, 1). Got {noise_multiplier}, {sampling_rate}, "
            f"{steps}, {delta} instead."
        )
    return composed_epsilon([(noise_multiplier, sampling_rate, steps)], delta)


def _unconverged_order(record: object) -> bool:
    """A log filter that drops dp-accounting's "_compute_log_a_frac failed to converge ...
    Excluding this order" warnings: at small noise a few fractional orders near 1 do not
    converge and are left out of the minimum over orders, which can only raise ε (the
    bound stays valid). A calibration met dozens of them in every training message."""
    return not str(getattr(record, "msg", "")).startswith(
        "_compute_log_a_frac failed to converge")


@lru_cache(maxsize=4096)
def _step_rdp(sampling_rate: float, noise_multiplier: float) -> Any:
    """The RDP curve at ``_ORDERS`` of one Poisson-subsampled Gaussian step (a plain
    Gaussian step at q = 1), as ``dp-accounting``'s RDP accountant computes it for a
    ``PoissonSampledDpEvent`` / ``GaussianDpEvent``: a read-only float64 array.

    Cached: the curve depends on (q, z) only and costs up to a second of pure Python
    (fractional orders), while a device's calibration, its ledger and the server's
    accounting ask for the same (q, z) again and again (each step count is a multiple of it).
    """
    import logging

    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    absl = logging.getLogger("absl")
    absl.addFilter(_unconverged_order)
    try:
        return _guarded_curve(rdp._compute_rdp_poisson_subsampled_gaussian, sampling_rate,
                              noise_multiplier)
    finally:
        absl.removeFilter(_unconverged_order)


def _guarded_curve(compute: Callable[..., Any], sampling_rate: float,
                   noise_multiplier: float) -> Any:
    """``compute`` (one of dp-accounting's per-step RDP curves) at ``_ORDERS``, as a
    read-only float64 array that bounds what it can: infinite at an order the accountant
    could not compute (NaN: a NaN curve made dp-accounting's compute_epsilon return epsilon
    0), and everywhere where it fails outright (a noise multiplier so small, 1e-200, that it
    divides by zero or overflows), never a traceback."""
    import numpy as np

    try:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            curve = np.array(compute(q=sampling_rate, noise_multiplier=noise_multiplier,
                                     orders=np.array(_ORDERS)), dtype=np.float64)
    except (ZeroDivisionError, OverflowError):
        curve = np.full(len(_ORDERS), np.inf)
    curve[np.isnan(curve)] = np.inf
    curve.setflags(write=False)
    return curve


def countable_mechanism(z: Any, q: Any, steps: Any) -> bool:
    """Whether ``(z, q, steps)`` is a mechanism the accountant can count: a finite noise
    multiplier > 0, a sampling rate in (0, 1] and a finite step count >= 0 (a NaN passed
    every ``<= 0`` test and composed to epsilon 0).

    >>> countable_mechanism(1.0, 0.05, 20), countable_mechanism(float("nan"), 0.05, 20)
    (True, False)
    """
    try:
        z, q, steps = float(z), float(q), float(steps)
    except (TypeError, ValueError):
        return False
    return 0 < z < math.inf and 0 < q <= 1 and 0 <= steps < math.inf


def composed_epsilon(history: Iterable[Mechanism], delta: float = 1e-5) -> float:
    """ε of a whole history of Poisson-subsampled Gaussian steps, composed by the RDP
    accountant (tighter than adding up each part's ε).

    ``history`` holds ``(noise_multiplier, sampling_rate, steps)`` triples, the form of
    Opacus's ``RDPAccountant.history``; equal mechanisms are merged first.

    >>> one = composed_epsilon([(1.0, 0.05, 200)])
    >>> two = composed_epsilon([(1.0, 0.05, 200), (1.0, 0.05, 200)])
    >>> one < two < 2 * one
    True
    >>> composed_epsilon([])
    0.0
    """
    merged: dict[tuple[float, float], int] = {}
    for z, q, steps in history:
        if not countable_mechanism(z, q, steps):
            raise InvalidParameterError(
                "composed_epsilon needs finite noise multipliers > 0, sampling rates in "
                f"(0, 1] and finite steps >= 0. Got ({z}, {q}, {steps}) instead."
            )
        merged[(float(z), float(q))] = merged.get((float(z), float(q)), 0) + int(steps)
    merged = {k: n for k, n in merged.items() if n > 0}
    if not merged:
        return 0.0
    if not 0 < delta < 1:
        raise InvalidParameterError(f"composed_epsilon needs delta in (0, 1). Got {delta}.")
    # what RdpAccountant(_ORDERS).compose(SelfComposedDpEvent(event, n)) for each part, then
    # get_epsilon(delta), computes (the same sums in the same order), from cached curves
    import numpy as np

    total = np.asarray(_history_rdp([(z, q, n) for (z, q), n in merged.items()]))
    return _epsilon_of_curve(total, delta)


def _epsilon_of_curve(total: Any, delta: float) -> float:
    """dp-accounting's ε of an RDP curve at ``_ORDERS``, never smaller than the curve
    bounds: a NaN order counts as infinite (dp-accounting returned 0 for an all-NaN
    curve), an infinite curve gives ε inf, and an accountant failure (``ZeroDivisionError``,
    ``OverflowError``) ε inf too, rather than a traceback."""
    import numpy as np
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    curve = np.array(total, dtype=np.float64)
    curve[np.isnan(curve)] = np.inf
    if np.isinf(curve).all():
        return math.inf
    try:
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            eps = float(rdp.compute_epsilon(np.array(_ORDERS), curve, delta)[0])
    except (ZeroDivisionError, OverflowError):
        return math.inf
    return math.inf if math.isnan(eps) else eps



def worst_case_epsilon(parts: Iterable[Iterable[Iterable[Mechanism]]],
                       delta: float = 1e-5) -> float:
    """An upper bound on the record-level ε of every device, when devices are told apart
    within each part (one run) but not across parts (a resumed run's devices may have new
    ids): per RDP order, the sum over parts of the largest RDP of a device's history there.

    With one part it is the ε of the worst device's history (:func:`composed_epsilon`).

    >>> a, b = [(1.0, 0.05, 20)], [(1.0, 0.05, 20), (1.0, 0.05, 20)]
    >>> worst_case_epsilon([[a, b]]) == composed_epsilon(b)
    True
    >>> worst_case_epsilon([[a], [a]]) == composed_epsilon(b)
    True
    >>> worst_case_epsilon([])
    0.0
    """
    return rdp_to_epsilon(worst_case_rdp(parts), delta)


def rdp_orders() -> list[float]:
    """The Rényi orders every RDP curve of this module is taken at (as floats)."""
    return [float(a) for a in _ORDERS]


def _history_rdp(history: Iterable[Mechanism]) -> list[float]:
    """The RDP curve (at :func:`rdp_orders`) of one history of Poisson-subsampled Gaussian
    steps, composed."""
    import numpy as np

    mine = np.zeros(len(_ORDERS))
    for z, q, steps in history:
        if not countable_mechanism(z, q, steps):
            raise InvalidParameterError(
                "An RDP history needs finite noise multipliers > 0, sampling rates in (0, 1] "
                f"and finite steps >= 0. Got ({z}, {q}, {steps}) instead.")
        if int(steps):  # 0 steps spend nothing (and inf * 0 would be NaN)
            mine += _step_rdp(float(q), float(z)) * int(steps)
    return [float(x) for x in mine]


def worst_case_rdp(parts: Iterable[Iterable[Iterable[Mechanism]]]) -> list[float]:
    """The RDP curve behind :func:`worst_case_epsilon`: per order (:func:`rdp_orders`),
    the sum over parts of the largest RDP of a device's history there.

    >>> worst_case_rdp([]) == [0.0] * len(rdp_orders())
    True
    """
    import numpy as np

    total = np.zeros(len(_ORDERS))
    for histories in parts:
        worst = np.zeros(len(_ORDERS))
        for history in histories:
            worst = np.maximum(worst, np.asarray(_history_rdp(history)))
        total += worst
    return [float(x) for x in total]


def rdp_to_epsilon(curve: Iterable[float], delta: float = 1e-5) -> float:
    """ε at ``delta`` of an RDP curve taken at :func:`rdp_orders` (0 for a curve of 0)."""
    import numpy as np

    total = np.asarray(list(curve), dtype=np.float64)
    if total.shape != (len(_ORDERS),):
        raise InvalidParameterError(
            f"An RDP curve needs one value per order ({len(_ORDERS)}). Got {total.shape}.")
    if not total.any():
        return 0.0
    if not 0 < delta < 1:
        raise InvalidParameterError(f"An epsilon needs delta in (0, 1). Got {delta}.")
    return _epsilon_of_curve(total, delta)


def device_level_epsilon(
    noise_multiplier: float, rounds: int, delta: float = 1e-5, *,
    num_devices: int | None = None, sample_size: int | None = None,
) -> float:
    """ε of device-level DP (Flower's fixed-clipping wrapper) after ``rounds`` rounds.

    The neighbours are replace-one (one device's whole history swapped for another's; the
    devices taking part are known). The server sums the clipped updates it averages (each
    of norm at most C, with equal weights) and divides by m, the devices sampled for the
    round, a configured number: a device that dropped out or was refused by the (per-device)
    screen counts as a 0 update, so the denominator never depends on the data. It adds
    noise of sd z·C/m; replacing one device's clipped update moves that mean by up to 2C/m,
    so each round is one Gaussian mechanism of noise multiplier z/2, whatever number of
    updates reached the mean. (Dividing by the k updates received, with noise z·C/k, made
    the noise's variance itself depend on whether one device was averaged: this ε did not
    hold then.) With every device in every round (``sample_size`` None or equal to
    ``num_devices``) that is the whole accounting. When Flower samples ``sample_size`` of
    the ``num_devices`` per round (fixed size, without replacement, as ``FedAvg`` does) the
    accountant also takes the sampled-without-replacement RDP bound (stated for replace-one
    neighbours) and the smaller ε of the two holds: that bound is loose when nearly every
    device is sampled, and sampling can only help (a round is a mixture, over the sample,
    of mechanisms each at most the unsampled one).

    >>> device_level_epsilon(noise_multiplier=5.0, rounds=10) < device_level_epsilon(2.0, 10)
    True
    >>> round(device_level_epsilon(2.0, 10), 3) == round(rdp_epsilon(1.0, 1.0, 10), 3)
    True
    >>> full = device_level_epsilon(2.0, 50, num_devices=260, sample_size=260)
    >>> full > device_level_epsilon(2.0, 50, num_devices=260, sample_size=26)
    True
    >>> full >= device_level_epsilon(2.0, 50, num_devices=260, sample_size=259)
    True
    """
    if not 0 < noise_multiplier < math.inf or not 0 <= rounds < math.inf:
        raise InvalidParameterError(
            "device_level_epsilon needs a finite noise_multiplier > 0 and rounds >= 0. Got "
            f"{noise_multiplier} and {rounds} instead.")
    # replace-one: one device moves the sum over m by up to 2C/m, noise z·C/m
    unsampled = rdp_epsilon(noise_multiplier / 2.0, 1.0, rounds, delta)
    if num_devices is None or sample_size is None or sample_size >= num_devices:
        return unsampled
    if not 1 <= sample_size:
        raise InvalidParameterError(
            "device_level_epsilon needs sample_size >= 1, noise_multiplier > 0 and "
            f"rounds >= 0. Got {sample_size}, {noise_multiplier}, {rounds} instead."
        )
    if rounds == 0:
        return 0.0
    # what dp-accounting's REPLACE_ONE RdpAccountant composes for rounds of a
    # SampledWithoutReplacementDpEvent(num_devices, sample_size, GaussianDpEvent(z / 2)),
    # with the guards of _guarded_curve: at a noise multiplier of 1e-155 its curve is NaN, and
    # its epsilon of a NaN curve was 0 (below 1e-162 it divided by zero)
    sampled = _epsilon_of_curve(_wor_rdp(sample_size / num_devices, noise_multiplier / 2.0)
                                * int(rounds), delta)
    return min(sampled, unsampled)


@lru_cache(maxsize=256)
def _wor_rdp(sampling_rate: float, noise_multiplier: float) -> Any:
    """The RDP curve at ``_ORDERS`` of one Gaussian step on a sample drawn without
    replacement (replace-one neighbours; Wang, Balle and Kasiviswanathan's bound, as
    ``dp-accounting`` computes it): a read-only float64 array, infinite at an order the
    accountant cannot compute (NaN) and everywhere when it fails outright."""
    from dp_accounting.rdp import rdp_privacy_accountant as rdp

    return _guarded_curve(rdp._compute_rdp_sample_wor_gaussian, sampling_rate,
                          noise_multiplier)


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
        z, rounds, delta, num_devices=num_devices, sample_size=sample_size),
        max_noise=MAX_DEVICE_NOISE)


def opacus_sampling(batch_size: int, n_records: int) -> tuple[float, int]:
    """The Poisson sampling rate and steps per epoch of Opacus's ``DPDataLoader`` built from a
    ``DataLoader(batch_size=batch_size)`` over ``n_records`` records.

    Opacus samples each record with probability 1/len(loader) = 1/⌈records/batch⌉ (not
    batch/records) and yields ⌊1/rate⌋ batches per epoch (which, by floating point, is one
    fewer than ⌈records/batch⌉ for a few sizes such as 93 batches).

    >>> opacus_sampling(300, 445)
    (0.5, 2)
    >>> opacus_sampling(32, 600)
    (0.05263157894736842, 19)
    >>> opacus_sampling(64, 10)
    (1.0, 1)
    """
    if batch_size < 1 or n_records < 1:
        raise InvalidParameterError(
            "opacus_sampling needs batch_size >= 1 and n_records >= 1. "
            f"Got {batch_size} and {n_records} instead."
        )
    rate = 1 / math.ceil(n_records / batch_size)
    return rate, int(1 / rate)


def dp_sgd_history(noise_multiplier: float, batch_size: int, n_records: int,
                   epochs: float) -> Mechanism:
    """The ``(noise_multiplier, sampling_rate, steps)`` of ``epochs`` epochs of Opacus
    DP-SGD on one device (see :func:`opacus_sampling`).

    >>> dp_sgd_history(1.0, 300, 445, 3)
    (1.0, 0.5, 6)
    """
    rate, per_epoch = opacus_sampling(batch_size, n_records)
    return float(noise_multiplier), rate, round(epochs * per_epoch)


def dp_sgd_epsilon(
    noise_multiplier: float, batch_size: int, n_records: int, epochs: float,
    delta: float = 1e-5,
) -> float:
    """ε of record-level DP-SGD on one device, at the sampling rate and step count Opacus
    really uses (:func:`opacus_sampling`: q = 1/⌈records/batch⌉, ⌊1/q⌋ steps an epoch).

    >>> round(dp_sgd_epsilon(1.5, batch_size=40, n_records=1000, epochs=90), 3)
    7.329
    >>> round(dp_sgd_epsilon(0.604, batch_size=300, n_records=445, epochs=1), 2)  # q=0.5
    10.93
    """
    z, q, steps = dp_sgd_history(noise_multiplier, batch_size, n_records, epochs)
    return rdp_epsilon(z, q, steps, delta)


def dp_sgd_epsilon_floor(batch_size: int, n_records: int, epochs: float,
                         delta: float = 1e-5, prior: Iterable[Mechanism] = ()) -> float:
    """The smallest record-level ε DP-SGD can meet: its ε at :data:`MAX_DP_SGD_NOISE`
    (after the ``prior`` history, if any). A smaller budget is refused.

    >>> round(dp_sgd_epsilon_floor(32, 600, epochs=2), 4)
    0.0111
    """
    return composed_epsilon(
        [*prior, dp_sgd_history(MAX_DP_SGD_NOISE, batch_size, n_records, epochs)], delta)


def dp_sgd_noise_for_epsilon(
    target_epsilon: float, batch_size: int, n_records: int, epochs: float,
    delta: float = 1e-5, prior: Iterable[Mechanism] = (),
    prior_rdp: Iterable[float] | None = None,
) -> float:
    """Smallest noise multiplier whose :func:`dp_sgd_epsilon` is at most the target.

    What a device calls to calibrate its own DP-SGD from its own record count. With a
    ``prior`` history (what the device spent before, from its privacy ledger) the noise is
    the smallest whose ε composed after that history is at most the target. Raises
    :class:`~edgewise.errors.InvalidParameterError` when even :data:`MAX_DP_SGD_NOISE`
    does not reach the target.

    ``prior_rdp`` (an RDP curve at :func:`rdp_orders`) is spending before that history
    known only as a curve: the server's worst case over a resumed run's earlier rounds.

    >>> z = dp_sgd_noise_for_epsilon(8.0, batch_size=32, n_records=600, epochs=3)
    >>> dp_sgd_epsilon(z, 32, 600, 3) <= 8.0
    True
    """
    prior = list(prior)
    if prior_rdp is not None:
        base = [a + b for a, b in zip(list(prior_rdp), _history_rdp(prior), strict=True)]
        spent = rdp_to_epsilon(base, delta)

        def with_prior(z: float) -> float:
            new = _history_rdp([dp_sgd_history(z, batch_size, n_records, epochs)])
            return rdp_to_epsilon([a + b for a, b in zip(base, new, strict=True)], delta)

        return _bisect(target_epsilon, with_prior, max_noise=MAX_DP_SGD_NOISE,
                       what=_dp_sgd_what(batch_size, n_records, epochs, delta)
                       + f" after the run's earlier rounds, which spent epsilon={spent:.4g}")
    if not prior:
        _, q, steps = dp_sgd_history(1.0, batch_size, n_records, epochs)
        return _bisect(target_epsilon, lambda z: rdp_epsilon(z, q, steps, delta),
                       max_noise=MAX_DP_SGD_NOISE, what=_dp_sgd_what(
                           batch_size, n_records, epochs, delta))
    return _bisect(target_epsilon, lambda z: composed_epsilon(
        [*prior, dp_sgd_history(z, batch_size, n_records, epochs)], delta),
        max_noise=MAX_DP_SGD_NOISE,
        what=_dp_sgd_what(batch_size, n_records, epochs, delta) + " after the "
        f"{sum(s for _, _, s in prior)} steps already spent")


def _dp_sgd_what(batch_size: int, n_records: int, epochs: float, delta: float) -> str:
    q, per_epoch = opacus_sampling(batch_size, n_records)
    return (f"for {epochs:g} epoch(s) of DP-SGD over {n_records} records (batch "
            f"{batch_size}, sampling rate {q:.4g}, {round(epochs * per_epoch)} steps, "
            f"delta {delta:g})")


def noise_for_epsilon(
    target_epsilon: float, sampling_rate: float, steps: int, delta: float = 1e-5
) -> float:
    """Smallest noise multiplier z whose ε is at most ``target_epsilon`` (bisection).

    >>> z = noise_for_epsilon(8.0, sampling_rate=1.0, steps=20)
    >>> rdp_epsilon(z, 1.0, 20) <= 8.0 < rdp_epsilon(z * 0.95, 1.0, 20)
    True
    """
    return _bisect(target_epsilon, lambda z: rdp_epsilon(z, sampling_rate, steps, delta),
                   max_noise=MAX_DEVICE_NOISE)


def _bisect(target_epsilon: float, epsilon_of: Callable[[float], float], *,
            max_noise: float, what: str = "") -> float:
    """The smallest noise multiplier z in [:data:`MIN_NOISE`, ``max_noise``] with
    ``epsilon_of(z) <= target_epsilon``, to 0.1 %: the z returned meets the target, and a
    z less than 0.1 % smaller was seen to miss it (or z is :data:`MIN_NOISE`).

    ε falls with z close to a power law (ε ∝ 1/z for large z, steeper below), so the root
    is sought on log z against log ε: a first step from z = 1 that assumes slope -1 (which
    oversteps the root, so it brackets it), then Brent's method (SciPy's ``brentq``). Each
    ε costs a fresh RDP curve (tens of milliseconds here, far more on an edge CPU, in every
    training message); this takes 5-8 of them where halving the bracket took 12-15, and
    steps that double while the root is not bracketed keep a flat ε (a prior history close
    to the target) to a few dozen.
    """
    if not 0 < target_epsilon < math.inf:
        raise InvalidParameterError(
            f"The 'target_epsilon' parameter must be a finite number > 0. "
            f"Got {target_epsilon!r} instead."
        )
    from scipy.optimize import brentq

    log_t = math.log(target_epsilon)
    x_min, x_max = math.log(MIN_NOISE), math.log(max_noise)
    tol = math.log(1.001)
    seen: dict[float, float] = {}

    def gap(x: float) -> float:
        """log ε - log target at z = e^x: > 0 means too little noise."""
        if x not in seen:
            eps = epsilon_of(math.exp(x))
            seen[x] = math.log(eps) - log_t if eps > 0 else -math.inf
        return seen[x]

    x = min(0.0, x_max)  # z = 1
    lo: float | None = None  # the bracket: gap(lo) > 0 >= gap(hi)
    hi: float | None = None
    step = 0.0
    while lo is None or hi is None:
        g = gap(x)
        if g > 0:
            lo = x
            if x >= x_max:
                floor = math.exp(g + log_t)
                raise InvalidParameterError(
                    f"No noise multiplier up to {max_noise:g} reaches "
                    f"epsilon={target_epsilon:g}{' ' + what if what else ''}: the most noise "
                    f"gives epsilon={floor:.4g}. Use a budget >= {ceil_significant(floor)}."
                )
        else:
            hi = x
            if x <= x_min:
                return MIN_NOISE
        # a step of the gap (slope -1), and at least twice the last one: after a prior
        # history close to the target, ε flattens towards what it spent, the gap shrinks
        # with every step, and steps of the gap alone took hundreds of ε (40 s) to bracket
        step = max(abs(g), tol, 2 * step) if math.isfinite(g) else math.inf
        x = min(x + step, x_max) if hi is None else max(x - step, x_min)
    for _ in range(3):  # brentq's last bracket is about xtol wide; rerun if it is not
        if hi - lo < tol:
            break
        brentq(lambda x: min(max(gap(x), -1e300), 1e300), lo, hi, xtol=1.9 * tol,
               rtol=1e-12)
        hi = min(x for x, g in seen.items() if g <= 0)
        lo = max(x for x, g in seen.items() if g > 0 and x < hi)
    while hi - lo >= tol:  # a bracket brentq did not close (ε not continuous): halve it
        mid = (lo + hi) / 2
        if gap(mid) > 0:
            lo = mid
        else:
            hi = mid
    return math.exp(hi)


def ceil_significant(x: float, digits: int = 3) -> float:
    """``x`` rounded up to ``digits`` significant digits: a budget to suggest that is at
    least ``x``.

    >>> ceil_significant(0.011068)
    0.0111
    """
    if x <= 0 or not math.isfinite(x):
        return x
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale - 1e-9) / scale


@dataclass(frozen=True)
class PrivacyReport:
    """The privacy guarantee of one federated run, stored with the model."""

    unit: str  # "device" or "record" or "none"
    epsilon: float | None
    delta: float
    noise_multiplier: float  # record-level: the devices' mean (each calibrates its own)
    clipping_norm: float
    num_devices: int
    rounds: int  # rounds whose privacy the ε counts (device-level: aggregated with noise)
    sample_size: int | None = None  # devices sampled per round (None: all)
    record_epsilon: float | None = None  # record-level ε (largest of the devices), if any
    #: what the ε covers, and what leaves the devices outside it (see :func:`dp_scope`)
    dp_covers: str = ""
    not_covered: list[str] = field(default_factory=lambda: list(NOT_COVERED))
    #: the rounds the run declared (``rounds`` is fewer when rounds were skipped or missed)
    rounds_planned: int | None = None
    #: ε of the normaliser statistics' Gaussian mechanism alone (``None``: they were sent
    #: without DP); ``record_epsilon`` composes it with DP-SGD
    stats_epsilon: float | None = None
    #: that mechanism's noise multiplier (noise sd / its sensitivity ``sqrt(1 + 1.25 F)``)
    stats_noise_multiplier: float = 0.0
    #: the public per-sensor bounds readings were clipped to (``StatsBounds.to_doc``)
    stats_bounds: dict[str, object] | None = None

    def __post_init__(self) -> None:
        covered = self.stats_covered
        if not self.dp_covers:
            object.__setattr__(self, "dp_covers",
                               dp_scope(self.unit, self.record_epsilon, stats=covered))
        if covered and list(self.not_covered) == list(NOT_COVERED):
            object.__setattr__(self, "not_covered", not_covered(stats=True))

    @property
    def stats_covered(self) -> bool:
        """Whether the record-level ε covers the normaliser statistics too."""
        return self.stats_epsilon is not None and self.record_epsilon is not None

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form (ε ``None`` means no DP: unbounded)."""
        return asdict(self)


#: What every federated run sends or publishes outside any DP accounting.
NOT_COVERED = (
    ("normaliser statistics (each device's per-condition record count, sum and sum of "
     "squares, sent without DP noise, and the per-condition mean and std published in the "
     "model metadata, a trimmed combination of the devices' own means and variances)"),
    "per-device loss metrics (train-loss, eval-loss) sent to the server in the clear",
    "per-device record counts (num-examples)",
)


#: What the record-level ε covers of the normaliser when its statistics went through DP.
STATS_COVERED = ("the normaliser statistics (each device's per-condition count, sum and sum "
                 "of squares of readings clipped to public bounds, with Gaussian noise, and "
                 "the mean and std published from them)")


def not_covered(stats: bool = False) -> list[str]:
    """What leaves the devices outside the run's ε: :data:`NOT_COVERED`, less the normaliser
    statistics when they went through DP (``stats``).

    >>> len(not_covered()), len(not_covered(stats=True))
    (3, 2)
    """
    return list(NOT_COVERED[1:] if stats else NOT_COVERED)


def dp_scope(unit: str, record_epsilon: float | None = None, *, stats: bool = False) -> str:
    """What a run's ε covers, in words; ``stats``: the record-level ε also covers the
    normaliser statistics (composed with DP-SGD under the same per-device budget).

    >>> dp_scope("none")
    'nothing (no differential privacy)'
    >>> dp_scope("record")
    "model weights only (each device's DP-SGD updates)"
    >>> dp_scope("record", 8.0, stats=True).startswith("model weights (each device's DP-SGD")
    True
    """
    if unit == "device":
        return ("model weights only (server-side Gaussian noise on the mean of clipped device "
                "updates" + ("; devices also ran DP-SGD" if record_epsilon else "") + ")"
                + ("; the record-level epsilon also covers " + STATS_COVERED if stats else ""))
    if unit == "record":
        if stats:
            return ("model weights (each device's DP-SGD updates) and " + STATS_COVERED
                    + ", composed by the RDP accountant under one per-device budget")
        return "model weights only (each device's DP-SGD updates)"
    return "nothing (no differential privacy)"


def scalar_metric(value: Any) -> float | None:
    """``value`` as a float when it is a finite int or float (not a bool, not a list),
    else ``None``: what the server may compute with from a device's reply.

    >>> scalar_metric(3), scalar_metric(float("nan")), scalar_metric([1.0]), scalar_metric(True)
    (3.0, None, None, None)
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def reported_epsilon(value: Any) -> float:
    """How the server reads the ``dp-sgd-epsilon`` a device reported: a finite number >= 0
    is that ε; anything else (NaN, infinite, below 0, a list, a bool) is infinite, never
    nothing, so no ε smaller than what the devices spent comes of it (a NaN once made the
    round's maximum NaN and the round dropped out of the report). The one reading of a
    reported ε: the train-metric aggregation, SecAgg+'s spent rounds and the run ledger's
    rounds all use it (here, beside the accounting, as the ledger imports no Flower).

    >>> reported_epsilon(7.99), reported_epsilon(0), reported_epsilon(float("nan"))
    (7.99, 0.0, inf)
    >>> reported_epsilon(-1.0), reported_epsilon([1.0]), reported_epsilon(True)
    (inf, inf, inf)
    """
    x = scalar_metric(value)
    return math.inf if x is None or x < 0 else x
