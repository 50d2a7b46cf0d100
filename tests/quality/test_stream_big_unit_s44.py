"""The streaming cleaner judges readings near the largest float as it judges the same
stream of ordinary magnitudes. Before, once half of a 15-reading window lay near
+-1.7e308, the window's spread (and 5 of it, the threshold) overflowed to inf and no
reading was flagged however far it lay (a stream of 20 +- 1 with 25 readings of random
sign in 1e308..1.7e308: 9 of its 14 spikes flagged, all 14 unscaled); and the long-run
noise's bin totals stopped counting once they would pass the largest float, so a stream of
positive readings near 1e308 drifted from the same stream scaled down."""

from __future__ import annotations

import random

from edgewise.quality.stream import StreamCleaner
from edgewise.telemetry import Reading

S = 10**9


def _flags(values: list[float]) -> tuple[list[bool], dict[str, int], dict[str, int]]:
    """Clean ``values`` one a second; whether each was flagged a spike, and the counts."""
    c = StreamCleaner()
    flags = []
    for i, v in enumerate(values):
        before = c.flagged["spike"]
        c.clean_one(Reading("pump-1", "x", (i + 1) * S, v))
        flags.append(c.flagged["spike"] > before)
    return flags, dict(c.removed), dict(c.flagged)


def _burst(seed: int, low: float, high: float) -> list[float]:
    """20 +- 1, then 25 readings of random sign and size in ``low``..``high``, then 20 +- 1."""
    rnd = random.Random(seed)
    return ([20 + rnd.uniform(-1, 1) for _ in range(30)]
            + [rnd.choice((-1, 1)) * rnd.uniform(low, high) for _ in range(25)]
            + [20 + rnd.uniform(-1, 1) for _ in range(25)])


def test_a_window_half_near_the_largest_float_still_flags() -> None:
    """Check a burst near +-1.7e308 (the stream scaled by 1e306) is flagged where the
    unscaled burst (+-100..170 off 20 +- 1) is, after half the window holds it too."""
    for seed in range(1, 5):
        values = _burst(seed, 100.0, 170.0)
        plain = _flags(values)[0]
        huge = _flags([v * 1e306 for v in values])[0]
        assert max(abs(v * 1e306) for v in values) > 1.6e308
        assert huge == plain, seed
        assert sum(plain[38:55]) >= 2  # flags past the burst's 8th reading: none before


def test_the_same_stream_times_1e300_flags_the_same_readings() -> None:
    """Check 20 +- 1 with a burst of +-1e8..1.7e8, multiplied by 1e300 (readings up to
    1.7e308, their changes past the largest float), flags what the stream flags."""
    for seed in range(10):
        values = _burst(seed, 1e8, 1.7e8)
        assert _flags([v * 1e300 for v in values])[0] == _flags(values)[0], seed


def _positive(seed: int) -> list[float]:
    """Readings in 10..170: level shifts, ramps, noise of several sizes, stray values."""
    rnd = random.Random(seed)
    values: list[float] = []
    level, noise, slope = rnd.uniform(10, 170), 1.0, 0.0
    for _ in range(150):
        r = rnd.random()
        if r < 0.03:
            level = rnd.uniform(10, 170)
        if r < 0.05:
            noise = rnd.choice((0.1, 1.0, 5.0, 30.0))
        if r > 0.97:
            slope = rnd.choice((0.0, 1.0, -1.0, 5.0, -5.0))
        level += slope
        v = rnd.uniform(10, 170) if rnd.random() < 0.05 else level + rnd.gauss(0, noise)
        values.append(min(170.0, max(10.0, v)))
    return values


def test_scaling_by_a_power_of_two_up_to_the_largest_float_is_exact() -> None:
    """Check positive streams scaled by 2**1016 (readings up to 1.2e308, noise totals past
    the largest float) are flagged and counted exactly as the same streams by 2**10."""
    for seed in (11, 26, 35, 39, 52):
        values = _positive(seed)
        assert _flags([v * 2.0**1016 for v in values]) == _flags([v * 2.0**10 for v in values])


def test_level_shifts_between_ordinary_readings_and_the_largest_float() -> None:
    """Check a setpoint moved from 20 +- 1 to 1.5e308, back, to -1.5e308 and back (the
    spike test's unit changes at each, a run of outliers under way with it): the first
    two readings of each move are flagged, the new levels kept unflagged."""
    rnd = random.Random(0)
    values: list[float] = []
    for level, noise in ((20.0, 1.0), (1.5e308, 1e306), (20.0, 1.0), (-1.5e308, 1e306),
                         (20.0, 1.0)):
        values += [level + noise * rnd.uniform(-1, 1) for _ in range(30)]
    flags, removed, _ = _flags(values)
    assert [i for i, f in enumerate(flags) if f] == [30, 31, 60, 61, 90, 91, 120, 121]
    assert removed == {}
