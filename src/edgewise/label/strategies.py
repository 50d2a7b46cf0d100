"""Query strategies: which unlabelled windows should a person label next?

Every strategy ranks the windows of a :class:`Pool` and :meth:`QueryStrategy.select`
returns the ``k`` best unlabelled ones. A pool carries what the current model thinks
of each window as a *margin*: how far its score is above (``> 0``, an alarm) or below
(``< 0``) the threshold of its device, in z units (see
:class:`edgewise.label.feedback.WindowFeedbackModel`).

* :class:`Uncertainty`: windows whose score is nearest the threshold (one label there
  moves the threshold most); ``side="alarms"`` only looks at the weakest alarms.
* :class:`TopScore`: the strongest alarms (confirm them, or clear a false alarm storm).
* :class:`Disagreement`: windows the detectors of an ensemble disagree on most.
* :class:`Diversity`: cover operating states: cluster the window features and take the
  window nearest the centre of the least-labelled clusters.
* :class:`Novelty`: windows least like the rest of their device (robust distance in
  feature space): slow faults the detectors adapt to stand out there.
* :class:`DefaultMix`: interleave several strategies (default: weakest alarms,
  strongest alarms, ensemble disagreement, novelty), giving more questions to those
  whose answers contradict the model; the one the benchmark measures.

By default one call takes one window per device before it takes a second of any device
(``spread=True``), so a batch of questions is not spent on one storm of alarms: once
every device with an unlabelled window has one, the next go round again.

>>> import numpy as np
>>> pool = Pool(margin=np.array([-3.0, -0.1, 0.2, 4.0, 2.5]))
>>> Uncertainty(seed=0).select(pool, 2).tolist()
[1, 2]
>>> TopScore(seed=0).select(pool, 2).tolist()
[3, 4]
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from edgewise.errors import InvalidParameterError
from edgewise.params import Interval, OneOf, validate_params

__all__ = [
    "STRATEGIES",
    "DefaultMix",
    "Disagreement",
    "Diversity",
    "Novelty",
    "Pool",
    "QueryStrategy",
    "RandomSampling",
    "TopScore",
    "Uncertainty",
    "make_strategy",
]


@dataclass
class Pool:
    """The windows a strategy chooses from, with what the current model says of them.

    Attributes
    ----------
    margin
        ``(n,)`` score minus the window's threshold in z units; ``> 0`` means an alarm.
    member_margins
        ``(n, m)`` the same for each detector of an ensemble (for :class:`Disagreement`).
    features
        ``(n, f)`` window features (for :class:`Diversity`).
    groups
        ``(n,)`` the device of each window (``None``: all one device).
    labelled
        ``(n,)`` boolean, windows already labelled (never proposed again).
    labels
        ``(n,)`` the answers so far: 1 anomaly, 0 normal, -1 not asked (optional; the
        adaptive :class:`DefaultMix` learns from it which of its strategies find errors).
    """

    margin: np.ndarray
    member_margins: np.ndarray | None = None
    features: np.ndarray | None = None
    groups: np.ndarray | None = None
    labelled: np.ndarray | None = field(default=None)
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.margin = np.asarray(self.margin, dtype=float)
        n = len(self.margin)
        if self.labelled is None:
            self.labelled = (np.zeros(n, dtype=bool) if self.labels is None
                             else np.asarray(self.labels) >= 0)
        self.labelled = np.asarray(self.labelled, dtype=bool)
        for name in ("member_margins", "features", "groups", "labelled", "labels"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise InvalidParameterError(
                    f"Pool.{name} must have one row per window ({n}). Got {len(v)} instead."
                )
        for name in ("member_margins", "features"):  # (n, m) and (n, f)
            v = getattr(self, name)
            if v is not None and np.ndim(v) != 2:
                raise InvalidParameterError(
                    f"Pool.{name} must be 2-D: one row per window, one column per "
                    f"{'ensemble detector' if name == 'member_margins' else 'feature'}. "
                    f"Got shape {np.shape(v)} instead.", field=name, value=np.shape(v))

    def __len__(self) -> int:
        return len(self.margin)


class QueryStrategy(abc.ABC):
    """Rank windows; :meth:`select` returns the best ``k`` unlabelled ones."""

    _constraints: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, spread: bool = True, seed: int | None = None) -> None:
        self.spread = spread
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    @abc.abstractmethod
    def priority(self, pool: Pool) -> np.ndarray:
        """A priority per window; lower is asked first."""

    def _check_k(self, k: object) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise InvalidParameterError(
                f"The 'k' parameter of {type(self).__name__}.select must be an int in the "
                f"range [0, inf). Got {k!r} instead."
            )

    def select(self, pool: Pool, k: int) -> np.ndarray:
        """Indices of up to ``k`` unlabelled windows to label next, best first."""
        self._check_k(k)
        assert pool.labelled is not None
        cand = np.flatnonzero(~pool.labelled)
        if len(cand) == 0 or k == 0:
            return np.array([], dtype=int)
        pr = np.asarray(self.priority(pool), dtype=float)[cand]
        # random tie-break, so equal priorities do not favour early windows
        order = cand[np.lexsort((self._rng.random(len(cand)), pr))]
        if not self.spread or pool.groups is None:
            return order[:k].astype(int)
        picked: list[int] = []
        seen: set[Any] = set()
        for i in order:
            g = pool.groups[i]
            if g in seen:
                continue
            picked.append(int(i))
            seen.add(g)
            if len(picked) == k:
                return np.array(picked, dtype=int)
        rest = [int(i) for i in order if int(i) not in set(picked)]
        return np.array(picked + rest[: k - len(picked)], dtype=int)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed!r})"


class RandomSampling(QueryStrategy):
    """Windows at random: the baseline every strategy is measured against."""

    def priority(self, pool: Pool) -> np.ndarray:
        return self._rng.random(len(pool))


class Uncertainty(QueryStrategy):
    """Windows whose score is nearest the threshold.

    Parameters
    ----------
    side
        ``"both"`` (default) or ``"alarms"``: only windows at or above the threshold,
        weakest first (a false alarm there raises the threshold; a true one confirms it).
    """

    _constraints: ClassVar[dict[str, Any]] = {"side": OneOf(("both", "alarms"))}

    def __init__(self, side: str = "both", *, spread: bool = True,
                 seed: int | None = None) -> None:
        validate_params(self._constraints, {"side": side}, self)
        super().__init__(spread=spread, seed=seed)
        self.side = side

    def priority(self, pool: Pool) -> np.ndarray:
        m = pool.margin
        if self.side == "alarms":
            return np.where(m >= 0, m, 1e6 - m)
        return np.abs(m)


class TopScore(QueryStrategy):
    """The strongest alarms first."""

    def priority(self, pool: Pool) -> np.ndarray:
        return -pool.margin


class Disagreement(QueryStrategy):
    """Windows the members of an ensemble disagree on: vote entropy, then margin spread."""

    def priority(self, pool: Pool) -> np.ndarray:
        if pool.member_margins is None:
            raise InvalidParameterError(
                "Disagreement needs Pool.member_margins (one column per ensemble detector)."
            )
        mm = np.asarray(pool.member_margins, dtype=float)
        p = (mm >= 0).mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -(np.nan_to_num(p * np.log(p)) + np.nan_to_num((1 - p) * np.log(1 - p)))
        spread = np.std(np.clip(mm, -10, 10), axis=1)
        return -(ent * 100 + spread)


class Diversity(QueryStrategy):
    """Cover the operating states: k-means on window features, least-labelled clusters first.

    Parameters
    ----------
    n_clusters
        Number of clusters (operating states) to cover.
    """

    _constraints: ClassVar[dict[str, Any]] = {"n_clusters": Interval(int, 1, None)}

    def __init__(self, n_clusters: int = 8, *, spread: bool = True,
                 seed: int | None = None) -> None:
        validate_params(self._constraints, {"n_clusters": n_clusters}, self)
        super().__init__(spread=spread, seed=seed)
        self.n_clusters = n_clusters

    def priority(self, pool: Pool) -> np.ndarray:
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        if pool.features is None:
            raise InvalidParameterError("Diversity needs Pool.features (one row per window).")
        F = _standardised(pool.features)
        k = min(self.n_clusters, len(F))
        with warnings.catch_warnings():
            # a flat history has fewer distinct windows than clusters: KMeans says so in a
            # ConvergenceWarning, and the clusters it finds still rank the windows
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=k, n_init=3, random_state=self.seed).fit(F)
        dist = np.linalg.norm(F - km.cluster_centers_[km.labels_], axis=1)
        assert pool.labelled is not None
        covered = np.bincount(km.labels_[pool.labelled], minlength=k)
        # rank within cluster by distance to its centre; clusters with fewer labels first
        within = np.empty(len(F))
        for c in range(k):
            idx = np.flatnonzero((km.labels_ == c) & ~pool.labelled)
            within[idx] = np.argsort(np.argsort(dist[idx]))
        within[pool.labelled] = 0
        return (within + covered[km.labels_]) * len(F) + dist / (dist.max() + 1e-12)


def _standardised(features: Any) -> np.ndarray:
    """``features`` with each column at mean 0 and standard deviation 1 (a constant one
    at 0), always finite, as KMeans needs them. A reading of 1e154 or more makes a window's
    variance feature infinite, and squaring it for the standard deviation overflows to
    NaN: such features are clipped to the largest float, and a column holding values
    whose square would overflow is first divided by its largest magnitude (which leaves
    its standardised values as they were, up to rounding); other columns are standardised
    exactly as before.

    >>> F = _standardised([[0.0, 1.0], [float("inf"), 3.0], [1e200, 5.0]])
    >>> bool(np.isfinite(F).all()), F[:, 1].round(3).tolist()
    (True, [-1.225, 0.0, 1.225])
    """
    F = np.nan_to_num(np.asarray(features, dtype=float), nan=0.0)
    big = np.abs(F).max(axis=0, initial=0.0) > _SQUARE_SAFE
    if big.any():
        F[:, big] /= np.abs(F[:, big]).max(axis=0)
    sd = F.std(axis=0)
    return (F - F.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


#: the largest magnitude a feature column may hold and still be squared (and summed over
#: many windows) without overflowing: beyond it the column is scaled first
_SQUARE_SAFE = 1e150


class Novelty(QueryStrategy):
    """Windows least like the rest of their device: robust distance in feature space.

    Each feature is scaled by its device's median and MAD, and a window's novelty is the
    root mean square of those robust z values (clipped at 20). Slow faults that a
    streaming detector adapts to (a drift, a stuck sensor, a worn bearing) score low on
    the detectors but stand out here, because the features compare a window's level,
    spread and step size with the device's whole history. A missing (NaN) feature counts
    as typical: medians and MADs are of the finite values.

    >>> F = np.array([[0.0, 1.0], [0.1, np.nan], [5.0, 1.1], [0.2, 0.9]])
    >>> Novelty(seed=0).select(Pool(margin=np.zeros(4), features=F), 1).tolist()
    [2]
    """

    def priority(self, pool: Pool) -> np.ndarray:
        if pool.features is None:
            raise InvalidParameterError("Novelty needs Pool.features (one row per window).")
        F = np.asarray(pool.features, dtype=float)
        groups = pool.groups if pool.groups is not None else np.zeros(len(F))
        out = np.zeros(len(F))
        for g in np.unique(groups):
            rows = groups == g
            X = F[rows]
            # median, MAD and sd of the finite values only; a missing (NaN) feature adds
            # nothing to its window's distance (np.median of a column holding one NaN is
            # NaN, and made every window of the device NaN: ranked last)
            fin = np.where(np.isfinite(X), X, np.nan)
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)  # a column all NaN
                med = np.nan_to_num(np.nanmedian(fin, axis=0))
                mad = np.nanmedian(np.abs(fin - med), axis=0) * 1.4826
                sd = np.nanstd(fin, axis=0)
                scale = np.where(mad > 1e-9, mad, np.where(sd > 1e-9, sd, 1.0))
                z = np.clip((X - med) / scale, -20, 20)
            z = np.where(np.isnan(z), 0.0, z)
            out[rows] = np.sqrt(np.mean(z ** 2, axis=1))
        return -out


class DefaultMix(QueryStrategy):
    """Several strategies share the questions, and the ones that find errors get more.

    Which signal points at a fleet's faults depends on the fleet: on a corpus whose
    false alarms come in storms the strongest alarms are worth asking about; on pumps
    whose faults are slow (drift, stuck sensors, wear) the detectors stay quiet and the
    faults show as novel windows or as ensemble disagreement. So the mix does not fix
    the shares: every strategy's picks are remembered with what the model predicted
    then, and once answered (``Pool.labels``) a pick counts as a *hit* when the answer
    contradicts the prediction (a false alarm or a missed anomaly: a question that
    taught the model something). Each question goes to the strategy with the highest
    Thompson draw from Beta(1 + hits, 1 + misses); strategies not asked yet go first,
    in list order, so the first batch interleaves them.

    Parameters
    ----------
    strategies
        The strategies to mix; default: ``Uncertainty(side="alarms")``, ``TopScore()``,
        ``Disagreement()`` and ``Novelty()``. A strategy that needs what the pool lacks
        (e.g. Disagreement without ``member_margins``) is left out for that call.
    adaptive
        ``False``: no learning; each window's priority is its best rank in any strategy.

    Attributes
    ----------
    hits_, asks_
        Per strategy: answered questions, and those that contradicted the model.
    """

    def __init__(self, strategies: Sequence[QueryStrategy] | None = None, *,
                 adaptive: bool = True, spread: bool = True, seed: int | None = None) -> None:
        super().__init__(spread=spread, seed=seed)
        self.strategies = (list(strategies) if strategies is not None
                           else [Uncertainty(side="alarms", seed=seed), TopScore(seed=seed),
                                 Disagreement(seed=seed), Novelty(seed=seed)])
        if not self.strategies:
            raise InvalidParameterError("DefaultMix needs at least one strategy.")
        self.adaptive = adaptive
        self.hits_ = np.zeros(len(self.strategies))
        self.asks_ = np.zeros(len(self.strategies))
        self._pending: dict[int, tuple[int, bool]] = {}

    def _ranks(self, pool: Pool) -> dict[int, np.ndarray]:
        ranks = {}
        for j, s in enumerate(self.strategies):
            try:
                ranks[j] = np.asarray(s.priority(pool), dtype=float)
            except InvalidParameterError:
                continue
        if not ranks:
            raise InvalidParameterError("No strategy of the DefaultMix can rank this Pool.")
        return ranks

    def priority(self, pool: Pool) -> np.ndarray:
        ranks = [np.argsort(np.argsort(pr, kind="stable")) for pr in self._ranks(pool).values()]
        # ties between strategies go to the earlier one in the list
        return np.min([r * len(ranks) + j for j, r in enumerate(ranks)], axis=0).astype(float)

    def get_state(self, keys: Sequence[Any]) -> dict[str, Any]:
        """What the mix has learned, with its open questions named by ``keys[i]`` (e.g. a
        window's ``[start_ns, end_ns]``) instead of pool indices, so a later pool can take
        it up (:meth:`set_state`). Keys must be JSON-ready: the state is kept as JSON.

        >>> mix = DefaultMix(seed=0)
        >>> pool = Pool(margin=np.array([2.0, -1.0, 0.1]), labels=np.array([-1, -1, -1]))
        >>> mix.select(pool, 1).tolist(), mix.get_state(["a", "b", "c"])["pending"]
        ([2], [['c', 0, True]])
        """
        return {"strategies": [type(s).__name__ for s in self.strategies],
                "hits": self.hits_.tolist(), "asks": self.asks_.tolist(),
                "pending": [[keys[i], j, alarm] for i, (j, alarm) in self._pending.items()]}

    def set_state(self, state: Mapping[str, Any], keys: Sequence[Any], *,
                  place: Callable[[list[Any]], Sequence[tuple[int, int | None]]] | None = None,
                  ) -> None:
        """Take up a :meth:`get_state` of a mix of the same strategies, for a pool whose
        window ``i`` is named ``keys[i]``.

        Without ``place``, an open question is taken up at the index of its key among
        ``keys`` (answered later through ``Pool.labels``), and dropped when its key is not
        there. That only works while windows keep their keys: a history cut afresh into
        windows (a grown history moves every window edge) would drop every question
        unlearned. So ``place``, given the open questions' keys, returns per key
        ``(answer, index)``: the answer given to the question since it was asked (1
        anomaly, 0 normal, -1 none yet) and the pool index of the window that now holds
        the question's window (``None``: none). An answered question is credited at once
        to the strategy that asked it; an open one is taken up at ``index`` (the first of
        several questions one window holds), else dropped.

        >>> mix = DefaultMix(seed=0)
        >>> state = {**mix.get_state([]), "pending": [[[0, 10], 1, True], [[10, 20], 0, False]]}
        >>> mix.set_state(state, [[0, 15], [15, 30]],
        ...               place=lambda qs: [(0, None), (-1, 1)])  # 1st answered "normal"
        >>> mix.asks_.tolist()[:2], mix.hits_.tolist()[:2], mix._pending
        ([0.0, 1.0], [0.0, 1.0], {1: (0, False)})
        """
        names = [type(s).__name__ for s in self.strategies]
        if not isinstance(state, Mapping):
            raise InvalidParameterError(
                f"Mix state must be a mapping (a JSON object). Got a "
                f"{type(state).__name__} instead.", field="state", value=None)
        if not isinstance(state.get("strategies", []), list):
            raise InvalidParameterError(
                f"Mix state's 'strategies' must be a list of strategy names. Got "
                f"{state.get('strategies')!r} instead.", field="state", value=None)
        if list(state.get("strategies", [])) != names:
            raise InvalidParameterError(
                f"Mix state is of strategies {state.get('strategies')!r}, this mix has "
                f"{names!r}; start afresh instead.", field="strategies",
                value=state.get("strategies"))
        try:  # a state file edited or cut short: refused whole, naming what is wrong
            hits = np.asarray(state["hits"], dtype=float)
            asks = np.asarray(state["asks"], dtype=float)
            pending = [(_hashable(key), int(j), bool(alarm))
                       for key, j, alarm in state["pending"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidParameterError(
                f"Mix state must hold 'hits', 'asks' (numbers) and 'pending' (questions of "
                f"[key, strategy, alarm]); {type(exc).__name__}: {exc}.",
                field="state", value=None) from None
        bad = [name for name, v in (("hits", hits), ("asks", asks))
               if v.shape != (len(names),) or not np.isfinite(v).all()]
        bad += ["pending"] * any(not 0 <= j < len(names) for _, j, _ in pending)
        if bad:
            raise InvalidParameterError(
                f"Mix state's {', '.join(map(repr, bad))} must be of its {len(names)} "
                "strategies (one finite number each; a question's strategy an index among "
                "them).", field="state", value=None)
        # counts of questions: whole, and a strategy's hits among its asks (more hits than
        # asks, or a negative count, made the Thompson draw's Beta(1 + hits, 1 + misses)
        # raise numpy's bare "b <= 0" on every later call)
        odd = [j for j in range(len(names)) if not (
            hits[j] == int(hits[j]) and asks[j] == int(asks[j]) and 0 <= hits[j] <= asks[j])]
        if odd:
            j = odd[0]
            raise InvalidParameterError(
                f"Mix state's 'hits' and 'asks' must be whole numbers with 0 <= hits <= asks "
                f"for each strategy; {names[j]} has hits {hits[j]:g} and asks "
                f"{asks[j]:g}.", field="state", value=None)
        self.hits_, self.asks_ = hits, asks
        if place is None:
            where = {_hashable(k): i for i, k in enumerate(keys)}
            found = [(-1, where.get(key)) for key, _, _ in pending]
        else:
            found = list(place([key for key, _, _ in pending]))
            if len(found) != len(pending):
                raise InvalidParameterError(
                    f"DefaultMix.set_state: 'place' must give one (answer, index) per open "
                    f"question ({len(pending)}). Got {len(found)} instead.")
        self._pending = {}
        for (_, j, alarm), (answer, index) in zip(pending, found, strict=True):
            if answer >= 0:  # answered: the credit goes to the strategy that asked
                self.asks_[j] += 1
                self.hits_[j] += bool(answer == 1) != alarm
            elif index is not None:
                self._pending.setdefault(int(index), (j, alarm))

    def _learn(self, pool: Pool) -> None:
        if pool.labels is None:
            return
        labels = np.asarray(pool.labels)
        for i in [i for i in self._pending if i < len(labels) and labels[i] >= 0]:
            j, alarm = self._pending.pop(i)
            self.asks_[j] += 1
            self.hits_[j] += bool(labels[i] == 1) != alarm

    def select(self, pool: Pool, k: int) -> np.ndarray:
        if not self.adaptive:
            return super().select(pool, k)
        self._check_k(k)
        self._learn(pool)
        assert pool.labelled is not None
        cand = np.flatnonzero(~pool.labelled)
        if len(cand) == 0 or k == 0:
            return np.array([], dtype=int)
        tie = self._rng.random(len(cand))
        orders = {j: list(cand[np.lexsort((tie, pr[cand]))])
                  for j, pr in self._ranks(pool).items()}
        asked = self.asks_ + np.bincount([j for j, _ in self._pending.values()],
                                         minlength=len(self.strategies))
        picked: list[int] = []
        chosen: set[int] = set()  # picked, for lookups
        seen: set[Any] = set()
        while len(picked) < min(k, len(cand)):
            fresh = [j for j in orders if asked[j] == 0]
            if fresh:
                j = fresh[0]
            else:
                draw = self._rng.beta(1 + self.hits_, 1 + self.asks_ - self.hits_)
                j = max(orders, key=lambda q: draw[q])
            order = orders[j]
            while order and order[0] in chosen:
                order.pop(0)
            # a window another strategy took this round is further down every order: the
            # spread check looks at groups only, so it must be passed over here too. The
            # whole order is searched (lazily: it stops at the first fit), as the single
            # strategies search theirs: looking at its first 200 only, a device holding
            # them all (an alarm storm) was asked twice while other devices went unasked
            spread_ok = next((i for i in order if i not in chosen and (
                not self.spread or pool.groups is None or pool.groups[i] not in seen)),
                None)
            i = int(order[0] if spread_ok is None else spread_ok)
            picked.append(i)
            chosen.add(i)
            if pool.groups is not None:
                seen.add(pool.groups[i])
                if len(seen) >= len(set(pool.groups[cand])):
                    seen.clear()
            self._pending[i] = (j, bool(pool.margin[i] >= 0))
            asked[j] += 1
        return np.array(picked, dtype=int)


def _hashable(key: Any) -> Any:
    """A key of an open question as a dict key: JSON gives ``[start, end]`` back as a list."""
    return tuple(_hashable(k) for k in key) if isinstance(key, list | tuple) else key


#: Strategy names for the CLI and the benchmark.
STRATEGIES = ("mix", "uncertainty", "top", "disagreement", "diversity", "novelty", "random")


def make_strategy(name: str, seed: int | None = None) -> QueryStrategy:
    """A strategy by name (one of :data:`STRATEGIES`).

    >>> make_strategy("mix", seed=1)
    DefaultMix(seed=1)
    """
    validate_params({"name": OneOf(STRATEGIES)}, {"name": name}, "make_strategy")
    return {
        "mix": lambda: DefaultMix(seed=seed),
        "uncertainty": lambda: Uncertainty(seed=seed),
        "top": lambda: TopScore(seed=seed),
        "disagreement": lambda: Disagreement(seed=seed),
        "diversity": lambda: Diversity(seed=seed),
        "novelty": lambda: Novelty(seed=seed),
        "random": lambda: RandomSampling(seed=seed),
    }[name]()
