"""Active-learning benchmark: a simulated person answers only the windows a strategy asks.

For each dataset the history of a fleet is cut into windows
(:func:`edgewise.label.windows.windows_from_series`) and scored by the default detector
ensemble. A strategy asks about ``batch`` windows at a time; the oracle (the dataset's
labels) answers each with normal / anomaly; :class:`WindowFeedbackModel` is refitted on
every answer so far, and the next batch is asked. Budgets count windows in the whole
fleet (not per device): nobody labels a fleet's every hour.

Detection is scored on every window of the dataset (the labelled ones included, as the
system knows them once a person answered):

* **event F1** (headline): an *alarm* is a run of consecutive anomalous-predicted windows
  of one device, cut where it enters or leaves a labelled anomaly (:func:`alarm_pieces`);
  precision = alarm pieces that overlap a labelled anomaly / all pieces; recall =
  labelled anomalies (events) hit by at least one alarm.
* **window F1**: per window, predicted vs oracle.

Datasets:

* ``nab``: the NAB corpus (all 58 files by default; windows of ``len // 100`` readings,
  at least 10); a window is an anomaly if it overlaps a NAB anomaly window.
* ``pumps``: a simulated fleet of centrifugal pumps (4 sensors each, several operating
  states, harmless start-up transients) with injected faults (cavitation, bearing wear,
  seal leak, stuck sensor). ``edgewise.sim`` had not landed when this was written, so the
  generator is :func:`pump_fleet` below.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgewise.bench._machine import machine, machine_fields
from edgewise.bench.nab import read_nab_csv, read_nab_json
from edgewise.bench.nab_scorer import load_profiles, load_windows
from edgewise.errors import InvalidParameterError
from edgewise.label.feedback import WindowFeedbackModel
from edgewise.label.strategies import Pool, make_strategy
from edgewise.label.windows import WindowSet, windows_from_series

__all__ = [
    "BUDGETS",
    "Dataset",
    "NabScoring",
    "alarm_pieces",
    "comparison_lines",
    "event_f1",
    "load_nab",
    "paired_comparison",
    "pump_fleet",
    "run_active",
    "run_benchmark",
    "sim_pump_fleet",
    "window_f1",
]

BUDGETS = (0, 10, 25, 50, 100)
#: a paired gap between active and random counts as a difference below this p-value
PAIRED_ALPHA = 0.05


@dataclass
class Dataset:
    """Windows of a fleet with the oracle's answers.

    ``y`` is True for anomalous windows; ``event`` numbers the anomaly a window belongs
    to (-1 for normal windows); ``fault`` names its class (``"normal"`` otherwise).
    """

    name: str
    windows: WindowSet
    y: np.ndarray
    event: np.ndarray
    fault: np.ndarray
    note: str = ""
    nab: NabScoring | None = None


@dataclass
class NabScoring:
    """What NAB's own scorer needs to score a fleet's window predictions on the corpus.

    An *alarm* (a run of consecutive anomalous windows of one file) becomes one detection
    at the last record of its first window: the earliest moment the whole window was seen.
    The runs are not cut at the labelled anomalies, as event F1 cuts them: a cut puts a
    detection where the labels say an anomaly starts, not where the detector alarmed, so
    alarming on every window of the corpus scored 89.8 of NAB's 100 (the labels themselves
    94.1) where NAB gives it the null score, 0.
    """

    timestamps: dict[str, np.ndarray]  # per file, record times as datetime64[ns]
    windows: dict[str, list[tuple[np.datetime64, np.datetime64]]]
    profiles: dict[str, dict[str, object]]

    def score(self, ws: WindowSet, pred: np.ndarray) -> dict[str, float]:
        """Normalised NAB score per profile of the alarms in ``pred``, each run of alarms
        one detection (the labels take no part: NAB scores the detections against them).

        >>> import numpy as np
        >>> ts = np.arange(0, 100, dtype="datetime64[s]").astype("datetime64[ns]")
        >>> ws = WindowSet(np.array(["f.csv"] * 2), ts[[0, 50]].astype(np.int64),
        ...                ts[[50, 99]].astype(np.int64), np.zeros((2, 1)), np.zeros((2, 1)), [])
        >>> nab = NabScoring({"f.csv": ts}, {"f.csv": [(ts[60], ts[80])]},
        ...                  {"standard": {"CostMatrix": {"tpWeight": 1.0, "fpWeight": 0.11,
        ...                                               "fnWeight": 1.0}}})
        >>> nab.score(ws, np.array([False, False]))["standard"]  # no alarm: the null score
        0.0
        """
        from edgewise.bench.nab_scorer import score_corpus

        if not any(self.windows.values()):  # NAB normalises by the windows: none, no score
            return {name: float("nan") for name in self.profiles}
        scores = {name: np.zeros(len(ts)) for name, ts in self.timestamps.items()}
        uncut = np.zeros(len(pred), bool)  # no labels: a run of alarms is one detection
        starts = [a for a, _, _ in alarm_pieces(pred, uncut, ws.device)]
        for k in starts:
            dev = str(ws.device[k])
            if dev in scores:
                ts = self.timestamps[dev].astype(np.int64)
                i = int(np.searchsorted(ts, ws.end_ns[k], side="left")) - 1
                scores[dev][min(max(i, 0), len(ts) - 1)] = 1.0
        result = score_corpus(self.timestamps, scores, self.windows, self.profiles)
        return {name: round(float(p.normalized), 2) for name, p in result.profiles.items()}


def window_f1(pred: np.ndarray, y: np.ndarray) -> float:
    """F1 of anomalous windows.

    >>> window_f1(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    0.5
    """
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def alarm_pieces(pred: np.ndarray, y: np.ndarray, device: np.ndarray,
                 slack: int = 1) -> list[tuple[int, int, bool]]:
    """Alarms as ``(first, last, true)`` window indices.

    An alarm is a run of consecutive anomalous-predicted windows of one device, cut where
    it enters or leaves labelled anomalies: a piece overlapping a labelled anomaly is a
    true alarm, a piece of only normal windows a false one, except a piece of at most
    ``slack`` windows that touches a true piece (an alarm a little early or late). Cutting
    matters: an uncut run counted once, so alarming on every window of a device scored as
    one true alarm and found all its events.

    >>> y = np.array([0, 1, 1, 0, 0, 0, 0], bool)
    >>> dev = np.array(["a"] * 7)
    >>> alarm_pieces(np.ones(7, bool), y, dev)  # every window: one early is fine, the tail false
    [(0, 2, True), (3, 6, False)]
    """
    pred = np.asarray(pred, bool)
    y = np.asarray(y, bool)
    out: list[tuple[int, int, bool]] = []
    n = len(pred)
    i = 0
    while i < n:
        if not pred[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and pred[j + 1] and device[j + 1] == device[i]:
            j += 1
        segs: list[list[int]] = []  # [first, last, anomalous] runs of one y value
        for k in range(i, j + 1):
            if segs and segs[-1][2] == int(y[k]):
                segs[-1][1] = k
            else:
                segs.append([k, k, int(y[k])])
        pieces: list[list[int]] = []
        for t, (a, b, anom) in enumerate(segs):
            near_true = ((t > 0 and segs[t - 1][2]) or (t + 1 < len(segs) and segs[t + 1][2]))
            if anom or (b - a + 1 <= slack and near_true):
                if pieces and pieces[-1][2] and pieces[-1][1] == a - 1:
                    pieces[-1][1] = b  # joins the true piece before it
                else:
                    pieces.append([a, b, 1])
            else:
                pieces.append([a, b, 0])
        out.extend((a, b, bool(t)) for a, b, t in pieces)
        i = j + 1
    return out


def event_f1(pred: np.ndarray, y: np.ndarray, event: np.ndarray, device: np.ndarray) -> float:
    """F1 of alarms (:func:`alarm_pieces`) against anomaly events.

    >>> y = np.array([0, 1, 1, 0, 0, 0], bool); ev = np.array([-1, 0, 0, -1, -1, -1])
    >>> dev = np.array(["a"] * 6)
    >>> event_f1(np.array([0, 1, 0, 0, 1, 1], bool), y, ev, dev)  # 1 of 2 alarms true
    0.6666666666666666
    """
    pred = np.asarray(pred, bool)
    y = np.asarray(y, bool)
    pieces = alarm_pieces(pred, y, device)
    tp = sum(1 for *_, t in pieces if t)
    fp = len(pieces) - tp
    events = {(device[k], event[k]) for k in np.flatnonzero(y)}
    hit = {(device[k], event[k]) for k in np.flatnonzero(y & pred)}
    if not events or tp == 0:
        return 0.0
    prec = tp / (tp + fp)
    rec = len(hit) / len(events)
    return 2 * prec * rec / (prec + rec)


def load_nab(root: Path, files: Sequence[str] | None = None) -> Dataset:
    """The NAB corpus at ``root`` (``data/`` and ``labels/combined_windows.json``).

    A file of the root that is missing or cannot be read as NAB writes it is a
    :class:`~edgewise.errors.ConfigError` naming it.
    """
    import pandas as pd

    windows = read_nab_json(root / "labels" / "combined_windows.json", load_windows)
    assert isinstance(windows, dict)
    names = sorted(windows) if files is None else list(files)
    profiles = read_nab_json(root / "config" / "profiles.json", load_profiles)
    assert isinstance(profiles, dict)
    parts, ys, evs = [], [], []
    stamps: dict[str, np.ndarray] = {}
    for name in names:
        stamps[name], values = read_nab_csv(root / "data" / name)
        ts = stamps[name].astype(np.int64)
        ws = windows_from_series(values, ts, name, length=max(10, len(values) // 100))
        y = np.zeros(len(ws), bool)
        ev = np.full(len(ws), -1)
        for j, (a, b) in enumerate(windows[name]):
            hit = (ws.end_ns > pd.Timestamp(a).value) & (ws.start_ns <= pd.Timestamp(b).value)
            y |= hit
            ev[hit] = j
        parts.append(ws)
        ys.append(y)
        evs.append(ev)
    y = np.concatenate(ys)
    nab = NabScoring(stamps, {n: windows[n] for n in names}, profiles)
    return Dataset("nab", WindowSet.concat(parts), y, np.concatenate(evs),
                   np.where(y, "anomaly", "normal"),
                   note=f"{len(names)} NAB files", nab=nab)


FAULTS = ("cavitation", "bearing_wear", "seal_leak", "stuck_sensor")


def pump_fleet(n_pumps: int = 12, length: int = 3000, window: int = 30, seed: int = 0,
               ) -> Dataset:
    """A simulated pump fleet with operating states, harmless transients and injected faults.

    Sensors per pump: discharge pressure (bar), flow (m3/h), vibration (mm/s), bearing
    temperature (C); one reading a minute. Each pump switches between 2-3 load states,
    has a start-up transient every ~8 hours (normal, but it trips a z-score), and gets
    1-3 faults of the classes in :data:`FAULTS`.

    >>> ds = pump_fleet(n_pumps=2, seed=1)
    >>> ds.windows.features.shape[0], bool(ds.y.any())
    (200, True)
    """
    rng = np.random.default_rng(seed)
    parts, ys, evs, faults = [], [], [], []
    step = 60 * 10**9
    for p in range(n_pumps):
        t = np.arange(length)
        n_states = int(rng.integers(2, 4))
        loads = rng.uniform(0.5, 1.0, n_states)
        state = np.zeros(length, int)
        pos = 0
        while pos < length:
            dur = int(rng.integers(200, 700))
            state[pos:pos + dur] = rng.integers(0, n_states)
            pos += dur
        load = loads[state]
        load = np.convolve(load, np.ones(5) / 5, mode="same")
        pres = 6.0 * load + rng.normal(0, 0.05, length) + rng.normal(0, 0.3)
        flow = 50.0 * load + rng.normal(0, 0.5, length) + rng.normal(0, 2)
        vib = 2.0 + 1.5 * load + rng.normal(0, 0.1, length)
        temp = 45 + 10 * load + np.cumsum(rng.normal(0, 0.02, length)) + rng.normal(0, 0.2, length)
        for start in range(int(rng.integers(50, 480)), length, 480):
            k = np.arange(min(8, length - start))
            pres[start + k] += 1.5 * np.exp(-k / 2)
            vib[start + k] += 1.0 * np.exp(-k / 2)
        y = np.zeros(length, bool)
        ev = np.full(length, -1)
        fault = np.array(["normal"] * length, dtype=object)
        n_faults = int(rng.integers(1, 4))
        slots = rng.choice(np.arange(300, length - 300, 300), n_faults, replace=False)
        for j, s0 in enumerate(sorted(slots)):
            kind = FAULTS[int(rng.integers(0, len(FAULTS)))]
            s0 = int(s0 + rng.integers(0, 100))
            if kind == "cavitation":
                d = int(rng.integers(20, 60))
                sl = slice(s0, s0 + d)
                pres[sl] -= 0.15 * pres[sl].mean() * rng.uniform(0.7, 1.3)
                vib[sl] += rng.normal(0, 0.6, d)
            elif kind == "bearing_wear":
                d = int(rng.integers(150, 250))
                sl = slice(s0, s0 + d)
                ramp = np.linspace(0, 1, d) ** 2
                vib[sl] += 1.2 * ramp + rng.normal(0, 0.15 * ramp + 1e-9, d)
                temp[sl] += 6 * ramp
            elif kind == "seal_leak":
                d = int(rng.integers(60, 150))
                sl = slice(s0, s0 + d)
                flow[sl] -= 0.12 * flow[sl].mean()
                pres[sl] -= 0.05 * pres[sl].mean()
            else:
                d = int(rng.integers(60, 120))
                sl = slice(s0, s0 + d)
                which = [pres, flow, temp][int(rng.integers(0, 3))]
                which[sl] = which[s0]
            y[sl] = True
            ev[sl] = j
            fault[sl] = kind
        X = np.column_stack([pres, flow, vib, temp])
        ws = windows_from_series(X, t.astype(np.int64) * step + 1_700_000_000 * 10**9,
                                 f"pump-{p:02d}", length=window)
        nw = len(ws)
        bounds = [(i * window, min((i + 1) * window, length)) for i in range(nw)]
        bounds[-1] = (bounds[-1][0], length)
        wy = np.array([y[a:b].any() for a, b in bounds])
        wev = np.array([ev[a:b].max() for a, b in bounds])
        wf = np.array([next((f for f in fault[a:b] if f != "normal"), "normal")
                       for a, b in bounds], dtype=object)
        parts.append(ws)
        ys.append(wy)
        evs.append(wev)
        faults.append(wf)
    return Dataset("pumps", WindowSet.concat(parts), np.concatenate(ys), np.concatenate(evs),
                   np.concatenate(faults),
                   note=f"{n_pumps} simulated pumps x {length} readings, windows of {window}")


def sim_pump_fleet(n_pumps: int = 10, steps: int = 3000, window: int = 30, seed: int = 0,
                   fault_rate_per_h: float = 0.5) -> Dataset:
    """The pump fleet of :mod:`edgewise.sim` (8 physically coupled sensors per pump; spike,
    drift, stuck and bearing-wear faults with ground truth), one reading every 10 s.

    >>> ds = sim_pump_fleet(n_pumps=2, steps=600, seed=1)
    >>> len(ds.windows), ds.windows.scores.shape[1]
    (40, 3)
    """
    from edgewise.sim.pumps import PumpFleet

    fleet = PumpFleet(n_pumps=n_pumps, seed=seed, fault_rate_per_h=fault_rate_per_h)
    t0 = 1_700_000_000 * 10**9
    ts = t0 + np.arange(steps, dtype=np.int64) * 10 * 10**9
    rows: dict[str, list[list[float]]] = {d: [] for d in fleet.device_ids}
    metrics: list[str] = []
    for t in ts:
        for dev, obs in fleet.step(int(t)):
            metrics = metrics or sorted(obs)
            rows[dev].append([obs[m] for m in metrics])
    faults = fleet.labels()
    parts, ys, evs, kinds = [], [], [], []
    for dev in fleet.device_ids:
        ws = windows_from_series(np.array(rows[dev]), ts, dev, length=window)
        y = np.zeros(len(ws), bool)
        ev = np.full(len(ws), -1)
        kind = np.array(["normal"] * len(ws), dtype=object)
        for j, f in enumerate(x for x in faults if x["device_id"] == dev):
            hit = (ws.end_ns > int(f["start_ns"])) & (ws.start_ns <= int(f["end_ns"]))
            y |= hit
            ev[hit] = j
            kind[hit] = f["kind"]
        parts.append(ws)
        ys.append(y)
        evs.append(ev)
        kinds.append(kind)
    return Dataset("sim-pumps", WindowSet.concat(parts), np.concatenate(ys),
                   np.concatenate(evs), np.concatenate(kinds),
                   note=f"edgewise.sim PumpFleet: {n_pumps} pumps x {steps} readings (10 s), "
                   f"{fault_rate_per_h} faults/pump/h, windows of {window}")


def _check_budgets(budgets: Sequence[int], ds: Dataset | None = None) -> list[int]:
    """``budgets`` as ints: at least one, each a whole number >= 0 and, with ``ds``, none
    past its windows (a budget no strategy can reach was left out of the results, and
    :func:`run_benchmark` failed on it with a bare ``KeyError``).

    >>> _check_budgets((0, 10))
    [0, 10]
    >>> _check_budgets((0, -5))
    Traceback (most recent call last):
    ...
    edgewise.errors.InvalidParameterError: The 'budgets' parameter must be ... Got (0, -5) instead.
    """
    ok = len(budgets) > 0 and all(
        isinstance(b, int | np.integer) and not isinstance(b, bool) and b >= 0 for b in budgets)
    if not ok:
        raise InvalidParameterError(
            f"The 'budgets' parameter must be one or more whole numbers >= 0 (labelled "
            f"windows). Got {tuple(budgets)!r} instead.", field="budgets", value=budgets)
    out = [int(b) for b in budgets]
    if ds is not None and max(out) > len(ds.windows):
        raise InvalidParameterError(
            f"The largest budget, {max(out)} labels, is more than dataset {ds.name!r} "
            f"({ds.note}) can give: it has {len(ds.windows)} windows. Give a dataset of at "
            f"least {max(out)} windows, or budgets up to {len(ds.windows)}.",
            field="budgets", value=budgets)
    return out


def run_active(ds: Dataset, strategy: str, seed: int, budgets: Sequence[int] = BUDGETS,
               batch: int = 5, **model_params: float,
               ) -> dict[int, tuple[float, float, float]]:
    """Label up to ``max(budgets)`` windows chosen by ``strategy``; (event F1, window F1,
    NAB standard score or NaN where the dataset is not NAB) of the refitted model at each
    budget.

    Budgets must be whole numbers >= 0, none past the dataset's windows, and ``batch`` at
    least 1 (:class:`~edgewise.errors.InvalidParameterError` otherwise).
    """
    budgets = _check_budgets(budgets, ds)
    if isinstance(batch, bool) or not isinstance(batch, int | np.integer) or batch < 1:
        raise InvalidParameterError(
            f"The 'batch' parameter of run_active must be an int >= 1 (questions asked "
            f"between refits). Got {batch!r} instead.", field="batch", value=batch)
    ws = ds.windows
    n = len(ws)
    y = np.full(n, -1)
    strat = make_strategy(strategy, seed=seed)
    out: dict[int, tuple[float, float, float]] = {}
    asked = 0
    top = max(budgets)
    while True:
        model = WindowFeedbackModel(**model_params).fit(ws, y)
        margin = model.decision_function(ws)  # once: predict() is margin >= 0, and the
        pred = margin >= 0                    # strategies ask the same margins
        if asked in budgets:
            nab = ds.nab.score(ws, pred)["standard"] if ds.nab is not None else float("nan")
            out[asked] = (event_f1(pred, ds.y, ds.event, ws.device), window_f1(pred, ds.y), nab)
        if asked >= top:
            return out
        want = min(batch, top - asked, *[b - asked for b in budgets if b > asked])
        pool = Pool(margin=margin,
                    member_margins=model.member_margins(ws),
                    features=ws.features, groups=ws.device, labels=y)
        pick = strat.select(pool, want)
        if len(pick) == 0:
            return out
        y[pick] = ds.y[pick].astype(int)
        asked += len(pick)


def paired_comparison(active: np.ndarray, random: np.ndarray, budgets: Sequence[int],
                      alpha: float = PAIRED_ALPHA) -> list[dict[str, object]]:
    """Active against random labels seed by seed, at each budget above 0: on how many seeds
    each was ahead, the mean paired gap (active - random) and its sample sd, a paired
    t-test's two-sided p-value, and the verdict ("active ahead", "random ahead" or "no clear
    difference" at ``alpha``; "one seed: no test" with one seed). ``active`` and ``random``
    hold one row per seed and one column per budget, seed ``s`` of each run on the same
    data (a fleet drawn per seed is the same fleet for both).

    A larger mean alone is no win: gaps inside the seeds' spread are "no clear difference".

    >>> a = np.array([[0.2, 0.30, 0.5], [0.2, 0.28, 0.6], [0.2, 0.31, 0.7]])
    >>> r = np.array([[0.2, 0.29, 0.3], [0.2, 0.30, 0.4], [0.2, 0.29, 0.5]])
    >>> [(c["budget"], c["active_ahead_seeds"], c["verdict"])
    ...  for c in paired_comparison(a, r, [0, 10, 25])]
    [(10, 2, 'no clear difference'), (25, 3, 'active ahead')]
    """
    from scipy import stats

    a, r = np.asarray(active, dtype=float), np.asarray(random, dtype=float)
    if a.shape != r.shape or a.ndim != 2 or a.shape[1] != len(budgets):
        raise ValueError(f"active and random must both be (seeds, {len(budgets)} budgets) "
                         f"arrays. Got {a.shape} and {r.shape} instead.")
    n = a.shape[0]
    out: list[dict[str, object]] = []
    for j, k in enumerate(budgets):
        if k <= 0:
            continue
        d = a[:, j] - r[:, j]
        mean = float(d.mean())
        sd = float(d.std(ddof=1)) if n > 1 else None
        p: float | None
        if sd is None:
            p, verdict = None, "one seed: no test"
        else:
            if sd == 0.0:  # every seed the same gap: certain if any, none if zero
                p = 0.0 if mean != 0.0 else 1.0
            else:
                t = mean / (sd / np.sqrt(n))
                p = float(2 * stats.t.sf(abs(t), df=n - 1))
            verdict = ("no clear difference" if p >= alpha
                       else "active ahead" if mean > 0 else "random ahead")
        out.append({"budget": int(k), "seeds": n,
                    "active_ahead_seeds": int((d > 0).sum()),
                    "random_ahead_seeds": int((d < 0).sum()), "tied_seeds": int((d == 0).sum()),
                    "mean_gap": round(mean, 4), "sd_gap": None if sd is None else round(sd, 4),
                    "p_value": None if p is None else round(p, 4), "verdict": verdict})
    return out


def _events(ds: Dataset) -> int:
    """How many anomaly events (a device's numbered anomaly) ``ds`` holds."""
    return len({(d, e) for d, e in zip(ds.windows.device[ds.y], ds.event[ds.y], strict=True)})


def run_benchmark(
    datasets: Sequence[Dataset | Callable[[int], Dataset]],
    *,
    strategies: Sequence[str] = ("mix", "random"),
    seeds: int = 5,
    budgets: Sequence[int] = BUDGETS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, object]]:
    """Mean and spread over ``seeds`` of event and window F1 for each strategy and budget,
    each seed's event F1 (``<strategy>_f1_by_seed``), and, with both ``mix`` (active) and
    ``random``, their seed-by-seed comparison (``active_vs_random``:
    :func:`paired_comparison`); each dataset's entry records the machine it ran on.

    A dataset given as a callable is built anew for each seed (``make(seed)``), so the
    spread also covers different fleets; a fixed dataset varies only the strategies' seeds.
    A budget past a dataset's windows is refused before its strategies run.
    """
    budgets = _check_budgets(budgets)
    if isinstance(seeds, bool) or not isinstance(seeds, int | np.integer) or seeds < 1:
        raise InvalidParameterError(
            f"The 'seeds' parameter of run_benchmark must be an int >= 1 (runs to average "
            f"over). Got {seeds!r} instead.", field="seeds", value=seeds)
    results: dict[str, dict[str, object]] = {}
    for item in datasets:
        t0 = time.perf_counter()
        per_seed = [item(s) for s in range(seeds)] if callable(item) else [item] * seeds
        for each in per_seed:
            _check_budgets(budgets, each)
        ds = per_seed[0]
        note = ds.note + (" (a new fleet per seed)" if callable(item) else "")
        entry: dict[str, object] = {"budgets": list(budgets), "note": note,
                                    "windows": len(ds.windows),
                                    "anomalous_windows": int(ds.y.sum()),
                                    "events": _events(ds)}
        if callable(item):  # the counts above are seed 0's; each seed's fleet has its own
            entry["windows_by_seed"] = [len(d.windows) for d in per_seed]
            entry["anomalous_windows_by_seed"] = [int(d.y.sum()) for d in per_seed]
            entry["events_by_seed"] = [_events(d) for d in per_seed]
        by_seed: dict[str, np.ndarray] = {}
        for name in strategies:
            runs = [run_active(per_seed[s], name, s, budgets) for s in range(seeds)]
            ev = np.array([[r[b][0] for b in budgets] for r in runs])
            wn = np.array([[r[b][1] for b in budgets] for r in runs])
            key = "active" if name == "mix" else name
            by_seed[key] = ev
            entry[f"{key}_f1"] = [round(float(v), 4) for v in ev.mean(axis=0)]
            entry[f"{key}_f1_std"] = [round(float(v), 4) for v in ev.std(axis=0)]
            entry[f"{key}_f1_by_seed"] = [[round(float(v), 4) for v in row] for row in ev]
            entry[f"{key}_window_f1"] = [round(float(v), 4) for v in wn.mean(axis=0)]
            entry[f"{key}_window_f1_std"] = [round(float(v), 4) for v in wn.std(axis=0)]
            if ds.nab is not None:
                nb = np.array([[r[b][2] for b in budgets] for r in runs])
                # None (JSON null) where the files hold no anomaly window to score against
                entry[f"{key}_nab"] = [None if np.isnan(v) else round(float(v), 2)
                                       for v in nb.mean(axis=0)]
                entry[f"{key}_nab_std"] = [None if np.isnan(v) else round(float(v), 2)
                                           for v in nb.std(axis=0)]
            if progress:
                progress(f"{ds.name}: {name} done")
        if "active_f1" in entry and "random_f1" in entry:
            a, r = entry["active_f1"], entry["random_f1"]
            assert isinstance(a, list) and isinstance(r, list)
            b = list(budgets)
            if 0 in b and 25 in b and 100 in b:
                gain_r100 = r[b.index(100)] - r[b.index(0)]
                gain_a25 = a[b.index(25)] - a[b.index(0)]
                entry["gain_ratio_active25_vs_random100"] = (
                    round(gain_a25 / gain_r100, 3) if gain_r100 > 0 else None)
            # seed by seed, not mean against mean: a larger mean inside the spread is no win
            entry["active_vs_random"] = paired_comparison(by_seed["active"], by_seed["random"],
                                                          b)
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        entry.update(machine_fields())
        results[ds.name] = entry
    return results


def to_markdown(results: dict[str, dict[str, object]], command: str) -> str:
    """The results as a Markdown report (tables of mean ± std per budget)."""
    lines = ["# Active learning: labels chosen by our strategy vs at random", "",
             f"Command: `{command}`", "",
             f"Machine: {machine()}, Python {platform.python_version()}.", "",
             "Headline metric: event F1 (alarm precision x",
             "event recall, alarms cut at labelled anomalies, see `edgewise/bench/active.py`);",
             "window F1 below it. Mean ± std over",
             "seeds. `active` = adaptive DefaultMix (weakest alarms, strongest alarms, ensemble",
             "disagreement, novelty; Thompson sampling gives more questions to the strategies",
             "whose answers contradicted the model), batches of 5 questions, one per device per",
             "batch; WindowFeedbackModel (per-device thresholds + pattern memory + a fleet-wide",
             "classifier, used only when cross-validation on the answers says it helps) is",
             "refitted after each batch. `random` uses the same model.", "",
             "Notes:", "",
             "- Budgets count labelled windows in the whole fleet/corpus, not per device.",
             "- F1 is computed over every window, the labelled ones included (the system",
             "  knows what a person answered); the label-free baseline is budget 0.",
             "- On NAB the data are fixed, so the spread there comes from the strategies'",
             "  seeds only (random picks; the mix's Thompson draws); the pump datasets draw a",
             "  new fleet per seed, so their spread covers different fleets too.",
             "- `pumps` is the benchmark's own generator (`pump_fleet`); `sim-pumps` is",
             "  `edgewise.sim.PumpFleet` (it landed on main while this was written).",
             "- NAB score (NAB only): NAB's standard profile, scored by our reimplementation",
             "  of NAB's scorer; each alarm (a run of anomalous windows, not cut at the labels",
             "  as event F1 cuts it: NAB scores detections, which the labels must not place)",
             "  is one detection at the last record of its first window. It rewards early",
             "  alarms and charges every extra one, so it can fall while F1 rises.", ""]
    for name, e in results.items():
        budgets = e["budgets"]
        assert isinstance(budgets, list)
        if "anomalous_windows_by_seed" in e:  # a fleet per seed: seed 0's counts are not all
            counts = (f"per seed (0, 1, ...): windows {_listed(e['windows_by_seed'])}, "
                      f"anomalous windows {_listed(e['anomalous_windows_by_seed'])}, "
                      f"anomaly events {_listed(e['events_by_seed'])}")
        else:
            counts = (f"{e['windows']} windows, {e['anomalous_windows']} anomalous, "
                      f"{e['events']} anomaly events")
        lines += [f"## {name}", "", f"{e['note']}; {counts}; {e['seconds']} s.", ""]
        strategies = [k[:-3] for k in e if k.endswith("_f1") and not k.endswith("window_f1")]
        metrics = [("event F1", "_f1"), ("window F1", "_window_f1")]
        if any(k.endswith("_nab") for k in e):
            metrics.append(("NAB standard score", "_nab"))
        for metric, suffix in metrics:
            lines += [f"{metric}:", "", "| strategy | " + " | ".join(map(str, budgets)) + " |",
                      "|---" * (len(budgets) + 1) + "|"]
            for s in strategies:
                m, sd = e[s + suffix], e[s + suffix + "_std"]
                assert isinstance(m, list) and isinstance(sd, list)
                lines.append(f"| {s} | " + " | ".join("n/a" if a is None else
                                                      f"{a:.3f} ± {b:.3f}" if suffix != "_nab"
                                                      else f"{a:.2f} ± {b:.2f}"
                                                      for a, b in zip(m, sd, strict=True)) + " |")
            lines.append("")
        lines += [*comparison_lines(e), ""]
    return "\n".join(lines) + "\n"


def _listed(values: object) -> str:
    """Comma-separated values of a list.

    >>> _listed([119, 121])
    '119, 121'
    """
    assert isinstance(values, list)
    return ", ".join(map(str, values))


def comparison_lines(entry: dict[str, object]) -> list[str]:
    """The lines comparing active with random labels in one dataset's results: the gain
    ratio (goal >= 0.8) and, seed by seed, at which budgets either is clearly ahead
    (``active_vs_random``: :func:`paired_comparison`); or, in a run without both the
    ``mix`` (active) and ``random`` strategies, one line saying they need both (they
    printed ``None`` then, as though measured). An entry with means only (results made
    before the paired comparison) says so: its comparison of means tested no spread.

    >>> for line in comparison_lines({
    ...     "budgets": [0, 25, 100], "active_f1": [0.2, 0.5, 0.6], "random_f1": [0.2, 0.3, 0.6],
    ...     "gain_ratio_active25_vs_random100": 0.75, "active_vs_random": [
    ...         {"budget": 25, "seeds": 5, "active_ahead_seeds": 5, "random_ahead_seeds": 0,
    ...          "tied_seeds": 0, "mean_gap": 0.2, "sd_gap": 0.05, "p_value": 0.0008,
    ...          "verdict": "active ahead"},
    ...         {"budget": 100, "seeds": 5, "active_ahead_seeds": 3, "random_ahead_seeds": 2,
    ...          "tied_seeds": 0, "mean_gap": 0.004, "sd_gap": 0.03, "p_value": 0.78,
    ...          "verdict": "no clear difference"}],
    ... }):
    ...     print(line)
    Gain with 25 active labels / gain with 100 random labels (event F1): 0.75 (goal >= 0.8).
    Active vs random, seed by seed (event F1; paired t-test, p < 0.05):
    - 25 labels: active ahead (active ahead on 5 of 5 seeds, random on 0; gap +0.200, sd 0.050, p = 0.0008).
    - 100 labels: no clear difference (active ahead on 3 of 5 seeds, random on 2; gap +0.004, sd 0.030, p = 0.78).
    >>> comparison_lines({"budgets": [0, 25, 100], "active_f1": [0.2, 0.5, 0.6]})[0][:40]
    "Gain and 'active beats random' need both"
    """  # noqa: E501
    budgets = entry["budgets"]
    assert isinstance(budgets, list)
    run = [k[:-3] for k in entry if k.endswith("_f1") and not k.endswith("window_f1")]
    if "active_f1" not in entry or "random_f1" not in entry:
        return [("Gain and 'active beats random' need both strategies 'mix' (active) and "
                 f"'random'; this run had {', '.join(run) or 'none'} only.")]
    if "gain_ratio_active25_vs_random100" not in entry:
        gain = "n/a (needs the budgets 0, 25 and 100)"
    else:
        ratio = entry["gain_ratio_active25_vs_random100"]
        gain = "n/a (100 random labels gained nothing)" if ratio is None else str(ratio)
    lines = [(f"Gain with 25 active labels / gain with 100 random labels (event F1): {gain} "
              "(goal >= 0.8).")]
    paired = entry.get("active_vs_random")
    if isinstance(paired, list):
        lines.append(f"Active vs random, seed by seed (event F1; paired t-test, "
                     f"p < {PAIRED_ALPHA:g}):")
        for c in paired:
            assert isinstance(c, dict)
            test = ("" if c["p_value"] is None
                    else f", sd {c['sd_gap']:.3f}, p = {c['p_value']:.2g}")
            lines.append(f"- {c['budget']} labels: {c['verdict']} (active ahead on "
                         f"{c['active_ahead_seeds']} of {c['seeds']} seeds, random on "
                         f"{c['random_ahead_seeds']}; gap {c['mean_gap']:+.3f}{test}).")
        return lines
    beats = [k for k in budgets if k > 0]
    lines.append(f"Mean event F1 of active above random's (means only: no seed-by-seed test, "
                 f"the spread not weighed) at budgets {beats}: "
                 f"{entry.get('active_beats_random')}.")
    return lines
