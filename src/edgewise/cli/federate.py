"""``edgewise federate server|client|demo|keygen`` and ``edgewise bench federated``."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgewise._private import restrict_umask
from edgewise.cli._app import UTF8_TEXT, DataDir, Json, NonBlankPath, app, bench_app, fail

if TYPE_CHECKING:
    from edgewise.federated.deploy import LocalFleet, SupernodeKey, TlsFiles

federate_app = typer.Typer(help="Federated learning across devices (Flower).",
                           no_args_is_help=True)
app.add_typer(federate_app, name="federate")

Strategy = Annotated[str, typer.Option(help="fedavg, trimmed, krum or bulyan.")]
SecAgg = Annotated[bool, typer.Option(
    "--secagg", help="Secure aggregation (Flower SecAgg+): the server sees only the sum of "
                     "the updates. Needs --strategy fedavg (no robust rule).")]
DpEpsilon = Annotated[float, typer.Option(
    "--dp-epsilon", help="Record-level DP budget ε per device over the whole run (δ=1e-5): "
                         "every device runs DP-SGD and calibrates its own noise to it. "
                         "0 turns it off.")]
StatsBoundsFile = Annotated[Path | None, typer.Option(
    "--stats-bounds", show_default=False,
    help="JSON file of public per-sensor bounds ({\"lower\": [...], \"upper\": [...]}, "
         "one value per sensor or one list per operating condition; optional "
         "\"channels\"): each device clips its readings to them and sends its normaliser "
         "statistics with Gaussian noise, paid from --dp-epsilon (--stats-share of it), so "
         "the reported ε covers them too. Without it they are sent in the clear. Use the "
         "sensors' operating envelope, never ranges read off the devices' data.")]
StatsShare = Annotated[float, typer.Option(
    "--stats-share", help="Share of --dp-epsilon the normaliser statistics' release costs "
                          "alone (with --stats-bounds); DP-SGD gets the rest, composed.")]
TlsCert = Annotated[Path | None, typer.Option(
    "--tls-cert", show_default=False,
    help="PEM certificate the devices' gate serves: TLS only (needs --tls-key). It must "
         "name the address devices connect to, and 127.0.0.1 for --host 0.0.0.0 (this "
         "machine checks the gate there).")]
TlsKey = Annotated[Path | None, typer.Option(
    "--tls-key", show_default=False, help="Unencrypted PEM private key of --tls-cert.")]
TlsCa = Annotated[Path | None, typer.Option(
    "--tls-ca", show_default=False,
    help="PEM certificate of the CA that signed --tls-cert (default: --tls-cert itself, "
         "when self-signed); devices trust it with `federate client --tls-ca`.")]
SupernodeKeys = Annotated[Path | None, typer.Option(
    "--supernode-keys", show_default=False,
    help="The public keys of the devices allowed to join: a file of OpenSSH public key "
         "lines, or a folder of NAME.pub files (`edgewise federate keygen` makes a pair per "
         "device). Turns on Flower's SuperNode authentication: a SuperNode with any other "
         "key, or none, is refused. Needs --tls-cert and --tls-key.")]
RolloutTo = Annotated[str, typer.Option(
    "--rollout-to", help="Target of the signed release of the global model: group:NAME or "
                         "device:ID (default group:federated, which no device is in).")]


def _check_data_dir(data_dir: Path) -> None:
    """Refuse a --data-dir that exists but is not a folder, before anything starts."""
    if data_dir.exists() and not data_dir.is_dir():
        raise fail(f"--data-dir {data_dir} is a file, not a folder; pass a folder (it is "
                   "created if missing).")


def _check_tls(cert: Path | None, key: Path | None, ca: Path | None,
               host: str) -> TlsFiles | None:
    """The SuperLink's TLS files, checked (:func:`~edgewise.federated.deploy.check_tls`);
    without them, a warning when the SuperLink is reachable from other machines."""
    from edgewise.config import is_loopback
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.deploy import check_tls

    try:
        tls = check_tls(cert, key, ca, host=host)
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None
    if tls is None and not is_loopback(host):
        typer.echo(f"warning: the SuperLink listens on {host} without TLS: model updates, "
                   "metrics and normaliser statistics cross the network unencrypted; pass "
                   "--tls-cert and --tls-key (and --tls-ca) outside a trusted network.",
                   err=True)
    return tls


def _check_supernode_keys(keys_path: Path | None, tls: TlsFiles | None, host: str, port: int,
                          devices: int, devices_option: str) -> list[SupernodeKey] | None:
    """The public keys of ``--supernode-keys``, read and checked before anything starts
    (:func:`~edgewise.federated.deploy.load_supernode_keys`); refused without TLS, or with
    fewer keys than the devices the run waits for. Without them, a warning when a TLS gate
    is reachable from other machines: any SuperNode there may join (without TLS the
    warning of unencrypted traffic comes first, and keys need TLS)."""
    from edgewise.config import is_loopback
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.deploy import load_supernode_keys

    if keys_path is None:
        if tls is not None and not is_loopback(host):
            typer.echo(f"warning: any program that reaches {host}:{port} can join as a "
                       "device and take part in the training rounds (--strategy only limits "
                       "what its updates do); pass --supernode-keys with the devices' public "
                       "keys (`edgewise federate keygen`) to admit only them.", err=True)
        return None
    try:
        keys = load_supernode_keys(keys_path)
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None
    if tls is None:
        raise fail(f"--supernode-keys {keys_path} needs --tls-cert and --tls-key: Flower "
                   "authenticates SuperNodes over TLS only (a SuperNode signs a timestamp, "
                   "valid for minutes, which anyone reading unencrypted traffic could "
                   "replay).")
    if len(keys) < devices:
        raise fail(f"--supernode-keys {keys_path} holds {len(keys)} key"
                   f"{'s' if len(keys) != 1 else ''} but the run waits for {devices_option} "
                   f"{devices} devices, so it could never start; add the other devices' "
                   f"public keys, or lower {devices_option}.")
    return keys


def _check_rollout(target: str, data_dir: Path, name: str) -> None:
    """Refuse, before anything starts, a ``--rollout-to`` the registry would refuse at the
    end of the run (:func:`~edgewise.federated.publish.check_target`, the rule
    ``edgewise registry rollout`` applies): a malformed target, an id or name no device can
    have (``group:line a``, ``device:pump-7:x``), a device not registered in
    ``data_dir``, or a group with a device the operator rolled back on the model ``name``
    (its rollback order holds against the group's releases). Found only after training,
    the devices' privacy budget was spent for nothing."""
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.publish import check_target

    kind, _, who = target.partition(":")
    if kind not in ("device", "group") or not who:
        raise fail(f"--rollout-to must be device:<id> or group:<name>. Got {target!r}.")
    try:
        check_target(data_dir, target, name=name)
    except InvalidParameterError as exc:
        raise fail(f"--rollout-to {target}: {exc}") from None


def _last_run(checkpoint: Path) -> str:
    """What the server run that wrote ``checkpoint`` registered, as the launcher left it
    beside it: ``result.json`` (its model, registered) or ``error.json`` (why it registered
    none: a run can fail after its last round, at publishing)."""
    out = checkpoint.parent
    try:
        model = json.loads((out / "result.json").read_text())["model"]
        return (f"that run's model is registered: {model['name']} version "
                f"{model['version']}, release {model['release']} for {model['target']}")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        why = " ".join(str(json.loads((out / "error.json").read_text())["error"]).split())
    except (OSError, ValueError, KeyError, TypeError):
        return ("that run's model is registered unless it failed at the end: see "
                "`edgewise registry list`")
    return f"that run registered no model: {why}"


def _check_secagg(secagg: bool, strategy: str, dp_noise: float = 0.0, *, clients: int = 2,
                  clients_option: str = "--clients") -> None:
    """Refuse ``--secagg`` with one device (SecAgg+ needs at least 2 to hide each update
    among the others), a robust rule or server-side DP, before any process starts."""
    if not secagg:
        return
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.secagg import check_secagg

    if clients < 2:
        raise fail(f"--secagg needs {clients_option} >= 2 (SecAgg+ hides each device's update "
                   f"in the sum of at least two). Got {clients_option} {clients}.")
    try:
        check_secagg(strategy, robust=strategy != "fedavg", dp_noise=dp_noise)
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None


def _check_epsilon(epsilon: float, option: str = "--dp-epsilon") -> None:
    if not 0 <= epsilon < float("inf"):
        raise fail(f"{option} must be a finite number >= 0 (0: no DP-SGD). Got {epsilon}.")


def _check_dp_noise_accountable(dp_noise: float, *, rounds: int, devices: int) -> None:
    """Refuse a ``--dp-noise`` > 0 so small that the privacy accountant gives a device-level
    epsilon of inf over ``rounds`` rounds of ``devices`` devices (every one each round, as
    ``federate server`` samples): the run would report epsilon inf, no guarantee at all.
    The message names the smallest noise multiplier (3 significant digits, rounded up)
    whose epsilon is finite."""
    import math

    import numpy as np

    from edgewise.federated.privacy import ceil_significant, device_level_epsilon

    def finite(z: float) -> bool:
        with np.errstate(over="ignore"):  # a huge RDP curve times the rounds overflows
            return math.isfinite(device_level_epsilon(z, rounds, num_devices=devices,
                                                      sample_size=devices))

    if not 0 < dp_noise < math.inf or finite(dp_noise):
        return
    lo, hi = math.log(dp_noise), 0.0  # epsilon inf at lo; finite at hi (found below)
    while not finite(math.exp(hi)):
        lo, hi = hi, hi + 23.0  # ×1e10 until finite (only for astronomically many rounds)
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if finite(math.exp(mid)) else (mid, hi)
    least = ceil_significant(math.exp(hi))
    while not finite(least):
        least = ceil_significant(least * 1.001)
    raise fail(f"--dp-noise {dp_noise:g} is too small: the privacy accountant gives "
               f"device-level epsilon inf for it over --rounds {rounds} (delta 1e-5), so the "
               f"run would carry no guarantee. Pass 0 (no device-level DP) or a noise "
               f"multiplier >= {least:g}, the smallest with a finite epsilon.")


def _check_at_least(option: str, value: int, least: int, why: str = "") -> None:
    if value < least:
        raise fail(f"{option} must be >= {least}{why}. Got {value}.")


#: The most devices a federated run takes (--clients, --num-partitions): every device, and
#: the server's privacy check before a pump run, simulates the whole pump fleet to take its
#: own pump (10,000 pumps: 7.8 s and 290 MB on one core; 10**11 ran until killed, printing
#: nothing), and C-MAPSS FD002 has 260 engines to share out, so no more devices hold data.
MAX_FLEET = 10_000


def _check_fleet_size(option: str, value: int) -> None:
    """``value`` of ``option`` from 1 to :data:`MAX_FLEET` devices, else one line, exit 2."""
    _check_at_least(option, value, 1)
    if value > MAX_FLEET:
        raise fail(f"{option} must be at most {MAX_FLEET:,} devices (each "
                   "device simulates the whole pump fleet to take its own pump, and C-MAPSS "
                   f"has 260 engines to share out). Got {value}.")


def _check_beta(beta: float) -> None:
    """Trimmed-mean fraction cut per side: in [0, 0.5) (0.5 would cut every update)."""
    if not 0 <= beta < 0.5:
        raise fail(f"--beta must be in [0, 0.5) (the fraction of updates cut from each side; "
                   f"0.5 or more would cut them all). Got {beta}.")


def _check_stats_bounds(path: Path | None, *, dataset: str, epsilon: float,
                        share: float) -> tuple[str, float]:
    """``--stats-bounds`` read and checked against the dataset's sensors, as the run
    config's JSON string, and the noise multiplier of the statistics' release ("" and 0
    without). Refused in one line: no --dp-epsilon to pay from, an unreadable or malformed
    file, bounds for other sensors, a --stats-share outside (0, 1), or a --stats-share other
    than the default without --stats-bounds (it would be ignored)."""
    if path is None:
        from edgewise.federated.stats_privacy import DEFAULT_STATS_SHARE

        if share != DEFAULT_STATS_SHARE:
            raise fail(f"--stats-share {share:g} needs --stats-bounds FILE: it is the share "
                       "of --dp-epsilon the DP normaliser statistics cost, and without bounds "
                       "they are sent in the clear. Give --stats-bounds, or drop --stats-share.")
        return "", 0.0
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.data import PUMP_CHANNELS, SENSORS
    from edgewise.federated.deploy import RUN_DEFAULTS
    from edgewise.federated.stats_privacy import StatsBounds, stats_noise_for_epsilon

    if epsilon <= 0:
        raise fail("--stats-bounds needs --dp-epsilon > 0: the normaliser statistics' noise "
                   "is paid from that per-device budget (--stats-share of it). Got "
                   "--dp-epsilon 0; drop --stats-bounds or set a budget.")
    if not 0 < share < 1:
        raise fail(f"--stats-share must be in (0, 1) (the share of --dp-epsilon the "
                   f"normaliser statistics cost). Got {share}.")
    if dataset == "pump":
        conditions, channels = 1, tuple(PUMP_CHANNELS)
    else:
        conditions, channels = 6, tuple(f"sensor_{i}" for i in SENSORS)
    try:
        bounds = StatsBounds.load(path, conditions)
        bounds.check_width(len(channels), channels)
        z = stats_noise_for_epsilon(share * epsilon, float(RUN_DEFAULTS["dp-delta"]))
    except InvalidParameterError as exc:
        raise fail(f"--stats-bounds {path}: {exc}") from None
    return json.dumps(bounds.to_doc()), z


def _check_dp_sgd_budget(epsilon: float, *, rounds: int, dataset: str, clients: int,
                         option: str = "--dp-epsilon", stats_noise: float = 0.0) -> None:
    """Refuse a record-level budget no device can meet, before any process starts.

    A device calibrates its DP-SGD noise to the budget over ``rounds`` x local epochs at
    Opacus's sampling rate for its record count; no noise multiplier up to
    :data:`~edgewise.federated.privacy.MAX_DP_SGD_NOISE` reaching it means every device
    would fail. The record counts of the simulated pump fleet are known here; for data on
    the devices (C-MAPSS) the costliest case counts: a device holding at most one batch.
    ``stats_noise`` > 0: the normaliser statistics' DP release comes first and counts too.
    """
    if epsilon <= 0:
        return
    from edgewise.federated.data import record_counts
    from edgewise.federated.deploy import RUN_DEFAULTS
    from edgewise.federated.privacy import (
        MAX_DP_SGD_NOISE,
        ceil_significant,
        dp_sgd_epsilon_floor,
        opacus_sampling,
    )

    batch, delta = int(RUN_DEFAULTS["batch-size"]), float(RUN_DEFAULTS["dp-delta"])
    local_epochs = int(RUN_DEFAULTS["local-epochs"])
    counts = record_counts(dataset, clients, int(RUN_DEFAULTS["seed"])) or [batch]
    prior = [(stats_noise, 1.0, 1)] if stats_noise > 0 else []
    floors = {n: dp_sgd_epsilon_floor(batch, n, rounds * local_epochs, delta, prior=prior)
              for n in sorted(set(counts))}
    worst = max(floors, key=lambda n: floors[n])
    if epsilon >= floors[worst]:
        return
    q, per_epoch = opacus_sampling(batch, worst)
    who = (f"a device of {worst} records" if len(counts) > 1 or dataset == "pump"
           else f"a device holding one batch ({batch} records) or fewer")
    raise fail(
        f"{option} {epsilon:g} cannot be met: over {rounds} round(s) x {local_epochs} local "
        f"epoch(s), {who} (batch {batch}, sampling rate {q:.3g}, "
        f"{rounds * local_epochs * per_epoch} steps, delta {delta:g}) would need a noise "
        f"multiplier above {MAX_DP_SGD_NOISE:g}, the most DP-SGD uses"
        + (" after the normaliser statistics' release" if prior else "") + "; the smallest "
        f"budget every device can meet is {option} {ceil_significant(floors[worst])} (or "
        f"{option} 0 for no DP-SGD).")


def _check_strategy(strategy: str, clients: int, **kw: Any) -> None:
    """Refuse an unknown strategy, or a rule that cannot hold for the fleet, before any
    process starts. Too large a ``--num-malicious`` for the fleet is named with the values
    that would hold (``--clients 3 --num-malicious 2`` used to end in Flower's traceback,
    ``beta must be in the range [0, 0.5)``)."""
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.strategies import STRATEGIES, make_strategy

    if strategy not in STRATEGIES:
        raise fail(f"--strategy must be one of {', '.join(STRATEGIES)}. Got {strategy!r}.")

    def refusal(f: int) -> str | None:
        """Why ``strategy`` cannot run with ``f`` malicious of ``clients``; None if it can."""
        try:
            make_strategy(strategy, num_nodes=clients, **{**kw, "num_malicious_nodes": f})
        except (InvalidParameterError, ValueError) as exc:  # ValueError: Flower's own checks
            return str(exc)
        return None

    flwr_log = logging.getLogger("flwr")
    level = flwr_log.level
    flwr_log.setLevel(logging.ERROR)  # Flower's notes on a strategy only checked, not run
    try:
        f = int(kw.get("num_malicious_nodes", 0))
        why = refusal(f)
        if why is None:
            return
        if strategy == "bulyan" and f == 0:  # Bulyan keeping every update is a plain mean
            if "num_malicious_nodes" in kw:
                raise fail("--strategy bulyan with --num-malicious 0 (the default) keeps every "
                           "update and averages them all: a plain mean that one attacker "
                           "moves at will. Use --num-malicious 1 or more (Bulyan then needs "
                           "--clients >= 4f + 3 = 7) or --strategy trimmed.")
            raise fail("--strategy bulyan needs f >= 1 malicious clients to tolerate (with "
                       "f = 0 it is a plain mean that one attacker moves at will), and demo "
                       "runs with f = 0. Use --strategy trimmed here, or `edgewise federate "
                       "server --strategy bulyan --num-malicious 1` with 7 or more clients.")
        # Each rule tolerates fewer malicious clients the fewer clients there are: the most
        # this fleet allows is the largest f below the one given that the rule accepts (and
        # the least the smallest: Bulyan refuses f = 0).
        most = next((g for g in range(f - 1, -1, -1) if refusal(g) is None), None)
        if most is not None:
            least = next(g for g in range(most + 1) if refusal(g) is None)
            allowed = str(most) if least == most else f"{least} to {most}"
            more = "" if strategy == "fedavg" else " (or more clients)"
            raise fail(f"--num-malicious {f} is more than --strategy {strategy} can tolerate "
                       f"with {clients} clients; valid: --num-malicious {allowed}{more}. {why}")
        raise fail(why)
    finally:
        flwr_log.setLevel(level)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class _Stopper:
    """While a fleet runs, SIGTERM, SIGINT and SIGHUP become ``SystemExit(128 + signal)`` so
    that the ``finally`` around it runs and stops its processes. They run in sessions of their
    own (a terminal's Ctrl-C must not hit them half-way), hence would otherwise outlive this
    process: ``timeout 90 edgewise federate demo`` left the SuperLink, the SuperNodes and
    their SuperExecs running. A signal that comes while the fleet is stopping waits for it."""

    def __init__(self) -> None:
        self.stopping = False
        self.signum = 0

    def handle(self, signum: int, _frame: object) -> None:
        if self.signum:
            return
        self.signum = signum
        print(f"error: stopped by {signal.Signals(signum).name}; stopping the SuperLink and "
              "SuperNodes this command started.", file=sys.stderr, flush=True)
        if not self.stopping:
            raise SystemExit(128 + signum)


def _proc_stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first, the start
    time at 19), or ``None`` when the process is gone or this is not Linux."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _descendants() -> dict[int, str]:
    """This process's descendants now, as pid -> start time (Linux ``/proc``; else none)."""
    parent: dict[int, tuple[int, str]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        fields = _proc_stat(d.name)
        if fields is None:
            continue
        parent[int(d.name)] = (int(fields[1]), fields[19])
    found: dict[int, str] = {}
    todo = [os.getpid()]
    while todo:
        me = todo.pop()
        for pid, (ppid, start) in parent.items():
            if ppid == me and pid not in found:
                found[pid] = start
                todo.append(pid)
    return found


def _end_leftovers(procs: dict[int, str], grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, what is left of ``procs`` (a process that re-parented away from
    the fleet's own process groups, such as a SuperExec's ServerApp)."""
    def alive() -> list[int]:
        out = []
        for pid, start in procs.items():
            fields = _proc_stat(pid)
            if fields is None:
                continue
            if fields[19] == start and fields[0] != "Z":  # the same process, not yet reaped
                out.append(pid)
        return out

    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        for pid in alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while alive() and time.monotonic() < deadline:
            time.sleep(0.1)


def _run_fleet(fleet: LocalFleet, run_config: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Start ``fleet``, run once, and stop every process it started, however this ends.

    A run that fails (every device failed in a round, nothing aggregated, …) registers
    nothing: it ends with one ``error:`` line naming the reason and exit status 1.
    """
    from edgewise.federated.server_app import FederatedRunError

    stopper = _Stopper()
    old = {sig: signal.signal(sig, stopper.handle) for sig in _STOP_SIGNALS}
    try:
        try:
            fleet.start()
            return fleet.run(run_config, timeout=timeout)
        except FederatedRunError as exc:
            raise fail(f"federated run failed, no model registered: "
                       f"{' '.join(str(exc).split())} (logs: {fleet.workdir})", code=1) from None
        except (RuntimeError, TimeoutError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise fail(f"federated run failed, no model registered: {first} "
                       f"(logs: {fleet.workdir})", code=1) from None
        finally:
            stopper.stopping = True
            started = _descendants()  # before the fleet stops: then all are still below us
            fleet.stop()
            _end_leftovers(started)
            if stopper.signum:
                raise SystemExit(128 + stopper.signum)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _refusals(rejected: list[dict], shown: int = 5) -> str:
    """The refused updates of a run in one line: how many, then the first ``shown`` as
    ``node N round R (reason)`` (round 0: the normaliser statistics).

    >>> _refusals([{"server_round": 0, "node_id": 7, "reason": "no-dp-stats"},
    ...            {"server_round": 2, "node_id": 9, "reason": "norm"}])
    '2 updates: node 7 round 0 (no-dp-stats), node 9 round 2 (norm)'
    """
    items = [f"node {e.get('node_id')} round {e.get('server_round')} ({e.get('reason')})"
             for e in rejected[:shown]]
    more = f", and {len(rejected) - shown} more (--json lists all)" if len(rejected) > shown else ""
    return f"{len(rejected)} update{'s' if len(rejected) != 1 else ''}: {', '.join(items)}{more}"


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result))
        return
    from edgewise.federated.privacy import ceil_significant as up

    p = result["privacy"]
    # each epsilon rounded up to 3 digits: a privacy loss is never printed below what was
    # spent (.3g printed 10.7 for 10.73)
    eps = ("none (no DP)" if p["epsilon"] is None
           else f"{up(p['epsilon']):.3g} (unit: {p['unit']})")
    if p.get("record_epsilon") and p["unit"] != "record":
        eps += f", record-level {up(p['record_epsilon']):.3g}"
    planned = p.get("rounds_planned")
    if p["epsilon"] is not None and planned and p.get("rounds") != planned:
        eps += f" over the {p['rounds']} of {planned} rounds that spent it"
    if p.get("stats_epsilon") is not None:
        eps += (f", normaliser statistics included (their release alone: "
                f"{up(p['stats_epsilon']):.3g})")
    typer.echo(f"rounds: {result['rounds']}  strategy: {result['strategy']}  epsilon: {eps}")
    if p.get("dp_covers"):
        typer.echo(f"  epsilon covers: {p['dp_covers']}; not covered: "
                   f"{'; '.join(p.get('not_covered') or []) or 'nothing else'}")
    for r, m in sorted(result["train_metrics"].items(), key=lambda kv: int(kv[0])):
        typer.echo(f"  round {r}: train-loss {m.get('train-loss', float('nan')):.4f}")
    refused = result.get("rejected") or []
    if refused:  # the robust rule's refusals, and statistics sent without the DP asked for
        typer.echo(f"  refused: {_refusals(refused)}")
    m = result["model"]
    typer.echo(f"global model: {m['name']} version {m['version']} in the registry under "
               f"{m['data_dir']}, signed release {m['release']} for {m['target']} "
               f"(key {m['key_id']})")


@federate_app.command("demo")
def demo(
    data_dir: DataDir,
    clients: Annotated[int, typer.Option(help="SuperNodes (simulated pumps) to start.")] = 3,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 2,
    strategy: Strategy = "trimmed",
    secagg: SecAgg = False,
    dp_epsilon: DpEpsilon = 8.0,
    stats_bounds: StatsBoundsFile = None,
    stats_share: StatsShare = 0.1,
    rollout_to: RolloutTo = "group:federated",
    as_json: Json = False,
) -> None:
    """Run a SuperLink and CLIENTS SuperNodes on loopback; train the pump autoencoder.

    The global model ends in the model registry, signed (see ``edgewise registry``)."""
    from edgewise.federated.deploy import LocalFleet

    _check_data_dir(data_dir)
    restrict_umask()  # results (normaliser statistics), checkpoints, ledger: 0600
    _check_rollout(rollout_to, data_dir, "federated-pump")
    if clients < 1 or rounds < 1:
        raise fail(f"--clients and --rounds must be >= 1. Got {clients} and {rounds}.")
    _check_fleet_size("--clients", clients)
    beta = 0.34 if clients < 10 else 0.2
    _check_strategy(strategy, clients, beta=beta)
    _check_secagg(secagg, strategy, clients=clients)
    _check_epsilon(dp_epsilon)
    bounds, stats_noise = _check_stats_bounds(stats_bounds, dataset="pump",
                                              epsilon=dp_epsilon, share=stats_share)
    _check_dp_sgd_budget(dp_epsilon, rounds=rounds, dataset="pump", clients=clients,
                         stats_noise=stats_noise)
    work = data_dir / "federated" / time.strftime("run-%Y%m%dT%H%M%SZ", time.gmtime())
    if not as_json:
        typer.echo(f"starting a SuperLink and {clients} SuperNodes on 127.0.0.1 (logs: {work})")
    result = _run_fleet(LocalFleet(clients, workdir=work),
                        {"num-server-rounds": rounds, "strategy": strategy, "beta": beta,
                         "data-dir-publish": str(data_dir), "evaluate": False,
                         "rollout-target": rollout_to, "secagg": secagg,
                         "dp-sgd-epsilon": dp_epsilon, "dp-stats-bounds": bounds,
                         "dp-stats-share": stats_share},
                        timeout=120 + 60 * rounds)
    _print_result(result, as_json)


@federate_app.command("server")
def server(
    data_dir: DataDir,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 3,
    clients: Annotated[int, typer.Option(help="Devices expected to connect.")] = 3,
    min_available: Annotated[int, typer.Option(help="Start once this many are connected "
                                                    "(0: all).")] = 0,
    strategy: Strategy = "trimmed",
    num_malicious: Annotated[int, typer.Option(help="f, faulty clients to tolerate.")] = 0,
    beta: Annotated[float, typer.Option(
        help="Trimmed-mean fraction cut per side (0: the smallest that cuts max(f, 1) "
             "update per side, at least 0.2).")] = 0.0,
    dp_noise: Annotated[float, typer.Option(help="Device-level DP noise multiplier.")] = 0.0,
    dp_clip: Annotated[float, typer.Option(help="Device-level DP clipping norm.")] = 1.0,
    dp_epsilon: DpEpsilon = 8.0,
    stats_bounds: StatsBoundsFile = None,
    stats_share: StatsShare = 0.1,
    dataset: Annotated[str, typer.Option(help="pump or cmapss.")] = "pump",
    cmapss_dir: Annotated[str, typer.Option(help="C-MAPSS folder on the devices.")] = "",
    host: Annotated[str, typer.Option(
        help="Address devices connect to (the SuperLink itself listens on 127.0.0.1 only)."
    )] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        help="Port devices connect to: a gate that forwards Flower's Fleet API only (the "
             "SuperLink and its Control API listen on 127.0.0.1 at a port of their own).")
    ] = 9092,
    round_timeout: Annotated[float, typer.Option(help="Seconds to wait per round.")] = 120.0,
    resume: Annotated[bool, typer.Option(help="Continue after the last checkpointed round "
                                              "of the previous server run.")] = False,
    secagg: SecAgg = False,
    rollout_to: RolloutTo = "group:federated",
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    tls_ca: TlsCa = None,
    supernode_keys: SupernodeKeys = None,
    as_json: Json = False,
) -> None:
    """Start a SuperLink, wait for devices, run the rounds, register the global model (signed).

    With --tls-cert/--tls-key (and --tls-ca) it serves TLS only; without, it runs Flower's
    insecure mode (unencrypted: loopback or a trusted network). With --supernode-keys only
    the devices holding those keys' private halves may join. One server per --data-dir:
    a second one there is refused while the first runs."""
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.deploy import RUN_DEFAULTS, FleetBusyError, LocalFleet
    from edgewise.federated.privacy import check_device_dp

    _check_data_dir(data_dir)
    restrict_umask()  # results (normaliser statistics), checkpoints, ledger: 0600
    _check_rollout(rollout_to, data_dir, f"federated-{dataset}")
    # Every option with a known valid range is checked here, before anything starts.
    _check_fleet_size("--clients", clients)
    if not 0 <= min_available <= clients:
        raise fail(f"--min-available must be between 0 (all) and --clients = {clients}. "
                   f"Got {min_available}.")
    _check_at_least("--num-malicious", num_malicious, 0)
    _check_beta(beta)
    if dataset not in ("pump", "cmapss"):
        raise fail(f"--dataset must be pump or cmapss. Got {dataset!r}.")
    # Options that only act with another one are refused without it, not silently ignored.
    if beta != 0 and strategy != "trimmed":
        raise fail(f"--beta {beta:g} needs --strategy trimmed (it is the trimmed mean's "
                   f"fraction cut per side); --strategy {strategy} does not use it. Drop "
                   "--beta.")
    if cmapss_dir and dataset != "cmapss":
        raise fail(f"--cmapss-dir {cmapss_dir} needs --dataset cmapss; --dataset {dataset} "
                   "does not read it. Drop --cmapss-dir, or pass --dataset cmapss.")
    if dp_clip != 1.0 and not dp_noise > 0:
        raise fail(f"--dp-clip {dp_clip:g} needs --dp-noise > 0 (it is the device-level DP "
                   "clipping norm, unused without device-level noise). Drop --dp-clip, or "
                   "pass --dp-noise.")
    _check_strategy(strategy, min_available or clients, num_malicious_nodes=num_malicious,
                    beta=beta)  # refuse a bad name or n/f/beta before starting anything
    _check_secagg(secagg, strategy, dp_noise, clients=min_available or clients,
                  clients_option="--min-available" if min_available else "--clients")
    _check_epsilon(dp_epsilon)
    try:  # the rule run_federated and the ServerApp's run config keep too
        check_device_dp(dp_noise, dp_clip, float(RUN_DEFAULTS["dp-delta"]),
                        names=("--dp-noise", "--dp-clip", "--dp-delta"))
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None
    if dp_noise > 0 and strategy != "fedavg":
        raise fail(f"--dp-noise {dp_noise:g} needs --strategy fedavg (device-level DP is "
                   f"accounted for the mean only). Got --strategy {strategy}.")
    _check_at_least("--rounds", rounds, 1)
    _check_dp_noise_accountable(dp_noise, rounds=rounds, devices=min_available or clients)
    if not 1 <= port <= 65535:
        raise fail(f"--port must be between 1 and 65535. Got {port}.")
    if not 0 < round_timeout < float("inf"):
        raise fail(f"--round-timeout must be a finite number of seconds > 0. "
                   f"Got {round_timeout}.")
    bounds, stats_noise = _check_stats_bounds(stats_bounds, dataset=dataset,
                                              epsilon=dp_epsilon, share=stats_share)
    _check_dp_sgd_budget(dp_epsilon, rounds=rounds, dataset=dataset, clients=clients,
                         stats_noise=stats_noise)
    if resume and secagg:
        raise fail("--resume cannot be combined with --secagg: SecAgg+ runs keep no "
                   "checkpoint, so the run would start afresh; drop one of them.")
    tls = _check_tls(tls_cert, tls_key, tls_ca, host)
    keys = _check_supernode_keys(
        supernode_keys, tls, host, port, min_available or clients,
        "--min-available" if min_available else "--clients")
    work = data_dir / "federated" / "server"
    fleet = LocalFleet(clients, workdir=work, spawn_nodes=False, port=port, host=host, tls=tls,
                       supernode_keys=keys)
    try:  # one server per folder, for its whole life: before anything there is touched
        fleet.lock()
    except FleetBusyError as exc:
        raise fail(str(exc)) from None
    try:
        _serve(fleet, resume=resume, rounds=rounds, bounds=bounds,
               dataset=dataset, dp_noise=dp_noise, dp_epsilon=dp_epsilon,
               devices=min_available or clients, stats_share=stats_share,
               strategy=strategy, num_malicious=num_malicious, beta=beta,
               as_json=as_json, host=host, port=port, tls=tls, keys=keys,
               run_config={
                   "num-server-rounds": rounds, "strategy": strategy, "beta": beta,
                   "num-malicious": num_malicious, "dp-noise": dp_noise, "dp-clip": dp_clip,
                   "dataset": dataset, "data-dir": cmapss_dir,
                   "min-available-nodes": min_available or clients,
                   "round-timeout": round_timeout, "data-dir-publish": str(data_dir),
                   "rollout-target": rollout_to, "secagg": secagg,
                   "dp-sgd-epsilon": dp_epsilon, "dp-stats-bounds": bounds,
                   "dp-stats-share": stats_share, "resume": resume},
               timeout=600 + rounds * round_timeout * 2)
    finally:
        fleet.release()


def _serve(fleet: LocalFleet, *, resume: bool, rounds: int, bounds: str,
           dataset: str, dp_noise: float, dp_epsilon: float, devices: int,
           stats_share: float, strategy: str, num_malicious: int, beta: float,
           as_json: bool, host: str, port: int, tls: TlsFiles | None,
           keys: list[SupernodeKey] | None, run_config: dict[str, Any],
           timeout: float) -> None:
    """``federate server`` once its folder is locked (:meth:`LocalFleet.lock`): the
    checkpoint of ``--resume`` checked (or an earlier one removed), then the run."""
    from edgewise.federated.deploy import check_port_free

    clients = fleet.clients
    try:  # a held --port is named before anything starts or is printed as started
        check_port_free(host, port)
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    checkpoint = fleet.workdir / "out" / "checkpoint.npz"
    if not resume:  # a fresh run: neither the model nor the privacy spent carries over
        from edgewise.federated.server_app import rule_path, run_ledger_path

        checkpoint.unlink(missing_ok=True)
        run_ledger_path(checkpoint).unlink(missing_ok=True)
        rule_path(checkpoint).unlink(missing_ok=True)
    if checkpoint.exists():
        from edgewise.federated.server_app import FederatedRunError, check_resume, read_checkpoint

        try:  # a damaged file, or one without __round__: one line, not numpy's traceback
            done = read_checkpoint(checkpoint)[0]
        except FederatedRunError as exc:
            raise fail(f"--resume: {exc}") from None
        if done >= rounds:
            raise fail(f"--resume: the checkpoint {checkpoint} already holds round {done} of "
                       f"--rounds {rounds}; no rounds are left ({_last_run(checkpoint)}). "
                       "Ask for more --rounds, or drop --resume to start afresh.")
        stats_doc = None
        if bounds:  # as the ServerApp reads the run config's "dp-stats-bounds"
            from edgewise.federated.stats_privacy import StatsBounds

            stats_doc = StatsBounds.from_doc(json.loads(bounds),
                                             1 if dataset == "pump" else 6)
        try:  # privacy settings under which no single ε would cover the model
            check_resume(checkpoint, rounds=rounds, dp_noise=dp_noise,
                         dp_sgd_epsilon=dp_epsilon, num_devices=devices,
                         stats_bounds=stats_doc, stats_share=stats_share,
                         strategy=strategy, num_malicious=num_malicious, beta=beta)
        except FederatedRunError as exc:
            raise fail(f"--resume: {exc}") from None
    if not as_json:
        from edgewise.federated.deploy import device_address

        address, note = device_address(host, port, tls)
        trust = f" --tls-ca {tls.ca}" if tls else ""
        auth = (f", SuperNode authentication: {len(keys)} device key"
                f"{'s' if len(keys) != 1 else ''}" if keys else "")
        trust += " --auth-key <the device's private key>" if keys else ""
        typer.echo(f"SuperLink on {host}:{port} ({'TLS' if tls else 'unencrypted'}{auth}); "
                   f"connect devices with: edgewise federate client --superlink {address} "
                   f"--partition-id I --num-partitions {clients}{trust}"
                   + (f" ({note})" if note else ""))
    result = _run_fleet(fleet, run_config, timeout=timeout)
    _print_result(result, as_json)


def _check_superlink(superlink: str) -> None:
    """Refuse in one line a ``--superlink`` the SuperNode cannot connect to: not
    ``host:port`` as Flower parses it (no port, a URL scheme, a port outside 1-65535, no
    host). Flower's SuperNode found out only once started: its log, an exit code 600 and a
    traceback of the process beside it, 12 s later, with status 1."""
    from flwr.supercore.address import parse_address

    parsed = parse_address(superlink)
    if parsed is None or not parsed[0] or not 1 <= parsed[1] <= 65535:
        raise fail(f"--superlink must be the SuperLink's HOST:PORT (a name or IP address and "
                   f"a port 1-65535, no URL scheme; e.g. 192.0.2.10:9092 or [::1]:9092). Got "
                   f"{superlink!r}.")


def _check_root_certificates(tls_ca: Path | None, superlink: str) -> Path | None:
    """``--tls-ca`` as an absolute path, refused in one line unless it holds a PEM
    certificate; without it, a warning when the SuperLink is not on this machine."""
    from edgewise.config import is_loopback
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.deploy import load_ca

    if tls_ca is None:
        host = superlink.rpartition(":")[0] or superlink
        if not is_loopback(host):
            typer.echo(f"warning: --superlink {superlink} without --tls-ca: this device's "
                       "model updates and metrics cross the network unencrypted; pass "
                       "--tls-ca with the SuperLink's CA certificate outside a trusted "
                       "network.", err=True)
        return None
    try:
        return load_ca(tls_ca)
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None


@federate_app.command("client")
def client(
    superlink: Annotated[str, typer.Option(help="SuperLink address host:port.")],
    data_dir: DataDir,
    partition_id: Annotated[int, typer.Option(help="This device's partition.")] = 0,
    num_partitions: Annotated[int, typer.Option(help="Devices in the fleet.")] = 3,
    port: Annotated[int, typer.Option(help="Local port of this SuperNode's runtime API "
                                           "(0: a free one).")] = 0,
    max_epsilon: Annotated[float, typer.Option(
        "--max-epsilon", help="The most record-level ε (δ=1e-5) this device's data spends, "
                              "over every round in its privacy ledger, whatever the server "
                              "asks or declares (it runs DP-SGD at this budget when the "
                              "server asks for none). It covers the model updates and DP "
                              "normaliser statistics, not statistics sent without DP (no "
                              "--stats-bounds on the server) nor the train/eval losses and "
                              "record counts each reply carries. 0: follow the server.")] = 8.0,
    privacy_ledger: Annotated[Path | None, typer.Option(
        "--privacy-ledger", help="JSON file recording the DP-SGD each round really spent "
                                 "(default: <data-dir>/federated/privacy-ledger-<partition>"
                                 ".json, whatever --num-partitions). A new file is a fresh "
                                 "budget.")] = None,
    tls_ca: Annotated[Path | None, typer.Option(
        "--tls-ca", show_default=False,
        help="PEM certificate of the CA that signed the SuperLink's certificate: connect "
             "over TLS and verify the SuperLink with it (the server's --tls-ca, or its "
             "--tls-cert when self-signed). Without it the connection is unencrypted.")] = None,
    auth_key: Annotated[Path | None, typer.Option(
        "--auth-key", show_default=False,
        help="This device's private key (OpenSSH, from `edgewise federate keygen`): the "
             "SuperNode signs its calls with it, for a server started with "
             "--supernode-keys holding its public key. Needs --tls-ca.")] = None,
) -> None:
    """Run this device as a Flower SuperNode (TLS with --tls-ca; else unencrypted: loopback
    or a trusted network; --auth-key for a server that admits only known devices).

    When the server restarts (--resume included) it no longer knows this device: the
    SuperNode is started again and joins afresh (a warning line). Forgotten again at once,
    three times in a row, it ends with status 1 and an error line."""
    import os

    from edgewise.errors import InvalidParameterError
    from edgewise.federated.deploy import _env, check_ledger_path, free_port, supernode_command
    from edgewise.federated.ledger import PrivacyBudgetError, PrivacyLedger

    _check_data_dir(data_dir)
    restrict_umask()  # results (normaliser statistics), checkpoints, ledger: 0600
    _check_epsilon(max_epsilon, "--max-epsilon")
    _check_fleet_size("--num-partitions", num_partitions)
    if not 0 <= partition_id < num_partitions:
        raise fail(f"--partition-id must be between 0 and --num-partitions - 1 = "
                   f"{num_partitions - 1}. Got {partition_id}.")
    if not 0 <= port <= 65535:
        raise fail(f"--port must be between 0 (a free one) and 65535. Got {port}.")
    _check_superlink(superlink)
    root = _check_root_certificates(tls_ca, superlink)  # before the ledger's folder is made
    key = _check_auth_key(auth_key, root)
    # The default ledger belongs to this device's data (its data dir and partition), not to
    # the fleet's size: the same records must not get a fresh budget under another
    # --num-partitions.
    ledger = (privacy_ledger or data_dir / "federated" /
              f"privacy-ledger-{partition_id}.json").expanduser().resolve()
    others = sorted(p.name for p in ledger.parent.glob("privacy-ledger*.json")
                    if p.resolve() != ledger) if ledger.parent.is_dir() else []
    if others:
        typer.echo(f"warning: {ledger.parent} also holds the privacy ledgers "
                   f"{', '.join(others)}; what they recorded is not counted in {ledger.name}, "
                   "so if they cover this device's records, its budget is already partly "
                   "spent.", err=True)
    try:
        check_ledger_path(ledger, "--privacy-ledger")
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None
    try:  # readable (a corrupt ledger would refuse every round) and writable, up front
        ledger.parent.mkdir(parents=True, exist_ok=True)
        PrivacyLedger(ledger).entries()
        with open(ledger.with_name(ledger.name + ".lock"), "a"):
            pass
    except PrivacyBudgetError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"--privacy-ledger {ledger} cannot be written: {exc.strerror or exc}.") \
            from None
    home = Path(os.environ.get("FLWR_HOME", Path.home() / ".flwr"))
    cmd = supernode_command(superlink, partition_id, num_partitions, port or free_port(),
                            max_epsilon=max_epsilon, ledger=ledger, root_certificates=root,
                            auth_key=key)
    # This process becomes the SuperNode's keeper (run_supernode): a SuperNode its restarted
    # SuperLink no longer knows ended with status 0, which a service manager took for a
    # stop; the keeper starts it again to join afresh, or ends non-zero with one line.
    keeper = [sys.executable, "-m", "edgewise.federated.deploy", "supernode", *cmd]
    os.execvpe(keeper[0], keeper, _env(home))


def _check_auth_key(auth_key: Path | None, root: Path | None) -> Path | None:
    """``--auth-key`` as an absolute path, refused in one line unless it holds an
    unencrypted OpenSSH EC private key, or without --tls-ca (Flower signs over TLS only);
    a warning when other users may read it."""
    import stat

    from edgewise.errors import InvalidParameterError
    from edgewise.federated.deploy import check_auth_key

    if auth_key is None:
        return None
    try:
        key = check_auth_key(auth_key)
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None
    if root is None:
        raise fail(f"--auth-key {auth_key} needs --tls-ca: Flower signs a SuperNode's calls "
                   "over TLS only (the signature covers a timestamp, valid for minutes, which "
                   "anyone reading unencrypted traffic could replay); pass the SuperLink's CA "
                   "certificate.")
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & 0o077:
        typer.echo(f"warning: --auth-key {key} can be read by other users (mode {mode:04o}); "
                   f"whoever reads it can join as this device: chmod 600 {key}.", err=True)
    return key


@federate_app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option(
        "--out", help="Folder for the key pair (created, mode 0700, if missing).",
        # a blank --out wrote the pair into the working directory, silently
        click_type=NonBlankPath("a folder for the key pair, e.g. keys"))],
    name: Annotated[str, typer.Option(
        help="File name of the private key; the public key is NAME.pub.",
        click_type=UTF8_TEXT)] = "supernode",
    as_json: Json = False,
) -> None:
    """Make a device's SuperNode key pair (EC P-384): the private key stays on the device
    (`federate client --auth-key`), the public key goes to the server
    (`federate server --supernode-keys`)."""
    from edgewise.errors import InvalidParameterError
    from edgewise.federated.deploy import generate_supernode_key

    # checked before anything is written: a name the file system cannot hold ended in an
    # OSError traceback, and a blank one made the files ' ' and ' .pub'
    if not name.strip() or name != name.strip():
        raise fail(f"--name must be a file name without leading or trailing blanks, e.g. "
                   f"supernode. Got {name!r}.")
    if len(f"{name}.pub".encode()) > 255:
        raise fail(f"--name must be a file name of at most 251 bytes (the public key is "
                   f"NAME.pub, and a file name holds 255), e.g. supernode. Got one of "
                   f"{len(name.encode())} bytes: {name[:40]!r}...")
    try:
        private, public = generate_supernode_key(out, name)
    except InvalidParameterError as exc:
        raise fail(str(exc)) from None
    if as_json:
        typer.echo(json.dumps({"private_key": str(private), "public_key": str(public)}))
        return
    typer.echo(f"private key: {private} (mode 0600; keep it on this device: edgewise federate "
               f"client ... --auth-key {private})")
    typer.echo(f"public key:  {public} (give it to the server: edgewise federate server ... "
               "--supernode-keys FILE_OR_FOLDER)")


#: Defaults of ``bench federated``'s options that act in one mode only (checked against).
_BENCH_DEFAULTS: dict[str, Any] = {"--dp-clients": 260, "--dp-rounds": 10, "--dp-sample": 0,
                                   "--dp-local-epochs": 3, "--stats-margin": 0.1}


@bench_app.command("federated")
def bench_federated(
    data: Annotated[Path, typer.Option(help="Folder with C-MAPSS (train_FD002.txt.gz …).")] =
        Path("../shared/data/cmapss"),
    clients: Annotated[int, typer.Option(help="Clients (groups of engines).")] = 26,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 20,
    dp_clients: Annotated[int, typer.Option(help="Clients for the device-level DP runs.")] =
        _BENCH_DEFAULTS["--dp-clients"],
    dp_rounds: Annotated[int, typer.Option(help="Rounds for the device-level DP runs.")] =
        _BENCH_DEFAULTS["--dp-rounds"],
    dp_sample: Annotated[int, typer.Option(
        help="Devices sampled per device-level DP round (0: all); the sample is drawn from "
             "the OS's entropy, not from the seed, so its ε's amplification by sampling "
             "holds.")] = _BENCH_DEFAULTS["--dp-sample"],
    dp_local_epochs: Annotated[int, typer.Option(
        help="Local epochs in the device-level DP runs.")] = _BENCH_DEFAULTS["--dp-local-epochs"],
    seeds: Annotated[int, typer.Option(help="Repeat with seeds 0..N-1; figures are medians, "
                                            "each run's values under 'runs'.")] = 1,
    stats_dp_only: Annotated[bool, typer.Option(
        "--stats-dp-only", help="Run only the record-level DP run (ε=8) with the normaliser "
                                "statistics in the clear and through DP (10% of the budget), "
                                "--seeds times each, and report the RMSE change.")] = False,
    stats_margin: Annotated[float, typer.Option(
        "--stats-margin", help="With --stats-dp-only: the sensor bounds are the test engines' "
                               "range widened by this share of it on each side.")] =
        _BENCH_DEFAULTS["--stats-margin"],
    as_json: Json = False,
) -> None:
    """Federated vs central RUL RMSE on C-MAPSS FD002, with DP and 20% poisoned clients."""
    from edgewise.bench.federated import run_federated_benchmark_seeds, run_stats_dp_benchmark

    _check_at_least("--clients", clients, 4, " (the poisoned runs need a trimmed mean that "
                    "cuts at least one of the 20% attackers from each side)")
    for option, value in (("--rounds", rounds), ("--dp-clients", dp_clients),
                          ("--dp-rounds", dp_rounds), ("--dp-local-epochs", dp_local_epochs),
                          ("--seeds", seeds)):
        _check_at_least(option, value, 1)
    if not 0 <= dp_sample <= dp_clients:
        raise fail(f"--dp-sample must be between 0 (all) and --dp-clients = {dp_clients}. "
                   f"Got {dp_sample}.")
    # Options that only act in one mode are refused in the other, not silently ignored
    # (given at their default value they change nothing and pass).
    if stats_dp_only:
        unused = [f"{o} {v:g}" for o, v in (
            ("--dp-clients", dp_clients), ("--dp-rounds", dp_rounds),
            ("--dp-sample", dp_sample), ("--dp-local-epochs", dp_local_epochs))
            if v != _BENCH_DEFAULTS[o]]
        if unused:
            raise fail(f"--stats-dp-only runs only the record-level DP pair on --clients "
                       f"devices for --rounds; it does not use {', '.join(unused)} (the "
                       "device-level DP runs' options). Drop them, or drop --stats-dp-only.")
    elif stats_margin != _BENCH_DEFAULTS["--stats-margin"]:
        raise fail(f"--stats-margin {stats_margin:g} needs --stats-dp-only (it widens the "
                   "sensor bounds of that run only). Drop --stats-margin, or pass "
                   "--stats-dp-only.")
    if not (data / "train_FD002.txt.gz").exists():
        raise fail(f"C-MAPSS FD002 not found in {data}; pass --data PATH.")
    say = None if as_json else (lambda m: typer.echo(m, err=True))
    if stats_dp_only:
        if not 0 <= stats_margin < float("inf"):
            raise fail(f"--stats-margin must be a finite number >= 0. Got {stats_margin}.")
        res = run_stats_dp_benchmark(data, seeds=seeds, clients=clients, rounds=rounds,
                                     margin=stats_margin, progress=say)
        if as_json:
            typer.echo(json.dumps(res))
            return
        for k, v in res.items():
            if k != "runs":
                typer.echo(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
        return
    res = run_federated_benchmark_seeds(data, seeds, progress=say, clients=clients,
                                        rounds=rounds, dp_clients=dp_clients,
                                        dp_rounds=dp_rounds, dp_sample=dp_sample or None,
                                        dp_local_epochs=dp_local_epochs)
    if as_json:
        typer.echo(json.dumps(res))
        return
    for k, v in res.items():
        typer.echo(f"{k:28s} {v:.3f}" if isinstance(v, float) else f"{k:28s} {v}")
