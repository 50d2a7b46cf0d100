"""The C-MAPSS turbofan benchmark under the standard protocol.

Protocol (``shared/data/cmapss/README.md``): targets are the piecewise-linear RUL capped
at 125; the model is fitted on the ``train_FD00x`` histories only (intervals are
calibrated on held-out *training units*); each test unit is scored once, at its last
cycle, against ``RUL_FD00x`` capped at 125 as well (the piecewise-linear target, as the
published C-MAPSS results use it). Figures: RMSE, the PHM08 score
``sum(exp(-d/13) - 1 if d < 0 else exp(d/10) - 1)`` with ``d = predicted - true``, and
the share of test units whose (capped) true RUL lies in the predicted interval. The
RMSE against the *uncapped* truth is reported too (``rmse_uncapped``).

:func:`load_train` opens only the training file; :func:`load_test` is called after the
model is fitted, so test data cannot reach training or tuning (a test checks it).

>>> round(phm08_score(np.array([10.0, 0.0]), np.array([0.0, 13.0])), 3)  # 2 * (e - 1)
3.437
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from edgewise.bench._machine import machine_fields
from edgewise.errors import InvalidParameterError
from edgewise.models.rul import RULModel

__all__ = [
    "COLUMNS",
    "RUL_CAP",
    "CmapssResult",
    "load_test",
    "load_train",
    "make_model",
    "phm08_score",
    "run",
    "run_seed",
]

RUL_CAP = 125.0
SETTINGS = [f"op_setting_{i}" for i in range(1, 4)]
SENSORS = [f"sensor_{i}" for i in range(1, 22)]
COLUMNS = ["unit", "cycle", *SETTINGS, *SENSORS]


def _find(data_dir: Path, name: str) -> Path:
    for candidate in (data_dir / f"{name}.txt.gz", data_dir / f"{name}.txt"):
        if candidate.is_file():
            return candidate
    raise InvalidParameterError(
        f"C-MAPSS file {name}.txt[.gz] not found in {str(data_dir)!r}; expected a directory "
        "with train_FD00x, test_FD00x and RUL_FD00x files."
    )


def _read_table(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep=r"\s+", header=None)
    if df.shape[1] != len(COLUMNS):
        raise InvalidParameterError(
            f"C-MAPSS file {str(path)!r} must have {len(COLUMNS)} columns "
            f"(unit, cycle, 3 settings, 21 sensors). Got {df.shape[1]} instead."
        )
    df.columns = COLUMNS
    return df


def load_train(data_dir: str | Path, subset: str) -> pd.DataFrame:
    """Run-to-failure training histories of ``subset`` (opens only ``train_<subset>``)."""
    return _read_table(_find(Path(data_dir), f"train_{subset}"))


def load_test(data_dir: str | Path, subset: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Truncated test histories and each test unit's true RUL at its last row."""
    data_dir = Path(data_dir)
    test = _read_table(_find(data_dir, f"test_{subset}"))
    truth = pd.read_csv(_find(data_dir, f"RUL_{subset}"), sep=r"\s+", header=None)
    truth_arr = truth.iloc[:, 0].to_numpy(dtype=float)
    if len(truth_arr) != test["unit"].nunique():
        raise InvalidParameterError(
            f"RUL_{subset} has {len(truth_arr)} rows but test_{subset} has "
            f"{test['unit'].nunique()} units; they must match."
        )
    return test, truth_arr


def phm08_score(pred: np.ndarray, true: np.ndarray) -> float:
    """PHM08 asymmetric score: late predictions (d > 0) cost more than early ones."""
    d = np.asarray(pred, dtype=float) - np.asarray(true, dtype=float)
    return float(np.sum(np.where(d < 0, np.exp(-d / 13.0) - 1.0, np.exp(d / 10.0) - 1.0)))


def make_model(seed: int, **overrides: Any) -> RULModel:
    """The benchmark's model: the library defaults, C-MAPSS column names, one seed."""
    params: dict[str, Any] = {
        "unit_column": "unit",
        "time_column": "cycle",
        "condition_columns": SETTINGS,
        "sensor_columns": SENSORS,
        "cap": RUL_CAP,
        "random_state": seed,
    }
    params.update(overrides)
    return RULModel(**params)


@dataclass
class CmapssResult:
    """Figures of one subset over several seeds."""

    subset: str
    rmse: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)
    coverage: list[float] = field(default_factory=list)
    rmse_uncapped: list[float] = field(default_factory=list)
    width: list[float] = field(default_factory=list)
    fit_s: list[float] = field(default_factory=list)
    model_bytes: int = 0
    latency_ms: float = 0.0

    @staticmethod
    def _ms(values: list[float]) -> dict[str, float]:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": round(statistics.fmean(values), 3), "std": round(sd, 3)}

    def to_json(self) -> dict[str, Any]:
        """The one JSON object of ``edgewise bench cmapss --json``, with the machine it ran
        on (:func:`~edgewise.bench._machine.machine_fields`)."""
        return {
            "subset": self.subset,
            "rmse": self._ms(self.rmse),
            "score": self._ms(self.score),
            "rmse_uncapped": self._ms(self.rmse_uncapped),
            "coverage": round(statistics.fmean(self.coverage), 3),
            "coverage_std": round(statistics.stdev(self.coverage), 3)
            if len(self.coverage) > 1
            else 0.0,
            "interval_width": round(statistics.fmean(self.width), 2),
            "seeds": len(self.rmse),
            "rmse_per_seed": [round(v, 3) for v in self.rmse],
            "fit_seconds": self._ms(self.fit_s),
            "model_bytes": self.model_bytes,
            "latency_ms": round(self.latency_ms, 2),
            **machine_fields(),
        }


def run_seed(
    data_dir: str | Path, subset: str, seed: int, **overrides: Any
) -> tuple[RULModel, dict[str, float]]:
    """Fit on the training file, then score the test units at their last cycle."""
    train = load_train(data_dir, subset)
    start = time.perf_counter()
    model = make_model(seed, **overrides).fit(train)
    fit_s = time.perf_counter() - start
    test, truth = load_test(data_dir, subset)
    point, low, high = model.predict_interval(test)
    capped = np.minimum(truth, RUL_CAP)
    return model, {
        "rmse": float(np.sqrt(np.mean((point - capped) ** 2))),
        "rmse_uncapped": float(np.sqrt(np.mean((point - truth) ** 2))),
        "score": float(phm08_score(point, capped)),
        "coverage": float(np.mean((capped >= low) & (capped <= high))),
        "width": float(np.mean(high - low)),
        "fit_s": fit_s,
    }


def _latency_ms(model: RULModel, test: pd.DataFrame) -> float:
    """Median wall time of one prediction for the first test unit, from its whole history
    (ms): the model refuses a history that starts late, so not its last window alone
    (FD002's first test unit has 258 cycles)."""
    unit = test[test["unit"] == test["unit"].iloc[0]]
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        model.predict(unit)
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def run(
    data_dir: str | Path,
    subset: str,
    seeds: int = 5,
    progress: Callable[[int, dict[str, float]], None] | None = None,
    **overrides: Any,
) -> CmapssResult:
    """Run the protocol for seeds ``0 .. seeds-1``; return the figures of every seed."""
    import pickle

    result = CmapssResult(subset)
    for seed in range(seeds):
        model, figs = run_seed(data_dir, subset, seed, **overrides)
        for key in ("rmse", "rmse_uncapped", "score", "coverage", "width", "fit_s"):
            getattr(result, key).append(figs[key])
        if progress is not None:
            progress(seed, figs)
        if seed == 0:
            result.model_bytes = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
            result.latency_ms = _latency_ms(model, load_test(data_dir, subset)[0])
    return result
