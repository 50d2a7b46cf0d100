"""Bench honesty: `bench edge` says which Python figure is one at a time and which batch.

Before: EWZScore's "Python ns per reading" row (2,496 ns in edge.md) was the one-at-a-time
figure (score_one + learn_one) without saying so, and its batch figure (Numba score_many,
16.4 ns, under C's 19.5 ns) was in the JSON only.
"""

from __future__ import annotations

from edgewise.cli.bench_edge import _ROWS


def test_every_python_per_reading_row_says_how_it_was_called() -> None:
    """Check each Python ns-per-reading row names its path: one at a time or batch."""
    python_rows = [(part, key, label) for part, key, label, _ in _ROWS
                   if key in ("python_ns_per_reading", "python_batch_ns_per_reading")]
    assert python_rows
    for part, key, label in python_rows:
        wanted = "(score_one+learn_one)" if key == "python_ns_per_reading" else "score_many)"
        assert wanted in label, (part, label)


def test_ewzscore_has_its_batch_row_beside_the_one_at_a_time_row() -> None:
    """Check EWZScore, as the default detector, shows both Python figures."""
    for part in ("detector", "detector_ewzscore"):
        keys = [key for p, key, _, _ in _ROWS if p == part]
        assert "python_ns_per_reading" in keys and "python_batch_ns_per_reading" in keys
