"""Stream cleaner hunt: a spike dropped (``drop_spikes``) holds its time, as a flagged
one does and as the batch report counts it: a re-delivery of it (MQTT QoS 1 sends again)
is its duplicate. Before, each re-delivery was judged anew: counted a spike again, and
its third delivery made its value a level of the stream, kept as data."""

from __future__ import annotations

from edgewise.quality.report import device_report
from edgewise.quality.stream import StreamCleaner
from edgewise.telemetry import Reading

S = 10**9


def _rows(resent: int) -> list[Reading]:
    """30 readings of 20.0..20.2, a 500 at 15 s sent ``1 + resent`` times."""
    rows = [Reading("d", "t", i * S, 20.0 + 0.1 * (i % 3)) for i in range(30)]
    rows[15] = Reading("d", "t", 15 * S, 500.0)
    rows[16:16] = [Reading("d", "t", 15 * S, 500.0)] * resent
    return rows


def test_a_resent_dropped_spike_is_its_duplicate() -> None:
    """Check a spike sent four times is dropped once and three duplicates, as the
    flagging cleaner and the batch report count it (before: 2 spikes, and the third
    delivery kept)."""
    rows = _rows(3)
    c = StreamCleaner(drop_spikes=True)
    kept = c.clean(rows)
    assert 500.0 not in [r.value for r in kept] and len(kept) == 29
    assert dict(c.removed) == {"spike": 1, "duplicate": 3}
    flagging = StreamCleaner()
    flagging.clean(rows)
    assert dict(flagging.removed) == {"duplicate": 3} and flagging.flagged["spike"] == 1
    m = device_report(rows)["metrics"]["t"]
    assert (m["spikes"], m["duplicates"]) == (1, 3)


def test_another_value_at_a_dropped_spikes_time_is_a_conflict() -> None:
    """Check a fitting value sent at a dropped spike's time is a conflict (the batch
    keeps the first reading at a time), and the next time is judged as usual."""
    rows = _rows(0)
    rows.insert(16, Reading("d", "t", 15 * S, 20.1))
    c = StreamCleaner(drop_spikes=True)
    assert len(c.clean(rows)) == 29
    assert dict(c.removed) == {"spike": 1, "conflict": 1}
    assert device_report(rows)["metrics"]["t"]["conflicts"] == 1
