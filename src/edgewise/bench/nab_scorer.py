"""The Numenta Anomaly Benchmark scoring rules, vectorised with NumPy.

This is an independent implementation of NAB v1.1's scorer (``nab/sweeper.py``,
``nab/optimizer.py``, ``nab/runner.py`` in numenta/NAB) that gives the same numbers in
well under a second for the whole corpus:

* The first ``min(floor(0.15 n), 0.15 * 5000)`` records of each file are probationary and
  are not scored (neither detections nor misses).
* Every record whose anomaly score is at or above the threshold is a detection. Inside an
  anomaly window only the *earliest* detection counts; it earns
  ``tpWeight * S(position) / S(-1)`` where ``S(p) = 2 sigmoid(-5 p) - 1`` is the scaled
  sigmoid and ``position = -(right - i + 1) / width`` runs from -1 at the window's left
  edge towards 0 at its right edge. A window with no detection costs ``fnWeight``.
* Every detection outside a window is a false positive costing ``fpWeight * S(d)``
  (negative), with ``d = (i - right_prev) / (width_prev - 1)`` the distance past the
  previous window; before any window (or more than 3 ``width - 1`` after one) ``S = -1``.
* Each profile (standard, reward_low_FP_rate, reward_low_FN_rate) picks one threshold for
  the whole corpus, the one that maximises the summed raw score over every distinct
  anomaly-score value.
* Normalised score: ``100 (raw - null) / (perfect - null)`` where ``perfect`` is the number
  of windows times ``tpWeight`` and ``null`` is the optimised raw score of NAB's null
  detector (a constant 0.5 everywhere).

Examples
--------
>>> import numpy as np
>>> ts = np.arange(100).astype("datetime64[m]")
>>> windows = [(ts[40], ts[49])]
>>> sweep = sweep_file(ts, windows)
>>> scores = np.zeros(100); scores[40] = 1.0          # detects the window's first record
>>> cost = {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0}
>>> round(file_score(sweep, scores, 0.5, cost).score, 6)
1.0
>>> scores[60] = 1.0                                  # plus one false positive after it
>>> round(file_score(sweep, scores, 0.5, cost).score, 4)
0.89
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "PROBATION_PERCENT",
    "CorpusScore",
    "FileScore",
    "FileSweep",
    "ProfileScore",
    "file_score",
    "load_profiles",
    "load_results_dir",
    "load_windows",
    "normalised_score",
    "optimize_threshold",
    "probation_length",
    "read_results_file",
    "scaled_sigmoid",
    "score_corpus",
    "sweep_file",
    "threshold_curve",
]

PROBATION_PERCENT = 0.15
_NO_DETECTION = 1.1  # NAB starts its sweep above every score: all windows missed


def scaled_sigmoid(position: np.ndarray | float) -> np.ndarray:
    """NAB's reward curve: ``2 sigmoid(-5 p) - 1``, and exactly -1 for ``p > 3`` (NAB's
    ``scaledSigmoid`` compares strictly: at ``p == 3`` the curve's own -0.99999939 stands).

    >>> float(scaled_sigmoid(-1.0)) > 0.98, float(scaled_sigmoid(0.0)), float(scaled_sigmoid(3.5))
    (True, 0.0, -1.0)
    >>> bool(-1.0 < float(scaled_sigmoid(3.0)) < -0.999999)
    True
    """
    p = np.asarray(position, dtype=float)
    return np.where(p > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * p)) - 1.0)


def probation_length(n_rows: int, percent: float = PROBATION_PERCENT) -> float:
    """Records at the start of a file that NAB does not score.

    >>> probation_length(4032), probation_length(22695)
    (604, 750.0)
    """
    return min(math.floor(percent * n_rows), percent * 5000)


@dataclass(frozen=True)
class FileSweep:
    """Profile-independent scoring geometry of one data file.

    ``tp_reward`` holds ``S(position)/S(-1)`` inside windows, ``fp_cost`` holds the
    (negative) ``S(distance)`` outside windows; ``window`` is the window index of each
    record (-1 outside); ``scorable`` marks records past the probationary period.
    """

    tp_reward: np.ndarray
    fp_cost: np.ndarray
    window: np.ndarray
    scorable: np.ndarray
    n_windows: int

    @property
    def scored_windows(self) -> np.ndarray:
        """Indices of windows with at least one scorable record (the ones NAB counts)."""
        w = self.window[self.scorable]
        return np.unique(w[w >= 0])


def sweep_file(
    timestamps: Sequence[Any] | np.ndarray,
    windows: Sequence[Sequence[Any]],
    probation_percent: float = PROBATION_PERCENT,
) -> FileSweep:
    """Compute the per-record rewards and costs of one file, as NAB's ``calcSweepScore``.

    Parameters
    ----------
    timestamps
        The file's timestamps in order (anything ``numpy.datetime64`` accepts).
    windows
        ``(start, end)`` pairs; both ends must be timestamps of the file.
    probation_percent
        Share of the file (capped at 5000 records' worth) not scored.
    """
    ts = np.asarray(timestamps, dtype="datetime64[ns]")
    n = len(ts)
    window = np.full(n, -1, dtype=np.int64)
    tp_reward = np.zeros(n)
    fp_cost = np.full(n, -1.0)
    max_tp = float(scaled_sigmoid(-1.0))
    idx = np.arange(n)
    prev_right = -1
    prev_width = 0.0
    for k, (start, end) in enumerate(windows):
        left = _index_of(ts, start)
        right = _index_of(ts, end)
        width = float(right - left + 1)
        # records between the previous window (or the start) and this one
        gap = slice(prev_right + 1, left)
        if prev_right >= 0:
            d = np.abs(prev_right - idx[gap]) / (prev_width - 1.0)
            fp_cost[gap] = scaled_sigmoid(d)
        inside = slice(left, right + 1)
        window[inside] = k
        tp_reward[inside] = scaled_sigmoid(-(right - idx[inside] + 1) / width) / max_tp
        prev_right, prev_width = right, width
    if prev_right >= 0:
        tail = slice(prev_right + 1, n)
        fp_cost[tail] = scaled_sigmoid(np.abs(prev_right - idx[tail]) / (prev_width - 1.0))
    scorable = idx >= probation_length(n, probation_percent)
    return FileSweep(tp_reward, fp_cost, window, scorable, len(windows))


def _index_of(ts: np.ndarray, t: Any) -> int:
    value = np.datetime64(np.asarray(t, dtype="datetime64[ns]"))
    i = int(np.searchsorted(ts, value))
    if i >= len(ts) or ts[i] != value:
        raise ValueError(f"Window limit {t!r} is not a timestamp of the data file.")
    return i


def _events(
    sweeps: Sequence[FileSweep], scores: Sequence[np.ndarray], cost: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray, float]:
    """Score changes as the threshold goes down, keyed by the anomaly score causing them.

    Returns (anomaly scores, score deltas, raw score with no detection at all).
    """
    tp_w, fp_w, fn_w = cost["tpWeight"], cost["fpWeight"], cost["fnWeight"]
    keys: list[np.ndarray] = []
    deltas: list[np.ndarray] = []
    base = 0.0
    for sweep, s in zip(sweeps, scores, strict=True):
        s = np.asarray(s, dtype=float)
        if len(s) != len(sweep.window):
            raise ValueError(
                f"Got {len(s)} anomaly scores for a file of {len(sweep.window)} records."
            )
        ok = sweep.scorable
        out = ok & (sweep.window < 0)
        keys.append(s[out])
        deltas.append(fp_w * sweep.fp_cost[out])
        for w in sweep.scored_windows:
            members = np.flatnonzero(ok & (sweep.window == w))
            base -= fn_w
            order = members[np.argsort(-s[members], kind="stable")]
            best = np.maximum.accumulate(tp_w * sweep.tp_reward[order])
            prev = np.concatenate(([-fn_w], best[:-1]))
            keys.append(s[order])
            deltas.append(best - prev)
    return np.concatenate(keys), np.concatenate(deltas), base


def threshold_curve(
    sweeps: Sequence[FileSweep], scores: Sequence[np.ndarray], cost: Mapping[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Raw corpus score at every candidate threshold, highest threshold first.

    The first candidate is NAB's 1.1 (no detection); the others are the distinct anomaly
    scores of scorable records; a threshold ``t`` counts every score ``>= t``.
    """
    keys, deltas, base = _events(sweeps, scores, cost)
    order = np.argsort(-keys, kind="stable")
    keys, deltas = keys[order], deltas[order]
    total = base + np.cumsum(deltas)
    last_of_group = np.flatnonzero(np.r_[keys[1:] != keys[:-1], True])
    thresholds = np.r_[_NO_DETECTION, keys[last_of_group]]
    totals = np.r_[base, total[last_of_group]]
    if len(keys) and keys[0] == _NO_DETECTION:  # NAB emits no separate 1.1 row then
        thresholds, totals = thresholds[1:], totals[1:]
    return thresholds, totals


def optimize_threshold(
    sweeps: Sequence[FileSweep], scores: Sequence[np.ndarray], cost: Mapping[str, float]
) -> tuple[float, float]:
    """The corpus-wide threshold with the best raw score (ties: the higher threshold)."""
    thresholds, totals = threshold_curve(sweeps, scores, cost)
    best = int(np.argmax(totals))
    return float(thresholds[best]), float(totals[best])


@dataclass(frozen=True)
class FileScore:
    """One file's raw score and record counts at a threshold."""

    score: float
    tp: int
    tn: int
    fp: int
    fn: int


def file_score(
    sweep: FileSweep, scores: np.ndarray, threshold: float, cost: Mapping[str, float]
) -> FileScore:
    """Raw NAB score of one file at ``threshold`` (detections are scores ``>= threshold``)."""
    s = np.asarray(scores, dtype=float)
    ok = sweep.scorable
    hit = ok & (s >= threshold)
    inside = sweep.window >= 0
    score = float(cost["fpWeight"] * sweep.fp_cost[hit & ~inside].sum())
    for w in sweep.scored_windows:
        det = hit & (sweep.window == w)
        if det.any():
            score += cost["tpWeight"] * float(sweep.tp_reward[det].max())
        else:
            score -= cost["fnWeight"]
    tp = int((hit & inside).sum())
    fp = int((hit & ~inside).sum())
    fn = int((ok & inside).sum()) - tp
    tn = int((ok & ~inside).sum()) - fp
    return FileScore(score, tp, tn, fp, fn)


@dataclass
class ProfileScore:
    """One profile's optimised threshold, raw and normalised scores, and per-file rows."""

    profile: str
    threshold: float
    raw: float
    null: float
    perfect: float
    normalized: float
    files: dict[str, FileScore] = field(default_factory=dict)


@dataclass
class CorpusScore:
    """The three (or more) profiles' results for one detector."""

    profiles: dict[str, ProfileScore]

    def normalized(self) -> dict[str, float]:
        """``{profile: normalised score}``."""
        return {k: v.normalized for k, v in self.profiles.items()}


def score_corpus(
    timestamps: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray],
    windows: Mapping[str, Sequence[Sequence[Any]]],
    profiles: Mapping[str, Mapping[str, Any]],
    probation_percent: float = PROBATION_PERCENT,
) -> CorpusScore:
    """Optimise each profile's threshold over the corpus and normalise, as NAB does.

    Parameters
    ----------
    timestamps, scores
        Per data file (key: relative path such as ``"realKnownCause/nyc_taxi.csv"``), the
        record timestamps and the detector's anomaly scores.
    windows
        ``combined_windows.json`` as loaded by :func:`load_windows`; every key of
        ``scores`` must be in it. Its total window count sets the perfect score.
    profiles
        ``profiles.json``: ``{name: {"CostMatrix": {...}}}``.
    """
    names = sorted(scores)
    missing = [n for n in names if n not in windows]
    if missing:
        raise KeyError(f"No label windows for data file {missing[0]!r}.")
    sweeps = [sweep_file(timestamps[n], windows[n], probation_percent) for n in names]
    score_list = [np.asarray(scores[n], dtype=float) for n in names]
    n_windows = sum(len(w) for w in windows.values())
    out: dict[str, ProfileScore] = {}
    for pname, prof in profiles.items():
        cost = prof["CostMatrix"] if "CostMatrix" in prof else prof
        threshold, raw, null, perfect, normalized = normalised_score(
            sweeps, score_list, cost, n_windows)
        files = {
            n: file_score(sw, s, threshold, cost)
            for n, sw, s in zip(names, sweeps, score_list, strict=True)
        }
        out[pname] = ProfileScore(
            profile=pname,
            threshold=threshold,
            raw=raw,
            null=null,
            perfect=perfect,
            normalized=normalized,
            files=files,
        )
    return CorpusScore(out)


def normalised_score(
    sweeps: Sequence[FileSweep],
    scores: Sequence[np.ndarray],
    cost: Mapping[str, Any],
    n_windows: int,
) -> tuple[float, float, float, float, float]:
    """NAB's normalisation for one cost matrix: ``(threshold, raw, null, perfect,
    normalised)``. The threshold is optimised over ``sweeps`` and ``scores``; the null
    detector scores 0.5 everywhere; a perfect one earns ``tpWeight`` per window, of
    ``n_windows`` in all; normalised = 100 (raw - null) / (perfect - null).
    """
    threshold, raw = optimize_threshold(sweeps, scores, cost)
    _, null = optimize_threshold(sweeps, [np.full(len(s), 0.5) for s in scores], cost)
    perfect = n_windows * cost["tpWeight"]
    return threshold, raw, null, perfect, 100.0 * (raw - null) / (perfect - null)


def load_windows(path: str | Path) -> dict[str, list[tuple[np.datetime64, np.datetime64]]]:
    """Read ``combined_windows.json``: ``{relative path: [(start, end), …]}``."""
    raw = json.loads(Path(path).read_text())
    return {
        k: [(np.datetime64(a.replace(" ", "T")), np.datetime64(b.replace(" ", "T"))) for a, b in v]
        for k, v in raw.items()
    }


def load_profiles(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read NAB's ``profiles.json``."""
    return dict(json.loads(Path(path).read_text()))


def read_results_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and anomaly scores from a NAB results CSV (optionally gzip-compressed)."""
    import pandas as pd

    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rt") as f:
        df = pd.read_csv(f, usecols=["timestamp", "anomaly_score"])
    return (
        pd.to_datetime(df["timestamp"]).to_numpy(dtype="datetime64[ns]"),
        df["anomaly_score"].to_numpy(dtype=float),
    )


def load_results_dir(
    path: str | Path, detector: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Read a detector's NAB results folder ``<category>/<detector>_<file>.csv[.gz]``.

    Returns ``(timestamps, scores)`` keyed by the data file's relative path
    (``"<category>/<file>.csv"``). ``detector`` defaults to the folder's name. Where a
    file is there both plain and gzipped, the plain one is read (it is what
    ``edgewise bench nab`` writes; the ``.gz`` is an older, archived run).
    """
    root = Path(path)
    name = detector or root.name
    prefix = f"{name}_"
    timestamps: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    for f in sorted(root.glob("*/*.csv*")):
        base = f.name[: -len(".gz")] if f.name.endswith(".gz") else f.name
        if not base.startswith(prefix) or not base.endswith(".csv"):
            continue
        if f.name.endswith(".gz") and (f.parent / base).exists():
            continue
        key = f"{f.parent.name}/{base[len(prefix):]}"
        timestamps[key], scores[key] = read_results_file(f)
    if not scores:
        raise FileNotFoundError(f"No results files '{prefix}*.csv' under {root}.")
    return timestamps, scores
