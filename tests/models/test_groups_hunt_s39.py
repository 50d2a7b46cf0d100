"""BehaviourGroups' device grouping, hunt of session 39: a device with a short history flagged
odd by its noise, ``n_groups`` not honoured after an outlier's cluster was dropped, fleets
of exact copies and four clear groups merged, made-up daily peaks, fits that exploded with
metrics, crafted model files that crashed, ``--save`` into a missing folder, and a few
messages."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.models import cluster
from edgewise.models._words import short_number
from edgewise.models.cluster import BehaviourGroups, GroupsFileError, load_groups
from edgewise.models.profile import behaviour_profile
from tests.models.test_cluster_file_state import _rewrite, _set

load_commands()

IDX = pd.date_range("2024-01-01", periods=300, freq="10min", tz="UTC")  # about 2 days


def _level_fleet(levels: list[float], seed: int, name: str = "d") -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    return {f"{name}{i:02d}": pd.DataFrame({"t": lv + rng.normal(0, 1, len(IDX))}, index=IDX)
            for i, lv in enumerate(levels)}


def _recent(level: float, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """A device like the fleet's (N(level, 1)) that sent only the last ``n`` readings."""
    return pd.DataFrame({"t": level + rng.normal(0, 1, n)}, index=IDX[-n:])


# -- 1. a short history is not odd by its noise -----------------------------------------------
def test_a_device_with_a_short_history_is_not_odd_by_its_noise() -> None:
    """Check a device behaving as the fleet does, but with 3 to 40 readings at the end of
    the fleet's two days, is flagged by no fit and by no assign (before: 7 to 10 of 10 fits
    flagged it, by a trend of -82/day from 5 readings read over two days, or a spread or
    lag-1 autocorrelation from a handful of readings), and no member is flagged either."""
    rng = np.random.default_rng(0)
    fleet = _level_fleet([50.0] * 8, 0)
    saved = BehaviourGroups().fit(fleet)
    for n in (3, 5, 10, 20, 40):
        for _ in range(3):
            new = _recent(50.0, n, rng)
            model = BehaviourGroups().fit(fleet | {"new": new})
            assert not model.odd_.any(), (n, model.summary()["odd_ones_out"])
            got = saved.assign({"new": new})
            assert not got["odd"].any(), (n, got.to_dict("records"))


def test_a_gross_oddity_with_few_readings_is_still_odd() -> None:
    """Check a device at 25 times the fleet's level is odd with one reading or five, in the
    fit and assigned to saved groups: its few readings shrink its gap by their noise, on
    the linear scale, and 1,200 spreads shrunk by 17 are still far."""
    rng = np.random.default_rng(1)
    fleet = _level_fleet([50.0] * 8, 1)
    saved = BehaviourGroups().fit(fleet)
    for n in (1, 5):
        new = _recent(1250.0, n, rng)
        model = BehaviourGroups().fit(fleet | {"new": new})
        assert model.odd_["new"] and not model.odd_.drop("new").any(), n
        assert "median 1250" in model.summary()["odd_ones_out"][0]["why"]
        assert bool(saved.assign({"new": new})["odd"].iloc[0]), n


def test_a_device_with_a_short_history_joins_its_group() -> None:
    """Check a hot device with 5 readings is in the hot group, not a group of its own nor
    odd, in the fit and in assign."""
    rng = np.random.default_rng(2)
    fleet = _level_fleet([40.0] * 6 + [60.0] * 4, 2)
    new = _recent(60.0, 5, rng)
    model = BehaviourGroups().fit(fleet | {"new": new})
    assert model.n_groups_ == 2 and not model.odd_["new"]
    assert model.labels_["new"] == model.labels_["d09"] != model.labels_["d00"]
    saved = BehaviourGroups().fit(fleet)
    got = saved.assign({"new": new}).iloc[0]
    assert got["group"] == saved.labels_["d09"] and not got["odd"]


def test_a_short_history_is_saved_and_loaded_with_what_allows_for_it(tmp_path: Path) -> None:
    """Check the fleet's typical readings, the few a device has and the members' scatter
    are saved, so a loaded model's summary is the fitted one's and it assigns as the
    fitted one does."""
    rng = np.random.default_rng(3)
    fleet = _level_fleet([50.0] * 8, 3) | {"new": _recent(50.0, 20, rng),
                                           "far": _recent(900.0, 30, rng)}
    model = BehaviourGroups().fit(fleet)
    assert model.typical_readings_ == {"t": 300.0}
    assert model.few_readings_ == {"far": {"t": 30}, "new": {"t": 20}}
    assert model.odd_["far"] and not model.odd_.drop("far").any()
    model.save(tmp_path / "g.json")
    loaded = load_groups(tmp_path / "g.json")
    assert loaded.summary() == model.summary()
    np.testing.assert_array_equal(loaded.odd_scatter_, model.odd_scatter_)
    probe = {"p": _recent(50.0, 10, rng)}
    pd.testing.assert_frame_equal(loaded.assign(probe), model.assign(probe))


def test_profile_spread_from_few_readings_and_a_short_trend_are_unknown() -> None:
    """Check a spread from fewer than 10 readings is NaN, and a trend is NaN where its
    readings cannot pin it down over the time it is read over (40 readings at the end of
    two days) yet known from the whole two days, or with no time to read it over."""
    day = 86_400 * 10**9
    frame = pd.DataFrame({"t": np.arange(300.0)}, index=IDX)
    whole = behaviour_profile(frame, 600 * 10**9, trend_over_ns=2 * day)
    assert math.isfinite(whole["trend:t"]) and math.isfinite(whole["spread:t"])
    short = behaviour_profile(frame.iloc[-40:], 600 * 10**9, trend_over_ns=2 * day)
    assert math.isnan(short["trend:t"]) and math.isfinite(short["spread:t"])
    assert math.isfinite(behaviour_profile(frame.iloc[-40:], 600 * 10**9)["trend:t"])
    few = behaviour_profile(frame.iloc[-9:], 600 * 10**9)
    assert math.isnan(few["spread:t"]) and math.isfinite(few["level:t"])


# -- 2. n_groups is honoured when an outlier takes a cluster -----------------------------------
def test_n_groups_is_honoured_when_an_outlier_takes_a_cluster() -> None:
    """Check 5 devices at 40 °C, 5 at 60 °C and one at 500 °C asked for 2 groups make the
    two groups, the outlier odd (before: k-means gave the outlier a cluster of its own,
    dropped as too small, and the rest were one group), and asked for 3 make 3."""
    fleet = _level_fleet([40.0] * 5 + [60.0] * 5 + [500.0], 0)
    two = BehaviourGroups(n_groups=2).fit(fleet)
    assert two.n_groups_ == 2 and two.odd_.tolist() == [False] * 10 + [True]
    assert len(set(two.labels_.iloc[:5])) == len(set(two.labels_.iloc[5:10])) == 1
    assert two.labels_.iloc[0] != two.labels_.iloc[5]
    assert BehaviourGroups(n_groups=3).fit(fleet).n_groups_ == 3


# -- 3. as many groups as distinct profiles ----------------------------------------------------
def test_exact_copies_of_two_kinds_are_two_groups() -> None:
    """Check 3 pumps at a constant 1450 rpm and 3 at 2950 rpm are two groups when the
    number is chosen (before: at most distinct - 1 = 1 group was tried), and 6 copies
    of one are one group."""
    fleet = {f"p{i}": pd.DataFrame({"rated_rpm": np.full(300, 1450.0 if i < 3 else 2950.0)},
                                   index=IDX) for i in range(6)}
    model = BehaviourGroups().fit(fleet)
    assert model.n_groups_ == 2 and model.labels_.tolist() == [0, 0, 0, 1, 1, 1]
    same = {d: pd.DataFrame({"rated_rpm": np.full(300, 1450.0)}, index=IDX) for d in fleet}
    assert BehaviourGroups().fit(same).n_groups_ == 1


# -- 4. four clear groups are four -------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_four_clearly_separate_groups_are_four(seed: int) -> None:
    """Check levels 0/20/40/60 (noise 1, 3 devices each) are four groups (before: the widest
    margin over the null was at 2 groups, whose null is lowest, in 10 of 10 draws), while
    three groups stay three and one kind stays one group."""
    model = BehaviourGroups().fit(_level_fleet([0.0] * 3 + [20.0] * 3 + [40.0] * 3
                                               + [60.0] * 3, seed))
    assert model.n_groups_ == 4 and not model.odd_.any()
    assert [len(set(model.labels_.iloc[i:i + 3])) for i in (0, 3, 6, 9)] == [1] * 4
    assert BehaviourGroups().fit(_level_fleet([0.0] * 5 + [50.0] * 5 + [100.0] * 5,
                                              seed)).n_groups_ == 3
    assert BehaviourGroups().fit(_level_fleet([0.0] * 12, seed)).n_groups_ == 1


# -- 5. no made-up daily peak ------------------------------------------------------------------
def _daily_fleet(seed: int) -> dict[str, pd.DataFrame]:
    ix = pd.date_range("2024-01-01", periods=6 * 24 * 6, freq="10min", tz="UTC")
    h = ix.hour.to_numpy() + ix.minute.to_numpy() / 60
    rng = np.random.default_rng(seed)
    cycle = 50 + 10 * np.cos(2 * np.pi * (h + 0.5) / 24)
    out = {f"cyc-{i}": pd.DataFrame({"t": cycle + rng.normal(0, 1, len(ix))}, index=ix)
           for i in range(6)}
    return out | {f"flat-{i}": pd.DataFrame({"t": 50 + rng.normal(0, 1, len(ix))}, index=ix)
                  for i in range(4)}


@pytest.mark.parametrize("seed", [0, 2, 7])
def test_a_group_without_a_daily_cycle_has_no_daily_peak_trait(seed: int) -> None:
    """Check a group of flat devices in a fleet with a strong daily cycle is said to have a
    weaker daily cycle, never a "daily peak near 13:00" (before: the peak of its noise, or
    "near no peak", or the fleet's own hour)."""
    model = BehaviourGroups().fit(_daily_fleet(seed))
    flat = int(model.labels_["flat-0"])
    texts = [t["text"] for t in model.traits_[flat]]
    assert not any("daily peak" in t for t in texts), texts
    daily = [t for t in model.traits_[flat] if t["feature"] == "daily:t"]
    if daily:
        assert daily[0]["text"].startswith("weaker daily cycle in t") and daily[0][
            "group"] < 0.2 < daily[0]["fleet"]


def test_why_odd_names_the_cycle_strength_not_a_made_up_peak() -> None:
    """Check a device whose daily-peak feature sets it apart from its (cyclic) group, but
    whose own cycle is flat, is odd for its weaker cycle in the words given, and one
    whose cycle is strong but peaks 12 hours later for its peak."""
    model = BehaviourGroups(n_groups=2).fit(_daily_fleet(0))
    g = int(model.labels_["cyc-0"])
    cos = model.feature_names_.index("daily_cos:t")
    o = model.odd_centroids_[g].copy()
    o[cos] -= 10.0  # only the peak's feature is off
    flat = model.profiles_.loc["flat-0"]
    why = model._why_odd(o, flat, g)
    assert why.startswith("weaker daily cycle in t: 0 of its variance vs group"), why
    shifted = model.profiles_.loc["cyc-0"].copy()
    shifted[["daily_cos:t", "daily_sin:t"]] *= -1  # peaks 12 hours later
    assert model._why_odd(o, shifted, g).startswith("daily peak of t near 12:00 UTC")


# -- 6. the null cloud and the odd cut in O(n²), not features³ ---------------------------------
def test_no_features_by_features_matrix_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check a fit of 12 devices with 16 metrics (184 features: more than the 12 x 12 a
    devices x devices matrix holds, so any features x features one is caught) builds no
    covariance or eigen-decomposition bigger than devices x devices (before: a features x
    features covariance factored for each of 8 null draws and the odd cut: 27 s with 40
    metrics, 194-338 s with 60, against 3 s now), and its groups are the two kinds."""
    sizes: list[int] = []
    cov, eigvalsh = np.cov, np.linalg.eigvalsh

    def counted_cov(m: Any, *a: Any, **k: Any) -> Any:
        out = cov(m, *a, **k)
        sizes.append(int(np.size(out)))
        return out

    def counted_eig(m: Any, *a: Any, **k: Any) -> Any:
        sizes.append(int(np.size(m)))
        return eigvalsh(m, *a, **k)

    monkeypatch.setattr(np, "cov", counted_cov)
    monkeypatch.setattr(np.linalg, "eigvalsh", counted_eig)
    rng = np.random.default_rng(0)
    ix = IDX[:200]
    fleet = {f"d{i:02d}": pd.DataFrame(rng.normal(0, 1, (200, 16)) + (i % 2) * 3, index=ix,
                                       columns=[f"m{j:03d}" for j in range(16)])
             for i in range(12)}
    model = BehaviourGroups().fit(fleet)
    assert len(model.feature_names_) == 184 and model.n_groups_ == 2
    assert model.labels_.iloc[::2].nunique() == model.labels_.iloc[1::2].nunique() == 1
    assert max(sizes, default=0) <= 12 * 12, max(sizes)


def test_the_null_cloud_has_the_fleet_covariance() -> None:
    """Check the null draws keep the fleet's mean and covariance (the statistics the
    multivariate normal drew them from), and the odd cut's eigenvalues are the
    covariance's."""
    X = np.random.default_rng(0).normal(size=(30, 4)) * [1.0, 3.0, 0.2, 0.0] + [5, 0, 1, 2]
    Y = np.vstack([cluster._gaussian_like(X, np.random.default_rng(s)) for s in range(400)])
    assert np.allclose(Y.mean(0), X.mean(0), atol=0.1)
    assert np.allclose(np.cov(Y, rowvar=False), np.cov(X, rowvar=False), rtol=0.1, atol=0.02)
    W = np.random.default_rng(1).normal(size=(5, 40))
    full = np.sort(np.linalg.eigvalsh(np.cov(W, rowvar=False)))[-4:]
    assert np.allclose(np.sort(cluster._cov_eigenvalues(W))[-4:], full)


# -- 8. a consistent model file ----------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("groups") / "g.json"
    BehaviourGroups(random_state=0).fit(_level_fleet([40.0] * 3 + [60.0] * 3, 0)).save(path)
    return path


def _arrays(key: str, f: Callable[[list[Any]], Any]) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        doc["arrays"][key] = f(doc["arrays"][key])
    return change


@pytest.mark.parametrize(("change", "field", "says"), [
    (_arrays("center_", lambda v: v[:-1]), "arrays.center_", "one per feature"),
    (_arrays("weights_", lambda v: [*v, 1.0]), "arrays.weights_", "one per feature"),
    (_arrays("scale_", lambda v: [0.0] * len(v)), "arrays.scale_", "above 0"),
    (_arrays("centroids_", lambda v: v[:1]), "arrays.centroids_", "got 1 lists"),
    (_arrays("odd_centroids_", lambda v: [[1.0]] * len(v)), "arrays.odd_centroids_",
     "one per feature"),
    (_set("state.eps_", {}), "state.eps_", "'t': it is missing"),
    (_set("state.typical_spread_", {"t": 0}), "state.typical_spread_", "above 0"),
    (_set("state.step_ns_", 0), "state.step_ns_", "above 0"),
    (_set("state.step_ns_", -5), "state.step_ns_", "above 0"),
    (_set("state.odd_scale_", 0), "state.odd_scale_", "above 0"),
    (_set("state.n_groups_", 5), "arrays.centroids_", "a list of 5 lists"),
    (_set("state.metrics_", ["zzz"]), "state.feature_names_", "'level:t'"),
    (_set("state.feature_names_", []), "state.feature_names_", "at least one"),
    (_set("state.traits_", {"0": 5}), "state.traits_", "for each group"),
    (_set("labels_", ["x"] * 6), "labels_", "group numbers"),
    (_set("labels_", [7] * 6), "labels_", "group numbers from 0 to 1"),
    (_set("params.method", "foo"), "params", "'method' parameter"),
    (_set("params.reference", "t"), "params.reference", "state.reference_value_"),
    (_set("state.typical_readings_", {"t": -1}), "state.typical_readings_", "above 0"),
    (_set("state.few_readings_", {"d00": {"t": "x"}}), "state.few_readings_", "whole"),
    (_arrays("odd_scatter_", lambda v: [-1.0] * len(v)), "arrays.odd_scatter_", "below 0"),
])
def test_an_inconsistent_state_is_one_clear_error(saved: Path, tmp_path: Path, change: Any,
                                                  field: str, says: str) -> None:
    """Check a file with a valid checksum whose state does not fit together (arrays of
    another length than the features, a metric without its spread, a step or scale of 0,
    labels outside the groups, bad parameters) is refused at load naming the field (before:
    a ValueError, KeyError, ZeroDivisionError or IndexError traceback in assign, or a
    model that loaded)."""
    path = _rewrite(saved, tmp_path, change)
    with pytest.raises(GroupsFileError) as err:
        load_groups(path)
    assert f"its field {field!r} must be" in str(err.value) and says in str(err.value), err.value


def test_a_file_saved_before_few_readings_were_allowed_for_loads(saved: Path,
                                                                 tmp_path: Path) -> None:
    """Check a file without the typical readings (an earlier release's) loads and assigns,
    allowing for no device's few readings, and saves again."""
    def old(doc: dict[str, Any]) -> None:
        del doc["state"]["typical_readings_"], doc["state"]["few_readings_"]
        del doc["arrays"]["odd_scatter_"]

    model = load_groups(_rewrite(saved, tmp_path, old))
    assert model.typical_readings_ == {} and model.few_readings_ == {}
    assert model.odd_scatter_ is None
    got = model.assign({"n": _level_fleet([60.0], 5)["d00"]})
    assert not got["odd"].iloc[0]
    model.save(tmp_path / "again.json")
    assert load_groups(tmp_path / "again.json").summary() == model.summary()


# -- 9 and the messages ------------------------------------------------------------------------
def test_save_into_a_missing_folder_makes_it(tmp_path: Path) -> None:
    """Check --save a/b/g.json makes the folders and writes the model (before: the whole
    fit ran, then "cannot be written: No such file or directory")."""
    csv = tmp_path / "fleet.csv"
    rows = [(d, t.isoformat(), float(v)) for d, f in _level_fleet([40.0] * 3 + [60.0] * 3,
                                                                  0).items()
            for t, v in zip(f.index, f["t"], strict=True)]
    pd.DataFrame(rows, columns=["device_id", "time", "temp"]).to_csv(csv, index=False)
    out = tmp_path / "a" / "b" / "g.json"
    r = CliRunner(mix_stderr=False).invoke(app, ["groups", "--csv", str(csv), "--save",
                                                 str(out), "--json"])
    assert r.exit_code == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["saved"]["path"] == str(out)
    assert load_groups(out).n_groups_ == 2


def test_a_long_csv_device_with_no_number_names_its_metric(tmp_path: Path) -> None:
    """Check a long file's device with no number (its cells empty markers: text is refused
    on its own since session 44) is refused naming the metric it sent (before: "columns:
    []")."""
    csv = tmp_path / "long.csv"
    csv.write_text("device_id,time,metric,value\na,2024-01-01T00:00:00Z,t,1\n"
                   "a,2024-01-01T00:01:00Z,t,2\nb,2024-01-01T00:00:00Z,t,nan\n"
                   "b,2024-01-01T00:01:00Z,t,null\n")
    r = CliRunner(mix_stderr=False).invoke(app, ["groups", "--csv", str(csv)])
    assert r.exit_code == 2 and "Device 'b' has no finite reading" in r.stderr, r.stderr
    assert "(columns: ['t'])" in r.stderr, r.stderr


def test_duplicate_columns_and_colliding_device_ids_are_refused_naming_them() -> None:
    """Check a history with two columns of one name is refused as such (before: "no finite
    reading in any numeric column"), and devices 1 and "1" are refused as one id (before:
    one silently replaced the other)."""
    rng = np.random.default_rng(0)
    twice = {f"d{i}": pd.DataFrame(rng.normal(0, 1, (300, 2)), index=IDX, columns=["t", "t"])
             for i in range(4)}
    with pytest.raises(InvalidParameterError, match="more than one column named 't'"):
        BehaviourGroups().fit(twice)
    frame = pd.DataFrame({"t": rng.normal(0, 1, 300)}, index=IDX)
    with pytest.raises(InvalidParameterError, match="Devices 1 and '1' are both named '1'"):
        BehaviourGroups().fit({1: frame, "1": frame + 100, "2": frame})


def test_a_huge_number_has_no_prefix_after_its_exponent() -> None:
    """Check values past the G prefix print as an exponent alone (before: '-9.6e+296G')."""
    assert short_number(-9.6e305) == "-9.6e+305" and short_number(2.5e12) == "2.5e+12"
    assert short_number(2.5e11) == "250G" and short_number(12345.0) == "12.3k"


@pytest.mark.parametrize("bad", [[1e300], [1.7e308, -1.7e308]])
def test_a_device_sending_huge_finite_values_is_set_aside_not_a_crash(bad: list[float]
                                                                     ) -> None:
    """Check one device whose temperature reads only a huge but finite value (telemetry
    takes any float to 1.8e308) does not crash the fit: the odd cut's Gram matrix of
    residuals overflowed to inf and ``eigvalsh`` raised LinAlgError, a 500 for the whole
    fleet's ``GET /v1/fleet/groups``. Since session 46 such readings are set aside (beyond
    +-1e160, counted in ``set_aside_``): the device's temperature is missing, not a
    profile that makes it odd, and no other device is odd."""
    rng = np.random.default_rng(0)
    fleet = {}
    for d in range(6):
        temp = [bad[i % len(bad)] for i in range(200)] if d == 0 else 20 + d + rng.normal(
            0, 1, 200)
        fleet[f"p{d}"] = pd.DataFrame({"temp": temp, "rpm": 1400 + 10 * d + rng.normal(
            0, 1, 200)}, index=IDX[:200])
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        model = BehaviourGroups().fit(fleet)
    assert model.set_aside_ == {"p0": {"temp": 200}}
    assert model.missing_ == {"p0": ["temp"]}
    assert not model.odd_.drop("p0").any()
