"""The C-MAPSS turbofan benchmark under the standard protocol.

Protocol (``shared/data/cmapss/README.md``): targets are the piecewise-linear RUL capped
at 125; the model is fitted on the ``train_FD00x`` histories only (intervals are
calibrated on held-out *training units*); each test unit is scored once, at its last
cycle, against ``RUL_FD00x`` capped at 125 as well (the piecewise-linear target, as the
published C-MAPSS results use it). Figures: RMSE, the PHM08 score
``sum(exp(-d/13) - 1 if d < 0 else exp(d/10) - 1)`` with ``d = predicted - true``, and
the share of test units whose (capped) true RUL lies in the predicted interval. The
RMSE against the *uncapped* truth is reported too (``rmse_uncapped``).

:func:`load_train` opens only the training file, and only its table is passed to the fit:
test data cannot reach training or tuning (a test checks it). The test and ``RUL_`` files
are read and checked (:func:`load_test`) *before* the fit all the same, so a damaged or
wrong file is refused in seconds, not after minutes of fitting; they are scored after it.
Each file is read as :func:`edgewise.tables.read_text` reads one (plain or gzipped text; a
damaged gzip file is refused naming it), and every cell must be a finite number (a true
RUL also >= 0): an error names the file, the line and the value.

>>> round(phm08_score(np.array([10.0, 0.0]), np.array([0.0, 13.0])), 3)  # 2 * (e - 1)
3.437
"""

from __future__ import annotations

import io
import math
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
from edgewise.tables import read_text

__all__ = [
    "COLUMNS",
    "RUL_CAP",
    "CmapssResult",
    "load",
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


def _lines(text: str) -> list[int]:
    """The 1-based numbers of the lines of ``text`` that hold something (pandas skips blank
    ones): row ``i`` of the table read from it is on line ``_lines(text)[i]``."""
    return [n for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _read_table(path: Path) -> pd.DataFrame:
    """The 26-column table of a ``train_``/``test_`` file; refused, naming the file (and the
    line and value where one is at fault), when it cannot be read as text (a damaged gzip
    file: :class:`~edgewise.errors.QualityError`, as ``train rul`` says it), is empty, has
    another number of columns, or holds a cell that is no finite number."""
    text = read_text(path)
    where = f"C-MAPSS file {str(path)!r}"
    try:
        df = pd.read_csv(io.StringIO(text), sep=r"\s+", header=None)
    except pd.errors.EmptyDataError:
        raise InvalidParameterError(
            f"{where} is empty; expected {len(COLUMNS)} numbers a line (unit, cycle, "
            "3 settings, 21 sensors).", field="data", value=str(path)) from None
    except pd.errors.ParserError as exc:  # a line with more fields than the first
        raise InvalidParameterError(
            f"{where} must have {len(COLUMNS)} columns (unit, cycle, 3 settings, 21 sensors) "
            f"on every line ({str(exc).strip()}).", field="data", value=str(path)) from None
    if df.shape[1] != len(COLUMNS):
        raise InvalidParameterError(
            f"{where} must have {len(COLUMNS)} columns "
            f"(unit, cycle, 3 settings, 21 sensors). Got {df.shape[1]} instead."
        )
    numbers = df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(numbers)
    if bad.any():
        rows, cols = np.nonzero(bad)
        row, col = int(rows[0]), int(cols[0])
        n = _lines(text)[row]
        cells = text.splitlines()[n - 1].split()
        value = cells[col] if col < len(cells) else None
        shown = repr(value) if value is not None else f"nothing (the line has {len(cells)} values)"
        raise InvalidParameterError(
            f"{where} line {n}, column {col + 1} ({COLUMNS[col]}) must be a finite number. "
            f"Got {shown} instead.", field=COLUMNS[col], value=value)
    df.columns = COLUMNS
    return df


def _read_truth(path: Path) -> np.ndarray:
    """The true RULs of a ``RUL_`` file, one a line (blank lines skipped); refused, naming
    the file, the line and the value, where a line holds no finite number >= 0 (``nan``,
    ``n/a``, ``-40``) or more than one value, or no line holds one."""
    text = read_text(path)
    values = []
    for n, line in enumerate(text.splitlines(), 1):
        cells = line.split()
        if not cells:
            continue
        shown = cells[0] if len(cells) == 1 else line.strip()
        try:
            value = float(cells[0]) if len(cells) == 1 else math.nan
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value >= 0):
            raise InvalidParameterError(
                f"C-MAPSS file {str(path)!r} line {n} must be one true RUL, a finite number "
                f">= 0 (cycles). Got {shown!r} instead.", field="RUL", value=shown)
        values.append(value)
    if not values:
        raise InvalidParameterError(
            f"C-MAPSS file {str(path)!r} holds no true RUL; expected one number >= 0 a line, "
            "one per test unit.", field="RUL", value=str(path))
    return np.asarray(values, dtype=float)


def load_train(data_dir: str | Path, subset: str) -> pd.DataFrame:
    """Run-to-failure training histories of ``subset`` (opens only ``train_<subset>``)."""
    return _read_table(_find(Path(data_dir), f"train_{subset}"))


def load_test(data_dir: str | Path, subset: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Truncated test histories and each test unit's true RUL at its last row.

    Raises :class:`~edgewise.errors.InvalidParameterError` (a file missing, a cell that is
    no finite number, a true RUL below 0, not as many RULs as test units) or
    :class:`~edgewise.errors.QualityError` (a file that is no text, a damaged gzip file),
    each naming the file."""
    data_dir = Path(data_dir)
    test = _read_table(_find(data_dir, f"test_{subset}"))
    truth_arr = _read_truth(_find(data_dir, f"RUL_{subset}"))
    if len(truth_arr) != test["unit"].nunique():
        raise InvalidParameterError(
            f"RUL_{subset} has {len(truth_arr)} rows but test_{subset} has "
            f"{test['unit'].nunique()} units; they must match."
        )
    return test, truth_arr


def load(data_dir: str | Path, subset: str) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """The training table, the test table and the true RULs of ``subset``, every file read
    and checked (:func:`load_train`, :func:`load_test`): what :func:`run` needs, refused
    before any fit where a file is wrong."""
    return (load_train(data_dir, subset), *load_test(data_dir, subset))


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


def _rounded(value: float, digits: int) -> float | None:
    """``value`` rounded to ``digits``, or ``None`` (JSON ``null``) where it is NaN or
    infinite: ``json.dumps`` would write the ``NaN`` token, which is no JSON.

    >>> _rounded(1.23456, 2), _rounded(float("nan"), 2)
    (1.23, None)
    """
    return round(value, digits) if math.isfinite(value) else None


#: what :func:`load` gives: the training table, the test table, the true RULs
Loaded = tuple[pd.DataFrame, pd.DataFrame, np.ndarray]


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
    def _ms(values: list[float]) -> dict[str, float | None]:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return {"mean": _rounded(statistics.fmean(values), 3), "std": _rounded(sd, 3)}

    def to_json(self) -> dict[str, Any]:
        """The one JSON object of ``edgewise bench cmapss --json``, with the machine it ran
        on (:func:`~edgewise.bench._machine.machine_fields`). A figure that is no finite
        number (which checked inputs do not give) is ``null``: JSON has no NaN."""
        return {
            "subset": self.subset,
            "rmse": self._ms(self.rmse),
            "score": self._ms(self.score),
            "rmse_uncapped": self._ms(self.rmse_uncapped),
            "coverage": _rounded(statistics.fmean(self.coverage), 3),
            "coverage_std": _rounded(statistics.stdev(self.coverage), 3)
            if len(self.coverage) > 1
            else 0.0,
            "interval_width": _rounded(statistics.fmean(self.width), 2),
            "seeds": len(self.rmse),
            "rmse_per_seed": [_rounded(v, 3) for v in self.rmse],
            "fit_seconds": self._ms(self.fit_s),
            "model_bytes": self.model_bytes,
            "latency_ms": _rounded(self.latency_ms, 2),
            **machine_fields(),
        }


def run_seed(
    data_dir: str | Path, subset: str, seed: int, **overrides: Any
) -> tuple[RULModel, dict[str, float]]:
    """Fit on the training file, then score the test units at their last cycle. All three
    files are read and checked first (:func:`load`): a wrong one fails before the fit."""
    return _fit_and_score(load(data_dir, subset), seed, overrides)


def _fit_and_score(
    loaded: Loaded, seed: int, overrides: dict[str, Any]
) -> tuple[RULModel, dict[str, float]]:
    """Fit one seed's model on the training table alone; score it on the test units."""
    train, test, truth = loaded
    start = time.perf_counter()
    model = make_model(seed, **overrides).fit(train)
    fit_s = time.perf_counter() - start
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
    *,
    loader: Callable[[str | Path, str], Loaded] | None = None,
    **overrides: Any,
) -> CmapssResult:
    """Run the protocol for seeds ``0 .. seeds-1``; return the figures of every seed.

    The files are read and checked once, before the first fit, by ``loader(data_dir,
    subset)`` (:func:`load` unless given: the CLI gives one that says a wrong file as its
    other commands say one)."""
    import pickle

    loaded = (loader or load)(data_dir, subset)
    result = CmapssResult(subset)
    for seed in range(seeds):
        model, figs = _fit_and_score(loaded, seed, overrides)
        for key in ("rmse", "rmse_uncapped", "score", "coverage", "width", "fit_s"):
            getattr(result, key).append(figs[key])
        if progress is not None:
            progress(seed, figs)
        if seed == 0:
            result.model_bytes = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
            result.latency_ms = _latency_ms(model, loaded[1])
    return result
