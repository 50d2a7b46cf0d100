"""PNG plots of a metric's flagged issues (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from datetime import timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_issues", "time_zone", "zone_name"]

_STYLE = {"invalid": ("x", "tab:red"), "spike": ("o", "tab:orange"), "stuck": ("s", "tab:purple")}

#: Largest magnitude drawn where it lies: past about 1e308 / 10 matplotlib's axis
#: arithmetic overflows ('arange: cannot compute length'); a finite reading beyond it is
#: drawn at the plot's edge.
DRAWABLE = 1e300


def y_limits(values: np.ndarray, flags: dict[str, np.ndarray]) -> tuple[float, float]:
    """The y-range of a plot: the finite range of the ordinary readings (neither invalid
    nor spikes, no larger than :data:`DRAWABLE`) and a margin of 5 %; of every finite,
    drawable reading when none is ordinary. A reading outside it is drawn at its edge, so
    that one extreme reading (a sensor's 1.7e308) neither flattens the series nor breaks
    matplotlib.

    >>> v = np.array([20.0, 20.2, 1.7e308, 20.1, float("nan")])
    >>> spike = np.array([False, False, True, False, False])
    >>> [round(x, 2) for x in y_limits(v, {"spike": spike})]
    [19.99, 20.21]
    """
    v = np.asarray(values, dtype=float)
    drawable = np.isfinite(v) & (np.abs(v) <= DRAWABLE)
    ordinary = drawable.copy()
    for name in ("invalid", "spike"):
        if name in flags:
            ordinary &= ~np.asarray(flags[name], dtype=bool)
    pick = v[ordinary] if ordinary.any() else v[drawable]
    if not len(pick):
        return -1.0, 1.0
    lo, hi = float(pick.min()), float(pick.max())
    pad = 0.05 * (hi - lo) if hi > lo else max(0.05 * abs(hi), 1e-9)
    return lo - pad, hi + pad


def zone_name(offset_min: int) -> str:
    """``"UTC"``, or the offset ``offset_min`` minutes east of UTC as ``"UTC+05:30"``.

    >>> zone_name(0), zone_name(330), zone_name(-210)
    ('UTC', 'UTC+05:30', 'UTC-03:30')
    """
    if not offset_min:
        return "UTC"
    sign = "-" if offset_min < 0 else "+"
    hours, minutes = divmod(abs(offset_min), 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def time_zone(tz: str) -> tzinfo:
    """The IANA time zone named ``tz`` (``"Europe/Berlin"``), with its daylight saving time.

    >>> time_zone("America/New_York").key
    'America/New_York'
    >>> time_zone("Mars/Olympus")
    Traceback (most recent call last):
    ...
    ValueError: time zone 'Mars/Olympus' is not an IANA zone known here ...
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(tz)
    except (ValueError, ZoneInfoNotFoundError):  # a path ('../x', '') is a ValueError
        shown = tz if len(tz) <= 64 else tz[:61] + "..."
        raise ValueError(f"time zone {shown!r} is not an IANA zone known here (the server's "
                         "time zone database); give one such as 'Europe/Berlin' or 'UTC', "
                         "or a fixed offset in minutes") from None


def _zone_label(zone: tzinfo, key: str, ts: np.ndarray) -> str:
    """``"UTC"``, or ``key`` and the offsets it has at the times ``ts`` (UTC nanoseconds):
    ``"Europe/Berlin, UTC+01:00/UTC+02:00"`` for a range across a DST change."""
    import pandas as pd

    if key in ("UTC", "Etc/UTC"):  # as the dashboard names it
        return "UTC"
    utc = pd.DatetimeIndex(np.asarray(ts, dtype="datetime64[ns]"), tz="UTC")
    wall = utc.tz_convert(zone).tz_localize(None)
    minutes = (wall - utc.tz_localize(None)) // pd.Timedelta(minutes=1)
    offsets = sorted({int(m) for m in np.unique(np.asarray(minutes))})
    if not offsets:  # nothing drawn: the offset of now
        offsets = [int(pd.Timestamp.now(tz=zone).utcoffset() // timedelta(minutes=1))]
    return f"{key}, " + "/".join(zone_name(m) if m else "UTC+00:00" for m in offsets)


def plot_issues(device: str, metric: str, issues: dict[str, Any], path: str | Path,
                tz_offset_min: int = 0, tz: str | None = None) -> Path:
    """Draw the series with its invalid, spike and stuck readings and its gaps; save as PNG.

    The time axis reads in the IANA zone ``tz`` (the dashboard passes the browser's, so the
    plot reads as the charts beside it do: each reading at its own offset, across a daylight
    saving change too), else in the fixed offset ``tz_offset_min`` minutes east of UTC (330
    for India), else in UTC; named under the axis: ``time (UTC)``, ``time (UTC+05:30)``,
    ``time (Europe/Berlin, UTC+01:00/UTC+02:00)`` (the offsets in the range drawn). The
    readings are drawn at their instants, so the hour a clock repeats in autumn is drawn
    once, in order. A ``tz`` that is no known zone, or an offset of a day or more, is a
    ValueError.

    ``issues`` is what :func:`~edgewise.quality.report.metric_issues` returns. The y-axis
    spans the ordinary readings (:func:`y_limits`): a reading beyond it (a spike far out,
    or one near the float maximum) is drawn at the edge, marked with a triangle and
    counted as ``off scale`` in the legend with its value or range.

    >>> import tempfile
    >>> from edgewise.quality.report import metric_issues
    >>> v = np.r_[20.0 + np.arange(60) % 3 / 10]
    >>> v[30] = 1.7e308
    >>> issues = metric_issues(np.arange(60) * 10**9, v)
    >>> with tempfile.TemporaryDirectory() as d:
    ...     plot_issues("pump-1", "temp", issues, Path(d) / "t.png").read_bytes()[:4]
    b'\x89PNG'
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    class _OnceEach(mdates.AutoDateLocator):
        """Ticks on the zone's round times, each once: the local 02:00 that a spring change
        skips is 03:00's instant, and was a second, overdrawn label there."""

        def __call__(self) -> Any:
            return np.unique(super().__call__())

    ts = issues["ts"].astype("datetime64[ns]")
    zone: tzinfo
    if tz is not None:
        zone = time_zone(tz)
        axis_name = _zone_label(zone, tz, ts)
    else:
        offset = int(tz_offset_min)
        if abs(offset) >= 24 * 60:
            raise ValueError(f"tz_offset_min {offset} is no UTC offset: it must be less than "
                             "a day (1440 minutes) either way; real ones are -720 to 840")
        zone = timezone(timedelta(minutes=offset))
        axis_name = zone_name(offset)
    v = np.asarray(issues["values"], dtype=float)
    lo, hi = y_limits(v, issues["flags"])
    finite = np.isfinite(v)
    off = finite & ((v < lo) | (v > hi))
    # a reading that is no number is a break in the line (marked as invalid below)
    shown = np.where(finite, np.clip(v, lo, hi), np.nan)
    middle = float(np.median(v[finite & ~off])) if (finite & ~off).any() else (lo + hi) / 2
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    try:
        ax.plot(ts, shown, lw=0.8, color="tab:blue", label=metric)
        for name, mask in issues["flags"].items():
            if np.any(mask):
                marker, color = _STYLE[name]
                ax.scatter(ts[mask], np.where(finite[mask], shown[mask], middle),
                           marker=marker, color=color, s=18, zorder=3,
                           label=f"{name} ({int(mask.sum())})")
        for side, marker in ((finite & (v > hi), "^"), (finite & (v < lo), "v")):
            if side.any():  # at the edge, with the values in the legend
                out = v[side]
                span = (f"{out.min():.4g}" if out.min() == out.max()
                        else f"{out.min():.4g} to {out.max():.4g}")
                ax.scatter(ts[side], shown[side], marker=marker, color="black", s=30,
                           zorder=4, clip_on=False,
                           label=f"off scale ({int(side.sum())}): {span}")
        for a, b in issues["gaps"]:
            ax.axvspan(np.datetime64(a, "ns"), np.datetime64(b, "ns"), color="grey", alpha=0.2)
        # instants on the axis, read in the zone: ticks on its round times, labels its clock
        locator = _OnceEach(tz=zone)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.AutoDateFormatter(locator, tz=zone))
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"time ({axis_name})", fontsize=8)
        ax.set_title(f"{device} / {metric}: flagged readings")
        ax.legend(loc="best", fontsize=7)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
