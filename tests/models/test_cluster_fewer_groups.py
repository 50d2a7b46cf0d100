"""BehaviourGroups on one-reading histories, and fewer groups than ``n_groups`` asked for:
said, with why, by the model, ``edgewise groups`` and the JSON it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.models.cluster import BehaviourGroups

load_commands()

T0 = pd.Timestamp("2026-01-01", tz="UTC")
#: two kinds of device, each with one reading: 3 near 10 and 3 near 50
ONE_READING = {"cool-1": 10.0, "cool-2": 11.0, "cool-3": 12.0,
               "hot-1": 50.0, "hot-2": 51.0, "hot-3": 52.0}


def one_reading(values: dict[str, float]) -> dict[str, pd.DataFrame]:
    return {d: pd.DataFrame({"temp": [v]}, index=[T0]) for d, v in values.items()}


def csv_of(tmp_path: Path, values: dict[str, float]) -> Path:
    path = tmp_path / "fleet.csv"
    path.write_text("device_id,timestamp,temp\n" + "".join(
        f"{d},2026-01-01T00:00:00Z,{v}\n" for d, v in values.items()))
    return path


def groups(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, ["groups", *args])


@pytest.mark.parametrize("n_groups", [2, None])
def test_one_reading_histories_are_grouped_by_their_level(n_groups: int | None) -> None:
    """Check six devices of one reading each, three near 10 and three near 50, make the two
    groups (asked for, or chosen): their level could not be checked on half histories and
    weighed 0, so every device had the same profile and the fleet was one group, without a
    word, whatever n_groups asked."""
    model = BehaviourGroups(n_groups=n_groups).fit(one_reading(ONE_READING))
    summary = model.summary()
    assert [g["members"] for g in summary["groups"]] == [
        ["cool-1", "cool-2", "cool-3"], ["hot-1", "hot-2", "hot-3"]]
    assert summary["fewer_groups"] is None and summary["odd_ones_out"] == []


def test_groups_cli_groups_2_on_one_reading_histories(tmp_path: Path) -> None:
    """Check ``edgewise groups --groups 2`` on a CSV of one reading per device makes the two
    groups it asked for."""
    r = groups("--csv", str(csv_of(tmp_path, ONE_READING)), "--groups", "2", "--json")
    assert r.exit_code == 0, r.output + r.stderr
    body = json.loads(r.stdout)
    assert body["n_groups"] == 2 and body["fewer_groups"] is None
    assert sorted(g["members"] for g in body["groups"]) == [
        ["cool-1", "cool-2", "cool-3"], ["hot-1", "hot-2", "hot-3"]]


def test_fewer_groups_than_asked_say_why_devices_alike(tmp_path: Path) -> None:
    """Check four devices reading alike asked for two groups make one, and the model, the
    table and the JSON say why (before: one group, the table saying only "the whole fleet:
    nothing separates it")."""
    alike = {d: 10.0 for d in ("a", "b", "c", "d")}
    summary = BehaviourGroups(n_groups=2).fit(one_reading(alike)).summary()
    assert summary["n_groups"] == 1
    assert summary["fewer_groups"].startswith("2 groups were asked for; 1 could be made: "
                                              "the 4 devices have only 1 distinct profile")
    path = csv_of(tmp_path, alike)
    r = groups("--csv", str(path), "--groups", "2")
    assert r.exit_code == 0, r.output + r.stderr
    said = " ".join(r.stdout.split())
    assert "note: 2 groups were asked for; 1 could be made" in said, r.stdout
    r = groups("--csv", str(path), "--groups", "2", "--json")
    assert "1 could be made" in json.loads(r.stdout)["fewer_groups"]


def test_fewer_groups_than_asked_name_the_odd_one_out() -> None:
    """Check three devices near 5 and one at -13, asked for two groups, make one (a group
    needs two devices) and the summary names the device that fits none."""
    summary = BehaviourGroups(n_groups=2).fit(one_reading(
        {"a": -13.0, "b": 4.0, "c": 4.5, "d": 7.0})).summary()
    assert summary["n_groups"] == 1
    assert [o["device"] for o in summary["odd_ones_out"]] == ["a"]
    assert summary["fewer_groups"] == (
        "2 groups were asked for; 1 could be made: a group needs at least 2 devices that "
        "fit it, and the devices do not make more such groups ('a' fit none: odd ones "
        "out)")


def test_a_device_split_off_by_the_count_asked_is_no_odd_one_out() -> None:
    """Check four alike pumps asked for two groups are one group with no odd one out, and
    the summary says why one group: k-means split one pump off, a group of one is none, and
    that pump was called an odd one out for noise ("temp_c smoother from step to step:
    lag-1 autocorrelation 0.0389 vs group 0 -0.0646", odd score 1.9 under a cut of 4,
    where assign() of the same pump said it is no odd one out)."""
    from tests.models.test_cluster import device

    hist = {f"plain-{i}": device("plain", i) for i in range(4)}
    model = BehaviourGroups(n_groups=2).fit(hist)
    summary = model.summary()
    # the fit agrees with assign() on its own devices (it said plain-0 odd, assign not)
    assert model.assign(hist)["odd"].to_dict() == model.odd_.to_dict()
    assert [g["members"] for g in summary["groups"]] == [list(hist)]
    assert summary["odd_ones_out"] == []
    assert summary["fewer_groups"] == (
        "2 groups were asked for; 1 could be made: a group needs at least 2 devices that "
        "fit it, and the devices do not make more such groups")
