"""BehaviourGroups on constructed fleets whose groups are known."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from edgewise.errors import InvalidParameterError, NotFittedError
from edgewise.models.cluster import BehaviourGroups, GroupsFileError, load_groups

IDX = pd.date_range("2024-01-01", periods=3 * 96, freq="15min", tz="UTC")
HOUR = IDX.hour.to_numpy() + IDX.minute.to_numpy() / 60


def device(kind: str, seed: int, idx: pd.DatetimeIndex = IDX) -> pd.DataFrame:
    """One device of a kind: ``plain`` (40 °C, vibration 2), ``hot`` (60 °C), ``daily``
    (40 °C with a 5 °C daily cycle peaking at 15:00), ``shaky`` (plain, vibration 8)."""
    rng = np.random.default_rng(seed)
    n = len(idx)
    hour = idx.hour.to_numpy() + idx.minute.to_numpy() / 60
    temp = (60.0 if kind == "hot" else 40.0) + rng.normal(0, 1, n)
    if kind == "daily":
        temp += 5 * np.sin(2 * np.pi * (hour - 9) / 24)
    vib = (8.0 if kind == "shaky" else 2.0) + rng.normal(0, 0.2, n)
    return pd.DataFrame({"temp_c": temp, "vib_mms": vib}, index=idx)


def constructed_fleet() -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    kinds = ["plain"] * 6 + ["hot"] * 6 + ["daily"] * 6 + ["shaky"]
    hist = {f"{k}-{i:02d}": device(k, i) for i, k in enumerate(kinds)}
    return hist, {d: d.split("-")[0] for d in hist}


@pytest.fixture(scope="module")
def fleet() -> tuple[dict[str, pd.DataFrame], dict[str, str]]:
    return constructed_fleet()


@pytest.fixture(scope="module")
def fitted(fleet) -> BehaviourGroups:
    return BehaviourGroups(random_state=0).fit(fleet[0])


def _group_of(model: BehaviourGroups, kind: str) -> int:
    groups = {int(model.labels_[d]) for d in model.devices_ if d.startswith(kind)}
    assert len(groups) == 1, (kind, groups)
    return groups.pop()


def test_groups_are_recovered_on_a_constructed_fleet(fleet, fitted) -> None:
    """Check that three kinds of device come out as three groups, member for member."""
    _, truth = fleet
    members = [d for d in fitted.devices_ if truth[d] != "shaky"]
    assert fitted.n_groups_ == 3
    assert adjusted_rand_score([truth[d] for d in members],
                               fitted.labels_[members].tolist()) == 1.0


def test_traits_say_what_sets_each_group_apart(fitted) -> None:
    """Check that the hot group "runs hotter" and the daily group has a stronger daily
    cycle peaking near 15:00, in words with the values."""
    hot = [t["text"] for t in fitted.traits_[_group_of(fitted, "hot")]]
    assert any(t.startswith("runs hotter: temp_c median 6") for t in hot), hot
    daily = [t["text"] for t in fitted.traits_[_group_of(fitted, "daily")]]
    assert any(t.startswith("stronger daily cycle in temp_c") for t in daily), daily
    assert any("daily peak of temp_c near 15:00 UTC" in t for t in daily) or len(daily) == 3


def test_the_odd_one_out_is_flagged_and_explained(fitted) -> None:
    """Check that the one device with four times the vibration, and only it, is flagged,
    and that the reason names its vibration."""
    assert fitted.odd_[fitted.odd_].index.tolist() == ["shaky-18"]
    odd = fitted.summary()["odd_ones_out"]
    assert [o["device"] for o in odd] == ["shaky-18"]
    assert "vib_mms" in odd[0]["why"]
    assert fitted.odd_score_["shaky-18"] > 2 * fitted.odd_score_.drop("shaky-18").max()


def test_the_same_seed_gives_the_same_groups(fleet, fitted) -> None:
    """Check that fitting again, with the devices in another order, gives the same groups,
    numbers and scores."""
    hist, _ = fleet
    again = BehaviourGroups(random_state=0).fit(dict(reversed(list(hist.items()))))
    pd.testing.assert_series_equal(again.labels_.sort_index(), fitted.labels_.sort_index())
    np.testing.assert_allclose(again.odd_score_.sort_index(), fitted.odd_score_.sort_index())


def test_a_fleet_of_one_kind_is_one_group() -> None:
    """Check the honest answer when nothing separates the fleet: one group, no traits."""
    hist = {f"plain-{i}": device("plain", i) for i in range(12)}
    model = BehaviourGroups(random_state=0).fit(hist)
    assert model.n_groups_ == 1
    assert model.traits_ == {0: []}
    assert not model.odd_.any()


def test_new_devices_are_assigned_to_their_group(fitted) -> None:
    """Check that new devices land in the group of their kind, and a new odd one is
    flagged, with a reason."""
    new = {"new-hot": device("hot", 101), "new-daily": device("daily", 102),
           "new-shaky": device("shaky", 103)}
    got = fitted.assign(new)
    assert got.loc["new-hot", "group"] == _group_of(fitted, "hot")
    assert got.loc["new-daily", "group"] == _group_of(fitted, "daily")
    assert got["odd"].tolist() == [False, False, True]
    assert "vib_mms" in got.loc["new-shaky", "why"]
    assert fitted.predict(new).tolist() == got["group"].tolist()
    assert fitted.score_samples(new).tolist() == got["odd_score"].tolist()


def test_a_device_lacking_a_metric_is_grouped_by_the_others(fleet) -> None:
    """Check that a device without one metric is still grouped by the other, and named."""
    hist = dict(fleet[0])
    hist["hot-06"] = hist["hot-06"][["temp_c"]]
    model = BehaviourGroups(random_state=0).fit(hist)
    assert model.missing_ == {"hot-06": ["vib_mms"]}
    assert model.labels_["hot-06"] == model.labels_["hot-07"]


def test_irregular_times_gaps_and_nan_are_read(fleet) -> None:
    """Check that thinned, gappy histories with NaN cells give the same groups."""
    hist, truth = fleet
    rng = np.random.default_rng(5)
    rough = {}
    for d, f in hist.items():
        keep = f.iloc[np.sort(rng.choice(len(f), len(f) // 2, replace=False))].copy()
        keep.iloc[10:40] = np.nan  # a gap
        keep.iloc[::7, 1] = np.nan
        rough[d] = keep
    model = BehaviourGroups(random_state=0).fit(rough)
    members = [d for d in model.devices_ if truth[d] != "shaky"]
    assert adjusted_rand_score([truth[d] for d in members],
                               model.labels_[members].tolist()) == 1.0


def test_save_then_load_gives_the_same_model(fitted, tmp_path: Path) -> None:
    """Check the round trip: same assignments, same summary; no temporary file left."""
    path = tmp_path / "groups.json"
    size = fitted.save(path)
    assert size == path.stat().st_size and path.read_bytes().startswith(b"EDGEWISE-GROUPS\n")
    back = load_groups(path)
    new = {"n1": device("hot", 7), "n2": device("shaky", 8)}
    pd.testing.assert_frame_equal(back.assign(new), fitted.assign(new))
    assert back.summary() == fitted.summary()
    assert [p.name for p in tmp_path.iterdir()] == ["groups.json"]


def test_damaged_or_foreign_files_are_refused(fitted, tmp_path: Path) -> None:
    """Check one clear error for a truncated file, a changed byte, another format version
    and a file that is no groups model."""
    path = tmp_path / "g.json"
    fitted.save(path)
    data = path.read_bytes()
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    with pytest.raises(GroupsFileError, match="is damaged or truncated"):
        load_groups(tmp_path / "cut")
    flipped = bytearray(data)
    flipped[-10] ^= 1
    (tmp_path / "flip").write_bytes(bytes(flipped))
    with pytest.raises(GroupsFileError, match="does not match its checksum"):
        load_groups(tmp_path / "flip")
    (tmp_path / "v9").write_bytes(data.replace(b'"format_version": 1', b'"format_version": 9'))
    with pytest.raises(GroupsFileError, match="format version 9; this Edgewise reads version 1"):
        load_groups(tmp_path / "v9")
    body = b'{"params": {}}'
    head = json.dumps({"format_version": 1, "body_sha256": hashlib.sha256(body).hexdigest()})
    (tmp_path / "hollow").write_bytes(b"EDGEWISE-GROUPS\n" + head.encode() + b"\n" + body)
    with pytest.raises(GroupsFileError, match="does not hold a groups model this Edgewise can "
                       "read"):
        load_groups(tmp_path / "hollow")
    (tmp_path / "rul").write_bytes(b"EDGEWISE-RUL\n{}\n")
    with pytest.raises(GroupsFileError, match="not an Edgewise groups model file"):
        load_groups(tmp_path / "rul")


def test_fewer_than_two_devices_is_refused() -> None:
    """Check that one device cannot be grouped, and the error says how many are needed."""
    with pytest.raises(InvalidParameterError, match=r"at least 2 device\(s\) to group. Got 1"):
        BehaviourGroups().fit({"a": device("plain", 0)})


def test_a_device_with_no_finite_reading_is_named() -> None:
    """Check the device, its columns and the fix are named."""
    hist = {"a": device("plain", 0), "b": device("plain", 1),
            "dead": pd.DataFrame({"temp_c": [np.nan, np.inf]}, index=IDX[:2])}
    with pytest.raises(InvalidParameterError, match=r"Device 'dead' has no finite reading in "
                       r"any numeric column \(columns: \['temp_c'\]\)"):
        BehaviourGroups().fit(hist)


def test_no_metric_in_common_is_refused() -> None:
    """Check that devices sharing no metric are refused, with the metrics and counts."""
    hist = {"a": device("plain", 0)[["temp_c"]], "b": device("plain", 1)[["vib_mms"]]}
    with pytest.raises(InvalidParameterError, match=r"no metric in common.*'temp_c': 1, "
                       r"'vib_mms': 1"):
        BehaviourGroups().fit(hist)


def test_more_groups_than_devices_is_refused() -> None:
    """Check n_groups above the groups the devices can make (3 devices, at least 2 per
    group: 1) names the limit and the value."""
    hist = {f"d{i}": device("plain", i) for i in range(3)}
    with pytest.raises(InvalidParameterError, match=r"'n_groups' parameter of BehaviourGroups "
                       r"must be at most 1: 3 devices make at most 1 group\(s\) of at least "
                       r"2 devices \(a smaller one is no group\). Got 4 instead."):
        BehaviourGroups(n_groups=4).fit(hist)


@pytest.mark.parametrize(("params", "match"), [
    ({"method": "dbscan"}, (r"'method' parameter of BehaviourGroups must be one of "
                            r"'kmeans', 'agglomerative', 'gmm'. Got 'dbscan'")),
    ({"n_groups": 0}, r"'n_groups' parameter .* in the range \[1, inf\) or None. Got 0"),
    ({"random_state": -1}, r"'random_state' parameter .* Got -1"),
    ({"reference": "rpm"}, (r"'reference' parameter of BehaviourGroups must be one of the "
                            r"metrics the fleet shares, \['temp_c', 'vib_mms'\]. Got 'rpm'")),
])
def test_bad_parameters_are_refused(params, match) -> None:
    """Check each bad parameter is named with its value and what is allowed."""
    hist = {f"d{i}": device("plain", i) for i in range(3)}
    with pytest.raises(InvalidParameterError, match=match):
        BehaviourGroups(**params).fit(hist)


def test_histories_of_the_wrong_shape_are_refused() -> None:
    """Check a list instead of a mapping, a history that is no DataFrame and one not
    indexed by time are each named."""
    with pytest.raises(InvalidParameterError, match=r"needs a mapping of device id to a "
                       r"history.*Got list instead"):
        BehaviourGroups().fit([device("plain", 0)])
    with pytest.raises(InvalidParameterError, match="device 'b' must be a DataFrame"):
        BehaviourGroups().fit({"a": device("plain", 0), "b": [1.0]})
    with pytest.raises(InvalidParameterError, match="device 'b' must be indexed by time"):
        BehaviourGroups().fit({"a": device("plain", 0),
                               "b": device("plain", 1).reset_index(drop=True).set_axis(
                                   [f"r{i}" for i in range(len(IDX))])})


def test_use_before_fit_and_foreign_devices_are_refused(fitted) -> None:
    """Check predict before fit names the call to make, and a device with none of the
    learned metrics is named."""
    with pytest.raises(NotFittedError, match=r"call fit\(histories\) first"):
        BehaviourGroups().predict({"a": device("plain", 0)})
    other = {"x": pd.DataFrame({"rpm": np.arange(10.0)}, index=IDX[:10])}
    with pytest.raises(InvalidParameterError, match=r"Device 'x' sends none of the metrics "
                       r"the groups were learned from, \['temp_c', 'vib_mms'\]"):
        fitted.assign(other)


def test_an_odd_daily_peak_is_explained_in_hours() -> None:
    """Check that a device whose daily cycle peaks twelve hours off its group's is told
    apart by the hour of its peak, in words. Three days: the fleet's daily cycles (some
    devices have one, some not) are checked on interleaved halves; a fleet that all agree
    on one cycle gives no such check in three days (its daily features weigh 0)."""
    hist = {f"daily-{i}": device("daily", i) for i in range(8)}
    hist |= {f"plain-{i}": device("plain", 20 + i) for i in range(8)}
    late = device("daily", 99)
    late["temp_c"] = 40 + np.random.default_rng(9).normal(0, 1, len(IDX)) + 5 * np.sin(
        2 * np.pi * (HOUR - 21) / 24)
    model = BehaviourGroups(n_groups=2, random_state=0).fit(hist)
    got = model.assign({"late": late})
    assert bool(got.loc["late", "odd"])
    assert got.loc["late", "why"] == "daily peak of temp_c near 03:00 UTC vs group 0 15:00"


def _two_level_noise_fleet(days: float, seed: int) -> dict[str, pd.DataFrame]:
    """30 devices at 40 and 20 at 60, independent N(0, 1) readings every 10 min."""
    n = int(days * 144)
    idx = pd.date_range("2024-01-01", periods=n, freq="10min", tz="UTC")
    rng = np.random.default_rng(seed)
    hist = {f"a{i}": pd.DataFrame({"temp": 40 + rng.normal(0, 1, n)}, index=idx)
            for i in range(30)}
    return hist | {f"b{i}": pd.DataFrame({"temp": 60 + rng.normal(0, 1, n)}, index=idx)
                   for i in range(20)}


def test_three_days_of_noise_make_no_odd_ones_out() -> None:
    """Check that noise does not make a daily cycle: with three days of history half a
    history cannot show one, and 24 hourly means fitted to a few days of noise used to
    weigh fully and flag normal devices ("daily peak of temp near 16:00 UTC")."""
    flagged = {}
    for seed in range(3):
        model = BehaviourGroups(random_state=seed).fit(_two_level_noise_fleet(3, seed))
        assert model.n_groups_ == 2
        flagged[seed] = [(o["device"], o["why"]) for o in model.summary()["odd_ones_out"]]
        daily = [w for f, w in zip(model.feature_names_, model.weights_, strict=True)
                 if f.startswith("daily")]
        assert daily and max(daily) < 0.3, daily
    assert not any(flagged.values()), flagged


def test_assign_flags_a_gross_oddity_in_a_small_fleet() -> None:
    """Check that a new device far outside every group of a fleet of ten is an odd one out
    (the fleet's own tail put the cut out of reach of the compressed scale)."""
    idx = pd.date_range("2024-01-01", periods=300, freq="10min", tz="UTC")
    rng = np.random.default_rng(0)
    hist = {f"a{i}": pd.DataFrame({"temp": 40 + rng.normal(0, 1, 300)}, index=idx)
            for i in range(6)}
    hist |= {f"b{i}": pd.DataFrame({"temp": 60 + rng.normal(0, 1, 300)}, index=idx)
             for i in range(4)}
    model = BehaviourGroups().fit(hist)
    assert not model.odd_.any()
    for level in (100.0, 50_000.0):
        got = model.assign({"x": pd.DataFrame({"temp": level + rng.normal(0, 1, 300)},
                                              index=idx)})
        assert bool(got.loc["x", "odd"]), (level, float(got.loc["x", "odd_score"]),
                                           model.odd_cut_)
        assert got.loc["x", "why"].startswith("runs hotter: temp median")


def test_save_keeps_tiny_profile_values(tmp_path: Path) -> None:
    """Check that readings of 1e-12 come back from the file at full precision (the
    profiles were written with 10 decimals: 0.0)."""
    idx = pd.date_range("2024-01-01", periods=300, freq="10min", tz="UTC")
    rng = np.random.default_rng(0)
    hist = {f"a{i}": pd.DataFrame({"leak": 1e-12 * (40 + rng.normal(0, 1, 300))}, index=idx)
            for i in range(6)}
    hist |= {f"b{i}": pd.DataFrame({"leak": 1e-12 * (60 + rng.normal(0, 1, 300))},
                                   index=idx) for i in range(4)}
    model = BehaviourGroups().fit(hist)
    model.save(tmp_path / "g.json")
    loaded = load_groups(tmp_path / "g.json")
    np.testing.assert_array_equal(loaded.profiles_.to_numpy(), model.profiles_.to_numpy())
    assert loaded.summary() == model.summary()
    new = {"x": pd.DataFrame({"leak": 1e-12 * (200 + rng.normal(0, 1, 300))}, index=idx)}
    pd.testing.assert_frame_equal(loaded.assign(new), model.assign(new))


def test_pair_words_split_metric_names_holding_a_tilde() -> None:
    """Check that the correlation of metrics ``in~flow`` and ``out`` reads "in~flow and
    out", not "in and flow~out"."""
    rng = np.random.default_rng(0)
    idx = pd.date_range("2024-01-01", periods=300, freq="10min", tz="UTC")
    hist = {}
    for i in range(12):
        a = rng.normal(0, 1, 300).cumsum()
        b = (a if i < 6 else rng.normal(0, 1, 300).cumsum()) + rng.normal(0, 0.3, 300)
        hist[f"d{i}"] = pd.DataFrame({"in~flow": a, "out": b}, index=idx)
    model = BehaviourGroups(n_groups=2).fit(hist)
    texts = [t["text"] for ts in model.traits_.values() for t in ts
             if t["feature"] == "corr:in~flow~out"]
    assert texts and all(t.startswith("in~flow and out move together") for t in texts), texts
