"""Group devices that behave alike; name what sets each group apart; flag odd ones out.

:class:`BehaviourGroups` takes per-device histories (a mapping of device id to a DataFrame
indexed by time, one column per metric: irregular times, gaps and NaN are fine; from a
store, :func:`histories_from_store`), turns each into a behaviour profile
(:func:`~edgewise.models.profile.behaviour_profile`: per metric level, spread, trend,
lag-1 autocorrelation, daily-cycle strength and peak hour; correlations between metrics;
optionally each metric's level at a reference operating point), and groups the profiles.

Scale: each profile feature is centred on the fleet median and divided by the difference
that counts as one unit for its kind: half the metric's typical within-device spread for
a level (and a level at the reference point), a factor e^0.25 (1.28) for a spread, half a
typical spread over the fleet's typical history length for a trend, 0.1 for a lag-1
autocorrelation, 0.25 for a daily-cycle share, 0.2 for a correlation. So units (°C or
bytes) never matter, and a feature on which the whole fleet agrees stays near 0 instead
of being blown up into a made-up separation. Scaled values are linear up to about 3 units
and logarithmic beyond (``3 asinh(z / 3)``), so one extreme device or metric cannot
outweigh all others. For grouping, each feature is then weighted by its split-half
reliability (how well the first half of each device's history predicts the second, across
the fleet): the trend of a random walk weighs little. The odd score weighs a feature at
least 1 over the fleet's robust scatter of it in units (at most 1): a fleet of one kind,
whose level differences are noise, gives levels a reliability near 0, yet a new device at
25 times its level is an odd one out.

Metrics some devices lack: a metric is used when at least ``min_coverage`` of the devices
send it (the others are in ``left_out_``); a device that lacks a used metric has it listed
in ``missing_``. A feature a device lacks (a metric it does not send, or one its history
cannot give) is unknown, not the fleet median: its distance to a group centre is taken
over the features both have, scaled up by the share of the (squared) feature weights (for
the odd score: of the features) those carry, so a missing metric neither adds to the
distance nor is given as the reason a device is odd. The clustering itself (k-means and
the like need every feature) reads an unknown feature as the fleet median. A device that
sends none of the used metrics has no feature to be grouped by: it is left out of the fit
(in ``left_out_devices_`` with why, and in the summary's ``left_out_devices``), so it is
in no group and has no odd score; :meth:`BehaviourGroups.assign` refuses such a device.

Devices with few readings (a device that joined 20 minutes ago): a feature from n readings
scatters by chance with a variance of about c² / n units² (c from the feature's standard
error on white noise: 2.5 for a level, 10 for a lag-1 autocorrelation). A device with fewer
readings of a metric than the fleet's typical number N (``typical_readings_``; its own
count in ``few_readings_``) has its gap to a centre shrunk by the square root of
``1 + c² (1/n - 1/N) / s²``, ``s`` the scatter of the devices it is measured among (at
least a typical device's own chance scatter), on the linear scale, so a gross oddity stays
gross: towards the fleet median, against the fleet's scatter, where the groups are found
(its noise makes no group of its own; it is then put in the nearest group like any device)
and where reliability is measured; towards its group's centre, against the members'
scatter (``odd_scatter_``), where its odd score is (its noise flags nobody). A shrink under
1.1 is none. A spread from fewer than 10 readings and a trend that a short stretch of few
readings cannot pin down over the fleet's typical history length are unknown
(:func:`~edgewise.models.profile.behaviour_profile`).

Grouping: scikit-learn k-means (``method="kmeans"``, the default, picked by the benchmark
in ``benchmarks/results/groups.md``), Ward agglomerative or a Gaussian mixture. With
``n_groups=None`` the number of groups (2 … ``max_groups``, at most the number of distinct
profiles) is, of those whose silhouette's margin over the silhouette a single Gaussian
cloud of the same covariance reaches at that number (eight seeded draws, clustered as the
fleet is) is wider than a draw's own best margin over the other draws (how far chance
alone reaches), the one with the best silhouette (margins are taken on
``-log(1 - silhouette)``, which does not end at 1: 8 pumps of two kinds 20 sd apart, at
0.99 against a cloud's 0.90, were one group); a grouping whose centres are less than
one unit apart does not count, and the fleet is one group when no number's margin goes
further than chance: then nothing separates the fleet. A "group" of fewer than
``min_group_size`` devices is not kept; its devices are odd ones out; so ``n_groups`` may
be at most the number of devices over ``min_group_size`` (more groups cannot all be kept),
and no more groups are tried when choosing. With ``n_groups`` given, the devices left once
such a cluster is set aside (an outlier took one) are clustered again into ``n_groups``,
so that many groups are kept wherever the devices allow. Each kept group's centre is the mean of its
cluster, and every device, in the fit as in :meth:`BehaviourGroups.assign`, is in the
group of the nearest centre (whatever the method: a Gaussian mixture's or Ward's cluster
can hold a device nearer another centre). A group none of whose devices is short of an odd
one out is not kept either (its traits would describe odd ones out only): its devices are
odd ones out, and the groups are measured again without it. Every random choice follows
``random_state`` and the devices are read in the order of their ids, so the same data
gives the same groups whatever the order of the mapping, numbered by size (0 largest).

Odd ones out: a device's odd score is its distance to its group's centre over the median
such distance of the members, measured on the scaled features weighted by
``odd_weights_``: each feature's reliability, raised to 1 over the fleet's robust scatter
of it (1.4826 median absolute deviations, in units) and at most 1 (a feature on which the
whole training fleet agrees has a reliability near 0, yet a device far off on it is odd;
a noisy one still flags nobody by its noise). It is flagged above
``odd_cut_``, the higher of two
cuts: the score a member passes with chance ``odd_alpha`` were the members' scatter
Gaussian in as many dimensions as it effectively has (so a fleet that varies in few
features gets a higher cut), and 3.5 robust standard deviations above the median of the
fleet's own log scores (so a heavy-tailed fleet of hundreds of devices does not flag
dozens). The second counts only with at least 30 members (a few devices' scores scatter
too widely to say where a tail stops) and at most three times the first (so a gross
oddity, whose score the logarithmic scale compresses, still passes it).

>>> rng = np.random.default_rng(0)
>>> idx = pd.date_range("2024-01-01", periods=300, freq="10min", tz="UTC")
>>> fleet = {f"cool-{i}": pd.DataFrame({"temp": 40 + rng.normal(0, 1, 300)}, index=idx)
...          for i in range(6)}
>>> fleet |= {f"hot-{i}": pd.DataFrame({"temp": 60 + rng.normal(0, 1, 300)}, index=idx)
...           for i in range(4)}
>>> model = BehaviourGroups(random_state=0).fit(fleet)
>>> model.n_groups_, model.labels_[["hot-0", "cool-0"]].tolist()
(2, [1, 0])
>>> model.traits_[1][0]["text"]
'runs hotter: temp median 59.9 vs fleet 40'
>>> model.predict({"new": pd.DataFrame({"temp": 59 + rng.normal(0, 1, 300)}, index=idx)}).tolist()
[1]
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from edgewise.errors import EdgewiseError, InvalidParameterError, NotFittedError
from edgewise.models._words import feature_kind as _kind
from edgewise.models._words import feature_metric as _metric
from edgewise.models._words import first_and_more, pair_metrics, rounded, trait_text
from edgewise.models.model_file import json_number, read_model_file, write_model_file
from edgewise.models.profile import (
    behaviour_profile,
    device_history,
    finite_metrics,
    median_step_ns,
    peak_hour,
)
from edgewise.params import Interval, OneOf, validate_params

__all__ = [
    "FORMAT_VERSION",
    "BehaviourGroups",
    "GroupsFileError",
    "histories_from_store",
    "load_groups",
]

#: Version of the file :meth:`BehaviourGroups.save` writes; bumped when the layout changes.
FORMAT_VERSION = 1
_MAGIC = b"EDGEWISE-GROUPS\n"
_NULL_DRAWS = 8
#: scaled features are linear up to about this many units, logarithmic beyond
_LINEAR = 3.0
#: group centres closer than this (scaled units) are one group
_MIN_GAP = 1.0
#: the odd-score cut from the fleet's own tail needs this many members, and is at most
#: _TAIL_CAP times the Gaussian cut
_TAIL_MIN_MEMBERS = 30
_TAIL_CAP = 3.0
#: the difference of each feature kind that counts as one unit (see the module doc);
#: a level (and a level at the reference point) counts in half the metric's typical
#: within-device spread
_DAY_NS = 86_400e9
#: the chance scatter of a feature, in units, from one reading of white noise (its standard
#: error times the square root of the readings, over its unit): a median's is 1.25
#: spreads (over half a spread), a log interquartile range's 1.17 (over 0.25), a lag-1
#: autocorrelation's 1 (over 0.1), a correlation's at most 1 (over 0.2). A trend (unknown
#: where too noisy) and a daily cycle (from hourly means over days) are left as they are.
_NOISE = {"level": 2.5, "at_ref": 2.5, "spread": 4.7, "acf1": 10.0, "corr": 5.0}
#: a device whose features scatter by chance less than this many times as far as a typical
#: device's is measured as any device (a fleet of long histories of somewhat different
#: lengths is grouped as it was before few readings were allowed for)
_NOISE_MATERIAL = 1.1
#: a daily cycle weaker than this share of the variance has no peak worth naming, and a
#: peak within this many hours of another's is the same peak
_WEAK_DAILY = 0.1
_PEAK_HOURS = 2.0
_UNIT = {"spread": 0.25, "trend": 0.5, "acf1": 0.1, "daily": 0.25, "daily_cos": 0.25,
         "daily_sin": 0.25, "corr": 0.2}


_NUMBER = (int, float)
_TEXTS = "a list of texts"
#: The learned state a groups file holds: each key, the JSON types its value may have, and
#: those types in words (:func:`_from_doc` checks them, naming the field, before any is used)
_STATE_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "metrics_": ((list,), _TEXTS), "left_out_": ((dict,), "an object"),
    "left_out_devices_": ((dict,), "an object"), "missing_": ((dict,), "an object"),
    "step_ns_": ((int,), "a whole number"),
    "reference_value_": ((*_NUMBER, type(None)), "a number or null"),
    "feature_names_": ((list,), _TEXTS), "devices_": ((list,), _TEXTS),
    "typical_spread_": ((dict,), "an object"), "eps_": ((dict,), "an object"),
    "span_days_": (_NUMBER, "a number"), "n_groups_": ((int,), "a whole number"),
    "odd_scale_": (_NUMBER, "a number"), "odd_cut_": (_NUMBER, "a number"),
    "odd_dims_": (_NUMBER, "a number"), "silhouette_": ((dict,), "an object"),
    "null_silhouette_": ((dict,), "an object"), "traits_": ((dict,), "an object"),
    "n_features_in_": ((int,), "a whole number"),
    "typical_readings_": ((dict,), "an object"), "few_readings_": ((dict,), "an object"),
    "set_aside_": ((dict,), "an object"),
}
#: State a file saved by an earlier release may lack (it was saved before devices were left
#: out: it names none; before a device's odd score allowed for how few readings it has:
#: none is allowed for; before readings past MAX_MAGNITUDE were set aside: none was).
_OPTIONAL_STATE = frozenset({"left_out_devices_", "typical_readings_", "few_readings_",
                             "set_aside_"})
#: The arrays a groups file holds (``arrays``), and the per-device lists beside them.
_ARRAYS = ("center_", "scale_", "weights_", "centroids_", "Z_")
#: Arrays of the odd score's space (its feature weights, the group centres in it); a file
#: saved by an earlier release lacks them: its odd scores were measured on the weighted
#: features, and still are (``weights_``, ``centroids_``), so its saved cut still applies.
_ODD_ARRAYS = ("odd_weights_", "odd_centroids_")
#: The odd score's members' scatter per feature, which a device's few readings are measured
#: against; a file saved before they were allowed for lacks it (and allows for none).
_SCATTER = "odd_scatter_"
_PER_DEVICE = ("labels_", "odd_score_", "odd_")


class GroupsFileError(EdgewiseError, ValueError):
    """A file is not an Edgewise groups model, is damaged, or of a version this build cannot read."""  # noqa: E501


def histories_from_store(store: Any, devices: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Every device's (or each of ``devices``') readings in ``store`` as a history
    (:func:`~edgewise.models.profile.device_history`); devices without readings are left out.

    >>> from edgewise.store import open_store
    >>> from edgewise.telemetry import Reading
    >>> store = open_store("duckdb:///:memory:")
    >>> _ = store.append([Reading("pump-1", "temp", 10**18, 40.0)])
    >>> list(histories_from_store(store)["pump-1"].columns)
    ['temp']
    """
    ids = devices if devices is not None else sorted(d.device_id for d in store.devices())
    out = {}
    rows = store.query_many(ids)  # one scan of the readings for every device
    for device in ids:
        frame = device_history(rows.get(device, []))
        if len(frame):
            out[device] = frame
    return out


class BehaviourGroups:
    """Group a fleet's devices by how they behave; assign new devices; flag odd ones out.

    Use it to find devices that run alike (for a per-group model or release group), and
    the devices that fit no group. Not for grouping by a single reading or a label you
    already have. See the module doc for how profiles are scaled and groups chosen.

    Parameters
    ----------
    n_groups
        Number of groups; ``None`` chooses it (one group when nothing separates the fleet).
    max_groups
        Most groups tried when ``n_groups`` is ``None``.
    method
        ``"kmeans"``, ``"agglomerative"`` (Ward) or ``"gmm"`` (Gaussian mixture).
    reference
        A metric whose fleet-median level is the reference operating point: each other
        metric's level there is a feature ("vibration at the same speed").
    relations
        Use the correlation of every pair of metrics as features.
    min_coverage
        Share of devices that must send a metric for it to be used.
    min_group_size
        Fewer devices than this are no group: they are odd ones out.
    odd_alpha
        How rarely a device that belongs to its group should be flagged as an odd one out
        (the tail probability of the cut on the odd score; see the module doc).
    step_s
        Grid step (s) of the autocorrelation and correlations; ``None``: the fleet's
        median time between readings.
    random_state
        Seed of every random choice.
    """

    _parameter_constraints: ClassVar[dict[str, Any]] = {
        "n_groups": [Interval(int, 1, None), None],
        "max_groups": Interval(int, 2, None),
        "method": OneOf(("kmeans", "agglomerative", "gmm")),
        "reference": [str, None],
        "relations": bool,
        "min_coverage": Interval(float, 0.0, 1.0, closed="right"),
        "min_group_size": Interval(int, 1, None),
        "odd_alpha": Interval(float, 0.0, 1.0, closed="neither"),
        "step_s": [Interval(float, 0.0, math.inf, closed="neither"), None],
        "random_state": Interval(int, 0, 2**31 - 1),
    }

    def __init__(
        self,
        n_groups: int | None = None,
        max_groups: int = 8,
        method: str = "kmeans",
        reference: str | None = None,
        relations: bool = True,
        min_coverage: float = 0.5,
        min_group_size: int = 2,
        odd_alpha: float = 1e-4,
        step_s: float | None = None,
        random_state: int = 0,
    ) -> None:
        self.n_groups = n_groups
        self.max_groups = max_groups
        self.method = method
        self.reference = reference
        self.relations = relations
        self.min_coverage = min_coverage
        self.min_group_size = min_group_size
        self.odd_alpha = odd_alpha
        self.step_s = step_s
        self.random_state = random_state

    # -- input ----------------------------------------------------------------------------
    @staticmethod
    def _histories(X: Any, at_least: int) -> dict[str, pd.DataFrame]:
        """``X`` as device id -> history with a UTC time index and float metric columns."""
        if not isinstance(X, Mapping):
            raise InvalidParameterError(
                "BehaviourGroups needs a mapping of device id to a history (a DataFrame "
                f"indexed by time, one column per metric). Got {type(X).__name__} instead.",
                field="X", value=type(X).__name__)
        if len(X) < at_least:
            raise InvalidParameterError(
                f"BehaviourGroups needs the histories of at least {at_least} device(s) to "
                f"{'group' if at_least > 1 else 'assign'}. Got {len(X)}.",
                field="X", value=len(X))
        out = {}
        keys: dict[str, object] = {}
        for device, frame in X.items():
            if not isinstance(frame, pd.DataFrame):
                raise InvalidParameterError(
                    f"The history of device {device!r} must be a DataFrame indexed by time. "
                    f"Got {type(frame).__name__} instead.", field="X", value=str(device))
            if str(device) in keys:  # devices are named by text: 1 and "1" are one device
                raise InvalidParameterError(
                    f"Devices {keys[str(device)]!r} and {device!r} are both named "
                    f"{str(device)!r} (device ids are read as text); give each device one "
                    "distinct id.", field="X", value=str(device))
            keys[str(device)] = device
            if not frame.columns.is_unique:
                twice = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
                raise InvalidParameterError(
                    f"The history of device {device!r} has more than one column named "
                    f"{', '.join(map(repr, twice))}; give each metric one column.",
                    field="X", value=str(device))
            idx = frame.index
            if (isinstance(idx, pd.DatetimeIndex) and idx.tz is not None
                    and str(idx.tz) == "UTC" and frame.columns.is_unique
                    and all(dt == np.float64 for dt in frame.dtypes)):
                # already a UTC history of float metrics (a store's): only drop the
                # columns without a finite reading, as the general path below does
                metrics = _finite_metrics_of(device, frame)
                same = len(metrics) == len(frame.columns)
                out[str(device)] = frame.copy(deep=False) if same else frame[metrics]
                continue
            if pd.api.types.is_integer_dtype(idx):  # integer nanoseconds since the epoch
                idx = pd.to_datetime(np.asarray(idx, dtype=np.int64), unit="ns", utc=True)
            elif isinstance(idx, pd.DatetimeIndex):
                idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
            else:
                raise InvalidParameterError(
                    f"The history of device {device!r} must be indexed by time (timestamps "
                    f"or integer ns since the epoch). Got an index of {idx.dtype}.",
                    field="X", value=str(device))
            frame = frame.set_axis(idx, axis=0)
            metrics = _finite_metrics_of(device, frame)
            out[str(device)] = frame[metrics].astype(float)
        return out

    def _fitted(self) -> None:
        if not hasattr(self, "centroids_"):
            raise NotFittedError(
                "This BehaviourGroups is not fitted yet; call fit(histories) first.")

    # -- features -------------------------------------------------------------------------
    def _profiles(self, hist: dict[str, pd.DataFrame], whole: bool = True) -> pd.DataFrame:
        """Each history's profile over the fitted features. ``whole``: the histories are
        whole (not halves), so a trend too noisy over the fleet's typical history length
        is unknown (``trend_over_ns`` of
        :func:`~edgewise.models.profile.behaviour_profile`)."""
        over = self.span_days_ * _DAY_NS if whole else None
        rows = {d: behaviour_profile(f, self.step_ns_, self.metrics_, self.reference,
                                     self.reference_value_, self.relations, over)
                for d, f in hist.items()}
        return pd.DataFrame.from_dict(rows, orient="index").reindex(columns=self.feature_names_)

    def _transform(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Raw profile features in the units the scale is written in: spreads as logs,
        trends as the change over the fleet's typical history length in typical spreads."""
        out = raw.copy()
        for f in out.columns:
            kind = _kind(f)
            if kind == "spread":
                out[f] = np.log(np.maximum(out[f], self.eps_[_metric(f)]))
            elif kind == "trend":
                out[f] = out[f] * self.span_days_ / self.typical_spread_[_metric(f)]
        return out

    def _unweighted(self, raw: pd.DataFrame) -> np.ndarray:
        """Scaled features before any weight; NaN where a device lacks one."""
        t = self._transform(raw).to_numpy(dtype=float)
        z = (t - self.center_) / self.scale_
        return _LINEAR * np.arcsinh(z / _LINEAR)  # type: ignore[no-any-return]

    def _scaled(self, raw: pd.DataFrame) -> np.ndarray:
        """Scaled features weighted by reliability, the space groups are chosen in; NaN
        where a device lacks one (see the module doc)."""
        return self._unweighted(raw) * self.weights_  # type: ignore[no-any-return]

    def _odd_scaled(self, raw: pd.DataFrame) -> np.ndarray:
        """Scaled features in the space odd scores are measured in, weighted by
        ``odd_weights_`` (a file of an earlier release: the reliability weights, as it was
        fitted)."""
        return self._unweighted(raw) * self.odd_weights_  # type: ignore[no-any-return]

    def _fit_scale(self, raw: pd.DataFrame, span_days: float) -> None:
        # reindex, not []: a metric no device has two readings of (each history one
        # reading, or one bucket) has no spread column left; its typical spread is then 1
        spreads = raw.reindex(columns=[f"spread:{m}" for m in self.metrics_]).abs()
        typical = spreads.median().to_numpy() / 1.349
        self.typical_spread_ = {m: float(v) if v > 0 else 1.0
                                for m, v in zip(self.metrics_, typical, strict=True)}
        self.eps_ = {m: 1e-6 * v for m, v in self.typical_spread_.items()}
        self.span_days_ = span_days
        self.center_ = self._transform(raw).median().to_numpy()
        self.scale_ = np.array([
            _UNIT[_kind(f)] if _kind(f) in _UNIT else 0.5 * self.typical_spread_[_metric(f)]
            for f in raw.columns])

    def _reliability(self, hist: dict[str, pd.DataFrame], ratio: np.ndarray) -> np.ndarray:
        """Each feature's split-half reliability across the fleet, in [0, 1]: the
        correlation between the features of each device's first and second half of history
        (Spearman-Brown corrected). A feature that a device's own history cannot pin down
        (the trend of a random walk) weighs little. A feature that half a history cannot
        show (a daily cycle, in histories of two to four days) is checked on interleaved
        halves instead (every other reading of each metric, each half spanning the whole
        history), less the correlation chance reaches (two standard errors): a cycle both
        halves show keeps most of its weight, one that 24 hourly means fitted to a few days
        of noise make up weighs little or nothing; 0 where even those cannot show it.
        Every feature keeps weight 1 with fewer than 5 devices. A trend unknown in a whole
        history is unknown in its halves, and each device's halves are shrunk towards the
        fleet median by its noise ``ratio`` (:meth:`_noise_ratio`), so a device with a few
        readings, whose halves differ by chance, neither makes nor breaks a feature."""
        if len(hist) < 5:
            return np.ones(len(self.feature_names_))
        halves = [{}, {}]  # type: list[dict[str, pd.DataFrame]]
        for d, f in hist.items():
            f = f.sort_index()
            mid = f.index[0] + (f.index[-1] - f.index[0]) / 2
            halves[0][d], halves[1][d] = f[f.index <= mid], f[f.index > mid]
        unknown = self.profiles_.reindex(index=list(hist)).isna().to_numpy()
        trends = np.array([_kind(f) == "trend" for f in self.feature_names_])

        def scaled(r: pd.DataFrame) -> np.ndarray:
            x = self._scaled(r)
            x[unknown & trends] = np.nan
            return np.nan_to_num(self._shrunk(x, ratio, self.weights_))

        raw = [self._profiles(h, whole=False) for h in halves]
        a, b = (scaled(r) for r in raw)
        unseen = [j for j in range(a.shape[1]) if any(r.iloc[:, j].isna().mean() > 0.5
                                                      for r in raw)]
        if unseen:
            raw = [self._profiles(h, whole=False) for h in _interleaved(hist)]
            ia, ib = (scaled(r) for r in raw)
            a[:, unseen], b[:, unseen] = ia[:, unseen], ib[:, unseen]
        out = np.ones(a.shape[1])
        for j in range(a.shape[1]):
            if j in unseen and any(r.iloc[:, j].isna().mean() > 0.5 for r in raw):
                # its stability cannot be checked: a level (any one reading shows it) only
                # where most devices have one reading, which no half can hold twice; it
                # keeps its weight, as every feature does with fewer than 5 devices (at 0,
                # a fleet of one reading each had no feature left and made one group,
                # whatever n_groups asked). Another (a daily cycle) weighs nothing.
                out[j] = 1.0 if _kind(self.feature_names_[j]) in ("level", "at_ref") else 0.0
                continue
            c = float(np.corrcoef(a[:, j], b[:, j])[0, 1]) if (
                np.ptp(a[:, j]) > 0 and np.ptp(b[:, j]) > 0) else 0.0
            if j in unseen:  # the part of it chance alone reaches (2 standard errors) is
                c -= 2 / math.sqrt(len(hist))  # not counted: few days of noise vary widely
            out[j] = min(1.0, 2 * c / (1 + c)) if c > 0 else 0.0
        return out

    # -- grouping -------------------------------------------------------------------------
    def _cluster(self, Z: np.ndarray, k: int, seed: int, n_init: int = 10) -> np.ndarray:
        from sklearn.cluster import AgglomerativeClustering, KMeans
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.mixture import GaussianMixture
        from threadpoolctl import threadpool_limits

        if k == 1:
            return np.zeros(len(Z), dtype=int)
        # one thread: fleets are small, and OpenMP's start-up on a busy machine costs more
        # than the work (k-means on 20 devices: 0.3 s with threads, 0.02 s without)
        with threadpool_limits(1), warnings.catch_warnings():
            # more groups asked for than there are distinct devices: fewer groups come back
            warnings.simplefilter("ignore", ConvergenceWarning)
            if self.method == "agglomerative":
                return AgglomerativeClustering(n_clusters=k).fit_predict(Z)
            if self.method == "gmm":
                return GaussianMixture(k, covariance_type="diag", n_init=n_init,
                                       reg_covar=1e-3, random_state=seed).fit_predict(Z)
            return KMeans(k, n_init=n_init, random_state=seed).fit_predict(Z)

    def _honoured(self, X: np.ndarray, labels: np.ndarray, k: int, seed: int) -> np.ndarray:
        """``labels`` of ``X`` clustered into ``k`` groups, made ``k`` groups of at least
        ``min_group_size`` devices where the devices allow: a smaller cluster (an outlier
        took one) keeps its devices out, odd ones out, and the others are clustered into
        ``k`` groups again, until every cluster is big enough or the devices left cannot
        make ``k`` such groups (then fewer groups are kept).

        >>> X = np.array([[0.0], [0.1], [5.0], [5.1], [900.0]])
        >>> BehaviourGroups(n_groups=2)._honoured(X, np.array([0, 0, 0, 0, 1]), 2, 0).tolist()
        [1, 1, 0, 0, 2]
        """
        labels = labels.copy()
        rest = np.arange(len(X))
        out = k  # the clusters left out get ids from k up, never one of the k groups'
        while True:
            ids, sizes = np.unique(labels[rest], return_counts=True)
            small = ids[sizes < self.min_group_size]
            if not len(small):
                return labels
            keep = rest[~np.isin(labels[rest], small)]
            if (len(keep) < k * self.min_group_size
                    or len(np.unique(X[keep].round(9), axis=0)) < k):
                return labels
            for g in small:
                labels[rest[labels[rest] == g]] = out
                out += 1
            labels[keep] = self._cluster(X[keep], k, seed)
            rest = keep

    def _silhouettes(self, Z: np.ndarray, ks: list[int], seed: int, n_init: int = 10
                     ) -> dict[int, float]:
        """The silhouette of the grouping into each of ``ks`` groups. ``Z`` may hold NaN
        (unknown features): the clustering reads them as the fleet median, the centres'
        gaps and the silhouette are measured over the features each pair knows."""
        from sklearn.metrics import silhouette_score

        filled = np.nan_to_num(Z)
        unknown = bool(np.isnan(Z).any())
        between = _known_pairwise(Z, self.weights_) if unknown else None
        out = {}
        for k in ks:
            labels = self._cluster(filled, k, seed, n_init)
            found = np.unique(labels)
            centres = np.array([_known_mean(Z[labels == g]) for g in found])
            gaps = _known_distances(centres, centres, self.weights_)[
                np.triu_indices(len(found), 1)]
            # groups closer than one unit differ by less than matters: no grouping
            if not (1 < len(found) < len(Z) and gaps.min() >= _MIN_GAP):
                out[k] = -1.0
            elif between is None:
                out[k] = float(silhouette_score(Z, labels, sample_size=min(len(Z), 1000),
                                                random_state=seed))
            else:
                out[k] = float(silhouette_score(between, labels, metric="precomputed",
                                                sample_size=min(len(Z), 1000),
                                                random_state=seed))
        return out

    def _choose(self, Z: np.ndarray, seed: int) -> int:
        n = len(Z)
        Zf = np.nan_to_num(Z)  # unknown features at the fleet median, for the null cloud
        distinct = len(np.unique(Zf.round(9), axis=0))
        # more groups than n // min_group_size cannot all be kept
        # (as many groups as distinct profiles: a fleet of exact copies of a few kinds)
        ks = list(range(2, min(self.max_groups, n - 1, distinct,
                               n // self.min_group_size) + 1))
        if not ks:
            self.silhouette_, self.null_silhouette_ = {}, {}
            return 1
        self.silhouette_ = self._silhouettes(Z, ks, seed)
        tried = [k for k in ks if self.silhouette_[k] > 0]
        if not tried:
            self.null_silhouette_ = {}
            return 1
        # the silhouettes one Gaussian cloud of the same covariance reaches, at every k
        # tried and clustered as the fleet is: each k is judged against its own null (a
        # cloud's silhouette falls with k, so the best silhouette alone picks k by the
        # null it happens to face, and the verdict flipped between 1 and 7 groups)
        rng = np.random.default_rng(seed)
        draws = [self._silhouettes(_gaussian_like(Zf, rng), tried, seed)
                 for _ in range(_NULL_DRAWS)]
        self.null_silhouette_ = {k: max(d[k] for d in draws) for k in tried}
        # margins on -log(1 - silhouette): a silhouette cannot pass 1, so two kinds far
        # apart (0.99) had no room to beat a cloud that happened to split (0.90 among 8
        # devices) by more than chance, and 8 pumps of two kinds 20 sd apart were one group
        sil, null = _stretched(self.silhouette_), [_stretched(d) for d in draws]
        margin = {k: sil[k] - max(max(d[k] for d in null), 0.0) for k in tried}
        # a cloud's own best margin over the other draws (at any k) says how far chance
        # alone reaches, and the fleet must go further
        chance = max(max(d[k] - max(max(o[k] for o in null if o is not d), 0.0)
                         for k in tried) for d in null)
        # of the numbers of groups whose margin goes further than chance, the best grouping
        # (silhouette): the widest margin alone favours few groups, whose null is lowest
        # (four groups at levels 0/20/40/60 were taken as two)
        beat = [k for k in tried if margin[k] > max(chance, 0.0)]
        return max(beat, key=lambda k: (self.silhouette_[k], -k)) if beat else 1

    def _set_apart(self, Z: np.ndarray, seed: int, apart: np.ndarray | None = None
                   ) -> np.ndarray:
        """Labels of ``Z`` (NaN where a feature is unknown) clustered into the number of
        groups :meth:`_choose` picks; a cluster of fewer than ``min_group_size`` devices at
        that number (a device far from all the others took one) is set apart, its devices
        odd ones out, and the number is chosen again on the devices left, until no cluster
        is that small: one absurd device (readings at 1e150 times the fleet's) no longer
        makes "it and the rest" the best grouping and the rest one group.
        ``silhouette_`` and ``null_silhouette_`` are those of the last choice. Devices
        ``apart`` (a mask) are set apart from the start.

        >>> X = np.array([[0.0], [0.1], [0.2], [20.0], [20.1], [20.2], [1e3]])
        >>> model = BehaviourGroups()
        >>> model.weights_ = np.ones(1)
        >>> model._set_apart(X, 0).tolist()
        [1, 1, 1, 0, 0, 0, 7]
        """
        filled = np.nan_to_num(Z)
        labels = np.zeros(len(Z), dtype=int)
        apart = np.zeros(len(Z), dtype=bool) if apart is None else apart
        rest = np.flatnonzero(~apart)
        # the clusters set apart get ids from len(Z) up, never a group's
        labels[apart] = len(Z) + np.arange(int(apart.sum()))
        out = len(Z) + int(apart.sum())
        while True:
            found = self._cluster(filled[rest], self._choose(Z[rest], seed), seed)
            ids, sizes = np.unique(found, return_counts=True)
            small = ids[sizes < self.min_group_size]
            keep = ~np.isin(found, small)
            if not len(small) or keep.sum() < self.min_group_size:
                labels[rest] = found
                return labels
            for g in small:
                labels[rest[found == g]] = out
                out += 1
            labels[rest[keep]] = found[keep]
            rest = rest[keep]

    # -- public API -----------------------------------------------------------------------
    def fit(self, X: Mapping[str, pd.DataFrame], y: None = None) -> BehaviourGroups:
        """Profile every device in ``X`` and group them."""
        validate_params(self._parameter_constraints, vars(self), self)
        # in the order of the device ids: the same data gives the same groups, whatever
        # the order of the mapping (k-means' start and ties follow the row order)
        hist = dict(sorted(self._histories(X, at_least=2).items()))
        # readings past +-MAX_MAGNITUDE (a 'no value' sentinel such as 1.7e308) are set
        # aside, counted per device and metric: their medians, spreads and trends overflow
        # to inf or NaN, which read as 'no such feature', so a device reading 1.7e308
        # where the fleet reads 20 grouped with it, unnoticed
        hist, self.set_aside_ = _set_aside_huge(hist)
        self._fit_metrics(hist)
        # a device sending none of the used metrics has no feature to group it by: left
        # out (named with why, as a metric left out is), not measured at the fleet median
        self.left_out_devices_ = {d: _sends_none(list(f.columns), self.metrics_,
                                                 self.set_aside_.get(d, {}))
                                  for d, f in hist.items()
                                  if not set(f.columns) & set(self.metrics_)}
        hist = {d: f for d, f in hist.items() if d not in self.left_out_devices_}
        self.missing_ = {d: ms for d, ms in self.missing_.items() if d in hist}
        n = len(hist)  # at least 2: a used metric is sent by at least 2 devices
        of = (f"number of devices that send a used metric ({n}; "
              f"{len(self.left_out_devices_)} left out)" if self.left_out_devices_
              else f"number of devices ({n})")
        if n < self.min_group_size:
            raise InvalidParameterError(
                f"The 'min_group_size' parameter of BehaviourGroups must be at most the "
                f"{of}, or no group could be kept. Got {self.min_group_size} instead.",
                field="min_group_size", value=self.min_group_size)
        most = n // self.min_group_size
        if self.n_groups is not None and self.n_groups > most:
            err = InvalidParameterError(
                f"The 'n_groups' parameter of BehaviourGroups must be at most {most}: "
                f"{n} devices make at most {most} group(s) of at least {self.min_group_size} "
                f"devices (a smaller one is no group). Got {self.n_groups} instead.",
                field="n_groups", value=self.n_groups)
            # the devices the fit groups (those left out do not count) and the most groups
            # they make, for a caller that words the refusal its own way
            err.n_devices, err.most_groups = n, most  # type: ignore[attr-defined]
            err.left_out_devices = dict(self.left_out_devices_)  # type: ignore[attr-defined]
            raise err
        steps = [s for s in (median_step_ns(f) for f in hist.values()) if s]
        self.step_ns_ = (int(self.step_s * 1e9) if self.step_s is not None
                         else int(np.median(steps)) if steps else 60 * 10**9)
        self.reference_value_ = None
        if self.reference is not None:
            levels = [np.nanmedian(f[self.reference]) for f in hist.values()
                      if self.reference in f.columns]
            self.reference_value_ = float(np.median(levels))
        # min and max, not first and last: a history's index need not be sorted
        spans = [(f.index.max() - f.index.min()) / pd.Timedelta(days=1)
                 for f in hist.values()]
        span_days = float(np.median(spans)) or 1.0
        raw = pd.DataFrame.from_dict(
            {d: behaviour_profile(f, self.step_ns_, self.metrics_, self.reference,
                                  self.reference_value_, self.relations, span_days * _DAY_NS)
             for d, f in hist.items()}, orient="index")
        raw = raw.loc[:, raw.notna().any()]  # e.g. no history spans two days: no daily cycle
        self.feature_names_ = [str(c) for c in raw.columns]
        self.devices_ = list(raw.index)
        self.profiles_ = raw
        self._fit_scale(raw, span_days)
        # how much noisier than a typical device's each device's features are, from how
        # few readings it has: a device with few readings is shrunk towards the fleet
        # median where groups are found (its noise makes no group) and towards its group's
        # centre where its odd score is measured (its noise flags nobody)
        counts = self._readings(hist)
        self.typical_readings_ = {m: float(np.median([c[m] for c in counts.values() if m in c]))
                                  for m in self.metrics_}
        self.few_readings_ = {d: few for d, c in counts.items() if (few := {
            m: n for m, n in c.items() if n < self.typical_readings_[m]})}
        # where groups are found, against the fleet's own scatter (groups not known yet)
        ratio = self._noise_ratio(self.devices_, self.few_readings_,
                                  _robust_scatter(self._unweighted(raw)))
        seed = int(self.random_state)
        counted = np.ones(n, dtype=bool)  # the devices reliability is measured on
        while True:
            self.weights_ = np.ones(len(self.feature_names_))
            self.weights_ = self._reliability(
                {d: hist[d] for d, c in zip(self.devices_, counted, strict=True) if c},
                ratio[counted])
            if counted.all():  # a device set apart still counts where odd ones are found:
                # one shaky pump alone makes its vibration's level reliable, and odd
                self.odd_weights_ = _odd_weights(self._unweighted(raw), self.weights_)
            Z = self._scaled(raw)
            found = self._shrunk(Z, ratio, self.weights_)
            filled = np.nan_to_num(found)  # clustering needs every feature: unknown at median
            if self.n_groups is not None:
                self.silhouette_, self.null_silhouette_ = {}, {}
                labels = self._honoured(filled, self._cluster(filled, self.n_groups, seed),
                                        self.n_groups, seed)
                break
            labels = self._set_apart(found, seed, None if counted.all() else ~counted)
            # a device set apart (one absurd device) is left out of the reliability the
            # groups are found with, where alone it made every feature it is extreme in
            # look reliable (the spread of a noisy metric weighed fully), and the groups
            # are chosen again among the others: once
            apart = labels >= n
            if not apart.any() or not counted.all():
                break
            counted = ~apart
        self._fit_groups(Z, self._odd_scaled(raw), labels)
        self.n_features_in_ = len(self.metrics_)
        return self

    def _readings(self, hist: dict[str, pd.DataFrame]) -> dict[str, dict[str, int]]:
        """Each device's number of finite readings of each used metric it sends."""
        return {d: {m: int(np.isfinite(f[m].to_numpy(dtype=float)).sum())
                    for m in self.metrics_ if m in f.columns} for d, f in hist.items()}

    def _noise_ratio(self, devices: list[str], counts: Mapping[str, Mapping[str, int]],
                     scatter: np.ndarray | None) -> np.ndarray:
        """How much further from its centre than a typical device each device's features
        lie by chance (rows: ``devices``, columns: features, at least 1), from how few
        readings it has. A feature from n readings scatters by chance with variance
        ``c² / n`` units² (``c``: :data:`_NOISE`); over a fleet whose devices scatter by
        ``scatter`` (units, per feature; at least a typical device's own chance scatter,
        ``c² / N`` with ``N`` the fleet's typical readings) a device with ``n < N`` has
        ``1 + c² (1/n - 1/N) / scatter²`` times the squared scatter. A feature sent by
        ``counts`` (a metric not in it: typical) of a pair or at the reference point: the
        larger of both metrics'. 1 below :data:`_NOISE_MATERIAL`, and all 1 without
        ``scatter`` or the fleet's typical readings (a file of an earlier release)."""
        typical = getattr(self, "typical_readings_", None) or {}
        out = np.ones((len(devices), len(self.feature_names_)))
        if not typical or scatter is None:
            return out
        noise = np.array([_NOISE.get(_kind(f), 0.0) for f in self.feature_names_])
        of = [pair_metrics(_metric(f), self.metrics_) if _kind(f) == "corr" else
              (_metric(f), str(self.reference)) if _kind(f) == "at_ref" else (_metric(f),)
              for f in self.feature_names_]
        for i, d in enumerate(devices):
            c = counts.get(d)
            if not c:
                continue
            extra = {m: 1 / max(n, 1) - 1 / typical[m] for m, n in c.items()
                     if m in typical and n < typical[m]}  # 1/n - 1/N
            if not extra:
                continue
            for j, ms in enumerate(of):
                if noise[j] == 0 or not any(m in extra for m in ms):
                    continue
                least = min(typical.get(m, math.inf) for m in ms)
                floor = noise[j] ** 2 / least if math.isfinite(least) else 0.0
                sq = max(float(scatter[j]) ** 2, floor)
                if sq > 0:
                    out[i, j] = math.sqrt(1 + noise[j] ** 2 * max(
                        extra.get(m, 0.0) for m in ms) / sq)
        out[out < _NOISE_MATERIAL] = 1.0
        return out

    def _deflated(self, U: np.ndarray, group: np.ndarray, ratio: np.ndarray) -> np.ndarray:
        """Odd-score features ``U`` with each device's gap to its group's centre
        (``group``) shrunk by its noise ``ratio`` (:func:`_shrunk`): a device with few
        readings is as far from its group as its noise allows, not as its noise makes it."""
        return _shrunk(U, ratio, self.odd_weights_, self.odd_centroids_[group])

    def _shrunk(self, Z: np.ndarray, ratio: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Weighted features ``Z`` shrunk towards the fleet median by ``ratio``."""
        return _shrunk(Z, ratio, weights)

    def _fit_metrics(self, hist: dict[str, pd.DataFrame]) -> None:
        n = len(hist)
        counts: dict[str, int] = {}
        for f in hist.values():
            for m in f.columns:
                counts[m] = counts.get(m, 0) + 1
        need = max(2, math.ceil(self.min_coverage * n))
        self.metrics_ = sorted(m for m, c in counts.items() if c >= need)
        self.left_out_ = {m: f"sent by {c} of {n} devices; at least {need} needed"
                          for m, c in sorted(counts.items()) if c < need}
        if not self.metrics_:
            raise InvalidParameterError(
                f"The devices have no metric in common: no metric is sent by at least {need} "
                f"of the {n} devices (min_coverage={self.min_coverage}); metrics and how many "
                f"devices send them: {dict(sorted(counts.items()))}. Give devices that share "
                "metrics, or lower min_coverage.", field="X", value=dict(sorted(counts.items())))
        if self.reference is not None and self.reference not in self.metrics_:
            raise InvalidParameterError(
                f"The 'reference' parameter of BehaviourGroups must be one of the metrics the "
                f"fleet shares, {self.metrics_}. Got {self.reference!r} instead.",
                field="reference", value=self.reference)
        self.missing_ = {d: [m for m in self.metrics_ if m not in f.columns]
                         for d, f in hist.items()}
        self.missing_ = {d: ms for d, ms in self.missing_.items() if ms}

    def _fit_groups(self, Z: np.ndarray, U: np.ndarray, labels: np.ndarray) -> None:
        """Keep the clusters of ``labels`` of at least ``min_group_size`` devices, put
        every device in the group of the nearest centre (on ``Z``, the weighted features),
        score it against that centre (on ``U``, the odd score's features, a device with
        few readings' gap shrunk by its chance scatter over the members': :meth:`_deflated`),
        drop groups with no device short of an odd one out, number the groups by size; set
        centres, odd scores and traits. ``Z`` and ``U`` hold NaN where a device lacks a
        feature."""
        devices = np.array(self.devices_)
        ids = sorted(np.unique(labels).tolist(), key=lambda g: (-np.sum(labels == g),
                                                                 min(devices[labels == g])))
        kept = [g for g in ids if np.sum(labels == g) >= self.min_group_size]
        if not kept:  # no group is big enough (fit refuses the n_groups that make this):
            labels = np.zeros(len(Z), dtype=int)  # the whole fleet is one group, never a
            kept = [0]  # group under min_group_size
        rows = np.arange(len(Z))
        while True:
            self.centroids_ = np.array([_known_mean(Z[labels == g]) for g in kept])
            self.odd_centroids_ = np.array([_known_mean(U[labels == g]) for g in kept])
            self.n_groups_ = len(kept)
            new = self._distances(Z).argmin(1)  # the nearest centre, as assign() does
            members = np.isin(labels, kept)  # a device of a cluster not kept is odd
            self.odd_scatter_ = self._member_scatter(U, new, members)
            Ud = self._deflated(U, new, self._noise_ratio(self.devices_, self.few_readings_,
                                                         self.odd_scatter_))
            own = self._odd_distances(Ud)[rows, new]
            typical = float(np.median(own[members]))
            self.odd_scale_ = typical if typical > 0 else float(np.mean(own[members]) or 1.0)
            score = own / self.odd_scale_
            gauss = self._odd_cut(np.nan_to_num(Ud[members]
                                                - self.odd_centroids_[new[members]]))
            # the fleet's own tail only with enough members to show one (10 devices' log
            # scores scatter so widely that 3.5 robust SDs put the cut out of reach), and
            # at most _TAIL_CAP times the Gaussian cut, which the compressed scale can reach
            tail = (_tail_cut(score[members & (score > 0)])
                    if int(members.sum()) >= _TAIL_MIN_MEMBERS else 0.0)
            self.odd_cut_ = max(gauss, min(tail, _TAIL_CAP * gauss))
            # a device the choice set apart (a cluster of its own) is odd; with n_groups
            # asked, a cluster too small to keep is the count's making, not its devices' (4
            # alike devices in 2 groups: one split off): they join the nearest group unless
            # their odd score passes the cut (they were odd ones out, for noise)
            odd = score > self.odd_cut_
            if self.n_groups is None:
                odd |= ~members
            # a group with no device short of an odd one out is no group: its devices are
            # odd ones out (its traits would describe them only)
            empty = {g for g in range(len(kept)) if not np.any((new == g) & ~odd)}
            if not empty or len(empty) == len(kept):
                break
            kept = [c for g, c in enumerate(kept) if g not in empty]
        # numbered by size, the members short of odd ones out (0 largest; ties: the
        # smallest such member's id)
        def size(g: int) -> tuple[int, str]:
            short = (new == g) & ~odd
            return -int(short.sum()), min(devices[short], default="")

        order = sorted(range(len(kept)), key=size)
        rank = np.empty(len(kept), dtype=int)
        rank[order] = np.arange(len(kept))
        self.centroids_, self.odd_centroids_ = self.centroids_[order], self.odd_centroids_[order]
        new = rank[new]
        self.labels_ = pd.Series(new, index=self.devices_, name="group")
        self.odd_score_ = pd.Series(score, index=self.devices_, name="odd_score")
        self.odd_ = pd.Series(odd, index=self.devices_, name="odd")
        self.Z_ = Z
        self.traits_ = {g: self._traits(Z[(new == g) & members], self.profiles_[
            (new == g) & members]) for g in range(self.n_groups_)}

    def _member_scatter(self, U: np.ndarray, group: np.ndarray, members: np.ndarray
                        ) -> np.ndarray:
        """Each odd-score feature's robust scatter (1.4826 median absolute deviations, in
        units, unweighted) of the members around their group's centre: how far a typical
        member lies by chance and by its own make."""
        w = np.where(self.odd_weights_ > 0, self.odd_weights_, 1.0)
        gap = (U[members] - self.odd_centroids_[group[members]]) / w
        with warnings.catch_warnings():  # a feature no member has: 0
            warnings.simplefilter("ignore", RuntimeWarning)
            out = 1.4826 * np.nanmedian(np.abs(gap), axis=0)
        return np.nan_to_num(out)  # type: ignore[no-any-return]

    def _odd_cut(self, resid: np.ndarray) -> float:
        """The odd score (distance over the median distance) that a member's scatter
        passes with chance ``odd_alpha``: the scatter as Gaussian in as many dimensions as
        its covariance effectively has (participation ratio of its eigenvalues), so a
        fleet that varies in few features gets a higher cut than one that varies in many."""
        from scipy.stats import chi2

        # the participation ratio is the same at any scale: residuals in units of the
        # largest, so one device at 1e300 cannot overflow the Gram matrix (a 500)
        top = float(np.max(np.abs(resid), initial=0.0)) if resid.size else 0.0
        scaled = resid / top if 0 < top < np.inf else resid
        eig = _cov_eigenvalues(scaled) if len(resid) > 1 else np.ones(1)
        dims = float(eig.sum() ** 2 / (eig**2).sum()) if eig.sum() > 0 else 1.0
        self.odd_dims_ = max(1.0, dims)
        return float(np.sqrt(chi2.ppf(1 - self.odd_alpha, self.odd_dims_)
                             / chi2.median(self.odd_dims_)))

    def _distances(self, Z: np.ndarray) -> np.ndarray:
        """Distances of weighted features ``Z`` to each group centre (group choice)."""
        return _known_distances(Z, self.centroids_, self.weights_)

    def _odd_distances(self, U: np.ndarray) -> np.ndarray:
        """Distances of odd-score features ``O`` to each group centre in that space."""
        return _known_distances(U, self.odd_centroids_, self.odd_weights_)

    # -- words ----------------------------------------------------------------------------
    def _traits(self, Zg: np.ndarray, raw: pd.DataFrame, top: int = 3) -> list[dict[str, Any]]:
        """What sets a group (rows ``Zg``, raw profiles ``raw``) apart from the fleet: its
        features whose group median is at least one fleet scale from the fleet median."""
        if self.n_groups_ == 1 or len(Zg) == 0:
            return []
        with warnings.catch_warnings():  # a feature no member has: no effect
            warnings.simplefilter("ignore", RuntimeWarning)
            effect = np.nan_to_num(np.nanmedian(Zg, axis=0))
        out = []
        for j in np.argsort(-np.abs(effect)):
            if abs(effect[j]) < 1.0 or len(out) >= top:
                break
            f = self.feature_names_[j]
            g = float(raw[f].median())
            fleet = float(self.profiles_[f].median())
            more = bool(effect[j] > 0)
            if _kind(f) in ("daily_cos", "daily_sin"):
                m = _metric(f)
                g = peak_hour(raw.median().to_dict(), m)
                fleet = peak_hour(self.profiles_.median().to_dict(), m)
                strength = (float(raw[f"daily:{m}"].median()),
                            float(self.profiles_[f"daily:{m}"].median()))
                if (not _peak_differs(g, fleet, *strength)
                        and f"daily:{m}" in self.feature_names_):  # its strength differs
                    f = f"daily:{m}"
                    g, fleet = strength
                    more = g > fleet
                    j = self.feature_names_.index(f)
                if any(t["feature"] in (f"daily:{m}", f"daily_cos:{m}", f"daily_sin:{m}")
                       for t in out):
                    continue
            out.append({"feature": f, "effect": round(float(effect[j]), 2),
                        "group": rounded(g), "fleet": rounded(fleet),
                        "text": trait_text(f, g, fleet, more, "fleet",
                                           self.reference, self.reference_value_,
                                           self.metrics_)})
        return out

    def _why_odd(self, o: np.ndarray, raw: pd.Series, group: int) -> str:
        """The feature that puts a device (``o``: its odd-score features) furthest from its
        group, in words: of the features both have (a feature the device lacks is never
        the reason)."""
        gap = o - self.odd_centroids_[group]
        known = np.isfinite(gap)
        if not known.any():  # it has no feature: measured at the fleet median
            gap = np.nan_to_num(o) - np.nan_to_num(self.odd_centroids_[group])
            known[:] = True
        j = int(np.argmax(np.where(known, np.abs(gap), -1.0)))
        f = self.feature_names_[j]
        value, typical = float(raw[f]), self._group_raw(group, f)
        more = bool(gap[j] > 0)
        if _kind(f) in ("daily_cos", "daily_sin"):  # in words: hours of the daily peak
            m = _metric(f)
            value = peak_hour(raw.to_dict(), m)
            typical = peak_hour({f"{k}:{m}": self._group_raw(group, f"{k}:{m}")
                                 for k in ("daily_cos", "daily_sin")}, m)
            strength = (float(raw[f"daily:{m}"]), self._group_raw(group, f"daily:{m}"))
            if not _peak_differs(value, typical, *strength):  # the strength differs
                f = f"daily:{m}"
                value, typical = strength
                more = value > typical
        return trait_text(f, value, typical, more, f"group {group}",
                          self.reference, self.reference_value_, self.metrics_)

    def _group_raw(self, group: int, f: str) -> float:
        mask = (self.labels_ == group) & ~self.odd_
        vals = self.profiles_.loc[mask.to_numpy(), f]
        return float(vals.median()) if vals.notna().any() else float(self.profiles_[f].median())

    # -- new devices ----------------------------------------------------------------------
    def assign(self, X: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
        """Each device's group (the nearest group centre), odd score (to that centre, on
        the odd score's features, as in the fit), odd flag and, for an odd one, the feature
        that sets it furthest from its group; indexed by device."""
        self._fitted()
        hist, _ = _set_aside_huge(self._histories(X, at_least=1))
        lacking = [d for d, f in hist.items() if not set(f.columns) & set(self.metrics_)]
        if lacking:
            raise InvalidParameterError(
                f"Device {lacking[0]!r} sends none of the metrics the groups were learned "
                f"from, {self.metrics_}; give a history with at least one of them.",
                field="X", value=lacking[0])
        raw = self._profiles(hist)
        group = self._distances(self._scaled(raw)).argmin(1)
        U = self._deflated(self._odd_scaled(raw), group, self._noise_ratio(
            list(hist), self._readings(hist), self.odd_scatter_))
        score = self._odd_distances(U)[np.arange(len(U)), group] / self.odd_scale_
        odd = score > self.odd_cut_
        why = [self._why_odd(U[i], raw.iloc[i], int(group[i])) if odd[i] else ""
               for i in range(len(U))]
        return pd.DataFrame({"group": group, "odd_score": score, "odd": odd, "why": why},
                            index=pd.Index(list(hist), name="device"))

    def predict(self, X: Mapping[str, pd.DataFrame]) -> pd.Series:
        """The group of each device in ``X`` (nearest group centre), indexed by device."""
        return self.assign(X)["group"]

    def score_samples(self, X: Mapping[str, pd.DataFrame]) -> pd.Series:
        """Each device's odd score: distance to its group's (the nearest) centre over the
        members' median such distance (above ``odd_cut_``: an odd one out)."""
        return self.assign(X)["odd_score"]

    def summary(self) -> dict[str, Any]:
        """The groups as plain data (JSON-ready): members, traits, odd ones out with why."""
        self._fitted()
        groups = []
        for g in range(self.n_groups_):
            members = [d for d in self.devices_ if self.labels_[d] == g and not self.odd_[d]]
            groups.append({"group": g, "size": len(members), "members": members,
                           "traits": self.traits_[g]})
        odd = []
        U = self._deflated(self._odd_scaled(self.profiles_), self.labels_.to_numpy(),
                           self._noise_ratio(self.devices_, self.few_readings_,
                                             self.odd_scatter_)) if self.odd_.any() else None
        for i, d in enumerate(self.devices_):
            if self.odd_[d] and U is not None:
                g = int(self.labels_[d])
                odd.append({"device": d, "nearest_group": g,
                            "odd_score": round(float(self.odd_score_[d]), 2),
                            "why": self._why_odd(U[i], self.profiles_.iloc[i], g)})
        return {"n_devices": len(self.devices_), "n_groups": self.n_groups_,
                "fewer_groups": self._fewer_groups(),
                "metrics": self.metrics_, "left_out": self.left_out_,
                "left_out_devices": dict(self.left_out_devices_),
                "missing": self.missing_,
                "set_aside": dict(getattr(self, "set_aside_", {})),
                "silhouette": {str(k): round(v, 3) for k, v in self.silhouette_.items()},
                "null_silhouette": {str(k): round(v, 3)
                                    for k, v in self.null_silhouette_.items()},
                "groups": groups, "odd_ones_out": odd}

    def _fewer_groups(self) -> str | None:
        """Why fewer groups were made than ``n_groups`` asked for, in words; ``None`` when
        as many were made (or the number was chosen)."""
        if self.n_groups is None or self.n_groups_ >= self.n_groups:
            return None
        asked = f"{self.n_groups} groups were asked for; {self.n_groups_} could be made: "
        distinct = len(np.unique(np.nan_to_num(self.Z_).round(9), axis=0))
        if distinct < self.n_groups:
            return asked + (f"the {len(self.devices_)} devices have only {distinct} "
                            "distinct profile(s) in the features grouped by (devices reading "
                            "alike, or features too unsteady to group by)")
        odd = first_and_more([d for d in self.devices_ if self.odd_[d]], each=repr)
        return asked + (f"a group needs at least {self.min_group_size} devices that fit it, "
                        "and the devices do not make more such groups"
                        + (f" ({odd} fit none: odd ones out)" if odd else ""))

    # -- persistence ----------------------------------------------------------------------
    _STATE: ClassVar[tuple[str, ...]] = tuple(_STATE_TYPES)

    def save(self, path: str | Path) -> int:
        """Write the fitted model as one versioned JSON file, whole or not at all.

        Line one names the format, line two is a header (version, SHA-256 of the body),
        then the body: parameters and learned state, no pickle, so loading runs no code.
        The file is written beside ``path`` under a temporary name and renamed over it, so
        a reader never sees half a file and a failed save leaves the old one. Returns the
        number of bytes written.
        """
        self._fitted()
        state: dict[str, Any] = {k: getattr(self, k) for k in self._STATE}
        state["traits_"] = {str(g): t for g, t in self.traits_.items()}
        state["silhouette_"] = {str(k): v for k, v in self.silhouette_.items()}
        state["null_silhouette_"] = {str(k): v for k, v in self.null_silhouette_.items()}
        arrays = {"center_": self.center_, "scale_": self.scale_, "weights_": self.weights_,
                  "centroids_": self.centroids_, "Z_": self.Z_,
                  "odd_weights_": self.odd_weights_, "odd_centroids_": self.odd_centroids_}
        if self.odd_scatter_ is not None:
            arrays["odd_scatter_"] = self.odd_scatter_
        body = json.dumps({
            "params": {k: getattr(self, k) for k in self._parameter_constraints},
            "state": state,
            "arrays": {k: v.tolist() for k, v in arrays.items()},
            "labels_": self.labels_.tolist(), "odd_score_": self.odd_score_.tolist(),
            "odd_": self.odd_.tolist(),
            # full precision, as the arrays (to_json keeps 10 decimals: 1e-12 became 0)
            "profiles_": {"index": [str(d) for d in self.profiles_.index],
                          "columns": [str(c) for c in self.profiles_.columns],
                          "data": self.profiles_.to_numpy(dtype=float).tolist()},
        }, allow_nan=True, default=json_number).encode()
        head = {"format_version": FORMAT_VERSION, "kind": "BehaviourGroups",
                "n_groups": self.n_groups_, "n_devices": len(self.devices_)}
        return write_model_file(path, _MAGIC, head, body)


def _interleaved(hist: dict[str, pd.DataFrame]) -> list[dict[str, pd.DataFrame]]:
    """Each history split into two halves that both span it: every other reading of each
    metric (a time with several readings: their mean).

    >>> idx = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    >>> a, b = _interleaved({"d": pd.DataFrame({"t": [1.0, 2, 3, 4]}, index=idx)})
    >>> a["d"]["t"].tolist(), b["d"]["t"].tolist()
    ([1.0, 3.0], [2.0, 4.0])
    """
    out: list[dict[str, pd.DataFrame]] = [{}, {}]
    for d, f in hist.items():
        cols = [f[m].dropna().groupby(level=0).mean().sort_index() for m in f.columns]
        for h in (0, 1):
            out[h][d] = pd.concat([c.iloc[h::2] for c in cols], axis=1).sort_index()
    return out


def _shrunk(X: np.ndarray, ratio: np.ndarray, weights: np.ndarray,
            centre: np.ndarray | None = None) -> np.ndarray:
    """Scaled features ``X`` (weighted by ``weights``; NaN: unknown) with each gap to
    ``centre`` (rows like ``X``; default the fleet median, 0) divided by ``ratio`` (at
    least 1), on the linear scale, before the logarithmic compression (so a gross oddity
    with few readings stays gross). A feature of weight 0 stays as it is.

    >>> X = 3 * np.arcsinh(np.array([[4.0, 300.0]]) / 3)  # 4 and 300 units, compressed
    >>> (3 * np.sinh(_shrunk(X, np.array([[2.0, 10.0]]), np.ones(2)) / 3)).round(6).tolist()
    [[2.0, 30.0]]
    """
    if bool((ratio == 1.0).all()):
        return X
    w = np.where(weights > 0, weights, 1.0)
    with np.errstate(invalid="ignore", over="ignore"):
        xz = _LINEAR * np.sinh(X / w / _LINEAR)
        cz = 0.0 if centre is None else _LINEAR * np.sinh(centre / w / _LINEAR)
        out = _LINEAR * np.arcsinh((cz + (xz - cz) / ratio) / _LINEAR) * w
    return np.where((ratio > 1.0) & (weights > 0), out, X)  # type: ignore[no-any-return]


def _stretched(silhouettes: Mapping[int, float]) -> dict[int, float]:
    """Silhouettes on the scale their margins are compared on: ``-log(1 - s)`` where
    ``s > 0`` (about ``s`` for small ones, unbounded as ``s`` nears its ceiling of 1),
    ``s`` itself otherwise (a grouping that does not count: -1).

    >>> {k: round(v, 3) for k, v in _stretched({2: 0.5, 3: 0.99, 4: -1.0}).items()}
    {2: 0.693, 3: 4.605, 4: -1.0}
    """
    return {k: -math.log(max(1.0 - s, 1e-12)) if s > 0 else s
            for k, s in silhouettes.items()}


def _gaussian_like(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """As many rows as ``X`` drawn from one Gaussian of ``X``'s mean and covariance: each
    a random mix of ``X``'s centred rows (``G (X - mean) / sqrt(n - 1)``, ``G`` standard
    normal n x n), whose covariance is ``X``'s, in O(n² features), not the features³ of
    factoring a features x features covariance (60 metrics' 1,800 correlations: minutes).

    >>> X = np.random.default_rng(0).normal(size=(40, 3)) * [1.0, 5.0, 0.1]
    >>> Y = np.vstack([_gaussian_like(X, np.random.default_rng(s)) for s in range(300)])
    >>> np.allclose(np.cov(Y, rowvar=False), np.cov(X, rowvar=False), rtol=0.15, atol=0.02)
    True
    """
    n = len(X)
    mean = X.mean(0)
    mix = rng.standard_normal((n, n)) / math.sqrt(max(n - 1, 1))
    return mean + mix @ (X - mean)  # type: ignore[no-any-return]


def _cov_eigenvalues(X: np.ndarray) -> np.ndarray:
    """The eigenvalues of the covariance of ``X``'s rows that can be nonzero (at most
    rows - 1 of them, clipped at 0), from the rows x rows Gram matrix of the centred rows
    (the same nonzero eigenvalues as the features x features covariance, at a fraction of
    its cost where features outnumber rows).

    >>> X = np.random.default_rng(0).normal(size=(6, 50))
    >>> full = np.linalg.eigvalsh(np.cov(X, rowvar=False))[-5:]
    >>> np.allclose(np.sort(_cov_eigenvalues(X))[-5:], full)
    True
    """
    c = X - X.mean(0)
    gram = c @ c.T if len(c) <= c.shape[1] else c.T @ c
    return np.clip(np.linalg.eigvalsh(gram / max(len(X) - 1, 1)), 0.0, None)


def _peak_differs(hour: float, other: float, strength: float, other_strength: float) -> bool:
    """Whether a daily-peak feature that sets one (a group, a device) apart from another
    (the fleet, its group) says that its cycle peaks at another hour: neither cycle is
    weak (a share of at least :data:`_WEAK_DAILY`: a flat metric's "peak" is made up) and
    the peaks are more than :data:`_PEAK_HOURS` apart. Otherwise the feature differs
    because the cycle's strength does, which is the trait to name.

    >>> _peak_differs(13.0, 0.0, 0.02, 0.99), _peak_differs(0.4, 23.8, 0.3, 0.99)
    (False, False)
    >>> _peak_differs(12.0, 0.0, 0.9, 0.95), _peak_differs(12.0, 0.0, 0.9, 0.02)
    (True, False)
    """
    if not all(math.isfinite(v) for v in (hour, other, strength, other_strength)):
        return False
    if min(strength, other_strength) < _WEAK_DAILY:
        return False
    apart = abs(hour - other) % 24
    return min(apart, 24 - apart) > _PEAK_HOURS


def _known_mean(rows: np.ndarray) -> np.ndarray:
    """The mean of each column over its known (finite) values; NaN where none is.

    >>> _known_mean(np.array([[1.0, np.nan, np.nan], [3.0, 4.0, np.nan]])).tolist()
    [2.0, 4.0, nan]
    """
    known = np.isfinite(rows)
    if known.all():
        return rows.mean(0)  # type: ignore[no-any-return]
    count = known.sum(0)
    total = np.where(known, rows, 0.0).sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _known_distances(A: np.ndarray, B: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The distance of each row of ``A`` to each row of ``B`` over the features both know
    (NaN: unknown), scaled up by the share of the squared ``weights`` those features
    carry (so a device lacking a metric is measured as far as its other features say,
    not pulled to the fleet median); a pair with no known feature in common is measured
    with the unknown ones at 0, the fleet median.

    >>> w = np.ones(2)
    >>> _known_distances(np.array([[3.0, np.nan]]), np.array([[0.0, 4.0], [3.0, 9.0]]), w)
    array([[4.24264069, 0.        ]])
    """
    diff = A[:, None, :] - B[None, :, :]
    known = np.isfinite(diff)
    if known.all():
        return np.linalg.norm(diff, axis=2)
    w2 = np.asarray(weights, dtype=float) ** 2
    total = float(w2.sum())
    sq = (np.where(known, diff, 0.0) ** 2).sum(2)
    if total <= 0:  # every feature weighs 0: every known scaled value is 0
        return np.sqrt(sq)
    used = (known * w2).sum(2) / total
    some = used > 0
    out = np.sqrt(sq / np.where(some, used, 1.0))
    if not some.all():
        median = np.linalg.norm(np.nan_to_num(A)[:, None, :] - np.nan_to_num(B)[None, :, :],
                                axis=2)
        out = np.where(some, out, median)
    return out


def _known_pairwise(Z: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """:func:`_known_distances` of every row of ``Z`` to every other, in matrix products
    (memory of rows², not rows² × features).

    >>> Z = np.array([[3.0, np.nan], [0.0, 4.0], [3.0, 9.0]])
    >>> np.allclose(_known_pairwise(Z, np.ones(2)), _known_distances(Z, Z, np.ones(2)))
    True
    """
    known = np.isfinite(Z)
    z = np.where(known, Z, 0.0)
    m = known.astype(float)
    w2 = np.asarray(weights, dtype=float) ** 2
    total = float(w2.sum())
    sq = (z**2) @ m.T + m @ (z**2).T - 2 * z @ z.T
    sq = np.maximum(sq, 0.0)
    used = (m * w2) @ m.T / total if total > 0 else np.ones_like(sq)
    some = used > 0
    out = np.sqrt(sq / np.where(some, used, 1.0))
    if not some.all():
        zf = np.nan_to_num(Z)
        g = zf @ zf.T
        d = np.diag(g)
        median = np.sqrt(np.maximum(d[:, None] + d[None, :] - 2 * g, 0.0))
        out = np.where(some, out, median)
    np.fill_diagonal(out, 0.0)
    return out


def _odd_weights(U: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weight of each scaled feature (columns of ``U``, NaN: unknown) in the odd score:
    its reliability ``weights``, raised to 1 over the fleet's robust scatter of it in units
    (1.4826 median absolute deviations), at most 1. A feature the fleet agrees on (scatter
    within a unit: a fleet of one kind's levels, whose reliability is near 0 because their
    differences are noise) weighs 1, so a device far off on it is odd; a noisy one (the
    trend of a random walk, scattered over several units) weighs its reliability or one
    unit of scatter, so its noise alone flags nobody.

    >>> U = np.array([[0.0, 0.0], [0.1, 4.0], [-0.1, -4.0], [0.2, 8.0]])
    >>> _odd_weights(U, np.array([0.0, 0.1])).round(3).tolist()
    [1.0, 0.169]
    """
    spread = _robust_scatter(U, nan=math.nan)
    floor = np.where(np.isfinite(spread) & (spread > 1.0),
                     1.0 / np.where(spread > 1.0, spread, 1.0), 1.0)
    return np.maximum(np.asarray(weights, dtype=float), floor)


def _robust_scatter(U: np.ndarray, nan: float = 0.0) -> np.ndarray:
    """Each column's robust scatter about its median, 1.4826 median absolute deviations,
    over its known values (``nan`` for a column with none).

    >>> _robust_scatter(np.array([[0.0, np.nan], [1.0, np.nan], [3.0, np.nan]])).tolist()
    [1.4826, 0.0]
    """
    with warnings.catch_warnings():  # a feature no device has
        warnings.simplefilter("ignore", RuntimeWarning)
        mid = np.nanmedian(U, axis=0)
        out = 1.4826 * np.nanmedian(np.abs(U - mid), axis=0)
    return np.where(np.isfinite(out), out, nan)  # type: ignore[no-any-return]


def _tail_cut(scores: np.ndarray, z: float = 3.5) -> float:
    """The score ``z`` robust standard deviations (1.4826 median absolute deviations)
    above the median, on the log scale: where the fleet's own scores stop, whatever the
    shape of their tail.

    >>> round(_tail_cut(np.array([0.8, 0.9, 1.0, 1.1, 1.25])), 2)
    1.73
    """
    if len(scores) < 3:
        return 0.0
    logs = np.log(scores)
    mid = float(np.median(logs))
    return float(np.exp(mid + z * 1.4826 * float(np.median(np.abs(logs - mid)))))


def load_groups(path: str | Path) -> BehaviourGroups:
    """Load a model written by :meth:`BehaviourGroups.save`; a file that is not one, is
    damaged or of another format version raises :class:`GroupsFileError`."""
    name = str(path)
    _, body = read_model_file(path, _MAGIC, GroupsFileError, what="groups model",
                              version=FORMAT_VERSION, remedy="fit the groups again")
    try:
        return _from_doc(json.loads(body), name)
    except GroupsFileError:
        raise
    except (ValueError, KeyError, TypeError, RecursionError) as exc:  # Recursion: nested JSON
        raise GroupsFileError(f"Groups file {name!r} does not hold a groups model this "
                              f"Edgewise can read ({type(exc).__name__}: {exc}); fit the "
                              "groups again.") from None


def _check_doc(doc: Any, name: str) -> None:
    """Raise :class:`GroupsFileError` naming the file and the first field of a saved body
    that is missing or of the wrong JSON type (a file rewritten with a valid checksum can
    hold anything), before any of it is used."""
    def bad(field: str, what: str, got: str = "it is missing") -> GroupsFileError:
        return GroupsFileError(f"Groups file {name!r} does not hold a groups model this "
                               f"Edgewise can read: its field {field!r} must be {what}; {got}. "
                               "Fit the groups again (edgewise groups --save).")

    def shown(value: Any) -> str:
        return f"got {type(value).__name__} {value!r:.60}"

    if not isinstance(doc, dict):
        raise bad("(body)", "a JSON object", shown(doc))
    for key, kind in (("params", dict), ("state", dict), ("arrays", dict), ("profiles_", dict),
                      *((k, list) for k in _PER_DEVICE)):
        what = f"a JSON {'object' if kind is dict else 'list'}"
        if key not in doc:
            raise bad(key, what)
        if not isinstance(doc[key], kind):
            raise bad(key, what, shown(doc[key]))
    state = doc["state"]
    for key, (types, what) in _STATE_TYPES.items():
        if key not in state:
            if key in _OPTIONAL_STATE:
                continue
            raise bad(f"state.{key}", what)
        value = state[key]
        if (not isinstance(value, types) or isinstance(value, bool)
                or (what == _TEXTS and not all(isinstance(v, str) for v in value))):
            raise bad(f"state.{key}", what, shown(value))
    for key in (*_ARRAYS, *_ODD_ARRAYS, _SCATTER):
        if key not in doc["arrays"]:
            if key in (*_ODD_ARRAYS, _SCATTER):
                continue
            raise bad(f"arrays.{key}", "a list of numbers")
        if not isinstance(doc["arrays"][key], list):
            raise bad(f"arrays.{key}", "a list of numbers", shown(doc["arrays"][key]))
    devices = len(state["devices_"])
    for key in _PER_DEVICE:
        if len(doc[key]) != devices:
            raise bad(key, f"a list of one value per device ({devices})",
                      f"got {len(doc[key])} values")
    _check_consistent(doc, bad, shown)


def _is_number(v: Any, finite: bool = True) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and (not finite or math.isfinite(v)))


def _check_consistent(doc: dict[str, Any], bad: Any, shown: Any) -> None:
    """Raise ``bad(field, what, got)`` for the first part of a saved body (its JSON types
    checked) that does not fit the rest: parameters out of range, arrays of another length
    than the features, a metric without its spread, a step or scale not above 0, labels
    outside the groups. A file rewritten with a valid checksum can hold any of these, and
    each failed later, in a traceback, far from the file."""
    params, state, arrays = doc["params"], doc["state"], doc["arrays"]
    try:
        BehaviourGroups(**params)
        validate_params(BehaviourGroups._parameter_constraints, params, "BehaviourGroups")
    except (TypeError, InvalidParameterError) as exc:
        why = str(exc)
        raise bad("params", "the parameters of BehaviourGroups", why[:1].lower() + why[1:]
                  ) from None
    metrics, features = state["metrics_"], state["feature_names_"]
    if not metrics or not features:
        field = "state.metrics_" if not metrics else "state.feature_names_"
        raise bad(field, "a list of at least one text", "got an empty list")
    if params.get("reference") is not None and (
            params["reference"] not in metrics or not _is_number(state["reference_value_"])):
        raise bad("params.reference", f"one of the metrics used, {metrics!r:.60}, with a "
                  "number in state.reference_value_", shown(params["reference"]))
    for f in features:
        kind = _kind(f)
        known = (all(m in metrics for m in pair_metrics(_metric(f), metrics))
                 if kind == "corr" else _metric(f) in metrics) if ":" in f else False
        if not known or (kind not in _UNIT and kind not in ("level", "at_ref")):
            raise bad("state.feature_names_", "features (kind:metric) of the metrics used",
                      shown(f))
    for key in ("typical_spread_", "eps_"):
        for m in metrics:
            v = state[key].get(m)
            if not (_is_number(v) and v > 0):
                raise bad(f"state.{key}", "a number above 0 for each metric used",
                          f"{m!r}: {'it is missing' if v is None else shown(v)}")
    for key in ("step_ns_", "span_days_", "odd_scale_", "odd_cut_", "odd_dims_"):
        if not (_is_number(state[key]) and state[key] > 0):
            raise bad(f"state.{key}", "a number above 0", shown(state[key]))
    groups = state["n_groups_"]
    if groups < 1:
        raise bad("state.n_groups_", "a whole number of at least 1", shown(groups))
    p = len(features)
    devices = len(state["devices_"])
    shapes = {"center_": None, "scale_": None, "weights_": None, "odd_weights_": None,
              _SCATTER: None, "centroids_": groups, "odd_centroids_": groups, "Z_": devices}
    for key, rows in shapes.items():
        if key not in arrays:  # an odd-space array a file of an earlier release lacks
            continue
        v = arrays[key]
        lines = [v] if rows is None else v
        want = (f"a list of {p} numbers (one per feature)" if rows is None else
                f"a list of {rows} lists of {p} numbers (one per feature)")
        if rows is not None and len(v) != rows:
            raise bad(f"arrays.{key}", want, f"got {len(v)} lists")
        for line in lines:
            if (not isinstance(line, list) or len(line) != p
                    or not all(_is_number(x, finite=False) for x in line)):
                raise bad(f"arrays.{key}", want, shown(line))
        finite = key != "Z_"  # a device's unknown feature is NaN there
        if finite and not all(math.isfinite(x) for line in lines for x in line):
            raise bad(f"arrays.{key}", want + ", all finite", shown(v))
        if key == "scale_" and not all(x > 0 for x in v):
            raise bad("arrays.scale_", want + ", all above 0", shown(v))
        if key == _SCATTER and not all(x >= 0 for x in v):
            raise bad(f"arrays.{key}", want + ", none below 0", shown(v))
    if not all(isinstance(g, int) and not isinstance(g, bool) and 0 <= g < groups
               for g in doc["labels_"]):
        raise bad("labels_", f"a list of group numbers from 0 to {groups - 1}",
                  shown(doc["labels_"]))
    if not all(_is_number(x, finite=False) for x in doc["odd_score_"]):
        raise bad("odd_score_", "a list of numbers", shown(doc["odd_score_"]))
    if not all(isinstance(x, bool) for x in doc["odd_"]):
        raise bad("odd_", "a list of true/false", shown(doc["odd_"]))
    traits = state["traits_"]
    if sorted(traits) != sorted(str(g) for g in range(groups)) or not all(
            isinstance(t, list) and all(isinstance(x, dict) for x in t) for t in traits.values()):
        raise bad("state.traits_", f"an object of a list of traits for each group 0 to "
                  f"{groups - 1}", shown(traits))
    prof = doc["profiles_"]
    if not (isinstance(prof.get("index"), list) and len(prof["index"]) == devices
            and isinstance(prof.get("columns"), list) and isinstance(prof.get("data"), list)
            and len(prof["data"]) == devices and all(
                isinstance(r, list) and len(r) == len(prof["columns"]) for r in prof["data"])
            and all(f in prof["columns"] for f in features)):
        raise bad("profiles_", f"an object of index ({devices} devices), columns (every "
                  "feature) and data (a row of numbers per device)", shown(prof))
    typical = state.get("typical_readings_", {})
    if not all(_is_number(v) and v > 0 for v in typical.values()):
        raise bad("state.typical_readings_", "an object of a number above 0 per metric",
                  shown(typical))
    few = state.get("few_readings_", {})
    if not all(isinstance(c, dict) and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in c.values())
            for c in few.values()):
        raise bad("state.few_readings_", "an object of each device's readings per metric "
                  "(whole numbers)", shown(few))
    aside = state.get("set_aside_", {})
    if not all(isinstance(c, dict) and all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in c.values())
            for c in aside.values()):
        raise bad("state.set_aside_", "an object of each device's readings set aside per "
                  "metric (whole numbers above 0)", shown(aside))


def _from_doc(doc: dict[str, Any], name: str = "(body)") -> BehaviourGroups:
    """The model a saved body describes (``name``: its file, for errors)."""
    _check_doc(doc, name)
    model = BehaviourGroups(**doc["params"])
    model.left_out_devices_ = {}  # a file saved before devices were left out names none
    model.typical_readings_, model.few_readings_ = {}, {}  # nor allows for few readings
    model.set_aside_ = {}  # nor sets readings aside
    model.odd_scatter_ = None
    for k, v in doc["state"].items():
        if k in _STATE_TYPES:  # a key this release does not know is not made an attribute
            setattr(model, k, v)
    model.traits_ = {int(g): t for g, t in model.traits_.items()}
    model.silhouette_ = {int(k): v for k, v in model.silhouette_.items()}
    model.null_silhouette_ = {int(k): v for k, v in model.null_silhouette_.items()}
    for k, v in doc["arrays"].items():
        if k not in (*_ARRAYS, *_ODD_ARRAYS, _SCATTER):  # an array this release does not know
            continue
        setattr(model, k, np.asarray(v, dtype=float).reshape(-1, len(model.feature_names_))
                if k in ("centroids_", "Z_", "odd_centroids_") else np.asarray(v, dtype=float))
    if not all(k in doc["arrays"] for k in _ODD_ARRAYS):
        # saved by an earlier release: its odd scores (and cut) are on the weighted features
        model.odd_weights_, model.odd_centroids_ = model.weights_, model.centroids_
    model.labels_ = pd.Series(doc["labels_"], index=model.devices_, name="group")
    model.odd_score_ = pd.Series(doc["odd_score_"], index=model.devices_, name="odd_score")
    model.odd_ = pd.Series(doc["odd_"], index=model.devices_, name="odd")
    p = doc["profiles_"]
    model.profiles_ = pd.DataFrame(p["data"], index=p["index"], columns=p["columns"],
                                   dtype=float)
    return model


#: Readings of a larger magnitude are set aside by a fit (see :func:`_set_aside_huge`): no
#: physical reading comes near it, and below it every feature and the fit's sums of their
#: squares stay finite (a device constant at 1e180 overflowed the features' reliability),
#: while a device whose readings are all absurd but finite (1e150 times the fleet's) is
#: still an odd one out, not set aside.
MAX_MAGNITUDE = 1e160


def _set_aside_huge(hist: dict[str, pd.DataFrame]
                    ) -> tuple[dict[str, pd.DataFrame], dict[str, dict[str, int]]]:
    """``hist`` with each reading past +-:data:`MAX_MAGNITUDE` made NaN (no reading) and a
    metric left with no finite reading dropped, and how many readings of each device's
    metrics were set aside so. A device that sends a 'no value' sentinel (1.7e308), or
    swings by 1e300, would otherwise get inf or NaN features (medians and spreads overflow),
    which a fit reads as features it lacks: it looked like the fleet.

    >>> idx = pd.date_range("2024-01-01", periods=3, freq="1h", tz="UTC")
    >>> h, out = _set_aside_huge({"p": pd.DataFrame({"a": [1.0, 1.7e308, 2.0],
    ...                                              "b": [1e300] * 3}, index=idx)})
    >>> h["p"]["a"].tolist(), list(h["p"].columns), out
    ([1.0, nan, 2.0], ['a'], {'p': {'a': 1, 'b': 3}})
    """
    out: dict[str, pd.DataFrame] = {}
    counts: dict[str, dict[str, int]] = {}
    for d, f in hist.items():
        v = f.to_numpy(dtype=float)
        huge = np.abs(v) > MAX_MAGNITUDE  # NaN compares False: not counted
        if not huge.any():
            out[d] = f
            continue
        per = huge.sum(axis=0)
        counts[d] = {str(m): int(c) for m, c in zip(f.columns, per, strict=True) if c}
        v = np.where(huge, np.nan, v)
        keep = np.isfinite(v).any(axis=0)
        out[d] = pd.DataFrame(v[:, keep], index=f.index, columns=f.columns[keep])
    return out, counts


def _sends_none(sent: list[str], used: list[str],
                set_aside: Mapping[str, int] | None = None, shown: int = 10) -> str:
    """Why a device sending ``sent`` (none of the ``used`` metrics) is left out of a fit;
    ``set_aside``: its readings past +-:data:`MAX_MAGNITUDE` per metric, set aside.

    >>> _sends_none(["c"], ["load", "temp"])
    'sends none of the metrics used (load, temp); it sends c'
    >>> _sends_none([], ["load", "temp"], {"load": 3})
    'sends none of the metrics used (load, temp) but readings past +-1e+160 (set aside: \
load 3); it sends nothing else'
    """
    def names(ms: list[str]) -> str:
        return ", ".join(ms[:shown]) + (f" and {len(ms) - shown} more" if len(ms) > shown
                                        else "")
    if set_aside:
        huge = names([f"{m} {n}" for m, n in sorted(set_aside.items())])
        return (f"sends none of the metrics used ({names(used)}) but readings past "
                f"+-{MAX_MAGNITUDE:g} (set aside: {huge}); it sends "
                f"{names(sorted(sent)) or 'nothing else'}")
    return f"sends none of the metrics used ({names(used)}); it sends {names(sorted(sent))}"


def _finite_metrics_of(device: object, frame: pd.DataFrame) -> list[str]:
    """The columns of ``frame`` (a device's history) with a finite reading; raises
    :class:`InvalidParameterError` naming the device and its columns when none has one.

    >>> _finite_metrics_of("p1", pd.DataFrame({"a": [1.0, np.nan], "b": [np.nan] * 2}))
    ['a']
    """
    metrics = finite_metrics(frame)
    if not metrics:
        raise InvalidParameterError(
            f"Device {device!r} has no finite reading in any numeric column "
            f"(columns: {[str(c) for c in frame.columns]}); give it readings, or leave "
            "it out.", field="X", value=str(device))
    return metrics
