"""How much a NAB score can be trusted: split halves and a file bootstrap.

NAB has 58 files and no held-out split, and its score moves by whole points when a
handful of files gain or lose one detection. Two checks put a number on that:

- **Split halves.** The files, sorted by path, are dealt alternately into two halves
  (``even`` and ``odd``), each scored on its own (threshold optimised and normalised on
  that half, as NAB does for the whole corpus). A detector whose constants were fitted to
  the corpus often scores very differently on the two halves.
- **Choose on one half, score on the other** (:func:`tune_on_half`). A hill-climb over a
  detector's constants on one half; if the other half does not improve with it, the
  search fits those files, not anomalies.
- **File bootstrap.** Files are resampled with replacement; each resample is scored as a
  corpus. The 5-95% range of the normalised score is the spread one should expect on
  another set of streams like NAB's. With a ``reference`` detector's results (e.g.
  Numenta's published per-record results) the same resamples give a paired difference
  and the share of resamples in which the detector beats the reference.

Both read NAB-layout results (what ``edgewise bench nab`` writes), so they also work on
any other NAB detector's published results.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bench.nab_scorer import FileSweep, normalised_score, sweep_file

__all__ = [
    "Robustness",
    "SplitTune",
    "robustness",
    "split_halves",
    "subset_scores",
    "tune_on_half",
]

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def split_halves(names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Deal the sorted file names alternately into two halves (``even``, ``odd``).

    >>> split_halves(["b.csv", "a.csv", "c.csv"])
    (['a.csv', 'c.csv'], ['b.csv'])
    """
    ordered = sorted(names)
    return ordered[0::2], ordered[1::2]


def subset_scores(
    sweeps: Mapping[str, FileSweep],
    scores: Mapping[str, np.ndarray],
    names: Sequence[str],
    profiles: Mapping[str, Mapping[str, Any]],
) -> dict[str, float]:
    """Normalised NAB score of the files ``names`` (repeats allowed) for each profile.

    The threshold is optimised, and the null and perfect scores computed, on these files
    only, exactly as :func:`~edgewise.bench.nab_scorer.score_corpus` does on the corpus.
    """
    missing = [n for n in names if n not in scores or n not in sweeps]
    if missing:
        raise KeyError(f"No scores or label windows for data file {missing[0]!r}.")
    sw = [sweeps[n] for n in names]
    sc = [np.asarray(scores[n], dtype=float) for n in names]
    n_windows = sum(s.n_windows for s in sw)
    if n_windows == 0:
        raise ValueError("These files have no anomaly window: a NAB score needs at least one.")
    out: dict[str, float] = {}
    for pname, prof in profiles.items():
        cost = prof["CostMatrix"] if "CostMatrix" in prof else prof
        out[pname] = normalised_score(sw, sc, cost, n_windows)[4]
    return out


@dataclass
class Robustness:
    """Split-half scores and bootstrap spread of one detector's NAB results.

    ``ci`` holds the 5th and 95th percentiles of the bootstrap scores; with a reference,
    ``diff_mean``/``diff_ci`` are those of (detector - reference) over the same resamples
    and ``p_better`` the share of resamples where the detector scores higher.
    """

    halves: dict[str, dict[str, float]]
    resamples: int
    ci: dict[str, tuple[float, float]]
    sd: dict[str, float]
    reference: str | None = None
    diff_mean: dict[str, float] = field(default_factory=dict)
    diff_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    p_better: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict, scores rounded to 2 decimals."""

        def r(d: Mapping[str, Any]) -> dict[str, Any]:
            return {
                k: (round(v, 2) if isinstance(v, float) else [round(x, 2) for x in v])
                for k, v in d.items()
            }

        out: dict[str, Any] = {
            "halves": {h: r(s) for h, s in self.halves.items()},
            "bootstrap": {"resamples": self.resamples, "ci_5_95": r(self.ci), "sd": r(self.sd)},
        }
        if self.reference is not None:
            out["versus"] = {
                "reference": self.reference,
                "diff_mean": r(self.diff_mean),
                "diff_ci_5_95": r(self.diff_ci),
                "p_better": r(self.p_better),
            }
        return out


def robustness(
    timestamps: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray],
    windows: Mapping[str, Sequence[Sequence[Any]]],
    profiles: Mapping[str, Mapping[str, Any]],
    resamples: int = 200,
    seed: int = 0,
    reference: Mapping[str, np.ndarray] | None = None,
    reference_name: str = "reference",
) -> Robustness:
    """Split-half scores and a file bootstrap of one detector's NAB scores.

    Parameters
    ----------
    timestamps, scores
        Per data file (``"<category>/<file>.csv"``), as :func:`load_results_dir` returns.
    windows, profiles
        NAB's label windows and scoring profiles.
    resamples
        Bootstrap resamples of the file list (each the size of the corpus).
    seed
        Seed of the resampling (the same seed gives the same resamples).
    reference
        Another detector's scores for the same files, compared on the same resamples.

    Examples
    --------
    >>> import numpy as np
    >>> ts = np.arange("2020-01-01", "2020-01-11", dtype="datetime64[D]")
    >>> win = {f"c/{k}.csv": [(ts[6], ts[7])] for k in "abcd"}
    >>> good = {f: np.r_[np.zeros(6), 1.0, np.zeros(3)] for f in win}
    >>> prof = {"standard": {"CostMatrix": {"tpWeight": 1.0, "fpWeight": 0.11,
    ...                                     "fnWeight": 1.0}}}
    >>> r = robustness({f: ts for f in win}, good, win, prof, resamples=5)
    >>> r.halves["even"]["standard"] == r.halves["odd"]["standard"] == r.ci["standard"][0]
    True
    """
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1; got {resamples!r}.")
    names = sorted(scores)
    missing = [n for n in names if n not in windows]
    if missing:
        raise KeyError(f"No label windows for data file {missing[0]!r}.")
    if reference is not None:
        absent = [n for n in names if n not in reference]
        if absent:
            raise KeyError(f"The reference has no scores for data file {absent[0]!r}.")
    sweeps = {n: sweep_file(timestamps[n], windows[n]) for n in names}
    if not any(sweeps[n].n_windows for n in names):
        raise ValueError("These files have no anomaly window: a NAB score needs at least one.")
    halves = {}
    for half, part in zip(("even", "odd"), split_halves(names), strict=True):
        if any(sweeps[n].n_windows for n in part):
            halves[half] = subset_scores(sweeps, scores, part, profiles)
        else:
            halves[half] = {p: float("nan") for p in profiles}
    rng = np.random.default_rng(seed)
    ours: list[dict[str, float]] = []
    refs: list[dict[str, float]] = []
    for _ in range(resamples):
        pick: list[str] = []
        while not any(sweeps[n].n_windows for n in pick):  # a resample needs a window
            pick = [names[i] for i in rng.integers(0, len(names), len(names))]
        ours.append(subset_scores(sweeps, scores, pick, profiles))
        if reference is not None:
            refs.append(subset_scores(sweeps, reference, pick, profiles))
    out = Robustness(halves=halves, resamples=resamples, ci={}, sd={})
    for p in profiles:
        a = np.array([o[p] for o in ours])
        out.ci[p] = (float(np.percentile(a, 5)), float(np.percentile(a, 95)))
        out.sd[p] = float(a.std())
        if reference is not None:
            d = a - np.array([o[p] for o in refs])
            out.diff_mean[p] = float(d.mean())
            out.diff_ci[p] = (float(np.percentile(d, 5)), float(np.percentile(d, 95)))
            out.p_better[p] = float((d > 0).mean())
    if reference is not None:
        out.reference = reference_name
    return out


@dataclass
class SplitTune:
    """A search on one half of NAB's files, scored on both halves and on all files.

    ``before``/``after`` map ``"tuned"``, ``"other"`` and ``"all"`` to the three profiles'
    normalised scores with the starting and the searched parameters.
    """

    detector: str
    tuned_on: str
    steps: int
    params: dict[str, Any]
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict, scores rounded to 2 decimals."""

        def r(d: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
            return {k: {p: round(v, 2) for p, v in s.items()} for k, s in d.items()}

        return {
            "detector": self.detector,
            "tuned_on": self.tuned_on,
            "steps": self.steps,
            "params": self.params,
            "before": r(self.before),
            "after": r(self.after),
        }


def _perturb(
    params: dict[str, Any], keys: Sequence[str], rng: np.random.Generator
) -> dict[str, Any]:
    new = dict(params)
    n = min(len(keys), int(rng.choice([1, 1, 2, 3])))
    for k in [keys[i] for i in rng.choice(len(keys), size=n, replace=False)]:
        v = new[k]
        if isinstance(v, int):
            step = max(1, round(abs(v) * 0.1)) * int(rng.choice([1, 1, 2]))
            new[k] = max(0, v + int(rng.choice([-1, 1])) * step)
        elif v != 0:
            new[k] = float(v * np.exp(rng.normal(0.0, 0.15)))
    return new


def tune_on_half(
    data_dir: str | Path,
    detector: str = "context-likelihood",
    half: str = "even",
    steps: int = 150,
    seed: int = 1,
    frozen: Sequence[str] = ("table_bits", "bins2"),
    on_step: Callable[[int], None] | None = None,
) -> SplitTune:
    """Hill-climb a detector's numeric constants on one half of NAB, score the other half.

    From the detector's defaults, each step moves 1-3 constants (floats by a factor
    ``exp(N(0, 0.15))``, integers by about 10%) and keeps the move if the mean of the three
    profiles' scores on the tuning half rises. If the other half does not rise with it, the
    constants fit those files rather than anomalies: the check NAB itself lacks.

    Parameters
    ----------
    data_dir
        NAB root holding ``data/``, ``labels/combined_windows.json``, ``config/profiles.json``.
    detector
        Registry name; every numeric constructor parameter not in ``frozen`` is searched.
    half
        ``"even"`` or ``"odd"`` (see :func:`split_halves`): the files searched on.
    steps, seed
        Search steps and the seed of the moves.
    """
    import inspect

    from edgewise.bench.nab import data_files, read_nab_csv, read_nab_json
    from edgewise.bench.nab_scorer import load_profiles, load_windows
    from edgewise.detect import DETECTORS
    from edgewise.errors import InvalidParameterError

    if half not in ("even", "odd"):
        raise ValueError(f"half must be 'even' or 'odd'; got {half!r}.")
    if detector not in DETECTORS:
        raise KeyError(f"Unknown detector {detector!r}. Choose one of: {sorted(DETECTORS)}.")
    root = Path(data_dir)
    windows = read_nab_json(root / "labels" / "combined_windows.json", load_windows)
    profiles = read_nab_json(root / "config" / "profiles.json", load_profiles)
    assert isinstance(windows, dict) and isinstance(profiles, dict)
    names = data_files(root)
    values: dict[str, np.ndarray] = {}
    sweeps: dict[str, FileSweep] = {}
    for rel in names:
        stamps, read = read_nab_csv(root / "data" / rel)
        values[rel] = read[:, None]
        sweeps[rel] = sweep_file(stamps, windows.get(rel, []))
    even, odd = split_halves(names)
    part = {"tuned": even if half == "even" else odd, "other": odd if half == "even" else even,
            "all": names}
    cls = DETECTORS[detector]
    start = {
        k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
        if k != "self" and isinstance(p.default, int | float) and not isinstance(p.default, bool)
    }
    keys = [k for k in start if k not in frozen]

    def scores_of(params: Mapping[str, Any], files: Sequence[str]) -> dict[str, float]:
        s = {n: cls(**params).score_many(values[n], columns=["value"]) for n in files}
        return subset_scores(sweeps, s, files, profiles)

    best = dict(start)
    best_val = float(np.mean(list(scores_of(best, part["tuned"]).values())))
    rng = np.random.default_rng(seed)
    for i in range(steps):
        trial = _perturb(best, keys, rng)
        try:
            val = float(np.mean(list(scores_of(trial, part["tuned"]).values())))
        except InvalidParameterError:
            val = -np.inf
        if val > best_val:
            best, best_val = trial, val
        if on_step is not None:
            on_step(i)
    return SplitTune(
        detector=detector,
        tuned_on=half,
        steps=steps,
        params={k: v for k, v in best.items() if v != start[k]},
        before={k: scores_of(start, f) for k, f in part.items()},
        after={k: scores_of(best, f) for k, f in part.items()},
    )
