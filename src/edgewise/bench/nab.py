"""Run a detector over the Numenta Anomaly Benchmark and score it with NAB's rules.

Each data file gets a fresh detector that sees the values once, in time order (online,
one configuration for the whole corpus). Results are written in NAB's own layout,
``OUT/<detector>/<category>/<detector>_<file>.csv`` with columns
``timestamp,value,anomaly_score,label``, so NAB's own scorer can read them too; the
scores are then computed by :mod:`edgewise.bench.nab_scorer`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bench._machine import machine_fields
from edgewise.bench.nab_scorer import CorpusScore, load_profiles, load_windows, score_corpus
from edgewise.detect import DEFAULT_DETECTOR, get_detector
from edgewise.errors import ConfigError

__all__ = ["NabRun", "data_files", "run_nab"]

#: Points of the first file a throwaway detector scores, untimed, before the timed runs.
WARMUP_POINTS = 200
#: What ``detect_seconds`` and ``points_per_second`` time (said in the summary).
TIMED = (f"score_many of every file on a fresh detector, after {WARMUP_POINTS} points were "
         "scored untimed to compile/load its code (a once-per-process start-up); reading "
         "files and writing results not timed")


@dataclass
class NabRun:
    """What a NAB run produced: the scores, where the results went, and how long it took."""

    detector: str
    result: CorpusScore
    results_dir: Path
    n_files: int
    n_points: int
    detect_seconds: float

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: normalised scores and thresholds per profile, and the
        machine the points/s were measured on."""
        return {
            "detector": self.detector,
            "files": self.n_files,
            "points": self.n_points,
            "detect_seconds": round(self.detect_seconds, 3),
            "points_per_second": round(self.n_points / max(self.detect_seconds, 1e-9)),
            "timed": TIMED,
            "results_dir": str(self.results_dir),
            "scores": {k: round(v.normalized, 2) for k, v in self.result.profiles.items()},
            "thresholds": {k: v.threshold for k, v in self.result.profiles.items()},
            **machine_fields(),
        }


def data_files(data_dir: str | Path) -> list[str]:
    """Relative paths (``<category>/<file>.csv``) of NAB's data files, sorted."""
    root = Path(data_dir) / "data"
    files = sorted(str(p.relative_to(root)) for p in root.glob("*/*.csv"))
    if not files:
        raise FileNotFoundError(f"No NAB data files '<category>/<file>.csv' under {root}.")
    return files


def nab_file_error(path: Path, what: str) -> ConfigError:
    """The error for a NAB root's file that cannot be read: its path and what it should be."""
    return ConfigError(f"NAB root file {str(path)!r} {what}; a NAB root holds "
                       "labels/combined_windows.json, config/profiles.json and each labelled "
                       "data/<category>/<file>.csv with 'timestamp' and 'value' columns.")


def read_nab_json(path: Path, read: Callable[[Path], object]) -> object:
    """``read(path)`` of a NAB root's JSON file, a :class:`ConfigError` naming it if it fails."""
    try:
        return read(path)
    except FileNotFoundError:
        raise nab_file_error(path, "is missing (no such file)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise nab_file_error(path, f"cannot be read ({exc})") from None
    except ValueError as exc:  # JSONDecodeError, and a time that is not one
        raise nab_file_error(path, f"is not NAB's JSON ({exc})") from None
    except (TypeError, AttributeError) as exc:  # JSON of another shape
        raise nab_file_error(path, f"is not NAB's JSON layout ({exc})") from None


def read_nab_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Record times (datetime64[ns]) and values of one NAB data file, a
    :class:`ConfigError` naming the file where it has no such columns or cannot be read."""
    _, stamps, values = _read_nab_frame(path)
    return stamps, values


def _read_nab_frame(path: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """:func:`read_nab_csv` with the file's DataFrame first."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise nab_file_error(path, "is missing (no such file), though "
                             "labels/combined_windows.json names it") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # pandas' ParserError among them
        raise nab_file_error(path, f"cannot be read as CSV ({exc})") from None
    lacking = [c for c in ("timestamp", "value") if c not in df.columns]
    if lacking:
        raise nab_file_error(path, f"has no {' or '.join(map(repr, lacking))} column (its "
                             f"columns: {', '.join(map(repr, map(str, df.columns)))})")
    if len(df) == 0:
        raise nab_file_error(path, "holds no readings (a header only)")
    try:
        stamps = pd.to_datetime(df["timestamp"]).to_numpy().astype("datetime64[ns]")
        values = df["value"].to_numpy(float)
    except (ValueError, TypeError) as exc:
        raise nab_file_error(path, f"has a 'timestamp' that is not a time or a 'value' that "
                             f"is not a number ({exc})") from None
    return df, stamps, values


def run_nab(
    data_dir: str | Path,
    out_dir: str | Path,
    detector: str = DEFAULT_DETECTOR,
    params: dict[str, Any] | None = None,
    on_file: Callable[[str], None] | None = None,
) -> NabRun:
    """Detect on every NAB file, write NAB-layout results, and score all three profiles.

    Parameters
    ----------
    data_dir
        NAB root holding ``data/``, ``labels/combined_windows.json`` and
        ``config/profiles.json``.
    out_dir
        Where ``<detector>/<category>/<detector>_<file>.csv`` are written.
    detector, params
        Registry name and parameters (the same for every file).
    on_file
        Called with each file's relative path once it is done (progress bars).
    """
    import pandas as pd

    data_dir = Path(data_dir)
    windows = read_nab_json(data_dir / "labels" / "combined_windows.json", load_windows)
    profiles = read_nab_json(data_dir / "config" / "profiles.json", load_profiles)
    assert isinstance(windows, dict) and isinstance(profiles, dict)
    warm = get_detector(detector, **(params or {}))  # fail early on a bad name or parameter
    results_dir = Path(out_dir) / detector
    timestamps: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    n_points = 0
    spent = 0.0
    files = data_files(data_dir)
    # every file is read (and a bad one named, one line) before any result is written
    read = {rel: _read_nab_frame(data_dir / "data" / rel) for rel in files}
    first = read[files[0]][2]
    # untimed: the first score_many compiles (Numba) or loads the detector's code, a one-time
    # cost of the process (0.7 of 0.85 s on the corpus), not of scoring the points
    warm.score_many(first[:WARMUP_POINTS, None], columns=["value"])
    for rel in files:
        df, ts, values = read.pop(rel)
        det = get_detector(detector, **(params or {}))
        t0 = time.perf_counter()
        s = det.score_many(values[:, None], columns=["value"])
        spent += time.perf_counter() - t0
        label = np.zeros(len(ts), dtype=int)
        for a, b in windows.get(rel, []):
            label[(ts >= a) & (ts <= b)] = 1
        category, name = rel.split("/", 1)
        target = results_dir / category / f"{detector}_{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(
            {"timestamp": df["timestamp"], "value": df["value"], "anomaly_score": s, "label": label}
        ).to_csv(target, index=False, float_format="%.6g")
        # score what was written (6 significant digits), as NAB would read it back
        timestamps[rel] = ts
        scores[rel] = np.array([float(f"{v:.6g}") for v in s])
        n_points += len(s)
        if on_file is not None:
            on_file(rel)
    result = score_corpus(timestamps, scores, windows, profiles)
    return NabRun(detector, result, results_dir, len(files), n_points, spent)
