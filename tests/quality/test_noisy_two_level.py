"""A two-level signal with noise (a pump drawing 0 or 7.5 +- 0.05 A, a heater at 0 or
1500 +- 2 W, switching every few readings) is two levels, not a measurement: its switches
are no spikes in the batch report (57 of its 60 on-readings were) nor in the stream
cleaner past its first pulses, while a reading far off both levels (a 30 A reading of
the pump) is a spike in both, and ordinary signals are judged as before."""

from __future__ import annotations

import numpy as np
import pytest

from edgewise.quality.report import device_report
from edgewise.quality.spikes import hampel_mask
from edgewise.quality.stream import StreamCleaner
from edgewise.telemetry import Reading

S = 10**9


def _two_level(on: float, sd: float, every: int = 3, n: int = 120,
               seed: int = 0) -> list[float]:
    """Off (0.0) and on (``on`` +- ``sd``) in turns of ``every`` readings."""
    rng = np.random.default_rng(seed)
    return [on + float(rng.normal(0, sd)) if i // every % 2 else 0.0 for i in range(n)]


def _stream_spikes(values: list[float]) -> list[int]:
    """The readings the stream cleaner flags as spikes."""
    c = StreamCleaner()
    flagged = []
    for i, v in enumerate(values):
        before = c.flagged["spike"]
        c.clean_one(Reading("d", "m", i * S, v))
        if c.flagged["spike"] > before:
            flagged.append(i)
    return flagged


@pytest.mark.parametrize(("on", "sd"), [(7.5, 0.05), (1500.0, 2.0)], ids=["pump", "heater"])
def test_the_report_calls_no_switch_of_a_noisy_two_level_signal_a_spike(
        on: float, sd: float) -> None:
    """Check 120 readings, 60 on, switching every 3: no spike in the report (57 before)."""
    v = _two_level(on, sd)
    rows = [Reading("d", "m", i * S, x) for i, x in enumerate(v)]
    assert device_report(rows)["metrics"]["m"]["spikes"] == 0


@pytest.mark.parametrize(("on", "sd"), [(7.5, 0.05), (1500.0, 2.0)], ids=["pump", "heater"])
@pytest.mark.parametrize("every", [2, 3, 4, 6])
def test_a_reading_far_off_both_levels_is_a_spike_in_report_and_stream(
        on: float, sd: float, every: int) -> None:
    """Check a 30 A reading of the pump (4x the heater's 1500 W) among its on-readings is
    the one spike in the report (before: 54 others, and in windows that span a switch,
    not it), and the stream's one past its first pulses (before: 0 to 7 others)."""
    v = _two_level(on, sd, every=every)
    at = next(i for i in range(57, 70) if v[i] and v[i - 1])
    v[at] = 4 * on
    rows = [Reading("d", "m", i * S, x) for i, x in enumerate(v)]
    assert device_report(rows)["metrics"]["m"]["spikes"] == 1
    assert np.flatnonzero(hampel_mask(v, half_window=3, n_sigmas=5.0)).tolist() == [at]
    assert [i for i in _stream_spikes(v) if i >= 20] == [at]


def test_a_spike_at_a_switch_and_the_stream_past_its_first_pulses() -> None:
    """Check a 30 A reading right after a switch on is a spike in both, and that the
    stream flags no switch once its first 20 readings are past (it flagged 5 of them)."""
    v = _two_level(7.5, 0.05, every=4)
    assert [i for i in _stream_spikes(v) if i >= 20] == []
    at = next(i for i in range(60, 80) if v[i] and not v[i - 1])
    v[at] = 30.0
    assert np.flatnonzero(hampel_mask(v, half_window=3, n_sigmas=5.0)).tolist() == [at]
    assert [i for i in _stream_spikes(v) if i >= 20] == [at]


def test_ordinary_signals_are_not_two_level_and_keep_their_spikes() -> None:
    """Check a noisy measurement, one level shift and a setpoint moved once and back are
    no two-level series, and a noisy measurement's spike is still flagged in both."""
    from edgewise.quality.states import level_bands  # new: the old code fails elsewhere

    rng = np.random.default_rng(1)
    noisy = 20 + rng.normal(0, 0.3, 300)
    assert level_bands(noisy) is None
    assert level_bands(np.r_[rng.normal(20, 0.1, 40), rng.normal(25, 0.1, 40)]) is None
    assert level_bands(np.r_[rng.normal(20, 0.1, 30), rng.normal(25, 0.1, 30),
                             rng.normal(20, 0.1, 30)]) is None
    noisy[150] = 30.0
    assert np.flatnonzero(hampel_mask(noisy, n_sigmas=5.0)).tolist() == [150]
    assert _stream_spikes(noisy.tolist()) == [24, 150]  # 24: as before, in its first window


def test_the_stream_keeps_a_bounded_history_for_its_levels() -> None:
    """Check the stream's look at its levels holds at most its last 64 readings."""
    c = StreamCleaner()
    c.clean([Reading("d", "m", i * S, x) for i, x in enumerate(_two_level(7.5, 0.05,
                                                                           n=2000))])
    st = c.export_state()[("d", "m")]
    assert len(st.recent) == 64 and st.bands is not None
