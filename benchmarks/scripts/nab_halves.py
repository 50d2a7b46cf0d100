"""Score one half of NAB's files under one detector constant's values (NAB round 10).

Design happens on the even half (``split_halves``: files sorted by path, dealt
alternately); the odd half is looked at once, under a rule written before the look. For
each detector (the default and ``context-art``) and each value of ``--param NAME=V1,V2``,
the half's normalised scores (threshold optimised on the half, as NAB does on the corpus)
and, for two values, the files whose scores differ. Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/scripts/nab_halves.py --data ../shared/data/nab \\
        --half even --param glitch_gap=0,5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from edgewise.bench.nab import data_files
from edgewise.bench.nab_robust import split_halves, subset_scores
from edgewise.bench.nab_scorer import load_profiles, load_windows, sweep_file
from edgewise.detect import DETECTORS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--half", choices=("even", "odd"), required=True)
    ap.add_argument("--param", required=True, help="NAME=V1,V2,... (floats)")
    ap.add_argument("--detectors", default="context-likelihood,context-art")
    args = ap.parse_args()
    name, _, vals = args.param.partition("=")
    values = [float(v) for v in vals.split(",")]
    root = args.data
    windows = load_windows(root / "labels" / "combined_windows.json")
    profiles = load_profiles(root / "config" / "profiles.json")
    even, odd = split_halves(data_files(root))
    files = even if args.half == "even" else odd
    series, sweeps = {}, {}
    for rel in files:
        df = pd.read_csv(root / "data" / rel)
        series[rel] = df["value"].to_numpy(float)[:, None]
        sweeps[rel] = sweep_file(pd.to_datetime(df["timestamp"]).to_numpy("datetime64[ns]"),
                                 windows.get(rel, []))
    for det in args.detectors.split(","):
        scores = {}
        for v in values:
            scores[v] = {n: DETECTORS[det](**{name: v}).score_many(series[n], columns=["value"])
                         for n in files}
            got = subset_scores(sweeps, scores[v], files, profiles)
            print(det, args.half, f"{name}={v}", " / ".join(f"{s:.2f}" for s in got.values()))
        if len(values) == 2:
            changed = [n for n in files if not np.array_equal(scores[values[0]][n],
                                                              scores[values[1]][n])]
            print("  files changed:", changed)


if __name__ == "__main__":
    main()
