"""PNG plots of a metric's flagged issues (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_issues"]

_STYLE = {"invalid": ("x", "tab:red"), "spike": ("o", "tab:orange"), "stuck": ("s", "tab:purple")}


def plot_issues(device: str, metric: str, issues: dict[str, Any], path: str | Path) -> Path:
    """Draw the series with its invalid, spike and stuck readings and its gaps; save as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = issues["ts"].astype("datetime64[ns]")
    v = issues["values"]
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.plot(ts, v, lw=0.8, color="tab:blue", label=metric)
    for name, mask in issues["flags"].items():
        if np.any(mask):
            marker, color = _STYLE[name]
            ax.scatter(ts[mask], np.where(np.isfinite(v[mask]), v[mask], np.nanmedian(v)),
                       marker=marker, color=color, s=18, zorder=3,
                       label=f"{name} ({int(mask.sum())})")
    for a, b in issues["gaps"]:
        ax.axvspan(np.datetime64(a, "ns"), np.datetime64(b, "ns"), color="grey", alpha=0.2)
    ax.set_title(f"{device} / {metric}: flagged readings")
    ax.legend(loc="best", fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
