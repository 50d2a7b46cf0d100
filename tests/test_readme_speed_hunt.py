"""M6: the README's detector speeds are those of the newest `detect-speed.md` run."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _newest_run() -> dict[str, tuple[str, str]]:
    """detector -> (replay M points/s, x River) of the first (newest) section's table."""
    text = (REPO / "benchmarks" / "results" / "detect-speed.md").read_text()
    section = text.split("\n## ")[1]  # sections are newest first
    rows = {}
    for m in re.finditer(r"^\| `([\w-]+)`[^|]*\| \**([\d.]+)\** \([^|]*\| \**(\d+)\** \(",
                         section, re.M):
        rows[m[1]] = (m[2], m[3])
    return rows


def test_readme_quotes_the_newest_detect_speed_run() -> None:
    rows = _newest_run()
    readme = (REPO / "README.md").read_text().splitlines()
    for name in ("context-likelihood", "context-art"):
        replay, river = rows[name]
        line = next(ln for ln in readme if ln.startswith(f"| `{name}`"))
        assert f"{replay} M points/s" in line, (name, replay)
        assert f"{river}x River" in line, (name, river)
