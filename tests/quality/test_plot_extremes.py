"""Quality plots of a series with a finite reading near the float maximum: matplotlib's
axis arithmetic overflowed ('arange: cannot compute length') and ``edgewise quality
--plots`` died with a traceback. The y-axis now spans the ordinary readings and the
extreme ones are drawn at its edge; a plot that still fails is one ``error:`` line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import edgewise.quality.plot as plot
from edgewise.cli import app, load_commands
from edgewise.quality.report import metric_issues

load_commands()


def _values(extremes: dict[int, float]) -> np.ndarray:
    v = 20.0 + np.arange(60) % 3 / 10
    for i, x in extremes.items():
        v[i] = x
    return v


def _csv(path: Path, extremes: dict[int, float]) -> Path:
    v = _values(extremes)
    path.write_text("ts,temp\n" + "".join(f"{1700000000 + i},{float(x)!r}\n"
                                          for i, x in enumerate(v)))
    return path


def test_readings_near_the_float_maximum_are_drawn_at_the_edge(tmp_path: Path) -> None:
    """Check a PNG comes out and its y-range is that of the ordinary readings."""
    issues = metric_issues(np.arange(60) * 10**9, _values({30: 1.7e308, 40: -1.7e308}))
    assert issues["flags"]["spike"].sum() == 2
    lo, hi = plot.y_limits(issues["values"], issues["flags"])
    assert 19.9 < lo < 20.0 and 20.2 < hi < 20.3
    path = plot.plot_issues("pump-1", "temp", issues, tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_cli_plots_a_reading_near_the_float_maximum(tmp_path: Path) -> None:
    f = _csv(tmp_path / "r.csv", {30: 1.7e308})
    res = CliRunner(mix_stderr=False).invoke(app, ["quality", str(f), "--plots",
                                                   str(tmp_path / "plots")])
    assert res.exit_code == 0, (res.stderr, res.exception)
    assert (tmp_path / "plots" / "device__temp.png").read_bytes()[:4] == b"\x89PNG"


def test_a_plot_that_cannot_be_drawn_is_one_error_line(tmp_path: Path, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise ValueError("arange: cannot compute length")

    monkeypatch.setattr(plot, "plot_issues", broken)
    f = _csv(tmp_path / "r.csv", {30: 500.0})
    res = CliRunner(mix_stderr=False).invoke(app, ["quality", str(f), "--plots",
                                                   str(tmp_path / "plots")])
    assert res.exit_code == 2, (res.stderr, res.exception)
    assert res.stderr == ("error: the plot of device 'device' metric 'temp' could not be "
                          "drawn (ValueError: arange: cannot compute length); run without "
                          "--plots for the report\n")
