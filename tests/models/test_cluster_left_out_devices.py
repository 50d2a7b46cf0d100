"""A device sending none of the metrics the groups use is left out of the fit, named with
why (as a metric left out is): it was measured at the fleet median, flagged odd with the
reason 'temp median n/a', and two such devices made a group of twins with no traits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.errors import InvalidParameterError
from edgewise.models.cluster import BehaviourGroups, load_groups

load_commands()

IDX = pd.date_range("2024-01-01", periods=300, freq="10min", tz="UTC")


def dev(seed: int, **levels: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({k: v + rng.normal(0, 1, len(IDX)) for k, v in levels.items()},
                        index=IDX)


def fleet() -> dict[str, pd.DataFrame]:
    cool = {f"cool-{i}": dev(i, load=10.0, temp=40.0) for i in range(5)}
    return cool | {f"hot-{i}": dev(10 + i, load=10.0, temp=60.0) for i in range(5)}


def test_a_device_sending_no_used_metric_is_left_out_not_odd() -> None:
    """Check only-c (sends c alone, a metric left out) is in no group, has no odd score,
    is not 'missing' every metric, and is named in left_out_devices_ and the summary."""
    m = BehaviourGroups(random_state=0).fit(fleet() | {"only-c": dev(99, c=5.0)})
    why = "sends none of the metrics used (load, temp); it sends c"
    assert m.left_out_devices_ == {"only-c": why}
    assert "only-c" not in m.devices_ and "only-c" not in m.odd_score_.index
    assert m.n_groups_ == 2 and not m.odd_.any()
    assert not np.isnan(m.Z_).all(1).any()
    s = m.summary()
    assert s["left_out_devices"] == {"only-c": why} and s["odd_ones_out"] == []
    assert s["missing"] == {} and s["n_devices"] == 10
    assert s["left_out"] == {"c": "sent by 1 of 11 devices; at least 6 needed"}
    json.dumps(s, allow_nan=False)


def test_two_devices_sending_no_used_metric_make_no_group() -> None:
    """Check two such devices do not become a group of twins with no traits."""
    m = BehaviourGroups(random_state=0).fit(
        fleet() | {"only-c": dev(99, c=5.0), "only-d": dev(98, d=5.0)})
    groups = m.summary()["groups"]
    assert m.n_groups_ == 2 and all(g["traits"] for g in groups)
    assert sorted(sorted(g["members"]) for g in groups) == [
        [f"cool-{i}" for i in range(5)], [f"hot-{i}" for i in range(5)]]
    assert sorted(m.left_out_devices_) == ["only-c", "only-d"]


def test_left_out_devices_survive_save_and_load(tmp_path: Path) -> None:
    m = BehaviourGroups(random_state=0).fit(fleet() | {"only-c": dev(99, c=5.0)})
    m.save(tmp_path / "g.json")
    back = load_groups(tmp_path / "g.json")
    assert back.summary()["left_out_devices"] == m.summary()["left_out_devices"]


def test_min_group_size_counts_only_the_devices_grouped() -> None:
    """Check the refusal counts the devices that send a used metric, and says how many were
    left out."""
    three = {f"t-{i}": dev(i, temp=40.0) for i in range(3)}
    with pytest.raises(InvalidParameterError, match=r"number of devices that send a used "
                       r"metric \(3; 2 left out\), or no group could be kept\. Got 4"):
        BehaviourGroups(min_group_size=4).fit(
            three | {"only-c": dev(99, c=5.0), "only-d": dev(98, d=5.0)})


def test_the_cli_names_a_left_out_device(tmp_path: Path) -> None:
    """Check ``edgewise groups --csv`` prints a note naming the device and why, and
    --json carries left_out_devices."""
    hist = fleet() | {"only-c": dev(99, c=5.0)}
    rows = [f"{d},{t.isoformat()},{k},{v}" for d, f in hist.items()
            for t, r in f.iloc[::5].iterrows() for k, v in r.items()]
    csv = tmp_path / "fleet.csv"
    csv.write_text("device_id,time,metric,value\n" + "\n".join(rows) + "\n")
    run = CliRunner(mix_stderr=False)
    res = run.invoke(app, ["groups", "--csv", str(csv)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.stderr
    assert ("note: device 'only-c' left out (in no group): sends none of the metrics used "
            "(load, temp); it sends c") in res.stdout
    res = run.invoke(app, ["groups", "--csv", str(csv), "--json"])
    assert res.exit_code == 0, res.stderr
    assert json.loads(res.stdout)["left_out_devices"] == {
        "only-c": "sends none of the metrics used (load, temp); it sends c"}
