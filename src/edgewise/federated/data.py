"""What each device trains on: C-MAPSS windows per engine and a simulated pump fleet.

Two data sources feed the federated models, each split into one partition per device:

* **C-MAPSS** (NASA turbofan run-to-failure, ``../shared/data/cmapss``): every engine is a
  device. Sensors are normalised per operating condition (FD002 has six), then each cycle
  becomes one sliding-window feature vector (recent level, window mean and slope of 14
  informative sensors, plus the cycle count) with a piecewise-linear RUL target capped at
  125 cycles. This is a compact, self-contained feature function; the ``models.rul``
  pipeline may replace it later.
* **Pump fleet** (:func:`pump_fleet`): a stand-in for the fleet simulator. Six correlated
  channels per pump (speed, flow, pressure, motor current, temperature, vibration) driven by
  a slowly varying load, with per-pump offsets (non-IID), and labelled faults (bearing wear,
  cavitation) injected in the later part of each series.

The per-condition normaliser is itself a learnable part: :class:`ConditionNormaliser`
is built from sufficient statistics (count, sum, sum of squares) that devices share instead
of readings, so it can be fitted federatedly.

>>> fleet = pump_fleet(n_devices=2, n_samples=300, seed=0)
>>> fleet[0].X_train.shape, fleet[0].X_test.shape[1], int(fleet[0].y_test.sum()) > 0
((180, 6), 6, True)
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgewise.errors import InvalidParameterError

__all__ = [
    "CONDITIONS",
    "RUL_CAP",
    "SENSORS",
    "CmapssData",
    "ConditionNormaliser",
    "PumpDevice",
    "cmapss_file",
    "load_cmapss",
    "pump_fleet",
    "record_counts",
    "run_pump_fleet",
    "window_features",
]

#: The 14 sensors that vary with degradation (1-based indices into sensor_1..21).
SENSORS = (2, 3, 4, 7, 8, 9, 11, 12, 13, 14, 15, 17, 20, 21)
#: Operating conditions of FD002/FD004, keyed by the rounded altitude setting (kft).
CONDITIONS = (0.0, 10.0, 20.0, 25.0, 35.0, 42.0)
#: Piecewise-linear RUL cap (cycles), the usual C-MAPSS protocol.
RUL_CAP = 125.0
WINDOW = 30
RECENT = 5


def condition_of(op_setting_1: np.ndarray) -> np.ndarray:
    """Index into :data:`CONDITIONS` of the nearest operating condition of each row.

    >>> condition_of(np.array([0.0012, 41.998, 9.9982])).tolist()
    [0, 5, 1]
    """
    grid = np.asarray(CONDITIONS)
    return np.abs(op_setting_1[:, None] - grid[None, :]).argmin(axis=1)


@dataclass
class ConditionNormaliser:
    """Per-operating-condition z-scoring of sensor channels, from sufficient statistics.

    Devices compute :meth:`stats` on their own rows and share only those three arrays;
    averaging them across devices (Flower's FedAvg with equal weights) and calling
    :meth:`from_stats` gives exactly the pooled normaliser.

    >>> X = np.array([[1.0], [3.0], [10.0], [14.0]]); c = np.array([0, 0, 1, 1])
    >>> n = ConditionNormaliser.from_stats(*ConditionNormaliser.stats(X, c, n_conditions=2))
    >>> n.transform(X, c).ravel().tolist()
    [-1.0, 1.0, -1.0, 1.0]
    """

    mean: np.ndarray  # (n_conditions, n_channels)
    std: np.ndarray

    @staticmethod
    def stats(
        X: np.ndarray, cond: np.ndarray, n_conditions: int = len(CONDITIONS)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Count, sum and sum of squares of ``X`` per condition (shapes (C,), (C, F), (C, F))."""
        count = np.bincount(cond, minlength=n_conditions).astype(np.float64)
        total = np.zeros((n_conditions, X.shape[1]))
        squares = np.zeros((n_conditions, X.shape[1]))
        np.add.at(total, cond, X)
        np.add.at(squares, cond, X * X)
        return count, total, squares

    @classmethod
    def from_stats(
        cls, count: np.ndarray, total: np.ndarray, squares: np.ndarray
    ) -> ConditionNormaliser:
        """Build the normaliser from (possibly averaged) sufficient statistics."""
        n = np.maximum(count, 1e-12)[:, None]
        mean = total / n
        var = np.maximum(squares / n - mean * mean, 0.0)
        # constant: a variance under 1e-12 mean² (sd under 1e-6 of the level), which also
        # covers the cancellation noise of E[x²] - mean² summed over many rows (a constant
        # channel must not be divided by that noise). Relative, so a channel read in small
        # units is still standardised; a channel that varies by less than 1e-6 of its level
        # (a latitude to the metre) counts as constant and is only centred.
        flat = var <= 1e-12 * mean * mean + 1e-300
        return cls(mean=mean, std=np.where(flat, 1.0, np.sqrt(var)))

    def transform(self, X: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """Z-score each row with the statistics of its own condition."""
        return (X - self.mean[cond]) / self.std[cond]


def window_features(Z: np.ndarray, cycles: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """One feature row per cycle of one engine: recent level, window mean and slope, cycle.

    ``Z`` is the engine's normalised sensors (T, S) in cycle order; the first cycles are
    padded with the first row. Returns (T, 3 * S + 1) float32.

    >>> window_features(np.arange(6.0).reshape(3, 2), np.array([1, 2, 3]), window=2).shape
    (3, 7)
    """
    _T, _S = Z.shape
    padded = np.concatenate([np.repeat(Z[:1], window - 1, axis=0), Z], axis=0)
    win = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # (T, S, w)
    t = np.arange(window, dtype=np.float64)
    w = (t - t.mean()) / ((t - t.mean()) ** 2).sum()
    recent = win[:, :, -min(RECENT, window):].mean(axis=2)
    mean = win.mean(axis=2)
    slope = np.einsum("tsw,w->ts", win, w) * window
    return np.concatenate(
        [recent, mean, slope, (cycles / 200.0)[:, None]], axis=1
    ).astype(np.float32)


@dataclass
class CmapssData:
    """C-MAPSS windows split by engine: ``train[unit] = (X, y)``, one test row per unit.

    ``stats[unit]`` holds that engine's normaliser sufficient statistics: what a device
    would share to fit the fleet normaliser federatedly.
    """

    train: dict[int, tuple[np.ndarray, np.ndarray]]
    X_test: np.ndarray
    y_test: np.ndarray
    normaliser: ConditionNormaliser
    stats: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]

    @property
    def n_features(self) -> int:
        """Width of one feature row."""
        return int(self.X_test.shape[1])

    def pooled(self, units: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All training windows of ``units`` (default: every engine) stacked."""
        keys = sorted(self.train) if units is None else units
        return (
            np.concatenate([self.train[u][0] for u in keys]),
            np.concatenate([self.train[u][1] for u in keys]),
        )


def _read(path: Path) -> np.ndarray:
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as fh:
        return np.loadtxt(fh)


def cmapss_file(directory: str | Path, stem: str, subset: str = "FD002") -> Path:
    """The C-MAPSS file ``{stem}_{subset}`` in ``directory``: ``.txt.gz``, else ``.txt``.

    >>> cmapss_file("no-such-dir", "train")
    Traceback (most recent call last):
    ...
    FileNotFoundError: C-MAPSS file train_FD002.txt(.gz) not found in no-such-dir.
    """
    directory = Path(directory)
    for name in (f"{stem}_{subset}.txt.gz", f"{stem}_{subset}.txt"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"C-MAPSS file {stem}_{subset}.txt(.gz) not found in {directory}."
    )


def _engine_rows(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    units = raw[:, 0].astype(int)
    cycles = raw[:, 1]
    cond = condition_of(raw[:, 2])
    sensors = raw[:, [4 + s for s in SENSORS]]
    return units, cycles, cond, sensors


def load_cmapss(
    directory: str | Path,
    subset: str = "FD002",
    normaliser: ConditionNormaliser | None = None,
    units: int | None = None,
) -> CmapssData:
    """Read one C-MAPSS subset and turn it into per-engine windows.

    Parameters
    ----------
    directory
        Folder holding ``train_FD00x.txt(.gz)``, ``test_…`` and ``RUL_…``.
    subset
        ``"FD001"`` … ``"FD004"``.
    normaliser
        Per-condition statistics to use; by default they are fitted on all training rows
        (the central baseline). Pass a federatedly fitted one to keep it federated.
    units
        Keep only the first ``units`` training engines (small tests).

    Examples
    --------
    >>> import os
    >>> d = Path(os.environ.get("EDGEWISE_SHARED_DATA", "../shared/data")) / "cmapss"
    >>> data = load_cmapss(d, units=3) if d.is_dir() else None
    >>> data is None or (len(data.train), data.n_features) == (3, 43)
    True
    """
    directory = Path(directory)
    if subset not in ("FD001", "FD002", "FD003", "FD004"):
        raise InvalidParameterError(
            f"The 'subset' parameter of load_cmapss must be one of 'FD001', 'FD002', "
            f"'FD003', 'FD004'. Got {subset!r} instead."
        )

    train = _read(cmapss_file(directory, "train", subset))
    if units is not None:
        train = train[train[:, 0] <= units]
    test = _read(cmapss_file(directory, "test", subset))
    rul = _read(cmapss_file(directory, "RUL", subset)).reshape(-1)
    u, cyc, cond, sens = _engine_rows(train)
    if normaliser is None:
        normaliser = ConditionNormaliser.from_stats(*ConditionNormaliser.stats(sens, cond))
    Z = normaliser.transform(sens, cond)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    stats = {}
    for unit in np.unique(u):
        m = u == unit
        stats[int(unit)] = ConditionNormaliser.stats(sens[m], cond[m])
        c = cyc[m]
        y = np.minimum(c.max() - c, RUL_CAP).astype(np.float32)
        out[int(unit)] = (window_features(Z[m], c), y)
    tu, tcyc, tcond, tsens = _engine_rows(test)
    tZ = normaliser.transform(tsens, tcond)
    X_test, y_test = [], []
    for i, unit in enumerate(np.unique(tu)):
        m = tu == unit
        X_test.append(window_features(tZ[m], tcyc[m])[-1])
        y_test.append(min(float(rul[i]), RUL_CAP))
    return CmapssData(
        train=out,
        X_test=np.stack(X_test),
        y_test=np.asarray(y_test, dtype=np.float32),
        normaliser=normaliser,
        stats=stats,
    )


#: Faults injected into each pump's test part, their starts drawn from distinct readings
#: 20 after the training part to 60 before the end.
PUMP_FAULTS = 3
#: The fewest test readings a pump needs for that: 20 + 60 + one start per fault.
MIN_PUMP_TEST = 20 + 60 + PUMP_FAULTS
PUMP_CHANNELS = ("speed_rpm", "flow_m3h", "pressure_bar", "current_a", "temp_c", "vibration_mm_s")


@dataclass
class PumpDevice:
    """One simulated pump: normal history to train on, a later labelled stretch to test on."""

    device_id: str
    X_train: np.ndarray  # (n_train, 6), normal operation only
    X_test: np.ndarray  # (n_test, 6)
    y_test: np.ndarray  # (n_test,), 1 where a fault is active


def pump_fleet(
    n_devices: int = 10, n_samples: int = 2000, seed: int = 0, train_share: float = 0.6
) -> list[PumpDevice]:
    """Simulate a fleet of centrifugal pumps with correlated channels and injected faults.

    Each pump follows the affinity laws around its own operating point (flow ∝ speed,
    pressure ∝ speed², power ∝ flow·pressure), so anomalies show as broken relations
    between channels rather than as out-of-range single values. Faults (in the test part
    only): *bearing wear* (vibration and temperature creep up) and *cavitation* (pressure
    drops while speed holds, vibration gets noisier). Pumps differ in size, speed set-point
    and sensor offsets, so partitions are non-IID.

    Parameters
    ----------
    n_devices
        Number of pumps.
    n_samples
        Readings per pump (one per minute, say).
    seed
        Seed of the whole fleet; the same seed gives the same fleet.
    train_share
        Leading share of each series kept as normal training history. The rest, the test
        part, must hold at least :data:`MIN_PUMP_TEST` (83) readings.
    """
    if n_devices < 1 or n_samples < 50 or not 0.1 <= train_share <= 0.9:
        raise InvalidParameterError(
            "pump_fleet needs n_devices >= 1, n_samples >= 50 and train_share in "
            f"[0.1, 0.9]. Got {n_devices}, {n_samples}, {train_share} instead."
        )
    n_test = n_samples - int(n_samples * train_share)
    if n_test < MIN_PUMP_TEST:
        need = next(n for n in range(n_samples, 100 * MIN_PUMP_TEST)
                    if n - int(n * train_share) >= MIN_PUMP_TEST)
        raise InvalidParameterError(
            f"pump_fleet needs at least {MIN_PUMP_TEST} test readings per pump (n_samples - "
            f"int(n_samples * train_share)) to place its {PUMP_FAULTS} faults after the "
            f"training part; n_samples={n_samples} with train_share={train_share} leaves "
            f"{n_test}. Use n_samples >= {need} at this train_share, or a smaller "
            "train_share.")
    rng = np.random.default_rng(seed)
    fleet = []
    n_train = int(n_samples * train_share)
    for d in range(n_devices):
        size = rng.uniform(0.7, 1.4)
        setpoint = rng.uniform(1400, 1600)
        t = np.arange(n_samples)
        load = (
            0.8
            + 0.1 * np.sin(2 * np.pi * t / rng.uniform(150, 400) + rng.uniform(0, 6))
            + 0.03 * rng.standard_normal(n_samples).cumsum() / np.sqrt(n_samples)
        )
        speed = setpoint * load + rng.normal(0, 5, n_samples)
        ratio = speed / 1500.0
        flow = 50 * size * ratio + rng.normal(0, 0.6, n_samples)
        pressure = 4.0 * ratio**2 + rng.normal(0, 0.05, n_samples) + rng.uniform(-0.2, 0.2)
        current = 0.09 * flow * pressure / size + 5 + rng.normal(0, 0.3, n_samples)
        temp = 40 + 8 * load + rng.uniform(-2, 2) + rng.normal(0, 0.3, n_samples)
        vib = 2.0 + 0.8 * ratio + rng.normal(0, 0.08, n_samples)
        y = np.zeros(n_samples, dtype=np.int8)
        n_faults = PUMP_FAULTS
        slots = np.arange(n_train + 20, n_samples - 60)
        starts = np.sort(rng.choice(slots, n_faults, replace=False))
        for k, s in enumerate(starts):
            length = int(rng.integers(20, 50))
            e = min(s + length, n_samples)
            ramp = np.linspace(0.3, 1.0, e - s)
            if k % 2 == 0:  # bearing wear
                vib[s:e] += 1.2 * ramp
                temp[s:e] += 4.0 * ramp
            else:  # cavitation
                pressure[s:e] -= 0.9 * ramp
                vib[s:e] += rng.normal(0, 0.5, e - s)
            y[s:e] = 1
        X = np.stack([speed, flow, pressure, current, temp, vib], axis=1).astype(np.float32)
        fleet.append(
            PumpDevice(f"pump-{d}", X[:n_train], X[n_train:], y[n_train:])
        )
    return fleet


def run_pump_fleet(num_partitions: int, seed: int = 0) -> list[PumpDevice]:
    """The simulated pump fleet a federated run's devices hold (1000 samples each)."""
    return pump_fleet(num_partitions, n_samples=1000, seed=seed)


def record_counts(dataset: str, num_partitions: int, seed: int = 0) -> list[int] | None:
    """How many training records each device of a run holds, where the server can know it
    without the devices' data: the simulated pump fleet (``None`` for C-MAPSS, whose engines
    are on the devices). Here, not in the client app, so the CLI's budget check before a
    run starts does not import torch.

    >>> record_counts("pump", 3)
    [600, 600, 600]
    >>> record_counts("cmapss", 3) is None
    True
    """
    if dataset != "pump":
        return None
    return [len(d.X_train) for d in run_pump_fleet(num_partitions, seed)]
