"""Secure aggregation: Flower's SecAgg+ protocol as an option of a federated run.

Under SecAgg+ each device masks its update with pairwise secret masks (shared by Shamir's
scheme, so dropped devices can be unmasked); the server learns only the sum, never one
device's parameters. Flower 1.41 implements it as ``SecAggPlusWorkflow`` (server, over
its legacy ``LegacyContext``/``flwr.server.strategy.FedAvg``) and ``secaggplus_mod`` (device,
mounted on our ``ClientApp`` by :func:`~edgewise.federated.client_app.secagg_when_asked`).
Both are used unchanged here; the result is FedAvg of the devices' models, up to SecAgg+'s
quantisation (parameters clipped to ±``clipping_range`` and quantised to
``quantization_range`` levels).

Because the server never sees an individual update, SecAgg+ cannot be combined with the
robust rules (they inspect, rank or drop individual updates) nor with server-side DP
clipping: :func:`check_secagg` refuses those combinations. The per-condition normaliser's
sufficient statistics (counts, sums and sums of squares per condition, no readings) are
still combined unmasked before the SecAgg+ rounds (through record-level DP when the run
gives sensor bounds: :mod:`edgewise.federated.stats_privacy`).

What the server can still check, and does (:func:`run_secagg`): each device's train
metrics arrive in the clear, so one that is not a finite number (or an ε below 0) refuses
the round, naming the device, as does, when the run asked for record-level DP-SGD, a reply
stating no DP-SGD mechanism (reason ``no-dp-sgd``: its update would void the ε reported);
so does its example count, when outside ``[1, max_weight]``
or above 10× the round's median (the smaller of two) (SecAgg+ weights the masked
parameters by it before the server sees them, so it cannot be clipped afterwards); the
aggregate must be finite and move the global model by at most 10× the median move of the
earlier accepted rounds and at most
:data:`~edgewise.federated.strategies.MAX_UPDATE_TO_MODEL` × the model's norm. A refused
round keeps the previous global model (``skipped_rounds``); a run in which no round is
accepted registers nothing. A reply of the wrong form for its stage of the protocol
(masked parameters of another count, shape or type, fewer key shares than node ids, shares
for a node the round never sampled, …) is refused before Flower's workflow reads it, naming
the device (reason ``malformed``): the workflow takes that device for one that dropped out,
which SecAgg+ survives as long as enough devices are left (else the round halts and the run
fails naming it); an error inside the workflow all the same fails the run naming the round
and the stage. What it cannot do is tell which device sent a bad update, nor
refuse one update and keep the others' (no per-update norm check, no trimming): a device
whose update stays within those bounds moves the mean by up to its share of them. Devices
running this ``ClientApp`` refuse to send a non-finite update (the round goes on without
them, as after a dropout) and clip their own example count to ``max_weight``, which the
server sends them.

SecAgg+ masks the parameters only: each device's example count and train metrics
(``train-loss``, ``dp-sgd-epsilon``, ``dp-sgd-noise``) reach the server in the clear, as
Flower's ``secaggplus_mod`` sends them. The run's record-level ε is therefore what the devices
report they spent (each composes its own privacy ledger), the largest of them, exactly as
without SecAgg+; never the budget the run asked for. Every round the devices trained in
counts, a refused one included, and every reply's ε in it, whatever its other metrics (one
that is not a finite number >= 0 counts as infinite).

>>> check_secagg("trimmed", robust=True)
Traceback (most recent call last):
...
edgewise.errors.InvalidParameterError: Secure aggregation (--secagg, SecAgg+) cannot be combined with the robust rule 'trimmed' (RobustStrategy): the server would see no individual update to check, rank or trim. Use --strategy fedavg without the robust wrapper, or drop --secagg.
"""  # noqa: E501

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Context, RecordDict
from flwr.serverapp import Grid

from edgewise.errors import InvalidParameterError
from edgewise.federated._grid import DelegatingGrid
from edgewise.federated.data import ConditionNormaliser
from edgewise.federated.model import build_model

__all__ = ["SecAggResult", "check_secagg", "run_secagg"]

#: A device's example count may be at most this multiple of the round's median.
MAX_EXAMPLES_RATIO = 10.0


@dataclass
class SecAggResult:
    """What :func:`run_secagg` produced: the global arrays, the train metrics of each
    accepted round, those of every round whose devices trained (what they spent, accepted or
    not), the rounds refused (previous model kept) and why."""

    arrays: list[Any]
    train_metrics: dict[int, dict[str, float]]
    spent_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    skipped_rounds: list[int] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


def check_secagg(strategy: str, *, robust: bool, dp_noise: float = 0.0) -> None:
    """Raise when SecAgg+ is asked for together with a rule that needs individual updates."""
    if strategy != "fedavg" or robust:
        rule = f"{strategy!r}" + (" (RobustStrategy)" if robust else "")
        raise InvalidParameterError(
            f"Secure aggregation (--secagg, SecAgg+) cannot be combined with the robust rule "
            f"{rule}: the server would see no individual update to check, rank or trim. "
            "Use --strategy fedavg without the robust wrapper, or drop --secagg."
        )
    if dp_noise > 0:
        raise InvalidParameterError(
            f"Secure aggregation (--secagg, SecAgg+) cannot be combined with server-side DP "
            f"(dp_noise={dp_noise:g}): the server would have to clip individual updates."
        )


def run_secagg(
    grid: Grid,
    *,
    kind: str,
    n_features: int,
    normaliser: ConditionNormaliser,
    num_nodes: int,
    rounds: int,
    seed: int = 0,
    num_shares: int | float = 1.0,
    reconstruction_threshold: int | float = 0.67,
    max_weight: float = 1e4,
    clipping_range: float = 8.0,
    timeout: float | None = None,
    extra_config: dict[str, Any] | None = None,
    dp_sgd: bool = False,
) -> SecAggResult:
    """``rounds`` rounds of FedAvg under SecAgg+ over ``grid``; return the global arrays and,
    for each round that aggregated, the devices' train metrics (:class:`SecAggResult`).

    The metrics are aggregated as the plain rounds aggregate them
    (:func:`~edgewise.federated.strategies.aggregate_train_metrics`: ``dp-sgd-epsilon`` is
    the largest a device reported, the ε it spent), so the run's privacy report is built
    the same way with or without SecAgg+.

    ``extra_config`` is added to every round's fit config (``dp-stats-noise``: the run's DP
    release of the normaliser statistics, which the devices' DP-SGD plan makes room for).
    With ``dp_sgd`` (the run asked for record-level DP-SGD) a round in which a reply states
    no DP-SGD mechanism is refused (reason ``"no-dp-sgd"``).

    ``num_shares``/``reconstruction_threshold`` are Flower's (a fraction means a share of
    the sampled devices); ``max_weight`` bounds every device's example count: the devices
    clip theirs to it, and a round in which one arrives outside ``[1, max_weight]`` or above
    :data:`MAX_EXAMPLES_RATIO` × the round's median is refused, as is one whose aggregate is
    not finite or moves the model too far (see the module docstring); a refused round keeps
    the previous global model. A round that Flower's workflow halts (too few devices
    answered or unmasked), or a run in which every round was refused, raises
    :class:`~edgewise.federated.server_app.FederatedRunError`: the model would otherwise
    come back untrained, or trained on fewer rounds than asked.
    """
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    if rounds < 1 or num_nodes < 2:
        raise InvalidParameterError(
            f"SecAgg+ needs rounds >= 1 and at least 2 devices. Got rounds={rounds}, "
            f"num_nodes={num_nodes}."
        )
    initial = [v.numpy() for v in build_model(kind, n_features, seed=seed).state_dict().values()]
    fit_config = {
        "phase": "fit", "n-features": n_features, "max-weight": float(max_weight),
        "normaliser": json.dumps({"mean": normaliser.mean.tolist(),
                                  "std": normaliser.std.tolist()}),
        **(extra_config or {}),
    }
    from edgewise.federated.server_app import FederatedRunError

    aggregated: dict[int, dict[str, float]] = {}
    spent: dict[int, dict[str, float]] = {}
    screen = _AggregateScreen(initial, max_weight=max_weight, dp_sgd=dp_sgd)

    class _Counted(FedAvg):  # type: ignore[misc]
        """Flower's legacy FedAvg, checking each round's example counts and aggregate
        (:class:`_AggregateScreen`) and noting each round whose aggregate came out (with the
        round's train metrics)."""

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            usable = screen.metrics_ok(server_round, results)
            if results:  # what the devices spent, a refused round included
                spent[server_round] = _spent_metrics(results, usable)
            if len(usable) < len(results) or not screen.weights_ok(server_round, results):
                return None, {}
            params, metrics = super().aggregate_fit(server_round, results, failures)
            if params is None:
                return None, {}
            new = parameters_to_ndarrays(params)
            if not screen.aggregate_ok(server_round, new):
                return None, {}
            aggregated[server_round] = {k: float(v) for k, v in (metrics or {}).items()}
            return params, metrics

    strategy = _Counted(
        fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=num_nodes,
        min_evaluate_clients=0, min_available_clients=num_nodes,
        initial_parameters=ndarrays_to_parameters(initial),
        on_fit_config_fn=lambda server_round: dict(fit_config, **{"server-round": server_round}),
        fit_metrics_aggregation_fn=_train_metrics,
    )
    context = LegacyContext(
        Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={}),
        config=ServerConfig(num_rounds=rounds, round_timeout=timeout), strategy=strategy,
    )
    workflow = DefaultWorkflow(fit_workflow=_survivable_secaggplus(SecAggPlusWorkflow)(
        num_shares=num_shares, reconstruction_threshold=reconstruction_threshold,
        max_weight=max_weight, clipping_range=clipping_range, timeout=timeout,
    ))
    checked = _ReplyScreen(grid, [tuple(a.shape) for a in initial], screen.rejected)
    try:
        workflow(checked, context)
    except Exception as exc:  # Flower's workflow on a reply the screen let through
        raise FederatedRunError(
            f"SecAgg+ round {checked.round or '?'} failed at stage "
            f"{checked.stage or 'before the rounds'!r} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:200]}){checked.named()}; the global model is not "
            "trained as asked, and nothing is registered.") from None
    missing = [r for r in range(1, rounds + 1)
               if r not in aggregated and r not in screen.skipped_rounds]
    if missing:
        raise FederatedRunError(
            f"SecAgg+ round(s) {missing} of {rounds} produced no aggregate (Flower halted "
            f"secure aggregation: fewer than the {num_nodes} devices it needs answered, or "
            f"every device failed){checked.named()}; the global model is not trained as "
            "asked."
        )
    if not aggregated:
        first = screen.rejected[0]["detail"] if screen.rejected else "no aggregate"
        raise FederatedRunError(
            f"No SecAgg+ round of {rounds} was accepted (round(s) {screen.skipped_rounds} "
            f"refused; first: {first}); the global model is untrained.")
    record = context.state.array_records[MAIN_PARAMS_RECORD]
    arrays = parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True))
    return SecAggResult(arrays=arrays, train_metrics=aggregated, spent_metrics=spent,
                        skipped_rounds=list(screen.skipped_rounds),
                        rejected=list(screen.rejected))


def _survivable_secaggplus(base: type) -> type:
    """Flower's ``SecAggPlusWorkflow`` (``base``) surviving a device that drops out (or
    whose reply :class:`_ReplyScreen` refuses) before it has shared its keys.

    Flower 1.41 keeps such a device among the round's sampled nodes: at the unmask stage it
    counts it dead and asks every other device for the share of its secret key, which none
    of them ever received (each device's ``KeyError`` answer), and then finds no share to
    rebuild it from, so the round halted, every round, and the run failed, where SecAgg+
    survives any dropout that leaves enough devices. No device masked its update against a
    device that shared no keys (each masks against the devices whose shares it was
    forwarded), so there is nothing of it to unmask: after the setup and share-keys stages
    it is forgotten here (out of the sampled nodes and of every neighbour set), and the
    neighbour threshold is checked on the devices left. A device that drops out later
    (after sharing its keys) is unmasked by Flower, as before.
    """

    class Survivable(base):  # type: ignore[misc, valid-type]
        @staticmethod
        def _forget_unshared(state: Any) -> None:
            gone = set(state.sampled_node_ids) - set(state.active_node_ids)
            if not gone:
                return
            state.sampled_node_ids = set(state.active_node_ids)
            for nid in gone:
                state.nid_to_neighbours.pop(nid, None)
            for neighbours in state.nid_to_neighbours.values():
                neighbours.difference_update(gone)

        def setup_stage(self, grid: Any, context: Any, state: Any) -> bool:
            ok = super().setup_stage(grid, context, state)
            if not state.nid_to_neighbours:  # halted before asking any device
                return bool(ok)
            self._forget_unshared(state)
            return bool(self._check_threshold(state))

        def share_keys_stage(self, grid: Any, context: Any, state: Any) -> bool:
            super().share_keys_stage(grid, context, state)
            self._forget_unshared(state)
            return bool(self._check_threshold(state))

    return Survivable


class _AggregateScreen:
    """The server's checks under SecAgg+, where it sees each device's example count in
    the clear but only the sum of the parameters (see the module docstring)."""

    def __init__(self, initial: list[np.ndarray], *, max_weight: float,
                 max_norm_ratio: float = 10.0, dp_sgd: bool = False) -> None:
        self.current = [np.asarray(a, dtype=np.float64) for a in initial]
        self.dp_sgd = dp_sgd
        self.max_weight = float(max_weight)
        self.max_norm_ratio = max_norm_ratio
        self.norm_history: list[float] = []
        self.skipped_rounds: list[int] = []
        self.rejected: list[dict[str, Any]] = []

    def _refuse(self, server_round: int, node: int | None, reason: str, detail: str) -> bool:
        import logging

        self.skipped_rounds.append(server_round)
        self.rejected.append({"server_round": server_round, "node_id": node,
                              "reason": reason, "detail": detail})
        logging.getLogger(__name__).warning(
            "round %d: SecAgg+ aggregate refused (%s); keeping the previous global model",
            server_round, detail)
        return False

    def metrics_ok(self, server_round: int, results: Any) -> list[Any]:
        """The ``results`` whose metrics (in the clear) are all finite numbers, with
        ``dp-sgd-epsilon`` >= 0 (:func:`~edgewise.federated.strategies.metrics_problem`),
        and, with ``dp_sgd``, a DP-SGD mechanism
        (:func:`~edgewise.federated.strategies.dp_sgd_problem`, reason ``no-dp-sgd``).
        With any other, the round is refused naming the first such device: SecAgg+ cannot
        leave its masked update out of the sum alone. What the round's devices spent is
        read from every reply all the same (:func:`_spent_metrics`)."""
        from edgewise.federated.strategies import dp_sgd_problem, metrics_problem

        usable, bad = [], []
        for proxy, res in results:
            reason, why = "metrics", metrics_problem(res.metrics or {})
            if why is None and self.dp_sgd:
                reason, why = "no-dp-sgd", dp_sgd_problem(res.metrics or {})
            if why is None:
                usable.append((proxy, res))
            else:
                bad.append((_node_of(proxy), reason, why))
        if bad:
            node, reason, why = bad[0]
            self._refuse(server_round, node, reason,
                         f"device (node {node}): {why}"
                         + (f" ({len(bad) - 1} more device(s) too)" if len(bad) > 1 else "")
                         + "; SecAgg+ cannot leave its masked update out of the sum alone")
        return usable

    def weights_ok(self, server_round: int, results: Any) -> bool:
        """Every example count in ``[1, max_weight]`` and at most
        :data:`MAX_EXAMPLES_RATIO` × the round's median (the smaller of two)."""
        from edgewise.federated.privacy import scalar_metric

        counts = [(_node_of(proxy), res.num_examples) for proxy, res in results]
        for node, n in counts:
            x = scalar_metric(n)
            if x is None or not 1 <= x <= self.max_weight:
                return self._refuse(
                    server_round, node, "weight",
                    f"device (node {node}) reported num-examples {n!r}, outside [1, "
                    f"max_weight={self.max_weight:g}]; SecAgg+ has already weighted its masked "
                    "update by it, so the round's aggregate cannot be used")
        values = sorted(float(n) for _, n in counts)
        if not values:
            return True
        ref = float(np.median(values)) if len(values) >= 3 else values[0]
        for node, n in counts:
            if n > MAX_EXAMPLES_RATIO * ref:
                return self._refuse(
                    server_round, node, "weight",
                    f"device (node {node}) reported num-examples {n:g}, more than "
                    f"{MAX_EXAMPLES_RATIO:g} x the round's "
                    f"{'median' if len(values) >= 3 else 'smaller one'} {ref:g}; SecAgg+ has "
                    "already weighted its masked update by it")
        return True

    def aggregate_ok(self, server_round: int, arrays: list[np.ndarray]) -> bool:
        """The aggregate is finite, shaped like the model, and moves it by at most
        ``max_norm_ratio`` × the median move of the earlier accepted rounds and at most
        :data:`~edgewise.federated.strategies.MAX_UPDATE_TO_MODEL` × the model's norm."""
        from edgewise.federated.strategies import NORM_HISTORY, move_caps

        new = [np.asarray(a, dtype=np.float64) for a in arrays]
        if len(new) != len(self.current) or any(
                a.shape != b.shape for a, b in zip(new, self.current, strict=True)):
            return self._refuse(server_round, None, "shape",
                                "the aggregate's arrays differ from the model's")
        if not all(np.isfinite(a).all() for a in new):
            return self._refuse(server_round, None, "non-finite",
                                "NaN or Inf in the aggregate")
        move = float(np.sqrt(sum(float(((a - b) ** 2).sum())
                                 for a, b in zip(new, self.current, strict=True))))
        model = float(np.sqrt(sum(float((b ** 2).sum()) for b in self.current)))
        caps = move_caps(self.norm_history, self.max_norm_ratio, model,
                         "the median move of the accepted rounds")
        for cap, why in caps:
            if not np.isfinite(move) or move > cap:
                return self._refuse(
                    server_round, None, "norm",
                    f"the aggregate moves the global model by {move:.3g} > {cap:.3g}, {why}; "
                    "a device sent a bad update, which SecAgg+ does not let the server "
                    "single out")
        self.current = new
        self.norm_history = [*self.norm_history, move][-NORM_HISTORY:]
        return True


class _ReplyScreen(DelegatingGrid):
    """``grid`` with each SecAgg+ reply checked before Flower's workflow reads it.

    Flower's ``SecAggPlusWorkflow`` trusts each device's reply: masked parameters of
    another count or shape, a share list shorter than its node id list, a share for a node
    the round never sampled, all ended the ServerApp in a ``ValueError`` or ``KeyError``
    naming no device. Here such a reply (of the wrong form for its stage, or from a node not
    asked) becomes an error reply: the workflow takes its device for one that dropped out,
    which SecAgg+ is built to survive (its shares unmask the rest; too few devices left and
    the round halts). Each is recorded in ``rejected`` (reason ``"malformed"``, its node, the
    stage and what was wrong). :attr:`stage` and :attr:`round` say where the protocol was,
    for an error that still comes out of the workflow.
    """

    def __init__(self, grid: Grid, shapes: list[tuple[int, ...]],
                 rejected: list[dict[str, Any]]) -> None:
        super().__init__(grid)
        self.shapes = shapes
        self.rejected = rejected
        self.stage = ""
        self.round = 0
        #: the node ids each round's setup stage asked (by round, as the group id)
        self.sampled: dict[str, set[int]] = {}

    def named(self) -> str:
        """The devices whose replies were malformed, for a message ("" when none)."""
        bad = [e for e in self.rejected if e.get("reason") == "malformed"]
        if not bad:
            return ""
        first = bad[0]
        return (f" (node {first['node_id']} sent a malformed reply at stage "
                f"{first['stage']!r} in round {first['server_round']}: {first['detail']}"
                + (f"; {len(bad) - 1} more such repl{'y' if len(bad) == 2 else 'ies'}"
                   if len(bad) > 1 else "") + ")")

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        """``grid.send_and_receive``, each SecAgg+ reply checked for its stage."""
        from flwr.app import Error, Message
        from flwr.common.secure_aggregation.secaggplus_constants import (
            RECORD_KEY_CONFIGS,
            Key,
        )

        messages = list(messages)
        stage, group = "", ""
        for msg in messages:
            cfg = msg.content.config_records.get(RECORD_KEY_CONFIGS) \
                if msg.has_content() else None
            if cfg is not None and Key.STAGE in cfg:
                stage, group = str(cfg[Key.STAGE]), str(msg.metadata.group_id)
                break
        asked = {int(m.metadata.dst_node_id): m for m in messages}
        if not stage:  # not a SecAgg+ exchange (the initial parameters): as it is
            return self.grid.send_and_receive(messages, timeout=timeout)
        self.stage = stage
        with contextlib.suppress(ValueError):
            self.round = int(group)
        if stage == "setup":
            self.sampled[group] = set(asked)
        replies = list(self.grid.send_and_receive(messages, timeout=timeout))
        out = []
        for reply in replies:
            if reply.has_error():
                out.append(reply)
                continue
            node = int(reply.metadata.src_node_id)
            why = ("it answered a message sent to another node" if node not in asked
                   else self._problem(stage, reply, self.sampled.get(group, set(asked))))
            if why is None:
                out.append(reply)
                continue
            self.rejected.append({"server_round": self.round, "node_id": node,
                                  "reason": "malformed", "stage": stage, "detail": why})
            import logging

            logging.getLogger(__name__).warning(
                "round %s: SecAgg+ reply of node %d at stage %r is malformed (%s); taking "
                "the device for one that dropped out", group, node, stage, why)
            if node in asked:
                out.append(Message(Error(code=0, reason=f"malformed SecAgg+ reply: {why}"),
                                   reply_to=asked[node]))
        return out

    def _problem(self, stage: str, reply: Any, sampled: set[int]) -> str | None:
        """What is wrong with ``reply`` for SecAgg+ stage ``stage`` (``None``: nothing the
        workflow would trip on)."""
        from flwr.common import bytes_to_ndarray
        from flwr.common.secure_aggregation.secaggplus_constants import (
            RECORD_KEY_CONFIGS,
            Key,
        )

        cfg = reply.content.config_records.get(RECORD_KEY_CONFIGS) \
            if reply.has_content() else None
        if cfg is None:
            return f"no {RECORD_KEY_CONFIGS!r} record"

        def listed(key: str, kind: type) -> list[Any] | str:
            value = cfg.get(key)
            if not isinstance(value, list) or not all(
                    isinstance(v, kind) and not isinstance(v, bool) for v in value):
                return f"{key!r} is not a list of {kind.__name__}"
            return value

        if stage == "setup":
            for key in (Key.PUBLIC_KEY_1, Key.PUBLIC_KEY_2):
                if not isinstance(cfg.get(key), bytes):
                    return f"{key!r} is not a public key (bytes)"
        elif stage == "share_keys":
            dsts, ctxts = listed(Key.DESTINATION_LIST, int), listed(Key.CIPHERTEXT_LIST, bytes)
            for v in (dsts, ctxts):
                if isinstance(v, str):
                    return v
            if len(dsts) != len(ctxts):
                return f"{len(dsts)} destinations for {len(ctxts)} encrypted shares"
        elif stage == "collect_masked_vectors":
            arrays = listed(Key.MASKED_PARAMETERS, bytes)
            if isinstance(arrays, str):
                return arrays
            if len(arrays) != len(self.shapes) + 1:
                return (f"{len(arrays)} masked arrays, not {len(self.shapes) + 1} (the weight "
                        "factor and one per model array)")
            try:
                got = [bytes_to_ndarray(b) for b in arrays]
            except Exception as exc:  # any array that cannot be decoded
                return f"a masked array cannot be read ({type(exc).__name__})"
            for i, (a, shape) in enumerate(zip(got, [(1,), *self.shapes], strict=True)):
                if tuple(a.shape) != shape or not np.issubdtype(a.dtype, np.integer):
                    return (f"masked array {i} is {a.dtype} of shape {tuple(a.shape)}, not "
                            f"integers of shape {shape}")
            from flwr.compat.common import recorddict_compat as compat

            try:
                compat.recorddict_to_fitres(reply.content, keep_input=True)
            except Exception as exc:  # what the workflow would raise
                return f"its fit result cannot be read ({type(exc).__name__}: {exc})"
        elif stage == "unmask":
            nids, shares = listed(Key.NODE_ID_LIST, int), listed(Key.SHARE_LIST, bytes)
            for v in (nids, shares):
                if isinstance(v, str):
                    return v
            if len(nids) != len(shares):
                return f"{len(shares)} key shares for {len(nids)} node ids"
            strangers = sorted(set(nids) - sampled)
            if strangers:
                return f"shares for node(s) {strangers[:3]}, which the round never sampled"
            if len(set(nids)) != len(nids):
                return "a node id given twice"
        return None


def _node_of(proxy: Any) -> int:
    """The node id behind a legacy ``ClientProxy`` (``node_id``, else ``cid``), or 0."""
    for name in ("node_id", "cid"):
        try:
            return int(getattr(proxy, name))
        except (AttributeError, TypeError, ValueError):
            continue
    return 0


def _spent_metrics(results: Any, usable: Any) -> dict[str, Any]:
    """What a round's devices spent, whether or not the round is used: the train metrics
    of ``usable`` (the replies whose metrics all pass, :func:`_train_metrics`), and as
    ``dp-sgd-epsilon`` the largest ε of every reply in ``results`` that states one, read
    by :func:`~edgewise.federated.privacy.reported_epsilon` (not a finite number >= 0:
    infinite), whatever its other metrics (a device whose train-loss was infinite was left
    out, and the ε it spent with it: 6.63 reported where 7.99 was spent). A round in which
    no reply passes is still a round its devices spent in.

    >>> from types import SimpleNamespace as NS
    >>> ok = (1, NS(num_examples=100, metrics={"train-loss": 0.5, "dp-sgd-epsilon": 6.63}))
    >>> bad = (2, NS(num_examples=100, metrics={"train-loss": float("inf"),
    ...                                         "dp-sgd-epsilon": 7.99}))
    >>> _spent_metrics([ok, bad], [ok])
    {'train-loss': 0.5, 'dp-sgd-epsilon': 7.99}
    >>> _spent_metrics([bad], [])
    {'dp-sgd-epsilon': 7.99}
    """
    from edgewise.federated.privacy import reported_epsilon

    out = _train_metrics([(res.num_examples, res.metrics) for _, res in usable]) \
        if usable else {}
    eps = [reported_epsilon(res.metrics["dp-sgd-epsilon"]) for _, res in results
           if "dp-sgd-epsilon" in (res.metrics or {})]
    if eps:
        out["dp-sgd-epsilon"] = max(eps)
    return out


def _train_metrics(fit_metrics: list[tuple[int, Any]]) -> dict[str, Any]:
    """Flower's legacy ``fit_metrics_aggregation_fn``: the devices' ``(num_examples,
    metrics)`` aggregated by :func:`~edgewise.federated.strategies.aggregate_train_metrics`.

    >>> _train_metrics([(1, {"train-loss": 1.0, "dp-sgd-epsilon": 7.9}),
    ...                 (3, {"train-loss": 3.0, "dp-sgd-epsilon": 8.0})])
    {'train-loss': 2.5, 'dp-sgd-epsilon': 8.0}
    """
    from flwr.app import MetricRecord

    from edgewise.federated.strategies import aggregate_train_metrics

    records = [RecordDict({"metrics": MetricRecord({**m, "num-examples": n})})
               for n, m in fit_metrics]
    return dict(aggregate_train_metrics(records, "num-examples"))
