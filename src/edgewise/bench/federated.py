"""``edgewise bench federated``: federated vs central RUL on C-MAPSS FD002, DP and poisoning.

Every federated figure comes from Flower's own round loop and aggregation
(``Strategy.start``, ``FedAvg``/``FedTrimmedAvg``, ``DifferentialPrivacyServerSideFixedClipping``)
driving the Edgewise ``ClientApp`` through :class:`~edgewise.federated.inprocess.InProcessGrid`
(Flower's simulation engine needs Ray). Clients are disjoint groups of engines
(``partition-id::num-partitions``), so each holds whole run-to-failure histories of its own
engines (non-IID). The fleet normaliser is fitted federatedly too.

Figures (RMSE in cycles on the 259 FD002 test engines, truth capped at 125):

* ``central_rmse``: the same MLP trained on pooled data, same optimiser, epochs = rounds x
  local epochs;
* ``fedavg_rmse``, ``robust_clean_rmse`` (trimmed mean β=0.25 + RobustStrategy);
* ``poisoned_fedavg_rmse``, ``poisoned_robust_rmse``: 20% of clients send sign-flipped
  updates scaled by 10;
* ``dp_eps8_rmse``, ``dp_eps1_rmse``: record-level DP (unit: one window of one engine), the
  product's default: each of the ``clients`` devices runs DP-SGD (Opacus) calibrated by
  itself to a budget of ε≈8 / ε≈1 per device over the whole run (δ=1e-5), as
  ``edgewise federate server --dp-epsilon`` does;
* ``dp_eps8_stats_rmse``: the ``dp_eps8`` run with the normaliser statistics released
  through DP too (:mod:`edgewise.federated.stats_privacy`, 10 % of the budget, readings
  clipped to :func:`public_envelope`), so its ε covers both; ``run_stats_dp_benchmark``
  runs only this pair (``edgewise bench federated --stats-dp-only``);
* ``dp_device_eps8_rmse``, ``dp_device_eps1_rmse``: device-level DP (Flower's server-side
  fixed clipping, equal device weights; noise calibrated by the RDP accountant for ε≈8 and
  ε≈1, δ=1e-5, over all rounds and the per-round sample), on the fleet of one client per
  engine (the privacy unit is an engine's whole history; fleet of 260). The per-round sample
  (``dp_sample`` of ``dp_clients``) is drawn from the OS's entropy, never from the seed: the
  ε's amplification by sampling holds only for a sample nobody can replay (seeded, anyone
  knowing the seed 0..N-1 could tell which rounds a device was in, and the most-sampled
  device's ε was more than twice the one reported). ``dp_device_sampling`` says which;
* ``dp_fleet_nodp_rmse``: that same one-engine-per-client fleet without DP (the device-level
  runs' own reference: what DP costs, separately from what the fleet shape costs);
* ``bytes_per_client_round``: model bytes a client uploads per round (it downloads as many).

Both this and ``run_stats_dp_benchmark`` record where they ran: ``machine``, ``cpus`` and
``python`` (:func:`~edgewise.bench._machine.machine_fields`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bench._machine import machine_fields

__all__ = ["public_envelope", "run_federated_benchmark", "run_federated_benchmark_seeds",
           "run_stats_dp_benchmark"]


def _rmse_of(result: Any, directory: Path) -> float:
    from edgewise.federated.data import load_cmapss
    from edgewise.federated.model import build_model, rmse

    data = load_cmapss(directory, normaliser=result.normaliser)
    model = build_model("rul", data.n_features)
    model.load_state_dict(result.state_dict())
    return rmse(model, data.X_test, data.y_test)


def public_envelope(directory: str | Path, margin: float = 0.1) -> Any:
    """Per-condition sensor bounds for C-MAPSS FD002 that read no device's data: the range
    of the 259 *test* engines' readings (a public reference fleet of the same engine type,
    disjoint from the training engines the devices hold; their RUL labels are not read),
    widened by ``margin`` of that range on each side. What an operator would take from a
    reference fleet or the engines' operating envelope; the bench's stand-in for it.

    Returns :class:`~edgewise.federated.stats_privacy.StatsBounds` of shape (6, 14).
    """
    from edgewise.federated.data import CONDITIONS, _engine_rows, _read, cmapss_file
    from edgewise.federated.stats_privacy import StatsBounds

    try:
        path = cmapss_file(directory, "test")
    except FileNotFoundError:
        from edgewise.errors import InvalidParameterError

        raise InvalidParameterError(
            f"C-MAPSS test_FD002.txt(.gz) not found in {directory}.") from None
    _, _, cond, sensors = _engine_rows(_read(path))
    lo = np.stack([sensors[cond == j].min(axis=0) for j in range(len(CONDITIONS))])
    hi = np.stack([sensors[cond == j].max(axis=0) for j in range(len(CONDITIONS))])
    width = hi - lo
    return StatsBounds(lo - margin * width, hi + margin * width)


def _cmapss_config(directory: Path, seed: int, local_epochs: int, lr: float,
                   batch: int) -> dict[str, Any]:
    """The run config of a C-MAPSS FD002 run of the Edgewise ``ClientApp``."""
    return {"dataset": "cmapss", "data-dir": str(directory), "local-epochs": local_epochs,
            "lr": lr, "batch-size": batch, "seed": seed}


def _federate(base_config: dict[str, Any], n: int, n_rounds: int, seed: int,
              attackers: int = 0, run_config: dict[str, Any] | None = None,
              **kw: Any) -> Any:
    """One C-MAPSS run of the Edgewise ``ClientApp`` on ``n`` in-process devices (engine
    groups ``partition-id::n``) for ``n_rounds``; returns what
    :func:`~edgewise.federated.server_app.run_federated` does.

    ``attackers`` devices, spread evenly over the partitions, send sign-flipped updates;
    every device gets ``base_config`` updated with ``run_config``; ``kw`` goes to
    ``run_federated``.
    """
    from edgewise.federated.client_app import app
    from edgewise.federated.inprocess import InProcessGrid
    from edgewise.federated.server_app import run_federated

    bad = set(np.linspace(0, n - 1, attackers).round().astype(int)) if attackers else set()
    cfgs = [{"partition-id": i, "num-partitions": n,
             "attack": "signflip" if i in bad else ""} for i in range(n)]
    grid = InProcessGrid(app, cfgs, dict(base_config, **(run_config or {})))
    return run_federated(grid, kind="rul", n_features=43, n_conditions=6, num_nodes=n,
                         rounds=n_rounds, seed=seed, **kw)


def run_federated_benchmark(
    directory: str | Path,
    *,
    clients: int = 26,
    rounds: int = 20,
    local_epochs: int = 1,
    dp_clients: int = 260,
    dp_rounds: int = 10,
    dp_local_epochs: int = 3,
    dp_sample: int | None = None,
    dp_clip: float = 1.0,
    dp_delta: float = 1e-5,
    dp_sgd_batch: tuple[int, int] = (64, 256),
    dp_sgd_lr: tuple[float, float] = (0.003, 0.01),
    seed: int = 0,
    progress: Any = None,
) -> dict[str, Any]:
    """Run every configuration once and return the figures (see the module docstring)."""
    import random

    import torch

    from edgewise.federated.data import load_cmapss
    from edgewise.federated.model import build_model, rmse, train_local
    from edgewise.federated.privacy import device_noise_for_epsilon

    torch.set_num_threads(1)
    # Flower's FedAvg samples devices with the random module: seeded here, the runs without
    # device-level DP (every device in every round, only their order drawn) replay; the
    # device-level DP runs reseed it from the OS's entropy (below).
    random.seed(seed)
    for name in ("flwr", "edgewise.federated", "absl"):  # per-round logs: figures suffice
        logging.getLogger(name).setLevel(logging.ERROR)
    directory = Path(directory)
    say = progress or (lambda msg: None)
    lr, batch = 0.003, 32
    run_config = _cmapss_config(directory, seed, local_epochs, lr, batch)
    out: dict[str, Any] = {}
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def fed(name: str, n: int, n_rounds: int, attackers: int = 0, **kw: Any) -> Any:
        t = time.perf_counter()
        res = _federate(run_config, n, n_rounds, seed, attackers, **kw)
        timings[name] = round(time.perf_counter() - t, 1)
        say(f"{name}: {timings[name]} s")
        return res

    # Central baseline: same model, pooled data, same optimiser and number of passes.
    t = time.perf_counter()
    data = load_cmapss(directory)
    X, y = data.pooled()
    model = build_model("rul", data.n_features, seed=seed)
    for epoch in range(rounds * local_epochs):
        train_local(model, X, y, epochs=1, batch_size=batch, lr=lr, seed=seed + epoch)
    out["central_rmse"] = rmse(model, data.X_test, data.y_test)
    timings["central"] = round(time.perf_counter() - t, 1)
    say(f"central: {timings['central']} s")

    f = max(1, round(0.2 * clients))
    beta = 0.25
    r = fed("fedavg", clients, rounds, strategy="fedavg", robust=False)
    out["fedavg_rmse"] = _rmse_of(r, directory)
    out["bytes_per_client_round"] = r.bytes_per_client_round()
    r = fed("robust_clean", clients, rounds, strategy="trimmed", num_malicious_nodes=f, beta=beta)
    out["robust_clean_rmse"] = _rmse_of(r, directory)
    r = fed("poisoned_fedavg", clients, rounds, attackers=f, strategy="fedavg", robust=False)
    out["poisoned_fedavg_rmse"] = _rmse_of(r, directory)
    r = fed("poisoned_robust", clients, rounds, attackers=f, strategy="trimmed",
            num_malicious_nodes=f, beta=beta)
    out["poisoned_robust_rmse"] = _rmse_of(r, directory)
    out["poisoned_robust_rejected"] = len([e for e in r.rejected if e["reason"] == "norm"])

    # Record-level DP (the default of `federate server`): a budget per device for the whole
    # run; each device calibrates its own DP-SGD noise to it (client_app.dp_sgd_budget).
    # Batch and learning rate per budget were chosen on a validation split of the training
    # engines (benchmarks/results/federated.md), never on the test engines.
    envelope = public_envelope(directory)
    for eps, key, bs, dp_lr, bounds in (
            (8.0, "dp_eps8", dp_sgd_batch[0], dp_sgd_lr[0], None),
            (8.0, "dp_eps8_stats", dp_sgd_batch[0], dp_sgd_lr[0], envelope),
            (1.0, "dp_eps1", dp_sgd_batch[1], dp_sgd_lr[1], None)):
        r = fed(key, clients, rounds, strategy="fedavg", robust=False, dp_sgd_epsilon=eps,
                dp_delta=dp_delta, stats_bounds=bounds,
                run_config={"dp-sgd-epsilon": eps, "dp-delta": dp_delta, "batch-size": bs,
                            "lr": dp_lr, "num-server-rounds": rounds})
        out[f"{key}_rmse"] = _rmse_of(r, directory)
        out[f"{key}_epsilon"] = r.privacy.epsilon
        out[f"{key}_noise_multiplier"] = round(r.privacy.noise_multiplier, 3)
        out[f"{key}_batch"] = bs
        out[f"{key}_lr"] = dp_lr
        if bounds is not None:
            out[f"{key}_stats_epsilon"] = r.privacy.stats_epsilon
            out[f"{key}_stats_noise_multiplier"] = round(r.privacy.stats_noise_multiplier, 3)

    # Device-level DP: one client per engine, equal weights, noise calibrated for the whole
    # run (all rounds, and the per-round sample of m of the devices when m < n).
    m = dp_sample or dp_clients
    dp_rc = {"local-epochs": dp_local_epochs}
    # Their ε is accounted with amplification by a secret sample of m of the devices per
    # round: a sample replayable from the (published) seed would not be secret, so Flower's
    # sampler is seeded from the OS's entropy, not from ``seed``.
    random.seed()
    for eps, key in ((8.0, "dp_device_eps8"), (1.0, "dp_device_eps1")):
        z = device_noise_for_epsilon(eps, dp_rounds, dp_delta, num_devices=dp_clients,
                                     sample_size=m)
        r = fed(key, dp_clients, dp_rounds, strategy="fedavg", robust=False, dp_noise=z,
                dp_clip=dp_clip, dp_delta=dp_delta, sample_size=m, run_config=dp_rc)
        out[f"{key}_rmse"] = _rmse_of(r, directory)
        out[f"{key}_epsilon"] = r.privacy.epsilon
        out[f"{key}_noise_multiplier"] = z
    r = fed("dp_clean_reference", dp_clients, dp_rounds, strategy="fedavg", robust=False,
            sample_size=m, run_config=dp_rc)
    out["dp_fleet_nodp_rmse"] = _rmse_of(r, directory)

    out.update(_pump_fleet_figures(seed))
    say("pump fleet: done")

    out.update({
        "clients": clients, "rounds": rounds, "local_epochs": local_epochs,
        "poisoned_clients": f, "robust_rule": f"FedTrimmedAvg(beta={beta}) + RobustStrategy",
        "dp_clients": dp_clients, "dp_sample": m, "dp_rounds": dp_rounds, "dp_clip": dp_clip,
        "dp_device_sampling": (f"{m} of {dp_clients} devices per round, drawn from the OS's "
                               "entropy (not the seed): the sample is secret, as the ε's "
                               "amplification by sampling needs" if m < dp_clients else
                               "every device in every round (no amplification by sampling)"),
        "dp_local_epochs": dp_local_epochs, "dp_delta": dp_delta,
        "dp_unit": "record (one window of one engine), ε per device over the run",
        "dp_device_unit": "device (one engine's whole history)",
        "seconds": timings, "total_seconds": round(time.perf_counter() - t_all, 1),
        **machine_fields(),
    })
    return out


def run_stats_dp_benchmark(
    directory: str | Path,
    *,
    seeds: int = 3,
    clients: int = 26,
    rounds: int = 20,
    epsilon: float = 8.0,
    batch: int = 64,
    lr: float = 0.003,
    stats_share: float = 0.1,
    margin: float = 0.1,
    delta: float = 1e-5,
    progress: Any = None,
) -> dict[str, Any]:
    """The ``dp_eps8`` run with the normaliser statistics in the clear and through DP
    (``stats_share`` of the budget, bounds :func:`public_envelope`), ``seeds`` times each;
    RMSE (and normaliser error against the pooled one, in pooled standard deviations) per
    run, and their medians. DP-SGD's noise comes from the OS's entropy, so two runs of one
    seed differ: the seeds are repetitions, not replays.
    """
    import random

    import torch

    from edgewise.errors import InvalidParameterError
    from edgewise.federated.data import ConditionNormaliser, _engine_rows, _read, cmapss_file

    if seeds < 1:
        raise InvalidParameterError(f"The 'seeds' parameter must be >= 1. Got {seeds} instead.")
    torch.set_num_threads(1)
    for name in ("flwr", "edgewise.federated", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    directory = Path(directory)
    say = progress or (lambda msg: None)
    envelope = public_envelope(directory, margin)
    _, _, cond, sensors = _engine_rows(_read(cmapss_file(directory, "train")))
    pooled = ConditionNormaliser.from_stats(*ConditionNormaliser.stats(sensors, cond))
    runs: dict[str, list[float]] = {k: [] for k in (
        "clear_rmse", "dp_stats_rmse", "dp_stats_mean_error_median",
        "dp_stats_std_ratio_min", "dp_stats_std_ratio_max", "clear_epsilon",
        "dp_stats_epsilon", "clear_noise_multiplier", "dp_stats_noise_multiplier")}
    seconds = []
    t_all = time.perf_counter()
    for seed in range(seeds):
        for key, bounds in (("clear", None), ("dp_stats", envelope)):
            t = time.perf_counter()
            random.seed(seed)
            r = _federate(_cmapss_config(directory, seed, 1, lr, batch), clients, rounds, seed,
                          strategy="fedavg", robust=False, dp_sgd_epsilon=epsilon,
                          dp_delta=delta, stats_bounds=bounds, stats_share=stats_share,
                          run_config={"dp-sgd-epsilon": epsilon, "dp-delta": delta,
                                      "num-server-rounds": rounds})
            runs[f"{key}_rmse"].append(_rmse_of(r, directory))
            runs[f"{key}_epsilon"].append(float(r.privacy.epsilon or 0.0))
            runs[f"{key}_noise_multiplier"].append(round(r.privacy.noise_multiplier, 4))
            if bounds is not None:
                err = np.abs(r.normaliser.mean - pooled.mean) / pooled.std
                ratio = r.normaliser.std / pooled.std
                runs["dp_stats_mean_error_median"].append(float(np.median(err)))
                runs["dp_stats_std_ratio_min"].append(float(ratio.min()))
                runs["dp_stats_std_ratio_max"].append(float(ratio.max()))
            seconds.append(round(time.perf_counter() - t, 1))
            say(f"seed {seed} {key}: RMSE {runs[f'{key}_rmse'][-1]:.3f} ({seconds[-1]} s)")
    out: dict[str, Any] = {k: float(np.median(v)) for k, v in runs.items()}
    out["rmse_change"] = out["dp_stats_rmse"] - out["clear_rmse"]
    out["rmse_change_per_seed"] = [b - a for a, b in zip(runs["clear_rmse"],
                                                         runs["dp_stats_rmse"], strict=True)]
    out.update({"runs": runs, "seeds": seeds, "clients": clients, "rounds": rounds,
                "epsilon": epsilon, "batch": batch, "lr": lr, "stats_share": stats_share,
                "envelope_margin": margin, "delta": delta, "seconds": seconds,
                "total_seconds": round(time.perf_counter() - t_all, 1), **machine_fields()})
    return out


def run_federated_benchmark_seeds(
    directory: str | Path, seeds: int = 1, progress: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """Run the benchmark with seeds 0..seeds-1; every figure that varies is the median, and
    ``runs`` holds each run's values (``seconds`` keeps each run's timings).

    >>> run_federated_benchmark_seeds("no-such-dir", seeds=0)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'seeds' parameter must be >= 1. Got 0 instead.
    """
    from edgewise.errors import InvalidParameterError

    if seeds < 1:
        raise InvalidParameterError(f"The 'seeds' parameter must be >= 1. Got {seeds} instead.")
    say = progress or (lambda msg: None)
    runs = []
    for seed in range(seeds):
        say(f"seed {seed}")
        runs.append(run_federated_benchmark(directory, seed=seed, progress=progress, **kwargs))
    out = dict(runs[0])
    if seeds == 1:
        return out
    varying: dict[str, list[Any]] = {}
    for key, value in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(value, (int, float)) and not isinstance(value, bool) \
                and len(set(values)) > 1:
            varying[key] = values
            out[key] = float(np.median(values))
    out["seconds"] = [r["seconds"] for r in runs]
    out["total_seconds"] = round(sum(r["total_seconds"] for r in runs), 1)
    out["seeds"] = seeds
    out["runs"] = varying
    return out


def _f1(y: np.ndarray, flag: np.ndarray) -> float:
    tp = float(np.sum(flag & (y == 1)))
    fp = float(np.sum(flag & (y == 0)))
    fn = float(np.sum(~flag & (y == 1)))
    return 2 * tp / max(2 * tp + fp + fn, 1.0)


def _pump_fleet_figures(seed: int, n: int = 10, rounds: int = 15) -> dict[str, Any]:
    """Detection F1 of the pump autoencoder, federated vs central, and personalisation."""
    from edgewise.federated.client_app import app
    from edgewise.federated.data import ConditionNormaliser, pump_fleet
    from edgewise.federated.inprocess import InProcessGrid
    from edgewise.federated.model import build_model, predict, train_local
    from edgewise.federated.personalise import personalise
    from edgewise.federated.server_app import run_federated

    fleet = pump_fleet(n, n_samples=1000, seed=seed)  # what client_app's devices hold

    def scores(model: Any, norm: ConditionNormaliser, X: np.ndarray) -> np.ndarray:
        Z = norm.transform(X.astype(np.float64), np.zeros(len(X), dtype=np.int64))
        Z = Z.astype(np.float32)
        return np.mean((predict(model, Z) - Z) ** 2, axis=1)

    def fleet_f1(model: Any, norm: ConditionNormaliser) -> float:
        ys, flags = [], []
        for dev in fleet:  # each device calibrates its threshold on its own normal history
            thr = np.quantile(scores(model, norm, dev.X_train), 0.99)
            ys.append(dev.y_test)
            flags.append(scores(model, norm, dev.X_test) > thr)
        return _f1(np.concatenate(ys), np.concatenate(flags))

    zeros = [np.zeros(len(d.X_train), dtype=np.int64) for d in fleet]
    pooled = np.concatenate([d.X_train for d in fleet]).astype(np.float64)
    norm = ConditionNormaliser.from_stats(*ConditionNormaliser.stats(
        pooled, np.concatenate(zeros), 1))
    central = build_model("ae", 6, seed=seed)
    Zp = norm.transform(pooled, np.concatenate(zeros)).astype(np.float32)
    for epoch in range(rounds):
        train_local(central, Zp, None, epochs=1, batch_size=32, lr=0.003, seed=epoch)
    grid = InProcessGrid(app, [{"partition-id": i, "num-partitions": n} for i in range(n)],
                         {"dataset": "pump", "seed": seed, "lr": 0.003, "batch-size": 32})
    res = run_federated(grid, kind="ae", n_features=6, n_conditions=1, num_nodes=n,
                        rounds=rounds, strategy="trimmed", num_malicious_nodes=2, beta=0.2)
    fed = build_model("ae", 6)
    fed.load_state_dict(res.state_dict())
    gains = []
    for dev in fleet:  # personalisation: fine-tune on the first 75%, test on the last 25%
        Z = res.normaliser.transform(dev.X_train.astype(np.float64),
                                     np.zeros(len(dev.X_train), dtype=np.int64))
        Z = Z.astype(np.float32)
        cut = int(0.75 * len(Z))
        p = personalise(res.state_dict(), "ae", Z[:cut], None, Z[cut:], None, epochs=10,
                        lr=0.003, seed=seed)
        gains.append((p["global_rmse"], p["personal_rmse"]))
    g = np.array(gains)
    return {
        "pump_central_f1": fleet_f1(central, norm),
        "pump_federated_f1": fleet_f1(fed, res.normaliser),
        "pump_personal_heldback_rmse_median": float(np.median(g[:, 1])),
        "pump_global_heldback_rmse_median": float(np.median(g[:, 0])),
        "pump_personal_better_devices": int(np.sum(g[:, 1] < g[:, 0])),
        "pump_devices": n,
    }
