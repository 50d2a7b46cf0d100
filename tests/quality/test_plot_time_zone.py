"""The quality plot's time axis in an IANA zone, across daylight saving changes.

The dashboard asked for the plot in one UTC offset, the browser's now (tz_offset_min),
and the plot shifted every reading by it: across a DST change the readings on one side
were drawn an hour off the dashboard's charts beside it (Berlin, 2024-03-31 01:00Z: the
charts read 03:00, the plot 02:00 in winter's offset). The plot now takes the zone (tz),
draws each reading at its instant and reads the axis in the zone, each at its own offset.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import matplotlib.dates as mdates
import matplotlib.figure
import numpy as np
import pytest

from edgewise.quality.plot import plot_issues, time_zone
from edgewise.quality.report import metric_issues

#: the clock at the end of a tick label: "31 03:00", "03-31 03" (an hour step), "03:00:20"
CLOCK = re.compile(r"(?:^|\s)(\d\d)(:\d\d)?(:\d\d)?$")


def axis_reads(fig: matplotlib.figure.Figure, ts_ns: np.ndarray) -> list[tuple[datetime, str]]:
    """Each x tick of ``fig`` inside the series: the instant it stands at (from where the
    line draws the readings ``ts_ns``) and its label, as a reader of the PNG reads them."""
    fig.canvas.draw()
    ax = fig.axes[0]
    x = np.asarray(ax.get_lines()[0].get_xdata())
    x = mdates.date2num(x) if np.issubdtype(x.dtype, np.datetime64) else x.astype(float)
    seconds = np.asarray(ts_ns, dtype=np.int64) / 1e9
    out = []
    for loc, text in zip(ax.get_xticks(), ax.get_xticklabels(), strict=True):
        at = float(np.interp(loc, x, seconds, left=np.nan, right=np.nan))
        if np.isfinite(at):
            out.append((datetime.fromtimestamp(round(at), UTC), text.get_text()))
    return out


def assert_reads_in(reads: list[tuple[datetime, str]], zone: str) -> None:
    """Every label is the clock of ``zone`` at its tick's instant (as the dashboard, the
    browser's local clock, shows that instant)."""
    assert len(reads) >= 3, reads
    for at, label in reads:
        m = CLOCK.search(label)
        assert m, (at, label)
        local = at.astimezone(ZoneInfo(zone))
        assert m.group(1) == f"{local:%H}" and m.group(2) in (None, f":{local:%M}"), (
            at.isoformat(), label, local.isoformat())


def _issues(start: str, n: int = 12, step_min: int = 20) -> tuple[np.ndarray, dict[str, Any]]:
    ts = np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(step_min, "m")
    ts = ts.astype(np.int64)
    v = 20.0 + np.arange(n) % 3 / 10
    v[n // 2] = 500.0  # a spike: something flagged
    return ts, metric_issues(ts, v)


def _drawn(monkeypatch: pytest.MonkeyPatch) -> list[matplotlib.figure.Figure]:
    """The figures plot_issues saves, kept open for reading."""
    import matplotlib.pyplot as plt

    kept: list[matplotlib.figure.Figure] = []
    monkeypatch.setattr(plt, "close", lambda fig=None: kept.append(fig))
    return kept


@pytest.mark.parametrize(("zone", "start", "offsets"), [
    ("Europe/Berlin", "2024-03-31T00:00", "UTC+01:00/UTC+02:00"),     # spring forward
    ("Europe/Berlin", "2024-10-27T00:00", "UTC+01:00/UTC+02:00"),     # the hour repeated
    ("America/New_York", "2024-03-10T05:00", "UTC-05:00/UTC-04:00"),
    ("Asia/Kolkata", "2024-03-31T00:00", "UTC+05:30"),                # no DST, half an hour
])
def test_axis_reads_the_zones_clock_on_both_sides_of_a_dst_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone: str, start: str,
        offsets: str) -> None:
    ts, issues = _issues(start)
    kept = _drawn(monkeypatch)
    plot_issues("pump-1", "temp", issues, tmp_path / "p.png", tz=zone)
    fig = kept[-1]
    assert fig.axes[0].get_xlabel() == f"time ({zone}, {offsets})"
    assert_reads_in(axis_reads(fig, ts), zone)
    ticks = list(fig.axes[0].get_xticks())
    assert ticks == sorted(set(ticks)), f"a tick twice (spring's 02:00 is 03:00): {ticks}"
    x = mdates.date2num(np.asarray(fig.axes[0].get_lines()[0].get_xdata()))
    assert np.all(np.diff(x) > 0), "the readings are drawn in their order (autumn's hour once)"


def test_utc_zone_is_named_utc_and_fixed_offsets_still_taken(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ts, issues = _issues("2024-03-31T00:00")
    kept = _drawn(monkeypatch)
    plot_issues("pump-1", "temp", issues, tmp_path / "a.png", tz="UTC")
    assert kept[-1].axes[0].get_xlabel() == "time (UTC)"
    assert_reads_in(axis_reads(kept[-1], ts), "UTC")
    plot_issues("pump-1", "temp", issues, tmp_path / "b.png", tz_offset_min=330)
    assert kept[-1].axes[0].get_xlabel() == "time (UTC+05:30)"
    assert_reads_in(axis_reads(kept[-1], ts), "Asia/Kolkata")


@pytest.mark.parametrize("bad", ["Mars/Olympus", "", "../etc/passwd", "Europe/Berlin/"])
def test_a_zone_not_known_is_a_value_error_naming_it(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"time zone {bad!r} is not an IANA zone")):
        time_zone(bad)


def test_cli_plots_read_in_the_zone_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``edgewise quality --plots`` drew in UTC only, while the dashboard's plots read in the
    browser's zone: ``--tz`` sets it; a zone not known, or --tz without --plots, is one
    line before anything is read."""
    from typer.testing import CliRunner

    from edgewise.cli import app, load_commands

    load_commands()
    ts, _ = _issues("2024-03-31T00:00")
    v = 20.0 + np.arange(len(ts)) % 3 / 10
    v[len(ts) // 2] = 500.0
    f = tmp_path / "r.csv"
    f.write_text("ts,temp\n" + "".join(f"{t / 1e9:.0f},{x}\n" for t, x in zip(ts, v, strict=True)))
    kept = _drawn(monkeypatch)
    run = CliRunner(mix_stderr=False).invoke
    res = run(app, ["quality", str(f), "--plots", str(tmp_path / "p"), "--tz", "Europe/Berlin"])
    assert res.exit_code == 0, (res.stderr, res.exception)
    assert kept[-1].axes[0].get_xlabel() == "time (Europe/Berlin, UTC+01:00/UTC+02:00)"
    assert_reads_in(axis_reads(kept[-1], ts), "Europe/Berlin")
    for args, said in ((["--plots", str(tmp_path / "q"), "--tz", "Mars/Olympus"],
                        "--tz 'Mars/Olympus' is no IANA time zone"),
                       (["--tz", "Europe/Berlin"], "give --plots DIR with it")):
        res = run(app, ["quality", str(f), *args])
        assert res.exit_code == 2 and said in res.stderr, (res.stderr, res.exception)
    assert not (tmp_path / "q").exists()
