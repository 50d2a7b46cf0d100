"""The streaming cleaner on finite readings at the ends of the floats (+-1.7e308, 1e308,
5e-324, 0, alternating signs): it never raises, flags the extreme ones a normal window
judges, and still judges the normal readings after them. Before, a change between two
such readings (inf) or a hold bin of one made ``clean_one`` raise ``OverflowError`` or
``ValueError`` in ``add_noise`` / ``_bins_add``, and the gateway left the whole batch
unscored."""

from __future__ import annotations

import random

from edgewise.quality.stream import StreamCleaner
from edgewise.telemetry import Reading

S = 10**9
BIG = 1.7e308
EXTREMES = (BIG, -BIG, 1e308, -1e308, 5e-324, -5e-324, 0.0)


def _feed(c: StreamCleaner, values: list[float], start: int = 0) -> list[bool]:
    """Clean ``values`` one a second from ``start``; whether each was flagged a spike."""
    flags = []
    for i, v in enumerate(values):
        before = c.flagged["spike"]
        c.clean_one(Reading("pump-1", "x", (start + i + 1) * S, v))
        flags.append(c.flagged["spike"] > before)
    return flags


def _normal_after(c: StreamCleaner, start: int) -> None:
    """Check normal readings after the extremes are judged: a jump of 1000 off 20 +- 0.1
    is a spike, a reading back at 20 is none."""
    rnd = random.Random(7)
    _feed(c, [20.0 + rnd.gauss(0, 0.1) for _ in range(60)], start)
    assert _feed(c, [1000.0, 20.0], start + 60) == [True, False]


def test_the_hunters_alternating_extremes_do_not_raise() -> None:
    """Check two normal readings then 50 alternating +-1.7e308 (the gateway's failing
    batch) are cleaned without an exception, counted, and later readings judged."""
    c = StreamCleaner()
    _feed(c, [20.0, 20.1] + [BIG if i % 2 else -BIG for i in range(50)])
    assert c.seen == 52 and c.kept + sum(c.removed.values()) == 52
    _normal_after(c, 52)


def test_random_extreme_finite_values_never_raise_and_are_flagged() -> None:
    """Check 10,000 readings, 30 % of them extreme finite values, never raise; that a
    huge one (|v| >= 1e308) between normal readings is flagged; and that normal
    readings after them are still judged."""
    rnd = random.Random(43)
    values = [rnd.choice(EXTREMES) if rnd.random() < 0.3 else 20.0 + rnd.gauss(0, 1)
              for _ in range(10_000)]
    c = StreamCleaner()
    flags = _feed(c, values)
    assert c.seen == 10_000 and c.kept + sum(c.removed.values()) == 10_000
    lone = [i for i in range(20, len(values) - 1) if abs(values[i]) >= 1e308
            and all(abs(values[j]) < 1e3 for j in range(i - 10, i))]
    assert len(lone) > 50
    assert all(flags[i] for i in lone)
    _normal_after(c, len(values))


def test_runs_of_one_extreme_value_keep_the_centre_finite() -> None:
    """Check a run of 1.7e308 (its window's midpoint overflowed to inf) and one of
    5e-324 and of 0 leave normal readings after them judged."""
    for v in (BIG, -BIG, 5e-324, 0.0):
        c = StreamCleaner()
        _feed(c, [20.0, 20.1, 20.0] + [v] * 40)
        _normal_after(c, 43)
