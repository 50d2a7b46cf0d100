"""Does :class:`~edgewise.models.cluster.BehaviourGroups` find the groups a fleet really has?

Two kinds of truth:

**Real data, NAB.** Each NAB series is one "device"; its group is *what it measures*,
which the file name says. The mapping (:data:`NAB_KINDS`) was written down before any
result was seen, and files whose name does not say what they measure
(``grok_asg_anomaly``, ``rogue_agent_key_*``) are left out. Two tasks: ``aws``, the 16
named series of ``realAWSCloudwatch`` (cpu, network in, disk write bytes, request count),
and ``real``, every named series of NAB's real categories (13 kinds: cpu, network in,
disk writes, requests, latency, temperature, taxi passengers, travel time, occupancy,
speed, tweet volume, ad cost per click, cost per thousand impressions).

**Simulated pumps** (:mod:`edgewise.sim.pumps` physics, truth known): ``pumps``: three
kinds of eight pumps each (small 1450 rpm pumps; large 2950 rpm pumps; the same large
pumps with a worn bearing: more vibration and a hotter bearing at the same speed), each
pump's ratings jittered by 5%, plus two odd ones (a large pump whose motor-temperature
sensor reads 15 °C high; a small pump whose current sensor is stuck); ``pumps-same``: 24
pumps of one kind, where the honest answer is one group.

**Scale** (``edgewise bench groups --fleet-scale 100,300,1000``, :func:`run_scale`): how
long the ``GET /v1/fleet/groups`` route takes to read (its one bulk store query, then a
history per device) and to fit a simulated fleet of N pumps of 8 metrics, 2 days at 1 min
(:func:`scale_fleet`: the three kinds above in turn, one in 50 odd), held in a real DuckDB
store (:func:`scale_store`, built once and kept), with the groups found, their ARI and a
digest of the result (the same digest: the same groups, odd ones out and profiles).

Scores: adjusted Rand index (ARI) and normalised mutual information (NMI) of the found
groups against the truth, every device counted (an odd one out is a group of its own, as
it belongs to none), mean ± std over seeds. Peers in the same run, given the true number
of groups (an advantage ours does not get in ``auto``): k-means on each series resampled
to 256 hourly-mean points and z-normalised (the common baseline), and k-means on each
metric's plain mean and standard deviation (standardised across devices).
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgewise.errors import InvalidParameterError
from edgewise.models.cluster import BehaviourGroups
from edgewise.sim.pumps import SENSORS, Pump

__all__ = ["NAB_KINDS", "SCALE_DAYS", "SCALE_STEP_S", "TASKS", "baseline_meanstd", "baseline_raw",
           "nab_fleet", "pump_fleet", "run", "run_scale", "scale_fleet", "scale_store"]

#: file-name prefix (NAB category/file) -> what the series measures; decided before results
NAB_KINDS: dict[str, str] = {
    "realAWSCloudwatch/ec2_cpu_utilization_": "cpu",
    "realAWSCloudwatch/rds_cpu_utilization_": "cpu",
    "realAWSCloudwatch/ec2_network_in_": "network_in",
    "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn": "network_in",
    "realAWSCloudwatch/ec2_disk_write_bytes_": "disk_write_bytes",
    "realAWSCloudwatch/elb_request_count_": "request_count",
    "realKnownCause/cpu_utilization_asg_misconfiguration": "cpu",
    "realKnownCause/ec2_request_latency_system_failure": "latency",
    "realKnownCause/ambient_temperature_system_failure": "temperature",
    "realKnownCause/machine_temperature_system_failure": "temperature",
    "realKnownCause/nyc_taxi": "taxi_passengers",
    "realTraffic/TravelTime_": "travel_time",
    "realTraffic/occupancy_": "occupancy",
    "realTraffic/speed_": "speed",
    "realTweets/Twitter_volume_": "tweet_volume",
    "realAdExchange/exchange-": "ad_cpc_or_cpm",  # split by _cpc_ / _cpm_ below
}
TASKS = ("aws", "real", "pumps", "pumps-same")
_T0 = pd.Timestamp("2024-01-01", tz="UTC")


def _nab_kind(rel: str) -> str | None:
    for prefix, kind in NAB_KINDS.items():
        if rel.startswith(prefix):
            if kind == "ad_cpc_or_cpm":
                return "ad_cpc" if "_cpc_" in rel else "ad_cpm"
            return kind
    return None


def nab_fleet(nab_dir: str | Path, task: str) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """The NAB series of ``task`` (``aws`` or ``real``) as histories (one metric,
    ``value``) and their true kinds, keyed by ``category/file`` without ``.csv``."""
    root = Path(nab_dir) / "data"
    files = sorted(root.glob("real*/*.csv"))
    if not files:
        raise InvalidParameterError(
            f"No NAB data files 'real*/<file>.csv' under {str(root)!r}; give the NAB folder "
            "(the one holding data/), e.g. /work/shared/data/nab.", field="nab", value=str(nab_dir))
    hist, truth = {}, {}
    for f in files:
        rel = f"{f.parent.name}/{f.stem}"
        kind = _nab_kind(rel)
        if kind is None or (task == "aws" and not rel.startswith("realAWSCloudwatch/")):
            continue
        df = pd.read_csv(f)
        idx = pd.DatetimeIndex(pd.to_datetime(df["timestamp"]), tz="UTC")
        hist[rel] = pd.DataFrame({"value": df["value"].to_numpy(float)}, index=idx)
        truth[rel] = kind
    return hist, truth


_PUMP_KINDS = {
    "small": dict(rated_rpm=1450.0, rated_flow=80.0, rated_head_bar=3.0, rated_current=20.0,
                  setpoint=0.75),
    "large": dict(rated_rpm=2950.0, rated_flow=180.0, rated_head_bar=7.0, rated_current=55.0,
                  setpoint=0.88),
}


def pump_fleet(seed: int, same: bool = False, per_kind: int = 8, hours: float = 2.0,
               step_s: float = 10.0) -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    """A constructed pump fleet (see the module doc) as histories, and the truth per pump
    (``odd`` for the two odd ones).

    >>> hist, truth = pump_fleet(0, per_kind=2, hours=0.05)
    >>> len(hist), sorted(set(truth.values()))
    (8, ['large', 'odd', 'small', 'worn'])
    """
    rng = np.random.default_rng(seed)
    plan = ([("small", "small")] * (3 * per_kind) if same else
            [("small", "small")] * per_kind + [("large", "large")] * per_kind
            + [("worn", "large")] * per_kind + [("odd", "large"), ("odd", "small")])
    n = int(hours * 3600 / step_s)
    hist, truth = {}, {}
    for i, (kind, spec) in enumerate(plan):
        ratings = {k: v * float(rng.uniform(0.95, 1.05)) if k != "setpoint" else v
                   for k, v in _PUMP_KINDS[spec].items()}
        pump = Pump(f"pump-{i:02d}", np.random.default_rng([seed, i]), **ratings)
        pump.speed_frac = pump.setpoint
        if kind == "worn":
            pump.wear = 0.5
        rows = []
        for _ in range(n):
            true = pump.physics(step_s)
            rows.append({m: v + float(pump.rng.normal(0, SENSORS[m][1])) for m, v in true.items()})
        frame = pd.DataFrame(rows, index=_T0 + pd.to_timedelta(np.arange(n) * step_s, unit="s"))
        if kind == "odd" and spec == "large":
            frame["motor_temp_c"] += 15.0
        elif kind == "odd":
            frame["motor_current_a"] = frame["motor_current_a"].iloc[0]
        hist[pump.device_id] = frame
        truth[pump.device_id] = kind
    return hist, truth


def _resampled(frame: pd.DataFrame, length: int = 256) -> np.ndarray:
    """Each column as hourly means (pumps: minute means) interpolated to ``length`` points,
    z-normalised, the columns joined."""
    span = frame.index[-1] - frame.index[0]
    rule = "1h" if span > pd.Timedelta(days=2) else "1min"
    parts = []
    for c in sorted(frame.columns):
        s = frame[c].resample(rule).mean().interpolate(limit_direction="both").to_numpy()
        x = np.interp(np.linspace(0, len(s) - 1, length), np.arange(len(s)), s)
        sd = x.std()
        parts.append((x - x.mean()) / sd if sd > 0 else x - x.mean())
    return np.concatenate(parts)


def baseline_raw(hist: dict[str, pd.DataFrame], k: int, seed: int) -> np.ndarray:
    """k-means on z-normalised resampled series (the common baseline)."""
    from sklearn.cluster import KMeans

    X = np.array([_resampled(f) for f in hist.values()])
    return KMeans(k, n_init=10, random_state=seed).fit_predict(X)


def baseline_meanstd(hist: dict[str, pd.DataFrame], k: int, seed: int) -> np.ndarray:
    """k-means on each metric's mean and standard deviation, standardised across devices."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    X = np.array([np.concatenate([f[sorted(f.columns)].mean().to_numpy(),
                                  f[sorted(f.columns)].std().to_numpy()]) for f in hist.values()])
    return KMeans(k, n_init=10, random_state=seed).fit_predict(StandardScaler().fit_transform(X))


def _ours(model: BehaviourGroups, hist: dict[str, pd.DataFrame]) -> np.ndarray:
    """Groups found, an odd one out counted as a group of its own, in the order of ``hist``
    (as the truth and the peers' labels are): the model keeps its devices in the order of
    their ids, which ``pump-100`` ... ``pump-99`` or a NAB copy whose paths sort otherwise
    than their keys is not."""
    model.fit(hist)
    labels = model.labels_.to_numpy().copy()
    odd = model.odd_.to_numpy()
    labels[odd] = model.n_groups_ + np.arange(int(odd.sum()))
    return pd.Series(labels, index=model.devices_).loc[list(hist)].to_numpy()


def _scores(truth: list[str], found: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {"ari": float(adjusted_rand_score(truth, found)),
            "nmi": float(normalized_mutual_info_score(truth, found))}


def _methods(k: int, reference: str | None) -> dict[str, Callable[..., np.ndarray]]:
    def ours(**kw: Any) -> Callable[..., np.ndarray]:
        return lambda h, s: _ours(BehaviourGroups(reference=reference, random_state=s, **kw), h)

    return {
        "ours_auto": ours(),
        "ours_k_kmeans": ours(n_groups=k, min_group_size=1),
        "ours_k_agglomerative": ours(n_groups=k, min_group_size=1, method="agglomerative"),
        "ours_k_gmm": ours(n_groups=k, min_group_size=1, method="gmm"),
        "kmeans_raw_series": lambda h, s: baseline_raw(h, k, s),
        "kmeans_mean_std": lambda h, s: baseline_meanstd(h, k, s),
    }


def run_task(task: str, nab_dir: str | Path, seeds: int = 3,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One task's figures: per method ARI/NMI mean and std over seeds, and what ``auto``
    found (number of groups, odd ones out) at seed 0."""
    if task not in TASKS:
        raise InvalidParameterError(f"Task must be one of {', '.join(TASKS)}. Got {task!r}.",
                                    field="task", value=task)
    per_method: dict[str, list[dict[str, float]]] = {}
    auto: dict[str, Any] = {}
    started = time.perf_counter()
    for seed in range(seeds):
        if task in ("aws", "real"):
            if seed == 0:
                hist, truth = nab_fleet(nab_dir, task)
        else:
            hist, truth = pump_fleet(seed, same=task == "pumps-same")
        labels = [truth[d] for d in hist]
        k = len(set(labels))
        reference = "speed_rpm" if task.startswith("pumps") else None
        for name, method in _methods(k, reference).items():
            if k == 1 and name != "ours_auto":
                continue
            found = method(hist, seed)
            per_method.setdefault(name, []).append(_scores(labels, found) | {
                "groups": float(len(set(found.tolist())))})
            if name == "ours_auto" and seed == 0:
                model = BehaviourGroups(reference=reference, random_state=0).fit(hist)
                auto = {"n_groups": model.n_groups_, "true_groups": k, "devices": len(hist),
                        "odd_ones_out": sorted(d for d in hist if model.odd_[d]),
                        "true_odd": sorted(d for d in hist if truth[d] == "odd"),
                        "traits": {str(g): [t["text"] for t in ts]
                                   for g, ts in model.traits_.items()}}
        if progress:
            progress(f"{task} seed {seed} done")
    out: dict[str, Any] = {"devices": auto.get("devices"), "true_groups": auto.get("true_groups"),
                           "seconds": round(time.perf_counter() - started, 1), "methods": {}}
    for name, rows in per_method.items():
        out["methods"][name] = {
            key: {"mean": round(statistics.fmean(r[key] for r in rows), 3),
                  "std": round(statistics.pstdev(r[key] for r in rows), 3)}
            for key in ("ari", "nmi", "groups")}
    out["auto_seed0"] = auto
    return out


def run(nab_dir: str | Path, tasks: tuple[str, ...] = TASKS, seeds: int = 3,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every task's figures, with the machine and the seeds (one JSON-ready object)."""
    import os

    return {"benchmark": "groups", "seeds": seeds,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version()},
            "date": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
            "tasks": {t: run_task(t, nab_dir, seeds, progress) for t in tasks}}


# -- scale: how long the route's read and fit take for a fleet of N pumps ------------------

#: the scale fleet: days of history, seconds between readings (the route's 2-day 1-min case)
SCALE_DAYS = 2.0
SCALE_STEP_S = 60.0
_SCALE_T0 = pd.Timestamp("2026-01-01", tz="UTC")
_SCALE_KINDS = ("small", "large", "worn")
#: every this many pumps, one is odd (a motor-temperature sensor reading 15 °C high)
_SCALE_ODD_EVERY = 50


def scale_fleet(n: int, seed: int = 0, days: float = SCALE_DAYS,
                step_s: float = SCALE_STEP_S) -> tuple[np.ndarray, dict[str, np.ndarray],
                                                       dict[str, str]]:
    """``n`` simulated pumps (:class:`~edgewise.sim.pumps.Pump` physics plus sensor noise)
    of the three kinds of :func:`pump_fleet` in turn (small, large, worn), every
    ``_SCALE_ODD_EVERY``-th one odd (motor temperature 15 °C high), over ``days`` at one
    reading per ``step_s``: the reading times (ns), each pump's readings (times x
    :data:`~edgewise.sim.pumps.SENSORS`, in that order) and each pump's kind.

    >>> ts, values, truth = scale_fleet(4, days=0.01)
    >>> len(ts), values["pump-0003"].shape, truth["pump-0003"]
    (14, (14, 8), 'small')
    """
    steps = int(days * 86_400 / step_s)
    ts = _SCALE_T0.value + (np.arange(steps) * step_s * 1e9).astype(np.int64)
    noise = np.array([SENSORS[m][1] for m in SENSORS])
    values, truth = {}, {}
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        kind = _SCALE_KINDS[i % 3]  # then "odd" as _scale_kind says
        spec = "small" if kind == "small" else "large"
        ratings = {k: v * float(rng.uniform(0.95, 1.05)) if k != "setpoint" else v
                   for k, v in _PUMP_KINDS[spec].items()}
        pump = Pump(f"pump-{i:04d}", rng, **ratings)
        pump.speed_frac = pump.setpoint
        if kind == "worn":
            pump.wear = 0.5
        true = np.array([list(pump.physics(step_s).values()) for _ in range(steps)])
        x = true + rng.normal(0.0, 1.0, true.shape) * noise
        if i % _SCALE_ODD_EVERY == _SCALE_ODD_EVERY - 1:
            x[:, list(SENSORS).index("motor_temp_c")] += 15.0
            kind = "odd"
        values[pump.device_id], truth[pump.device_id] = x, kind
    return ts, values, truth


def _scale_kind(i: int) -> str:
    """The kind of the ``i``-th pump of :func:`scale_fleet`."""
    return "odd" if i % _SCALE_ODD_EVERY == _SCALE_ODD_EVERY - 1 else _SCALE_KINDS[i % 3]


def scale_store(path: str | Path, n: int, seed: int = 0, days: float = SCALE_DAYS,
                step_s: float = SCALE_STEP_S,
                progress: Callable[[str], None] | None = None) -> dict[str, str]:
    """A DuckDB store at ``path`` holding :func:`scale_fleet` (appended through
    ``Store.append``, two hours of the whole fleet at a time); a store already there with
    every reading is reused. Returns each pump's kind.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     truth = scale_store(Path(d) / "f.duckdb", 3, days=0.01)
    >>> sorted(truth.values())
    ['large', 'small', 'worn']
    """
    from edgewise.store import open_store
    from edgewise.telemetry import Reading

    path = Path(path).absolute()  # a relative path would read as the URL's host
    steps = int(days * 86_400 / step_s)
    want = steps * len(SENSORS) * n
    if path.exists():
        store = open_store(f"duckdb://{path}")
        try:
            if store.count_readings() == want:  # built already: the kinds need no run
                return {f"pump-{i:04d}": _scale_kind(i) for i in range(n)}
        finally:
            store.close()
        path.unlink()
    ts, values, truth = scale_fleet(n, seed, days, step_s)
    part = path.with_name(path.name + ".part")
    for p in (part, part.with_name(part.name + ".wal")):
        p.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = open_store(f"duckdb://{part}")
    metrics = list(SENSORS)
    chunk = max(1, int(7200 / step_s))
    try:
        for lo in range(0, len(ts), chunk):
            batch = [Reading(d, m, int(t), float(v))
                     for d, x in values.items()
                     for t, row in zip(ts[lo:lo + chunk], x[lo:lo + chunk], strict=True)
                     for m, v in zip(metrics, row, strict=True)]
            store.append(batch)
            if progress:
                progress(f"scale store {n}: {min(lo + chunk, len(ts))}/{len(ts)} steps")
        store.checkpoint()
    finally:
        store.close()
    part.replace(path)
    return truth


def run_scale(ns: tuple[int, ...], store_dir: str | Path, repeats: int = 3, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """For each fleet size in ``ns``: the ``GET /v1/fleet/groups`` route's store read
    (its ``_histories``, every device read, no cap) and its fit (``BehaviourGroups`` with
    the route's parameters), each timed ``repeats`` times (median and every run, seconds),
    on a :func:`scale_store` kept in ``store_dir``; with the groups found and their ARI
    against the kinds, and a digest of the fit's labels, odd flags and profiles (the same
    digest: the same result)."""
    import hashlib
    import os

    from edgewise.server.routes import groups as route
    from edgewise.store import open_store

    out: dict[str, Any] = {
        "benchmark": "groups-scale", "days": SCALE_DAYS, "step_s": SCALE_STEP_S,
        "repeats": repeats, "seed": seed,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "date": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"), "fleets": {}}
    for n in ns:
        path = Path(store_dir).absolute() / f"groups-scale-{n}-seed{seed}.duckdb"
        t0 = time.perf_counter()
        truth = scale_store(path, n, seed, progress=progress)
        build_s = time.perf_counter() - t0
        store = open_store(f"duckdb://{path}")
        try:
            seen = [s for s in store.devices() if s.last_ns is not None]
            end = max(s.last_ns for s in seen)
            fleet = route._Fleet(frozenset(s.device_id for s in seen), seen, [],
                                 sorted({m for s in seen for m in s.metrics}),
                                 end - route.WINDOW_DAYS * route._NS_PER_DAY, end)
            reads, fits = [], []
            for _ in range(repeats):
                t = time.perf_counter()
                hist, step, _empty = route._histories(store, fleet)
                reads.append(time.perf_counter() - t)
            readings = store.count_readings()
        finally:
            store.close()
        for _ in range(repeats):
            model = BehaviourGroups(max_groups=route.MAX_GROUPS, min_group_size=2,
                                    random_state=0)
            t = time.perf_counter()
            model.fit(hist)
            fits.append(time.perf_counter() - t)
        digest = hashlib.sha256(json.dumps({
            "labels": model.labels_.tolist(), "odd": model.odd_.tolist(),
            "profiles": np.round(model.profiles_.to_numpy(float), 9).tolist(),
            "columns": list(model.profiles_.columns)}, allow_nan=True).encode()).hexdigest()
        devices = list(model.devices_)
        labels = model.labels_.to_numpy().copy()
        odd = model.odd_.to_numpy()
        labels[odd] = model.n_groups_ + np.arange(int(odd.sum()))
        out["fleets"][str(n)] = {
            "devices": n, "readings": readings, "bucket_s": step,
            "build_s": round(build_s, 1),
            "read_s": {"median": round(statistics.median(reads), 2),
                       "runs": [round(r, 2) for r in reads]},
            "fit_s": {"median": round(statistics.median(fits), 2),
                      "runs": [round(f, 2) for f in fits]},
            "n_groups": model.n_groups_, "odd_ones_out": int(odd.sum()),
            "ari": round(_scores([truth[d] for d in devices], labels)["ari"], 3),
            "result_sha256": digest[:16]}
        if progress:
            progress(f"scale {n}: read {out['fleets'][str(n)]['read_s']['median']} s, "
                     f"fit {out['fleets'][str(n)]['fit_s']['median']} s")
    return out
