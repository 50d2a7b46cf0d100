"""``edgewise groups`` on a real DuckDB store and on CSV files, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.cli import app, load_commands
from edgewise.models.cluster import load_groups
from edgewise.store import open_store
from edgewise.telemetry import Reading
from tests.models.test_cluster import IDX, device

load_commands()

KINDS = {**{f"plain-{i}": "plain" for i in range(5)}, **{f"hot-{i}": "hot" for i in range(5)},
         "shaky-0": "shaky"}


def groups(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, ["groups", *args])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Path:
    """A gateway data dir whose store holds five plain, five hot and one shaky device,
    written through the store's append API."""
    d = tmp_path_factory.mktemp("gw")
    store = open_store(f"duckdb:///{d / 'edgewise.duckdb'}")
    try:
        for i, (dev, kind) in enumerate(KINDS.items()):
            frame = device(kind, i)
            ts = frame.index.as_unit("ns").asi8
            store.append([Reading(dev, m, int(t), float(v)) for m in frame.columns
                          for t, v in zip(ts, frame[m], strict=True)])
    finally:
        store.close()
    return d


def test_groups_from_a_gateway_store_then_assign_with_the_saved_model(gateway, tmp_path) -> None:
    """Check the store round trip: two groups (plain, hot), the shaky device as the odd one
    out, a saved model, and new devices assigned to its groups from CSV."""
    out = tmp_path / "groups.json"
    res = groups("--data", str(gateway), "--save", str(out), "--json")
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout)
    assert got["n_groups"] == 2 and got["n_devices"] == 11
    members = {g["group"]: set(g["members"]) for g in got["groups"]}
    assert sorted(map(sorted, members.values())) == [
        [f"hot-{i}" for i in range(5)], [f"plain-{i}" for i in range(5)]]
    assert [o["device"] for o in got["odd_ones_out"]] == ["shaky-0"]
    assert load_groups(out).n_groups_ == 2

    rows = [f"{d},{t.isoformat()},{m},{v}" for d, kind in (("new-hot", "hot"), ("new-odd", "shaky"))
            for t, r in device(kind, 50).iterrows() for m, v in r.items()]
    (tmp_path / "new.csv").write_text("device_id,time,metric,value\n" + "\n".join(rows) + "\n")
    res = groups("--csv", str(tmp_path / "new.csv"), "--model", str(out), "--json")
    assert res.exit_code == 0, res.stderr
    assigned = {a["device"]: a for a in json.loads(res.stdout)["assigned"]}
    hot_group = next(g for g, ms in members.items() if "hot-0" in ms)
    assert assigned["new-hot"]["group"] == hot_group and not assigned["new-hot"]["odd"]
    assert assigned["new-odd"]["odd"] and "vib_mms" in assigned["new-odd"]["why"]


def test_the_table_names_groups_traits_and_odd_ones(gateway) -> None:
    """Check the human output: a table of groups with what sets them apart, and the odd
    one out with why."""
    res = groups("--data", str(gateway))
    assert res.exit_code == 0, res.stderr
    assert "2 group(s) of 11 devices" in res.stdout
    assert "runs hotter" in res.stdout and "Odd ones out" in res.stdout
    assert "shaky-0" in res.stdout


def test_a_folder_of_wide_csvs_one_per_device(tmp_path: Path) -> None:
    """Check the device id is the file name and wide columns are the metrics."""
    for i, kind in enumerate(["plain"] * 4 + ["hot"] * 4):
        device(kind, i).rename_axis("timestamp").to_csv(tmp_path / f"{kind}{i}.csv")
    res = groups("--csv", str(tmp_path), "--json")
    assert res.exit_code == 0, res.stderr
    got = json.loads(res.stdout)
    assert sorted(sorted(g["members"]) for g in got["groups"]) == [
        ["hot4", "hot5", "hot6", "hot7"], ["plain0", "plain1", "plain2", "plain3"]]


@pytest.mark.parametrize(("args", "message"), [
    ((), "error: give exactly one of --data (a gateway data dir or store URL) and --csv"),
    (("--csv", "x.csv", "--data", "d"), "got both"),
    (("--csv", "/nonexistent/f.csv"), "error: --csv '/nonexistent/f.csv' does not exist"),
    (("--data", "/nonexistent"), "error: --data '/nonexistent' is neither a gateway data dir"),
    (("--csv", "CSV", "--method", "dbscan"),
     "error: --method must be one of kmeans, agglomerative, gmm. Got 'dbscan'."),
    (("--csv", "CSV", "--seed", "-1"), "error: --seed -1: must be a whole number from 0"),
    (("--csv", "CSV", "--groups", "9"), ("error: --groups must be at most 1: 2 devices "
     "make at most 1 group(s) of at least 2 devices (a smaller one is no group). Got 9 "
     "instead.")),
    (("--csv", "CSV", "--groups", "2"), "error: --groups must be at most 1: 2 devices"),
    (("--csv", "CSV", "--max-groups", "1"), ("error: --max-groups must be an int in the "
     "range [2, inf). Got 1 instead.")),
    (("--csv", "CSV", "--model", "/nonexistent.json"), ("error: --model "
     "'/nonexistent.json' is not a file")),
    (("--csv", "CSV", "--reference", "rpm"), ("error: --reference must be one of the "
     "metrics the fleet shares, ['temp_c', 'vib_mms']. Got 'rpm' instead.")),
    (("--csv", "CSV", "--model", "CSV", "--groups", "3", "--reference", "rpm"),
     ("error: --groups 3, --reference rpm set how groups are fitted, but --model assigns")),
    (("--csv", "CSV", "--model", "CSV", "--seed", "4"), "error: --seed 4 set how groups"),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path: Path, args, message) -> None:
    """Check each refusal is one 'error:' line naming the option and the value, exit 2."""
    f = tmp_path / "two.csv"
    pd.concat([device("plain", 0).assign(device_id="a"), device("hot", 1).assign(
        device_id="b")]).rename_axis("time").to_csv(f)
    res = groups(*[str(f) if a == "CSV" else a for a in args])
    assert res.exit_code == 2, res.stdout
    assert message in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert res.stdout == ""


def test_one_device_and_a_dead_device_are_refused(tmp_path: Path) -> None:
    """Check a file of one device, and a device with no finite reading, are named."""
    one = tmp_path / "one.csv"
    device("plain", 0).rename_axis("time").to_csv(one)
    res = groups("--csv", str(one))
    assert res.exit_code == 2
    assert "at least 2 device(s) to group. Got 1." in res.stderr
    dead = tmp_path / "dead.csv"
    frame = pd.concat([device("plain", 0).assign(device_id="a"),
                       device("plain", 1).assign(device_id="b", temp_c=np.nan, vib_mms=np.nan)])
    frame.rename_axis("time").to_csv(dead)
    res = groups("--csv", str(dead))
    assert res.exit_code == 2
    assert "Device 'b' has no finite reading in any numeric column" in res.stderr
    assert len(IDX) == 288


def test_a_long_file_without_a_value_column_is_refused(tmp_path: Path) -> None:
    """Check that a long file whose reading column is not named 'value' is refused in one
    line naming its columns (it was read as wide, every metric averaged into one)."""
    rows = [f"{d},{t.isoformat()},{m},{v}" for i, d in enumerate(("a", "b", "c"))
            for t, r in device("plain", i).iterrows() for m, v in r.items()]
    f = tmp_path / "long.csv"
    f.write_text("device_id,time,metric,reading\n" + "\n".join(rows) + "\n")
    res = groups("--csv", str(f))
    assert res.exit_code == 2, res.stdout
    assert res.stderr.count("\n") == 1, res.stderr
    assert ("has a 'metric' column but no 'value' column (columns: ['device_id', 'time', "
            "'metric', 'reading'])") in res.stderr
    assert res.stdout == ""


def test_a_wide_file_repeating_many_times_of_a_device_is_refused(tmp_path: Path) -> None:
    """Check that a wide file where a device holds two readings of a metric at many of its
    times (a long file misread, or two devices under one id) is refused, not averaged, and
    that one repeated time (a logger's repeat, as NAB's AWS files repeat the hour a clock
    went back) is averaged with a note."""
    frame = pd.concat([device("plain", 0).assign(device_id="a"),
                       device("hot", 1).assign(device_id="b")])
    f = tmp_path / "twice.csv"
    pd.concat([frame, frame.iloc[[5]].assign(temp_c=99.0)]).rename_axis("time").to_csv(f)
    res = groups("--csv", str(f))
    assert res.exit_code == 0, res.stderr
    assert res.stderr == (f"note: --csv {str(f)!r}: device 'a' has more than one reading of "
                          "a metric at 1 time(s) (the first 2024-01-01T01:15:00+00:00); their "
                          "mean is used\n")
    pd.concat([frame, frame.iloc[:40].assign(temp_c=99.0)]).rename_axis("time").to_csv(f)
    res = groups("--csv", str(f))
    assert res.exit_code == 2, res.stdout
    assert res.stderr.count("\n") == 1, res.stderr
    assert "device 'a' has more than one reading of a metric at 40 of its" in res.stderr


def test_the_readme_folder_of_nab_aws_files_is_grouped(shared_data: Path) -> None:
    """Check the README's first command: NAB's realAWSCloudwatch folder, whose two files
    repeat 2014-03-09T03:00 (it was refused)."""
    folder = shared_data / "nab" / "data" / "realAWSCloudwatch"
    res = groups("--csv", str(folder), "--json")
    assert res.exit_code == 0, res.stderr
    assert res.stderr.count("their mean is used") == 2, res.stderr


@pytest.mark.parametrize("devices", [",", " , "])
def test_a_devices_list_naming_no_device_says_so(gateway, devices: str) -> None:
    """Check ``--devices ','`` is refused as naming no device: it fell through to 'needs
    at least 2 devices ... Got 0', as though the store held none."""
    res = groups("--data", str(gateway), "--devices", devices)
    assert res.exit_code == 2, res.stdout
    assert f"--devices {devices!r} names no device" in res.stderr, res.stderr
