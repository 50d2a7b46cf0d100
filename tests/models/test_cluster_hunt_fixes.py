"""BehaviourGroups fixes from a bug hunt: a metric a device lacks is never the reason it is
odd; a store history's index is sorted and a history's span is read from its min and max;
no more groups than n // min_group_size; the same data in any order gives the same groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.errors import InvalidParameterError
from edgewise.models.cluster import BehaviourGroups, histories_from_store, load_groups
from edgewise.store import open_store
from edgewise.telemetry import Reading

IDX = pd.date_range("2024-01-01", periods=300, freq="10min", tz="UTC")


def _temp_load(temp: float | None, load: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {"load": load + rng.normal(0, 1, len(IDX))}
    if temp is not None:
        cols["temp"] = temp + rng.normal(0, 1, len(IDX))
    return pd.DataFrame(cols, index=IDX)


def _cool_hot(n: int = 5) -> dict[str, pd.DataFrame]:
    return {f"{kind}-{i}": _temp_load(t, 10.0, 10 * j + i)
            for j, (kind, t) in enumerate((("cool", 40.0), ("hot", 60.0))) for i in range(n)}


def test_a_missing_metric_is_never_why_a_device_is_odd(tmp_path: Path) -> None:
    """Check a device that does not send temp, between a cool and a hot group, is grouped
    by its load (no odd one out), a new such device is assigned without a flag, and a
    device odd in its load is flagged for its load, never for the temp it lacks (before:
    flagged "runs cooler: temp median n/a vs group 1 60.1", odd score 35)."""
    fleet = _cool_hot() | {"no-temp": _temp_load(None, 10.0, 99)}
    model = BehaviourGroups(random_state=0).fit(fleet)
    assert model.missing_ == {"no-temp": ["temp"]} and model.n_groups_ == 2
    summary = model.summary()
    assert summary["odd_ones_out"] == [], summary["odd_ones_out"]
    assert sum(g["size"] for g in summary["groups"]) == 11
    assert model.odd_score_["no-temp"] < model.odd_cut_

    new = {"new": _temp_load(None, 10.0, 100), "heavy": _temp_load(None, 30.0, 101)}
    got = model.assign(new)
    assert not got.loc["new", "odd"] and got.loc["new", "odd_score"] < model.odd_cut_
    assert got.loc["heavy", "odd"], got
    why = got.loc["heavy", "why"]
    assert "load" in why and "temp" not in why and "n/a" not in why, why
    assert model.predict(new).tolist() == got["group"].tolist()
    model.save(tmp_path / "g.json")  # the unknown features (NaN) survive a round trip
    back = load_groups(tmp_path / "g.json")
    assert back.summary() == summary
    pd.testing.assert_frame_equal(back.assign(new), got)


def test_a_missing_metric_adds_nothing_to_a_device_s_distance() -> None:
    """Check a device's odd score without temp is its score over the features it has:
    dropping temp from a member's history leaves it close to its group (scores alike),
    rather than at the fleet median 7-8 scaled units off either group."""
    model = BehaviourGroups(random_state=0).fit(_cool_hot())
    full = _temp_load(60.0, 10.0, 7)
    got = model.assign({"full": full, "no-temp": full[["load"]]})
    assert got.loc["full", "group"] == model.labels_["hot-0"]
    assert got.loc["no-temp", "odd_score"] < 3 * max(got.loc["full", "odd_score"], 0.5), got
    assert not got["odd"].any()


def _store_with_a_metric_added_on_day_5() -> object:
    """12 devices, 10 days hourly of metric b (the second half drifting up); metric a,
    which sorts first, starts on day 5."""
    store = open_store("duckdb:///:memory:")
    rows, rng = [], np.random.default_rng(0)
    for i in range(12):
        drift = 0.0 if i < 6 else 0.15  # units per day
        for h in range(10 * 24 + 1):
            t = 10**18 + h * 3600 * 10**9
            rows.append(Reading(f"d{i:02d}", "b", t,
                                float(10 + drift * (h / 24 - 5) + rng.normal(0, 1))))
            if h >= 5 * 24:
                rows.append(Reading(f"d{i:02d}", "a", t, float(5 + rng.normal(0, 1))))
    store.append(rows)
    return store


def test_a_store_history_is_sorted_and_its_span_counts() -> None:
    """Check a history read from a store where one metric starts later has a sorted index
    starting at the first reading, the fit's span is the 10 days it covers (before:
    -0.042 days, so every trend scaled to nothing and one group), and the drifting half
    of the fleet is its own group."""
    store = _store_with_a_metric_added_on_day_5()
    hist = histories_from_store(store)
    frame = hist["d00"]
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert frame.index[0] == pd.Timestamp(10**18, unit="ns", tz="UTC")
    assert len(frame) == 241 and int(frame["a"].notna().sum()) == 121
    model = BehaviourGroups(random_state=0).fit(hist)
    assert model.span_days_ == pytest.approx(10.0)
    assert model.n_groups_ == 2
    labels = model.labels_.tolist()
    assert len(set(labels[:6])) == 1 and len(set(labels[6:])) == 1 and labels[0] != labels[6]


def test_an_unsorted_history_gives_the_span_of_its_times() -> None:
    """Check a history given newest first is read over its whole span, as the same
    history oldest first (before: the span was first minus last, negative)."""
    fleet = _cool_hot(3)
    backwards = {d: f.iloc[::-1] for d, f in fleet.items()}
    span = (IDX[-1] - IDX[0]) / pd.Timedelta(days=1)
    assert BehaviourGroups(random_state=0).fit(backwards).span_days_ == pytest.approx(span)


def _four() -> dict[str, pd.DataFrame]:
    return {d: _temp_load(t, 10.0, i) for i, (d, t) in enumerate(
        (("cool-1", 40.0), ("cool-2", 40.0), ("hot-1", 60.0), ("hot-2", 60.0)))}


@pytest.mark.parametrize(("params", "match"), [
    ({"n_groups": 3}, (r"'n_groups' parameter of BehaviourGroups must be at most 2: 4 "
                       r"devices make at most 2 group\(s\) of at least 2 devices .*Got 3")),
    ({"n_groups": 4}, r"must be at most 2: .*Got 4 instead"),
    ({"n_groups": 2, "min_group_size": 3}, (r"must be at most 1: 4 devices make at most 1 "
                                            r"group\(s\) of at least 3 devices.*Got 2")),
    ({"min_group_size": 5}, (r"'min_group_size' parameter of BehaviourGroups must be at "
                             r"most the number of devices \(4\).*Got 5 instead")),
])
def test_more_groups_than_can_be_kept_are_refused(params, match) -> None:
    """Check n_groups above n // min_group_size (before: accepted, then a one-device
    group kept and its twin flagged odd) and a min_group_size above n are refused,
    naming the value and the limit."""
    with pytest.raises(InvalidParameterError, match=match) as err:
        BehaviourGroups(random_state=0, **params).fit(_four())
    assert err.value.field == next(iter(params)) and err.value.value == next(
        iter(params.values()))


def test_at_the_limit_every_kept_group_is_big_enough() -> None:
    """Check n_groups = n // min_group_size groups the twins together with no odd ones,
    and a chosen number of groups never keeps a group below min_group_size (before, with
    min_group_size 3: one group of 2 kept and the other 2 odd)."""
    model = BehaviourGroups(n_groups=2, random_state=0).fit(_four())
    groups = sorted(sorted(g["members"]) for g in model.summary()["groups"])
    assert groups == [["cool-1", "cool-2"], ["hot-1", "hot-2"]] and not model.odd_.any()

    model = BehaviourGroups(min_group_size=3, random_state=0).fit(_four())
    summary = model.summary()
    assert model.n_groups_ == 1 and [g["size"] for g in summary["groups"]] == [4]
    assert summary["odd_ones_out"] == []


def _shuffled_kinds_fleet(seed: int) -> dict[str, pd.DataFrame]:
    idx = IDX[:200]
    rng = np.random.default_rng(seed)
    return {f"d{i:02d}": pd.DataFrame(
        {"temp": rng.normal(40 + rng.integers(0, 4) * 3.0 + rng.normal(0, 0.8), 1, 200),
         "load": rng.normal(10 + rng.integers(0, 3) * 2.0 + rng.normal(0, 0.6), 1, 200)},
        index=idx) for i in range(24)}


def test_the_same_data_in_another_order_gives_the_same_groups() -> None:
    """Check a fleet given in reverse order gets the same groups, odd flags and scores
    (before: 8 groups in order, 7 reversed, for this fleet)."""
    fleet = _shuffled_kinds_fleet(2)
    a = BehaviourGroups(random_state=0).fit(fleet)
    b = BehaviourGroups(random_state=0).fit(dict(reversed(list(fleet.items()))))
    assert a.n_groups_ == b.n_groups_
    pd.testing.assert_series_equal(a.labels_.sort_index(), b.labels_.sort_index())
    pd.testing.assert_series_equal(a.odd_.sort_index(), b.odd_.sort_index())
    np.testing.assert_allclose(a.odd_score_.sort_index(), b.odd_score_.sort_index())
    assert a.devices_ == b.devices_ == sorted(fleet)  # read in the order of their ids
