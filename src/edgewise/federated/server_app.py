"""The Flower ``ServerApp``: fit the fleet normaliser, then train the model in rounds.

:func:`run_federated` is the whole server side and works on any Flower ``Grid`` (the
deployment engine's, or :class:`~edgewise.federated.inprocess.InProcessGrid`):

1. one round over the devices' normaliser statistics (count, sum, sum of squares), each
   reply screened (shapes, finite, a real variance) and the devices' means and variances
   combined by a trimmed mean dropping ``max(f, 1)`` per side (:class:`_StatsRound`),
   giving the fleet's normaliser without pooled data; with ``stats_bounds`` the devices
   release them through record-level DP (:mod:`edgewise.federated.stats_privacy`), paid
   from the same per-device budget as DP-SGD and recorded in the run ledger, so the
   record-level ε covers them;
2. ``rounds`` rounds of the chosen rule (``fedavg``/``trimmed``/``krum``/``bulyan``),
   wrapped in :class:`~edgewise.federated.strategies.RobustStrategy` and, when
   ``dp_noise > 0``, in Flower's ``DifferentialPrivacyServerSideFixedClipping`` (device-level
   DP; ε from :mod:`edgewise.federated.privacy`), driven by Flower's ``Strategy.start``.
   Record-level DP is the devices' own: a run config ``dp-sgd-epsilon`` budget makes each
   device calibrate DP-SGD to it, report the ε it spent, and the run's report keeps the
   largest (:func:`edgewise.federated.client_app.dp_sgd_budget`).

Every reply the server receives passes through :class:`WireLog`, which records what
crossed the wire (record types, array shapes, metric names, bytes) and, in the run's
:class:`~edgewise.federated.ledger.RunLedger`, the privacy each round really spent: the
devices' DP-SGD as their replies arrive, and a device-level noisy round as soon as it is
aggregated, before the new model leaves the server. The ε reported is the ledger's: rounds
skipped, refused or never run cost nothing, and a stopped run resumed from its checkpoint
composes with every round its ledger holds (``checkpoint.privacy.json`` beside the
checkpoint; :func:`run_ledger_path`). After each round a checkpoint (global arrays, round,
normaliser) is written when ``checkpoint`` is given, and a later call with the same path
resumes after the last finished round.

A run that trained nothing fails with :class:`FederatedRunError` instead of returning the
untouched initial model: a round in which every device failed (or none answered) stops
the run there, as does a run in which no round produced an aggregated update, or one
that asked for record-level DP-SGD and got no ε from any device. The deployment entry
point (:func:`main`) then writes ``error.json`` beside where ``result.json`` would go and
registers, signs and publishes nothing.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    Strategy,
)
from flwr.supercore.differential_privacy import compute_clip_model_update as _flower_clip

from edgewise.errors import EdgewiseError, InvalidParameterError
from edgewise.federated._grid import DelegatingGrid
from edgewise.federated.data import ConditionNormaliser
from edgewise.federated.ledger import PrivacyBudgetError, RunLedger
from edgewise.federated.model import build_model
from edgewise.federated.privacy import Mechanism, PrivacyReport, check_device_dp
from edgewise.federated.stats_privacy import DEFAULT_STATS_SHARE, StatsBounds
from edgewise.federated.strategies import (
    WITHOUT_DP_SGD_KEY,
    DPSGDScreen,
    RejectedUpdate,
    RobustStrategy,
    aggregate_train_metrics,
    decode_arrays,
    dp_sgd_mechanism,
    in_model_order,
    is_cap,
    make_strategy,
    reported_epsilon,
    scalar_metric,
    states_dp_sgd,
)
from edgewise.models._words import and_more

__all__ = ["FederatedResult", "FederatedRunError", "WireLog", "app", "check_resume",
           "read_checkpoint", "read_checkpoint_rule", "rule_path", "run_federated",
           "run_ledger_path"]

log = logging.getLogger(__name__)


class FederatedRunError(EdgewiseError, RuntimeError):
    """A federated run produced no model worth keeping (every device failed in a round, no
    round aggregated an update, or the privacy it was asked for cannot be stated)."""


class _DeviceDP(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed-clipping DP, over a fixed denominator: the ``m`` devices
    sampled for the round.

    The released model is the global model plus the sum of the clipped updates received
    (each clipped to ``C``), divided by ``m`` (``num_sampled_clients``, configured, not
    counted from the replies), plus Gaussian noise of sd ``z * C / m`` (Flower's). A device
    that dropped out, failed, was refused by the screen, sent arrays that cannot be read
    (:func:`~edgewise.federated.strategies.decode_arrays`) or holding NaN or Inf (left out
    here even without the screen, listed in :attr:`events`) counts as a 0 update (the global
    model sent back), which is inside the clip. Replacing one device's clipped update
    moves the release by at most ``2 C / m`` whatever the number ``k`` of updates averaged,
    so every round is a Gaussian mechanism of noise multiplier ``z / 2`` against one device
    replaced: what :func:`~edgewise.federated.privacy.device_level_epsilon` accounts. (The
    mean used to be taken over the ``k`` received, with noise ``z * C / k``: then whether a
    device's update was averaged changed the noise's own variance, and the ε accounted
    did not hold; a dropout now shrinks the mean towards the global model, a utility cost,
    not a privacy one.) A round in which no update is averaged still releases the global
    model plus that noise.

    Only per-device rules may decide which updates count (:class:`_DeviceDPScreen`): one
    device's update must not decide whether another's is averaged.

    Flower clips each update against the global model by position (the arrays' order), so
    each reply's arrays are first put in the global model's order
    (:func:`~edgewise.federated.strategies.in_model_order`).

    Every update counts ``1 / m``: the devices' own ``unit-weight`` is not used for the
    model (a device reporting 1e-9 gave the others up to all of a weighted mean); a
    reported weight other than 1 is set to 1 for the train metrics' mean, logged, naming
    the device and the value, and listed in :attr:`reweighted`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: (round, node id, the weight it reported) of each update averaged with weight 1
        #: instead of the weight its device reported (the run's round: Flower's plus
        #: :attr:`round_offset`, the rounds a resumed run had done).
        self.reweighted: list[tuple[int, int, Any]] = []
        #: Each update left out here for holding NaN or Inf (reason ``non-finite``), which
        #: the robust screen refuses before this when there is one (``robust=False`` has
        #: none): clipped, a NaN stayed NaN (Flower's scale is ``min(1, C / NaN)`` = 1) and
        #: the whole released model became NaN.
        self.events: list[RejectedUpdate] = []
        self.round_offset = 0

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Sample exactly ``m`` (``num_sampled_clients``) of the connected devices.

        The rule was built for ``m`` of the ``--min-available`` devices (``fraction_train``
        = m / min-available), and Flower samples that fraction of every device connected:
        with more connected it sampled more than ``m``, whose sum :meth:`aggregate_train`
        still divides by ``m`` (5 sampled over 3: each device's update counted 5/3, past
        the clip's ``C / m`` the ε is accounted for). The fraction is set to ``m`` over the
        devices connected now, and a sample still larger (a device connecting meanwhile)
        is cut to ``m``; more devices than the ``min-available`` accounted for only lower
        each one's chance of being sampled, so the ε stays an upper bound.
        """
        m = int(self.num_sampled_clients)
        connected = len(list(grid.get_node_ids()))
        if connected > 0 and hasattr(self.strategy, "fraction_train"):
            self.strategy.fraction_train = min(1.0, m / connected)
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if len(messages) > m:
            log.info("round %d: %d devices sampled; %d are kept (device-level DP divides by "
                     "m = %d)", self.round_offset + server_round, len(messages), m, m)
            messages = messages[:m]
        return messages

    def equal_weights(self, server_round: int, replies: list[Message], *,
                      invalid_too: bool = True) -> None:
        """Set the weighting metric of every reply with content to 1 (see the class); with
        ``invalid_too=False`` one that is not a positive finite number is left for the
        robust screen to refuse (a malformed reply)."""
        key = str(getattr(self.strategy, "weighted_by_key", "unit-weight"))
        for msg in replies:
            if msg.has_error():
                continue
            for metrics in msg.content.metric_records.values():
                w = metrics.get(key)
                x = scalar_metric(w)
                if w is None or x == 1:
                    continue
                valid = x is not None and x > 0
                if not valid and not invalid_too:
                    continue
                node = int(msg.metadata.src_node_id)
                run_round = self.round_offset + server_round
                self.reweighted.append((run_round, node, w))
                log.warning("round %d: device (node %d) reported %r %r; under device-level "
                            "DP every update is averaged with weight 1 (the noise is sized "
                            "for that), so it counts as 1", run_round, node, key, w)
                metrics[key] = 1

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The global model plus the sum of the clipped updates over ``m``, plus noise of
        sd ``z * C / m`` (see the class); the train metrics are the wrapped rule's mean of
        the averaged replies that share the most common metric keys."""
        replies = list(replies)
        self.equal_weights(server_round, replies)
        event = self._pop_pending_event(server_round)
        names = list(self.current_arrays.keys())
        reference = self.current_arrays.to_numpy_ndarrays()
        total = [np.zeros(r.shape, np.float64) for r in reference]
        averaged: list[Message] = []
        for msg in replies:
            if msg.has_error():
                continue
            in_model_order(msg, names)
            records = list(msg.content.array_records.values())
            update: list[np.ndarray] | None = None
            if len(records) == 1 and list(records[0].keys()) == names:
                try:  # read once; one that cannot be read is this device's 0 update
                    update = list(decode_arrays(records[0]).values())
                except ValueError:
                    update = None
            if update is None or any(a.shape != r.shape
                                     for a, r in zip(update, reference, strict=True)):
                log.warning("round %d: update from node %d does not hold the model's "
                            "arrays (or one cannot be read); it counts as a 0 update",
                            self.round_offset + server_round, int(msg.metadata.src_node_id))
                continue
            if not all(np.isfinite(a).all() for a in update):
                run_round = self.round_offset + server_round
                node = int(msg.metadata.src_node_id)
                self.events.append(RejectedUpdate(run_round, node, "non-finite",
                                                  "NaN or Inf in the update"))
                log.warning("round %d: update from node %d rejected (NaN or Inf in the "
                            "update); it counts as a 0 update", run_round, node)
                continue
            _clip_update(update, reference, self.clipping_norm)  # in place: model + clipped
            for t, a, r in zip(total, update, reference, strict=True):
                t += a.astype(np.float64) - r
            averaged.append(msg)
        m = self.num_sampled_clients
        mean = ArrayRecord({k: Array(np.asarray(r + t / m, dtype=r.dtype))
                            for k, r, t in zip(names, reference, total, strict=True)})
        arrays = self._add_noise_to_aggregated_arrays(mean)
        self._compose_release(event)
        return arrays, self._train_metrics(averaged)

    def _train_metrics(self, averaged: list[Message]) -> MetricRecord | None:
        """The wrapped rule's mean of the train metrics of the averaged replies that carry
        the most common metric keys with the weighting key (Flower's mean needs the same
        keys in all); ``None`` when there is none."""
        key = str(getattr(self.strategy, "weighted_by_key", "unit-weight"))
        contents = [m.content for m in averaged if len(m.content.metric_records) == 1
                    and key in next(iter(m.content.metric_records.values()))]
        if not contents:
            return None
        layouts = [(next(iter(c.metric_records)),
                    frozenset(next(iter(c.metric_records.values())))) for c in contents]
        common = Counter(layouts).most_common(1)[0][0]
        same = [c for c, lay in zip(contents, layouts, strict=True) if lay == common]
        aggr = getattr(self.strategy, "train_metrics_aggr_fn", aggregate_train_metrics)
        return aggr(same, key)


def _clip_update(param1: list[np.ndarray], param2: list[np.ndarray],
                 clipping_norm: float) -> None:
    """Flower's ``compute_clip_model_update`` (``param1`` becomes ``param2`` plus the update
    ``param1 - param2`` clipped to ``clipping_norm``, in place), where an update of norm 0
    (a device sending the global model back unchanged: no data, or nothing learned) is
    left as it is: Flower's divides the clipping norm by the update's norm, and that one
    device's ZeroDivisionError ended the run.

    >>> a = [np.zeros(2)]
    >>> _clip_update(a, [np.zeros(2)], 1.0); a[0].tolist()
    [0.0, 0.0]
    >>> b = [np.array([3.0, 4.0])]
    >>> _clip_update(b, [np.zeros(2)], 1.0); b[0].round(3).tolist()
    [0.6, 0.8]
    """
    if all(np.array_equal(a, b) for a, b in zip(param1, param2, strict=True)):
        return
    _flower_clip(param1=param1, param2=param2, clipping_norm=clipping_norm)


class _DeviceDPScreen(RobustStrategy):
    """The robust screen of a device-level DP run, outside :class:`_DeviceDP`: per-device
    checks only (``per_device``: shape, dtype, finite values and metrics, a positive
    weight, DP-SGD when asked; no layout majority, no norm bound relative to the others'
    updates, no weight cap), so that one device's update never decides whether another's
    is averaged; the clip bounds each one's influence to ``C``. A refused update counts as
    a 0 update in :class:`_DeviceDP`'s fixed denominator, and a round with none left
    still releases (the global model plus noise), not a skip that would tell.

    Every reply's ``unit-weight`` is set to 1 (:meth:`_DeviceDP.equal_weights`) before the
    screen sees it; a weight that is not a positive finite number is still refused by the
    screen, as a malformed reply.

    No rule condition is checked (``check_rules``): the wrapped rule is the DP mean, whose
    bound on one device is the clip, and f only sets the evaluation metrics' trim.
    """

    check_rules = False

    def __init__(self, dp: _DeviceDP, num_malicious_nodes: int = 0, *,
                 require_dp_sgd: bool = False) -> None:
        super().__init__(dp, num_malicious_nodes=num_malicious_nodes,
                         require_dp_sgd=require_dp_sgd, per_device=True)
        self.weighted_by_key = "unit-weight"

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Set every valid weight to 1, screen, and hand what passes to :class:`_DeviceDP`
        (whatever is left: it divides by ``m``)."""
        replies = list(replies)
        if isinstance(self.strategy, _DeviceDP):
            self.strategy.equal_weights(server_round, replies, invalid_too=False)
        return self.strategy.aggregate_train(server_round, self.screen(server_round, replies))


class WireLog(Strategy):
    """Record what every client reply carried, then delegate to the wrapped strategy.

    With a ``ledger``, each training round's DP-SGD (what the replying devices say they ran)
    is written to it when the replies arrive, and, with ``device_dp`` = (noise multiplier,
    devices, sampled), each round aggregated with device-level noise right after the
    aggregation, before Flower sends the new model anywhere. Each aggregated round's entry
    names the devices whose update went into it stating no DP-SGD mechanism (a reply the
    wrapped screen refused did not: :meth:`_aggregated_without_dp_sgd`), so that no
    record-level ε is claimed for a model such an update moved, in this run or a resumed
    one. ``round_offset`` turns Flower's
    round numbers into the run's (a resumed run starts after its checkpoint). In the
    normaliser round (``phase="stats"``) with ``stats_dp`` = (noise multiplier, its ε alone,
    bounds), the devices' DP release of their statistics is written to it instead.
    """

    def __init__(self, strategy: Strategy, phase: str = "train", *,
                 ledger: RunLedger | None = None,
                 device_dp: tuple[float, int, int | None] | None = None,
                 round_offset: int = 0,
                 stats_dp: tuple[float, float, dict[str, Any]] | None = None) -> None:
        self.strategy = strategy
        self.phase = phase
        self.ledger = ledger
        self.device_dp = device_dp
        self.stats_dp = stats_dp
        self.round_offset = round_offset
        self.entries: list[dict[str, Any]] = []
        self.aggregated_rounds: list[int] = []
        self.trained_rounds: list[int] = []

    def summary(self) -> None:
        """Delegate."""
        self.strategy.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        """Delegate."""
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        """Delegate."""
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def _record(self, server_round: int, phase: str, replies: list[Message]) -> None:
        for msg in replies:
            entry: dict[str, Any] = {"round": self.round_offset + server_round, "phase": phase,
                                     "node": int(msg.metadata.src_node_id),
                                     "error": msg.has_error()}
            if not msg.has_error():
                c = msg.content
                entry["array_records"] = {
                    k: {n: list(a.shape) for n, a in r.items()} for k, r in c.array_records.items()
                }
                entry["metric_records"] = {k: sorted(r.keys()) for k, r in c.metric_records.items()}
                entry["config_records"] = sorted(c.config_records.keys())
                # An array Flower cannot read (another stype, bytes that are no .npy file)
                # ended the run here, before any screen: it is noted, and the screen that
                # follows refuses the reply naming the device.
                try:
                    entry["array_bytes"] = int(sum(
                        a.nbytes for r in c.array_records.values()
                        for a in decode_arrays(r).values()))
                except ValueError as exc:
                    entry["unreadable"] = str(exc)
            self.entries.append(entry)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Record the replies, then aggregate them with the wrapped strategy.

        Raises :class:`FederatedRunError` when no device answered or every one failed:
        continuing would only hand the same model to the next round and, at the end, an
        untrained model to the registry.
        """
        replies = list(replies)
        self._record(server_round, self.phase, replies)
        without: list[str] = []  # the devices whose update states no DP-SGD mechanism
        if self.phase == "stats":  # the normaliser round: what the devices' release spent
            if self.ledger is not None and self.stats_dp is not None:
                z, eps, bounds = self.stats_dp
                self.ledger.stats_round(_stats_dp_spent(replies), noise_multiplier=z,
                                        epsilon=eps, bounds=bounds)
        else:
            self.trained_rounds.append(server_round)
            if self.ledger is not None:
                mechanisms, reported = _dp_sgd_spent(replies)
                self.ledger.record_round(self.round_offset + server_round, mechanisms,
                                         reported)
            without = [str(int(m.metadata.src_node_id)) for m in replies
                       if not m.has_error() and not states_dp_sgd(m.content)]
        failed = [m for m in replies if m.has_error()]
        if len(failed) == len(replies):
            why = (f"every one of the {len(replies)} devices failed; first error: "
                   f"{str(failed[0].error.reason)[:300]}" if replies else
                   "no device answered within the round timeout")
            raise FederatedRunError(f"Round {self.round_offset + server_round}: {why}")
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if self.phase == "stats":
            return arrays, metrics
        if arrays is not None:
            self.aggregated_rounds.append(server_round)
            if self.ledger is not None and self.device_dp is not None:
                z, n, m = self.device_dp
                self.ledger.device_round(self.round_offset + server_round, noise_multiplier=z,
                                         num_devices=n, sample_size=m)
            if self.ledger is not None:
                self.ledger.aggregated_round(
                    self.round_offset + server_round,
                    without_dp_sgd=self._aggregated_without_dp_sgd(server_round, without))
        return arrays, metrics

    def _aggregated_without_dp_sgd(self, server_round: int, without: list[str]) -> list[str]:
        """Those of ``without`` (node ids whose reply stated no DP-SGD) that the wrapped
        strategy's screen did not refuse this round: their update went into the aggregate
        (a trimmed or unselected one too, conservatively: it still shaped the result)."""
        if not without or not isinstance(self.strategy, RobustStrategy):
            return without
        run_round = self.strategy.round_offset + server_round
        refused = {str(e.node_id) for e in self.strategy.events
                   if e.server_round == run_round and not is_cap(e.reason)
                   and not e.reason.startswith("eval-")}
        return [n for n in without if n not in refused]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        """Record the replies, then aggregate them with the wrapped strategy."""
        replies = list(replies)
        self._record(server_round, "evaluate", replies)
        return self.strategy.aggregate_evaluate(server_round, replies)


@dataclass
class FederatedResult:
    """What a federated run produced.

    ``rejected`` holds the robust rule's events and the normaliser round's refusals: the
    updates and replies refused, and those whose weight was capped (reason ending
    ``-capped``: used, with the capped weight); :attr:`refused` and :attr:`capped` tell
    them apart.
    """

    arrays: ArrayRecord
    normaliser: ConditionNormaliser
    privacy: PrivacyReport
    rounds_done: int
    strategy: str
    wire: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    skipped_rounds: list[int] = field(default_factory=list)
    train_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    evaluate_metrics: dict[int, dict[str, float]] = field(default_factory=dict)

    @property
    def refused(self) -> list[dict[str, Any]]:
        """The updates and replies refused (left out), of :attr:`rejected`."""
        return [e for e in self.rejected if not is_cap(str(e.get("reason", "")))]

    @property
    def capped(self) -> list[dict[str, Any]]:
        """The updates and replies used with their weight capped, of :attr:`rejected`."""
        return [e for e in self.rejected if is_cap(str(e.get("reason", "")))]

    def state_dict(self) -> dict[str, Any]:
        """The global model as a PyTorch ``state_dict``."""
        return self.arrays.to_torch_state_dict()

    def bytes_per_client_round(self) -> float:
        """Mean bytes of model arrays one client uploads per training round."""
        sizes = [e["array_bytes"] for e in self.wire
                 if e["phase"] == "train" and not e["error"] and "array_bytes" in e]
        return float(np.mean(sizes)) if sizes else 0.0


class _StatsRound(FedAvg):
    """The normaliser round: screen every device's statistics, then combine them.

    Each reply must hold ``count`` (C,), ``sum`` (C, F) and ``sumsq`` (C, F), numpy arrays
    Flower can read (:func:`~edgewise.federated.strategies.decode_arrays`), all finite,
    counts >= 0 with at least one record, ``sumsq >= sum**2 / count`` per cell (up to
    rounding), and the feature count most devices send: anything else is a malformed reply,
    left out of the normaliser with a warning naming the device, and listed in ``malformed``
    (node ids) and ``refused`` (round 0, reason ``"malformed-stats"``). One device could
    otherwise end the run with a negative count. The run fails only when, after such a
    refusal, fewer than ``2 max(f, 1) + 1`` devices are left to combine (too few to trim
    ``max(f, 1)`` per side). The devices' self-reported weights are ignored (the statistics
    carry their own counts).

    Per condition and feature the devices' own means and variances are combined by a
    trimmed mean that drops the ``max(f, 1)`` largest and smallest values (``f`` declared
    attackers); the pooled variance is the trimmed mean of ``var_i + (mean_i - mean)**2``.
    Each device counts once, whatever count it claims. That takes ``2 max(f, 1) + 1``
    devices holding the condition; with fewer the trim leaves their median, which one of
    them moves (of two, halfway; of one, anywhere).

    Under DP (``dp``) a device reports a condition of too few readings for the noise as
    absent (all zeros, :func:`~edgewise.federated.stats_privacy.post_process`; a device
    with no condition left is left out, not refused), so the devices left holding a
    condition may be one attacker and nobody else: it set that condition's normaliser
    alone. With the public sensor bounds (``bounds``, as every DP run has) a condition
    held by fewer than ``2 max(f, 1) + 1`` devices takes the bounds' midpoint as its mean
    and their half-width as its sd, the scaling the release itself uses, which no device
    sets; it is listed in ``public_conditions`` and logged. Under DP a reply of another
    feature count than the bounds' is malformed. Without DP there is no public value: such
    a condition keeps the median of its holders, with a warning naming it (every honest
    device then reports each condition it holds a reading of).
    When the round asked for DP with noise multiplier ``dp_noise``, a reply that does not
    state ``dp-stats-noise`` >= ``dp_noise`` (a device on a client from before DP
    statistics sends them in the clear; one may also have run less noise) is left out of
    the normaliser too, before its statistics are read, and listed in ``undp`` (node ids)
    and ``refused`` (as the robust rule's refusals: round 0, reason ``"no-dp-stats"``):
    averaged in, it would void the ε the report states for the normaliser.
    With ``f = 0`` the statistics used
    to be pooled exactly (sums over devices), so one device claiming 10⁹ records of mean
    1000 set every feature's mean to 1000; as in the model rounds, one device is trimmed
    by default. With at least 3 devices holding a condition one device can then move its
    normaliser no further than the honest devices' own spread (with 2, the median is their
    mean; under DP such a condition takes the public bounds' scaling instead).
    """

    def __init__(self, n_conditions: int, num_nodes: int, num_malicious_nodes: int,
                 dp: bool = False, dp_noise: float = 0.0,
                 bounds: StatsBounds | None = None) -> None:
        super().__init__(fraction_evaluate=0.0, min_train_nodes=num_nodes,
                         min_available_nodes=num_nodes)
        self.n_conditions = n_conditions
        self.num_malicious_nodes = num_malicious_nodes
        self.dp = dp or dp_noise > 0 or bounds is not None
        self.dp_noise = float(dp_noise)
        self.bounds = bounds
        #: conditions held by too few devices to trim, given the public bounds' scaling
        self.public_conditions: list[int] = []
        self.empty: list[int] = []  # under DP: devices whose every condition came out absent
        self.undp: list[int] = []  # under DP: devices whose reply does not state the noise
        self.malformed: list[int] = []  # devices whose statistics were malformed
        self.refused: list[dict[str, Any]] = []  # those, as the robust rule's refusals
        self.normaliser: ConditionNormaliser | None = None

    def _released_with_dp(self, msg: Message) -> bool:
        """Whether ``msg`` states a release with at least the noise asked for; if not, the
        device is logged, listed in ``undp`` and ``refused``, and left out."""
        node = int(msg.metadata.src_node_id)
        stated = _stated_stats_noise(msg)
        if stated >= self.dp_noise * (1.0 - 1e-9):
            return True
        raw = [rec["dp-stats-noise"] for rec in msg.content.metric_records.values()
               if "dp-stats-noise" in rec]
        detail = (f"device (node {node}) sent its normaliser statistics "
                  + (f"with noise multiplier {stated:g}" if stated > 0 else
                     f"stating dp-stats-noise {raw[0]!r}, not a finite number" if raw
                     and scalar_metric(raw[0]) is None else
                     f"stating dp-stats-noise {raw[0]!r}, no noise (a noise multiplier is "
                     "> 0)" if raw else
                     "without DP (no dp-stats-noise: a client from before DP statistics?)")
                  + f" where the run asked for dp-stats-noise {self.dp_noise:g}; they are "
                  "left out of the normaliser")
        log.warning("normaliser round: %s", detail)
        self.undp.append(node)
        self.refused.append({"server_round": 0, "node_id": node, "reason": "no-dp-stats",
                             "detail": detail})
        return False

    def _check(self, msg: Message) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        node = int(msg.metadata.src_node_id)
        c = self.n_conditions

        def bad(why: str) -> FederatedRunError:
            return FederatedRunError(
                f"Normaliser round: device (node {node}) sent malformed statistics: {why}.")

        records = list(msg.content.array_records.values())
        if len(records) != 1:
            raise bad(f"{len(records)} array records; expected exactly one")
        try:
            arrays = decode_arrays(records[0])
        except ValueError as exc:  # Flower's Array.numpy() raised, and ended the run
            raise bad(str(exc)) from None
        if set(arrays) != {"count", "sum", "sumsq"}:
            raise bad(f"arrays {sorted(arrays)}; expected ['count', 'sum', 'sumsq']")
        # Real numbers only: an array of strings raised numpy's ValueError below and ended
        # the run for every device, and a complex one lost its imaginary part unseen.
        odd = {k: str(a.dtype) for k, a in arrays.items()
               if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating))}
        if odd:
            raise bad(f"array dtypes {odd}; count, sum and sumsq must be real numbers "
                      "(integer or floating point)")
        count, total, squares = (np.asarray(arrays[k], dtype=np.float64)
                                 for k in ("count", "sum", "sumsq"))
        if count.shape != (c,) or total.ndim != 2 or total.shape[0] != c \
                or squares.shape != total.shape:
            raise bad(f"shapes count {count.shape}, sum {total.shape}, sumsq {squares.shape}; "
                      f"expected ({c},), ({c}, F), ({c}, F)")
        if self.bounds is not None and total.shape[1] != self.bounds.n_features:
            raise bad(f"{total.shape[1]} features where the run's sensor bounds cover "
                      f"{self.bounds.n_features}")
        if not (np.isfinite(count).all() and np.isfinite(total).all()
                and np.isfinite(squares).all()):
            raise bad("NaN or Inf in count, sum or sumsq; every value must be finite")
        if self.dp and not count.any() and not total.any() and not squares.any():
            return count, total, squares  # every condition absent after the DP release
        if (count < 0).any() or count.sum() <= 0:
            raise bad(f"count {count.tolist()}; counts must be >= 0 with at least one record")
        n = np.maximum(count, 1.0)[:, None]
        floor = total * total / n
        if ((squares < floor - 1e-6 * (np.abs(floor) + 1.0)) | (squares < 0)).any():
            raise bad("sumsq is below sum**2 / count (a negative variance); these are not "
                      "the statistics of any data")
        return count, total, squares

    def _leave_out(self, msg: Message, detail: str) -> None:
        """Log a device's malformed statistics and list it in ``malformed`` and ``refused``."""
        node = int(msg.metadata.src_node_id)
        log.warning("%s It is left out of the normaliser.", detail)
        self.malformed.append(node)
        self.refused.append({"server_round": 0, "node_id": node, "reason": "malformed-stats",
                             "detail": detail})

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen each device's statistics and combine them (see the class docstring)."""
        ok = [m for m in replies if not m.has_error()]
        if self.dp_noise > 0:  # statistics sent without the DP asked for stay out
            ok = [m for m in ok if self._released_with_dp(m)]
        checked: list[tuple[Message, tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
        for msg in ok:
            try:
                checked.append((msg, self._check(msg)))
            except FederatedRunError as exc:  # one device must not end the run
                self._leave_out(msg, str(exc))
        if self.dp:  # a device too small for the noise reports every condition as absent
            self.empty = [int(m.metadata.src_node_id) for m, st in checked if not st[0].any()]
            checked = [(m, st) for m, st in checked if st[0].any()]
        if checked:
            widths = [st[1].shape[1] for _, st in checked]
            width = max(set(widths), key=widths.count)  # the feature count most devices send
            for msg, st in checked:
                if st[1].shape[1] != width:
                    self._leave_out(msg, (
                        f"Normaliser round: device (node {int(msg.metadata.src_node_id)}) "
                        f"sent malformed statistics: {st[1].shape[1]} features where the "
                        f"other devices send {width}."))
            checked = [(m, st) for m, st in checked if st[1].shape[1] == width]
        need = 2 * max(self.num_malicious_nodes, 1) + 1
        if self.malformed and len(checked) < need:
            first = next(e["detail"] for e in self.refused if e["reason"] == "malformed-stats")
            raise FederatedRunError(
                f"Normaliser round: {len(self.malformed)} device(s) (nodes {self.malformed}) "
                f"sent malformed statistics and were left out (first: {first}); "
                f"{len(checked)} device(s) are left, fewer than the 2 max(f, 1) + 1 = {need} "
                f"(f={self.num_malicious_nodes}) a trimmed combination needs to trim "
                f"{max(self.num_malicious_nodes, 1)} per side. Fix or disconnect those "
                "devices, or run with more devices.")
        if not checked:
            return None, None
        stats = [st for _, st in checked]
        trim = max(self.num_malicious_nodes, 1)
        self.normaliser, few = _robust_normaliser(stats, trim, self.bounds)
        for j, k in few.items():
            if self.bounds is not None:
                self.public_conditions.append(j)
                log.warning(
                    "normaliser round: condition %d is held by %d device(s), fewer than the "
                    "2 max(f, 1) + 1 = %d a trimmed mean needs (under DP a device with too "
                    "few readings of it reports it absent); it takes the public sensor "
                    "bounds' midpoint and half-width, which no device sets", j, k, 2 * trim + 1)
            elif k:
                log.warning(
                    "normaliser round: condition %d is held by %d device(s), fewer than the "
                    "2 max(f, 1) + 1 = %d a trimmed mean needs; its normaliser is their "
                    "median, which one of them can move", j, k, 2 * trim + 1)
        return ArrayRecord(), MetricRecord()


def _trim(values: np.ndarray, f: int) -> np.ndarray:
    """Mean over axis 0 after dropping the f largest and f smallest (median if too few)."""
    if len(values) <= 2 * f:
        return np.median(values, axis=0)
    ordered = np.sort(values, axis=0)
    return ordered[f:len(values) - f].mean(axis=0)


def _robust_normaliser(stats: list[tuple[np.ndarray, np.ndarray, np.ndarray]], f: int,
                       bounds: StatsBounds | None = None
                       ) -> tuple[ConditionNormaliser, dict[int, int]]:
    """Trimmed combination of the devices' per-condition means and variances, and the
    conditions held by fewer than ``2 f + 1`` devices (too few to trim ``f`` per side),
    with how many hold each. With ``bounds`` those take the bounds' midpoint and
    half-width (mean and sd); without, the median of their holders (0 and sd 1 when none
    holds one).

    >>> one = (np.array([5.0, 5.0]), np.array([[5.0], [5e4]]), np.array([[10.0], [5e8 + 5]]))
    >>> b = StatsBounds.from_doc({"lower": [0.0], "upper": [4.0]}, 2)
    >>> norm, few = _robust_normaliser([one], 1, b)
    >>> norm.mean.ravel().tolist(), norm.std.ravel().tolist(), few
    ([2.0, 2.0], [2.0, 2.0], {0: 1, 1: 1})
    """
    c, width = stats[0][1].shape
    mean = np.zeros((c, width))
    var = np.zeros((c, width))
    few: dict[int, int] = {}
    for j in range(c):
        held = [(s[0][j], s[1][j], s[2][j]) for s in stats if s[0][j] > 0]
        if len(held) < 2 * f + 1:
            few[j] = len(held)
            if bounds is not None:
                mean[j], var[j] = bounds.centre[j], bounds.half_width[j] ** 2
                continue
        if not held:
            continue
        means = np.array([t / n for n, t, _ in held])
        variances = np.array([np.maximum(q / n - (t / n) ** 2, 0.0) for n, t, q in held])
        mean[j] = _trim(means, f)
        var[j] = _trim(variances + (means - mean[j]) ** 2, f)
    # from_stats with one record per cell: mean = sum, variance = sumsq - sum**2
    return ConditionNormaliser.from_stats(np.ones(c), mean, var + mean * mean), few


def fit_normaliser(grid: Grid, n_conditions: int, num_nodes: int,
                   timeout: float = 60.0, num_malicious_nodes: int = 0,
                   wire: list[dict[str, Any]] | None = None, *,
                   stats_dp: tuple[float, StatsBounds] | None = None,
                   ledger: RunLedger | None = None, delta: float = 1e-5,
                   rejected: list[dict[str, Any]] | None = None
                   ) -> ConditionNormaliser:
    """One round over the devices' normaliser statistics (see :class:`_StatsRound`); its
    replies are recorded in ``wire`` (phase ``"stats"``) when given.

    With ``stats_dp`` = (noise multiplier z, public bounds) each device releases them through
    the Gaussian mechanism of :mod:`edgewise.federated.stats_privacy`, and ``ledger``
    records what each replying device spent (one step ``(z, 1.0, 1)``, ε at ``delta``). A
    reply that does not state ``dp-stats-noise`` >= z is left out of the normaliser and
    added to ``rejected`` when given (round 0, reason ``"no-dp-stats"``); with no device
    left, the run fails. A malformed reply is left out the same way (reason
    ``"malformed-stats"``); the run then fails when fewer than ``2 max(f, 1) + 1`` devices
    are left (:class:`_StatsRound`). Under DP a condition that fewer than
    ``2 max(f, 1) + 1`` devices hold takes the bounds' midpoint and half-width as its mean
    and sd, with a warning naming it: the holders left could be one attacker alone.
    """
    config = ConfigRecord({"phase": "stats"})
    spent: tuple[float, float, dict[str, Any]] | None = None
    if stats_dp is not None:
        from edgewise.federated.privacy import composed_epsilon
        from edgewise.federated.stats_privacy import stats_mechanism

        z, bounds = stats_dp
        if bounds.n_conditions != n_conditions:
            raise InvalidParameterError(
                f"The sensor bounds cover {bounds.n_conditions} operating condition(s); the "
                f"run's data has {n_conditions}.")
        config["dp-stats-noise"] = float(z)
        config["dp-stats-lower"] = [float(x) for x in bounds.lower.ravel()]
        config["dp-stats-upper"] = [float(x) for x in bounds.upper.ravel()]
        spent = (float(z), composed_epsilon([stats_mechanism(z)], delta), bounds.to_doc())
    stats_strategy = _StatsRound(n_conditions, num_nodes, num_malicious_nodes,
                                 dp=stats_dp is not None,
                                 dp_noise=float(stats_dp[0]) if stats_dp is not None else 0.0,
                                 bounds=stats_dp[1] if stats_dp is not None else None)
    logged = WireLog(stats_strategy, phase="stats", ledger=ledger, stats_dp=spent)
    logged.start(grid=grid, initial_arrays=ArrayRecord(), num_rounds=1, timeout=timeout,
                 train_config=config)
    if wire is not None:
        wire.extend(logged.entries)
    if rejected is not None:
        rejected.extend(stats_strategy.refused)
    if stats_strategy.empty:
        log.warning("normaliser round: %d device(s) (nodes %s) hold too few readings for the "
                    "DP noise and sent no statistics", len(stats_strategy.empty),
                    stats_strategy.empty)
    if stats_strategy.normaliser is None:
        raise FederatedRunError(
            "No device returned normaliser statistics; is any node connected, and does "
            "every node hold its data?" + (
                f" Under DP, {len(stats_strategy.empty)} device(s) reported no condition: "
                "each noisy count was below 3x the noise's standard deviation (too few "
                "readings for the noise). More readings per device or a larger budget "
                "(--dp-epsilon, --stats-share) helps; tighter bounds do not."
                if stats_strategy.empty else "") + (
                f" {len(stats_strategy.undp)} device(s) (nodes {stats_strategy.undp}) sent "
                f"them without the DP asked for (dp-stats-noise {stats_dp[0]:g}) and were "
                "left out: update their edgewise client, or give no --stats-bounds."
                if stats_dp is not None and stats_strategy.undp else ""))
    return stats_strategy.normaliser


def _save_checkpoint(path: Path, arrays: ArrayRecord, server_round: int,
                     norm: ConditionNormaliser) -> None:
    """Write the checkpoint after ``server_round`` atomically and durably (as the run ledger
    is written: synced, renamed over ``path``, the folder synced), so a power loss leaves
    the previous checkpoint or this one, whole. (It was renamed over without a sync: after
    a power loss the rename could survive and the data not, an empty or partial file that
    ``--resume`` could not read.)"""
    import io

    from edgewise._private import replace_atomically

    buf = io.BytesIO()
    np.savez(buf, __round__=np.array(server_round), __norm_mean__=norm.mean,
             __norm_std__=norm.std, **{f"p:{k}": v.numpy() for k, v in arrays.items()})
    replace_atomically(path, buf.getvalue())


def rule_path(checkpoint: str | Path) -> Path:
    """Where the aggregation rule of the run that writes ``checkpoint`` is recorded
    (:func:`_rule`, JSON, written when a fresh run starts): ``<stem>.rule.json`` beside it.

    >>> rule_path("out/checkpoint.npz").name
    'checkpoint.rule.json'
    """
    path = Path(checkpoint)
    return path.with_name(path.stem + ".rule.json")


def _rule(strategy: str, *, robust: bool, num_malicious: int, beta: float,
          num_devices: int) -> dict[str, Any]:
    """The aggregation rule of a run, as it is recorded beside its checkpoint
    (:func:`rule_path`; :func:`check_resume` holds a resumed run to it: the signed manifest
    names one rule for every round).

    >>> _rule("trimmed", robust=True, num_malicious=1, beta=0.0, num_devices=5)
    {'strategy': 'trimmed', 'robust': True, 'num_malicious': 1, 'beta': 0.0, 'num_devices': 5}
    """
    return {"strategy": str(strategy), "robust": bool(robust),
            "num_malicious": int(num_malicious), "beta": float(beta),
            "num_devices": int(num_devices)}


def read_checkpoint_rule(checkpoint: str | Path) -> dict[str, Any] | None:
    """The aggregation rule the run that wrote ``checkpoint`` recorded (:func:`rule_path`,
    :func:`_rule`), or ``None`` where it recorded none (a run of an earlier version);
    :class:`FederatedRunError` in one line when the record cannot be read."""
    path = rule_path(checkpoint)
    if not path.exists():
        return None
    try:
        rule = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FederatedRunError(
            f"Cannot resume from {checkpoint}: its record of the aggregation rule {path} "
            f"cannot be read ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); "
            "start afresh without resuming (which removes it).") from None
    if not isinstance(rule, dict):
        raise FederatedRunError(
            f"Cannot resume from {checkpoint}: its record of the aggregation rule {path} "
            f"holds {rule!r}, not an object; start afresh without resuming (which removes "
            "it).")
    return rule


def _rule_conflict(held: dict[str, Any], asked: dict[str, Any]) -> str | None:
    """Why a run of rule ``asked`` cannot resume a checkpoint of rule ``held`` (``None``:
    it can), naming each setting that differs as its ``federate server`` option.

    >>> held = _rule("fedavg", robust=True, num_malicious=0, beta=0.0, num_devices=3)
    >>> print(_rule_conflict(held, {**held, "strategy": "krum", "num_malicious": 1}))
    --strategy fedavg (this run: krum), --num-malicious 0 (this run: 1)
    """
    names = {"strategy": "--strategy", "num_malicious": "--num-malicious", "beta": "--beta",
             "num_devices": "--clients (or --min-available)", "robust": "robust screening"}
    diff = [f"{names[k]} {held.get(k)} (this run: {asked[k]})" for k in names
            if k in held and held.get(k) != asked.get(k)]
    return ", ".join(diff) or None


def read_checkpoint(path: str | Path) -> tuple[int, dict[str, np.ndarray],
                                               tuple[np.ndarray, np.ndarray] | None]:
    """The last round, the model's arrays and the normaliser's (mean, sd) (``None`` when
    it holds none) of a checkpoint written by :func:`run_federated`.

    A file that is not such a checkpoint (not an ``.npz``, damaged, no ``__round__``)
    raises :class:`FederatedRunError` in one line naming it and what to do, instead of
    numpy's traceback:

    >>> import tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "checkpoint.npz"
    >>> _ = bad.write_bytes(b"not a checkpoint")
    >>> read_checkpoint(bad)
    Traceback (most recent call last):
    ...
    edgewise.federated.server_app.FederatedRunError: Cannot resume from .../checkpoint.npz: it is not a checkpoint of a federated run (ValueError: ...); start afresh without resuming (which removes it).
    """  # noqa: E501
    import zipfile

    def unreadable(why: str) -> FederatedRunError:
        return FederatedRunError(
            f"Cannot resume from {path}: it is not a checkpoint of a federated run ({why}); "
            "start afresh without resuming (which removes it).")

    try:
        with np.load(path, allow_pickle=False) as z:
            if "__round__" not in z.files:
                raise unreadable(f"no __round__ among its arrays {sorted(z.files)[:5]}")
            done = z["__round__"]
            if done.shape != () or not np.issubdtype(done.dtype, np.integer) or done < 0:
                raise unreadable(f"__round__ is {done!r}, not a round number")
            arrays = {k[2:]: z[k] for k in z.files if k.startswith("p:")}
            norm = (z["__norm_mean__"], z["__norm_std__"]) \
                if {"__norm_mean__", "__norm_std__"} <= set(z.files) else None
    except (AttributeError, TypeError) as exc:  # an .npy, not an .npz: no `with`, no files
        raise unreadable(f"a single array, not an .npz archive ({type(exc).__name__})") \
            from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise unreadable(f"{type(exc).__name__}: {' '.join(str(exc).split())[:120]}") \
            from None
    return int(done), arrays, norm


def load_checkpoint(path: str | Path) -> tuple[ArrayRecord, int, ConditionNormaliser]:
    """Read a checkpoint written by :func:`run_federated`: (arrays, round, normaliser)."""
    import torch

    done, held, norm = read_checkpoint(path)
    if norm is None:
        raise FederatedRunError(
            f"Cannot resume from {path}: it holds no normaliser (__norm_mean__, "
            "__norm_std__); start afresh without resuming (which removes it).")
    arrays = ArrayRecord({k: torch.as_tensor(v) for k, v in held.items()})
    return arrays, done, ConditionNormaliser(*norm)


def _layout(arrays: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Each array's name and shape."""
    return {k: tuple(int(d) for d in v.shape) for k, v in arrays.items()}


def check_resume(checkpoint: str | Path, *, rounds: int, dp_noise: float = 0.0,
                 dp_sgd_epsilon: float = 0.0, num_devices: int,
                 sample_size: int | None = None, dp_delta: float = 1e-5,
                 model: dict[str, Any] | None = None,
                 stats_bounds: StatsBounds | None = None,
                 stats_share: float = DEFAULT_STATS_SHARE,
                 strategy: str | None = None, robust: bool = True,
                 num_malicious: int = 0, beta: float = 0.0) -> int:
    """Check that a run of ``rounds`` with these privacy settings can resume from
    ``checkpoint``; return the last round it holds. Raises :class:`FederatedRunError` with
    one line saying why not: a model of another layout than ``model`` (the run's
    ``state_dict``, when given: array names and shapes; a checkpoint of another dataset or
    model kind), no rounds left, another aggregation rule than the checkpoint records
    (``strategy``, when given, with ``robust``, ``num_malicious``, ``beta`` and
    ``num_devices``: the signed manifest names one rule, strategy and fleet size for every
    round of the model), no privacy ledger for a private run, or one that records nothing
    of a round the checkpoint holds (a ledger older than its checkpoint, whose ε would
    leave those rounds out: :meth:`~edgewise.federated.ledger.RunLedger.unrecorded_rounds`),
    or
    settings under which no single ε covers the model (device-level noise added, changed or
    dropped after rounds aggregated otherwise, DP-SGD asked for after rounds trained
    without it: :meth:`~edgewise.federated.ledger.RunLedger.resume_conflict`), or a
    record-level budget the earlier rounds already spent, or DP normaliser statistics
    (``stats_bounds``, ``stats_share``) other than the release its ledger records
    (:func:`_stats_resume_conflict`: a resumed run reuses the checkpoint's normaliser, so
    they were silently ignored). Without ``stats_bounds`` the recorded release, if any,
    stands.

    >>> import tempfile
    >>> from edgewise.federated.model import build_model
    >>> ckpt = Path(tempfile.mkdtemp()) / "checkpoint.npz"
    >>> np.savez(ckpt, __round__=np.array(1), **{"p:0.weight": np.zeros((16, 6))})
    >>> check_resume(ckpt, rounds=2, num_devices=3, model=build_model("ae", 6).state_dict())
    Traceback (most recent call last):
    ...
    edgewise.federated.server_app.FederatedRunError: Cannot resume from .../checkpoint.npz: it holds a model of layout {'0.weight': (16, 6)}, and this run's model is ...
    """  # noqa: E501
    ckpt = Path(checkpoint)
    done, held, _ = read_checkpoint(ckpt)
    layout = _layout(held)
    if model is not None and layout != _layout(model):
        raise FederatedRunError(
            f"Cannot resume from {ckpt}: it holds a model of layout {layout}, and this run's "
            f"model is {_layout(model)} (array names and shapes): the checkpoint was written "
            "by a run of another dataset or model. Resume with that run's dataset, or start "
            "afresh without resuming.")
    if done >= rounds:
        raise FederatedRunError(
            f"The checkpoint {ckpt} already holds round {done} of {rounds}: no rounds "
            "are left to resume (its model was registered when that run finished). "
            "Ask for more rounds, or start afresh without resuming.")
    held_rule = read_checkpoint_rule(ckpt) if strategy is not None else None
    if held_rule is not None and strategy is not None:
        why = _rule_conflict(held_rule, _rule(strategy, robust=robust,
                                              num_malicious=num_malicious, beta=beta,
                                              num_devices=num_devices))
        if why:
            raise FederatedRunError(
                f"Cannot resume from {ckpt}: its {done} round(s) were aggregated under "
                f"another rule: {why}; the registered model's signed manifest names one "
                "rule and fleet size for all its rounds. Resume with that run's settings, or "
                "start afresh without --resume.")
    ledger = RunLedger(run_ledger_path(ckpt))
    if done > 0 and (dp_noise > 0 or dp_sgd_epsilon > 0) and ledger.path is not None \
            and not ledger.path.exists():
        raise FederatedRunError(
            f"The checkpoint {ckpt} has no privacy ledger {ledger.path}, so the ε its "
            f"{done} round(s) spent is unknown; start afresh without resuming.")
    try:
        ledger.load()
    except PrivacyBudgetError as exc:
        raise FederatedRunError(str(exc)) from None
    why = ledger.resume_conflict(noise_multiplier=dp_noise, num_devices=num_devices,
                                 sample_size=sample_size or num_devices, done=done,
                                 dp_sgd=dp_sgd_epsilon > 0)
    if why:
        raise FederatedRunError(f"Cannot resume from {ckpt}: {why}")
    missing = ledger.unrecorded_rounds(done) if dp_noise > 0 or dp_sgd_epsilon > 0 else []
    if missing:
        raise FederatedRunError(
            f"Cannot resume from {ckpt}: it holds {done} round(s), but its privacy ledger "
            f"{ledger.path} records nothing of round(s) {_rounds_in_words(missing)} (a ledger "
            "older than the checkpoint, restored or copied from another time, or cut "
            "short): what they spent is unknown, and the epsilon of the resumed model "
            "would leave them out. Restore the ledger written with this checkpoint, or "
            "start afresh without --resume.")
    if stats_bounds is not None:
        why = _stats_resume_conflict(
            ledger.stats_release(), stats_bounds,
            _stats_noise(stats_bounds, stats_share, dp_sgd_epsilon, dp_delta), stats_share,
            dp_sgd_epsilon)
        if why:
            raise FederatedRunError(f"Cannot resume from {ckpt}: {why}")
    if dp_sgd_epsilon > 0:
        try:
            spent = ledger.record_epsilon(dp_delta) or 0.0
        except InvalidParameterError as exc:
            raise FederatedRunError(f"Cannot resume from {ckpt}: {exc}") from None
        if spent >= dp_sgd_epsilon:
            raise FederatedRunError(
                f"Cannot resume from {ckpt}: its {done} round(s) already spent record-level "
                f"epsilon {spent:.4g} of the budget --dp-epsilon {dp_sgd_epsilon:g}; nothing "
                "is left for more rounds. Start afresh without --resume.")
    return done


def _rounds_in_words(rounds: list[int]) -> str:
    """Round numbers for a message, the first ten and how many more.

    >>> _rounds_in_words([2, 3]), _rounds_in_words(list(range(1, 13)))
    ('[2, 3]', '[1, 2, 3, 4, 5, 6, 7, 8, 9, 10] and 2 more')
    """
    return str(rounds[:10]) + and_more(len(rounds), 10)


def _stats_resume_conflict(release: dict[str, Any] | None, bounds: StatsBounds,
                           noise: float, share: float, epsilon: float) -> str | None:
    """Why a resumed run cannot take these DP normaliser statistics (sensor ``bounds``,
    noise multiplier ``noise`` from ``share`` of ``epsilon``): the normaliser is the
    checkpoint's, fitted when its ledger's ``release`` was (``None``: in the clear), and is
    not fitted again. ``None`` when they are the recorded ones.

    >>> b = StatsBounds.from_doc({"lower": [0.0], "upper": [1.0]}, 1)
    >>> rec = {"noise_multiplier": 4.97, "epsilon": 0.8, "bounds": b.to_doc()}
    >>> _stats_resume_conflict(rec, b, 4.97, 0.1, 8.0) is None
    True
    >>> print(_stats_resume_conflict(None, b, 4.97, 0.1, 8.0))
    the run that wrote it sent its normaliser statistics in the clear (its ledger records no DP release of them), and a resumed run keeps that normaliser: --stats-bounds would change nothing. Resume without --stats-bounds and --stats-share (the statistics stay outside the ε), or start afresh without --resume.
    """  # noqa: E501
    keep = ("Resume with that run's --stats-bounds, --stats-share and --dp-epsilon, or "
            "without --stats-bounds and --stats-share (the recorded release stands), or "
            "start afresh without --resume.")
    if release is None:
        return ("the run that wrote it sent its normaliser statistics in the clear (its "
                "ledger records no DP release of them), and a resumed run keeps that "
                "normaliser: --stats-bounds would change nothing. Resume without "
                "--stats-bounds and --stats-share (the statistics stay outside the ε), or "
                "start afresh without --resume.")
    try:
        recorded: StatsBounds | None = StatsBounds.from_doc(release.get("bounds"),
                                                            bounds.n_conditions)
    except InvalidParameterError:
        recorded = None
    if recorded is None or not (np.array_equal(recorded.lower, bounds.lower)
                                and np.array_equal(recorded.upper, bounds.upper)):
        return (f"its normaliser statistics were released through DP with sensor bounds "
                f"{release.get('bounds')!r}, not these ({bounds.to_doc()!r}), and a resumed "
                f"run keeps that normaliser. {keep}")
    z = float(release.get("noise_multiplier", 0.0))
    if not math.isclose(z, noise, rel_tol=1e-9):
        return (f"its normaliser statistics were released through DP at noise multiplier "
                f"{z:.4g} (epsilon {float(release.get('epsilon', math.nan)):.4g} alone), and "
                f"--stats-share {share:g} of --dp-epsilon {epsilon:g} asks for {noise:.4g}; a "
                f"resumed run keeps that normaliser. {keep}")
    return None


def run_ledger_path(checkpoint: str | Path) -> Path:
    """Where the run's privacy ledger (:class:`~edgewise.federated.ledger.RunLedger`) of
    ``checkpoint`` lives: beside it, ``<stem>.privacy.json``.

    >>> run_ledger_path("out/checkpoint.npz").name
    'checkpoint.privacy.json'
    """
    path = Path(checkpoint)
    return path.with_name(path.stem + ".privacy.json")


def _stated_stats_noise(msg: Message) -> float:
    """The noise multiplier a reply says its statistics' release ran (``dp-stats-noise``;
    0 when it states none, sent in the clear, or no finite number: a list or a NaN there
    ended the run)."""
    if msg.has_error():
        return 0.0
    return max((scalar_metric(rec.get("dp-stats-noise", 0.0)) or 0.0
                for rec in msg.content.metric_records.values()), default=0.0)


def _stats_dp_spent(replies: list[Message]) -> dict[str, Mechanism]:
    """The Gaussian release of its normaliser statistics each replying device (by node id)
    says it ran: ``(dp-stats-noise, 1.0, 1)``; every reply with content counts (one that
    states no finite noise, :func:`_stated_stats_noise`, is left out of the normaliser)."""
    from edgewise.federated.stats_privacy import stats_mechanism

    spent: dict[str, Mechanism] = {}
    for msg in replies:
        z = _stated_stats_noise(msg)
        if z > 0:
            spent[str(int(msg.metadata.src_node_id))] = stats_mechanism(z)
    return spent


def _dp_sgd_spent(replies: list[Message]) -> tuple[dict[str, Mechanism], float]:
    """The DP-SGD mechanism each replying device (by node id) ran this round, and the
    largest ε one reported (every reply with content counts: the server saw that update).

    A mechanism value that is not a finite number (a NaN or a list: they ended the run
    here, before the robust screen refuses the reply, reason ``"metrics"``) counts for
    nothing, with a warning naming the device; steps are rounded up. The ε is read by
    :func:`~edgewise.federated.privacy.reported_epsilon`, as everywhere: one that is not
    a finite number >= 0 is infinite, unless the server accounts that device's DP-SGD
    itself from the mechanism it stated (the ledger's ε is at least that mechanism's
    composition, so the unreadable report adds nothing); either way with a warning.
    """
    mechanisms: dict[str, Mechanism] = {}
    reported = 0.0
    for msg in replies:
        if msg.has_error():
            continue
        node = int(msg.metadata.src_node_id)
        for rec in msg.content.metric_records.values():
            raw = {k: rec.get(k, 0.0) for k in ("dp-sgd-noise", "dp-sgd-rate", "dp-sgd-steps",
                                                "dp-sgd-epsilon")}
            vals = {k: scalar_metric(raw[k]) for k in ("dp-sgd-noise", "dp-sgd-rate",
                                                       "dp-sgd-steps")}
            bad = {k: raw[k] for k, v in vals.items() if v is None}
            if bad:
                log.warning("device (node %d) reported %s: not a finite number, so its DP-SGD "
                            "mechanism counts for nothing in the privacy accounting",
                            node, ", ".join(f"{k} {v!r}" for k, v in bad.items()))
            stated = dp_sgd_mechanism(rec)  # the same test as the screen's no-dp-sgd
            accounted = stated is not None
            if stated is not None:
                z, q, steps = stated
                mechanisms[str(node)] = (z, q, math.ceil(steps))
            eps = reported_epsilon(raw["dp-sgd-epsilon"])
            if math.isinf(eps):
                log.warning("device (node %d) reported dp-sgd-epsilon %r, not a finite "
                            "number >= 0: %s", node, raw["dp-sgd-epsilon"],
                            "the server's accounting of the DP-SGD mechanism it stated "
                            "stands for it" if accounted else
                            "what it spent is unknown, so it counts as infinite")
                if accounted:
                    continue
            reported = max(reported, eps)
    return mechanisms, reported


def _privacy_report(train_metrics: dict[int, dict[str, float]], *, dp_noise: float,
                    dp_clip: float, dp_delta: float, dp_sgd_clip: float, num_devices: int,
                    rounds: int, sample_size: int | None, dp_sgd_epsilon: float = 0.0,
                    ledger: RunLedger | None = None,
                    stats: dict[str, Any] | None = None,
                    without_dp_sgd: dict[int, int] | None = None) -> PrivacyReport:
    """The run's guarantee, of the rounds that really ran (``rounds`` is the number planned).

    With a ``ledger`` (:class:`~edgewise.federated.ledger.RunLedger`) device-level ε is
    that of the rounds it holds aggregated with noise, record-level the bound of the DP-SGD
    the devices reported round by round; without one, the ``train_metrics`` stand for it
    (each round's largest device ε; device-level: every round in them aggregated).

    A run that asked for record-level DP-SGD (``dp_sgd_epsilon`` > 0) but got no ε from
    any device raises :class:`FederatedRunError`: it is never reported as without DP.

    The normaliser statistics' DP release, when there was one, is in the ledger's ``stats``
    entry (or ``stats``, the report's fields, without a ledger): its ε alone, noise and
    bounds are reported, and the record-level ε composes it with DP-SGD.

    Without a ledger, ``without_dp_sgd`` (round: how many of its aggregated updates stated
    no DP-SGD mechanism; by default each round's
    :data:`~edgewise.federated.strategies.WITHOUT_DP_SGD_KEY` train metric) stands for the
    ledger's record of them: a round that aggregated such an update beside DP-SGD ones
    leaves the model without a record-level ε (an error when DP-SGD was asked for).
    """
    if stats is None:
        stats = _stats_fields(ledger) if ledger is not None else {}
    if ledger is None:
        ledger = RunLedger()
        if without_dp_sgd is None:
            without_dp_sgd = {r: int(scalar_metric(m.get(WITHOUT_DP_SGD_KEY)) or 0)
                              for r, m in train_metrics.items()}
        for r, m in sorted(train_metrics.items()):
            ledger.record_round(r, {}, reported_epsilon(m.get("dp-sgd-epsilon", 0.0)))
            if dp_noise > 0:
                ledger.device_round(r, noise_multiplier=dp_noise, num_devices=num_devices,
                                    sample_size=sample_size)
        for r, n in sorted(without_dp_sgd.items()):
            if n > 0:
                ledger.aggregated_round(r, unnamed_without_dp_sgd=n)
    try:
        try:
            record_eps = ledger.record_epsilon(dp_delta)
        except InvalidParameterError:
            if dp_sgd_epsilon > 0:
                raise
            # DP-SGD was not asked for and some round went without it: no record-level claim
            record_eps = None
        device_eps = ledger.device_epsilon(dp_delta) if dp_noise > 0 else None
    except (InvalidParameterError, PrivacyBudgetError) as exc:
        raise FederatedRunError(str(exc)) from None
    if dp_sgd_epsilon > 0 and record_eps is None:
        raise FederatedRunError(
            f"Record-level DP-SGD was asked for (dp-sgd-epsilon={dp_sgd_epsilon:g}) but no "
            f"device reported the epsilon it spent ({len(train_metrics)} round(s) with "
            "metrics); the run's privacy cannot be stated, so its model is not kept."
        )
    z_record = [m["dp-sgd-noise"] for m in train_metrics.values() if "dp-sgd-noise" in m]
    if dp_noise > 0:
        return PrivacyReport(
            unit="device", delta=dp_delta, noise_multiplier=dp_noise, clipping_norm=dp_clip,
            epsilon=device_eps or 0.0, num_devices=num_devices,
            rounds=ledger.device_rounds(), sample_size=sample_size,
            record_epsilon=record_eps, rounds_planned=rounds, **stats)
    if record_eps is not None:
        return PrivacyReport(
            unit="record", epsilon=record_eps, delta=dp_delta,
            noise_multiplier=float(np.mean(z_record)) if z_record else 0.0,
            clipping_norm=dp_sgd_clip, num_devices=num_devices,
            rounds=ledger.record_rounds(), sample_size=sample_size,
            record_epsilon=record_eps, rounds_planned=rounds, **stats)
    return PrivacyReport(unit="none", epsilon=None, delta=dp_delta, noise_multiplier=0.0,
                         clipping_norm=0.0, num_devices=num_devices, rounds=rounds,
                         sample_size=sample_size, rounds_planned=rounds)


def run_federated(
    grid: Grid,
    *,
    kind: str,
    n_features: int,
    n_conditions: int,
    num_nodes: int,
    rounds: int,
    strategy: str = "trimmed",
    robust: bool = True,
    num_malicious_nodes: int = 0,
    beta: float = 0.0,
    min_available_nodes: int | None = None,
    dp_noise: float = 0.0,
    dp_clip: float = 1.0,
    dp_delta: float = 1e-5,
    dp_sgd_clip: float = 1.0,
    dp_sgd_epsilon: float = 0.0,
    sample_size: int | None = None,
    secagg: bool = False,
    round_timeout: float = 600.0,
    checkpoint: str | Path | None = None,
    evaluate: bool = False,
    seed: int = 0,
    normaliser: ConditionNormaliser | None = None,
    stats_bounds: StatsBounds | None = None,
    stats_share: float = DEFAULT_STATS_SHARE,
) -> FederatedResult:
    """Train one fleet model over ``grid`` with Flower; see the module docstring.

    With ``secagg=True`` the rounds run FedAvg under Flower's SecAgg+ instead
    (:mod:`edgewise.federated.secagg`; no robust rule, no server-side DP, no checkpoint).

    With ``stats_bounds`` (public per-sensor bounds) the devices release their normaliser
    statistics through record-level DP (:mod:`edgewise.federated.stats_privacy`): a
    Gaussian mechanism costing ``stats_share`` of ``dp_sgd_epsilon`` alone, and each
    device's DP-SGD calibrated so that both, composed, stay within ``dp_sgd_epsilon``; the
    report's record-level ε then covers the statistics too. It needs ``dp_sgd_epsilon`` > 0.

    ``beta`` <= 0 (the default, as ``federate server``'s) is the trimmed mean's smallest
    fraction trimming ``max(f, 1)`` per side (:func:`~edgewise.federated.strategies.auto_beta`).
    The rule is built, and a condition it cannot meet refused
    (:class:`~edgewise.errors.InvalidParameterError`), before any device is asked anything.
    """
    # Before anything runs: a NaN clip or noise published a NaN model, a negative or NaN
    # noise ran without the DP asked for (the CLI's checks, in one place).
    check_device_dp(dp_noise, dp_clip, dp_delta)
    stats_noise = _stats_noise(stats_bounds, stats_share, dp_sgd_epsilon, dp_delta)
    if secagg:
        return _run_secagg(grid, kind=kind, n_features=n_features, n_conditions=n_conditions,
                           num_nodes=min_available_nodes or num_nodes, rounds=rounds,
                           strategy=strategy, robust=robust, dp_noise=dp_noise, seed=seed,
                           normaliser=normaliser, round_timeout=round_timeout,
                           dp_sgd_epsilon=dp_sgd_epsilon, dp_delta=dp_delta,
                           dp_sgd_clip=dp_sgd_clip,
                           stats_dp=(stats_noise, stats_bounds)
                           if stats_bounds is not None else None)
    ckpt = Path(checkpoint) if checkpoint else None
    done = 0
    stats_wire: list[dict[str, Any]] = []
    stats_refused: list[dict[str, Any]] = []
    ledger = RunLedger(run_ledger_path(ckpt) if ckpt is not None else None)
    min_nodes = min_available_nodes or num_nodes
    m = sample_size or min_nodes
    # Checked before the normaliser round, which a rule that cannot run would waste.
    # Device-level DP bounds each device's share of the mean by C/m: equal weights, not the
    # self-reported example counts (a device with more data would otherwise weigh more), and
    # not the self-reported unit-weight either: _DeviceDP averages every update with weight 1.
    if dp_noise > 0 and strategy != "fedavg":
        raise InvalidParameterError(
            f"Device-level DP (dp_noise={dp_noise:g}) is only accounted for the FedAvg mean, "
            f"whose sensitivity is dp_clip/m; strategy={strategy!r} lets one device move the "
            "model by up to dp_clip. Use strategy='fedavg' or dp_noise=0."
        )
    # A run that asked for record-level DP-SGD refuses an update trained without it
    # (reason "no-dp-sgd"), robust or not: averaged in, it voids the epsilon reported for
    # the model. Under device-level DP that screen goes outside _DeviceDP (below).
    rule = make_strategy(strategy, num_nodes=min_nodes, num_malicious_nodes=num_malicious_nodes,
                         beta=beta, robust=robust and dp_noise <= 0, sample_size=m,
                         weighted_by_key="unit-weight" if dp_noise > 0 else "num-examples",
                         fraction_evaluate=1.0 if evaluate else 0.0,
                         require_dp_sgd=dp_sgd_epsilon > 0 and dp_noise <= 0)
    template = build_model(kind, n_features, seed=seed).state_dict()
    if ckpt is not None and ckpt.exists():
        check_resume(ckpt, rounds=rounds, dp_noise=dp_noise, dp_sgd_epsilon=dp_sgd_epsilon,
                     num_devices=min_nodes, sample_size=m, dp_delta=dp_delta, model=template,
                     stats_bounds=stats_bounds, stats_share=stats_share, strategy=strategy,
                     robust=robust, num_malicious=num_malicious_nodes, beta=beta)
        initial, done, normaliser = load_checkpoint(ckpt)
        ledger.load()
        log.info("resuming from %s after round %d", ckpt, done)
    else:
        ledger.reset()  # a fresh run: what an earlier run at this path spent is its own
        if ckpt is not None:  # the rule its checkpoints are held to on --resume
            from edgewise._private import replace_atomically

            replace_atomically(rule_path(ckpt), json.dumps(_rule(
                strategy, robust=robust, num_malicious=num_malicious_nodes, beta=beta,
                num_devices=min_nodes), sort_keys=True).encode())
        if normaliser is None:
            normaliser = fit_normaliser(grid, n_conditions, min_available_nodes or num_nodes,
                                        timeout=round_timeout,
                                        num_malicious_nodes=num_malicious_nodes if robust
                                        else 0, wire=stats_wire, ledger=ledger,
                                        delta=dp_delta, rejected=stats_refused,
                                        stats_dp=(stats_noise, stats_bounds)
                                        if stats_bounds is not None else None)
        initial = ArrayRecord(template)
    inner: Strategy = rule
    dp: _DeviceDP | None = None
    if dp_noise > 0:
        # The screen goes outside Flower's DP wrapper, so that a malformed update (wrong
        # shape, NaN, wrong dtype) is refused before the wrapper clips it; a refused update
        # counts as 0 over the fixed denominator m (see _DeviceDP).
        inner = dp = _DeviceDP(
            rule, noise_multiplier=dp_noise, clipping_norm=dp_clip, num_sampled_clients=m
        )
        dp.round_offset = done
        if robust:
            rule = inner = _DeviceDPScreen(dp, num_malicious_nodes=num_malicious_nodes,
                                           require_dp_sgd=dp_sgd_epsilon > 0)
        elif dp_sgd_epsilon > 0:
            rule = inner = DPSGDScreen(dp)
    if isinstance(rule, RobustStrategy):  # refusals and skipped rounds carry the run's round
        rule.round_offset = done
    wire = WireLog(inner, ledger=ledger, round_offset=done,
                   device_dp=(dp_noise, min_nodes, m) if dp_noise > 0 else None)
    wire.entries.extend(stats_wire)
    config = ConfigRecord({
        "phase": "fit",
        "norm-mean": [float(x) for x in normaliser.mean.ravel()],
        "norm-std": [float(x) for x in normaliser.std.ravel()],
    })
    if done > 0:
        # A resumed run: the devices plan DP-SGD for the rounds left, after what the earlier
        # rounds spent (the ledger's worst case), not afresh for every round of the run.
        from edgewise.federated.privacy import rdp_orders

        config["dp-sgd-rounds-done"] = done
        prior = ledger.record_rdp()
        if prior is not None:
            config["dp-sgd-prior-rdp"] = prior
            config["dp-sgd-rdp-orders"] = rdp_orders()
    release = ledger.stats_release()
    if release is not None:  # the devices plan DP-SGD after what their statistics spent
        config["dp-stats-noise"] = float(release["noise_multiplier"])
    left = max(rounds - done, 0)

    def on_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if ckpt is not None and server_round > 0:
            _save_checkpoint(ckpt, arrays, done + server_round, normaliser)
        return None

    result_arrays = initial
    train_metrics: dict[int, dict[str, float]] = {}
    eval_metrics: dict[int, dict[str, float]] = {}
    if left:
        res = wire.start(grid=grid, initial_arrays=initial, num_rounds=left,
                         timeout=round_timeout, train_config=config,
                         evaluate_config=ConfigRecord(dict(config)), evaluate_fn=on_round)
        result_arrays = res.arrays if len(res.arrays) else initial
        train_metrics = {done + r: dict(m) for r, m in res.train_metrics_clientapp.items()}
        eval_metrics = {done + r: dict(m) for r, m in res.evaluate_metrics_clientapp.items()}
        if not wire.aggregated_rounds:
            skipped = list(rule.skipped_rounds) if isinstance(rule, RobustStrategy) else []
            reasons = sorted({e.reason for e in rule.events if not is_cap(e.reason)}
                             if isinstance(rule, RobustStrategy) else set())
            raise FederatedRunError(
                f"No round of {left} produced an aggregated update"
                + (f" (rounds {skipped} had too few updates left for {strategy!r} after "
                   "screening)" if skipped else "")
                + (f" (updates refused: {', '.join(reasons)})" if reasons else "")
                + "; the global model is untrained.")
    privacy = _privacy_report(train_metrics, dp_noise=dp_noise, dp_clip=dp_clip,
                              dp_delta=dp_delta, dp_sgd_clip=dp_sgd_clip, num_devices=min_nodes,
                              rounds=rounds, sample_size=m, dp_sgd_epsilon=dp_sgd_epsilon,
                              ledger=ledger)
    robust_rule = rule if isinstance(rule, RobustStrategy) else None
    return FederatedResult(
        arrays=result_arrays, normaliser=normaliser, privacy=privacy,
        rounds_done=done + len(wire.trained_rounds),
        strategy=strategy + ("+robust" if robust else "") + ("+dp" if dp_noise > 0 else ""),
        wire=wire.entries,
        rejected=stats_refused + ([e.__dict__ for e in robust_rule.events]
                                  if robust_rule else [])
        + ([e.__dict__ for e in dp.events] if dp is not None else []),
        skipped_rounds=list(robust_rule.skipped_rounds) if robust_rule else [],
        train_metrics=train_metrics, evaluate_metrics=eval_metrics,
    )


def _stats_noise(bounds: StatsBounds | None, share: float, dp_sgd_epsilon: float,
                 delta: float) -> float:
    """The noise multiplier of the normaliser statistics' release: the one whose ε alone
    is ``share`` of the per-device budget (0 without ``bounds``)."""
    if bounds is None:
        return 0.0
    from edgewise.federated.stats_privacy import stats_noise_for_epsilon

    if not dp_sgd_epsilon > 0:
        raise InvalidParameterError(
            "DP normaliser statistics (sensor bounds given) spend a share of the per-device "
            f"record-level budget, and none is set (dp_sgd_epsilon={dp_sgd_epsilon:g}); "
            "set dp_sgd_epsilon > 0 (--dp-epsilon), or give no bounds.")
    if not 0 < share < 1:
        raise InvalidParameterError(
            f"The 'stats_share' parameter (the budget's share spent on the normaliser "
            f"statistics) must be in (0, 1). Got {share!r} instead.")
    return stats_noise_for_epsilon(share * dp_sgd_epsilon, delta)


def _stats_fields(ledger: RunLedger) -> dict[str, Any]:
    """The privacy report's fields on the normaliser statistics' DP release (none without)."""
    release = ledger.stats_release()
    if release is None:
        return {}
    return {"stats_epsilon": float(release["epsilon"]),
            "stats_noise_multiplier": float(release["noise_multiplier"]),
            "stats_bounds": release.get("bounds")}


def _run_secagg(grid: Grid, *, kind: str, n_features: int, n_conditions: int, num_nodes: int,
                rounds: int, strategy: str, robust: bool, dp_noise: float, seed: int,
                normaliser: ConditionNormaliser | None, round_timeout: float,
                dp_sgd_epsilon: float, dp_delta: float, dp_sgd_clip: float,
                stats_dp: tuple[float, StatsBounds] | None = None) -> FederatedResult:
    import torch

    from edgewise.federated.secagg import check_secagg, run_secagg

    check_secagg(strategy, robust=robust, dp_noise=dp_noise)
    stats_ledger = RunLedger()
    stats_refused: list[dict[str, Any]] = []
    if normaliser is None:
        normaliser = fit_normaliser(grid, n_conditions, num_nodes, timeout=round_timeout,
                                    stats_dp=stats_dp, ledger=stats_ledger, delta=dp_delta,
                                    rejected=stats_refused)
        # SecAgg+ runs FedAvg with no screen; the stats round still refuses malformed ones
    release = stats_ledger.stats_release()
    sec = run_secagg(
        grid, kind=kind, n_features=n_features, normaliser=normaliser, num_nodes=num_nodes,
        rounds=rounds, seed=seed, timeout=round_timeout,
        extra_config={"dp-stats-noise": float(release["noise_multiplier"])}
        if release else None, dp_sgd=dp_sgd_epsilon > 0)
    # Flower's SecAgg+ dequantises to float64; the model (and a plain run's) is the
    # template's dtype (float32), which the registered payload keeps whatever --secagg.
    template = build_model(kind, n_features).state_dict()
    record = ArrayRecord({k: torch.as_tensor(np.asarray(a)).to(template[k].dtype)
                          for k, a in zip(template, sec.arrays, strict=True)})
    if not all(np.isfinite(v.numpy()).all() for v in record.values()):
        raise FederatedRunError("The SecAgg+ global model holds NaN or Inf values; it is not "
                                "registered.")  # run_secagg refuses such a round; never here
    # SecAgg+ masks the parameters, not the metrics: the ε is what the devices spent, as in
    # the plain rounds (server-side DP is refused under SecAgg+, hence dp_noise=0), in every
    # round they trained, a refused one included.
    # A round aggregated (only those: a refused one moved nothing) with updates stating no
    # DP-SGD beside DP-SGD ones (a device that trains without it in a run that did not ask
    # for it) leaves the model without a record-level ε: the metrics, in the clear, say so.
    privacy = _privacy_report(sec.spent_metrics or sec.train_metrics, dp_noise=0.0,
                              dp_clip=0.0, dp_delta=dp_delta, dp_sgd_clip=dp_sgd_clip,
                              num_devices=num_nodes, rounds=rounds, sample_size=None,
                              dp_sgd_epsilon=dp_sgd_epsilon,
                              stats=_stats_fields(stats_ledger),
                              without_dp_sgd={
                                  r: int(scalar_metric(m.get(WITHOUT_DP_SGD_KEY)) or 0)
                                  for r, m in sec.train_metrics.items()})
    return FederatedResult(arrays=record, normaliser=normaliser, privacy=privacy,
                           rounds_done=len(sec.spent_metrics) or rounds,
                           strategy="fedavg+secagg+", train_metrics=sec.train_metrics,
                           rejected=stats_refused + list(sec.rejected),
                           skipped_rounds=sec.skipped_rounds)


app = ServerApp()


class _PromptGrid(DelegatingGrid):
    """``grid`` (the deployment engine's ``HttpGrid``), collecting a round's replies every
    ``poll`` seconds: Flower's ``send_and_receive`` pulls every 3 s, so each round (the
    normaliser round too) waited up to 3 s after its last reply had reached the SuperLink.
    Everything else is ``grid``'s own. (:func:`_prompt` wraps only that grid: the loop
    matches replies to the ids ``push_messages`` returned, which are message ids there.)
    """

    def __init__(self, grid: Grid, poll: float = 0.5) -> None:
        super().__init__(grid)
        self.poll = poll

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``, then pull their replies every ``poll`` seconds until each
        has come or ``timeout`` seconds have passed (None: no limit), as Flower's does."""
        import time

        ids = set(self.push_messages(messages))
        del messages
        end = time.time() + (timeout if timeout is not None else 0.0)
        replies: list[Message] = []
        while timeout is None or time.time() < end:
            got = list(self.pull_messages(ids))
            replies.extend(got)
            ids.difference_update({m.metadata.reply_to_message_id for m in got})
            if not ids:
                break
            time.sleep(self.poll)
        return replies


def _prompt(grid: Grid) -> Grid:
    """Flower's deployment grid (``HttpGrid``) as a :class:`_PromptGrid`; any other grid
    (:class:`~edgewise.federated.inprocess.InProcessGrid`, …) as it is."""
    try:
        from flwr.superlink.grid.http_grid import HttpGrid
    except ImportError:  # another Flower layout: its own polling
        return grid
    return _PromptGrid(grid) if isinstance(grid, HttpGrid) else grid


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Deployment entry point: read the run config, train, write results to ``out-dir``.

    The run checkpoints to ``<out-dir>/checkpoint.npz``. It resumes from there only when
    the run config says ``resume = true`` (``edgewise federate server --resume``); otherwise
    it starts afresh, removing an earlier run's checkpoint and run privacy ledger there.

    A run that fails (:class:`FederatedRunError`, a run config out of range, or any other
    exception, the registry's included) writes ``error.json`` (``{"error": ..., "type":
    ...}``) to ``out-dir`` instead of ``result.json``, registers nothing more and raises.
    """
    rc = context.run_config
    out = Path(str(rc["out-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "error.json").unlink(missing_ok=True)
    try:
        _main(_prompt(grid), rc, out)
    except Exception as exc:
        # Nothing is registered, signed or published; the launcher reads why from here.
        why = str(exc) if isinstance(exc, FederatedRunError | InvalidParameterError) else \
            f"the ServerApp failed: {type(exc).__name__}: {exc}"
        (out / "error.json").write_text(json.dumps({"error": why,
                                                    "type": type(exc).__name__}))
        raise


#: The run config's numbers, the devices' (ClientApp's) too, with whether each is a whole
#: number and its default (``min-available-nodes``: ``num-nodes``, given by the caller):
#: the ServerApp checks every one the run config holds before any device is asked anything.
_RUN_NUMBERS: dict[str, tuple[bool, Any]] = {
    "num-nodes": (True, 3), "num-server-rounds": (True, 2),
    "num-malicious": (True, 0), "min-available-nodes": (True, "num-nodes"),
    "local-epochs": (True, 1), "batch-size": (True, 32), "seed": (True, 0),
    "threads": (True, 1), "beta": (False, 0.0), "dp-noise": (False, 0.0),
    "dp-clip": (False, 1.0), "dp-delta": (False, 1e-5), "dp-sgd-noise": (False, 0.0),
    "dp-sgd-clip": (False, 1.0), "dp-sgd-epsilon": (False, 0.0), "lr": (False, 0.003),
    "round-timeout": (False, 120.0), "dp-stats-share": (False, DEFAULT_STATS_SHARE),
}


def _run_number(rc: Any, key: str, default: Any = None) -> Any:
    """Run config ``key`` (when absent ``default``, else its own of :data:`_RUN_NUMBERS`)
    as the number it is read as (``int`` for a whole number, else ``float``); one that is none, a
    ``dp-clip = "abc"``, is refused naming the key, its value and what it must be (it was
    Python's "could not convert string to float: 'abc'", naming neither).

    >>> _run_number({"dp-clip": "0.5"}, "dp-clip"), _run_number({}, "num-nodes")
    (0.5, 3)
    >>> _run_number({"dp-clip": "abc"}, "dp-clip")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The run config's 'dp-clip' is 'abc', which is not a number; give a number (its default: 1.0).
    """  # noqa: E501
    whole, shown = _RUN_NUMBERS[key]
    raw = rc.get(key, shown if default is None else default)
    try:
        return int(raw) if whole else float(raw)
    except (TypeError, ValueError, OverflowError):
        pass
    what = "a whole number" if whole else "a number"
    raise InvalidParameterError(
        f"The run config's {key!r} is {raw!r}, which is not {what}; give {what} (its "
        f"default: {shown}).", field=key, value=raw)


def _main(grid: Grid, rc: Any, out: Path) -> None:
    from edgewise.federated.publish import (
        DEFAULT_TARGET,
        check_target,
        next_version,
        register_global_model,
    )
    from edgewise.registry import Registry

    dataset = str(rc.get("dataset", "pump"))
    kind, n_features, n_cond = ("ae", 6, 1) if dataset == "pump" else ("rul", 43, 6)
    for key in _RUN_NUMBERS:  # the devices' too: refused before any device is asked
        if key in rc:
            _run_number(rc, key)
    num_nodes = _run_number(rc, "num-nodes")
    publish_dir = out.parent if rc.get("data-dir-publish", "") == "" else \
        Path(str(rc["data-dir-publish"]))
    name = f"federated-{dataset}"
    target = str(rc.get("rollout-target", DEFAULT_TARGET))
    dp_noise, dp_clip, dp_delta = (_run_number(rc, "dp-noise"),
                                   _run_number(rc, "dp-clip"),
                                   _run_number(rc, "dp-delta"))
    check_device_dp(dp_noise, dp_clip, dp_delta, names=("dp-noise", "dp-clip", "dp-delta"))
    # a release the registry would refuse after training (a device of the group rolled back
    # on this model, …) is refused before the devices spend their privacy budget on it
    check_target(publish_dir, target, name=name)
    if (publish_dir / "registry").exists():  # a broken registry fails before training
        reg = Registry(publish_dir)
        try:
            log.info("the global model will be %s version %s", name, next_version(reg, name))
        finally:
            reg.close()
    checkpoint = out / "checkpoint.npz"
    secagg = bool(rc.get("secagg", False))
    if bool(rc.get("resume", False)):
        if secagg:
            raise InvalidParameterError(
                "The run config asks to resume (resume = true) under SecAgg+ (secagg = true), "
                "which keeps no checkpoint: the run would start afresh. Drop one of them.")
        log.info("resuming from %s when it exists", checkpoint)
    else:
        # A fresh run (resume = false, the default): an earlier run's checkpoint in this
        # out dir must not be continued, and its run ledger (what that run's model spent)
        # does not describe the new model. The devices' own ledgers, which bound what their
        # data spends across runs, live on the devices and are not touched.
        checkpoint.unlink(missing_ok=True)
        run_ledger_path(checkpoint).unlink(missing_ok=True)
        rule_path(checkpoint).unlink(missing_ok=True)
    result = run_federated(
        grid, kind=kind, n_features=n_features, n_conditions=n_cond, num_nodes=num_nodes,
        rounds=_run_number(rc, "num-server-rounds"),
        strategy=str(rc.get("strategy", "trimmed")),
        num_malicious_nodes=_run_number(rc, "num-malicious"),
        beta=_run_number(rc, "beta"),
        min_available_nodes=_run_number(rc, "min-available-nodes", num_nodes),
        dp_noise=dp_noise, dp_clip=dp_clip, dp_delta=dp_delta,
        dp_sgd_clip=_run_number(rc, "dp-sgd-clip"),
        dp_sgd_epsilon=_run_number(rc, "dp-sgd-epsilon"),
        round_timeout=_run_number(rc, "round-timeout"),
        checkpoint=checkpoint, evaluate=bool(rc.get("evaluate", True)),
        secagg=secagg, robust=not secagg,
        stats_bounds=StatsBounds.from_doc(json.loads(str(rc["dp-stats-bounds"])), n_cond)
        if str(rc.get("dp-stats-bounds", "")) else None,
        stats_share=_run_number(rc, "dp-stats-share"),
    )
    (out / "wire.json").write_text(json.dumps(result.wire, indent=1))
    entry = register_global_model(
        result.state_dict(), publish_dir, name=name, target=target,
        metadata={
            "privacy": result.privacy.to_dict(), "strategy": result.strategy,
            "rounds": result.rounds_done, "num_devices": num_nodes, "dataset": dataset,
            "normaliser": {"mean": result.normaliser.mean.tolist(),
                           "std": result.normaliser.std.tolist()},
            "rejected": result.refused, "capped": result.capped,
            "evaluate_metrics": result.evaluate_metrics,
        })
    (out / "result.json").write_text(json.dumps({
        "rounds": result.rounds_done, "strategy": result.strategy,
        "privacy": result.privacy.to_dict(), "model": entry,
        "train_metrics": result.train_metrics, "evaluate_metrics": result.evaluate_metrics,
        "rejected": result.refused, "capped": result.capped,
        "bytes_per_client_round": result.bytes_per_client_round(),
    }, indent=1))
