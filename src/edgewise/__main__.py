"""``python -m edgewise``."""

from __future__ import annotations

from edgewise.cli import main

main()
