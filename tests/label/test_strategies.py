from __future__ import annotations

import numpy as np
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.label.strategies import (
    DefaultMix,
    Disagreement,
    Diversity,
    Novelty,
    Pool,
    RandomSampling,
    TopScore,
    Uncertainty,
    make_strategy,
)


def _pool(seed: int = 0, n: int = 200) -> tuple[Pool, np.ndarray]:
    rng = np.random.default_rng(seed)
    margin = rng.choice([-1.0, 1.0], n) * rng.uniform(0.5, 8, n)
    near = rng.choice(n, 5, replace=False)
    margin[near] = rng.uniform(-0.05, 0.05, 5)
    return Pool(margin=margin), near


@pytest.mark.parametrize("seed", range(5))
def test_uncertainty_picks_the_windows_at_the_threshold(seed: int) -> None:
    pool, near = _pool(seed)
    assert set(Uncertainty(seed=seed).select(pool, 5).tolist()) == set(near.tolist())


def test_uncertainty_alarm_side_picks_weakest_alarms_and_skips_labelled() -> None:
    margin = np.array([-0.01, 0.3, 0.1, 5.0, -2.0, 0.05])
    labelled = np.array([False, False, False, False, False, True])
    got = Uncertainty(side="alarms", seed=0).select(Pool(margin, labelled=labelled), 2)
    assert got.tolist() == [2, 1]


def test_top_score_and_spread_over_devices() -> None:
    margin = np.array([9.0, 8.0, 7.0, 1.0, 0.5])
    groups = np.array(["a", "a", "a", "b", "c"])
    assert TopScore(seed=0).select(Pool(margin, groups=groups), 3).tolist() == [0, 3, 4]
    assert TopScore(spread=False, seed=0).select(Pool(margin, groups=groups), 3).tolist() == [
        0, 1, 2]
    # more asked than devices: the rest is filled best first
    assert TopScore(seed=0).select(Pool(margin, groups=groups), 4).tolist() == [0, 3, 4, 1]


def test_disagreement_picks_split_votes() -> None:
    rng = np.random.default_rng(3)
    mm = np.where(rng.random((100, 3)) < 0.5, -5.0, 5.0)
    mm[:, :] = -5.0
    split = [7, 42, 77]
    mm[split, 0] = 4.0  # one of three fires
    mm[42, 1] = 4.0     # two of three: same vote entropy, larger spread not needed
    pool = Pool(margin=mm[:, 0], member_margins=mm)
    assert set(Disagreement(seed=0).select(pool, 3).tolist()) == set(split)
    with pytest.raises(InvalidParameterError, match="member_margins"):
        Disagreement().select(Pool(margin=mm[:, 0]), 3)


def test_diversity_covers_every_operating_state() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 20]], dtype=float)
    sizes = [400, 200, 100, 30, 10]  # a rare state too
    F = np.vstack([c + rng.normal(0, 0.5, (s, 2)) for c, s in zip(centres, sizes, strict=True)])
    state = np.repeat(np.arange(5), sizes)
    pool = Pool(margin=np.zeros(len(F)), features=F)
    picked = Diversity(n_clusters=5, seed=0).select(pool, 5)
    assert sorted(state[picked].tolist()) == [0, 1, 2, 3, 4]
    # random sampling with the same budget usually misses the rare states
    misses = sum(len(set(state[RandomSampling(seed=s).select(pool, 5)])) < 5 for s in range(20))
    assert misses >= 15
    # states already labelled are covered last
    labelled = np.zeros(len(F), bool)
    labelled[state == 0] = True
    labelled[:5] = False
    picked = Diversity(n_clusters=5, seed=0).select(
        Pool(margin=np.zeros(len(F)), features=F, labelled=labelled), 4)
    assert sorted(state[picked].tolist()) == [1, 2, 3, 4]


def test_mix_interleaves_weak_and_strong_alarms() -> None:
    margin = np.array([-3.0, 0.2, 6.0, 0.1, 9.0, -0.5, 3.0])
    # first round: each strategy that can rank this pool asks once, in list order
    assert DefaultMix(seed=0).select(Pool(margin), 2).tolist() == [3, 4]
    # not adaptive: best rank in any strategy
    assert DefaultMix(adaptive=False, seed=0).select(Pool(margin), 4).tolist() == [3, 4, 1, 2]


def test_novelty_picks_slow_faults_the_scores_miss() -> None:
    rng = np.random.default_rng(0)
    n = 300
    F = rng.normal(0, 1, (n, 6))
    groups = np.repeat(["a", "b", "c"], 100)
    F[100:200] = F[100:200] * 10 + 50    # another device in other units: not novel by itself
    stuck = [17, 150, 260]
    F[17, 1] = -12.0                        # spread collapsed (a stuck sensor)
    F[150, 0] = 50 + 10 * 9.0               # level drifted, in device b's units
    F[260, 3] = 9.0
    pool = Pool(margin=np.full(n, -1.0), features=F, groups=groups)
    assert set(Novelty(seed=0).select(pool, 3).tolist()) == set(stuck)
    with pytest.raises(InvalidParameterError, match="features"):
        Novelty().select(Pool(margin=np.zeros(3)), 1)


def test_adaptive_mix_gives_questions_to_the_strategy_that_finds_errors() -> None:
    # the model raises no alarms; anomalies are exactly the most novel windows, so
    # TopScore's questions (margin order) are answered "normal" = what the model said
    rng = np.random.default_rng(1)
    n = 400
    F = rng.normal(0, 1, (n, 4))
    anomalous = rng.choice(n, 40, replace=False)
    F[anomalous] += rng.choice([-1, 1], (40, 4)) * rng.uniform(6, 9, (40, 4))
    margin = -3 + rng.uniform(0, 1, n)
    margin[anomalous] = -3.5
    truth = np.zeros(n, int)
    truth[anomalous] = 1
    labels = np.full(n, -1)
    mix = DefaultMix([TopScore(seed=0), Novelty(seed=0)], seed=0)
    picks = []
    for _ in range(6):
        got = mix.select(Pool(margin, features=F, labels=labels), 5)
        labels[got] = truth[got]
        picks.append(got)
    assert mix.asks_.tolist()[0] + mix.asks_.tolist()[1] == 25  # the last batch pending
    assert mix.hits_[1] / mix.asks_[1] > 0.8 and mix.hits_[0] == 0
    assert truth[np.concatenate(picks[-3:])].mean() > 0.8     # later batches: mostly novelty
    # a fixed mix (or random) keeps asking TopScore's quiet windows
    fixed = DefaultMix([TopScore(seed=0), Novelty(seed=0)], adaptive=False, seed=0)
    assert truth[fixed.select(Pool(margin, features=F), 30)].mean() < 0.7


def test_seeded_and_validated() -> None:
    pool = Pool(margin=np.zeros(50))
    a = RandomSampling(seed=4).select(pool, 10)
    b = RandomSampling(seed=4).select(pool, 10)
    assert a.tolist() == b.tolist()
    with pytest.raises(InvalidParameterError, match="'k' parameter"):
        Uncertainty().select(pool, -1)
    with pytest.raises(InvalidParameterError, match="'side' parameter"):
        Uncertainty(side="left")
    with pytest.raises(InvalidParameterError, match="'name' parameter"):
        make_strategy("clever")
    with pytest.raises(InvalidParameterError, match=r"Pool\.labelled"):
        Pool(margin=np.zeros(3), labelled=np.zeros(2, bool))


@pytest.mark.parametrize("seed", range(40))
def test_mix_never_proposes_a_window_twice(seed: int) -> None:
    """Check the mix's picks are distinct when the pool spans fewer devices than it picks:
    once every device had a pick, the spread check (by device only) let a strategy take a
    window another had taken (24 picks of 2 devices' 34 windows held 6 twice), and the
    second pick overwrote the first strategy's open question."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    pool = Pool(margin=rng.normal(size=n), member_margins=rng.normal(size=(n, 3)),
                features=rng.normal(size=(n, 3)), groups=rng.integers(0, 3, n))
    k = int(rng.integers(4, n + 1))
    mix = DefaultMix(seed=seed)
    picks = mix.select(pool, k).tolist()
    assert len(picks) == k and len(set(picks)) == k, picks
    assert sorted(i for i, _, _ in mix.get_state(list(range(n)))["pending"]) == sorted(picks)


@pytest.mark.parametrize(("hits", "asks"), [([3, 0, 0, 0], [1, 1, 1, 1]),
                                            ([-1, 0, 0, 0], [1, 1, 1, 1]),
                                            ([0, 0, 0, 0], [-2, 0, 0, 0]),
                                            ([0.5, 0, 0, 0], [1, 1, 1, 1])])
def test_a_mix_state_with_more_hits_than_asks_is_refused_naming_them(hits: list,
                                                                     asks: list) -> None:
    """Check set_state refuses hits and asks that are no counts of answered questions:
    more hits than asks (or a negative count) passed, and the Thompson draw's
    Beta(1 + hits, 1 + asks - hits) raised numpy's bare "b <= 0" on every later select
    (a 500 from GET /v1/label-queue for every role)."""
    mix = DefaultMix(seed=0)
    state = {**mix.get_state([]), "hits": hits, "asks": asks}
    with pytest.raises(InvalidParameterError, match=r"0 <= hits <= asks.*Uncertainty has "
                                                    r"hits -?[0-9.]+ and asks") as exc:
        mix.set_state(state, [])
    assert exc.value.field == "state"
    mix.set_state({**state, "hits": [1, 0, 2, 0], "asks": [1, 0, 3, 0]}, [])  # counts: fine
    pool = Pool(margin=np.array([2.0, -1.0, 0.1, 0.5]), features=np.zeros((4, 2)))
    assert len(mix.select(pool, 3)) == 3


def test_novelty_ranks_a_device_with_one_missing_feature() -> None:
    """Check one NaN feature leaves the device's other windows ranked: np.median of the
    column was NaN, every window of the device had priority NaN and was ranked last."""
    rng = np.random.default_rng(0)
    F = rng.normal(0, 1, (20, 3))
    F[7] = [9.0, 9.0, 9.0]
    groups = np.array(["a"] * 10 + ["b"] * 10)
    clean = Novelty().priority(Pool(margin=np.zeros(20), features=F, groups=groups))
    F[0, 1] = np.nan
    pr = Novelty().priority(Pool(margin=np.zeros(20), features=F, groups=groups))
    assert np.isfinite(pr).all()
    assert Novelty(seed=0, spread=False).select(
        Pool(margin=np.zeros(20), features=F, groups=groups), 1).tolist() == [7]
    assert np.allclose(pr[10:], clean[10:])  # the other device is as it was


def test_a_pool_of_one_dimensional_member_margins_is_refused_in_one_line() -> None:
    """Check Pool wants member_margins (and features) 2-D: 1-D ones reached Disagreement
    and raised numpy's AxisError."""
    with pytest.raises(InvalidParameterError, match=r"member_margins must be 2-D.*\(2,\)"):
        Pool(margin=[0.1, 0.2], member_margins=[1.0, -1.0])
    with pytest.raises(InvalidParameterError, match=r"features must be 2-D"):
        Pool(margin=[0.1, 0.2], features=[1.0, -1.0])
