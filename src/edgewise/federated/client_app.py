"""The Flower ``ClientApp``: what a device does when the server asks it to train.

A device answers two kinds of ``train`` message, told apart by the ``"phase"`` entry of the
config the server sends:

* ``"stats"``: return the normaliser's sufficient statistics of its own history (count,
  sum and sum of squares per operating condition), weight 1; the server's trimmed
  combination of these is the fleet normaliser, without a single reading leaving the
  device. When the server's config carries ``dp-stats-noise`` z > 0 and public per-sensor
  bounds (``dp-stats-lower``/``dp-stats-upper``), the statistics go through record-level DP
  (:func:`~edgewise.federated.stats_privacy.noisy_stats`): the release is first recorded
  in the device's privacy ledger as one Gaussian step ``(z, 1.0, 1)`` (refused, with an
  error reply, past its ``max-dp-epsilon``), and its DP-SGD is then calibrated so that both
  together stay within the run's budget (:func:`dp_sgd_budget`);
* a SecAgg+ round (Flower's legacy fit messages with SecAgg+ stage configs): the same
  training, its parameters masked by Flower's ``secaggplus_mod`` before they leave the
  device (its example count and metrics, ``dp-sgd-epsilon`` among them, are not masked);
* ``"fit"`` (default): load the global model, train it on local data for
  ``local-epochs`` (record-level DP-SGD when the run sets a ``dp-sgd-epsilon`` budget, each
  device calibrating its own noise: :func:`dp_sgd_budget`), and return the new parameters
  with ``"num-examples"``, ``"unit-weight"`` (1: the weight under device-level DP),
  ``"train-loss"``, ``"dp-sgd-epsilon"`` (the ε the device has really spent in the run so
  far: the rounds it trained in, composed from its ledger, not the budget it planned for
  every declared round; 0 without) and the round's DP-SGD mechanism ``"dp-sgd-noise"``,
  ``"dp-sgd-rate"`` and ``"dp-sgd-steps"``, from which the server composes the run's ε
  across resumed runs (:class:`~edgewise.federated.ledger.RunLedger`).
  Each round is first recorded in the device's privacy ledger
  (:mod:`edgewise.federated.ledger`), which refuses it, with an error reply and no
  training, when it would take the device past its own ``max-dp-epsilon``.

``evaluate`` returns the loss of the global model on data the device never trains on
(:func:`held_data`): a pump's held-back *normal* readings (the later part of its series,
fault rows left out: the autoencoder's reconstruction error on them), a C-MAPSS device's
share of the FD002 *test* engines (every cycle, RUL from ``RUL_FD002``), which no device
trains on. A device without held-back data (a C-MAPSS partition past the 259 test engines)
answers with an error reply, which the evaluation average leaves out.

Where the data comes from is set by the run config (``dataset``: ``"pump"`` for the
simulated pump fleet, ``"cmapss"`` with ``data-dir`` for C-MAPSS engines) and which part
of it by the node config (``partition-id``, ``num-partitions``), as Flower does. A node
config ``attack`` (``"signflip"``, ``"nan"``, ``"shape"``, ``"scale100"``, ``"weight"``)
makes a device misbehave on purpose, for robustness tests and the benchmark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from edgewise.errors import InvalidParameterError
from edgewise.federated.data import (
    ConditionNormaliser,
    run_pump_fleet,
    window_features,
)
from edgewise.federated.ledger import DEVICE_DELTA, LedgerEntry, PrivacyBudgetError, PrivacyLedger
from edgewise.federated.privacy import MIN_NOISE, Mechanism

__all__ = ["ATTACKS", "DeviceData", "app", "device_data", "dp_sgd_budget", "held_data",
           "noise_setting", "poison"]

ATTACKS = ("", "signflip", "nan", "inf", "shape", "scale100", "weight")
#: Config record of Flower's legacy fit messages, the format SecAgg+ rounds use.
LEGACY_FIT_CONFIG = "fitins.config"


def secagg_when_asked(msg: Message, ctxt: Context, call_next: Any) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ messages; plain messages pass straight on."""
    from flwr.client.mod import secaggplus_mod
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


app = ClientApp(mods=[secagg_when_asked])


@dataclass
class DeviceData:
    """Rows of one device: raw channels + condition (+ RUL targets), per engine or pump.

    :func:`device_data` gives what it trains on, :func:`held_data` what it evaluates on.
    """

    kind: str  # "rul" or "ae"
    raw_train: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (channels, cond, cycles)
    y_train: list[np.ndarray]
    n_conditions: int = 1

    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normaliser sufficient statistics over all of this device's training rows."""
        chans = np.concatenate([r[0] for r in self.raw_train])
        cond = np.concatenate([r[1] for r in self.raw_train])
        return ConditionNormaliser.stats(chans, cond, self.n_conditions)

    def features(self, norm: ConditionNormaliser) -> tuple[np.ndarray, np.ndarray | None]:
        """Model inputs (and RUL targets) for this device under the fleet normaliser."""
        if self.kind == "ae":
            chans, cond, _ = self.raw_train[0]
            return norm.transform(chans, cond).astype(np.float32), None
        X = [window_features(norm.transform(c, k), cyc) for c, k, cyc in self.raw_train]
        return np.concatenate(X), np.concatenate(self.y_train)


@lru_cache(maxsize=64)
def device_data(dataset: str, data_dir: str, partition_id: int, num_partitions: int,
                seed: int = 0) -> DeviceData:
    """Load partition ``partition_id`` of ``num_partitions`` (cached per process).

    C-MAPSS: engines ``partition_id, partition_id + n, …`` of FD002 (one engine per device
    when ``num_partitions`` is 260). Pump: the ``partition_id``-th pump of a simulated fleet.
    A missing ``train_FD002.txt.gz``, a partition with no engine, or a non-finite reading
    in a column the device uses (unit, cycle, operating setting 1, the model's sensors)
    raises :class:`~edgewise.errors.InvalidParameterError` naming it: one NaN reading made
    30 feature rows NaN and every round's update all NaN.

    >>> d = device_data("pump", "", 0, 3)
    >>> d.kind, d.raw_train[0][0].shape[1]
    ('ae', 6)
    """
    if dataset == "pump":
        dev = run_pump_fleet(num_partitions, seed)[partition_id]
        return _pump_rows(dev.X_train)
    if not (Path(data_dir) / "train_FD002.txt.gz").is_file():
        raise InvalidParameterError(
            f"C-MAPSS training reads this device's engines from train_FD002.txt.gz in the "
            f"data dir; {data_dir!r} lacks it.", field="data-dir", value=data_dir)
    raw = _read_cached(str(Path(data_dir) / "train_FD002.txt.gz"))
    # a NaN unit id cast to int is an engine of its own: it moved every partition
    _check_finite(raw[:, :1], ["unit"], f"train_FD002 in {data_dir}")
    units = np.unique(raw[:, 0].astype(int))
    if not len(units[partition_id::num_partitions]):
        raise InvalidParameterError(
            f"Partition {partition_id} of {num_partitions} holds no C-MAPSS engine: FD002 in "
            f"{data_dir} has {len(units)} engines, so num-partitions must be at most "
            f"{len(units)}.")
    return _cmapss_rows(raw, partition_id, num_partitions, source=f"train_FD002 in {data_dir}")


@lru_cache(maxsize=64)
def held_data(dataset: str, data_dir: str, partition_id: int, num_partitions: int,
              seed: int = 0) -> DeviceData:
    """What partition ``partition_id`` of ``num_partitions`` evaluates on: rows it never
    trains on (cached per process).

    Pump: the normal readings of its held-back later stretch (``X_test`` where ``y_test``
    is 0; the injected faults are left out, so the figure is the reconstruction error of
    normal operation). C-MAPSS: test engines ``partition_id, partition_id + n, …`` of
    FD002 (``test_FD002``, 259 engines, which no device trains on), every cycle, RUL
    from ``RUL_FD002`` counted back from each engine's last cycle and capped as in
    training. A partition with no test engine raises
    :class:`~edgewise.errors.InvalidParameterError`.

    >>> d = held_data("pump", "", 0, 3)
    >>> d.kind, d.raw_train[0][0].shape[1]
    ('ae', 6)
    """
    if dataset == "pump":
        dev = run_pump_fleet(num_partitions, seed)[partition_id]
        return _pump_rows(dev.X_test[dev.y_test == 0])
    base = Path(data_dir)
    missing = [n for n in ("test_FD002.txt.gz", "RUL_FD002.txt.gz") if not (base / n).is_file()]
    if missing:
        raise InvalidParameterError(
            f"C-MAPSS evaluation reads the held-back test engines from test_FD002.txt.gz and "
            f"RUL_FD002.txt.gz in the data dir; {data_dir!r} lacks {', '.join(missing)}.")
    raw = _read_cached(str(base / "test_FD002.txt.gz"))
    _check_finite(raw[:, :1], ["unit"], f"test_FD002 in {data_dir}")
    units = np.unique(raw[:, 0].astype(int))
    if not len(units[partition_id::num_partitions]):
        raise InvalidParameterError(
            f"Partition {partition_id} of {num_partitions} holds no held-back C-MAPSS test "
            f"engine to evaluate on: test_FD002 in {data_dir} has {len(units)} engines; "
            f"evaluation needs num-partitions at most {len(units)}.")
    rul = _read_cached(str(base / "RUL_FD002.txt.gz")).reshape(-1)
    if len(rul) != len(units):
        raise InvalidParameterError(
            f"RUL_FD002 in {data_dir} holds {len(rul)} values for the {len(units)} engines of "
            "test_FD002; it must hold one per engine.")
    _check_finite(rul.reshape(-1, 1), ["RUL"], f"RUL_FD002 in {data_dir}")
    return _cmapss_rows(raw, partition_id, num_partitions,
                        dict(zip(units.tolist(), rul.tolist(), strict=True)),
                        source=f"test_FD002 in {data_dir}")


def _check_finite(raw: np.ndarray, names: Sequence[str], source: str) -> None:
    """Refuse rows of ``raw`` (columns ``names``) holding a NaN or an infinite value, naming
    the columns, how many rows, and ``source``: one such reading spreads through a window
    (30 feature rows) and local training sends an update that is all NaN.

    >>> _check_finite(np.array([[1.0, np.nan], [2.0, 3.0]]), ["a", "b"], "x")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: x: 1 of 2 rows hold a non-finite reading (NaN or Inf) in b; this device refuses to train or evaluate on them (clean or drop those rows first).
    """  # noqa: E501
    bad = ~np.isfinite(raw)
    if not bad.any():
        return
    cols = [str(names[j]) for j in np.flatnonzero(bad.any(axis=0))]
    raise InvalidParameterError(
        f"{source}: {int(bad.any(axis=1).sum())} of {len(raw)} rows hold a non-finite reading "
        f"(NaN or Inf) in {', '.join(cols)}; this device refuses to train or evaluate on them "
        "(clean or drop those rows first).", field="data", value=cols)


def _pump_rows(X: np.ndarray) -> DeviceData:
    from edgewise.federated.data import PUMP_CHANNELS

    _check_finite(X, PUMP_CHANNELS, "this pump's readings")
    n = len(X)
    return DeviceData("ae", [(X.astype(np.float64), np.zeros(n, dtype=np.int64),
                              np.arange(n))], [])


def _cmapss_rows(raw: np.ndarray, partition_id: int, num_partitions: int,
                 rul_at_end: dict[int, float] | None = None, source: str = "C-MAPSS"
                 ) -> DeviceData:
    """Engines ``partition_id::num_partitions`` of ``raw`` with their RUL targets: a
    run-to-failure engine's cycles to its last (``rul_at_end`` None), a test engine's
    cycles to its last plus its true RUL there; capped at :data:`RUL_CAP`. A non-finite
    value in a column these engines use raises
    :class:`~edgewise.errors.InvalidParameterError` naming ``source`` and the column."""
    from edgewise.federated.data import RUL_CAP, SENSORS, _engine_rows

    ids = raw[:, 0].astype(int)
    held = np.unique(ids)[partition_id::num_partitions]
    mine = raw[np.isin(ids, held)]
    used = [0, 1, 2, *(4 + s for s in SENSORS)]
    _check_finite(mine[:, used], ["unit", "cycle", "op_setting_1", *(f"s{s}" for s in SENSORS)],
                  f"{source}, engine{'s' if len(held) > 1 else ''} "
                  f"{', '.join(str(u) for u in held[:5])}"
                  f"{', …' if len(held) > 5 else ''}")
    unit, cycles, cond, sensors = _engine_rows(mine)
    parts, ys = [], []
    for u in held:
        m = unit == u
        cyc = cycles[m]
        left = 0.0 if rul_at_end is None else rul_at_end[int(u)]
        parts.append((sensors[m], cond[m], cyc))
        ys.append(np.minimum(cyc.max() - cyc + left, RUL_CAP).astype(np.float32))
    return DeviceData("rul", parts, ys, n_conditions=6)


@lru_cache(maxsize=4)
def _read_cached(path: str) -> np.ndarray:
    from edgewise.federated.data import _read

    return _read(Path(path))


def poison(attack: str, new: list[np.ndarray], old: list[np.ndarray]) -> list[np.ndarray]:
    """What a misbehaving device sends instead of its honest parameters ``new``.

    >>> old = [np.zeros(2)]; new = [np.ones(2)]
    >>> poison("signflip", new, old)[0].tolist()
    [-10.0, -10.0]
    """
    if attack == "signflip":  # sign-flipped update scaled by 10
        return [o - 10.0 * (n - o) for n, o in zip(new, old, strict=True)]
    if attack == "nan":
        return [np.full_like(n, np.nan) for n in new]
    if attack == "inf":
        return [np.full_like(n, np.inf) for n in new]
    if attack == "shape":
        return [np.zeros(n.size + 1, dtype=n.dtype) for n in new]
    if attack == "scale100":
        return [o + 100.0 * (n - o) for n, o in zip(new, old, strict=True)]
    return new


def _normaliser(config: Any, data: DeviceData) -> ConditionNormaliser:
    """The fleet normaliser of the server's config (``norm-mean``, ``norm-std``: conditions
    x channels values each), checked against this device's data: a missing key, a value
    that is no number, a width other than the device's, a non-finite mean or a std that is
    not finite and > 0 raises :class:`~edgewise.errors.InvalidParameterError` naming the
    key, what it got and what it should be (a KeyError or a numpy broadcast error before).

    >>> d = device_data("pump", "", 0, 3)
    >>> _normaliser({"norm-mean": [0.0] * 6, "norm-std": [1.0] * 6}, d).mean.shape
    (1, 6)
    >>> _normaliser({"norm-mean": [0.0] * 5, "norm-std": [1.0] * 5}, d)
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The server's 'norm-mean' holds 5 values; this device's data needs 6 (1 operating condition(s) x 6 channels). Refusing to normalise with it.
    """  # noqa: E501
    c = data.n_conditions
    width = int(data.raw_train[0][0].shape[1])
    out = []
    for key in ("norm-mean", "norm-std"):
        if key not in config:
            raise InvalidParameterError(
                f"The server's config lacks {key!r}, the fleet normaliser ({c} operating "
                f"condition(s) x {width} channels); this device cannot train or evaluate "
                "without it.", field=key, value=None)
        try:
            values = np.asarray(config[key], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidParameterError(
                f"The server's {key!r} is not a list of numbers: {config[key]!r}.",
                field=key, value=config[key]) from None
        if values.size != c * width:
            raise InvalidParameterError(
                f"The server's {key!r} holds {values.size} values; this device's data needs "
                f"{c * width} ({c} operating condition(s) x {width} channels). Refusing to "
                "normalise with it.", field=key, value=values.size)
        ok = np.isfinite(values) & (values > 0 if key == "norm-std" else True)
        if not ok.all():
            raise InvalidParameterError(
                f"The server's {key!r} holds {values[~ok][:3].tolist()}; every value must be "
                f"finite{' and > 0' if key == 'norm-std' else ''}.", field=key,
                value=values[~ok][:3].tolist())
        out.append(values.reshape(c, width))
    return ConditionNormaliser(out[0], out[1])


def _load_global(model: Any, state: Any) -> None:
    """Load the server's ``state`` into this device's ``model``; parameters of another name
    or shape (a model for another number of inputs) raise
    :class:`~edgewise.errors.InvalidParameterError` naming the first, both shapes (torch's
    RuntimeError before)."""
    mine = model.state_dict()
    if list(mine) != list(state):
        raise InvalidParameterError(
            f"The server's model has parameters {list(state)}; this device's model has "
            f"{list(mine)}. Refusing to load it.", field="arrays", value=list(state))
    for key, value in state.items():
        if tuple(value.shape) != tuple(mine[key].shape):
            raise InvalidParameterError(
                f"The server's model parameter {key!r} has shape {tuple(value.shape)}; this "
                f"device's data ({_n_inputs(mine)} model inputs) needs "
                f"{tuple(mine[key].shape)}: the global model was built for another "
                "number of inputs. Refusing to load it.", field="arrays",
                value=(key, tuple(value.shape)))
    model.load_state_dict(state)


def _n_inputs(state: Any) -> int | str:
    """Columns of the first 2-D weight of ``state`` (the model's inputs), ``"?"`` if none."""
    for key, value in state.items():
        if key.endswith("weight") and len(value.shape) == 2:
            return int(value.shape[1])
    return "?"


def _refusal(msg: Message, exc: Exception) -> Message:
    """The error reply to ``msg`` for a refused request: its type and message, no trace."""
    from flwr.app import Error
    from flwr.common.constant import ErrorCode

    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                         reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)


def _torch_threads(context: Context) -> None:
    """Set torch's threads to the run config's ``threads`` before this device trains.

    torch (and :mod:`edgewise.federated.model`) is imported where a model is used: a
    device answering the normaliser round (a ClientApp process of its own, in Flower's
    deployment engine) never loads it."""
    import torch

    torch.set_num_threads(int(context.run_config.get("threads", 1)))  # small models


def _data(context: Context) -> DeviceData:
    rc, nc = context.run_config, context.node_config
    return device_data(
        str(rc.get("dataset", "pump")), str(rc.get("data-dir", "")),
        int(nc.get("partition-id", 0)), int(nc.get("num-partitions", 1)),
        int(rc.get("seed", 0)),
    )


def dp_sgd_budget(run_config: Any, n_records: int, max_epsilon: float = 0.0,
                  prior: Sequence[Mechanism] = (), *, rounds_done: int = 0,
                  run_prior_rdp: Sequence[float] | None = None,
                  stats: Sequence[Mechanism] = ()) -> tuple[float, float]:
    """This device's record-level DP-SGD for the whole run: (noise multiplier, ε).

    ``stats`` is the run's DP release of the normaliser statistics (one Gaussian step,
    :func:`~edgewise.federated.stats_privacy.stats_mechanism`), spent before the first
    round: the noise is calibrated so that it and every round of DP-SGD, composed, stay
    within the budget, and the ε returned is theirs together.

    The run config sets the budget, ``dp-sgd-epsilon`` per device over all
    ``num-server-rounds`` × ``local-epochs`` (0: no DP-SGD), and ``dp-delta``; each device
    calibrates its own noise from its own record count and ``batch-size`` (at the sampling
    rate Opacus really uses, :func:`~edgewise.federated.privacy.opacus_sampling`), since a
    smaller device needs more noise for the same ε. ``dp-sgd-noise`` > 0 fixes the noise
    multiplier instead (ε is then what it costs; it must be finite and at least
    :data:`~edgewise.federated.privacy.MIN_NOISE`, :func:`noise_setting`: a NaN one trained
    without DP-SGD). The budget and the limit must be finite numbers >= 0; anything else
    raises :class:`~edgewise.errors.InvalidParameterError`. ``max_epsilon`` > 0 is the device's own
    limit (its node config ``max-dp-epsilon``), checked at δ ≤ :data:`DEVICE_DELTA` after
    the ``prior`` history it spent before (its privacy ledger): the device never plans to
    spend more, whatever the server asks, and runs DP-SGD at that limit when the server asks
    for none. (What it really spends is checked round by round against its ledger in
    :func:`train`, so a server that declares fewer rounds than it runs gains nothing.)

    A resumed run (the server's train config ``dp-sgd-rounds-done`` > 0) plans only the
    rounds left, ``num-server-rounds - rounds_done``, and, given ``run_prior_rdp`` (config
    ``dp-sgd-prior-rdp``: the server's worst-case RDP curve of the run's earlier rounds,
    from its run ledger), calibrates them so that the whole run stays within the budget:
    a device that calibrated afresh for every round of a longer run would overspend it
    (ε = 8 for round 1, then resumed to 2 rounds, reported 8.97).

    >>> z, eps = dp_sgd_budget({"dp-sgd-epsilon": 8.0, "num-server-rounds": 3}, 600)
    >>> round(eps, 1) <= 8.0 and z > 0
    True
    >>> dp_sgd_budget({}, 600)
    (0.0, 0.0)
    >>> 3.9 < dp_sgd_budget({}, 600, max_epsilon=4.0)[1] <= 4.0
    True
    >>> rc = {"dp-sgd-epsilon": 8.0, "num-server-rounds": 3}
    >>> z_stats, e = dp_sgd_budget(rc, 600, stats=[(4.97, 1.0, 1)])
    >>> z_stats > z and 7.99 < e <= 8.0
    True
    """
    from edgewise.federated.privacy import (
        composed_epsilon,
        dp_sgd_epsilon,
        dp_sgd_history,
        rdp_to_epsilon,
        worst_case_rdp,
    )

    batch = int(run_config.get("batch-size", 32))
    local = int(run_config.get("local-epochs", 1))
    planned = int(run_config.get("num-server-rounds", 1))
    epochs = local * max(planned - int(rounds_done), 1)  # what this device has left to run
    delta = float(run_config.get("dp-delta", 1e-5))
    # a NaN passed every "<= 0" / "> max_epsilon" test below: the device trained without
    # DP-SGD (noise NaN) or ignored its own limit (max_epsilon NaN)
    z = noise_setting(run_config, "dp-sgd-noise")
    target = _finite_at_least_0(run_config.get("dp-sgd-epsilon", 0.0), "dp-sgd-epsilon",
                                "the run config's per-device DP-SGD budget")
    max_epsilon = _finite_at_least_0(max_epsilon, "max-dp-epsilon",
                                     "this device's own record-level epsilon limit")
    if z <= 0:
        # the noise of the run's plan, every round of it; a resumed run keeps it when the
        # rounds left at that noise still fit in the budget after the earlier rounds (a run
        # stopped and resumed as planned), and calibrates them after those rounds otherwise
        stats = tuple((float(a), float(b), int(c)) for a, b, c in stats)
        z = _calibrated_noise(target, batch, n_records, local * planned, delta, stats) \
            if target > 0 else 0.0
        if z > 0 and run_prior_rdp is not None and any(run_prior_rdp):
            before = tuple(float(x) for x in run_prior_rdp)
            rest = worst_case_rdp([[[dp_sgd_history(z, batch, n_records, epochs)]]])
            if rdp_to_epsilon([a + b for a, b in zip(before, rest, strict=True)],
                              delta) > target:
                z = max(z, _calibrated_noise(target, batch, n_records, epochs, delta, (),
                                             before))
    if max_epsilon > 0:
        limit_delta = min(delta, DEVICE_DELTA)
        prior = tuple(prior)
        if z <= 0 or not composed_epsilon(
                [*prior, dp_sgd_history(z, batch, n_records, epochs)], limit_delta
        ) <= max_epsilon:
            z = max(z, _calibrated_noise(max_epsilon, batch, n_records, epochs, limit_delta,
                                         prior))
    if z <= 0:
        return 0.0, 0.0
    if stats:
        return z, composed_epsilon([*stats, dp_sgd_history(z, batch, n_records, epochs)],
                                   delta)
    return z, dp_sgd_epsilon(z, batch, n_records, epochs, delta)


def noise_setting(config: Any, key: str) -> float:
    """The noise multiplier ``key`` (``dp-sgd-noise``, ``dp-stats-noise``) of the server's
    config: 0 when absent or 0 (not set), else a finite number >= :data:`MIN_NOISE`.
    Anything else raises :class:`~edgewise.errors.InvalidParameterError` naming it, which
    the device answers with an error reply: a NaN passed every ``<= 0`` test, so the device
    trained without DP-SGD (or wrote a NaN into its ledger, which then composed to ε 0 and
    let every later round past ``--max-epsilon``), and a noise below the floor has an ε the
    accountant cannot compute (1e-200 divides by zero).

    >>> noise_setting({"dp-sgd-noise": 1.1}, "dp-sgd-noise"), noise_setting({}, "dp-sgd-noise")
    (1.1, 0.0)
    >>> noise_setting({"dp-sgd-noise": float("nan")}, "dp-sgd-noise")
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The server's 'dp-sgd-noise' is nan; a noise multiplier must be 0 (not set) or a finite number >= 0.01. Refusing to train or send anything on it.
    """  # noqa: E501
    raw = config.get(key, 0.0)
    try:
        z = float(raw)
    except (TypeError, ValueError):
        z = math.nan
    if z == 0:
        return 0.0
    if not MIN_NOISE <= z < math.inf:
        raise InvalidParameterError(
            f"The server's {key!r} is {raw!r}; a noise multiplier must be 0 (not set) or a "
            f"finite number >= {MIN_NOISE:g}. Refusing to train or send anything on it.")
    return z


def _finite_at_least_0(raw: Any, key: str, what: str) -> float:
    """``raw`` as a finite number >= 0, else :class:`~edgewise.errors.InvalidParameterError`
    naming ``key`` (``what`` it is)."""
    try:
        x = float(raw)
    except (TypeError, ValueError):
        x = math.nan
    if not 0 <= x < math.inf:
        raise InvalidParameterError(
            f"{key!r} ({what}) is {raw!r}; it must be a finite number >= 0 (0: none).")
    return x


@lru_cache(maxsize=64)
def _calibrated_noise(target: float, batch: int, n_records: int, epochs: int,
                      delta: float, prior: tuple[Mechanism, ...],
                      prior_rdp: tuple[float, ...] | None = None) -> float:
    from edgewise.federated.privacy import dp_sgd_noise_for_epsilon

    if prior_rdp is not None and not any(prior_rdp):
        prior_rdp = None
    return dp_sgd_noise_for_epsilon(target, batch, n_records, epochs, delta, prior=prior,
                                    prior_rdp=prior_rdp)


def _run_prior(config: Any) -> tuple[int, list[float] | None]:
    """A resumed run's earlier rounds, as the server's train config states them: how many
    (``dp-sgd-rounds-done``) and their worst-case RDP curve (``dp-sgd-prior-rdp`` at
    ``dp-sgd-rdp-orders``, which must be this device's orders)."""
    from edgewise.federated.privacy import rdp_orders

    done = int(config.get("dp-sgd-rounds-done", 0))
    curve = config.get("dp-sgd-prior-rdp")
    if curve is None:
        return done, None
    orders = [float(x) for x in config.get("dp-sgd-rdp-orders", [])]
    if orders != rdp_orders() or len(list(curve)) != len(orders):
        raise InvalidParameterError(
            "The server's record of the run's earlier DP-SGD (dp-sgd-prior-rdp) is taken at "
            "other Renyi orders than this device's accountant; refusing to calibrate the "
            "rest of the budget against it.")
    values = [float(x) for x in curve]
    if any(math.isnan(x) or x < 0 for x in values):  # NaN passed the "> budget" test
        raise InvalidParameterError(
            "The server's record of the run's earlier DP-SGD (dp-sgd-prior-rdp) holds "
            f"{[x for x in values if math.isnan(x) or x < 0][:3]}; every value must be a "
            "number >= 0 (inf: unbounded). Refusing to calibrate the rest of the budget "
            "against it.")
    return done, values


def _max_epsilon(context: Context) -> float:
    """This device's own limit, node config ``max-dp-epsilon`` (0: none): a finite number
    >= 0 (a NaN passed every ``> limit`` test: no limit at all)."""
    return _finite_at_least_0(context.node_config.get("max-dp-epsilon", 0.0),
                              "max-dp-epsilon", "this device's own record-level epsilon limit")


def _ledger(context: Context) -> PrivacyLedger:
    """This device's privacy ledger: the node config's ``privacy-ledger`` file, else the
    run's ``Context.state``."""
    path = str(context.node_config.get("privacy-ledger", ""))
    return PrivacyLedger(path) if path else PrivacyLedger(state=context.state)


def _fit(data: DeviceData, norm: ConditionNormaliser, state: dict[str, Any], context: Context,
         server_round: int, run_prior: tuple[int, list[float] | None] = (0, None),
         stats: Sequence[Mechanism] = ()
         ) -> tuple[list[str], list[np.ndarray], int, float, tuple[float, float, float, int]]:
    """Train the global ``state`` on this device; what it sends (names, arrays, weight, loss)
    and its DP-SGD (ε, noise multiplier, sampling rate, steps); zeros without DP-SGD.

    The round is first recorded in the device's privacy ledger, which refuses it
    (:class:`~edgewise.federated.ledger.PrivacyBudgetError`) when it would take the device
    past its own ``max-dp-epsilon``. The ε reported is what the device has really spent in
    this run so far (its ledger's rounds of this run, composed at the run's δ), not the ε
    planned for every declared round: a run that ends early reports the rounds it ran.
    ``run_prior`` is a resumed run's earlier rounds (:func:`_run_prior`); ``stats`` the
    run's DP release of the normaliser statistics (:func:`_stats_spent`), which the plan
    makes room for in the budget.
    """
    from edgewise.federated.model import build_model, train_local
    from edgewise.federated.privacy import dp_sgd_history

    X, y = data.features(norm)
    model = build_model(data.kind, X.shape[1])
    _load_global(model, state)
    old = [np.asarray(v.numpy()) for v in state.values()]
    rc = context.run_config
    batch, epochs = int(rc.get("batch-size", 32)), int(rc.get("local-epochs", 1))
    max_eps = _max_epsilon(context)
    ledger, run = _ledger(context), str(context.run_id)
    if max_eps > 0:  # an entry no accountant can count: spent unknown, so past any limit
        ledger.check_countable(max_epsilon=max_eps)
    # the device's own limit counts what it spent in other runs and this run's statistics
    prior = tuple(ledger.history(exclude_run=run) + ledger.history(run=run, kind="stats")) \
        if max_eps > 0 else ()
    z, eps = dp_sgd_budget(rc, len(X), max_eps, prior, rounds_done=run_prior[0],
                           run_prior_rdp=run_prior[1], stats=stats)
    q, steps = 0.0, 0
    if z > 0:
        delta = float(rc.get("dp-delta", 1e-5))
        _, q, steps = dp_sgd_history(z, batch, len(X), epochs)
        ledger.spend(LedgerEntry(run=run, server_round=server_round, noise_multiplier=z,
                                 sampling_rate=q, steps=steps, records=len(X),
                                 batch_size=batch),
                     max_epsilon=max_eps, delta=min(delta, DEVICE_DELTA))
        eps = ledger.epsilon(delta, run=run)
    loss = train_local(
        model, X, y, epochs=epochs, batch_size=batch, lr=float(rc.get("lr", 0.003)),
        seed=server_round * 1000 + int(context.node_config.get("partition-id", 0)),
        dp_noise_multiplier=z, dp_max_grad_norm=float(rc.get("dp-sgd-clip", 1.0)),
    )
    attack = str(context.node_config.get("attack", ""))
    new = [v.detach().numpy().copy() for v in model.state_dict().values()]
    bad = sum(int((~np.isfinite(a)).sum()) for a in new)
    if bad:  # the honest update: an attack (below) still sends what it means to
        total = sum(a.size for a in new)
        raise InvalidParameterError(
            f"Local training diverged: {bad} of {total} parameters are non-finite (NaN or "
            f"Inf) after round {server_round}, train-loss {float(loss)!r}, at lr "
            f"{rc.get('lr', 0.003)!r}; refusing to send a non-finite update (a smaller "
            "'lr' or 'dp-sgd-clip' may help).", field="lr", value=rc.get("lr", 0.003))
    n = 10**9 if attack == "weight" else len(X)
    return list(state), poison(attack, new, old), n, float(loss), (eps, z, q, steps)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Answer a ``train`` message: share normaliser statistics or train the model locally.

    A request this device refuses (its own data unusable, the server's normaliser or model
    unusable, its privacy limit reached, local training diverged) is answered with an error
    reply saying why (:func:`_refusal`); in a SecAgg+ round it raises, and the round goes
    on without the device, as after a dropout."""
    if LEGACY_FIT_CONFIG in msg.content.config_records:  # a SecAgg+ round (legacy messages)
        _torch_threads(context)
        return _secagg_fit(msg, context, _data(context))
    config = msg.content["config"]
    try:
        data = _data(context)
        if config.get("phase", "fit") == "stats":
            return _stats_reply(msg, context, data, config)
        _torch_threads(context)
        keys, sent, n, loss, (eps, z, q, steps) = _fit(data, _normaliser(config, data),
                                             msg.content["arrays"].to_torch_state_dict(),
                                             context, int(config.get("server-round", 0)),
                                             _run_prior(config), _stats_spent(config))
    except (PrivacyBudgetError, InvalidParameterError) as exc:  # refused: say why, no trace
        return _refusal(msg, exc)
    arrays = ArrayRecord({k: _arr(v) for k, v in zip(keys, sent, strict=True)})
    metrics = MetricRecord({"num-examples": n, "unit-weight": 1, "train-loss": loss,
                            "dp-sgd-epsilon": eps, "dp-sgd-noise": z, "dp-sgd-rate": q,
                            "dp-sgd-steps": steps})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)


def _stats_spent(config: Any) -> tuple[Mechanism, ...]:
    """The run's DP release of the normaliser statistics as the server's train config
    states it (``dp-stats-noise`` z > 0: one Gaussian step ``(z, 1.0, 1)``); none without."""
    from edgewise.federated.stats_privacy import stats_mechanism

    z = noise_setting(config, "dp-stats-noise")
    return (stats_mechanism(z),) if z > 0 else ()


def _stats_reply(msg: Message, context: Context, data: DeviceData, config: Any) -> Message:
    """The normaliser statistics of this device's training rows: in the clear, or, when the
    server asks for them through DP (``dp-stats-noise`` > 0 with ``dp-stats-lower`` and
    ``dp-stats-upper``), clipped and noised after the release is recorded in the ledger."""
    z = noise_setting(config, "dp-stats-noise")  # a NaN went into the ledger (ε 0 after)
    metrics: dict[str, Any] = {"num-examples": 1}
    if z <= 0:
        count, total, squares = data.stats()
    else:
        from edgewise.federated.privacy import composed_epsilon
        from edgewise.federated.stats_privacy import StatsBounds, noisy_stats, stats_mechanism

        c = data.n_conditions
        try:
            bounds = StatsBounds(
                np.asarray(config["dp-stats-lower"], dtype=np.float64).reshape(c, -1),
                np.asarray(config["dp-stats-upper"], dtype=np.float64).reshape(c, -1))
        except (KeyError, ValueError) as exc:
            raise InvalidParameterError(
                f"The server asked for the normaliser statistics through DP "
                f"(dp-stats-noise={z:g}) without usable sensor bounds for {c} condition(s) "
                f"(dp-stats-lower, dp-stats-upper): {exc}") from None
        chans = np.concatenate([r[0] for r in data.raw_train])
        cond = np.concatenate([r[1] for r in data.raw_train])
        bounds.check_width(chans.shape[1])
        rc = context.run_config
        delta = float(rc.get("dp-delta", 1e-5))
        max_eps = _max_epsilon(context)
        ledger = _ledger(context)
        mech = stats_mechanism(z)
        # recorded before anything leaves the device; refused past the device's own limit
        ledger.spend(LedgerEntry(run=str(context.run_id), server_round=0, noise_multiplier=z,
                                 sampling_rate=1.0, steps=1, records=len(chans), batch_size=0,
                                 kind="stats"),
                     max_epsilon=max_eps, delta=min(delta, DEVICE_DELTA))
        count, total, squares = noisy_stats(chans, cond, bounds, z)
        metrics.update({"dp-stats-noise": z,
                        "dp-stats-epsilon": composed_epsilon([mech], delta)})
    arrays = ArrayRecord({"count": _arr(count), "sum": _arr(total), "sumsq": _arr(squares)})
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics)}),
                   reply_to=msg)


def _secagg_fit(msg: Message, context: Context, data: DeviceData) -> Message:
    """Train inside a SecAgg+ round: Flower's legacy fit messages, which ``secaggplus_mod``
    masks before anything leaves the device (see :mod:`edgewise.federated.secagg`)."""
    import json

    import torch
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat

    from edgewise.federated.model import build_model

    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    cfg = fitins.config
    # raised, not answered (the round goes on without this device), but by name: a raw
    # KeyError: 'normaliser' in the device's log said nothing of whose config was wrong
    try:
        norm_stats = json.loads(str(cfg["normaliser"]))
        norm = ConditionNormaliser(np.asarray(norm_stats["mean"], dtype=np.float64),
                                   np.asarray(norm_stats["std"], dtype=np.float64))
        template = build_model(data.kind, int(cfg["n-features"])).state_dict()
        arrays = parameters_to_ndarrays(fitins.parameters)
        if len(arrays) != len(template) or any(
                a.shape != tuple(t.shape) for a, t in zip(arrays, template.values(),
                                                          strict=False)):
            raise ValueError(
                f"the model has {len(arrays)} array(s) of shapes "
                f"{[a.shape for a in arrays][:4]}, the {data.kind} model of "
                f"{cfg['n-features']} features {len(template)} of shapes "
                f"{[tuple(t.shape) for t in template.values()][:4]}")
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        what = f"{exc.args[0]!r} missing" if isinstance(exc, KeyError) else str(exc)
        raise InvalidParameterError(
            f"The server's SecAgg+ fit instruction (round {cfg.get('server-round', '?')}) is "
            f"unusable: {what}. It needs 'normaliser' (JSON with 'mean' and 'std'), "
            "'n-features' and the global model's arrays; this device sits the round out.",
            field="config") from None
    state = {k: torch.as_tensor(a) for k, a in zip(template, arrays, strict=True)}
    _, sent, n, loss, (eps, z, q, steps) = _fit(data, norm, state, context,
                                                int(cfg.get("server-round", 0)),
                                                stats=_stats_spent(cfg))
    # The server sees only the sum, so it cannot refuse this update on its own: a
    # non-finite one would become finite garbage in SecAgg+'s quantisation, and a count
    # above max_weight would overflow its weighting. Refuse the first (the round goes on
    # without this device, as after a dropout) and clip the second.
    if not all(np.isfinite(a).all() for a in sent):
        raise ValueError("refusing to send a non-finite update (NaN or Inf after local "
                         "training) under SecAgg+, where the server cannot screen it")
    max_weight = float(cfg.get("max-weight", 0.0))
    if max_weight >= 1 and n > max_weight:
        n = int(max_weight)
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(sent), n,
                 {"train-loss": loss, "dp-sgd-epsilon": eps, "dp-sgd-noise": z,
                  "dp-sgd-rate": q, "dp-sgd-steps": steps})
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Loss of the global model on rows this device never trains on (:func:`held_data`):
    a pump's held-back normal readings, a C-MAPSS device's share of the test engines."""
    import torch

    from edgewise.federated.model import RUL_SCALE, build_model

    rc, nc = context.run_config, context.node_config
    _torch_threads(context)
    try:
        data = held_data(str(rc.get("dataset", "pump")), str(rc.get("data-dir", "")),
                         int(nc.get("partition-id", 0)), int(nc.get("num-partitions", 1)),
                         int(rc.get("seed", 0)))
        X, y = data.features(_normaliser(msg.content["config"], data))
        model = build_model(data.kind, X.shape[1])
        _load_global(model, msg.content["arrays"].to_torch_state_dict())
    except InvalidParameterError as exc:  # say why, count in no average
        return _refusal(msg, exc)
    with torch.no_grad():
        out = model(torch.as_tensor(X)).numpy()
    target = X if y is None else y.reshape(-1, 1) / RUL_SCALE
    loss = float(np.mean((out - target) ** 2))
    # unit-weight: under device-level DP the server averages with equal weights, evaluation too
    metrics = MetricRecord({"num-examples": len(X), "unit-weight": 1, "eval-loss": loss})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


def _arr(a: np.ndarray) -> Any:
    from flwr.app import Array

    return Array(np.ascontiguousarray(a))
