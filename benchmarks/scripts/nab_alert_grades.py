"""Do the default detector's alerts carry a grade that tells true from false ones? (NAB round 5)

Every alert (score >= 0.8986, NAB's threshold for the default on all three profiles) of
``context-likelihood`` on one half of NAB's files is listed with the evidence behind it,
read from the detector's own state just before the alert reading (no copy of the kernel:
the detector is run in chunks up to each alert and its state read):

- ``exc``: how far the value lies beyond the range seen so far, as a share of that range
  (range novelty fires above 0.007);
- ``lik`` / ``lik_slow``: the short- and slow-window likelihood scores before clipping at 1
  (``-log10(p) / tail_digits``, larger of the two members);
- ``zv``: the value's prediction error ``|x - mean| / (sd + bin width)``;
- ``nal``: the stream's alerts so far (the suppression's own count), ``t`` its age,
  ``since`` readings since its last alert.

Each alert is a ``TP1`` (the first alert in a NAB window: the one that scores), ``TPn`` (a
later one in the same window: free) or ``FP``; ``val`` is what keeping it is worth under
reward_low_FP_rate (an FP ``0.22 * S(distance)``, a TP1 its reward plus the miss it
prevents). Dropping a class of alerts pays there only if it holds more than ~8.5 FPs per
TP1. Usage (from the repository root)::

    PYTHONPATH=src python benchmarks/scripts/nab_alert_grades.py --data ../shared/data/nab \\
        --half even table
    PYTHONPATH=src python benchmarks/scripts/nab_alert_grades.py --data ../shared/data/nab \\
        --half even candidate          # the frozen grading rule, both detectors
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd

from edgewise.bench.nab import data_files
from edgewise.bench.nab_robust import split_halves, subset_scores
from edgewise.bench.nab_scorer import load_profiles, load_windows, sweep_file
from edgewise.detect import context_likelihood as cl
from edgewise.detect.context_likelihood import ContextART, ContextLikelihood

NAB_THRESHOLD = 0.898615  # the default's optimised threshold, all three profiles
# frozen candidate (round 5): likelihood alerts carried by the short window alone, from a
# stream's LATE_ALERTS-th alert on, are graded down to 0.9
LATE_ALERTS = 11


def _unclipped(short: float, mu: float, var: float, sd_min: float, digits: float) -> float:
    sd = max(math.sqrt(var), sd_min)
    if short - mu <= sd:
        return 0.0
    tail = 0.5 * math.erfc((short - mu) / sd / math.sqrt(2.0))
    return -math.log10(tail + 1e-10) / digits


def evidence(det: ContextLikelihood, xv: float) -> dict[str, float]:
    """The evidence behind the score of ``xv``, read from ``det``'s state (not updated)."""
    s, table, p = det.state_, det.table_, det._p
    lik = _unclipped
    ws, ws2, sp_tol, z_w, z_c = int(p[3]), int(p[6]), p[14], p[16], p[17]
    out = {"exc": -np.inf, "lik": 0.0, "lik_slow": 0.0, "zv": 0.0}
    n = s.shape[0]
    for m in range(n):
        warm = int(p[2]) if n == 1 else int(p[2]) - int(p[19]) + 2 * int(p[19]) * m // (n - 1)
        if s[m, cl._T] < warm:
            continue
        rng = s[m, cl._MX] - s[m, cl._MN]
        out["exc"] = max(out["exc"], max(xv - s[m, cl._MX], s[m, cl._MN] - xv) / max(rng, 1e-12))
        mask = np.uint64(table.shape[1] - 1)
        q = math.floor((xv - s[m, cl._X0]) / s[m, cl._W])
        key = cl._mix(cl._mix(np.uint64(1000003), int(s[m, cl._H0])), q) & mask
        nov = 1.0 if s[m, cl._NH] >= 1 and table[m, key] == 0 else 0.0
        z = abs(xv - s[m, cl._M]) / (math.sqrt(s[m, cl._V]) + 1e-9 + s[m, cl._W])
        out["zv"] = max(out["zv"], z)
        raw = max(nov, z_w * (1.0 - math.exp(-z / z_c)))
        short = (s[m, cl._RSUM] - s[m, cl._RING + int(s[m, cl._RI])] + raw) / ws
        short2 = (s[m, cl._RSUM2] - s[m, cl._RING + ws + int(s[m, cl._RI2])] + raw) / ws2
        if s[m, cl._NL] > 50:
            out["lik"] = max(out["lik"], lik(short, s[m, cl._MUL], s[m, cl._VL], p[5], p[18]))
            out["lik_slow"] = max(
                out["lik_slow"], lik(short2, s[m, cl._MUL2], s[m, cl._VL2], p[8], p[18])
            )
    out["range"] = float(sp_tol > 0 and out["exc"] > sp_tol)
    out["nal"] = s[0, cl._NAL]
    out["t"] = s[0, cl._T]
    return out


def alerts(data: str, names: list[str]) -> tuple[pd.DataFrame, dict]:
    """One row per alert of the default on ``names``; also each file's scores and sweep."""
    windows = load_windows(f"{data}/labels/combined_windows.json")
    rows, files = [], {}
    for rel in names:
        df = pd.read_csv(f"{data}/data/{rel}")
        ts = pd.to_datetime(df["timestamp"]).to_numpy("datetime64[ns]")
        v = df["value"].to_numpy(float)
        scores = ContextLikelihood().score_many(v)
        sw = sweep_file(ts, windows[rel])
        files[rel] = {"v": v, "scores": scores, "sweep": sw, "rows": []}
        det, done, seen, last = ContextLikelihood(), 0, {}, None
        rounded = np.array([float(f"{x:.6g}") for x in scores])  # as NAB reads them back
        for i in np.flatnonzero(sw.scorable & (rounded >= NAB_THRESHOLD)):
            det.score_many(v[done:i])
            done = i
            ev = evidence(det, float(v[i]))
            w = int(sw.window[i])
            kind = "FP" if w < 0 else ("TPn" if w in seen else "TP1")
            seen.setdefault(w, i)
            ev.update(
                file=rel,
                i=int(i),
                kind=kind,
                score=float(scores[i]),
                window=w,
                since=(i - last) if last is not None else np.inf,
            )
            last = i
            rows.append(ev)
            files[rel]["rows"].append(ev)
    d = pd.DataFrame(rows)
    val = []
    for _, a in d.iterrows():
        sw = files[a.file]["sweep"]
        if a.kind == "FP":
            val.append(0.22 * sw.fp_cost[a.i])
        elif a.kind == "TPn":
            val.append(0.0)
        else:
            alt = d[(d.file == a.file) & (d.window == a.window) & (d.kind == "TPn")]
            backup = max((sw.tp_reward[j] for j in alt.i), default=-1.0)
            val.append(sw.tp_reward[a.i] - backup)
    d["val"] = val
    return d, files


def _auc(x: np.ndarray, y: np.ndarray) -> float:
    r = pd.Series(x).rank().to_numpy()  # ties share their mean rank
    n1, n0 = y.sum(), len(y) - y.sum()
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def table(d: pd.DataFrame) -> None:
    """Counts, AUC and the best low-FP gain from dropping the weakest alerts, per feature."""
    print(d.kind.value_counts().to_dict())
    lab = d[d.kind != "TPn"]
    for sub, dd in (("all alerts", lab), ("not range novelty", lab[lab.range == 0])):
        y = (dd.kind == "TP1").to_numpy()
        print(f"-- {sub}: {int((~y).sum())} FP, {int(y.sum())} TP1")
        for c in ("lik", "lik_slow", "exc", "zv", "nal", "t", "since"):
            x = dd[c].to_numpy(float)
            x = np.where(np.isfinite(x), x, 1e18)
            best = []
            for asc in (True, False):  # drop the low (resp. high) end of the feature
                gain = -dd.val.to_numpy()[np.argsort(x if asc else -x, kind="stable")].cumsum()
                k = int(np.argmax(gain))
                best.append(f"{gain[k]:+.2f} (n={k + 1})")
            print(
                f"{c:9s} AUC(TP1 higher) {_auc(x, y):.3f}  best low-FP gain dropping the "
                f"lowest: {best[0]}, the highest: {best[1]}"
            )
    print("-- classes (low-FP value of keeping them; dropping pays if the sum is negative)")
    d = d.assign(weak=(d.range == 0) & (d.lik_slow < 1.0))
    for name, m in (
        ("range novelty", d.range == 1),
        ("not range", d.range == 0),
        ("short window only", d.weak),
        (f"short only, nal >= {LATE_ALERTS}", d.weak & (d.nal >= LATE_ALERTS)),
    ):
        s = d[m]
        fp, tp1 = int((s.kind == "FP").sum()), int((s.kind == "TP1").sum())
        print(
            f"{name:26s} FP {fp:3d}  TP1 {tp1:3d}  value {s.val.sum():+7.2f}  "
            f"files {s.file.nunique()}"
        )


def graded(files: dict, detector: str, late: int) -> dict[str, np.ndarray]:
    """Scores with the frozen rule: weak late alerts (short window only) set to 0.9."""
    out = {}
    for rel, f in files.items():
        s = f["scores"] if detector == "context-likelihood" else ContextART().score_many(f["v"])
        s = s.copy()
        for r in f["rows"]:
            if r["score"] >= 0.9 and r["range"] == 0 and r["lik_slow"] < 1.0 and r["nal"] >= late:
                s[r["i"]] = 0.9
        out[rel] = np.array([float(f"{v:.6g}") for v in s])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--half", choices=["even", "odd", "all"], required=True)
    ap.add_argument("what", choices=["table", "candidate"])
    ap.add_argument("--late", type=int, default=LATE_ALERTS)
    a = ap.parse_args()
    names = data_files(a.data)
    even, odd = split_halves(names)
    names = {"even": even, "odd": odd, "all": names}[a.half]
    d, files = alerts(a.data, names)
    if a.what == "table":
        table(d)
        return
    profiles = load_profiles(f"{a.data}/config/profiles.json")
    sweeps = {k: f["sweep"] for k, f in files.items()}
    for det in ("context-likelihood", "context-art"):
        for late in (None, a.late):
            sc = graded(files, det, late if late is not None else 10**9)
            r = subset_scores(sweeps, sc, names, profiles)
            label = "as is" if late is None else f"graded (late={late})"
            print(
                f"{a.half} {det:18s} {label:18s}",
                " / ".join(
                    f"{r[k]:.2f}" for k in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
                ),
            )


if __name__ == "__main__":
    main()
