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
still averaged in the clear before the SecAgg+ rounds.

SecAgg+ masks the parameters only: each device's example count and train metrics
(``train-loss``, ``dp-sgd-epsilon``, ``dp-sgd-noise``) reach the server in the clear, as
Flower's ``secaggplus_mod`` sends them. The run's record-level ε is therefore what the devices
report they spent (each composes its own privacy ledger), the largest of them, exactly as
without SecAgg+; never the budget the run asked for.

>>> check_secagg("trimmed", robust=True)
Traceback (most recent call last):
...
edgewise.errors.InvalidParameterError: Secure aggregation (--secagg, SecAgg+) cannot be combined with the robust rule 'trimmed' (RobustStrategy): the server would see no individual update to check, rank or trim. Use --strategy fedavg without the robust wrapper, or drop --secagg.
"""  # noqa: E501

from __future__ import annotations

import json
from typing import Any

from flwr.app import Context, RecordDict
from flwr.serverapp import Grid

from edgewise.errors import InvalidParameterError
from edgewise.federated.data import ConditionNormaliser
from edgewise.federated.model import build_model

__all__ = ["check_secagg", "run_secagg"]


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
) -> tuple[list[Any], dict[int, dict[str, float]]]:
    """``rounds`` rounds of FedAvg under SecAgg+ over ``grid``; return the global arrays and,
    for each round that aggregated, the devices' train metrics.

    The metrics are aggregated as the plain rounds aggregate them
    (:func:`~edgewise.federated.strategies.aggregate_train_metrics`: ``dp-sgd-epsilon`` is
    the largest a device reported, the ε it spent), so the run's privacy report is built
    the same way with or without SecAgg+.

    ``num_shares``/``reconstruction_threshold`` are Flower's (a fraction means a share of
    the sampled devices); ``max_weight`` must exceed every device's example count. A round
    that Flower's workflow halts (too few devices answered or unmasked) or that aggregates
    nothing raises :class:`~edgewise.federated.server_app.FederatedRunError`: the model
    would otherwise come back untrained, or trained on fewer rounds than asked.
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
        "phase": "fit", "n-features": n_features,
        "normaliser": json.dumps({"mean": normaliser.mean.tolist(),
                                  "std": normaliser.std.tolist()}),
    }
    from edgewise.federated.server_app import FederatedRunError

    aggregated: dict[int, dict[str, float]] = {}

    class _Counted(FedAvg):  # type: ignore[misc]
        """Flower's legacy FedAvg, noting each round whose aggregate came out (with the
        round's train metrics)."""

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            params, metrics = super().aggregate_fit(server_round, results, failures)
            if params is not None:
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
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=num_shares, reconstruction_threshold=reconstruction_threshold,
        max_weight=max_weight, clipping_range=clipping_range, timeout=timeout,
    ))
    workflow(grid, context)
    missing = [r for r in range(1, rounds + 1) if r not in aggregated]
    if missing:
        raise FederatedRunError(
            f"SecAgg+ round(s) {missing} of {rounds} produced no aggregate (Flower halted "
            f"secure aggregation: fewer than the {num_nodes} devices it needs answered, or "
            "every device failed); the global model is not trained as asked."
        )
    record = context.state.array_records[MAIN_PARAMS_RECORD]
    arrays = parameters_to_ndarrays(compat.arrayrecord_to_parameters(record, keep_input=True))
    return arrays, aggregated


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
