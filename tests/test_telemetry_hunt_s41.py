"""SenML relative times are stamped in whole nanoseconds from the arrival.

``now_ns / 1e9 + t`` was rounded to the microsecond record by record, so the records of
one pack decoded at two arrivals moved by the arrivals' gap give or take 1 us, each its
own way; the gateway's copy check (every reading moved by one and the same amount) then
stored a resent pack a second time.
"""

from __future__ import annotations

import json
import random

from edgewise.telemetry import decode

NOW = 1_800_000_000 * 10**9
PACK = json.dumps([{"n": "vib", "v": 1.1, "t": -0.2, "seq": 4},
                   {"n": "vib", "v": 1.2, "t": -0.1},
                   {"n": "vib", "v": 1.3},
                   {"bt": -1.5, "n": "vib", "v": 1.4, "t": 0.25}]).encode()


def _times(now_ns: int) -> list[int]:
    d = decode(PACK, "pump-1", now_ns=now_ns)
    assert d.rejected == [] and d.relative_times
    return [r.ts_ns for r in d.readings]


def test_every_record_of_a_pack_moves_by_the_gap_between_two_arrivals() -> None:
    rnd = random.Random(41)
    for _ in range(200):
        first = NOW + rnd.randrange(10**12)
        gap = rnd.randrange(1, 10 * 10**9)
        moved = {b - a for a, b in zip(_times(first), _times(first + gap), strict=True)}
        assert moved == {gap}, (first, gap, moved)


def test_relative_times_are_now_plus_t() -> None:
    now = NOW + 123_456_789
    assert _times(now) == [now - 200_000_000, now - 100_000_000, now, now - 1_250_000_000]
    # an integer t: exactly; the bounds refuse as before, by name
    d = decode(b'[{"n":"a","t":-10,"v":1},{"n":"a","t":1000,"v":2},'
               b'{"n":"a","t":-1e9,"v":3},{"n":"a","t":-1e305,"v":4}]', "pump-1", now_ns=now)
    assert [r.ts_ns for r in d.readings] == [now - 10 * 10**9]
    assert [(e.field, e.reason) for e in d.rejected] == [
        ("t", "future_ts"), ("t", "ancient_ts"), ("t", "ancient_ts")]
