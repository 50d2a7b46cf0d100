"""``edgewise quality`` on the files a hunter found it misread: a ``date`` and a ``time``
column, ids that look like numbers, one bad cell among decimal commas, names that differ
only by spaces, plot names that clash, and figures JSON cannot hold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgewise.bench.csv import detect_table
from edgewise.cli import app, load_commands
from edgewise.errors import QualityError
from edgewise.tables import read_table, read_tables, time_ns

load_commands()


def _quality(*args: str):
    return CliRunner(mix_stderr=False).invoke(app, ["quality", *args])


def _report(path: Path, *args: str) -> dict:
    res = _quality(str(path), "--json", *args)
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout, parse_constant=_no_constant)["devices"]


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} is no JSON")


def test_a_date_and_a_time_column_make_the_time_together(tmp_path: Path) -> None:
    """Check ``date,time,temp`` reads as one time a minute over two days, as ``detect``
    reads it: no conflicts (the date alone made every reading of a day one time) and the
    time column is no metric, left out without a note."""
    t = pd.date_range("2024-01-01", periods=2 * 1440, freq="min")
    pd.DataFrame({"date": t.strftime("%Y-%m-%d"), "time": t.strftime("%H:%M:%S"),
                  "temp": 20 + np.arange(len(t)) % 5 / 10}).to_csv(tmp_path / "d.csv",
                                                                   index=False)
    res = _quality(str(tmp_path / "d.csv"), "--json")
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""
    metrics = json.loads(res.stdout)["devices"]["device"]["metrics"]
    assert list(metrics) == ["temp"]
    temp = metrics["temp"]
    assert (temp["readings"], temp["conflicts"], temp["duplicates"]) == (2880, 0, 0)
    assert (temp["interval_s"], temp["completeness"], temp["gaps"]) == (60.0, 1.0, 0)


def test_the_joined_time_names_a_row_with_either_cell_empty() -> None:
    """Check the shared join leaves a row with an empty date or time empty, so the time
    reader names it, never reads ``00:02:00`` alone as a time of today."""
    from edgewise.tables import date_and_clock

    df = pd.DataFrame({"Date": ["2024-01-01", None, "2024-01-01"],
                       "Time": ["00:00:00", "00:01:00", "  "]})
    both = date_and_clock(df, "Date", "Time")
    assert both.name == "Date Time" and both.iloc[0] == "2024-01-01 00:00:00"
    assert both.iloc[1:].isna().all()
    with pytest.raises(QualityError, match="'Date Time' has an empty cell in row 2"):
        time_ns(both)


def test_device_and_metric_ids_are_read_as_written(tmp_path: Path) -> None:
    """Check ``007`` and ``7``, two 17-digit ids, ``NA`` and ``1.0``/``1`` are each a
    device of their own (they were merged as numbers, their readings conflicts), and
    metrics ``1``, ``01`` and ``1.0`` three metrics."""
    (tmp_path / "ids.csv").write_text(
        "device_id,metric,ts,value\n007,temp,1700000000,20\n007,temp,1700000060,20.1\n"
        "7,temp,1700000000,30\n7,temp,1700000060,30.1\n")
    devices = _report(tmp_path / "ids.csv")
    assert sorted(devices) == ["007", "7"]
    assert all(d["summary"]["conflicts"] == 0 for d in devices.values())
    (tmp_path / "wide.csv").write_text(
        "device_id,ts,temp\n12345678901234567,1700000000,20\n12345678901234568,1700000000,30\n"
        "NA,1700000000,20\nNA,1700000060,21\n1.0,1700000000,30\n1,1700000060,31\n")
    devices = _report(tmp_path / "wide.csv")
    assert sorted(devices) == ["1", "1.0", "12345678901234567", "12345678901234568", "NA"]
    assert devices["NA"]["readings"] == 2
    (tmp_path / "m.csv").write_text("device_id,metric,ts,value\npump-1,1,1700000000,20\n"
                                    "pump-1,01,1700000060,99\npump-1,1.0,1700000120,21\n")
    assert sorted(_report(tmp_path / "m.csv")["pump-1"]["metrics"]) == ["01", "1", "1.0"]


@pytest.mark.parametrize(("text", "column", "what"), [
    ("device_id,ts,temp\np1,1700000000,20\n,1700000060,30\n", "device_id", "device id"),
    ("dev,ts,temp\np1,1700000000,20\n  ,1700000060,30\n", "dev", "device id"),
    ("device_id,metric,ts,value\np1,temp,1700000000,20\np1,,1700000060,30\n", "metric",
     "metric"),
])
def test_an_empty_id_is_refused_in_one_line(tmp_path: Path, text: str, column: str,
                                            what: str) -> None:
    """Check a blank device id (it was the device ``nan``) or metric is refused with one
    line naming the row and the column, exit 2."""
    f = tmp_path / "e.csv"
    f.write_text(text)
    args = ["--device-column", column] if column == "dev" else []
    res = _quality(str(f), *args)
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr == (f"error: {str(f)!r} row 2 has no {what} in column {column!r} (the "
                          f"cell is empty); write the {what} in every row of that column.\n")


def test_one_bad_cell_among_decimal_commas_is_the_only_invalid_one(tmp_path: Path) -> None:
    """Check ``ERR`` among ``1,5``-style cells of a semicolon file is one invalid reading
    (every cell of its column was: validity 0), in a long and in a wide file; that
    ``detect`` names the bad cell; and that a comma file reads no decimal comma."""
    (tmp_path / "long.csv").write_text(
        "device_id;metric;ts;value\np1;temp;2024-01-01 00:00:00;1,5\n"
        "p1;temp;2024-01-01 00:01:00;1,6\np1;temp;2024-01-01 00:02:00;ERR\n"
        "p1;temp;2024-01-01 00:03:00;1,7\n")
    temp = _report(tmp_path / "long.csv")["p1"]["metrics"]["temp"]
    assert (temp["validity"], temp["invalid"]) == (0.75, 1)
    wide = tmp_path / "wide.csv"
    wide.write_text("timestamp;temp;druck\n2024-01-01 00:00:00;1,5;2,1\n"
                    "2024-01-01 00:01:00;1,6;2,2\n2024-01-01 00:02:00;ERR;2,3\n"
                    "2024-01-01 00:03:00;1,7;2,4\n")
    metrics = _report(wide)["device"]["metrics"]
    assert (metrics["temp"]["validity"], metrics["druck"]["validity"]) == (0.75, 1.0)
    numbers, cells = read_tables(wide)
    assert numbers["temp"].tolist() == [1.5, 1.6, "ERR", 1.7]
    assert cells["temp"].tolist() == ["1.5", "1.6", "ERR", "1.7"]
    with pytest.raises(QualityError, match="Column 'temp' must hold numbers; row 3 has 'ERR'"):
        detect_table(numbers)
    (tmp_path / "c.csv").write_text('ts,temp\n1700000000,"1,5"\n1700000060,2\n1700000120,3\n')
    temp = _report(tmp_path / "c.csv")["device"]["metrics"]["temp"]
    assert (temp["readings"], temp["invalid"]) == (3, 1)


def test_names_that_differ_only_by_spaces_are_refused(tmp_path: Path) -> None:
    """Check ``temp`` and ``temp `` in one header are refused in one line naming the
    column, by the shared reader (``detect`` raised a TypeError) and by ``quality`` (an
    AttributeError)."""
    f = tmp_path / "dup.csv"
    f.write_text("ts,temp,temp \n1700000000,1,2\n1700000060,3,4\n")
    why = (f"File {str(f)!r} has two columns named 'temp' (columns 2 and 3 of the header: "
           "'temp' and 'temp '; spaces around a name do not count); rename one so that "
           "every column name is unique.")
    for read in (read_table, read_tables):
        with pytest.raises(QualityError) as err:
            read(f)
        assert str(err.value) == why
    res = _quality(str(f))
    assert res.exit_code == 2 and res.stderr == f"error: {why}\n"


def _spiky(n: int = 120) -> np.ndarray:
    v = 20 + np.random.default_rng(0).normal(0, 0.1, n)
    v[60] = 80.0
    return v


@pytest.mark.filterwarnings("ignore:Glyph .* missing from font")  # CJK in a plot's title
def test_plots_of_names_that_clash_get_files_of_their_own(tmp_path: Path) -> None:
    """Check metrics ``温度`` and ``湿度``, ``Druck (bar)`` and ``Druck [bar]``, and
    devices ``a/b`` and ``a_b`` get a plot each (they overwrote one file), a plain name
    keeps its plain file name."""
    ts = 1_700_000_000 + 60 * np.arange(120)
    wide = tmp_path / "w.csv"
    pd.DataFrame({"ts": ts, "温度": _spiky(), "湿度": _spiky(), "Druck (bar)": _spiky(),
                  "Druck [bar]": _spiky(), "temp": _spiky()}).to_csv(wide, index=False)
    res = _quality(str(wide), "--plots", str(tmp_path / "p"), "--json")
    assert res.exit_code == 0, res.stderr
    plots = json.loads(res.stdout)["plots"]
    assert len(plots) == 5 and len({p.lower() for p in plots}) == 5
    assert all(Path(p).read_bytes()[:4] == b"\x89PNG" for p in plots)
    assert str(tmp_path / "p" / "device__temp.png") in plots
    long = tmp_path / "l.csv"
    pd.concat([pd.DataFrame({"device_id": d, "metric": "t", "ts": ts, "value": _spiky()})
               for d in ("a/b", "a_b")]).to_csv(long, index=False)
    res = _quality(str(long), "--plots", str(tmp_path / "q"), "--json")
    assert res.exit_code == 0, res.stderr
    plots = json.loads(res.stdout)["plots"]
    assert len(set(plots)) == 2 and len(list((tmp_path / "q").iterdir())) == 2


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on the overflow, as meant
def test_json_holds_no_nan(tmp_path: Path) -> None:
    """Check drift between readings of +-1.5e308 (a difference past the largest float) is
    ``null`` in ``--json``, not ``NaN``, which is no JSON."""
    ts = 1_700_000_000 + 60 * np.arange(40)
    v = np.where(np.arange(40) < 20, -1.5e308, 1.5e308)
    pd.DataFrame({"ts": ts, "v": v}).to_csv(tmp_path / "h.csv", index=False)
    res = _quality(str(tmp_path / "h.csv"), "--json")
    assert res.exit_code == 0, res.stderr
    assert "NaN" not in res.stdout and "Infinity" not in res.stdout
    json.loads(res.stdout, parse_constant=_no_constant)


def test_json_ready_turns_every_non_finite_float_into_null() -> None:
    """Check the CLI's JSON guard: NaN and infinities anywhere, numpy ones too, are null."""
    from edgewise.cli.quality import _json_ready

    got = _json_ready({"a": [float("nan"), np.float64("inf"), (np.int64(2), -np.inf)],
                       "b": {"c": 1.5, "d": None, "e": "x"}})
    assert got == {"a": [None, None, [2, None]], "b": {"c": 1.5, "d": None, "e": "x"}}
    assert type(got["a"][2][0]) is int
    json.dumps(got, allow_nan=False)


def test_the_table_shows_out_of_order_readings(tmp_path: Path) -> None:
    """Check the text table has the out-of-order count ``--json`` has, in a column of its
    own, aligned with its header."""
    ts = 1_700_000_000 + 60 * np.arange(50)
    ts[[20, 21]] = ts[[21, 20]]
    pd.DataFrame({"ts": ts, "temp": 20 + np.arange(50) % 3}).to_csv(tmp_path / "o.csv",
                                                                   index=False)
    res = _quality(str(tmp_path / "o.csv"))
    assert res.exit_code == 0, res.stderr
    head, row = res.stdout.splitlines()[1:3]
    assert head.split()[6] == "ooo" and row.split()[6] == "1"
    ends = [[m.end() for m in re.finditer(r"\S+", line)] for line in (head, row)]
    assert ends[0][1:] == ends[1][1:len(ends[0])]  # right-aligned under its name


def test_plot_names_never_repeat() -> None:
    """Check names that clash without a changed character (``a__b``+``c``, ``a``+``b__c``)
    or only in case, or after the change (``温度``, ``湿度``), or past the length kept, each
    get a name of their own; a plain name stays as it was."""
    from edgewise.cli.quality import _plot_name

    taken: set[str] = set()
    pairs = [("a__b", "c"), ("a", "b__c"), ("P", "t"), ("p", "t"), ("温度", "x"),
             ("湿度", "x"), ("d" * 300, "t"), ("d" * 300, "u")]
    names = [_plot_name(d, m, taken) for d, m in pairs]
    assert names[0] == "a__b__c.png" and names[2] == "P__t.png"
    assert len({n.lower() for n in names}) == len(pairs)
    assert max(map(len, names)) <= 120


def test_a_named_date_column_is_joined_to_its_time_of_day(tmp_path: Path) -> None:
    """Check ``--time-column date`` on a date,time file reads one time per reading, as
    ``detect`` does (the date alone made every reading of a day a conflict)."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    f = tmp_path / "dt.csv"
    f.write_text("date,time,temp\n" + "".join(
        f"2024-01-01,00:{i:02d}:00,{20 + i % 3}\n" for i in range(30)))
    res = CliRunner(mix_stderr=False).invoke(
        app, ["quality", str(f), "--time-column", "date", "--json"])
    assert res.exit_code == 0, res.stderr
    m = json.loads(res.stdout)["devices"]["device"]["metrics"]
    assert list(m) == ["temp"] and m["temp"]["conflicts"] == 0
