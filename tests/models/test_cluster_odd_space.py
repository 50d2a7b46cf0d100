"""Groups: the odd score is not blinded by reliability weights learned on a fleet of one kind;
fit and assign use one rule (the nearest centre) for every method; no group is kept whose
devices are all odd ones out."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewise.models.cluster import _MAGIC, BehaviourGroups, load_groups
from edgewise.models.model_file import read_model_file, write_model_file

IDX = pd.date_range("2024-01-01", periods=3 * 144, freq="10min", tz="UTC")


def _alike(n: int, seed: int) -> tuple[dict[str, pd.DataFrame], np.random.Generator]:
    """``n`` pumps of one kind: temp about 40, vib about 2, three days at 10 min."""
    rng = np.random.default_rng(seed)
    fleet = {f"pump-{i:02d}": pd.DataFrame({"temp": 40 + rng.normal(0, 1, len(IDX)),
                                            "vib": 2 + rng.normal(0, 0.2, len(IDX))}, index=IDX)
             for i in range(n)}
    return fleet, rng


@pytest.mark.parametrize("seed", [0, 2])
def test_a_new_device_far_off_a_fleet_of_one_kind_is_odd_when_assigned(
        seed: int, tmp_path: Path) -> None:
    """Check a device at 25 times the level of a 10-pump fleet of one kind is an odd one out
    under assign (and after save and load), named for its temp, though the fleet's level
    differences are noise and so weigh ~0 for grouping (before: score 1.3 against a cut of
    3.5, not flagged); a stuck temp sensor is flagged too (before: 0.95, not flagged)."""
    fleet, rng = _alike(10, seed)
    model = BehaviourGroups(random_state=0).fit(fleet)
    assert model.weights_[model.feature_names_.index("level:temp")] < 0.05  # the premise
    assert not model.odd_.any()
    hot = pd.DataFrame({"temp": 25 * 40 + rng.normal(0, 1, len(IDX)),
                        "vib": 2 + rng.normal(0, 0.2, len(IDX))}, index=IDX)
    stuck = pd.DataFrame({"temp": np.full(len(IDX), 40.0),
                          "vib": 2 + rng.normal(0, 0.2, len(IDX))}, index=IDX)
    got = model.assign({"hot": hot, "stuck": stuck})
    assert got["odd"].all(), got
    assert got.loc["hot", "odd_score"] > 3 * model.odd_cut_, got
    assert "temp" in got.loc["hot", "why"] and "temp" in got.loc["stuck", "why"], got
    model.save(tmp_path / "g.json")
    again = load_groups(tmp_path / "g.json").assign({"hot": hot, "stuck": stuck})
    pd.testing.assert_frame_equal(again, got)
    # in the fit, as under assign
    with_hot = BehaviourGroups(random_state=0).fit({**fleet, "hot": hot})
    assert with_hot.odd_["hot"] and with_hot.odd_.sum() == 1


def _continuous(seed: int) -> dict[str, pd.DataFrame]:
    """24 devices whose level varies continuously (groups cut somewhere); some lack vib."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2024-01-01", periods=600, freq="10min", tz="UTC")
    out = {}
    for i in range(24):
        lvl = rng.normal(50, 6)
        cols = {"temp": lvl + rng.normal(0, 2, 600), "vib": rng.normal(2 + lvl / 50, .5, 600)}
        if i % 5 == 0:
            cols.pop("vib")
        out[f"d{i:02d}"] = pd.DataFrame(cols, index=idx)
    return out


@pytest.mark.parametrize(("method", "seed"), [("gmm", 5), ("agglomerative", 5),
                                              ("gmm", 1), ("agglomerative", 0)])
def test_fit_and_assign_put_a_device_in_the_same_group_for_every_method(
        method: str, seed: int) -> None:
    """Check the fit's group, odd score and flag of each device are what assign gives the
    same histories, and the group is the nearest centre (before, with gmm and Ward, the
    fit kept a device in its cluster though another centre was nearer: at seed 5 gmm put 5
    of 24 devices in another group under assign and flagged one odd only in the fit)."""
    X = _continuous(seed)
    model = BehaviourGroups(n_groups=3, method=method).fit(X)
    got = model.assign(X)
    assert (got["group"] == model.labels_).all(), got[got["group"] != model.labels_]
    assert (got["odd"] == model.odd_).all()
    np.testing.assert_allclose(got["odd_score"], model.odd_score_, rtol=1e-9)
    dist = model._distances(model.Z_)
    np.testing.assert_array_equal(model.labels_.to_numpy(), dist.argmin(1))


class _Paired(BehaviourGroups):
    """Clusters the devices named ``x-...`` together, the others together (as a method
    may, whatever their distances)."""

    def _cluster(self, Z: np.ndarray, k: int, seed: int, n_init: int = 10) -> np.ndarray:
        return np.array([int(d.startswith("x-")) for d in self.devices_])


def test_a_group_of_odd_ones_out_only_is_not_kept() -> None:
    """Check no group is kept whose every device is an odd one out (before: a "group" of two
    devices, each far from the other on its own metric, was listed with size 0, no member
    and traits that describe the two odd ones only), and n_groups counts the groups kept."""
    fleet, rng = _alike(10, 0)
    fleet["x-hot"] = pd.DataFrame({"temp": 400 + rng.normal(0, 1, len(IDX)),
                                   "vib": 2 + rng.normal(0, 0.2, len(IDX))}, index=IDX)
    fleet["x-shaky"] = pd.DataFrame({"temp": 40 + rng.normal(0, 1, len(IDX)),
                                     "vib": 60 + rng.normal(0, 0.2, len(IDX))}, index=IDX)
    model = _Paired(n_groups=2, random_state=0).fit(fleet)
    summary = model.summary()
    assert summary["n_groups"] == model.n_groups_ == len(summary["groups"]) == 1, summary
    assert all(g["size"] > 0 and g["members"] for g in summary["groups"]), summary["groups"]
    assert sorted(o["device"] for o in summary["odd_ones_out"]) == ["x-hot", "x-shaky"]
    assert {o["nearest_group"] for o in summary["odd_ones_out"]} == {0}
    got = model.assign(fleet)
    assert got["group"].eq(0).all() and got.loc[["x-hot", "x-shaky"], "odd"].all(), got


def test_a_file_saved_before_the_odd_space_still_scores_as_it_was_fitted(
        tmp_path: Path) -> None:
    """Check a groups file without the odd-score arrays (an earlier release's) still loads,
    and scores devices on the weighted features its saved odd scale and cut were fitted on."""
    fleet, _ = _alike(10, 1)
    model = BehaviourGroups(random_state=0).fit(fleet)
    path = tmp_path / "g.json"
    model.save(path)
    head, body = read_model_file(path, _MAGIC, ValueError, what="groups model", version=1,
                                 remedy="")
    doc = json.loads(body)
    for key in ("odd_weights_", "odd_centroids_"):
        del doc["arrays"][key]
    old = tmp_path / "old.json"
    write_model_file(old, _MAGIC, head, json.dumps(doc).encode())
    loaded = load_groups(old)
    np.testing.assert_array_equal(loaded.odd_weights_, loaded.weights_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        got = loaded.assign(fleet)
    dist = loaded._distances(loaded.Z_)
    np.testing.assert_allclose(got["odd_score"], dist.min(1) / loaded.odd_scale_, rtol=1e-9)
    assert loaded.summary()["n_groups"] == model.n_groups_
