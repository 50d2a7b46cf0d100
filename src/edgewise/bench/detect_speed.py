"""Throughput of each detector: replay (``score_many``) and one-at-a-time, beside River.

Every detector sees the same real series (NAB's machine-temperature file when the data
is there, else a synthetic daily cycle), repeated to the requested length. River's
``HalfSpaceTrees`` runs in the same process on the same values, min-max scaled to [0, 1]
as its documentation asks, round-robin with ours, so load hits both alike.

The two ratios to River do not measure the same thing (:data:`RATIOS`). River has no
batch path, so ``replay_vs_river`` divides our *batch* replay (``score_many``) by River's
*one-reading-at-a-time* loop: the goal of issue #3 ("at least 100x River's rate") is set
that way, and it is no like-for-like comparison. ``one_vs_river`` is: one reading at a
time (``score_one`` + ``learn_one``, one dict each) on both sides.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.detect import DETECTORS, Detector, get_detector

__all__ = ["RATIOS", "benchmark_detectors", "check_one_points", "check_sizes", "load_series"]

#: What each ratio to River in ``edgewise bench detect``'s results divides (its JSON holds
#: this too, beside the figures).
RATIOS = {
    "replay_vs_river": ("our batch replay (score_many) / River HalfSpaceTrees one reading at "
                        "a time (River has no batch path): not the same work; issue #3's "
                        "'100x River' goal is set this way"),
    "one_vs_river": ("our one reading at a time (score_one + learn_one) / River "
                     "HalfSpaceTrees one reading at a time: the same work"),
}


NAB_FILE = Path("data") / "realKnownCause" / "machine_temperature_system_failure.csv"


def check_sizes(**sizes: int) -> None:
    """Raise :class:`~edgewise.errors.ConfigError` for the first size below 1.

    >>> check_sizes(points=1000, repeats=0)
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: --repeats must be an int >= 1. Got 0 instead.
    """
    from edgewise.errors import ConfigError

    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be an int >= 1. "
                              f"Got {value!r} instead.")


def check_one_points(one_points: int, points: int) -> None:
    """Raise :class:`~edgewise.errors.ConfigError` where the one-at-a-time runs would read
    more readings than the series has (they would score only ``points`` of them).

    >>> check_one_points(20_000, 500)
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: --one-points must be at most --points (500): each one-at-a-time run reads that many readings of the series. Got 20000.
    """  # noqa: E501
    from edgewise.errors import ConfigError

    if one_points > points:
        raise ConfigError(f"--one-points must be at most --points ({points}): each "
                          f"one-at-a-time run reads that many readings of the series. "
                          f"Got {one_points}.")


def load_series(nab_dir: str | Path | None, n: int) -> tuple[np.ndarray, str]:
    """``n`` values of the NAB series under ``nab_dir`` (tiled), or, with ``nab_dir``
    ``None``, a synthetic cycle. A ``nab_dir`` without the file is an error, not a quiet
    switch to the synthetic series (the runs would not compare with NAB ones).

    >>> load_series("/nonexistent", 10)
    Traceback (most recent call last):
    ...
    edgewise.errors.ConfigError: --nab '/nonexistent' has no data/realKnownCause/machine_temperature_system_failure.csv; give the NAB root (the folder holding data/) or leave --nab out for the synthetic series.
    """  # noqa: E501
    check_sizes(points=n)
    if nab_dir is not None:
        from edgewise.errors import ConfigError

        f = Path(nab_dir) / NAB_FILE
        if not f.is_file():
            raise ConfigError(f"--nab {str(nab_dir)!r} has no {NAB_FILE.as_posix()}; give the "
                              f"NAB root (the folder holding data/) or leave --nab out for the "
                              f"synthetic series.")
        import pandas as pd

        v = pd.read_csv(f)["value"].to_numpy(dtype=float)
        return np.resize(v, n), f"NAB {f.parent.name}/{f.name}"
    rng = np.random.default_rng(0)
    t = np.arange(n)
    return 10 + np.sin(2 * np.pi * t / 288) + 0.1 * rng.standard_normal(n), "synthetic cycle"


def _rate(fn: Callable[[], int]) -> float:
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def benchmark_detectors(
    x: np.ndarray,
    one_at_a_time_points: int = 20_000,
    repeats: int = 3,
    names: list[str] | None = None,
    river: bool = True,
) -> list[dict[str, Any]]:
    """Median points/s per detector for replay and one-at-a-time, plus River's HST.

    Returns one row per detector: ``{"detector", "replay_pps", "replay_points", "one_pps"}``
    (``replay_pps`` is ``None`` for River, which has no batch path; a detector without a
    compiled ``score_many`` replays only a sample of ``replay_points``). ``x``,
    ``one_at_a_time_points`` and ``repeats`` must each be at least 1, and
    ``one_at_a_time_points`` at most ``len(x)`` (:class:`~edgewise.errors.ConfigError`).
    """
    check_sizes(points=len(x), one_points=one_at_a_time_points, repeats=repeats)
    check_one_points(one_at_a_time_points, len(x))
    small = x[:one_at_a_time_points]
    tasks: dict[str, dict[str, Callable[[], int] | None]] = {}
    replay_points: dict[str, int | None] = {"river.HalfSpaceTrees": None}
    for name in names or sorted(DETECTORS):
        warm = get_detector(name)  # compile / load both code paths before timing
        warm.score_many(x[:1000, None], columns=["value"])
        for v in x[:100]:
            warm.score_one({"value": float(v)})
            warm.learn_one({"value": float(v)})
        # a class of its own or a parent (a variant such as context-art that only changes
        # defaults) may override the base class's plain loop
        compiled = DETECTORS[name].score_many is not Detector.score_many
        n_replay = len(x) if compiled else min(len(x), 20_000)  # plain loops: a sample

        def replay(name: str = name, n: int = n_replay) -> int:
            get_detector(name).score_many(x[:n, None], columns=["value"])
            return n

        def one(name: str = name) -> int:
            det = get_detector(name)
            for v in small:
                r = {"value": float(v)}
                det.score_one(r)
                det.learn_one(r)
            return len(small)

        tasks[name] = {"replay": replay, "one": one}
        replay_points[name] = n_replay
    if river:
        try:
            from river.anomaly import HalfSpaceTrees
        except ImportError:  # pragma: no cover - river is a dev dependency
            HalfSpaceTrees = None
        if HalfSpaceTrees is not None:
            lo, hi = float(small.min()), float(small.max())
            scaled = (small - lo) / (hi - lo if hi > lo else 1.0)

            def hst() -> int:
                det = HalfSpaceTrees(seed=42)
                for v in scaled:
                    r = {"value": float(v)}
                    det.score_one(r)
                    det.learn_one(r)
                return len(scaled)

            tasks["river.HalfSpaceTrees"] = {"replay": None, "one": hst}
    # round-robin repeats, so that load from other processes hits every detector alike
    rates: dict[str, dict[str, list[float]]] = {k: {"replay": [], "one": []} for k in tasks}
    for _ in range(repeats):
        for name, fns in tasks.items():
            for mode, fn in fns.items():
                if fn is not None:
                    rates[name][mode].append(_rate(fn))
    return [
        {
            "detector": name,
            "replay_pps": statistics.median(r["replay"]) if r["replay"] else None,
            "replay_points": replay_points.get(name),
            "one_pps": statistics.median(r["one"]),
        }
        for name, r in rates.items()
    ]
