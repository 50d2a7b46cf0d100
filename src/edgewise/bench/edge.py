"""``edgewise bench edge``: size, RAM and latency of exported models, and their parity.

Detectors: the default univariate detector
(:class:`~edgewise.detect.context_likelihood.ContextLikelihood`) and the cheapest one
(:class:`~edgewise.detect.zscore.EWZScore`) exported to C, run over a real NAB series (the
default one also over all 58); the default multivariate one (Mahalanobis) in C and ONNX over
four NAB EC2 CPU series side by side. RUL (``rul``): the library's RUL model as ``bench cmapss``
builds it, cut to a 32 KB flash budget (the cut chosen on held-out *training* units, see
:func:`rul_cut_holdout` and :func:`choose_cut`) and scored once on the FD001 test units against
their true RUL capped at 125, the published C-MAPSS convention (``rmse_uncapped``: against the
raw RUL). RUL stand-in (``rul_standin``): a gradient-boosted tree regressor trained here on
C-MAPSS FD001 training windows (units 1-80 train, every window of units 81-100 scores, against
RUL capped at 125: another test set than ``rul``'s), exported to C (float32 and int8) and ONNX.
"""

from __future__ import annotations

import gzip
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["NAB_SERIES", "SECTIONS", "choose_cut", "cmapss_fd001_windows", "nab_matrix",
           "nab_values", "rul_cut_holdout", "run"]

NAB_SERIES = "realKnownCause/machine_temperature_system_failure.csv"
#: FD001 sensors that vary (the other seven are constant or nearly so).
CMAPSS_SENSORS = (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)
RUL_CAP = 125


def nab_values(shared_data: str | Path, series: str = NAB_SERIES) -> np.ndarray:
    """The ``value`` column of one NAB series."""
    path = Path(shared_data) / "nab" / "data" / series
    raw = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=1, dtype=np.float64)
    return np.asarray(raw, dtype=np.float64)


def cmapss_fd001_windows(
    shared_data: str | Path, window: int = 30, test_from_unit: int = 81
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windowed features of C-MAPSS FD001 train: (X_train, y_train, X_test, y_test).

    For each unit and cycle (from cycle ``window`` on), each informative sensor gives its last
    value, its mean over the last ``window`` cycles and its least-squares slope over them;
    the target is the remaining useful life capped at 125 cycles. Units below
    ``test_from_unit`` train, the rest test.
    """
    path = Path(shared_data) / "cmapss" / "train_FD001.txt.gz"
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f)
    cols = [4 + s for s in CMAPSS_SENSORS]  # unit, cycle, 3 settings, then sensors 1..21
    t = np.arange(window, dtype=np.float64)
    tc = (t - t.mean()) / ((t - t.mean()) ** 2).sum()
    Xs, ys, units = [], [], []
    for unit in np.unique(data[:, 0]):
        d = data[data[:, 0] == unit]
        s = d[:, cols]
        life = len(d)
        for end in range(window, life + 1):
            w = s[end - window:end]
            Xs.append(np.concatenate([w[-1], w.mean(axis=0), tc @ w]))
            ys.append(min(life - end, RUL_CAP))
            units.append(unit)
    X, y, u = np.asarray(Xs), np.asarray(ys, dtype=np.float64), np.asarray(units)
    train = u < test_from_unit
    return X[train], y[train], X[~train], y[~train]


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(a) - np.asarray(b)) ** 2)))


def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _one_at_a_time(make: Callable[[], Any], rows: list[dict[str, Any]], repeats: int,
                   warm: bool = True) -> float:
    """Median seconds per reading of ``score_one`` then ``learn_one`` over ``rows``, each of
    the ``repeats`` passes on a fresh detector from ``make`` (a pass on a used one would
    time a warmer state than a device starts in).

    With ``warm`` one untimed pass on a fresh detector comes first, so the process's
    one-time costs (compiling, loading) are not timed, as they are not in the C and batch
    figures, which are timed after a run; ``warm=False`` where the caller has just made
    such a pass (with ``--repeats 1`` the cold pass was the whole figure: twice the warm)."""
    def one_pass() -> None:
        d = make()
        for x in rows:
            d.score_one(x)
            d.learn_one(x)

    if warm:
        one_pass()
    return _median_time(one_pass, repeats) / len(rows)


def _bench_detector(det: Any, values: np.ndarray, repeats: int, onnx: bool) -> dict[str, Any]:
    """One streaming detector: Python vs C (and ONNX when it has a graph) on ``values``."""
    from edgewise.edge import export

    name = type(det).__name__
    py_scores = det.clone().score_many(values)
    c_det = export(det, format="c", name=name.lower())
    c_scores = c_det.score_many(values)
    t_c = _median_time(lambda: c_det.score_many(values), repeats)

    res: dict[str, Any] = {
        "detector": name,
        "series": NAB_SERIES,
        "readings": len(values),
        "c_ram_bytes": c_det.ram_bytes,
        "c_flash_tables_bytes": c_det.flash_bytes,
        "c_code_bytes": c_det.code_bytes(),
        "c_ns_per_reading": t_c / len(values) * 1e9,
        "python_ns_per_reading": _one_at_a_time(
            det.clone, [{"v": v} for v in values[:5000]], repeats) * 1e9,
        "python_batch_ns_per_reading": _median_time(
            lambda: det.clone().score_many(values), repeats) / len(values) * 1e9,
        "parity_max_abs_err": float(np.abs(c_scores - py_scores).max()),
        "alerts_python": int((py_scores >= 0.9).sum()),
        "alerts_c": int((c_scores >= 0.9).sum()),
    }
    if onnx:
        onnx_det = export(det, format="onnx", name=name.lower())
        one = {k: np.array([1.0], np.float32) for k in ("value", "mean", "var", "n")}
        res["onnx_ns_per_call"] = _median_time(
            lambda: [onnx_det.run(one) for _ in range(1000)], repeats) / 1000 * 1e9
        res["onnx_bytes"] = onnx_det.size_bytes
    return res


def _all_nab_parity(shared_data: str | Path) -> dict[str, Any]:
    """The default detector's C against Python on every NAB series: worst error, alerts, and
    the series whose transitions overflow the 2 KiB key set (then a big enough set's parity)."""
    from edgewise.detect import default_detector
    from edgewise.edge import export
    from edgewise.edge.export_detectors import export_context_likelihood_c

    c_det = export(default_detector(), format="c", name="clik_all")
    files = sorted((Path(shared_data) / "nab" / "data").glob("*/*.csv"))
    worst, alerts_py, alerts_c, readings, need_max = 0.0, 0, 0, 0, 0
    differing: list[str] = []
    series = []
    for f in files:
        rel = str(f.relative_to(Path(shared_data) / "nab" / "data"))
        v = nab_values(shared_data, rel)
        d = default_detector()
        py, c = d.score_many(v), c_det.score_many(v)
        err = float(np.abs(py - c).max())
        worst = max(worst, err)
        need_max = max(need_max, int(np.count_nonzero(d.table_)))
        if err > 1e-9:
            differing.append(rel)
        alerts_py += int((py >= 0.9).sum())
        alerts_c += int((c >= 0.9).sum())
        readings += len(v)
        series.append((v, py))
    big = export_context_likelihood_c(default_detector(), name="clik_big", capacity=need_max + 1)
    worst_big = max(float(np.abs(big.score_many(v) - py).max()) for v, py in series)
    capacity = int(c_det.files["clik_all.h"].split("CLIK_ALL_CAPACITY ")[1].split()[0])
    return {"series": len(files), "readings": readings, "capacity": capacity,
            "parity_max_abs_err": worst, "series_differing": differing,
            "alerts_python": alerts_py, "alerts_c": alerts_c,
            "keys_needed_max": need_max, "exact_capacity_ram_bytes": big.ram_bytes,
            "exact_capacity_parity_max_abs_err": worst_big}


def nab_matrix(shared_data: str | Path, n_metrics: int = 4) -> np.ndarray:
    """NAB's EC2 CPU series side by side (same length): a real multi-metric device."""
    files = sorted((Path(shared_data) / "nab" / "data" / "realAWSCloudwatch").glob(
        "ec2_cpu_utilization_*.csv"))[:n_metrics]
    cols = [nab_values(shared_data, f"realAWSCloudwatch/{f.name}") for f in files]
    n = min(len(c) for c in cols)
    return np.stack([c[:n] for c in cols], axis=1)


def _bench_multivariate(shared_data: str | Path, repeats: int) -> dict[str, Any]:
    """The default multivariate detector: streaming C vs Python, frozen ONNX T² vs Python."""
    from edgewise.detect import default_multivariate
    from edgewise.edge import export
    from edgewise.edge.export_detectors import export_mahalanobis_c

    X = nab_matrix(shared_data)
    names = [f"cpu{i}" for i in range(X.shape[1])]
    rows = [dict(zip(names, row, strict=True)) for row in X]
    det = default_multivariate()
    py = []
    for x in rows:
        py.append(det.score_one(x))
        det.learn_one(x)
    # the scored pass above ran this path on a fresh detector: the timed ones start warm
    t_py = _one_at_a_time(default_multivariate, rows, repeats, warm=False)
    c_det = export_mahalanobis_c(default_multivariate(), name="maha", metrics=names)
    c_scores = c_det.score_many(X)
    t_c = _median_time(lambda: c_det.score_many(X), repeats) / len(X)
    g = export(det, format="onnx", name="maha")
    t2 = g.run({"x": X})[0]
    ref = np.array([float(dz @ w) for dz, w in
                    (det._solve(det._vector(dict(zip(names, r, strict=True)), False))
                     for r in X)])
    t_o = _median_time(lambda: [g.run({"x": X[:1]}) for _ in range(1000)], repeats) / 1000
    return {
        "detector": "Mahalanobis", "metrics": len(names), "readings": len(X),
        "data": "NAB realAWSCloudwatch ec2_cpu_utilization_* (first 4, side by side)",
        "c_ram_bytes": c_det.ram_bytes, "c_code_bytes": c_det.code_bytes(),
        "c_ns_per_reading": t_c * 1e9, "python_ns_per_reading": t_py * 1e9,
        "parity_max_abs_err": float(np.abs(c_scores - np.array(py)).max()),
        "alerts_python": int((np.array(py) >= 0.9).sum()),
        "alerts_c": int((c_scores >= 0.9).sum()),
        "onnx_bytes": g.size_bytes, "onnx_ns_per_call": t_o * 1e9,
        "onnx_t2_max_rel_err": float(np.max(np.abs(t2 - ref) / np.maximum(1.0, np.abs(ref)))),
    }


FLASH_BUDGET = 32 * 1024
#: Depths tried for the RUL model's flash-budget cut (None: uncut), each with every tenth
#: prefix of its trees.
CUT_DEPTHS: tuple[int | None, ...] = (None, 10, 8, 7, 6, 5, 4)


def rul_cut_holdout(train: Any, unit_column: str = "unit", time_column: str = "cycle",
                    fraction: float = 0.2, points: int = 10, min_rows: int = 31,
                    seed: int = 0) -> tuple[Any, Any, np.ndarray]:
    """Split C-MAPSS training histories to choose a cut without the test set.

    Returns ``(fit_part, held, truth)``: the histories of the units kept for fitting, and
    ``held``: each of a seeded ``fraction`` of the units cut after ``points`` random rows
    (keeping at least ``min_rows`` rows, FD001's shortest test history), every cut a unit
    of its own (numbered 1, 2, ...) as the test units are truncated histories; ``truth``
    is each cut's remaining life (its unit's last ``time_column`` value minus the cut's,
    uncapped), in ``held``'s unit order.
    """
    import pandas as pd

    if not 0 < fraction < 1:
        raise ValueError(f"fraction of training units to hold out must lie in (0, 1); got "
                         f"{fraction!r}")
    rng = np.random.default_rng(seed)
    units = np.unique(train[unit_column].to_numpy())
    n_held = max(1, round(len(units) * fraction))
    if n_held >= len(units):
        raise ValueError(f"rul_cut_holdout needs at least 2 training units to hold one out; "
                         f"got {len(units)}")
    held_units = np.sort(rng.choice(units, size=n_held, replace=False))
    keep = ~train[unit_column].isin(held_units)
    parts, truth, new_id = [], [], 0
    for u in held_units:
        hist = train[train[unit_column] == u].sort_values(time_column)
        if len(hist) < min_rows:
            continue
        ends = np.sort(rng.choice(np.arange(min_rows, len(hist) + 1),
                                  size=min(points, len(hist) - min_rows + 1), replace=False))
        last = float(hist[time_column].iloc[-1])
        for end in ends:
            new_id += 1
            part = hist.iloc[:end].copy()
            part[unit_column] = new_id
            parts.append(part)
            truth.append(last - float(part[time_column].iloc[-1]))
    if not parts:
        raise ValueError(f"no held-out training unit has the {min_rows} rows a cut keeps")
    held = pd.concat(parts, ignore_index=True)
    return train[keep].reset_index(drop=True), held, np.asarray(truth, dtype=np.float64)


def choose_cut(deployed: Any, chooser: Any, X_val: np.ndarray, y_val: np.ndarray,
               finish: Callable[[np.ndarray], np.ndarray], size: Callable[[Any], int],
               reference: Callable[[Any], Any], budget: int = FLASH_BUDGET,
               ) -> tuple[float, int, int | None]:
    """``(rmse, trees, depth)``: the prefix/depth cut to ship of the tree table ``deployed``.

    A cut is a candidate when ``size`` of ``deployed`` so cut fits ``budget`` bytes (what
    ships); it is judged by the same cut of ``chooser``, a table fitted without the
    validation rows, run as ``reference`` of it computes (numpy, as the C does) on
    ``X_val`` and finished by ``finish``: the lowest RMSE against ``y_val`` wins. Test data
    takes no part (before, the cut with the lowest *test* RMSE of about 100 was shipped).
    """
    from edgewise.edge import compress

    Xv = np.asarray(X_val, dtype=np.float64).astype(np.float32)
    best: tuple[float, int, int | None] | None = None
    for d in CUT_DEPTHS:
        for k in range(10, min(deployed.n_trees, chooser.n_trees) + 1, 10):
            if size(compress.prune_trees(deployed, max_trees=k, max_depth=d)) > budget:
                break
            cut = compress.prune_trees(chooser, max_trees=k, max_depth=d)
            r = _rmse(finish(reference(cut).predict(Xv)), y_val)
            if best is None or r < best[0]:
                best = (r, k, d)
    if best is None:
        raise ValueError(f"no cut of at least 10 trees fits {budget} bytes")
    return best


def _bench_rul_model(shared_data: str | Path, repeats: int) -> dict[str, Any]:
    """The library's RUL model (``edgewise.models.rul``, as ``bench cmapss`` builds it): its
    boosted member in C, whole and cut to the 32 KB flash budget (the cut chosen on held-out
    training units); RMSE on FD001's test set against the true RUL capped at 125, as
    ``bench cmapss`` scores (``*_uncapped``: against the raw RUL)."""
    from edgewise.bench.cmapss import RUL_CAP as CAP
    from edgewise.bench.cmapss import load_test, load_train, make_model
    from edgewise.edge import compress, export
    from edgewise.edge.export_compact import compact_reference, compact_size

    cdir = Path(shared_data) / "cmapss"
    train = load_train(cdir, "FD001")
    t0 = time.perf_counter()
    model = make_model(0).fit(train)
    fit_s = time.perf_counter() - t0
    if list(model.models) != ["gbm"]:
        raise RuntimeError(f"bench edge expects the gbm-only RUL model; got {model.models}")
    table = compress.tree_table(model.core_["gbm"])
    cap = float(model.cap)
    w = float(model.weights_[0])

    def finish(raw: np.ndarray) -> np.ndarray:  # the model's own combine step: weight, clip
        return np.clip(w * raw, 0.0, cap)

    # the cut is chosen before the test set is read: on a fifth of the training units, held
    # out of a model fitted like the deployed one on the rest (gbm-only, its boosted member
    # does not depend on the interval calibration's folds: two keep the fit short), each
    # unit cut at random cycles as the test units are; compact layout and plain float32
    fit_part, held, held_truth = rul_cut_holdout(train)
    chooser = make_model(0, calibration_folds=2).fit(fit_part)
    ch_table = compress.tree_table(chooser.core_["gbm"])
    F_val = chooser.features(held).to_numpy()
    y_val = np.minimum(held_truth, CAP)
    w_ch, cap_ch = float(chooser.weights_[0]), float(chooser.cap)

    def finish_ch(raw: np.ndarray) -> np.ndarray:
        return np.clip(w_ch * raw, 0.0, cap_ch)

    val_rmse, k, d = choose_cut(table, ch_table, F_val, y_val, finish_ch, compact_size,
                                compact_reference)
    val32, k32, d32 = choose_cut(table, ch_table, F_val, y_val, finish_ch,
                                 lambda t: t.n_nodes * 8 + t.n_trees * 2,
                                 compress.float32_thresholds)

    test, raw_truth = load_test(cdir, "FD001")
    truth = np.minimum(raw_truth, CAP)
    F = model.features(test).to_numpy()
    p_py = model.predict(test).to_numpy()
    c_full = export(table, format="c", name="rulm")
    p_c = finish(c_full.predict(F))
    c_cut = export(compress.prune_trees(table, max_trees=k, max_depth=d), format="c",
                   dtype="compact", name="rulm_cut")
    p_cut = finish(c_cut.predict(F))
    c_f32 = export(compress.prune_trees(table, max_trees=k32, max_depth=d32), format="c",
                   name="rulm_f32cut")
    c_full_compact = export(table, format="c", dtype="compact", name="rulm_compact")
    t_c = _median_time(lambda: c_cut.predict(F), repeats) / len(F)
    n_held_units = int(train["unit"].nunique() - fit_part["unit"].nunique())
    return {
        "model": "RULModel(models=('gbm',)) as bench cmapss builds it (LightGBM, "
                 f"{table.n_trees} trees, 31 leaves) on FD001 train; test: FD001 test units' "
                 "last cycles",
        "export": f"first {k} trees cut at depth {d}, compact C (shared exact float32 "
                  "thresholds, int16 leaves)",
        "truth": f"FD001 test RUL capped at {CAP:g} (as bench cmapss); *_uncapped: raw RUL",
        "cut_chosen_on": f"{n_held_units} held-out FD001 training units, {len(held_truth)} "
                         f"truncated histories (RUL capped at {CAP:g}), scored by a model "
                         f"fitted on the other {fit_part['unit'].nunique()} units",
        "cut_validation_rmse": val_rmse, "float32_cut_validation_rmse": val32,
        "fit_s": fit_s, "n_test_units": len(truth), "n_features": int(F.shape[1]),
        "n_trees": table.n_trees, "n_nodes": table.n_nodes,
        "cut_trees": k, "cut_max_depth": d,
        "c_flash_bytes": c_cut.flash_bytes, "c_code_bytes": c_cut.code_bytes(),
        "c_ram_bytes": 0,
        "rmse_python": _rmse(p_py, truth), "rmse_uncapped": _rmse(p_py, raw_truth),
        "rmse_c": _rmse(p_cut, truth), "rmse_c_uncapped": _rmse(p_cut, raw_truth),
        "c_max_abs_diff": float(np.abs(p_cut - p_py).max()),
        "c_us_per_inference": t_c * 1e6,
        "full_c_flash_bytes": c_full.flash_bytes,
        "full_rmse_c": _rmse(p_c, truth),
        "full_c_max_abs_diff": float(np.abs(p_c - p_py).max()),
        "full_compact_c_flash_bytes": c_full_compact.flash_bytes,
        "full_compact_rmse_c": _rmse(finish(c_full_compact.predict(F)), truth),
        "float32_cut_trees": k32, "float32_cut_max_depth": d32,
        "float32_cut_c_flash_bytes": c_f32.flash_bytes,
        "float32_cut_rmse_c": _rmse(finish(c_f32.predict(F)), truth),
    }


#: The parts of :func:`run`'s result, in the order they are measured (each one a progress
#: step: :func:`run` calls its ``progress`` with the name once the part is done).
SECTIONS = ("detector", "detector_ewzscore", "multivariate", "rul_standin", "mlp", "agent",
            "rul")


def _bench_rul_standin(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray,
                       repeats: int) -> dict[str, Any]:
    """A gradient-boosted tree regressor fitted on ``Xtr``, exported to C (float32, int8 and
    its first 75 trees) and ONNX: sizes, RMSEs on ``Xte`` and single-row latencies."""
    from sklearn.ensemble import GradientBoostingRegressor

    from edgewise.edge import compress, export

    gbr = GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.1,
                                    subsample=0.8, random_state=0).fit(Xtr, ytr)
    p_py = gbr.predict(Xte)
    c_rul = export(gbr, format="c", name="rul")
    p_c = c_rul.predict(Xte)
    c_q = export(gbr, format="c", dtype="int8", name="rulq", calibration=Xtr)
    p_q = c_q.predict(Xte)
    o_rul = export(gbr, format="onnx", name="rul")
    p_o = o_rul.predict(Xte)
    pruned = compress.prune_trees(compress.tree_table(gbr), max_trees=75)
    c_pr = export(pruned, format="c", name="rulp")
    p_pr = c_pr.predict(Xte)
    row = Xte[:1]
    n_single = 2000
    t_py1 = _median_time(lambda: [gbr.predict(row) for _ in range(200)], repeats) / 200
    t_o1 = _median_time(lambda: [o_rul.predict(row) for _ in range(n_single)], repeats) / n_single
    t_c_all = _median_time(lambda: c_rul.predict(Xte), repeats) / len(Xte)
    t_q_all = _median_time(lambda: c_q.predict(Xte), repeats) / len(Xte)
    return {
        "model": "GradientBoostingRegressor(n_estimators=150, max_depth=3) on FD001 windows",
        "n_train": len(Xtr), "n_test": len(Xte), "n_features": int(Xtr.shape[1]),
        "c_flash_bytes": c_rul.flash_bytes,
        "c_code_bytes": c_rul.code_bytes(),
        "c_ram_bytes": 4 * int(Xtr.shape[1]),
        "rmse_python": _rmse(p_py, yte),
        "rmse_c": _rmse(p_c, yte),
        "c_max_abs_diff": float(np.abs(p_c - p_py).max()),
        "rmse_onnx": _rmse(p_o, yte),
        "onnx_max_abs_diff": float(np.abs(p_o - p_py).max()),
        "onnx_bytes": o_rul.size_bytes,
        "int8_c_flash_bytes": c_q.flash_bytes,
        "rmse_c_int8": _rmse(p_q, yte),
        "pruned75_c_flash_bytes": c_pr.flash_bytes,
        "rmse_c_pruned75": _rmse(p_pr, yte),
        "python_us_per_inference": t_py1 * 1e6,
        "onnx_us_per_inference": t_o1 * 1e6,
        "c_us_per_inference": t_c_all * 1e6,
        "c_int8_us_per_inference": t_q_all * 1e6,
    }


def _bench_mlp(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray,
               steps: int = 300) -> dict[str, Any]:
    """A small MLP fitted on the standardised ``Xtr`` (``steps`` full-batch Adam steps),
    exported to C and ONNX, float32 and int8 (the ONNX int8 one calibrated on the first
    1,024 training rows, the quantizer's root-logger advice kept off stderr): RMSEs on
    ``Xte`` and sizes."""
    import torch

    from edgewise.edge import export

    mu, sd = Xtr.mean(0), Xtr.std(0) + 1e-9
    Ztr, Zte = ((Xtr - mu) / sd).astype(np.float32), ((Xte - mu) / sd).astype(np.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(Ztr.shape[1], 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.tensor(Ztr), torch.tensor(ytr, dtype=torch.float32)[:, None]
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(xt), yt).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        p_t = net(torch.tensor(Zte)).numpy()[:, 0].astype(np.float64)
    m_cf = export(net, format="c", name="mlp")
    m_cq = export(net, format="c", dtype="int8", name="mlpq", calibration=Ztr)
    m_of = export(net, format="onnx", name="mlp")
    m_oq = export(net, format="onnx", dtype="int8", name="mlp", calibration=Ztr[:1024])
    return {
        "model": f"MLP {Ztr.shape[1]}-32-16-1 (ReLU), {steps} full-batch Adam steps",
        "rmse_torch": _rmse(p_t, yte),
        "rmse_c_float32": _rmse(m_cf.predict(Zte), yte),
        "rmse_c_int8": _rmse(m_cq.predict(Zte), yte),
        "rmse_onnx_float32": _rmse(m_of.predict(Zte), yte),
        # said, not warned: test rows beyond the 1,024 calibration rows' range (int8
        # clips them; OnnxExport.predict warns of them)
        "rmse_onnx_int8": _rmse(_quiet_predict(m_oq, Zte), yte),
        "onnx_int8_test_rows_beyond_calibration": int(
            ((Zte < Ztr[:1024].min(axis=0)) | (Zte > Ztr[:1024].max(axis=0))).any(axis=1).sum()),
        "c_max_abs_diff": float(np.abs(m_cf.predict(Zte) - p_t).max()),
        "c_flash_bytes": m_cf.flash_bytes, "c_int8_flash_bytes": m_cq.flash_bytes,
        "c_ram_bytes": m_cf.ram_bytes,
        "onnx_bytes": m_of.size_bytes, "onnx_int8_bytes": m_oq.size_bytes,
    }


def _quiet_predict(model: Any, X: np.ndarray) -> np.ndarray:
    """``model.predict(X)`` without its warning of rows beyond the int8 calibration range
    (the bench counts those rows itself)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*beyond the range of the calibration rows")
        return np.asarray(model.predict(X))


def _bench_agent(repeats: int) -> dict[str, Any]:
    """The agent's SQLite outbox: puts per second (each one fsynced) and bytes per message."""
    import tempfile

    from edgewise.edge.agent import Outbox

    with tempfile.TemporaryDirectory() as d:
        box = Outbox(Path(d) / "outbox.sqlite")
        n_put = 300
        t_put = _median_time(lambda: [box.put({"ts": 1.7e9, "metrics": {"temp_c": 21.5}})
                                      for _ in range(n_put)], repeats)
        per_msg = box.bytes_used / len(box)
        box.close()
    return {"outbox_puts_per_s": n_put / t_put, "outbox_bytes_per_message": per_msg}


def run(shared_data: str | Path, repeats: int = 5,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure everything; return the JSON-ready figures. ``progress`` (progress bars) is
    called with each part's name (one of :data:`SECTIONS`, in that order) once the part is
    measured."""
    from edgewise.detect import default_detector
    from edgewise.detect.zscore import EWZScore

    def done(name: str) -> None:
        if progress is not None:
            progress(name)

    res: dict[str, Any] = {}
    values = nab_values(shared_data)
    res["detector"] = _bench_detector(default_detector(), values, repeats, onnx=False)
    res["detector"]["all_nab"] = _all_nab_parity(shared_data)
    done("detector")
    res["detector_ewzscore"] = _bench_detector(EWZScore(), values, repeats, onnx=True)
    done("detector_ewzscore")
    res["multivariate"] = _bench_multivariate(shared_data, repeats)
    done("multivariate")
    Xtr, ytr, Xte, yte = cmapss_fd001_windows(shared_data)
    res["rul_standin"] = _bench_rul_standin(Xtr, ytr, Xte, yte, repeats)
    done("rul_standin")
    res["mlp"] = _bench_mlp(Xtr, ytr, Xte, yte)
    done("mlp")
    res["agent"] = _bench_agent(repeats)
    done("agent")
    res["rul"] = _bench_rul_model(shared_data, repeats)  # fits 32 KB: it is "rul" now
    done("rul")
    return {**{k: res[k] for k in ("detector", "detector_ewzscore", "multivariate", "rul",
                                   "rul_standin", "mlp", "agent")}, "repeats": repeats}
