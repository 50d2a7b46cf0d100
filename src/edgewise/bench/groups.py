"""Does :class:`~edgewise.models.cluster.BehaviourGroups` find the groups a fleet really has?

Two kinds of truth:

**Real data, NAB.** Each NAB series is one "device"; its group is *what it measures*,
which the file name says. The mapping (:data:`NAB_KINDS`) was written down before any
result was seen, and files whose name does not say what they measure
(``grok_asg_anomaly``, ``rogue_agent_key_*``) are left out. Two tasks: ``aws``, the 16
named series of ``realAWSCloudwatch`` (cpu, network in, disk write bytes, request count),
and ``real``, every named series of NAB's real categories (14 kinds: cpu, network in,
disk writes, requests, latency, temperature, taxi passengers, travel time, occupancy,
speed, tweet volume, ad cost per click, cost per thousand impressions).

**Simulated pumps** (:mod:`edgewise.sim.pumps` physics, truth known): ``pumps``: three
kinds of eight pumps each (small 1450 rpm pumps; large 2950 rpm pumps; the same large
pumps with a worn bearing: more vibration and a hotter bearing at the same speed), each
pump's ratings jittered by 5%, plus two odd ones (a large pump whose motor-temperature
sensor reads 15 °C high; a small pump whose current sensor is stuck); ``pumps-same``: 24
pumps of one kind, where the honest answer is one group.

Scores: adjusted Rand index (ARI) and normalised mutual information (NMI) of the found
groups against the truth, every device counted (an odd one out is a group of its own, as
it belongs to none), mean ± std over seeds. Peers in the same run, given the true number
of groups (an advantage ours does not get in ``auto``): k-means on each series resampled
to 256 hourly-mean points and z-normalised (the common baseline), and k-means on each
metric's plain mean and standard deviation (standardised across devices).
"""

from __future__ import annotations

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

__all__ = ["NAB_KINDS", "TASKS", "baseline_meanstd", "baseline_raw", "nab_fleet", "pump_fleet",
           "run"]

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
    """Groups found, an odd one out counted as a group of its own."""
    model.fit(hist)
    labels = model.labels_.to_numpy().copy()
    odd = model.odd_.to_numpy()
    labels[odd] = model.n_groups_ + np.arange(int(odd.sum()))
    return labels


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
