"""Robust aggregation: Flower's rules, wrapped so that bad updates never count.

Flower ships the Byzantine-robust rules (``FedTrimmedAvg``, ``Krum``, ``Bulyan``) but
leaves their preconditions to the caller: Krum runs with f = 0 and any n, Bulyan skips a
round silently when too few replies arrive, and every rule trusts each client's
self-reported ``"num-examples"``. :class:`RobustStrategy` wraps any Flower strategy the
way Flower's DP wrappers do (it overrides ``aggregate_train`` and delegates the rest) and

1. refuses configurations that break the rule's own condition, naming n, f and β
   (Krum needs n > 2f + 2, Multi-Krum that too and at most n - f selected, Bulyan
   n ≥ 4f + 3 and f ≥ 1 (with f = 0 it averages every update: a plain mean), the trimmed
   mean ⌊βn⌋ ≥ f and 2⌊βn⌋ < n, as Flower counts ⌊βn⌋, FedMedian n > 2f), and any other
   rule (FedAvg, FedProx, FedAvgM, FedAdam, ...: means) with f > 0;
2. checks every update before it counts: the same record names and metric keys as the
   round's other replies (Flower refuses the whole round otherwise), every metric a finite
   number (``dp-sgd-epsilon`` also >= 0: the privacy accounting reads them), a DP-SGD
   mechanism when the run asked for record-level DP (``require_dp_sgd``: reason
   ``no-dp-sgd``; one stating a noise multiplier below :data:`MIN_DP_SGD_NOISE`, whose ε
   the accounting cannot compute: reason ``low-dp-sgd-noise``), arrays Flower can read
   (:func:`decode_arrays`: a numpy ``.npy`` serialisation; reason ``shape``, read once
   per reply, before any other check), the same array names and shapes as the global
   model (the arrays are then put in the model's order: Krum, Bulyan and Flower's DP clip
   pair them by position), all values finite, update norm at most ``max_norm_ratio`` ×
   the round's median (a median of 0, most devices sending the model back unchanged, lets
   only updates of float32 rounding size through). With one or two updates in a round the
   median is no vote (the median of two norms is their mean, which the larger always
   passes), so the bound is then ``max_norm_ratio`` × the smaller of the two, at most
   ``max_norm_ratio`` × the median norm of the updates accepted in earlier rounds, and at
   most :data:`MAX_UPDATE_TO_MODEL` × the global model's norm;
3. caps each client's ``"num-examples"`` at ``max_examples_ratio`` × the round's median
   (the smaller of two, with two updates: the median of two is their mean, which never
   caps the larger) or ``max_num_examples``, so one client cannot claim 10⁹ examples and
   take the average;
4. screens the evaluation replies the same way (metric layout of most replies, finite
   numbers, ``"num-examples"`` capped), and averages each evaluation metric without the
   ``max(f, 1)`` largest and smallest values (:func:`trimmed_mean`), so one device's reply
   can neither end the run (Flower raised on mismatched metric keys) nor set the published
   evaluation loss (10⁹ examples and a loss of 10⁶); those refusals carry reasons prefixed
   ``eval-``. That takes at least ``2 max(f, 1) + 1`` evaluation replies (3 for f <= 1):
   with fewer there is nothing to trim (the median of two is their mean) and one device
   *can* set them, so the metrics are still published but flagged ``eval-robust`` 0
   (1 when they were trimmed).

Rejections and caps are kept in :attr:`RobustStrategy.events` (round, node, reason); a
capped weight (reason ending ``-capped``) is not a refusal: that reply is used. Their
rounds, and :attr:`RobustStrategy.skipped_rounds`, are the run's (Flower's round plus
:attr:`RobustStrategy.round_offset`, the rounds a resumed run had done).

Krum, Multi-Krum and Bulyan select here, not in Flower (:func:`krum_scores`): on the
updates (reply minus the global model) in float64 from explicit differences (Flower 1.41's
``|x|² + |y|² - 2 x·y`` on the float32 weights picked the attacker once updates were small
beside the weights), Multi-Krum averaging its picks with equal weights and Bulyan following
El Mhamdi et al. 2018 (:func:`bulyan_select`, :func:`bulyan_coordinates`).

A device that fails or drops out is not one of the f (it may be honest), so it does not
loosen the rule: the trimmed mean still trims ``max(f, 1)`` per side, less one per update
refused by the screen, from the updates that are left (raising β for that round when the
configured one would trim fewer), and a round with too few updates left to do so is
skipped, keeping the previous global model (:attr:`RobustStrategy.skipped_rounds`).

Secure aggregation (Flower's SecAgg+) hides individual updates from the server, so it
cannot be combined with these checks or with any robust rule: choose one or the other.

>>> from flwr.serverapp.strategy import Krum
>>> RobustStrategy(Krum(num_malicious_nodes=1, min_train_nodes=4), num_malicious_nodes=1)
Traceback (most recent call last):
...
edgewise.errors.InvalidParameterError: Krum cannot tolerate f=1 malicious clients with n=4...
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from edgewise.errors import InvalidParameterError
from edgewise.federated.privacy import MIN_NOISE, reported_epsilon, scalar_metric

__all__ = [
    "MIN_DP_SGD_NOISE",
    "WITHOUT_DP_SGD_KEY",
    "DPSGDScreen",
    "RejectedUpdate",
    "RobustStrategy",
    "aggregate_train_metrics",
    "auto_beta",
    "bulyan_coordinates",
    "bulyan_select",
    "check_rule_conditions",
    "decode_arrays",
    "dp_sgd_noise_problem",
    "dp_sgd_problem",
    "dp_sgd_refusal",
    "in_model_order",
    "is_cap",
    "krum_scores",
    "least_beta",
    "make_strategy",
    "metrics_problem",
    "multi_krum_select",
    "reported_epsilon",
    "scalar_metric",
    "states_dp_sgd",
    "trimmed_mean",
    "unreadable_arrays",
]

log = logging.getLogger(__name__)

STRATEGIES = ("fedavg", "trimmed", "krum", "bulyan")
#: The Flower rules :func:`check_rule_conditions` accepts with f > 0 (each with its condition).
TOLERANT_RULES = "FedTrimmedAvg, Krum, MultiKrum, Bulyan, FedMedian"
#: Rejection reasons that identify a faulty client (one of the f); "error" does not.
COUNTS_AGAINST_F = frozenset({"shape", "metrics", "no-dp-sgd", "low-dp-sgd-noise", "dtype",
                              "non-finite", "norm", "weight"})
#: The smallest DP-SGD noise multiplier a train reply may state and have it counted as
#: DP-SGD (the smallest a device's calibration returns). Below it ε is astronomically
#: large (5e4 at 1e-2, 5.5e200 at 1e-100), and at 1e-200 the accountant divides by zero.
MIN_DP_SGD_NOISE = MIN_NOISE
#: The train metric :func:`aggregate_train_metrics` adds when some of a round's updates
#: state a DP-SGD mechanism and others (that many) none: no record-level ε covers it.
WITHOUT_DP_SGD_KEY = "updates-without-dp-sgd"
#: The round's median update norm is raised to this fraction of the global model's norm
#: before ``max_norm_ratio`` multiplies it (see :meth:`RobustStrategy.screen`).
NORM_FLOOR = 1e-6
#: With fewer than three updates in a round (no majority to take a median over), and for
#: a SecAgg+ aggregate, no update may move the model by more than this multiple of the
#: global model's norm (an honest device's round moved the pump and C-MAPSS models by at
#: most 0.87 of it, at up to 10 local epochs, with or without DP-SGD).
MAX_UPDATE_TO_MODEL = 2.0
#: How many earlier rounds' median accepted update norms the small-round bound looks back on.
NORM_HISTORY = 5
#: The evaluation metric :meth:`RobustStrategy.aggregate_evaluate` adds: 1 when each metric
#: is a trimmed mean no one device can set, 0 when too few devices replied to trim.
EVAL_ROBUST_KEY = "eval-robust"

# (ArrayRecord name, MetricRecord name, metric keys): what Flower needs the same in every reply
_Layout = tuple[str, str, frozenset[str]]


@dataclass(frozen=True)
class RejectedUpdate:
    """One update the wrapper refused or whose weight it capped, and why."""

    server_round: int
    node_id: int
    reason: str  # "shape", "metrics", "no-dp-sgd", "low-dp-sgd-noise", "dtype", "non-finite",
    # "norm", "weight",
    # "weight-capped", "error"; an evaluation reply's "eval-shape", "eval-metrics",
    # "eval-weight", "eval-weight-capped"
    detail: str


def is_cap(reason: str) -> bool:
    """Whether a :class:`RejectedUpdate` reason is a capped weight (``weight-capped``,
    ``eval-weight-capped``: the reply was used, with its weight capped), not a refusal.

    >>> is_cap("eval-weight-capped"), is_cap("eval-weight"), is_cap("norm")
    (True, False, False)
    """
    return reason.endswith("-capped")


def metrics_problem(metrics: Mapping[str, Any], ignore: str = "") -> str | None:
    """Why a reply's metrics cannot be used (``None``: they can): every value but
    ``ignore``'s (the weight, checked on its own) must be a finite number, and
    ``dp-sgd-epsilon`` one >= 0 (the ε a device spent; a NaN one made the run's maximum
    NaN and the round drop out of the reported ε).

    >>> metrics_problem(MetricRecord({"num-examples": 3, "train-loss": 0.5})) is None
    True
    >>> metrics_problem(MetricRecord({"train-loss": [1.0, 2.0], "dp-sgd-epsilon": -1.0}))
    "metric 'train-loss' is [1.0, 2.0] and 'dp-sgd-epsilon' is -1.0; every metric must be a finite number (dp-sgd-epsilon >= 0)"
    """  # noqa: E501
    bad = [f"{k!r} is {v!r}" for k, v in metrics.items() if k != ignore
           and (scalar_metric(v) is None
                or (k == "dp-sgd-epsilon" and math.isinf(reported_epsilon(v))))]
    if not bad:
        return None
    return (f"metric {' and '.join(bad)}; every metric must be a finite number "
            "(dp-sgd-epsilon >= 0)")


def dp_sgd_mechanism(metrics: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """The DP-SGD mechanism ``(dp-sgd-noise, dp-sgd-rate, dp-sgd-steps)`` a train reply's
    metrics state, when it is one the privacy accounting can count (noise at least
    :data:`MIN_DP_SGD_NOISE`, rate in (0, 1], steps > 0, each a finite number); ``None``
    otherwise.

    >>> dp_sgd_mechanism({"dp-sgd-noise": 1.1, "dp-sgd-rate": 0.05, "dp-sgd-steps": 19})
    (1.1, 0.05, 19.0)
    >>> dp_sgd_mechanism({"dp-sgd-noise": 1.1, "dp-sgd-rate": 1.5, "dp-sgd-steps": 19})
    >>> dp_sgd_mechanism({"dp-sgd-noise": 1e-200, "dp-sgd-rate": 0.05, "dp-sgd-steps": 19})
    """
    z, q, steps = (scalar_metric(metrics.get(k))
                   for k in ("dp-sgd-noise", "dp-sgd-rate", "dp-sgd-steps"))
    if z is not None and q is not None and steps is not None \
            and z >= MIN_DP_SGD_NOISE and 0 < q <= 1 and steps > 0:
        return z, q, steps
    return None


def dp_sgd_noise_problem(metrics: Mapping[str, Any]) -> str | None:
    """Why a train reply's ``dp-sgd-noise`` is no DP-SGD the accounting can count though
    it states some (a finite number in (0, :data:`MIN_DP_SGD_NOISE`)); ``None`` otherwise.

    >>> dp_sgd_noise_problem({"dp-sgd-noise": 1e-200})
    'dp-sgd-noise 1e-200 is below 0.01, the smallest noise multiplier the privacy accounting counts as DP-SGD (its epsilon is astronomically large, or cannot be computed at all)'
    >>> dp_sgd_noise_problem({"dp-sgd-noise": 0.0}) is None
    True
    """  # noqa: E501
    z = scalar_metric(metrics.get("dp-sgd-noise"))
    if z is not None and 0 < z < MIN_DP_SGD_NOISE:
        return (f"dp-sgd-noise {z!r} is below {MIN_DP_SGD_NOISE:g}, the smallest noise "
                "multiplier the privacy accounting counts as DP-SGD (its epsilon is "
                "astronomically large, or cannot be computed at all)")
    return None


def dp_sgd_refusal(metrics: Mapping[str, Any]) -> tuple[str, str] | None:
    """The screen's reason and detail for refusing a train reply in a run that asked for
    record-level DP-SGD (``None``: it states a DP-SGD mechanism): ``low-dp-sgd-noise``
    when it states a noise multiplier below :data:`MIN_DP_SGD_NOISE`
    (:func:`dp_sgd_noise_problem`), ``no-dp-sgd`` when it states no mechanism.

    >>> dp_sgd_refusal({"dp-sgd-noise": 1e-200, "dp-sgd-rate": 0.05, "dp-sgd-steps": 19})[0]
    'low-dp-sgd-noise'
    """
    why = dp_sgd_problem(metrics)
    if why is None:
        return None
    reason = "low-dp-sgd-noise" if dp_sgd_noise_problem(metrics) else "no-dp-sgd"
    return reason, (f"{why}; an update trained without it would void the record-level "
                    "epsilon reported for the model")


def in_model_order(msg: Message, order: Sequence[str]) -> None:
    """Put each of a reply's ArrayRecords that holds exactly the model's array names
    (``order``) in that order, in place: Krum, Bulyan and Flower's DP clip pair arrays with
    the model by position (a device sending the same names in another order escaped the
    clip, or crashed the round). Another set of names is left as it is (for the screen to
    refuse). Used by :class:`RobustStrategy`'s screen and the device-level DP wrapper.
    """
    order = list(order)
    for name, record in list(msg.content.array_records.items()):
        if list(record.keys()) != order and set(record.keys()) == set(order):
            msg.content[name] = ArrayRecord({k: record[k] for k in order})


def decode_arrays(record: ArrayRecord) -> dict[str, np.ndarray]:
    """Each of a reply's arrays as one numpy array, by name, in the record's order.

    Flower's ``Array.numpy()`` raises on an array of another serialisation type
    (``stype``) or whose bytes are not a numpy ``.npy`` file, and returns an ``NpzFile``
    for a zip archive: one device sending such an array ended the whole run (the wire
    log, the screens and the DP clip read every reply's arrays). Any such array raises
    :class:`ValueError` here instead, naming it and why, for the caller to refuse that
    reply alone.

    >>> from flwr.app import Array
    >>> decode_arrays(ArrayRecord({"w": Array(np.zeros(2, np.float32))}))["w"].tolist()
    [0.0, 0.0]
    >>> decode_arrays(ArrayRecord({"w": Array(dtype="float32", shape=(2,),
    ...                                      stype="numpy.ndarray", data=b"junk")}))
    Traceback (most recent call last):
    ...
    ValueError: array 'w' (stype 'numpy.ndarray', 4 bytes) cannot be read as a numpy array (ValueError: ...); every array must be a numpy .npy serialisation
    """  # noqa: E501
    out: dict[str, np.ndarray] = {}
    for name, array in record.items():
        why = None
        try:
            value = array.numpy()
        except Exception as exc:  # any failure to read is the sending device's
            why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}"
        else:
            if not isinstance(value, np.ndarray):
                why = f"it holds a {type(value).__name__}, not one array"
        if why is not None:
            raise ValueError(
                f"array {name!r} (stype {str(array.stype)[:40]!r}, {len(array.data)} bytes) "
                f"cannot be read as a numpy array ({why}); every array must be a numpy .npy "
                "serialisation")
        out[name] = value
    return out


def unreadable_arrays(msg: Message) -> str | None:
    """Why one of a reply's arrays cannot be read (:func:`decode_arrays`; ``None``: all
    can, or the reply is a failure)."""
    if msg.has_error():
        return None
    for record in msg.content.array_records.values():
        try:
            decode_arrays(record)
        except ValueError as exc:
            return str(exc)
    return None


def dp_sgd_problem(metrics: Mapping[str, Any]) -> str | None:
    """Why a train reply's metrics state no DP-SGD mechanism the privacy accounting can
    count (``None``: they state one): ``dp-sgd-noise`` >= :data:`MIN_DP_SGD_NOISE`,
    ``dp-sgd-rate`` in (0, 1] and ``dp-sgd-steps`` > 0, each a finite number. What a run
    that asked for record-level DP-SGD refuses (a device on a client that ignores the
    budget trains without it; one stating a smaller noise: :func:`dp_sgd_noise_problem`).

    >>> dp_sgd_problem({"dp-sgd-noise": 1.1, "dp-sgd-rate": 0.05, "dp-sgd-steps": 19}) is None
    True
    >>> dp_sgd_problem({"dp-sgd-noise": 0.0, "dp-sgd-rate": 0.0, "dp-sgd-steps": 0})
    'dp-sgd-noise 0.0, dp-sgd-rate 0.0, dp-sgd-steps 0: no DP-SGD mechanism (the run asked for record-level DP-SGD: dp-sgd-noise > 0, 0 < dp-sgd-rate <= 1 and dp-sgd-steps > 0)'
    """  # noqa: E501
    if dp_sgd_mechanism(metrics) is not None:
        return None
    low = dp_sgd_noise_problem(metrics)
    if low is not None:
        return low
    got = {k: metrics.get(k) for k in ("dp-sgd-noise", "dp-sgd-rate", "dp-sgd-steps")}
    stated = ", ".join(f"{k} {v!r}" if v is not None else f"no {k}" for k, v in got.items())
    return (f"{stated}: no DP-SGD mechanism (the run asked for record-level DP-SGD: "
            "dp-sgd-noise > 0, 0 < dp-sgd-rate <= 1 and dp-sgd-steps > 0)")


def least_beta(need: int, n: int) -> float:
    """The smallest trimmed-mean fraction β that trims ``need`` updates per side of ``n``
    as Flower counts them (``int(beta * n)``, in floating point): a multiple of 0.001 when
    one below 0.5 does, else the smallest float that does (``need`` < n / 2 always has one).
    With ``2 need >= n`` no β below 0.5 can: ``need / n`` rounded up to 0.001 is returned
    (>= 0.5, for the caller to refuse).

    ``ceil(need / n * 1000) / 1000`` alone fell one short in floating point: 0.29 × 100 is
    28.999..., which trims 28, not 29.

    >>> least_beta(29, 100), int(least_beta(29, 100) * 100)
    (0.291, 29)
    >>> least_beta(1, 3), least_beta(499, 999), least_beta(2, 3)
    (0.334, 0.4994994994994995, 0.667)
    """
    if need <= 0:
        return 0.0
    n = max(n, 1)
    k = -(-need * 1000 // n)  # ceil(need / n * 1000), in integers
    if 2 * need >= n:
        return k / 1000
    while k < 500 and int(k / 1000 * n) < need:
        k += 1
    if k < 500:
        return k / 1000
    beta = need / n
    while int(beta * n) < need:
        beta = math.nextafter(beta, 1.0)
    return beta


def auto_beta(n: int, f: int = 0) -> float:
    """The trimmed-mean fraction used when none is given: the smallest that trims
    ``max(f, 1)`` updates per side of ``n`` (:func:`least_beta`), and at least 0.2.

    >>> auto_beta(3), auto_beta(10), auto_beta(10, 3), auto_beta(100, 29)
    (0.334, 0.2, 0.3, 0.291)
    """
    return max(0.2, least_beta(max(f, 1), n))


def check_rule_conditions(rule: Strategy, n: int, f: int, *, must_trim: bool = True) -> None:
    """Raise :class:`InvalidParameterError` when ``rule`` cannot tolerate ``f`` of ``n``.

    A trimmed mean that would trim nothing (``⌊βn⌋ = 0``) is a plain mean that one
    attacker moves at will, and is refused too unless ``must_trim`` is false (a round in
    which screening already removed updates).

    >>> check_rule_conditions(FedTrimmedAvg(beta=0.2), n=3, f=0)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: FedTrimmedAvg with beta=0.2 trims 0 updates per side of n=3: a plain mean that one attacker can move at will; use beta >= 0.334 (one per side).

    >>> check_rule_conditions(FedTrimmedAvg(beta=0.1), n=10, f=2)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: FedTrimmedAvg with beta=0.1 trims 1 update per side of n=10, fewer than f=2 malicious clients; use beta >= 0.2 or more clients.
    """  # noqa: E501
    name = type(rule).__name__
    if n < 1:
        raise InvalidParameterError(f"{name} needs at least one client. Got n={n} instead.")
    if isinstance(rule, Bulyan):
        if must_trim and f == 0:
            raise InvalidParameterError(
                f"Bulyan with f=0 malicious clients keeps all n={n} updates and averages them "
                "all: a plain mean that one attacker can move at will. Use f >= 1 (Bulyan "
                "then needs n >= 4f + 3 = 7 clients) or strategy 'trimmed'."
            )
        if n < 4 * f + 3:
            raise InvalidParameterError(
                f"Bulyan cannot tolerate f={f} malicious clients with n={n}: it needs "
                f"n >= 4f + 3 = {4 * f + 3}. Use more clients or a smaller f."
            )
    elif isinstance(rule, MultiKrum):  # Krum is a MultiKrum selecting one
        if n <= 2 * f + 2:
            raise InvalidParameterError(
                f"{name} cannot tolerate f={f} malicious clients with n={n}: it needs "
                f"n > 2f + 2 = {2 * f + 2}. Use more clients or a smaller f."
            )
        m = rule.num_nodes_to_select
        if not 1 <= m <= n - f:
            raise InvalidParameterError(
                f"{name} with num_nodes_to_select={m} of n={n} updates and f={f} malicious "
                f"clients: it must select between 1 and n - f = {n - f} (Blanchard et al. "
                "2017: with more, at least one of the f malicious updates, when sent, is "
                "averaged in). Use "
                f"num_nodes_to_select <= {n - f} or more clients."
            )
    elif isinstance(rule, FedTrimmedAvg):
        cut = int(rule.beta * n)
        if must_trim and cut == 0 and f == 0:
            fix = (f"use beta >= {least_beta(1, n)} (one per side)" if n >= 3
                   else "a trimmed mean needs n >= 3; use more clients or strategy 'fedavg'")
            raise InvalidParameterError(
                f"FedTrimmedAvg with beta={rule.beta:g} trims 0 updates per side of n={n}: "
                f"a plain mean that one attacker can move at will; {fix}."
            )
        if cut < f:
            # the least beta that trims f per side (printed in full: it may not be 0.001's)
            need = least_beta(f, n)
            fix = (f"beta >= {need} or more clients" if need < 0.5 else
                   f"more clients: n > 2f = {2 * f} (beta must stay below 0.5)")
            raise InvalidParameterError(
                f"FedTrimmedAvg with beta={rule.beta:g} trims {cut} update per side of n={n}, "
                f"fewer than f={f} malicious clients; use {fix}."
            )
        if 2 * cut >= n:
            raise InvalidParameterError(
                f"FedTrimmedAvg with beta={rule.beta:g} would trim all n={n} updates."
            )
    elif isinstance(rule, FedMedian):
        if n <= 2 * f:
            raise InvalidParameterError(
                f"FedMedian cannot tolerate f={f} malicious clients with n={n}: the "
                f"coordinate-wise median needs an honest majority, n > 2f = {2 * f}. Use more "
                "clients or a smaller f."
            )
    elif f > 0:
        # FedAvg, FedProx, FedAvgM, FedAdam, ... (weighted means) and any rule not known here
        raise InvalidParameterError(
            f"{name} has no tolerance for malicious clients, but f={f} was given with n={n}. "
            f"Rules that tolerate f > 0: {TOLERANT_RULES} ('trimmed', 'krum' or 'bulyan' "
            "from make_strategy)."
        )


def krum_scores(updates: np.ndarray, f: int) -> np.ndarray:
    """Each update's Krum score (Blanchard et al. 2017): the sum of its squared distances
    to its ``n - f - 2`` nearest other updates (at least one), computed in float64 from
    explicit differences.

    ``updates`` is one flattened update (reply minus the global model) per row. Flower
    1.41 computes ``|x|² + |y|² - 2 x·y`` on the full float32 weights instead: with updates
    small beside the weights that cancels to rounding noise (a self-distance of 1.9e-6
    beside true distances of 2e-6), and its Krum picked the attacker.

    >>> krum_scores(np.array([[0.0], [1.0], [3.0], [10.0]]), f=0).tolist()
    [10.0, 5.0, 13.0, 130.0]
    """
    x = np.asarray(updates, dtype=np.float64)
    n = len(x)
    k = min(max(1, n - f - 2), n - 1)
    scores = np.zeros(n)
    for i in range(n):
        d = ((x - x[i]) ** 2).sum(axis=1)
        scores[i] = np.sort(np.delete(d, i))[:k].sum()
    return scores


def multi_krum_select(updates: np.ndarray, f: int, m: int = 1) -> list[int]:
    """The rows Multi-Krum selects: the ``m`` lowest :func:`krum_scores` (Krum: ``m = 1``;
    ties to the lower index). Blanchard et al. average them with equal weights.

    >>> multi_krum_select(np.array([[0.0], [1.0], [3.0], [10.0]]), f=0, m=2)
    [1, 0]
    """
    return [int(i) for i in np.argsort(krum_scores(updates, f), kind="stable")[:m]]


def bulyan_select(updates: np.ndarray, f: int) -> list[int]:
    """The θ = n - 2f rows Bulyan selects (El Mhamdi et al. 2018): Krum repeatedly, each
    pick removed and the rest scored again (Flower 1.41 takes the θ lowest scores of one
    pass instead), in the order picked.

    >>> bulyan_select(np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0], [90.0]]), f=1)
    [2, 3, 1, 4, 0]
    """
    x = np.asarray(updates, dtype=np.float64)
    rest = list(range(len(x)))
    picked: list[int] = []
    for _ in range(len(x) - 2 * f):
        j = rest[multi_krum_select(x[rest], f)[0]]
        picked.append(j)
        rest.remove(j)
    return picked


def bulyan_coordinates(selected: np.ndarray, f: int) -> np.ndarray:
    """Bulyan's second step: per coordinate, the mean of the β = θ - 2f of the θ selected
    values closest to their median (ties to the earlier row), in float64.

    >>> bulyan_coordinates(np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 6.0], [9.0, 5.0],
    ...                              [3.0, -7.0]]), f=1).tolist()
    [2.0, 5.0]
    """
    s = np.asarray(selected, dtype=np.float64)
    beta = len(s) - 2 * f
    med = np.median(s, axis=0)
    idx = np.argsort(np.abs(s - med), axis=0, kind="stable")[:beta]
    return np.take_along_axis(s, idx, axis=0).mean(axis=0)


def move_caps(history: Sequence[float], ratio: float, model_norm: float, what: str,
              ) -> list[tuple[float, str]]:
    """The bounds on how far one round may move the global model, each with its reason:
    ``ratio`` × the median of ``history`` (``what``, e.g. the earlier rounds' accepted
    norms) and :data:`MAX_UPDATE_TO_MODEL` × the model's norm; either is left out when
    unknown (no earlier round, a model of zeros).

    >>> [round(c) for c, _ in move_caps([1.0, 3.0], 10.0, 4.0, "the median move")]
    [20, 8]
    """
    caps: list[tuple[float, str]] = []
    if len(history):
        ref = float(np.median(history))
        why = f"{ratio:g} x {ref:.3g}, {what} in the last {len(history)} round(s)"
        caps.append((ratio * ref, why))
    if model_norm > 0:
        caps.append((MAX_UPDATE_TO_MODEL * model_norm,
                     f"{MAX_UPDATE_TO_MODEL:g} x the global model's norm {model_norm:.3g}"))
    return caps


class RobustStrategy(Strategy):
    """Wrap a Flower strategy: validate, filter and re-weight client updates first.

    Use it around any rule; it is what makes ``FedTrimmedAvg``/``Krum``/``Bulyan`` safe
    to run with untrusted devices. Do not use it under secure aggregation (the server
    would see no individual update to check).

    Parameters
    ----------
    strategy
        The Flower strategy doing the aggregation (``FedTrimmedAvg``, ``Krum``, ``Bulyan``, …).
    num_malicious_nodes
        f, the number of faulty or malicious clients to tolerate per round.
    max_norm_ratio
        Reject an update whose norm (distance to the current global model) exceeds this
        multiple of the round's median update norm (at least :data:`NORM_FLOOR` × the
        global model's norm, so a median of 0 does not switch the check off).
    max_examples_ratio
        Cap each client's ``"num-examples"`` at this multiple of the round's median (of
        the smaller one in a round of two).
    max_num_examples
        Absolute cap on ``"num-examples"`` (applied as well, when given).
    require_dp_sgd
        Refuse (reason ``"no-dp-sgd"``) a train reply that states no DP-SGD mechanism
        (:func:`dp_sgd_problem`): the run asked for record-level DP, and an update trained
        without it would void the ε reported for the model.
    per_device
        Only checks that read one reply alone (and the global model): its shape (one
        ArrayRecord, one MetricRecord, the model's array names, shapes and dtypes), finite
        values, finite metrics, a positive weight, ``require_dp_sgd``. Off are the rules
        that compare it with the other devices' replies: the metric layout most replies
        share, the norm bound relative to the round's (and earlier rounds') median, the
        weight cap. What device-level DP needs: there one device's update must not decide
        whether another's is averaged (the clip already bounds each one's influence to C).

    A ratio that is not a number (NaN) is refused, naming it:

    >>> RobustStrategy(FedAvg(), max_norm_ratio=float("nan"))
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'max_norm_ratio' parameter of RobustStrategy must be a number > 1. Got nan instead.
    """  # noqa: E501

    #: Whether the wrapped rule's own condition (n against f) is checked (see the class).
    check_rules = True

    def __init__(
        self,
        strategy: Strategy,
        num_malicious_nodes: int = 0,
        max_norm_ratio: float = 10.0,
        max_examples_ratio: float = 10.0,
        max_num_examples: int | None = None,
        require_dp_sgd: bool = False,
        per_device: bool = False,
    ) -> None:
        # Written as `not (x > bound)` so that NaN, which compares false either way, is
        # refused: `x <= bound` let it through and switched the norm check or the cap off.
        for name, value, ok, allowed in (
            ("num_malicious_nodes", num_malicious_nodes, not num_malicious_nodes < 0, ">= 0"),
            ("max_norm_ratio", max_norm_ratio, max_norm_ratio > 1, "a number > 1"),
            ("max_examples_ratio", max_examples_ratio, max_examples_ratio >= 1,
             "a number >= 1"),
            ("max_num_examples", max_num_examples,
             max_num_examples is None or max_num_examples >= 1, "None or a number >= 1"),
        ):
            if not ok:
                raise InvalidParameterError(
                    f"The {name!r} parameter of RobustStrategy must be {allowed}. "
                    f"Got {value!r} instead.")
        self.strategy = strategy
        self.num_malicious_nodes = num_malicious_nodes
        self.max_norm_ratio = max_norm_ratio
        self.max_examples_ratio = max_examples_ratio
        self.max_num_examples = max_num_examples
        self.require_dp_sgd = require_dp_sgd
        self.per_device = per_device
        #: added to Flower's round numbers in events, skipped rounds and the log: the rounds
        #: a resumed run had done before (Flower counts from 1 again)
        self.round_offset = 0
        self.events: list[RejectedUpdate] = []
        self.skipped_rounds: list[int] = []
        #: The median norm of the updates accepted in each earlier round (most recent last).
        self.norm_history: list[float] = []
        self.layout: _Layout | None = None  # the last round's reply layout, breaks ties
        self.eval_layout: _Layout | None = None  # the same, of the evaluation replies
        self.current_arrays = ArrayRecord()
        self.weighted_by_key = getattr(strategy, "weighted_by_key", "num-examples")
        min_n = int(getattr(strategy, "min_train_nodes", 1))
        if self.check_rules:
            check_rule_conditions(strategy, min_n, num_malicious_nodes)

    def __repr__(self) -> str:
        """Name the wrapped rule."""
        return f"RobustStrategy({type(self.strategy).__name__}, f={self.num_malicious_nodes})"

    def summary(self) -> None:
        """Log the wrapper's settings, then the wrapped rule's."""
        log.info(
            "RobustStrategy: f=%d, max_norm_ratio=%g, max_examples_ratio=%g",
            self.num_malicious_nodes, self.max_norm_ratio, self.max_examples_ratio,
        )
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global model, sample through the wrapped rule, check n against f."""
        self.current_arrays = arrays
        messages = list(self.strategy.configure_train(server_round, arrays, config, grid))
        if messages and self.check_rules:
            check_rule_conditions(self.strategy, len(messages), self.num_malicious_nodes)
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegate to the wrapped rule."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Screen the evaluation replies (:meth:`screen_evaluate`), let the wrapped rule
        aggregate what is left, then make each metric it returns a trimmed mean
        (:func:`trimmed_mean`, ``max(f, 1)`` per side, weights capped): Flower's weighted
        mean let one device set the published evaluation loss with its own value.

        :data:`EVAL_ROBUST_KEY` (``eval-robust``) is added: 1 when the metrics were trimmed,
        0 when fewer than ``2 max(f, 1) + 1`` replies were left (3 for f <= 1): then there
        is nothing to trim, one device can set them (of two, the published value is their
        plain mean), and they are published flagged so, with a warning."""
        kept = self.screen_evaluate(server_round, replies)
        out = self.strategy.aggregate_evaluate(server_round, kept)
        records = [next(iter(m.content.metric_records.values()))
                   for m in kept if not m.has_error()]
        if out is None or not records:
            return out
        weights = [float(r[self.weighted_by_key]) for r in records]
        trim = max(self.num_malicious_nodes, 1)
        for key in list(out.keys()):
            if all(key in r for r in records):
                out[key] = trimmed_mean([float(r[key]) for r in records], weights, trim)
        robust = len(records) > 2 * trim
        if not robust:
            log.warning("round %d: %d evaluation repl%s, fewer than the %d a trimmed mean "
                        "needs to trim %d per side: one device can set the published "
                        "evaluation metrics (flagged %s 0)", self.round_offset + server_round,
                        len(records),
                        "y" if len(records) == 1 else "ies", 2 * trim + 1, trim,
                        EVAL_ROBUST_KEY)
        out[EVAL_ROBUST_KEY] = int(robust)
        return out

    def screen_evaluate(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """The evaluation replies that may be averaged, their weights capped in place.

        As in training, a reply must carry exactly one MetricRecord with the metric keys
        most replies carry (one extra key made Flower raise
        ``InconsistentMessageReplies`` after training and the whole run fail), every metric
        a finite number, a positive weight, capped at ``max_examples_ratio`` × the
        median (one device claiming 10⁹ examples set the published evaluation loss), and
        no array that cannot be read (:func:`decode_arrays`; the wire log reads them).
        Failed replies are passed on: Flower counts them as failures. A refusal names the
        device (reasons ``eval-shape``, ``eval-metrics``, ``eval-weight``), and the run goes
        on; a capped weight is noted (``eval-weight-capped``) and its reply used.

        >>> RobustStrategy(FedAvg()).screen_evaluate(1, [])
        []
        """
        out: list[Message] = []
        formed: list[tuple[Message, _Layout]] = []
        for msg in replies:
            if msg.has_error():
                out.append(msg)
                continue
            records = msg.content.metric_records
            if len(records) != 1:
                self._reject(server_round, msg, "eval-shape",
                             f"{len(records)} MetricRecords; expected exactly one")
                continue
            unreadable = unreadable_arrays(msg)
            if unreadable is not None:
                self._reject(server_round, msg, "eval-shape", unreadable)
                continue
            mkey = next(iter(records))
            formed.append((msg, ("", mkey, frozenset(records[mkey]))))
        expected = self._expected_layout([lay for _, lay in formed], self.eval_layout)
        if expected is not None:
            self.eval_layout = expected
        kept: list[Message] = []
        for msg, layout in formed:
            if layout != expected:
                self._reject(server_round, msg, "eval-metrics",
                             self._layout_detail(layout, expected))
                continue
            why = metrics_problem(msg.content.metric_records[layout[1]], self.weighted_by_key)
            if why is not None:
                self._reject(server_round, msg, "eval-metrics", why)
                continue
            kept.append(msg)
        self._cap_weights(server_round, kept, prefix="eval-")
        return out + [m for m in kept if id(m) not in self._bad_weight]

    def _reject(self, server_round: int, msg: Message, reason: str, detail: str) -> None:
        run_round = self.round_offset + server_round
        event = RejectedUpdate(run_round, int(msg.metadata.src_node_id), reason, detail)
        self.events.append(event)
        log.warning("round %d: %s from node %d %s (%s)", run_round,
                    "evaluation reply" if reason.startswith("eval-") else "update",
                    event.node_id, "used with its weight capped" if is_cap(reason)
                    else "rejected", detail)

    @staticmethod
    def _expected_layout(layouts: list[_Layout], previous: _Layout | None) -> _Layout | None:
        """The reply layout most replies share; a tie goes to ``previous`` (last round's
        layout), else to none (every reply is refused: there is no telling which side is
        honest)."""
        counts = Counter(layouts).most_common()
        if not counts:
            return None
        top = [lay for lay, c in counts if c == counts[0][1]]
        if len(top) == 1:
            return top[0]
        return previous if previous in top else None

    def screen(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """Return the replies whose update passes every check; cap their weights in place.

        >>> s = RobustStrategy(FedAvg())
        >>> s.screen(1, [])
        []
        """
        reference = {k: v.numpy() for k, v in self.current_arrays.items()}
        formed: list[tuple[Message, _Layout]] = []
        decoded: dict[int, dict[str, np.ndarray]] = {}  # each reply's arrays, read once
        for msg in replies:
            if msg.has_error():
                self._reject(server_round, msg, "error", str(msg.error.reason)[:200])
                continue
            content = msg.content
            if len(content.array_records) != 1 or len(content.metric_records) != 1:
                self._reject(server_round, msg, "shape",
                             "expected exactly one ArrayRecord and one MetricRecord")
                continue
            # An array Flower cannot read (another stype, bytes that are no .npy file)
            # raised in every later step and ended the run: that reply alone is refused.
            try:
                decoded[id(msg)] = decode_arrays(next(iter(content.array_records.values())))
            except ValueError as exc:
                self._reject(server_round, msg, "shape", str(exc))
                continue
            mkey = next(iter(content.metric_records))
            formed.append((msg, (next(iter(content.array_records)), mkey,
                                 frozenset(content.metric_records[mkey]))))
        # Flower aggregates only replies of one layout: a single device adding, dropping or
        # renaming a metric key (or a record) raised InconsistentMessageReplies and ended the
        # whole run without naming it. The layout most replies share is the expected one.
        expected = self._expected_layout([lay for _, lay in formed], self.layout)
        if expected is not None:
            self.layout = expected
        passed: list[tuple[Message, str, float]] = []
        for msg, layout in formed:
            if not self.per_device and layout != expected:
                self._reject(server_round, msg, "metrics", self._layout_detail(layout, expected))
                continue
            # A list, NaN or Inf metric (a dp-sgd-steps of NaN, a train-loss of [1, 2])
            # ended the run in the privacy accounting or in Flower's metric mean.
            why = metrics_problem(msg.content.metric_records[layout[1]], self.weighted_by_key)
            if why is not None:
                self._reject(server_round, msg, "metrics", why)
                continue
            if self.require_dp_sgd:
                refusal = dp_sgd_refusal(msg.content.metric_records[layout[1]])
                if refusal is not None:
                    self._reject(server_round, msg, *refusal)
                    continue
            akey = layout[0]
            arrays = decoded[id(msg)]
            if reference and (
                set(arrays) != set(reference)
                or any(arrays[k].shape != reference[k].shape for k in reference)
            ):
                got = {k: tuple(a.shape) for k, a in arrays.items()}
                self._reject(server_round, msg, "shape", f"arrays {got} differ from the model")
                continue
            if reference and list(arrays) != list(reference):
                in_model_order(msg, list(reference))
                arrays = {k: arrays[k] for k in reference}
            bad_dtype = {
                k: str(a.dtype) for k, a in arrays.items()
                if not np.issubdtype(a.dtype, np.floating)
                or (k in reference and a.dtype != reference[k].dtype)
            }
            if bad_dtype:
                allowed = sorted({str(reference[k].dtype) for k in reference}) or ["real float"]
                self._reject(server_round, msg, "dtype",
                             f"array dtypes {bad_dtype} differ from the model's "
                             f"({', '.join(allowed)}); updates must be real floating point "
                             "of the model's dtype")
                continue
            if not all(np.isfinite(a).all() for a in arrays.values()):
                self._reject(server_round, msg, "non-finite", "NaN or Inf in the update")
                continue
            norm = float(np.sqrt(sum(
                float(((arrays[k].astype(np.float64) - reference.get(k, 0.0)) ** 2).sum())
                for k in arrays
            )))
            if not np.isfinite(norm):
                self._reject(server_round, msg, "non-finite",
                             f"update norm is {norm}; it must be a finite number")
                continue
            passed.append((msg, akey, norm))
        if self.per_device:  # no norm bound relative to the others, no weight cap
            self._cap_weights(server_round, [m for m, _, _ in passed],
                              capping=False)
            return [m for m, _, _ in passed if id(m) not in self._bad_weight]
        if not passed:
            return []
        norms = [n for _, _, n in passed]
        # With 1 or 2 updates the median is no majority: of two it is their mean, which the
        # larger one never exceeds 10 times, and of one it is the update itself. The smaller
        # of two (the "low median") is the reference then; the small-round caps below add
        # what earlier rounds and the model itself say an update can be.
        median = float(np.median(norms)) if len(norms) >= 3 else min(norms)
        # The bound is max_norm_ratio x the median, always: a median of 0 (most devices sent
        # the global model back unchanged) used to switch the check off, and one device
        # sending 1e6 in every weight was averaged in. The median is first raised to
        # NORM_FLOOR x the global model's norm, about the rounding a float32 round trip of
        # the model leaves, so with a median of 0 an update of rounding size still passes
        # while any real move is refused: with most of the round not moving, a lone large
        # update cannot be told from an attack, and the mean would barely move without it.
        # (A global model of all zeros gives a floor of 0: only unchanged models pass.)
        model_norm = float(np.sqrt(sum(float((r.astype(np.float64) ** 2).sum())
                                       for r in reference.values())))
        scale = max(median, NORM_FLOOR * model_norm)
        cap, cap_why = self._small_round_cap(len(norms), model_norm)
        kept: list[Message] = []
        for msg, _, norm in passed:
            if cap is not None and norm > cap:
                self._reject(server_round, msg, "norm",
                             f"update norm {norm:.3g} > {cap:.3g}, {cap_why} (only "
                             f"{len(norms)} update{'' if len(norms) == 1 else 's'} in the "
                             "round, too few for its median to bound one)")
                continue
            if norm > self.max_norm_ratio * scale:
                what = ("the round's median update norm" if len(norms) >= 3 else
                        "the smaller update norm of the round's two" if len(norms) == 2 else
                        "the round's only update norm")
                why = (f"{what} {median:.3g}"
                       + (" (most replies left the global model unchanged)" if median == 0
                          else "") if scale == median else
                       f"{NORM_FLOOR:g} x the global model's norm {model_norm:.3g} "
                       f"({what} is only {median:.3g})")
                self._reject(server_round, msg, "norm",
                             f"update norm {norm:.3g} > {self.max_norm_ratio:g} x {scale:.3g}, "
                             f"{why}")
                continue
            kept.append(msg)
        self._cap_weights(server_round, kept)
        kept = [m for m in kept if id(m) not in self._bad_weight]
        accepted = [n for m, _, n in passed if any(m is k for k in kept)]
        if accepted:
            self.norm_history = [*self.norm_history, float(np.median(accepted))][-NORM_HISTORY:]
        return kept

    def _small_round_cap(self, n: int, model_norm: float) -> tuple[float | None, str]:
        """The most an update may move the model in a round of ``n`` < 3 updates (``None``
        for a larger round): ``max_norm_ratio`` × the median of the earlier rounds' median
        accepted norms, and :data:`MAX_UPDATE_TO_MODEL` × the global model's norm, whichever
        is smaller (either is left out when unknown: no earlier round, a model of zeros)."""
        if n >= 3:
            return None, ""
        caps = move_caps(self.norm_history, self.max_norm_ratio, model_norm,
                         "the median norm of the updates accepted")
        if not caps:
            return None, ""
        return min(caps, key=lambda c: c[0])

    @staticmethod
    def _layout_detail(got: _Layout, expected: _Layout | None) -> str:
        """Say how a reply's layout differs from the one the round expects."""
        if expected is None:
            return (f"metric keys {sorted(got[2])} in records {got[0]!r}/{got[1]!r}: no layout "
                    "is shared by more replies than any other, so none can be told honest")
        if got[:2] != expected[:2]:
            return (f"records named {got[0]!r}/{got[1]!r}; the round's replies use "
                    f"{expected[0]!r}/{expected[1]!r} (ArrayRecord/MetricRecord)")
        extra, missing = sorted(got[2] - expected[2]), sorted(expected[2] - got[2])
        what = "; ".join(([f"extra metric keys {extra}"] if extra else [])
                         + ([f"missing metric keys {missing}"] if missing else []))
        return f"{what}; the round's replies carry exactly {sorted(expected[2])}"

    def _cap_weights(self, server_round: int, kept: list[Message], prefix: str = "", *,
                     capping: bool = True) -> None:
        """Refuse (``{prefix}weight``) a reply whose weight is not a positive number, cap
        the others' (``{prefix}weight-capped``; see the class) unless ``capping`` is
        false."""
        self._bad_weight: set[int] = set()
        values = []
        for msg in kept:
            metrics = next(iter(msg.content.metric_records.values()))
            w: Any = metrics.get(self.weighted_by_key)
            x = scalar_metric(w)
            if x is None or x <= 0:
                self._reject(server_round, msg, f"{prefix}weight",
                             f"{self.weighted_by_key!r} is {w!r}; must be a positive number")
                self._bad_weight.add(id(msg))
            else:
                values.append(x)
        if not values or not capping:
            return
        # The median of two is their mean, which the larger of two never exceeds 10 times
        # (one device claiming 1e9 examples took the mean alone, uncapped); with fewer than
        # three the smaller is the reference, as in the norm check and under SecAgg+.
        ref = float(np.median(values)) if len(values) >= 3 else min(values)
        cap = self.max_examples_ratio * ref
        if self.max_num_examples is not None:
            cap = min(cap, float(self.max_num_examples))
        for msg in kept:
            if id(msg) in self._bad_weight:
                continue
            metrics = next(iter(msg.content.metric_records.values()))
            w = float(metrics[self.weighted_by_key])
            if w > cap:
                metrics[self.weighted_by_key] = int(cap) if float(cap).is_integer() else cap
                what = ("the round's median" if len(values) >= 3 else
                        "the smaller of the round's two" if len(values) == 2 else "")
                self._reject(server_round, msg, f"{prefix}weight-capped",
                             f"{self.weighted_by_key!r} {w:g} capped to {cap:g}"
                             + (f" ({self.max_examples_ratio:g} x {what} {ref:g})"
                                if what and cap == self.max_examples_ratio * ref else ""))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen the replies, check the rule's condition with the f still left, then
        aggregate what is left: Krum, Multi-Krum and Bulyan here
        (:meth:`_aggregate_krum_family`), any other rule by the wrapped rule."""
        replies = list(replies)
        n_before = len(self.events)
        kept = self.screen(server_round, replies)
        # An update refused for what it carries (malformed, non-finite, too far, a bad
        # weight) is one of the f faulty clients already removed. A device that failed or
        # dropped out ("error") may well be honest: it does not reduce f, or one dropout
        # would turn Bulyan with f=1 into a plain mean that the attacker still in it moves.
        refused = sum(1 for e in self.events[n_before:] if e.reason in COUNTS_AGAINST_F)
        failed = sum(1 for e in self.events[n_before:] if e.reason == "error")
        f_left = max(self.num_malicious_nodes - refused, 0)
        beta = None
        try:
            if isinstance(self.strategy, FedTrimmedAvg):
                beta = self._round_beta(len(kept), refused, failed)
            else:
                check_rule_conditions(self.strategy, len(kept), f_left, must_trim=False)
        except InvalidParameterError as exc:
            self.skipped_rounds.append(self.round_offset + server_round)
            log.warning("round %d: %s Keeping the previous global model.",
                        self.round_offset + server_round, exc)
            return None, None
        if isinstance(self.strategy, (MultiKrum, Bulyan)):
            return self._aggregate_krum_family(server_round, kept, f_left)
        # Other rules get the f still unaccounted for among the updates that are left; the
        # trimmed mean the beta that trims what is still to be trimmed of them.
        saved = getattr(self.strategy, "num_malicious_nodes", None)
        saved_beta = getattr(self.strategy, "beta", None)
        if saved is not None:
            self.strategy.num_malicious_nodes = f_left  # type: ignore[attr-defined]
        if beta is not None:
            self.strategy.beta = beta  # type: ignore[attr-defined]
        try:
            return self.strategy.aggregate_train(server_round, kept)
        finally:
            if saved is not None:
                self.strategy.num_malicious_nodes = saved  # type: ignore[attr-defined]
            if beta is not None:
                self.strategy.beta = saved_beta  # type: ignore[attr-defined]

    def _aggregate_krum_family(self, server_round: int, kept: list[Message], f: int
                               ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Krum, Multi-Krum or Bulyan over the screened replies, with ``f`` still left.

        The selection runs here on the updates (reply minus the global model) in float64
        (:func:`krum_scores`), not on Flower's float32 weights; Multi-Krum averages the
        selected updates with equal weights (Blanchard et al.; Flower weighted them by the
        self-reported example counts, and one attacker claiming 10x took 71-77 % of the
        mean), Krum returns the one selected, and Bulyan is El Mhamdi et al.'s rule
        (:func:`bulyan_select`, :func:`bulyan_coordinates`). The train metrics are the
        wrapped rule's mean over the selected replies, as in Flower.
        """
        rule = self.strategy
        reference = {k: v.numpy() for k, v in self.current_arrays.items()}
        arrays = [decode_arrays(next(iter(m.content.array_records.values()))) for m in kept]
        names = list(reference) or list(arrays[0])
        weights = [[a[k].astype(np.float64).ravel() for k in names] for a in arrays]
        base = [reference[k].astype(np.float64).ravel() if k in reference
                else np.zeros(arrays[0][k].size) for k in names]
        updates = np.stack([np.concatenate([w - b for w, b in zip(ws, base, strict=True)])
                            for ws in weights])
        if isinstance(rule, Bulyan):
            chosen = bulyan_select(updates, f)
            flat = bulyan_coordinates(np.stack([np.concatenate(weights[i]) for i in chosen]),
                                      f)
        else:
            chosen = multi_krum_select(updates, f, int(rule.num_nodes_to_select))
            flat = np.mean([np.concatenate(weights[i]) for i in chosen], axis=0)
        log.info("round %d: %s (f=%d) selected nodes %s of %d", self.round_offset + server_round,
                 type(rule).__name__, f, [int(kept[i].metadata.src_node_id) for i in chosen],
                 len(kept))
        out: dict[str, Array] = {}
        start = 0
        for k in names:
            like = arrays[chosen[0]][k]
            if len(chosen) == 1 and not isinstance(rule, Bulyan):  # Krum: the reply as sent
                out[k] = Array(like)
            else:
                out[k] = Array(flat[start:start + like.size].reshape(like.shape)
                               .astype(like.dtype))
            start += like.size
        metrics = rule.train_metrics_aggr_fn(  # type: ignore[attr-defined]
            [kept[i].content for i in chosen], rule.weighted_by_key)  # type: ignore[attr-defined]
        return ArrayRecord(out), metrics

    def _round_beta(self, k: int, refused: int, failed: int) -> float:
        """The trimmed mean's β for a round with ``k`` updates left after ``refused`` were
        refused by the screen and ``failed`` failed or dropped out.

        The rule trims ``max(f, 1)`` per side; each update the screen refused is one of those
        already removed, a failure or dropout is not (it may be honest, and the attacker is
        then still among the ``k``). The configured β is kept when it trims enough of the
        ``k``, raised for this round when it does not, and the round is refused
        (:class:`InvalidParameterError`) when ``k`` is too few to trim that many per side.

        >>> s = RobustStrategy(FedTrimmedAvg(beta=0.334, min_train_nodes=3))
        >>> s._round_beta(3, 0, 0), s._round_beta(2, 1, 0)
        (0.334, 0.334)
        >>> s._round_beta(2, 0, 1)
        Traceback (most recent call last):
        ...
        edgewise.errors.InvalidParameterError: FedTrimmedAvg must trim max(f, 1) = 1 update per side (f=0, none refused by the screen), but only 2 are left (1 failed or dropped out, which does not count as one of the f): a trimmed mean of 2 cannot trim 1 per side.
        """  # noqa: E501
        if k < 1:
            check_rule_conditions(self.strategy, k, 0)  # raises: no update is left
        beta = float(self.strategy.beta)  # type: ignore[attr-defined]
        f = self.num_malicious_nodes
        need = max(max(f, 1) - refused, 0)
        if int(beta * k) >= need:
            return beta
        if k > 2 * need:
            # the least fraction that trims `need` of k (just above need/k; below 0.5)
            return min(need / k * (1 + 1e-9), math.nextafter(0.5, 0.0))
        removed = (f"{refused} refused by the screen" if refused else "none refused by the screen")
        gone = (f" ({failed} failed or dropped out, which does not count as one of the f)"
                if failed else "")
        raise InvalidParameterError(
            f"FedTrimmedAvg must trim max(f, 1) = {max(f, 1)} update"
            f"{'' if max(f, 1) == 1 else 's'} per side (f={f}, {removed}), but only {k} "
            f"{'is' if k == 1 else 'are'} left{gone}: a trimmed mean of {k} cannot trim "
            f"{need} per side."
        )


class DPSGDScreen(RobustStrategy):
    """The one check a run without the robust screen (``robust=False``) still makes when it
    asked for record-level DP-SGD: a train reply that states no DP-SGD mechanism
    (:func:`dp_sgd_problem`) is refused, reason ``no-dp-sgd``, and the wrapped rule
    aggregates the others as it is (no other check, no rule condition, evaluation replies
    untouched). Without it ``robust=False`` dropped ``require_dp_sgd`` and averaged an
    update trained without DP-SGD into a model reported at the run's record-level ε.
    """

    check_rules = False

    def __init__(self, strategy: Strategy) -> None:
        super().__init__(strategy, require_dp_sgd=True)

    def __repr__(self) -> str:
        """Name the wrapped rule."""
        return f"DPSGDScreen({type(self.strategy).__name__})"

    def screen(self, server_round: int, replies: Iterable[Message]) -> list[Message]:
        """The replies that fail (Flower counts them) or state a DP-SGD mechanism in every
        MetricRecord they carry (at least one).

        >>> DPSGDScreen(FedAvg()).screen(1, [])
        []
        """
        kept: list[Message] = []
        for msg in replies:
            if not msg.has_error():
                records = list(msg.content.metric_records.values()) or [MetricRecord()]
                refusal = next((w for w in map(dp_sgd_refusal, records) if w is not None),
                               None)
                if refusal is not None:
                    self._reject(server_round, msg, *refusal)
                    continue
            kept.append(msg)
        return kept

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Refuse the replies without DP-SGD, let the wrapped rule aggregate the rest."""
        return self.strategy.aggregate_train(server_round, self.screen(server_round, replies))

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegate (evaluation spends no DP-SGD)."""
        return self.strategy.aggregate_evaluate(server_round, replies)


def trimmed_mean(values: Sequence[float], weights: Sequence[float], trim: int) -> float:
    """The weighted mean of ``values`` without the ``trim`` largest and ``trim`` smallest;
    their median when that would leave none (fewer than ``2 trim + 1`` values).

    >>> trimmed_mean([0.9, 1.0, 1.1, 1e6], [300, 300, 300, 3000], 1)
    1.05
    >>> trimmed_mean([0.9, 1e6], [1, 1], 1)
    500000.45
    """
    if len(values) <= 2 * trim:
        return float(np.median(values))
    order = np.argsort(values, kind="stable")[trim:len(values) - trim]
    v, w = np.asarray(values, dtype=np.float64)[order], np.asarray(weights)[order]
    return float((v * w).sum() / w.sum())


def aggregate_train_metrics(records: list[RecordDict], weighting_key: str) -> MetricRecord:
    """Flower's weighted mean of the devices' train metrics, except ``dp-sgd-epsilon``:
    the run's record-level guarantee is the weakest device's, so that one is the maximum.

    An ε that is not a finite number >= 0 (which the screens refuse before this) counts as
    infinite (:func:`reported_epsilon`), never as nothing: a NaN first made the maximum
    NaN, and the round then dropped out of the reported ε, below what every other device
    spent.

    >>> from flwr.app import MetricRecord, RecordDict
    >>> r = [RecordDict({"m": MetricRecord({"num-examples": n, "train-loss": l,
    ...                                     "dp-sgd-epsilon": e})})
    ...      for n, l, e in ((1, 1.0, 7.9), (3, 3.0, 8.0))]
    >>> dict(aggregate_train_metrics(r, "num-examples"))
    {'train-loss': 2.5, 'dp-sgd-epsilon': 8.0}

    When some of the updates state a DP-SGD mechanism (:func:`dp_sgd_mechanism`) and others
    none (a device that trains without DP-SGD in a run that did not ask for it), the count
    of the latter is added as :data:`WITHOUT_DP_SGD_KEY`: no record-level ε covers that
    aggregate (under SecAgg+ the server reads it from here alone).

    >>> dp = {"dp-sgd-noise": 1.1, "dp-sgd-rate": 0.05, "dp-sgd-steps": 19}
    >>> r = [RecordDict({"m": MetricRecord({"num-examples": 1, "dp-sgd-epsilon": e, **m})})
    ...      for e, m in ((7.9, dp), (0.0, {}))]
    >>> aggregate_train_metrics(r, "num-examples")[WITHOUT_DP_SGD_KEY]
    1
    """
    out = aggregate_metricrecords(records, weighting_key)
    eps = [reported_epsilon(v) for rec in records for mr in rec.metric_records.values()
           for k, v in mr.items() if k == "dp-sgd-epsilon"]
    if eps:
        out["dp-sgd-epsilon"] = max(eps)
    without = sum(1 for rec in records if not states_dp_sgd(rec))
    if 0 < without < len(records):
        out[WITHOUT_DP_SGD_KEY] = without
    return out


def states_dp_sgd(content: RecordDict) -> bool:
    """Whether a reply's content states a DP-SGD mechanism (:func:`dp_sgd_mechanism`) in
    every MetricRecord it carries (at least one), the test of :class:`DPSGDScreen`."""
    records = list(content.metric_records.values())
    return bool(records) and all(dp_sgd_mechanism(r) is not None for r in records)


def make_strategy(
    name: str,
    *,
    num_nodes: int,
    num_malicious_nodes: int = 0,
    beta: float = 0.2,
    robust: bool = True,
    fraction_evaluate: float = 0.0,
    sample_size: int | None = None,
    weighted_by_key: str = "num-examples",
    **robust_kwargs: Any,
) -> Strategy:
    """Build the named Flower rule for ``num_nodes`` clients, wrapped in :class:`RobustStrategy`.

    ``name`` is one of ``"fedavg"``, ``"trimmed"``, ``"krum"``, ``"bulyan"``; ``beta`` <= 0
    picks the trimmed mean's fraction with :func:`auto_beta`. With
    ``robust=False`` the bare Flower rule is returned (the unsafe baseline), inside a
    :class:`DPSGDScreen` when ``require_dp_sgd`` is given (a run asking for record-level
    DP-SGD refuses an update trained without it either way). ``sample_size``
    (default: all ``num_nodes``) is how many of the ``num_nodes`` connected devices Flower
    samples per round; ``weighted_by_key`` is the reply metric that weights the mean
    (``"unit-weight"`` gives every device the same weight, as device-level DP needs).

    >>> make_strategy("bulyan", num_nodes=6, num_malicious_nodes=1)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: Bulyan cannot tolerate f=1 malicious clients with n=6: it needs n >= 4f + 3 = 7. Use more clients or a smaller f.
    >>> make_strategy("trimmed", num_nodes=10, num_malicious_nodes=2, beta=0.2)
    RobustStrategy(FedTrimmedAvg, f=2)
    >>> make_strategy("trimmed", num_nodes=3, num_malicious_nodes=2, beta=0)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: FedTrimmedAvg with the automatic beta=0.667 would trim every update of n=3 (beta must be below 0.5); trimming max(f, 1)=2 per side (f=2) needs n > 4. Use more clients or a smaller f.
    """  # noqa: E501
    m = num_nodes if sample_size is None else sample_size
    if not 1 <= m <= num_nodes:
        raise InvalidParameterError(
            f"The 'sample_size' parameter must be between 1 and num_nodes={num_nodes}. "
            f"Got {sample_size!r} instead."
        )
    common = dict(
        min_train_nodes=m, min_available_nodes=num_nodes, fraction_train=m / num_nodes,
        weighted_by_key=weighted_by_key,
        min_evaluate_nodes=num_nodes if fraction_evaluate > 0 else 0,
        fraction_evaluate=fraction_evaluate, train_metrics_aggr_fn=aggregate_train_metrics,
    )
    rule: Strategy
    if name == "fedavg":
        rule = FedAvg(**common)
    elif name == "trimmed":
        b = beta if beta > 0 else auto_beta(m, num_malicious_nodes)
        if not b < 0.5:  # Flower's own ValueError names neither n nor f
            need = max(num_malicious_nodes, 1)
            given = f"beta={beta:g}" if beta > 0 else f"the automatic beta={b:g}"
            raise InvalidParameterError(
                f"FedTrimmedAvg with {given} would trim every update of n={m} (beta must be "
                f"below 0.5); trimming max(f, 1)={need} per side (f={num_malicious_nodes}) "
                f"needs n > {2 * need}. Use more clients or "
                + ("a smaller f." if num_malicious_nodes else "strategy 'fedavg'.")
            )
        rule = FedTrimmedAvg(beta=b, **common)
    elif name == "krum":
        rule = Krum(num_malicious_nodes=num_malicious_nodes, **common)
    elif name == "bulyan":
        rule = Bulyan(num_malicious_nodes=num_malicious_nodes, **common)
    else:
        raise InvalidParameterError(
            f"The 'strategy' parameter must be one of {', '.join(map(repr, STRATEGIES))}. "
            f"Got {name!r} instead."
        )
    if not robust:
        return DPSGDScreen(rule) if robust_kwargs.get("require_dp_sgd") else rule
    return RobustStrategy(rule, num_malicious_nodes=num_malicious_nodes, **robust_kwargs)
